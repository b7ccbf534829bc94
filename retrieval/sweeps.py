"""Sweeps as SLURM job arrays (configs/slurm/sweep.sbatch): array task i runs trial i in its own directory.

    python -m retrieval.sweeps count SWEEP.yaml        the number of trials (``sbatch --array=0-<count - 1>``)
    python -m retrieval.sweeps trial SWEEP.yaml INDEX  trial INDEX's Lightning CLI overrides, one ``--key=value`` a line
    python -m retrieval.sweeps summarize DIR           each trial's best val/MRR@10: Markdown table, DIR/summary.json

A sweep file is written in W&B's sweep syntax (``bayes`` needs ``wandb agent``: configs/slurm/wandb_sweep.yaml):

    method: grid                  # or random, with count: N and seed: S (trial i's draws depend only on S and i)
    parameters:
      model.lr: {values: [1.0e-5, 5.0e-6]}
      data.negatives_k: {value: 2}
      model.temperature: {distribution: log_uniform_values, min: 0.01, max: 0.1}   # random only, as are
      model.warmup_steps: {distribution: int_uniform, min: 0, max: 100}             # uniform and int_uniform

Grid trials enumerate the product of the ``values`` lists, the last parameter varying fastest.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from retrieval.atomic import atomic_write
from retrieval.errors import InputError, exit_status

METRIC = "val/MRR@10"
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep file at ``path``, checked: a method, a count for random sweeps, parameters W&B-style."""
    path = Path(path)
    try:
        sweep = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(
            f"sweep file {path}: cannot read it ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict) or not sweep["parameters"]:
        raise InputError(f"sweep file {path}: needs a 'parameters' mapping of dotted config keys")
    method = sweep.get("method", "grid")
    if method not in ("grid", "random"):
        raise InputError(
            f"sweep file {path}: method {method!r} needs a W&B agent (sweep.sbatch wandb:SWEEP_ID); "
            "here use grid or random"
        )
    if method == "random" and not (isinstance(sweep.get("count"), int) and sweep["count"] > 0):
        raise InputError(f"sweep file {path}: a random sweep needs 'count: N' (N > 0 trials)")
    for key, spec in sweep["parameters"].items():
        _check_parameter(path, method, key, spec)
    return {**sweep, "method": method}


def _check_parameter(path: Path, method: str, key: str, spec: Any) -> None:
    where = f"sweep file {path}: parameter {key!r}"
    if not isinstance(spec, dict):
        raise InputError(f"{where}: give {{values: [...]}}, {{value: x}} or {{distribution: ..., min: a, max: b}}")
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise InputError(f"{where}: 'values' must be a non-empty list")
    elif "value" not in spec:
        if method == "grid":
            raise InputError(f"{where}: a grid needs 'values' or 'value' (distributions are for random sweeps)")
        distribution = spec.get("distribution", "uniform")
        if distribution not in DISTRIBUTIONS or "min" not in spec or "max" not in spec:
            raise InputError(f"{where}: needs 'min', 'max' and a distribution among {', '.join(DISTRIBUTIONS)}")
        if distribution == "log_uniform_values" and not 0 < spec["min"] <= spec["max"]:
            raise InputError(f"{where}: log_uniform_values needs 0 < min <= max")


def trial_count(sweep: dict[str, Any]) -> int:
    """How many trials the sweep has: the grid's size, or a random sweep's ``count``."""
    if sweep["method"] == "random":
        return sweep["count"]
    return math.prod(len(spec["values"]) if "values" in spec else 1 for spec in sweep["parameters"].values())


def trial_parameters(sweep: dict[str, Any], index: int) -> dict[str, Any]:
    """Trial ``index``'s value of each parameter."""
    count = trial_count(sweep)
    if not 0 <= index < count:
        raise InputError(f"trial {index} does not exist: the sweep has {count} trials (0 to {count - 1})")
    params = sweep["parameters"]
    if sweep["method"] == "grid":
        grid = [spec["values"] if "values" in spec else [spec["value"]] for spec in params.values()]
        return dict(zip(params, next(itertools.islice(itertools.product(*grid), index, None))))
    rng = random.Random(f"{sweep.get('seed', 0)}:{index}")
    return {key: _draw(rng, spec) for key, spec in params.items()}


def _draw(rng: random.Random, spec: dict[str, Any]) -> Any:
    if "values" in spec:
        return rng.choice(spec["values"])
    if "value" in spec:
        return spec["value"]
    low, high = spec["min"], spec["max"]
    distribution = spec.get("distribution", "uniform")
    if distribution == "int_uniform":
        return rng.randint(int(low), int(high))
    if distribution == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``--key=value`` arguments of the Lightning CLI (strings as they are, anything else as JSON)."""
    return [
        f"--{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in params.items()
    ]


def best_metric(trial_dir: Path, metric: str = METRIC) -> tuple[float, int] | None:
    """(best value, its global step) of ``metric`` over the trial's validations: from the
    ``eval/dev-step<N>/metrics.json`` files every validation writes whatever the logger, else from the CSV logger's
    ``metrics*.csv`` (the sbatch scripts keep a requeued run's earlier rows as ``metrics.until-<time>.csv``); None
    when it was never validated."""
    found: list[tuple[float, int]] = []
    key = metric.split("/", 1)[-1]
    for path in trial_dir.rglob("dev-step*/metrics.json"):
        step = re.fullmatch(r"dev-step(\d+)", path.parent.name)
        value = json.loads(path.read_text()).get(key)
        if step and value is not None:
            found.append((float(value), int(step.group(1))))
    if not found:
        for path in trial_dir.rglob("metrics*.csv"):
            with open(path, newline="") as handle:
                found += [
                    (float(row[metric]), int(float(row.get("step") or -1)))
                    for row in csv.DictReader(handle)
                    if row.get(metric)
                ]
    return max(found, key=lambda item: (item[0], -item[1])) if found else None


def summarize(sweep_dir: str | Path, metric: str = METRIC) -> list[dict[str, Any]]:
    """One row per ``trial-*`` directory of ``sweep_dir``: its parameters (file ``params``) and best ``metric``."""
    sweep_dir = Path(sweep_dir)
    trials = sorted(p for p in sweep_dir.glob("trial-*") if p.is_dir())
    if not trials:
        raise InputError(f"sweep directory {sweep_dir}: no trial-* directory in it")
    rows = []
    for trial in trials:
        params_file = trial / "params"
        best = best_metric(trial, metric)
        rows.append(
            {
                "trial": trial.name,
                "params": params_file.read_text().split() if params_file.exists() else [],
                metric: None if best is None else round(best[0], 4),
                "step": None if best is None else best[1],
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], metric: str = METRIC) -> str:
    """The summary as a Markdown table, best trial first (never-validated trials last); of the parameters, those
    that differ between trials."""
    ordered = sorted(rows, key=lambda row: (row[metric] is None, -(row[metric] or 0.0), row["trial"]))
    shared = set.intersection(*(set(row["params"]) for row in rows)) if len(rows) > 1 else set()
    lines = [f"| trial | best {metric} | step | parameters |", "|---|---:|---:|---|"]
    for row in ordered:
        value = "-" if row[metric] is None else f"{row[metric]:.2f}"
        step = "-" if row["step"] is None else str(row["step"])
        lines.append(f"| {row['trial']} | {value} | {step} | {' '.join(p for p in row['params'] if p not in shared)} |")
    return "\n".join(lines)


def _command(argv: list[str]) -> int:
    usage = "usage: python -m retrieval.sweeps {count SWEEP.yaml | trial SWEEP.yaml INDEX | summarize DIR}"
    if len(argv) == 2 and argv[0] == "count":
        print(trial_count(load_sweep(argv[1])))
    elif len(argv) == 3 and argv[0] == "trial":
        if not argv[2].isdigit():
            raise InputError(f"trial index {argv[2]!r} is not a non-negative integer")
        print("\n".join(as_overrides(trial_parameters(load_sweep(argv[1]), int(argv[2])))))
    elif len(argv) == 2 and argv[0] == "summarize":
        rows = summarize(argv[1])
        with atomic_write(Path(argv[1]) / "summary.json") as handle:
            handle.write(json.dumps(rows, indent=1) + "\n")
        print(markdown_table(rows))
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    """``count SWEEP``, ``trial SWEEP INDEX`` or ``summarize DIR``; bad input is one line on stderr, exit 2."""
    return exit_status(lambda: _command(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
