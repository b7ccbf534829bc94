"""Callbacks: in-loop ANCE refresh, evaluation files, the run manifest, embeddings of predict runs, last.ckpt."""

from callbacks.ance_mining import ANCEMiningCallback
from callbacks.embedding_writer import EmbeddingWriter
from callbacks.evaluation_writer import EvaluationWriter
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.run_manifest import RunManifest

__all__ = ["ANCEMiningCallback", "EmbeddingWriter", "EvaluationWriter", "LastCheckpoint", "RunManifest"]
