"""``python train.py test`` on 2 gloo DDP processes gives the metrics and run file of one process.

Each rank encodes its shard of the test queries and of the corpus in several small batches; the shards
are searched where they are and the top-k lists merged, so any lost, doubled or misplaced row shows up
as a different ranking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from callbacks import EvaluationWriter
from lightning_modules.encoders import CLIPEncoder

from builders import cpu_trainer, tiny_retriever, webqa_datamodule
from cli_runs import main_in_process

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/tiny/univl_dr_tiny.yaml"


@pytest.fixture(scope="module")
def checkpoint(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny recipe's model after a few steps of training (so the ranking is not arbitrary).

    The module is also evaluated in process: its ``eval/test-step*`` directory lies next to the checkpoint.
    """
    root = tmp_path_factory.mktemp("ckpt")
    L.seed_everything(0)
    module = tiny_retriever(tiny_encoder)
    dm = webqa_datamodule(tiny_data_dir, tiny_encoder, eval_batch_size=128)
    trainer = cpu_trainer(root, max_steps=10, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(root / "model.ckpt")
    trainer.callbacks.append(EvaluationWriter())
    trainer.test(module, datamodule=dm, verbose=False)  # the in-process evaluation, for comparison
    return root / "model.ckpt"


def _test_run(data_dir: Path, ckpt: Path, out: Path, devices: int) -> Path:
    """Run ``train.py test`` on ``devices`` CPU processes with all outputs under ``out`` (on 1, in this process);
    return its eval directory."""
    args = [
        "test",
        "--config",
        CONFIG,
        "--data.data_dir",
        str(data_dir),
        *"--data.num_workers 0 --data.eval_batch_size 4 --run_dir".split(),
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.devices",
        str(devices),
        "--ckpt_path",
        str(ckpt),
    ]
    if devices == 1:
        assert main_in_process(*args) == 0
        [eval_dir] = out.rglob("test-step*")
        return eval_dir
    args += ["--trainer.strategy", "ddp"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [eval_dir] = out.rglob("test-step*")
    return eval_dir


def _run_lines(path: Path) -> list[tuple[str, str, str, int, float, str]]:
    """The fields of each line of a TREC run file."""
    rows = []
    for line in path.read_text().splitlines():
        qid, q0, docid, rank, score, tag = line.split()
        rows.append((qid, q0, docid, int(rank), float(score), tag))
    return rows


@pytest.fixture(scope="module")
def single_process(tiny_data_dir: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eval directory of the checkpoint's test on one process."""
    return _test_run(tiny_data_dir, checkpoint, tmp_path_factory.mktemp("single"), devices=1)


@pytest.mark.parametrize("devices", [2, 3], ids=["2-ddp-processes", "3-ddp-processes"])
def test_ddp_evaluation_equals_single_process(
    tiny_data_dir: Path, checkpoint: Path, single_process: Path, tmp_path: Path, devices: int
) -> None:
    """Uneven shards included: 10 queries and 98 docs split 5/5 and 49/49 on 2 ranks, 3/3/4 and 32/33/33 on 3."""
    single = single_process
    ddp = _test_run(tiny_data_dir, checkpoint, tmp_path / "ddp", devices=devices)
    assert single.name == ddp.name
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (single, ddp))
    assert set(got) == set(want) and len(want) >= 19
    assert got == pytest.approx(want, abs=1e-6)
    want_run, got_run = _run_lines(single / "run.trec"), _run_lines(ddp / "run.trec")
    assert len(got_run) == len(want_run) == 10 * 98
    for line, (a, b) in enumerate(zip(want_run, got_run), start=1):
        assert a[:4] == b[:4] and a[5] == b[5], line
        assert b[4] == pytest.approx(a[4], abs=1e-6), line


def test_single_process_command_evaluates_the_checkpoints_weights(checkpoint: Path, single_process: Path) -> None:
    """The command's metrics and run are those of the module that wrote the checkpoint, evaluated in process."""
    [in_process] = checkpoint.parent.glob("eval/test-step*")
    assert json.loads((single_process / "metrics.json").read_text()) == pytest.approx(
        json.loads((in_process / "metrics.json").read_text()), abs=1e-6
    )
    want, got = _run_lines(in_process / "run.trec"), _run_lines(single_process / "run.trec")
    assert [row[:4] for row in got] == [row[:4] for row in want]
