"""``python train.py`` end to end: 2 DDP processes with in-loop mining and bad input in subprocesses; the other
commands, 1 process with in-loop mining included, in this process (``train_in_process``, the same ``main`` as
train.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runs import metrics_rows, tiny_args, train, train_in_process


def _losses(rows: list[dict[str, str]]) -> list[float]:
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.parametrize("devices", [1, 2], ids=["1-process", "2-ddp-processes"])
def test_fit_with_in_loop_mining(
    tiny_data_dir: Path, tmp_path: Path, devices: int, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    extra = [
        "--trainer.devices",
        str(devices),
        *"--trainer.max_epochs 6 --trainer.callbacks.init_args.every_n_steps 4".split(),
    ]
    if devices > 1:  # DDP starts its other rank by running the command line again: it must be train.py
        proc = train("fit", *tiny_args(tiny_data_dir, out), *extra, "--trainer.strategy", "ddp")
    else:
        proc = train_in_process(capfd, "fit", *tiny_args(tiny_data_dir, out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps_per_epoch = 40 // (4 * devices)
    manifest = json.loads((out / "version_0" / "run.json").read_text())
    mined = manifest["mined"]
    assert [m["step"] for m in mined] == list(range(4, 6 * steps_per_epoch, 4))  # none after the last step
    assert sorted(p.name for p in out.rglob("train-negatives-step*.json")) == [Path(m["path"]).name for m in mined]
    rows = metrics_rows(out)
    versions = [float(r["train/negatives_version"]) for r in rows if r.get("train/negatives_version")]
    assert versions[0] == 0 and versions[-1] == len(mined)  # both ranks sample from the newest mined file
    losses = _losses(rows)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    dev = [json.loads(p.read_text()) for p in sorted(out.rglob("dev-step*/metrics.json"))]
    assert [e["metrics"] for e in manifest["evaluations"]] == dev
    logged = [float(r["val/MRR@10"]) for r in rows if r.get("val/MRR@10")]
    assert len(dev) == 3 and logged == pytest.approx([m["MRR@10"] for m in dev], abs=1e-4)


def test_test_command_evaluates_a_checkpoint(
    tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    fit = train_in_process(
        capfd,
        "fit",
        *tiny_args(tiny_data_dir, out),
        *"--trainer.max_epochs 1 --trainer.check_val_every_n_epoch 1".split(),
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = out / "version_0" / "checkpoints" / "last.ckpt"
    test = train_in_process(capfd, "test", *tiny_args(tiny_data_dir, tmp_path / "elsewhere"), "--ckpt_path", str(ckpt))
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/MRR@10" in test.stdout
    # labelled with the checkpoint's step (10), written under the checkpoint's run, no new version folder
    assert (out / "version_0" / "eval" / "test-step0000010" / "run.trec").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["version_0"] and not (tmp_path / "elsewhere").exists()


def test_unknown_config_key_is_rejected(tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    proc = train_in_process(capfd, "fit", *tiny_args(tiny_data_dir, tmp_path), "--model.learning_rate", "1e-3")
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    # A mistyped data directory is never filled with generated data, whatever the config (the tiny recipes name
    # their dataset: mini-webqa:small).
    proc = train(
        *"fit --config configs/tiny/clip_dpr_tiny.yaml --data.data_dir".split(),
        str(tmp_path / "missing"),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: data directory {tmp_path / 'missing'} does not exist; fix data.data_dir, "
        "or set it to mini-webqa:small for the embedded synthetic dataset"
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "missing").exists()


def test_mine_command_writes_negatives_for_a_checkpoint(
    tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mined" / "train_negatives.json"
    proc = train_in_process(
        capfd, "mine", *tiny_args(tiny_data_dir, tmp_path / "run"), "--out", str(out), "--top_k", "15"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"mined negatives: {out}" in proc.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 40 and all(len(r["all_negFacts"]) == 15 for r in records)


def test_last_checkpoint_holds_the_last_step_even_without_a_new_best(
    tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Lightning 2.6 writes ModelCheckpoint(save_last=True)'s last.ckpt only when a new best is saved: with lr 0 the dev
    # metric never improves after the first validation, so a run resumed from last.ckpt would lose every later step.
    import torch

    args = "--model.lr 0 --trainer.max_epochs 2 --trainer.check_val_every_n_epoch 1".split()
    proc = train_in_process(capfd, "fit", *tiny_args(tiny_data_dir, tmp_path), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 20


# A fit without validation writes last.ckpt at its end: tests/test_checkpoint_overrides.py checks it on its shared fit.
