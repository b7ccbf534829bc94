"""Collators that turn sampler outputs into typed batches (``datamodules.batches``) inside DataLoader workers.

A *processor* (supplied by the encoder, see ``lightning_modules.encoders.base.Processor``) gives
``tokenize(list[str])``, ``tokenize_captions(list[str])`` and ``image_transform(PIL.Image) -> Tensor`` plus
``image_shape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from datamodules.batches import DocBatch, PairBatch, QueryBatch, TrainBatch, long_tensor
from datamodules.image_store import ImageStore
from datamodules.samplers import TrainSample
from datamodules.webqa_release import Corpus


class DocumentLoader:
    """Loads and preprocesses corpus docs by index: facts, captions and pixels."""

    def __init__(self, corpus: Corpus, images: ImageStore | None, processor: Any) -> None:
        self.corpus = corpus
        self.images = images
        self.processor = processor

    def pixels(self, doc_id: str) -> tuple[torch.Tensor, bool]:
        """The transformed picture of an image doc and whether it decoded (a skipped one is zeros)."""
        image = self.images.load(doc_id) if self.images is not None else None
        if image is None:  # skipped bad image (counted by the store): caption-only doc
            return torch.zeros(self.processor.image_shape), False
        return self.processor.image_transform(image), True

    def load(self, indices: Sequence[int]) -> DocBatch:
        """The doc batch for these corpus indices, in this order."""
        order = np.asarray(indices, dtype=np.int64)
        image_mask = self.corpus.is_image[order]
        text_docs = [self.corpus.texts[i] for i in order[~image_mask]]
        images = order[image_mask]
        captions = [self.corpus.texts[i] for i in images]
        loaded = [self.pixels(self.corpus.doc_ids[i]) for i in images]
        shape = self.processor.image_shape
        return DocBatch(
            index=torch.from_numpy(order),
            ids=[self.corpus.doc_ids[i] for i in order],
            is_image=torch.from_numpy(image_mask),
            text_tokens=self.processor.tokenize(text_docs) if text_docs else None,
            image_pixels=torch.stack([p for p, _ in loaded]) if loaded else torch.zeros((0, *shape)),
            caption_tokens=self.processor.tokenize_captions(captions) if captions else None,
            image_valid=torch.tensor([ok for _, ok in loaded], dtype=torch.bool),
        )


class PairCollator:
    """Builds an image-caption batch from positions in ``image_docs`` (corpus indices of the image docs)."""

    def __init__(self, docs: DocumentLoader, image_docs: np.ndarray) -> None:
        self.docs = docs
        self.image_docs = image_docs

    def __call__(self, positions: list[int]) -> PairBatch:
        corpus = self.docs.corpus
        indices = self.image_docs[np.asarray(positions, dtype=np.int64)]
        captions = [corpus.texts[i] for i in indices]
        first: dict[str, int] = {}
        groups = [first.setdefault(caption, len(first)) for caption in captions]
        loaded = [self.docs.pixels(corpus.doc_ids[i]) for i in indices]
        return PairBatch(
            index=torch.from_numpy(indices),
            ids=[corpus.doc_ids[i] for i in indices],
            pixels=torch.stack([p for p, _ in loaded]),
            caption_tokens=self.docs.processor.tokenize(captions),
            caption_groups=long_tensor(groups),
            image_valid=torch.tensor([ok for _, ok in loaded], dtype=torch.bool),
        )


class TrainCollator:
    """Builds a training batch: queries, de-duplicated docs, and column indices the loss needs."""

    def __init__(self, docs: DocumentLoader, queries: QueryCollator, query_positives: Sequence[np.ndarray]) -> None:
        self.docs = docs
        self.queries = queries
        self.query_positives = query_positives

    def __call__(self, samples: list[TrainSample]) -> TrainBatch:
        columns: dict[int, int] = {}
        for s in samples:  # positives first, then negatives; each doc once
            columns.setdefault(s.positive, len(columns))
        for s in samples:
            for n in s.negatives:
                columns.setdefault(n, len(columns))
        n_neg = max((len(s.negatives) for s in samples), default=0)
        hard = torch.full((len(samples), n_neg), -1, dtype=torch.long)
        for row, s in enumerate(samples):
            hard[row, : len(s.negatives)] = torch.tensor([columns[n] for n in s.negatives], dtype=torch.long)
        n_pos = max(len(self.query_positives[s.query]) for s in samples)
        positive_ids = torch.full((len(samples), n_pos), -1, dtype=torch.long)
        for row, s in enumerate(samples):
            pos = self.query_positives[s.query]
            positive_ids[row, : len(pos)] = torch.as_tensor(pos, dtype=torch.long)
        return TrainBatch(
            queries=self.queries([s.query for s in samples]),
            docs=self.docs.load(list(columns)),
            positive=long_tensor([columns[s.positive] for s in samples]),
            hard_negatives=hard,
            positive_index=positive_ids,
            negatives_version=long_tensor([s.negatives_version for s in samples]),
        )


class QueryCollator:
    """Tokenizes queries by position for encoding."""

    def __init__(self, processor: Any, query_texts: list[str], query_ids: list[str]) -> None:
        if len(query_texts) != len(query_ids):
            raise ValueError(f"{len(query_texts)} query texts but {len(query_ids)} query ids")
        self.processor = processor
        self.query_texts = query_texts
        self.query_ids = query_ids

    def __call__(self, indices: list[int]) -> QueryBatch:
        return QueryBatch(
            index=long_tensor(list(indices)),
            ids=[self.query_ids[i] for i in indices],
            tokens=self.processor.tokenize([self.query_texts[i] for i in indices]),
        )


class CorpusCollator:
    """Loads corpus docs by index for encoding."""

    def __init__(self, docs: DocumentLoader) -> None:
        self.docs = docs

    def __call__(self, indices: list[int]) -> DocBatch:
        return self.docs.load(indices)
