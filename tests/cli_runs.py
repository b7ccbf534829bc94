"""Helpers for tests that run the commands of ``train.py`` on the tiny recipe, as a subprocess or in this process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train(*args: str, timeout: int = 400, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` from the repository root, output captured (``env``: extra environment variables)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    # An in-process W&B test leaves its service's address in WANDB_SERVICE: a command must start its own service
    # (as configs/slurm/*.sbatch do), or its runs log through another test's service and home directory.
    env.pop("WANDB_SERVICE", None)
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def main_in_process(*args: str, cwd: Path = ROOT) -> int:
    """The exit status of ``python train.py ARGS`` run in this process (``commands.cli.main``, what train.py calls)
    from ``cwd`` (default: the repository root) on one torch thread, as ``train`` runs it (``OMP_NUM_THREADS=1``);
    the run directory the command hands to its ranks and the thread count are undone afterwards."""
    import torch

    from commands.cli import RUN_DIR_ENV, main

    previous, run_dir, threads = os.getcwd(), os.environ.get(RUN_DIR_ENV), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(1)
    try:
        return main(list(args))
    except SystemExit as stop:  # the parser's errors and --help
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)
        if run_dir is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = run_dir


def train_in_process(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """``main_in_process(ARGS)`` with its exit status, stdout and stderr as ``capfd`` captured them, in place of
    ``train(ARGS)`` where the subprocess itself is not what a test checks. Lightning's info lines, which a command
    prints to stderr, go to the log in this process: read them with ``caplog``."""
    capfd.readouterr()
    status = main_in_process(*args)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["train.py", *args], status, out, err)


def tiny_args(data_dir: Path, out: Path) -> list[str]:
    """The tiny UniVL-DR recipe on ``data_dir``, runs under ``out`` (``out/version_N``), small batches, no workers."""
    return [
        "--config",
        "configs/tiny/univl_dr_tiny.yaml",
        "--data.data_dir",
        str(data_dir),
        "--data.batch_size",
        "4",
        "--data.eval_batch_size",
        "32",
        "--data.num_workers",
        "0",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--model.lr",
        "1e-3",
        "--trainer.log_every_n_steps",
        "1",
    ]


def metrics_rows(out: Path) -> list[dict[str, str]]:
    """The rows of the CSV logger's ``metrics.csv`` under ``out``."""
    with open(next(out.rglob("metrics.csv"))) as handle:
        return list(csv.DictReader(handle))
