"""Divide and conquer: ranked lists of several retrievers fused into one (paper Table 1, "BM25 & CLIP-DPR").

* Reciprocal rank fusion (Cormack et al. 2009): ``score(d) = sum over runs r of w_r / (k + rank_r(d))``, rank from 1
  in trec_eval's order; a run that does not rank ``d`` adds nothing.
* Interpolation: each run's scores normalised per query (``minmax``: to [0, 1]; ``zscore``: mean 0, sd 1), then
  ``score(d) = sum over runs r of w_r * norm_r(d)``; a run that does not rank ``d`` gives it its lowest normalised
  score for that query (the doc ranks below all it returned).
* Oracle modality routing: each query keeps only the docs of the modality of its relevant docs (the qrels), i.e. a
  perfect router in front of one retriever per modality; the paper's upper bound of the pipeline. A query with
  relevant docs of both modalities keeps both.

Runs are ``qid -> [(docid, score)]``; the fused run keeps each query's top ``depth`` docs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from retrieval.errors import InputError, first_ids
from retrieval.trec import SCORE_THEN_DOCID, trec_order

Run = Mapping[str, Sequence[tuple[str, float]]]
FusedRun = dict[str, list[tuple[str, float]]]
METHODS = ("rrf", "interpolation")
NORMALISATIONS = ("minmax", "zscore")


def _weights(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float]:
    if len(runs) < 2:
        raise InputError(f"fusion needs at least two runs, got {len(runs)}; pass two or more run files")
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs) or any(not math.isfinite(w) or w < 0 for w in weights):
        raise InputError(
            f"weights {list(weights)} do not fit {len(runs)} runs; give one finite weight >= 0 per run, in order"
        )
    return [float(w) for w in weights]


def _ranked(ranking: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """A ranking in trec_eval's order (score descending, ties by doc id descending); cheap when already sorted."""
    return sorted(ranking, key=SCORE_THEN_DOCID, reverse=True)


def _top(scores: dict[str, float], depth: int) -> list[tuple[str, float]]:
    if any(map(math.isnan, scores.values())):
        raise InputError("a fused score is NaN; check the input runs' scores")
    return heapq.nlargest(depth, scores.items(), key=SCORE_THEN_DOCID)


def reciprocal_rank_fusion(
    runs: Sequence[Run], k: float = 60.0, weights: Sequence[float] | None = None, depth: int = 100
) -> FusedRun:
    """RRF of ``runs`` (each ranked in trec_eval's order first); the top ``depth`` of each query."""
    if k < 0:
        raise InputError(f"the RRF constant must be >= 0, got {k}; the usual value is 60")
    weights = _weights(runs, weights)
    fused: dict[str, dict[str, float]] = {}
    for run, weight in zip(runs, weights):
        for qid, ranking in run.items():
            scores = fused.setdefault(qid, {})
            get = scores.get
            for rank, (doc, _) in enumerate(_ranked(ranking), start=1):
                scores[doc] = get(doc, 0.0) + weight / (k + rank)
    return {qid: _top(scores, depth) for qid, scores in fused.items()}


def _minmax(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    return low, (high - low) or 1.0


def _zscore(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, spread or 1.0


def interpolate(
    runs: Sequence[Run],
    weights: Sequence[float] | None = None,
    normalisation: str = "minmax",
    depth: int = 100,
) -> FusedRun:
    """Weighted sum of per-query normalised scores (see the module docstring)."""
    if normalisation not in NORMALISATIONS:
        raise InputError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")
    weights = _weights(runs, weights)
    centre_scale: Callable[[list[float]], tuple[float, float]] = _minmax if normalisation == "minmax" else _zscore
    qids = list(dict.fromkeys(qid for run in runs for qid in run))
    fused: FusedRun = {}
    for qid in qids:
        # w * norm(s) = w * norm(low) + (s - low) * w / scale, with low the run's lowest score for the query: the
        # first term is what every doc gets from the run (a doc it misses gets exactly that), the second what a
        # ranked doc gets on top of it; one pass over the rankings, no per-run dictionaries
        gains: dict[str, float] = {}
        get = gains.get
        floor = 0.0
        for run, weight in zip(runs, weights):
            ranking = run.get(qid, ())
            if not ranking:
                continue
            values = [score for _, score in ranking]
            centre, scale = centre_scale(values)
            low = min(values)
            floor += weight * (low - centre) / scale
            step = weight / scale
            for doc, score in ranking:
                gains[doc] = get(doc, 0.0) + (score - low) * step
        fused[qid] = _top({doc: floor + gain for doc, gain in gains.items()}, depth)
    return fused


@dataclass(frozen=True)
class FusionSettings:
    """How runs are fused: ``method`` (``rrf`` or ``interpolation``) with its parameters, oracle routing after it,
    and the depth of the fused ranking."""

    method: str = "rrf"
    oracle_routing: bool = False
    weights: tuple[float, ...] | None = None
    rrf_k: float = 60.0
    normalisation: str = "minmax"
    top_k: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS or self.top_k < 1:
            raise InputError(
                f"fusion method {self.method!r}, top_k {self.top_k}: choose a method among {', '.join(METHODS)} "
                "and a top_k >= 1"
            )

    @property
    def name(self) -> str:
        return f"{self.method}{'-oracle' if self.oracle_routing else ''}"

    def fuse(self, runs: Sequence[Run]) -> FusedRun:
        """The runs fused by the method (oracle routing is applied by the caller, who has the qrels)."""
        if self.method == "rrf":
            return reciprocal_rank_fusion(runs, k=self.rrf_k, weights=self.weights, depth=self.top_k)
        return interpolate(runs, weights=self.weights, normalisation=self.normalisation, depth=self.top_k)


def query_modalities(qrels: Mapping[str, Mapping[str, int]], image_doc_ids: set[str]) -> dict[str, set[bool]]:
    """qid -> the modalities of its relevant docs (True: image), from the qrels."""
    return {
        qid: {doc in image_doc_ids for doc, level in judged.items() if level > 0}
        for qid, judged in qrels.items()
        if any(level > 0 for level in judged.values())
    }


def oracle_route(run: Run, qrels: Mapping[str, Mapping[str, int]], image_doc_ids: set[str]) -> FusedRun:
    """Each query's ranking cut to the docs of its relevant docs' modality (queries without a relevant doc keep
    nothing: no oracle can route them)."""
    if not image_doc_ids:
        raise InputError("oracle routing needs image docs in the corpus and there are none; check the caption file")
    modalities = query_modalities(qrels, image_doc_ids)
    return {
        qid: [(doc, score) for doc, score in trec_order(ranking) if (doc in image_doc_ids) in modalities[qid]]
        for qid, ranking in run.items()
        if qid in modalities
    }


def check_runs_fit(
    runs: Mapping[str, Run], split_qids: set[str], doc_ids: set[str] | Mapping[str, object], split: str
) -> None:
    """Each run must name only docs of the corpus and queries of the split; InputError naming the run otherwise."""
    for name, run in runs.items():
        unknown_docs = list(dict.fromkeys(doc for ranking in run.values() for doc, _ in ranking if doc not in doc_ids))
        if unknown_docs:
            raise InputError(
                f"run {name} names {len(unknown_docs)} doc ids that are not in the corpus ({first_ids(unknown_docs)}); "
                "fuse runs searched over this data directory's corpus (same caption file)"
            )
        foreign = [qid for qid in run if qid not in split_qids]
        if foreign:
            raise InputError(
                f"run {name} has {len(foreign)} queries that are not {split} queries ({first_ids(foreign)}); "
                f"fuse runs of the same query set (--split {split}), not runs of different splits"
            )
