"""The encoder interface every model family implements (CLIP dual towers now, MARVEL later).

The loss and the datamodule only see this interface: three ``encode_*`` methods returning
L2-normalised vectors, and a picklable :class:`Processor` that DataLoader workers use to turn
strings and pictures into model inputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import torch
from PIL import Image
from torch import nn

from lightning_modules.checkpoint_config import qualified_name
from retrieval.errors import InputError

#: Whatever a processor's ``tokenize`` returns: a token tensor (CLIP) or a dict of tensors (HF).
TextBatch = Any


class Processor(Protocol):
    """Turns raw inputs into model inputs; must pickle (it travels to DataLoader workers)."""

    image_shape: tuple[int, int, int]

    def tokenize(self, texts: list[str]) -> TextBatch: ...

    def tokenize_captions(self, captions: list[str]) -> TextBatch:
        """Tokens of image docs' captions (MARVEL wraps them in its patch-token template)."""
        ...

    def image_transform(self, image: Image.Image) -> torch.Tensor: ...


class RetrievalEncoder(nn.Module, ABC):
    """Maps queries, text docs and image docs into one space of L2-normalised vectors."""

    embedding_dim: int
    #: Init arguments that fix the weights' shapes; each must be an attribute of the same name.
    ARCHITECTURE_ARGS: tuple[str, ...] = ()

    def architecture(self) -> dict[str, object]:
        """``{"class_path": module.Class, arg: value}`` for :attr:`ARCHITECTURE_ARGS`, saved in checkpoints."""
        return {"class_path": qualified_name(type(self)), **{a: getattr(self, a) for a in self.ARCHITECTURE_ARGS}}

    @property
    @abstractmethod
    def processor(self) -> Processor:
        """The tokenizer and image transform matching this encoder."""

    @abstractmethod
    def encode_queries(self, tokens: TextBatch) -> torch.Tensor:
        """[B, D] normalised query vectors."""

    @abstractmethod
    def encode_texts(self, tokens: TextBatch) -> torch.Tensor:
        """[N, D] normalised text-doc vectors."""

    @abstractmethod
    def encode_images(
        self, pixels: torch.Tensor, caption_tokens: TextBatch, image_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, D] normalised image-doc vectors from pixels and captions (``image_valid`` False: caption only)."""

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, D] normalised vectors of pictures alone (image-caption pretraining)."""
        raise InputError(f"{type(self).__name__} has no embedding of pictures alone; train it on queries")


class SimpleProcessor:
    """A processor made of a tokenizer callable and an image transform callable."""

    def __init__(
        self,
        tokenizer: Callable[[list[str]], TextBatch],
        transform: Callable[[Image.Image], torch.Tensor],
        image_size: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.transform = transform
        self.image_shape = (3, image_size, image_size)

    def tokenize(self, texts: list[str]) -> TextBatch:
        return self.tokenizer(texts)

    def tokenize_captions(self, captions: list[str]) -> TextBatch:
        return self.tokenizer(captions)

    def image_transform(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)
