"""Distributed corpus search: each rank searches its own corpus shard, the top-k lists are merged.

Queries are few and travel to every rank; corpus vectors never leave their rank (Tevatron's
shard-then-merge). Every rank ends with the same merged top-k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from lightning_modules.distributed import gather_no_grad, gather_sizes, is_distributed
from retrieval.index import DenseIndex, IndexConfig, exact_search, merge_topk


@dataclass
class EncodedShard:
    """Vectors of one rank's shard with the global indices they belong to."""

    indices: torch.Tensor  # long [N]
    vectors: torch.Tensor  # fp16 [N, D], CPU

    @classmethod
    def concat(cls, parts: list[tuple[torch.Tensor, torch.Tensor]], dim: int) -> EncodedShard:
        if not parts:
            return cls(torch.zeros(0, dtype=torch.long), torch.zeros((0, dim), dtype=torch.float16))
        return cls(torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu())


def gather_queries(shard: EncodedShard) -> tuple[np.ndarray, torch.Tensor]:
    """The queries encoded on any rank: their indices, sorted, and their vectors ([n, D] fp32), on every rank."""
    indices = gather_no_grad(shard.indices)
    vectors = gather_no_grad(shard.vectors)
    order = torch.argsort(indices)
    return indices[order].numpy(), vectors[order].float()


def count_rows(shard: EncodedShard) -> int:
    """Rows held by all ranks together (a collective)."""
    return sum(gather_sizes(len(shard.indices)))


def search_shards(
    queries: torch.Tensor,
    docs: EncodedShard,
    k: int,
    keep: np.ndarray | None = None,
    index: IndexConfig = IndexConfig(),
    device: torch.device | str | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` global doc indices for every query over all ranks' shards (docs restricted by ``keep``).

    ``keep`` is a boolean mask over the corpus (e.g. text docs only); None keeps all. Each rank searches
    its shard on ``device``, its own (``trainer.strategy.root_device``): exact search (``index.factory`` ``"Flat"``)
    with :func:`retrieval.index.exact_search` (torch on a GPU, FAISS on the CPU), other factories with a FAISS
    index on that one device.
    Returns ``(scores [Q,k] float32, doc indices [Q,k] int64)``, -1 where fewer than k docs exist.
    ``timings`` (optional) receives the seconds spent building the index and searching it.
    """
    timings = {} if timings is None else timings
    indices, vectors = docs.indices, docs.vectors
    if keep is not None:
        mask = torch.from_numpy(keep[indices.numpy()])
        indices, vectors = indices[mask], vectors[mask]
    start = time.perf_counter()
    if index.factory == "Flat":
        timings["index_s"] = 0.0
        scores, local = exact_search(vectors, queries, k, device=device)
    else:
        dense = DenseIndex(queries.shape[1], factory=index.factory, device=device, nprobe=index.nprobe)
        dense.add(vectors)
        timings["index_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores, local = dense.search(queries, k)  # -1 / -inf where the shard has fewer than k docs
    timings["search_s"] = time.perf_counter() - start
    global_ids = np.full_like(local, -1)
    found = local >= 0
    global_ids[found] = indices.numpy()[local[found]]
    if not is_distributed():
        return scores, global_ids
    all_scores = gather_no_grad(torch.from_numpy(scores).unsqueeze(0))
    all_ids = gather_no_grad(torch.from_numpy(global_ids).unsqueeze(0))
    parts = [(s.numpy(), i.numpy()) for s, i in zip(all_scores, all_ids)]
    return merge_topk(parts, [0] * len(parts), k)
