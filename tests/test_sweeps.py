"""Sweeps without SLURM: grid and random trials, bad sweep files, the summary table, ``--ckpt_path auto``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from commands.cli import RetrieverCLI, resolve_auto_ckpt
from retrieval.errors import InputError
from retrieval.sweeps import as_overrides, load_sweep, main, markdown_table, summarize, trial_count, trial_parameters


def _sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


GRID = """
method: grid
parameters:
  model.lr: {values: [1.0e-4, 5.0e-4, 1.0e-3]}
  data.negative_strategy: {values: [balanced, random]}
  model.learnable_temperature: {value: true}
"""

RANDOM = """
method: random
count: 20
seed: 7
parameters:
  model.lr: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-4}
  model.warmup_steps: {distribution: int_uniform, min: 0, max: 10}
  model.temperature: {min: 0.01, max: 0.1}
  data.negatives_k: {values: [1, 2, 4]}
"""


def test_grid_enumerates_the_product_last_parameter_fastest(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, GRID))
    assert trial_count(sweep) == 6
    trials = [trial_parameters(sweep, i) for i in range(6)]
    assert [(t["model.lr"], t["data.negative_strategy"]) for t in trials] == [
        (1e-4, "balanced"),
        (1e-4, "random"),
        (5e-4, "balanced"),
        (5e-4, "random"),
        (1e-3, "balanced"),
        (1e-3, "random"),
    ]
    assert all(t["model.learnable_temperature"] is True for t in trials)
    assert as_overrides(trials[3]) == [
        "--model.lr=0.0005",
        "--data.negative_strategy=random",
        "--model.learnable_temperature=true",
    ]
    with pytest.raises(InputError, match="trial 6 does not exist: the sweep has 6 trials"):
        trial_parameters(sweep, 6)


def test_random_trials_are_reproducible_and_within_bounds(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, RANDOM))
    assert trial_count(sweep) == 20
    trials = [trial_parameters(sweep, i) for i in range(20)]
    assert trials == [trial_parameters(load_sweep(_sweep(tmp_path, RANDOM)), i) for i in range(20)]  # a requeue
    assert len({t["model.lr"] for t in trials}) == 20  # every trial draws its own
    for t in trials:
        assert 1e-6 <= t["model.lr"] <= 1e-4 and 0.01 <= t["model.temperature"] <= 0.1
        assert isinstance(t["model.warmup_steps"], int) and 0 <= t["model.warmup_steps"] <= 10
        assert t["data.negatives_k"] in (1, 2, 4)
    assert sum(t["model.lr"] < 1e-5 for t in trials) >= 5  # log-uniform: about half below the geometric middle
    other_seed = load_sweep(_sweep(tmp_path, RANDOM.replace("seed: 7", "seed: 8")))
    assert trial_parameters(other_seed, 0) != trials[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: bayes\nparameters: {model.lr: {values: [1]}}\n", "method 'bayes' needs a W&B agent"),
        ("method: grid\n", "needs a 'parameters' mapping"),
        ("method: grid\nparameters: {model.lr: {min: 0.1, max: 1}}\n", "a grid needs 'values' or 'value'"),
        ("method: random\nparameters: {model.lr: {values: [1]}}\n", "a random sweep needs 'count: N'"),
        (
            "method: random\ncount: 2\nparameters: {model.lr: {distribution: normal, min: 0, max: 1}}\n",
            "a distribution among",
        ),
        (
            "method: random\ncount: 2\nparameters: {model.lr: {distribution: log_uniform_values, min: 0, max: 1}}\n",
            "needs 0 < min <= max",
        ),
        ("method: grid\nparameters: {model.lr: {values: []}}\n", "'values' must be a non-empty list"),
        ("method: grid\nparameters: {model.lr: [1, 2]}\n", "give {values: [...]}"),
        ("method: grid\nparameters: {model.lr: {values: [1}\n", "cannot read it"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    path = _sweep(tmp_path, text)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("{", r"\{").replace("(", r"\(")):
        load_sweep(path)
    assert main(["trial", str(path), "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: sweep file {path}") and len(err.strip().splitlines()) == 1


def test_trial_and_count_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _sweep(tmp_path, GRID)
    assert main(["count", str(path)]) == 0
    assert capsys.readouterr().out == "6\n"
    assert main(["trial", str(path), "5"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "--model.lr=0.001",
        "--data.negative_strategy=random",
        "--model.learnable_temperature=true",
    ]
    assert main(["trial", str(path), "-1"]) == 2
    assert "trial index '-1' is not a non-negative integer" in capsys.readouterr().err
    assert main(["summarize"]) == 2


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    keys = ["epoch", "step", "train/loss", "val/MRR@10"]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_summary_lists_each_trials_best_mrr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    for index, lr in enumerate(["0.001", "0.0005", "0.0001"]):
        (sweep / f"trial-{index:03d}").mkdir(parents=True)
        (sweep / f"trial-{index:03d}" / "params").write_text(f"--model.lr={lr}\n--data.negatives_k=1\n")
    logs = sweep / "trial-000" / "logs" / "ab12"  # CSV only: the rows before a requeue are in metrics.until-*.csv
    _write_csv(logs / "metrics.until-20250101T000000.csv", [{"step": 29, "val/MRR@10": 45.25}])
    _write_csv(logs / "metrics.csv", [{"step": 30, "train/loss": 1.2}, {"step": 39, "val/MRR@10": 40.0}])
    logs = sweep / "trial-001" / "logs" / "cd34"  # eval files (written whatever the logger) win over the CSV's rows
    _write_csv(logs / "metrics.csv", [{"step": 9, "val/MRR@10": 52.0}, {"step": 19, "val/MRR@10": 99.0}])
    for step, value in ((10, 52.0), (20, 50.0), (30, 52.0)):
        (logs / "eval" / f"dev-step{step:07d}").mkdir(parents=True)
        (logs / "eval" / f"dev-step{step:07d}" / "metrics.json").write_text(json.dumps({"MRR@10": value, "NDCG@10": 1}))
    rows = summarize(sweep)  # trial-002 never validated
    assert [(r["trial"], r["val/MRR@10"], r["step"]) for r in rows] == [
        ("trial-000", 45.25, 29),
        ("trial-001", 52.0, 10),
        ("trial-002", None, None),
    ]  # ties: the earliest
    table = markdown_table(rows).splitlines()
    assert table[0] == "| trial | best val/MRR@10 | step | parameters |"
    assert table[2:] == [
        "| trial-001 | 52.00 | 10 | --model.lr=0.0005 |",  # only the parameters that differ
        "| trial-000 | 45.25 | 29 | --model.lr=0.001 |",
        "| trial-002 | - | - | --model.lr=0.0001 |",
    ]
    assert main(["summarize", str(sweep)]) == 0
    assert capsys.readouterr().out.splitlines() == table
    assert json.loads((sweep / "summary.json").read_text()) == rows
    with pytest.raises(InputError, match="no trial-\\* directory"):
        summarize(tmp_path / "empty")


def _touch(path: Path, mtime: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_ckpt_auto_is_the_newest_of_the_preemption_checkpoints_and_last(tmp_path: Path) -> None:
    run, logs = tmp_path / "run", tmp_path / "logs-elsewhere"
    assert resolve_auto_ckpt(run, [logs]) is None  # a fresh job: nothing to resume
    run.mkdir()
    assert resolve_auto_ckpt(run, [logs]) is None
    last = _touch(run / "logs" / "ab12" / "checkpoints" / "last.ckpt", 1000)
    _touch(run / "logs" / "ab12" / "checkpoints" / "best-step9.ckpt", 3000)  # never resumed from
    assert resolve_auto_ckpt(run, [logs]) == str(last)
    hpc1 = _touch(run / "hpc_ckpt_1.ckpt", 2000)
    assert resolve_auto_ckpt(run, [logs]) == str(hpc1)  # preempted after the last validation
    hpc2 = _touch(run / "hpc_ckpt_2.ckpt", 2500)
    assert resolve_auto_ckpt(run, [logs]) == str(hpc2)
    last_v1 = _touch(logs / "x" / "checkpoints" / "last-v1.ckpt", 2600)  # the logger's save_dir is searched too
    assert resolve_auto_ckpt(run, [logs]) == str(last_v1)
    os.utime(hpc2, (2600, 2600))
    assert resolve_auto_ckpt(run, [logs]) == str(hpc2)  # a tie goes to the preemption checkpoint


def test_cli_resolves_ckpt_path_auto_before_anything_loads(tmp_path: Path) -> None:
    def parse(ckpt_path: str | None) -> str | None:
        cli = RetrieverCLI.__new__(RetrieverCLI)  # only the checkpoint step of the CLI, on a parsed config
        logger = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=str(logs)))
        model = Namespace(encoder=Namespace(class_path="lightning_modules.encoders.CLIPEncoder", init_args=Namespace()))
        cli.config = Namespace(
            subcommand="fit",
            fit=Namespace(
                ckpt_path=ckpt_path,
                model=model,
                run_dir=None,
                trainer=Namespace(default_root_dir=run and str(run), logger=logger),
            ),
        )
        cli._parse_ckpt_path()
        return cli.config.fit.ckpt_path

    run, logs = tmp_path / "run", tmp_path / "logs"
    assert parse("auto") is None
    _touch(logs / "v" / "checkpoints" / "last.ckpt", 3000)  # outside the run directory: not this run's
    assert parse("auto") is None
    last = _touch(run / "version_0" / "checkpoints" / "last.ckpt", 1000)
    assert parse("auto") == str(last)
    hpc = _touch(run / "hpc_ckpt_1.ckpt", 2000)
    assert parse("auto") == str(hpc)
    assert parse(str(last)) == str(last)  # any other value is left alone
    assert parse(None) is None
    run = None  # no run directory to search: refused rather than searching the working directory
    with pytest.raises(InputError, match=r"--ckpt_path auto needs --run_dir \(or --trainer.default_root_dir\)"):
        parse("auto")
