"""Callbacks: in-loop ANCE hard-negative refresh, and the embedding writer of predict runs."""
from callbacks.ance_mining import ANCEMiningCallback
from callbacks.embedding_writer import EmbeddingWriter

__all__ = ["ANCEMiningCallback", "EmbeddingWriter"]
