"""Where a run's outputs go: one directory per run, whatever the logger."""

from __future__ import annotations

from pathlib import Path

import lightning as L

#: The manifest every run directory holds (``callbacks.RunManifest``).
MANIFEST = "run.json"


def run_directory(trainer: L.Trainer) -> Path:
    """The run directory: the one the CLI chose (``trainer.run_dir``), else the logger's, else the trainer's root.

    Without the CLI's ``run_dir``, ``trainer.log_dir`` broadcasts from rank 0 under DDP, so every rank must call this.
    """
    chosen = getattr(trainer, "run_dir", None)
    if chosen is not None:
        return Path(chosen)
    return Path(trainer.log_dir or trainer.default_root_dir)


def run_of_checkpoint(ckpt_path: str | Path) -> Path:
    """The run directory a checkpoint belongs to: the nearest folder above it holding a manifest, else the folder
    above ``checkpoints/``, else the checkpoint's own folder."""
    path = Path(ckpt_path).resolve()
    for folder in list(path.parents)[:3]:
        if (folder / MANIFEST).is_file():
            return folder
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent
