"""Write the corpus embeddings of a ``predict`` run: one fp16 ``.npy`` and one ids file per rank.

    python train.py predict --config C --ckpt_path X \
        --trainer.callbacks+=callbacks.EmbeddingWriter --trainer.callbacks.output_dir=runs/embeddings \
        --return_predictions false

Each rank writes ``embeddings-rank{r}.npy`` (fp16 [N_r, D]) and ``doc_ids-rank{r}.txt`` (one doc id a
line, same order) under temporary names, then renames them; the shards together cover the corpus once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from retrieval.atomic import atomic_write


class EmbeddingWriter(BasePredictionWriter):
    """Save ``predict_step`` outputs ``(corpus indices, vectors)`` of this rank at the end of the run."""

    def __init__(self, output_dir: str = "runs/embeddings") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]) -> None:
        indices = torch.cat([p[0] for p in predictions]) if predictions else torch.zeros(0, dtype=torch.long)
        vectors = torch.cat([p[1] for p in predictions]) if predictions else torch.zeros((0, pl_module.encoder.embedding_dim))
        doc_ids = trainer.datamodule.corpus.doc_ids
        rank = trainer.global_rank
        with atomic_write(self.output_dir / f"embeddings-rank{rank}.npy", "wb") as handle:
            np.save(handle, vectors.to(torch.float16).numpy())
        with atomic_write(self.output_dir / f"doc_ids-rank{rank}.txt") as handle:
            handle.writelines(f"{doc_ids[i]}\n" for i in indices.tolist())
