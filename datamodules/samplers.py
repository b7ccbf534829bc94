"""Samplers that run in the main process: training samples with their negatives, and eval shards.

Both subclass ``DistributedSampler`` so Lightning leaves them as they are under DDP; each knows its
rank and hands out only its share.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from datamodules.negatives import NegativePool, NegativeStrategy, sample_negatives
from retrieval.errors import InputError


@dataclass(frozen=True)
class TrainSample:
    """One training example: query, sampled positive and hard negatives (corpus indices)."""

    query: int
    positive: int
    negatives: tuple[int, ...]
    negatives_version: int


class NegativeRegistry:
    """The active hard-negative pool; re-mining activates a new version for batches drawn afterwards."""

    def __init__(self, pool: NegativePool, source: str | None = None, version: int = 0) -> None:
        self._lock = threading.Lock()
        self.version = version
        self.pool = pool
        self.source = source

    def activate(self, pool: NegativePool, source: str | None = None) -> int:
        with self._lock:
            self.pool, self.source = pool, source
            self.version += 1
            return self.version

    def restore(self, version: int) -> None:
        """Continue a resumed run at ``version`` (draws are seeded by it)."""
        with self._lock:
            self.version = version

    def current(self) -> tuple[int, NegativePool]:
        with self._lock:
            return self.version, self.pool


class IndexDataset(Dataset):
    """A dataset whose items are the sampler's own outputs; collators do the loading."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item):  # noqa: ANN001 - whatever the sampler yields
        return item


class TrainSampleSampler(DistributedSampler):
    """Yields :class:`TrainSample` for this rank: a seeded shuffle per epoch, fresh draws per epoch.

    The draw of a query's positive and negatives depends only on (seed, epoch, query), so it is
    reproducible and independent of rank count, workers and timing. ``composition='balanced'``
    alternates image-positive and text-positive queries so every batch is modality balanced.
    """

    def __init__(
        self,
        positives: Sequence[np.ndarray],
        query_is_image: np.ndarray,
        registry: NegativeRegistry,
        strategy: NegativeStrategy,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        composition: str = "random",
    ) -> None:
        if composition not in ("random", "balanced"):
            raise InputError(f"unknown batch composition {composition!r}; choose 'random' or 'balanced'")
        self.positives = positives
        self.query_is_image = np.asarray(query_is_image, dtype=bool)
        self.registry = registry
        self.strategy = strategy
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.composition = composition
        self.epoch = 0
        self.skip_batches = 0  # set when resuming mid-epoch
        self.num_batches = len(positives) // (batch_size * num_replicas)
        if self.num_batches == 0:
            raise InputError(
                f"{len(positives)} training queries cannot fill one batch of {batch_size} x {num_replicas} "
                f"device(s); lower data.batch_size"
            )

    def __len__(self) -> int:
        # The full epoch even when resuming mid-epoch: Lightning counts the restored batches itself.
        return self.num_batches * self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All ranks' queries for ``epoch`` in order (global batches laid end to end)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.composition == "random":
            order = rng.permutation(len(self.positives))
        else:
            images = rng.permutation(np.flatnonzero(self.query_is_image))
            texts = rng.permutation(np.flatnonzero(~self.query_is_image))
            n = min(len(images), len(texts))
            order = np.empty(2 * n, dtype=np.int64)
            order[0::2], order[1::2] = images[:n], texts[:n]
            order = np.concatenate([order, images[n:], texts[n:]])
        return order[: self.num_batches * self.batch_size * self.num_replicas]

    def draw(self, query: int, epoch: int, version: int, pool: NegativePool) -> TrainSample:
        """Draw one query's positive and negatives for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, query, version])
        positive = int(rng.choice(self.positives[query]))
        negatives = sample_negatives(pool, query, self.strategy, rng)
        return TrainSample(query=int(query), positive=positive, negatives=tuple(negatives), negatives_version=version)

    def __iter__(self) -> Iterator[TrainSample]:
        order = self.epoch_order(self.epoch)
        global_batch = self.batch_size * self.num_replicas
        first, self.skip_batches = self.skip_batches, 0  # the skip applies to the resumed epoch only
        for b in range(first, self.num_batches):
            start = b * global_batch + self.rank * self.batch_size
            version, pool = self.registry.current()  # read per batch: new negatives apply to the next batch drawn
            for query in order[start : start + self.batch_size]:
                yield self.draw(int(query), self.epoch, version, pool)


class ContiguousShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets the contiguous block ``[r*N/W, (r+1)*N/W)``: no padding, no repeats."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = math.floor(rank * length / num_replicas)
        self.stop = math.floor((rank + 1) * length / num_replicas)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))
