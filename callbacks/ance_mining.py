"""ANCE-style hard-negative refresh: re-mine negatives with the current weights during training.

At fit start (when asked) and every N steps or epochs the callback encodes the whole corpus and the
training queries with the model being trained, searches top-k over the mixed corpus (each rank its
shard, lists merged), removes positives, writes the ranked negatives in the release's schema
(``img_negFacts``/``txt_negFacts``/``all_negFacts``; temporary name, then rename) and makes the
datamodule draw from them for the batches sampled next. All ranks switch at the same step and read
the same file (on multi-node runs the run directory must be on a shared file system).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from callbacks.run_directory import run_directory
from datamodules.negatives import write_negatives_file
from lightning_modules.corpus_search import EncodedShard, gather_queries, search_shards

log = logging.getLogger(__name__)


def encode_loader(trainer: L.Trainer, module: L.LightningModule, loader: Iterable, desc: str) -> EncodedShard:
    """Encode every batch of ``loader`` on this rank with the module's ``embed_batch``."""
    parts = []
    bar = tqdm(loader, desc=desc, disable=not trainer.is_global_zero or not trainer.progress_bar_callback, leave=False)
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in bar:
            parts.append(module.embed_batch(trainer.strategy.batch_to_device(batch)))
    return EncodedShard.concat(parts, module.encoder.embedding_dim)


def mine_negatives(trainer: L.Trainer, module: L.LightningModule, path: Path, top_k: int = 100) -> dict[str, float]:
    """Mine top-``top_k`` negatives of the training queries with the current weights into ``path``.

    Reads what it needs through the datamodule's ``mining_data()`` and searches with the module's ``index``
    configuration. Every rank must call it. Returns the seconds spent encoding, building the index, searching and
    writing.
    """
    data = trainer.datamodule.mining_data()
    was_training = module.training
    module.eval()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    docs = encode_loader(trainer, module, data.corpus_loader, "mining: corpus")
    shard = encode_loader(trainer, module, data.query_loader, "mining: queries")
    rows, queries = gather_queries(shard)
    if len(rows) != len(data.queries):  # the mined file must list every training query, in order
        raise RuntimeError(f"mining encoded {len(rows)} of {len(data.queries)} training queries")
    timings["encode_s"] = time.perf_counter() - start
    depth = top_k + max(len(p) for p in data.positives)  # room for the positives we drop
    _, ranked = search_shards(queries, docs, depth, index=module.index, device=module.device, timings=timings)
    start = time.perf_counter()
    if trainer.is_global_zero:
        write_negatives_file(path, data.queries, ranked.tolist(), data.corpus, depth=top_k)
    trainer.strategy.barrier("mined negatives written")
    timings["write_s"] = time.perf_counter() - start
    module.train(was_training)
    return timings


def _training_ends_now(trainer: L.Trainer) -> bool:
    """True after the run's last optimizer step: negatives mined now would never be used."""
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = (
        trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch >= trainer.max_epochs - 1
    )
    return bool(last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class ANCEMiningCallback(Callback):
    """Refresh hard negatives from an index rebuilt with the current model.

    Args:
        every_n_steps: re-mine after every this many optimizer steps (None: never by steps).
        every_n_epochs: re-mine after every this many epochs (None: never by epochs).
        at_fit_start: mine before the first step (skipped when resuming a run that already mined).
        on_validate: mine at the start of a ``validate`` run (the offline stage-2 path).
        top_k: depth of the mined lists (the paper: 100).
        output_dir: where files go; default ``<run dir>/negatives``.
        output_file: one fixed file instead (offline mining: ``train.py mine --out``).

    The search uses the module's ``index`` configuration (``model.index``), the same as evaluation. Every refresh is
    recorded as a ``(step, path)`` pair in :attr:`mined` (saved in checkpoints and listed in ``run.json``).
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        at_fit_start: bool = False,
        on_validate: bool = False,
        top_k: int = 100,
        output_dir: str | None = None,
        output_file: str | None = None,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or null, got {value}")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.at_fit_start = at_fit_start
        self.on_validate = on_validate
        self.top_k = top_k
        self.output_dir = output_dir
        self.output_file = output_file
        self.last_mined_step: int | None = None
        self.mined: list[tuple[int, str]] = []
        self.timings: list[dict[str, float]] = []

    def _path(self, trainer: L.Trainer, module: L.LightningModule) -> Path:
        if self.output_file:
            return Path(self.output_file)
        base = Path(self.output_dir) if self.output_dir else run_directory(trainer) / "negatives"
        return base / f"train-negatives-step{self._step(trainer, module):07d}.json"

    @staticmethod
    def _step(trainer: L.Trainer, module: L.LightningModule) -> int:
        """The step of the weights mined with: the fit's, or the restored checkpoint's outside ``fit``."""
        step = getattr(module, "evaluation_step", None)
        return int(step()) if callable(step) else trainer.global_step

    def refresh(self, trainer: L.Trainer, module: L.LightningModule) -> Path:
        """Mine with the current weights and switch the datamodule to the new negatives."""
        path = Path(trainer.strategy.broadcast(str(self._path(trainer, module)), src=0))
        timings = mine_negatives(trainer, module, path, self.top_k)
        version = trainer.datamodule.activate_negatives(path)
        self.last_mined_step = trainer.global_step
        self.mined.append((self._step(trainer, module), str(path)))
        self.timings.append(timings)
        if trainer.is_global_zero:
            log.info(
                "mined negatives at step %d -> %s (version %d; %s)",
                trainer.global_step,
                path,
                version,
                {k: round(v, 2) for k, v in timings.items()},
            )
        return path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_fit_start and self.last_mined_step is None:
            self.refresh(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        due = self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self.last_mined_step
        if due and not _training_ends_now(trainer):
            self.refresh(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if due and trainer.global_step != self.last_mined_step and not _training_ends_now(trainer):
            self.refresh(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_validate and trainer.state.fn == "validate":
            self.refresh(trainer, pl_module)

    @property
    def mined_files(self) -> list[str]:
        """The mined files, oldest first."""
        return [path for _, path in self.mined]

    def state_dict(self) -> dict[str, Any]:
        return {"last_mined_step": self.last_mined_step, "mined": [list(pair) for pair in self.mined]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_mined_step = state_dict.get("last_mined_step")
        self.mined = [(int(step), str(path)) for step, path in state_dict.get("mined", [])]
