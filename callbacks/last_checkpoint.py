"""``last.ckpt`` that always holds the newest state of a fit.

Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only together with a new best: when the
monitored metric stops improving, ``last.ckpt`` stays at the best step and a run resumed from it loses every step
since. This checkpoint is rewritten after every validation (or training epoch, when Lightning saves there), and once
more when training ends if the final step was not saved yet, in the directory Lightning picks for checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``<checkpoint dir>/last.ckpt``: the newest state of the fit, for ``--ckpt_path`` and SLURM's ``auto``."""

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step:
            path = str(Path(self.dirpath) / f"last{self.FILE_EXTENSION}")
            trainer.save_checkpoint(path)
            self._last_global_step_saved, self.best_model_path = trainer.global_step, path
