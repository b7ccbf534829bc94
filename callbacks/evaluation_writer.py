"""Write each evaluation's ``run.trec`` and ``metrics.json`` (as lightning-ir's ``RankCallback(save_dir=...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from callbacks.run_directory import run_directory
from retrieval.report import write_evaluation


@dataclass(frozen=True)
class WrittenEvaluation:
    """One evaluation on disk: split, the step it is labelled with, its folder and metrics."""

    split: str
    step: int
    directory: str
    metrics: dict[str, float]


class EvaluationWriter(Callback):
    """After every validation and test (not the sanity check), rank 0 writes the module's ``last_evaluation`` into
    ``<save_dir>/<split>-step<NNNNNNN>/``: ``run.trec`` (the mixed-corpus run in trec_eval's order) and
    ``metrics.json``. The step is the fit's, or the evaluated checkpoint's outside ``fit``. For the splits in
    ``view_runs_for`` it also writes the runs over each modality alone (``run-text.trec``, ``run-image.trec``) when
    the module searched them (``eval_subsets``): the inputs of divide-and-conquer fusion (``train.py fuse``).

    Args:
        save_dir: where the evaluation folders go; default ``<run directory>/eval``.
        view_runs_for: splits whose text-only and image-only runs are written too (not ``dev`` by default: it is
            evaluated many times during a fit).
    """

    def __init__(self, save_dir: str | None = None, view_runs_for: tuple[str, ...] = ("test",)) -> None:
        self.save_dir = save_dir
        self.view_runs_for = tuple(view_runs_for)
        self.written: list[WrittenEvaluation] = []
        self._seen: Any = None

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        base = Path(self.save_dir) if self.save_dir else run_directory(trainer) / "eval"  # all ranks (may broadcast)
        evaluation = getattr(pl_module, "last_evaluation", None)
        if trainer.sanity_checking or evaluation is None or evaluation is self._seen:
            return
        self._seen = evaluation
        folder = base / f"{evaluation.split}-step{evaluation.step:07d}"
        if trainer.is_global_zero:
            views = {v: r for v, r in evaluation.runs.items() if v != "all"}
            views = views if evaluation.split in self.view_runs_for else {}
            write_evaluation(folder, evaluation.runs["all"], evaluation.metrics, evaluation.tag, views)
        self.written.append(WrittenEvaluation(evaluation.split, evaluation.step, str(folder), dict(evaluation.metrics)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)
