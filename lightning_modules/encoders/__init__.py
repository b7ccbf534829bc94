"""Encoders: the narrow interface and its implementations."""

from lightning_modules.encoders.base import Processor, RetrievalEncoder
from lightning_modules.encoders.clip import CLIPEncoder
from lightning_modules.encoders.marvel import MarvelEncoder

__all__ = ["CLIPEncoder", "MarvelEncoder", "Processor", "RetrievalEncoder"]
