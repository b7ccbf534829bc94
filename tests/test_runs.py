"""Runs a user can find: one directory per run, ``run.json``, stable names, and stage-to-stage paths from the
manifest alone, through the CLI with the CSV and the W&B (offline) logger configurations.

With the CSV logger the commands run in this process (``train_in_process``); with W&B as ``python train.py`` (one
W&B run per process, as users run them)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runs import tiny_args, train_in_process
from cli_runs import train as run_train


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _printed(stdout: str, label: str) -> str:
    """The value of a ``label: value`` line that ``fit`` prints at its end."""
    return next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith(f"{label}: "))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` with the hash of its content (links out of it, as W&B's to its log, left out)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.resolve().is_relative_to(folder.resolve())]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _step(ckpt: str | Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.parametrize("logger", ["csv", "wandb"])
def test_stages_run_on_the_paths_the_manifest_gives(
    tiny_data_dir: Path, tmp_path: Path, logger: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    for name, value in {
        "WANDB_MODE": "offline",
        "HOME": str(tmp_path),
        "WANDB_DIR": str(tmp_path / "wandb-home"),
    }.items():
        monkeypatch.setenv(name, value)  # inherited by the subprocesses

    def train(*args: str) -> subprocess.CompletedProcess:
        return run_train(*args) if logger == "wandb" else train_in_process(capfd, *args)

    common = [*tiny_args(tiny_data_dir, root), "--config", f"configs/loggers/{logger}.yaml"]
    epoch = ["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1"]

    # stage 1: fit prints where its run went; the manifest names its checkpoints
    fit1 = train("fit", *common, *epoch)
    assert fit1.returncode == 0, fit1.stderr[-3000:]
    run1 = Path(_printed(fit1.stdout, "run directory"))
    assert run1 == root / "version_0" and _printed(fit1.stdout, "manifest") == str(run1 / "run.json")
    m1 = _manifest(run1)
    best1 = Path(m1["best_checkpoint_link"])
    assert best1 == run1 / "checkpoints" / "best.ckpt" and best1.resolve() == Path(m1["best_checkpoint"])
    assert _printed(fit1.stdout, "best checkpoint") == m1["best_checkpoint"]
    assert Path(m1["last_checkpoint"]) == run1 / "checkpoints" / "last.ckpt" and _step(m1["last_checkpoint"]) == 10
    assert [(e["split"], e["step"]) for e in m1["evaluations"]] == [("dev", 10)]

    # stage 2: mining the best checkpoint adds to its run's manifest, labelled with the checkpoint's step
    mine = train("mine", *common, "--ckpt_path", str(best1), "--top_k", "10")
    assert mine.returncode == 0, mine.stderr[-3000:]
    mined = _manifest(run1)["mined"]
    assert [m["step"] for m in mined] == [_step(best1)]
    assert mined[0]["path"] == str(run1 / "negatives" / f"train-negatives-step{_step(best1):07d}.json")
    assert _printed(mine.stdout, "mined negatives") == mined[0]["path"]
    stage1_files = _snapshot(run1)

    # stage 3: a new run from the manifest's paths; it leaves stage 1's files as they were
    fit3 = train(
        "fit",
        *common,
        *epoch,
        "--model.encoder.init_args.pretrained",
        str(best1),
        "--data.negatives_file",
        mined[0]["path"],
    )
    assert fit3.returncode == 0, fit3.stderr[-3000:]
    run3 = Path(_printed(fit3.stdout, "run directory"))
    assert run3 == root / "version_1"
    assert _snapshot(run1) == stage1_files
    best3 = run3 / "checkpoints" / "best.ckpt"

    # test and predict of stage 3's best checkpoint: under its run, labelled with its step, no new version
    test = train("test", *common, "--ckpt_path", str(best3))
    assert test.returncode == 0, test.stderr[-3000:]
    tested = [e for e in _manifest(run3)["evaluations"] if e["split"] == "test"]
    assert [e["step"] for e in tested] == [_step(best3)] and _step(best3) > 0
    assert Path(tested[0]["directory"]) == run3 / "eval" / f"test-step{_step(best3):07d}"
    assert json.loads((Path(tested[0]["directory"]) / "metrics.json").read_text()) == tested[0]["metrics"]
    predict = train(
        "predict",
        *common,
        "--ckpt_path",
        str(best3),
        "--trainer.callbacks+=callbacks.EmbeddingWriter",
        "--return_predictions",
        "false",
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    embeddings = Path(_manifest(run3)["embeddings"])
    assert embeddings == run3 / "embeddings"
    assert np.load(embeddings / "embeddings-rank0.npy").shape[0] == 98

    # one directory per run: nothing outside the two runs, and no file in both
    assert sorted(p.name for p in root.iterdir()) == ["version_0", "version_1"]
    assert not set(_snapshot(run1)) & set(_snapshot(run3))
    if logger == "wandb":
        assert list(run1.glob("wandb/offline-run-*")) and list(run3.glob("wandb/offline-run-*"))
    else:
        assert list(run1.glob("csv/version_0/metrics.csv")) and list(run3.glob("csv/version_0/metrics.csv"))
