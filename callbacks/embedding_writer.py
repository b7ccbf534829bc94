"""Write the corpus embeddings of a ``predict`` run: one fp16 ``.npy`` and one ids file per rank.

    python train.py predict --config C --ckpt_path X --trainer.callbacks+=callbacks.EmbeddingWriter \
        --return_predictions false

Each rank writes, into ``output_dir`` (default ``<run dir>/embeddings``, the checkpoint's run),
``embeddings-rank{r}.npy`` (fp16 [N_r, D]) and ``doc_ids-rank{r}.txt`` (one doc id a
line, same order) under temporary names, then renames them; the shards together cover the corpus once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.run_directory import run_directory
from retrieval.atomic import atomic_write


class EmbeddingWriter(BasePredictionWriter):
    """Save ``predict_step`` outputs ``(corpus indices, vectors)`` of this rank at the end of the run."""

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.written: list[str] = []

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        indices = torch.cat([p[0] for p in predictions]) if predictions else torch.zeros(0, dtype=torch.long)
        vectors = (
            torch.cat([p[1] for p in predictions]) if predictions else torch.zeros((0, pl_module.encoder.embedding_dim))
        )
        doc_ids = trainer.datamodule.corpus.doc_ids
        rank = trainer.global_rank
        output_dir = self.output_dir or run_directory(trainer) / "embeddings"
        with atomic_write(output_dir / f"embeddings-rank{rank}.npy", "wb") as handle:
            np.save(handle, vectors.to(torch.float16).numpy())
        with atomic_write(output_dir / f"doc_ids-rank{rank}.txt") as handle:
            handle.writelines(f"{doc_ids[i]}\n" for i in indices.tolist())
        self.written.append(str(output_dir))
