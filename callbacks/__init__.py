"""Callbacks: in-loop ANCE hard-negative refresh, the embedding writer of predict runs, an always-current last.ckpt."""
from callbacks.ance_mining import ANCEMiningCallback
from callbacks.embedding_writer import EmbeddingWriter
from callbacks.last_checkpoint import LastCheckpoint

__all__ = ["ANCEMiningCallback", "EmbeddingWriter", "LastCheckpoint"]
