"""The demo pipeline end to end on the tiny preset: both stages, mining, refreshes, table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

from commands.demo import run_demo


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
