"""SLURM preemption at a step boundary: on SIGUSR1 save ``hpc_ckpt_N.ckpt``, ``scontrol requeue``, wait to be killed.

Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) saves the checkpoint inside the signal handler,
wherever the signal lands (in the middle of an optimizer step, between the step and its bookkeeping): a run resumed
from it may not end with an uninterrupted run's weights (20 of 40 random signals in a tiny fit). This callback's
handler only sets a flag, read at the end of the next training batch, where a checkpoint resumes exactly (the same
point as ``ModelCheckpoint(every_n_train_steps=...)``); the ranks agree on the step through one reduction.
The handler is installed when the callback is created, before the Trainer starts: Lightning then installs none of
its own for the signal, and a signal during start-up does not kill the process.

    python train.py fit ... --trainer.callbacks+=callbacks.slurm_requeue.SLURMRequeue --ckpt_path auto

After a successful requeue the callback waits for SLURM's SIGTERM, so that no later step writes a newer checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def hpc_checkpoint_path(root: str | Path) -> Path:
    """``root/hpc_ckpt_{N+1}.ckpt`` where N is the highest number already there (Lightning's naming)."""
    names = (re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name) for p in Path(root).glob("hpc_ckpt_*.ckpt"))
    numbers = [int(m.group(1)) for m in names if m]
    return Path(root) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def slurm_job_id() -> str | None:
    """The id that ``scontrol requeue`` takes for this job (``ARRAYJOB_TASK`` for an array task), None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class SLURMRequeue(Callback):
    """Save a checkpoint and requeue the SLURM job at the first training-batch end after ``signal_name`` arrives.

    Args:
        signal_name: the signal of ``#SBATCH --signal`` (sent to the ``srun`` step).
        wait_for_kill_s: after a successful requeue, how long to wait for SLURM's SIGTERM before training on.
    """

    def __init__(self, signal_name: str = "SIGUSR1", wait_for_kill_s: float = 120.0) -> None:
        self.signum = signal.Signals[signal_name]
        self.wait_for_kill_s = wait_for_kill_s
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        requested = self.requested
        if trainer.world_size > 1:  # every rank saves at the same step, whenever the signal reached it
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        self.requested = False
        for logger in trainer.loggers:  # the metrics logged so far reach the files before the job goes
            logger.save()
        path = hpc_checkpoint_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        requeued = self._requeue() if trainer.is_global_zero else False
        requeued = trainer.strategy.broadcast(requeued)
        if trainer.is_global_zero:
            log.warning(
                f"{self.signum.name} at step {trainer.global_step}: saved {path}"
                + ("; requeued the job, waiting for SLURM to stop it" if requeued else "")
            )
        if requeued:
            deadline = time.monotonic() + self.wait_for_kill_s
            while not getattr(trainer, "received_sigterm", False) and time.monotonic() < deadline:
                time.sleep(0.2)

    @staticmethod
    def _requeue() -> bool:
        """``scontrol requeue`` this job; False (with a warning) when that is impossible."""
        job_id = slurm_job_id()
        if job_id is None:
            log.warning("not a SLURM job: checkpoint saved, nothing requeued")
            return False
        try:
            proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            log.warning(f"scontrol requeue {job_id} failed: {err}")
            return False
        if proc.returncode != 0:
            log.warning(f"scontrol requeue {job_id} failed: {proc.stderr.strip()}")
        return proc.returncode == 0
