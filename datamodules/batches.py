"""Typed batches: what the collators build in the DataLoader workers and what the module consumes.

Four kinds, so that code dispatches on the type, never on a loader's position:

* :class:`DocBatch`: corpus docs (text facts and image docs) for encoding;
* :class:`QueryBatch`: queries for encoding;
* :class:`TrainBatch`: queries with their de-duplicated docs and the columns the loss needs;
* :class:`PairBatch`: pictures with their captions (image-caption pretraining, ``data.train_task: image_caption``).

Lightning moves dataclasses to the device field by field (tensors move, id lists stay).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class _CountsSkippedImages:
    """``skipped_images`` of a batch with an ``image_valid`` flag per picture."""

    image_valid: Tensor

    @property
    def skipped_images(self) -> Tensor:
        """Number of pictures of this batch skipped as undecodable (a float scalar, for logging)."""
        return (~self.image_valid).sum().float()


@dataclass
class DocBatch(_CountsSkippedImages):
    """Docs by corpus index. Text docs and image docs are tokenized separately, each in corpus-index order.

    Attributes:
        index: [N] long corpus indices (positions in ``Corpus.doc_ids``).
        ids: the N doc ids (``snippet_id`` / image id) as in the release.
        is_image: [N] bool modality flags.
        text_tokens: tokens of the text docs (rows in the order of ``~is_image``), None if there are none.
        image_pixels: [Ni, 3, H, W] pixels of the image docs.
        caption_tokens: tokens of the image docs' captions, None if there are none.
        image_valid: [Ni] bool, False where an undecodable image was skipped (caption only).
    """

    index: Tensor
    ids: list[str]
    is_image: Tensor
    text_tokens: Tensor | None
    image_pixels: Tensor
    caption_tokens: Tensor | None
    image_valid: Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class QueryBatch:
    """Queries by position in their split.

    Attributes:
        index: [B] long positions of the queries in their split's query list.
        ids: the B query ids (``qid``).
        tokens: the tokenized query texts.
    """

    index: Tensor
    ids: list[str]
    tokens: Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TrainBatch:
    """One training step's queries and docs.

    Attributes:
        queries: the B queries (``index`` = positions in the training queries).
        docs: the batch's unique docs, sampled positives first, then hard negatives.
        positive: [B] long column in ``docs`` of each query's sampled positive.
        hard_negatives: [B, H] long columns in ``docs`` of each query's hard negatives, -1 = padding.
        positive_index: [B, P] long corpus indices of all positives of each query, -1 = padding.
        negatives_version: [B] long version of the negatives each query's draw came from.
    """

    queries: QueryBatch
    docs: DocBatch
    positive: Tensor
    hard_negatives: Tensor
    positive_index: Tensor
    negatives_version: Tensor

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def has_images(self) -> bool:
        """Whether any doc of the batch is an image doc (the vision tower takes part)."""
        return self.docs.caption_tokens is not None


@dataclass
class PairBatch(_CountsSkippedImages):
    """Image docs as picture-caption pairs.

    Attributes:
        index: [B] long corpus indices of the image docs.
        ids: the B image ids.
        pixels: [B, 3, H, W] pictures.
        caption_tokens: the captions tokenized as text (``processor.tokenize``), row b the caption of picture b.
        caption_groups: [B] long, equal where two captions are the same text (they are not each other's negatives).
        image_valid: [B] bool, False where an undecodable picture was skipped (the pair takes no part).
    """

    index: Tensor
    ids: list[str]
    pixels: Tensor
    caption_tokens: Tensor
    caption_groups: Tensor
    image_valid: Tensor

    def __len__(self) -> int:
        return len(self.ids)


def long_tensor(values: list[int]) -> Tensor:
    """A 1-d long tensor of ``values``."""
    return torch.tensor(values, dtype=torch.long)
