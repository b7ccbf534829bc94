"""Callbacks: in-loop ANCE hard-negative refresh."""
from callbacks.ance_mining import ANCEMiningCallback

__all__ = ["ANCEMiningCallback"]
