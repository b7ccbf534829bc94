"""The README's three-stage recipe on mini-WebQA runs as written: each line of the block between the
``recipe:start``/``recipe:end`` markers, copy-pasted, from a working directory that holds only ``train.py`` and
``configs/`` (links); extra overrides are appended only to make it short (tiny data, one epoch). The first line runs
as ``python train.py``; the others run in this process from the same directory (the same ``main`` as train.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from cli_runs import ROOT, main_in_process

SHORTEN = [
    "--data.data_dir",
    "mini-webqa:tiny",
    "--data.batch_size",
    "8",
    "--data.num_workers",
    "0",
    "--trainer.enable_progress_bar",
    "false",
]
SHORTEN_FIT = ["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1"]


def recipe_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- recipe:start -->", 1)[1].split("<!-- recipe:end -->", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_recipe_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "train.py").symlink_to(ROOT / "train.py")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    lines = recipe_lines()
    assert [shlex.split(line)[:3] for line in lines] == [
        ["python", "train.py", command] for command in ("fit", "mine", "fit", "test", "predict")
    ]
    for number, line in enumerate(lines):
        words = shlex.split(line)
        extra = SHORTEN + (SHORTEN_FIT if words[2] == "fit" else [])
        if number == 0:
            proc = subprocess.run(
                [sys.executable, *words[1:], *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
            )
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        else:
            assert main_in_process(*words[2:], *extra, cwd=tmp_path) == 0, line
    stage1, stage3 = tmp_path / "runs" / "recipe" / "stage1", tmp_path / "runs" / "recipe" / "stage3"
    assert (stage1 / "negatives" / "stage2.json").is_file() and (stage3 / "checkpoints" / "best.ckpt").is_file()
    manifest = json.loads((stage3 / "run.json").read_text())
    assert [e["split"] for e in manifest["evaluations"]] == ["dev", "test"]
    assert np.load(stage3 / "embeddings" / "embeddings-rank0.npy").shape[0] == 98
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "runs", "train.py"]  # nothing else written
