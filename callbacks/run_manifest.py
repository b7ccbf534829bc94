"""``run.json``: the manifest of a run directory, rewritten atomically as the run goes.

It lists what the run produced, with the paths the next stage needs::

    {"run_dir": ..., "best_checkpoint": ".../checkpoints/best-step120.ckpt", "best_score": 81.5,
     "monitor": "val/MRR@10",
     "last_checkpoint": ".../checkpoints/last.ckpt", "mined": [{"step": 40, "path": ...}],
     "evaluations": [{"split": "dev", "step": 40, "directory": ..., "metrics": {...}}], "commands": [...]}

An evaluation or mining run of a checkpoint (``validate``/``test``/``mine``) adds its entries to the manifest of the
checkpoint's run. ``checkpoints/best.ckpt`` (a relative symbolic link) follows the best checkpoint, so the next stage
can name a stable path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from callbacks.ance_mining import ANCEMiningCallback
from callbacks.embedding_writer import EmbeddingWriter
from callbacks.evaluation_writer import EvaluationWriter
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.run_directory import MANIFEST, run_directory
from retrieval.atomic import atomic_write

BEST_LINK = "best.ckpt"


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``run_dir`` (empty when there is none yet)."""
    path = Path(run_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def link_best(best: str | Path) -> Path:
    """Point ``<checkpoint dir>/best.ckpt`` at ``best`` (relative link, replaced atomically); return the link."""
    best = Path(best)
    link = best.parent / BEST_LINK
    if best.name == BEST_LINK or (link.is_symlink() and os.readlink(link) == best.name):
        return link  # already pointing there: nothing to rewrite
    temporary = link.with_name(f".{BEST_LINK}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(best.name)
    os.replace(temporary, link)
    return link


def _merge(entries: list[dict[str, Any]], new: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """``entries`` updated with ``new`` (a new entry replaces an old one with the same ``key`` values)."""
    merged = {tuple(e.get(k) for k in key): e for e in entries}
    merged.update({tuple(e.get(k) for k in key): e for e in new})
    return list(merged.values())


class RunManifest(Checkpoint):
    """Keep ``<run dir>/run.json`` current (rank 0 writes): after every validation and test, at the end of training
    and of every command. It is a ``Checkpoint`` so that Lightning runs it after the checkpoint callbacks placed
    before it, and sees the checkpoint a validation just saved."""

    def __init__(self) -> None:
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def update(self, trainer: L.Trainer) -> Path:
        """Rewrite the manifest from the trainer's callbacks; return its path (every rank must call this)."""
        run_dir = run_directory(trainer)
        path = run_dir / MANIFEST
        if not trainer.is_global_zero:
            return path
        manifest = read_manifest(run_dir)
        manifest["run_dir"] = str(run_dir.resolve())
        self._checkpoints(trainer, manifest)
        for callback in trainer.callbacks:
            if isinstance(callback, ANCEMiningCallback):
                mined = [{"step": step, "path": str(Path(p).resolve())} for step, p in callback.mined]
                manifest["mined"] = _merge(manifest.get("mined", []), mined, ("path",))
            if isinstance(callback, EmbeddingWriter) and callback.written:
                manifest["embeddings"] = str(Path(callback.written[-1]).resolve())
            if isinstance(callback, EvaluationWriter):
                evaluations = [
                    {
                        "split": e.split,
                        "step": e.step,
                        "directory": str(Path(e.directory).resolve()),
                        "metrics": e.metrics,
                    }
                    for e in callback.written
                ]
                manifest["evaluations"] = _merge(manifest.get("evaluations", []), evaluations, ("directory",))
        command = {"command": trainer.state.fn.value if trainer.state.fn else None, "started": self._started}
        manifest["commands"] = _merge(manifest.get("commands", []), [command], ("command", "started"))
        with atomic_write(path) as handle:
            json.dump(manifest, handle, indent=2)
        return path

    @staticmethod
    def _checkpoints(trainer: L.Trainer, manifest: dict[str, Any]) -> None:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, LastCheckpoint):
                if callback.best_model_path:
                    manifest["last_checkpoint"] = str(Path(callback.best_model_path).resolve())
            elif isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
                manifest["best_checkpoint"] = str(Path(callback.best_model_path).resolve())
                manifest["best_checkpoint_link"] = str(link_best(callback.best_model_path).absolute())
                score = callback.best_model_score
                manifest["best_score"] = None if score is None else float(score)
                manifest["monitor"] = callback.monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.update(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.update(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.update(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.update(trainer)
