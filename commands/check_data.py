"""``python train.py check-data --data.data_dir D``: check a whole data directory before a long run.

Prints the summary tables (stdout), writes the JSON report, and lists every problem on stderr, one
``warning: ...``/``error: ...`` line each (the errors last, each as the loader would say it); exit status 2 when
anything would stop a run, else 0. The checks themselves are in ``datamodules.data_check``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from datamodules.data_check import check_data_dir, format_summary, write_report, write_skip_list
from datamodules.webqa_datamodule import WebQADataModule

#: Where reports go when ``--report`` is not given (``<data directory name>.json`` inside); never the data directory.
DEFAULT_REPORT_DIR = Path("runs/check-data")


def default_workers() -> int:
    """One worker process per CPU core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_check_data(
    datamodule: WebQADataModule,
    report: str | None = None,
    workers: int | None = None,
    write_skip_list_to: str | None = None,
    progress: bool = True,
) -> int:
    """Check the data ``datamodule`` names (a named dataset is generated first); return the exit status."""
    datamodule.prepare_data()
    settings = datamodule.hparams
    result = check_data_dir(
        datamodule.data_dir,
        settings.caption_file,
        negatives_file=settings.negatives_file,
        strategy=datamodule.strategy,
        skip_bad_images=settings.skip_bad_images,
        skip_list=settings.skip_list,
        workers=default_workers() if workers is None else workers,
        progress=progress,
    )
    print(format_summary(result))
    default = DEFAULT_REPORT_DIR / f"{datamodule.data_dir.resolve().name or 'data'}.json"
    path = write_report(result, Path(report) if report else default)
    print(f"\nreport: {path}")
    if write_skip_list_to:
        count = write_skip_list(result, Path(write_skip_list_to))
        print(f"skip list: {write_skip_list_to} ({count} undecodable image(s); train with --data.skip_list FILE)")
    errors, warnings = len(result.errors), len(result.warnings)
    verdict = "a run would stop" if errors else "nothing would stop a run"
    print(f"check-data: {errors} error(s), {warnings} warning(s): {verdict}", flush=True)
    for problem in result.warnings + result.errors:
        print(f"{problem.severity}: {problem.message}", file=sys.stderr)
    return 2 if errors else 0
