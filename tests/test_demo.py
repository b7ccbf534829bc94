"""The demo pipeline end to end on the tiny preset: both stages, mining, refreshes, table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands.demo import run_demo, stage_checkpoint
from retrieval.errors import InputError


def test_demo_writes_table_json_and_plot(tmp_path: Path) -> None:
    rows = run_demo(
        tmp_path,
        size="tiny",
        stage1_epochs=2,
        stage3_epochs=2,
        refresh_every=3,
        overrides=["--data.batch_size", "8", "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"],
    )
    assert [r["stage"][:2] for r in rows] == ["1.", "3."]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["refreshes"]) == 3  # steps 3, 6, 9 of 10
    assert Path(results["mining"]["file"]).is_file()
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| ") >= 3 and "MRR@10" in table
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    for row in rows:
        assert 0.0 <= row["metrics"]["MRR@10"] <= 100.0


def test_a_stage_without_validation_continues_from_its_last_checkpoint(tmp_path: Path) -> None:
    # stage 1 shorter than the tiny recipe's validation interval (2 epochs) has no best checkpoint, only last.ckpt
    assert stage_checkpoint({"best_checkpoint": "b.ckpt", "last_checkpoint": "l.ckpt"}, tmp_path) == "b.ckpt"
    assert stage_checkpoint({"last_checkpoint": "l.ckpt"}, tmp_path) == "l.ckpt"
    with pytest.raises(InputError, match=rf"^run {tmp_path} saved no checkpoint; give the stage more epochs$"):
        stage_checkpoint({}, tmp_path)
