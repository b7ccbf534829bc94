"""What the user types wins over a checkpoint's saved hyperparameters, for every subcommand.

Lightning's CLI parses the hyperparameters saved in ``--ckpt_path`` over the configuration; ours keeps the
configuration (files and command line), prints one line with the keys that differ from the checkpoint's, and
refuses only what cannot load: another encoder architecture.

The commands run in this process (``train_in_process``) except ``test`` with a new index, which runs as
``python train.py`` to show the differences line on the command's stderr.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from cli_runs import main_in_process, metrics_rows, tiny_args, train, train_in_process


@pytest.fixture(scope="module")
def fit_without_validation(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one epoch (10 steps) of the tiny recipe without validation, trained with lr 1e-3."""
    out = tmp_path_factory.mktemp("fit")
    fit = "--trainer.max_epochs 1 --trainer.limit_val_batches 0".split()
    assert main_in_process("fit", *tiny_args(tiny_data_dir, out), *fit) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(fit_without_validation: Path) -> Path:
    """``last.ckpt`` of ``fit_without_validation``."""
    return next(fit_without_validation.rglob("last.ckpt"))


def test_last_checkpoint_is_written_at_the_end_of_a_fit_without_validation(fit_without_validation: Path) -> None:
    import torch

    (last,) = fit_without_validation.rglob("last*.ckpt")
    assert last.name == "last.ckpt" and torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10


def test_test_uses_the_index_and_depth_given_on_the_command_line(
    tiny_data_dir: Path, checkpoint: Path, tmp_path: Path
) -> None:
    proc = train(
        "test",
        *tiny_args(tiny_data_dir, tmp_path),
        "--ckpt_path",
        str(checkpoint),
        *"--model.index.factory HNSW32 --model.eval_top_k 10".split(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "differs from the checkpoint's in eval_top_k (checkpoint 100, now 10), index (checkpoint "
        "{'factory': 'Flat', 'nprobe': None}, now {'factory': 'HNSW32', 'nprobe': None})"
    ) in proc.stderr
    assert "with index 'HNSW32'" in proc.stderr
    lines = next(checkpoint.parent.parent.glob("eval/test-step*/run.trec")).read_text().splitlines()
    per_query: dict[str, int] = {}
    for line in lines:
        per_query[line.split()[0]] = per_query.get(line.split()[0], 0) + 1
    assert len(per_query) == 10 and set(per_query.values()) == {10}


def test_a_bad_index_factory_stops_with_its_one_line_error(
    tiny_data_dir: Path, checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = train_in_process(
        capfd,
        *("test", *tiny_args(tiny_data_dir, tmp_path), "--ckpt_path", str(checkpoint)),
        *"--model.index.factory Bogus12".split(),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: FAISS rejected index factory string 'Bogus12'")
    assert "Traceback" not in proc.stderr


def test_resumed_fit_says_and_trains_with_the_new_lr(
    tiny_data_dir: Path,
    checkpoint: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy = shutil.copy(checkpoint, tmp_path / "resume-from.ckpt")  # its run: tmp_path (no run.json above it)
    proc = train_in_process(
        capfd,
        "fit",
        *tiny_args(tiny_data_dir, tmp_path / "unused"),
        "--ckpt_path",
        str(copy),
        *"--model.lr 4e-3 --trainer.max_epochs 2 --trainer.limit_val_batches 0 --model.warmup_steps 0".split(),
        *"--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor".split(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "differs from the checkpoint's in lr (checkpoint 0.001, now 0.004), warmup_steps" in caplog.text
    assert not (tmp_path / "unused").exists()  # a resumed fit continues in its checkpoint's run
    lrs = {int(r["step"]): float(r["lr-AdamW/decay"]) for r in metrics_rows(tmp_path) if r.get("lr-AdamW/decay")}
    # Resumed at step 10 of 20, no warmup: lr(s) = 4e-3 * (1 + cos(pi * s / 20)) / 2.
    assert sorted(lrs) == list(range(10, 20))
    for step, lr in lrs.items():
        assert lr == pytest.approx(4e-3 * (1 + math.cos(math.pi * step / 20)) / 2), step


def test_another_architecture_is_refused_before_loading(
    tiny_data_dir: Path, checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = train_in_process(
        capfd,
        "test",
        *tiny_args(tiny_data_dir, tmp_path),
        "--ckpt_path",
        str(checkpoint),
        *"--model.encoder.init_args.model_name ViT-B-32 --model.encoder.init_args.pretrained null".split(),
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint") and "model.encoder.init_args.model_name" in last
    assert "'tiny-clip-64px'" in last and "'ViT-B-32'" in last
