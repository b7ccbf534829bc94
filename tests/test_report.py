"""score_runs, evaluate_runs, write_evaluation (the module's and EvaluationWriter's path): the printed metrics
are trec_eval's on the written run.trec, tied scores included."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from retrieval.report import evaluate_runs, score_runs, write_evaluation

N_DOCS = 40
DOC_IDS = [f"d{i:02d}" for i in range(N_DOCS)]  # index order = docid ascending: the reverse of trec_eval's tie order
IS_IMAGE = np.array([i % 3 == 0 for i in range(N_DOCS)])
CUTS = {"NDCG@10": "ndcg_cut_10", "NDCG@20": "ndcg_cut_20", "Recall@20": "recall_20", "Recall@100": "recall_100"}


def _search_result(rows: list[list[tuple[int, float]]], depth: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """FAISS-shaped (scores, indices) in the given search order, padded with -1."""
    scores, indices = np.full((len(rows), depth), -np.inf, np.float32), np.full((len(rows), depth), -1)
    for row, pairs in enumerate(rows):
        indices[row, : len(pairs)] = [doc for doc, _ in pairs]
        scores[row, : len(pairs)] = [score for _, score in pairs]
    return scores, indices


def _tied_rows(seed: int, keep: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
    """Per query, 25 docs with scores from a 4-value fp16 grid (many ties), listed index-ascending among ties."""
    rng = np.random.default_rng(seed)
    allowed = np.flatnonzero(keep if keep is not None else np.ones(N_DOCS, bool))
    rows = []
    for _ in range(4):
        docs = rng.choice(allowed, size=min(25, len(allowed)), replace=False)
        scores = rng.choice(np.float16([0.75, 0.5, 0.25, 0.125]), size=len(docs)).astype(np.float32)
        rows.append(sorted(zip(docs.tolist(), scores.tolist()), key=lambda pair: (-pair[1], pair[0])))
    return rows


def _qrels(rows: list[list[tuple[int, float]]]) -> dict[str, dict[str, int]]:
    """Judge the first doc of the first tied block (search order) and one doc deep in the ranking."""
    qrels = {}
    for q, pairs in enumerate(rows[:3]):
        qrels[f"q{q}"] = {DOC_IDS[pairs[0][0]]: 1, DOC_IDS[pairs[10][0]]: 2, DOC_IDS[pairs[-1][0]]: 0}
    qrels["q_missing"] = {DOC_IDS[5]: 1}  # judged, never searched: scores 0
    return qrels


def _parse_run(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, rank, score, _ = line.split()
        run.setdefault(qid, []).append((doc, int(rank), float(score)))
    return run


def _strcmp_order(a: tuple[str, int, float], b: tuple[str, int, float]) -> int:
    """trec_eval's comp_sim_docno: score descending, then docno descending (strcmp)."""
    if a[2] != b[2]:
        return -1 if a[2] > b[2] else 1
    return (a[0] < b[0]) - (a[0] > b[0])


def _trec_eval(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Means over all qrels queries of pytrec_eval's measures; MRR@k = recip_rank when its rank is <= k."""
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", *CUTS.values()})
    per_query = evaluator.evaluate(run)
    values = {name: [per_query.get(q, {}).get(m, 0.0) for q in qrels] for name, m in CUTS.items()}
    rr = [per_query.get(q, {}).get("recip_rank", 0.0) for q in qrels]
    for k in (10, 20):
        values[f"MRR@{k}"] = [r if r >= 1.0 / k - 1e-12 else 0.0 for r in rr]
    return {name: 100.0 * sum(v) / len(qrels) for name, v in values.items()}


def _ranked_dict(result: tuple[np.ndarray, np.ndarray], qids: list[str]) -> dict[str, dict[str, float]]:
    scores, indices = result
    return {
        q: {DOC_IDS[d]: float(s) for d, s in zip(row_i, row_s) if d >= 0}
        for q, row_i, row_s in zip(qids, indices.tolist(), scores.tolist())
    }


def _restrict(qrels: dict[str, dict[str, int]], image: bool) -> dict[str, dict[str, int]]:
    images = {d for d, flag in zip(DOC_IDS, IS_IMAGE) if flag}
    subset = {q: {d: r for d, r in judged.items() if (d in images) == image} for q, judged in qrels.items()}
    return {q: judged for q, judged in subset.items() if any(r > 0 for r in judged.values())}


def test_metrics_equal_trec_eval_on_the_written_run_with_ties(tmp_path: Path) -> None:
    rows = _tied_rows(0)
    qids = [f"q{q}" for q in range(len(rows))]  # q3 is searched but unjudged: ignored
    qrels = _qrels(rows)
    runs = {
        "all": _search_result(rows),
        "text": _search_result(_tied_rows(1, ~IS_IMAGE)),
        "image": _search_result(_tied_rows(2, IS_IMAGE)),
    }
    scored = score_runs(runs, qids, DOC_IDS)  # as the module scores an evaluation
    metrics = evaluate_runs(scored, qrels, DOC_IDS, IS_IMAGE)
    write_evaluation(tmp_path, scored["all"], metrics, tag="t")  # as EvaluationWriter writes it

    written = _parse_run(tmp_path / "run.trec")
    for qid, lines in written.items():
        assert [rank for _, rank, _ in lines] == list(range(1, len(lines) + 1))
        assert lines == sorted(lines, key=functools.cmp_to_key(_strcmp_order)), qid
    assert [doc for doc, _, _ in written["q0"]] != [DOC_IDS[d] for d, _ in rows[0]]  # the ties were reordered
    file_run = {q: {doc: score for doc, _, score in lines} for q, lines in written.items()}
    expected = _trec_eval(file_run, qrels)
    images = {d for d, flag in zip(DOC_IDS, IS_IMAGE) if flag}
    shares = [
        sum(doc in images for doc, rank, _ in written[q] if rank <= 10) / min(10, len(written[q]))
        for q in qrels
        if written.get(q)
    ]
    expected["image_share@10"] = 100.0 * sum(shares) / len(shares)
    for prefix in ("text", "image"):
        view = _trec_eval(_ranked_dict(runs[prefix], qids), _restrict(qrels, prefix == "image"))
        expected.update({f"{prefix}/{name}": value for name, value in view.items()})

    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics, abs=1e-12)
