"""Collators that turn sampler outputs into model batches; they run inside DataLoader workers.

A *processor* (supplied by the encoder, see ``lightning_modules.encoders.base.Processor``) gives
``tokenize(list[str])`` and ``image_transform(PIL.Image) -> Tensor`` plus ``image_shape``.

Doc batch layout, shared by training and corpus encoding::

    {"ids": Long[N] corpus indices, "is_image": Bool[N],
     "text_tokens": tokens of the text docs (in order of ~is_image),
     "image_pixels": Float[Ni,3,H,W], "caption_tokens": tokens of the image docs' captions,
     "image_valid": Bool[Ni] (False where a bad image was skipped)}
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from datamodules.image_store import ImageStore
from datamodules.samplers import TrainSample
from datamodules.webqa_release import Corpus


class DocumentLoader:
    """Loads and preprocesses corpus docs by index: facts, captions and pixels."""

    def __init__(self, corpus: Corpus, images: ImageStore | None, processor: Any) -> None:
        self.corpus = corpus
        self.images = images
        self.processor = processor

    def _pixels(self, doc_id: str) -> tuple[torch.Tensor, bool]:
        image = self.images.load(doc_id) if self.images is not None else None
        if image is None:  # skipped bad image (counted by the store): caption-only doc
            return torch.zeros(self.processor.image_shape), False
        return self.processor.image_transform(image), True

    def load(self, indices: Sequence[int]) -> dict[str, Any]:
        """The doc batch for these corpus indices, in this order."""
        order = np.asarray(indices, dtype=np.int64)
        image_mask = self.corpus.is_image[order]
        text_docs = [self.corpus.texts[i] for i in order[~image_mask]]
        images = order[image_mask]
        captions = [self.corpus.texts[i] for i in images]
        loaded = [self._pixels(self.corpus.doc_ids[i]) for i in images]
        shape = self.processor.image_shape
        return {
            "ids": torch.from_numpy(order),
            "is_image": torch.from_numpy(image_mask),
            "text_tokens": self.processor.tokenize(text_docs) if text_docs else None,
            "image_pixels": torch.stack([p for p, _ in loaded]) if loaded else torch.zeros((0, *shape)),
            "caption_tokens": self.processor.tokenize(captions) if captions else None,
            "image_valid": torch.tensor([ok for _, ok in loaded], dtype=torch.bool),
        }


class TrainCollator:
    """Builds a training batch: queries, de-duplicated docs, and column indices the loss needs."""

    def __init__(self, docs: DocumentLoader, query_texts: list[str], query_positives: Sequence[np.ndarray]) -> None:
        self.docs = docs
        self.query_texts = query_texts
        self.query_positives = query_positives

    def __call__(self, samples: list[TrainSample]) -> dict[str, Any]:
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
        queries = [s.query for s in samples]
        return {
            "query_index": torch.tensor(queries, dtype=torch.long),
            "query_tokens": self.docs.processor.tokenize([self.query_texts[q] for q in queries]),
            "docs": self.docs.load(list(columns)),
            "positive": torch.tensor([columns[s.positive] for s in samples], dtype=torch.long),
            "hard_negatives": hard,
            "query_positive_ids": positive_ids,
            "negatives_version": torch.tensor([s.negatives_version for s in samples], dtype=torch.long),
        }


class QueryCollator:
    """Tokenizes queries by index for encoding."""

    def __init__(self, processor: Any, query_texts: list[str]) -> None:
        self.processor = processor
        self.query_texts = query_texts

    def __call__(self, indices: list[int]) -> dict[str, Any]:
        return {
            "query_index": torch.tensor(indices, dtype=torch.long),
            "query_tokens": self.processor.tokenize([self.query_texts[i] for i in indices]),
        }


class CorpusCollator:
    """Loads corpus docs by index for encoding."""

    def __init__(self, docs: DocumentLoader) -> None:
        self.docs = docs

    def __call__(self, indices: list[int]) -> dict[str, Any]:
        return {"docs": self.docs.load(indices)}
