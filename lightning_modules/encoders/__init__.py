"""Encoders: the narrow interface and its implementations."""

from lightning_modules.encoders.base import Processor, RetrievalEncoder
from lightning_modules.encoders.clip import CLIPEncoder

__all__ = ["CLIPEncoder", "Processor", "RetrievalEncoder"]
