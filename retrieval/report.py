"""Turn search results into a TREC run file, metrics and ``metrics.json`` in a run directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from retrieval.metrics import evaluate_by_modality
from retrieval.trec import trec_order, write_metrics_json, write_trec_run

SearchResult = tuple[np.ndarray, np.ndarray]  # scores [Q,k], doc indices [Q,k] (-1 = none)


def ranked_run(result: SearchResult, qids: Sequence[str], doc_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
    """qid -> [(docid, score)] in trec_eval's order (ties by docid descending, not the search's order),
    dropping the -1 padding."""
    scores, indices = result
    run = {}
    for qid, row_scores, row in zip(qids, scores.tolist(), indices.tolist()):
        run[qid] = trec_order((doc_ids[d], s) for d, s in zip(row, row_scores) if d >= 0)
    return run


def score_runs(
    runs: Mapping[str, SearchResult], qids: Sequence[str], doc_ids: Sequence[str]
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """Each search result as a scored run (qid -> [(docid, score)] in trec_eval's order)."""
    return {name: ranked_run(result, qids, doc_ids) for name, result in runs.items()}


def evaluate_runs(
    scored: Mapping[str, Mapping[str, list[tuple[str, float]]]],
    qrels: Mapping[str, Mapping[str, int]],
    doc_ids: Sequence[str],
    is_image: np.ndarray,
) -> dict[str, float]:
    """trec_eval's metrics of ``scored['all']`` (mixed corpus) and, when present, of the text and image views."""
    image_ids = {d for d, img in zip(doc_ids, is_image) if img}
    judged = {q: dict(r) for q, r in qrels.items()}
    return evaluate_by_modality(scored["all"], judged, image_ids, scored.get("text"), scored.get("image"))


def view_run_file(view: str) -> str:
    """The file name of a view's run next to ``run.trec``: ``run-text.trec``, ``run-image.trec``."""
    return f"run-{view}.trec"


def write_evaluation(
    out_dir: str | Path,
    run: Mapping[str, list[tuple[str, float]]],
    metrics: Mapping[str, float],
    tag: str,
    views: Mapping[str, Mapping[str, list[tuple[str, float]]]] | None = None,
) -> None:
    """``run.trec`` (the mixed run, in trec_eval's order), ``metrics.json`` and, for each of ``views`` (``text``:
    the run over the text docs alone, ``image``: over the image docs alone), ``run-<view>.trec`` into ``out_dir``
    (atomic writes). The view runs are what divide-and-conquer fusion takes (``train.py fuse``)."""
    out_dir = Path(out_dir)
    write_trec_run(out_dir / "run.trec", run, tag=tag)
    for view, view_run in (views or {}).items():
        write_trec_run(out_dir / view_run_file(view), view_run, tag=f"{tag}-{view}")
    write_metrics_json(out_dir / "metrics.json", metrics)
