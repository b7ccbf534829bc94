"""Metrics agree with trec_eval (via pytrec_eval) and hand-worked values; TREC files parse and fail clearly."""
from __future__ import annotations

import json
import math
import random
import time

import pytest
import pytrec_eval

from retrieval.errors import InputError
from retrieval.metrics import check_run_ids, evaluate_by_modality, evaluate_run
from retrieval.trec import read_qrels, read_trec_run, write_metrics_json, write_trec_run

TREC_MEASURES = {"NDCG@10": "ndcg_cut_10", "NDCG@20": "ndcg_cut_20", "Recall@20": "recall_20",
                 "Recall@100": "recall_100"}


def random_case(seed: int, n_queries: int = 300, n_docs: int = 400, depth: int = 120):
    """Random run (distinct docs per query) and qrels with 1-4 judged docs (levels 0-2); some queries are
    missing from the run, some have no relevant doc."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        ranking = rng.sample(docs, rng.randint(0, depth))
        wanted, relevant = rng.randint(1, 4), set()
        while len(relevant) < wanted:
            near_top = ranking[:25] and rng.random() < 0.6
            relevant.add(rng.choice(ranking[:25] if near_top else docs))
        qrels[qid] = {doc: rng.choice([1, 1, 2]) for doc in relevant}
        if rng.random() < 0.3:
            qrels[qid][rng.choice(docs)] = 0
        if rng.random() < 0.05:  # judged, none relevant: trec_eval scores such a query 0
            qrels[qid] = {doc: 0 for doc in qrels[qid]}
        if rng.random() > 0.05:
            run[qid] = ranking
    return run, qrels


def trec_eval_means(run, qrels) -> dict[str, float]:
    """pytrec_eval over all qrels queries (as ``trec_eval -c``), with scores that encode the run order."""
    scored = {qid: {doc: float(len(ranking) - rank) for rank, doc in enumerate(ranking)}
              for qid, ranking in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_MEASURES.values()))
    per_query = evaluator.evaluate({qid: docs for qid, docs in scored.items() if docs})
    return {name: 100.0 * sum(per_query.get(qid, {}).get(measure, 0.0) for qid in qrels) / len(qrels)
            for name, measure in TREC_MEASURES.items()}


def mrr_loop(run, qrels, k: int) -> float:
    total = 0.0
    for qid, judged in qrels.items():
        for rank, doc in enumerate(run.get(qid, [])[:k], start=1):
            if judged.get(doc, 0) > 0:
                total += 1.0 / rank
                break
    return 100.0 * total / len(qrels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_and_recall_equal_trec_eval(seed):
    run, qrels = random_case(seed)
    ours, theirs = evaluate_run(run, qrels), trec_eval_means(run, qrels)
    for name in TREC_MEASURES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mrr_equals_plain_loop(seed):
    run, qrels = random_case(seed)
    metrics = evaluate_run(run, qrels)
    assert metrics["MRR@10"] == pytest.approx(mrr_loop(run, qrels, 10), abs=1e-9)
    assert metrics["MRR@20"] == pytest.approx(mrr_loop(run, qrels, 20), abs=1e-9)


def test_hand_worked_example():
    qrels = {"a": {"x": 1, "y": 1}, "b": {"z": 1}, "c": {"w": 1}, "d": {"v": 1}}
    run = {"a": ["n1", "x", "n2", "y"],       # first hit at rank 2
           "b": [f"m{i}" for i in range(14)] + ["z"],  # first hit at rank 15
           "c": ["n1", "n2"],                  # no hit
           "extra": ["w"]}                     # not in qrels: ignored; "d" missing from the run: 0
    metrics = evaluate_run(run, qrels)
    assert metrics["MRR@10"] == pytest.approx(100 * (1 / 2) / 4)
    assert metrics["MRR@20"] == pytest.approx(100 * (1 / 2 + 1 / 15) / 4)
    assert metrics["Recall@20"] == pytest.approx(100 * (1.0 + 1.0) / 4)
    ndcg_a = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert metrics["NDCG@10"] == pytest.approx(100 * ndcg_a / 4)
    assert metrics["NDCG@20"] == pytest.approx(100 * (ndcg_a + 1 / math.log2(16)) / 4)
    assert set(metrics) == {"MRR@10", "MRR@20", "NDCG@10", "NDCG@20", "Recall@20", "Recall@100"}


def test_recall_is_a_fraction_not_a_hit_rate():
    metrics = evaluate_run({"q": ["a", "x", "y"]}, {"q": {"a": 1, "b": 1, "c": 1, "d": 1}})
    assert metrics["Recall@20"] == pytest.approx(25.0)


def test_duplicate_docs_in_ranking_rejected():
    with pytest.raises(InputError, match="twice"):
        evaluate_run({"q": ["a", "a"]}, {"q": {"a": 1}})
    with pytest.raises(InputError, match="empty"):
        evaluate_run({"q": ["a"]}, {})


def test_evaluation_is_fast():
    rng = random.Random(0)
    qrels = {f"q{i}": {f"d{rng.randrange(10**6)}": 1 for _ in range(rng.randint(1, 4))} for i in range(5000)}
    run = {qid: [f"d{j}" for j in rng.sample(range(10**6), 100)] for qid in qrels}
    images = {f"d{j}" for j in range(0, 10**6, 2)}
    start = time.perf_counter()
    evaluate_run(run, qrels, image_doc_ids=images)
    assert time.perf_counter() - start < 1.0


def test_image_share():
    images = {"i1", "i2", "i3"}
    run = {"a": ["i1", "t1", "i2", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "i3"],  # 2 of top-10
           "b": ["i1", "t1"],                                                        # 1 of 2 retrieved
           "c": []}                                                                  # no ranking: skipped
    qrels = {"a": {"t1": 1}, "b": {"i1": 1}, "c": {"t1": 1}}
    assert evaluate_run(run, qrels, images)["image_share@10"] == pytest.approx(100 * (0.2 + 0.5) / 2)
    assert "image_share@10" not in evaluate_run(run, qrels)


def test_modality_views():
    images = {"i1", "i2", "i3"}
    qrels = {"tq": {"t1": 1, "t2": 1}, "iq": {"i1": 1}, "iq2": {"i2": 1}}
    mixed = {"tq": ["i1", "t1", "t2"], "iq": ["i1"], "iq2": ["t1", "i2"]}
    text_run = {"tq": ["t2", "t1"], "iq": ["t1"], "iq2": ["t3"]}
    image_run = {"tq": ["i3"], "iq": ["i2", "i1"], "iq2": ["i2"]}
    metrics = evaluate_by_modality(mixed, qrels, images, text_run=text_run, image_run=image_run)
    assert metrics["MRR@10"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["image_share@10"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 2) / 3)
    assert metrics["text/MRR@10"] == pytest.approx(100.0)       # only "tq" is a text query
    assert metrics["text/Recall@20"] == pytest.approx(100.0)
    assert metrics["image/MRR@10"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert "text/image_share@10" not in metrics
    only_mixed = evaluate_by_modality(mixed, qrels, images)
    assert not any("/" in key for key in only_mixed)
    with pytest.raises(InputError, match="text_run ranks an image document 'i1'"):
        evaluate_by_modality(mixed, qrels, images, text_run={"tq": ["i1"]})
    with pytest.raises(InputError, match="image_run ranks a text document 't1'"):
        evaluate_by_modality(mixed, qrels, images, image_run={"iq": ["t1"]})


def test_check_run_ids():
    known = {"a", "b", "c"}
    check_run_ids({"q": ["a", "b"]}, {"q": {"c": 1}}, known)
    with pytest.raises(InputError, match=r"run names 7 unknown ids \('x0', 'x1', 'x2', 'x3', 'x4' and 2 more\)"):
        check_run_ids({"q": ["a"] + [f"x{i}" for i in range(7)]}, {"q": {"a": 1}}, known)
    with pytest.raises(InputError, match=r"qrels name 1 unknown ids \('zz'\)"):
        check_run_ids({"q": ["a"]}, {"q": {"zz": 1}}, known)
    with pytest.raises(InputError, match="absent from the qrels"):
        check_run_ids({"q": ["a"], "other": ["b"]}, {"q": {"a": 1}}, known)
    check_run_ids({"q": ["a"], "other": ["b"]}, {"q": {"a": 1}}, known, allow_extra_queries=True)


def test_trec_run_round_trip_and_trec_eval(tmp_path):
    run = {"q1": [("d1", 3.5), ("d2", 1.25), ("d3", -0.125)], "q2": [("d9", 0.1 + 0.2)]}
    path = tmp_path / "runs" / "run.trec"
    write_trec_run(path, run, tag="univl")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 3.5 univl" and lines[-1].split()[:4] == ["q2", "Q0", "d9", "1"]
    assert read_trec_run(path) == run
    assert list(tmp_path.joinpath("runs").iterdir()) == [path]


def test_read_trec_run_orders_by_score(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q Q0 b 1 0.5 t\nq Q0 a 2 0.9 t\n\nq Q0 c 3 0.5 t\n")
    assert [doc for doc, _ in read_trec_run(path)["q"]] == ["a", "b", "c"]


def test_write_trec_run_rejects_bad_rankings(tmp_path):
    with pytest.raises(InputError, match="decreasing score"):
        write_trec_run(tmp_path / "r", {"q": [("a", 0.1), ("b", 0.2)]}, "t")
    with pytest.raises(InputError, match="whitespace"):
        write_trec_run(tmp_path / "r", {"q 1": [("a", 0.1)]}, "t")
    with pytest.raises(InputError, match="run tag"):
        write_trec_run(tmp_path / "r", {"q": [("a", 0.1)]}, "my tag")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text, message", [("q Q0 a 1 0.5\n", r"run.trec:1: expected 6 columns"),
                                           ("q Q0 a 1 0.5 t\nq Q0 b one 0.4 t\n", r"run.trec:2: rank 'one'"),
                                           ("q Q0 a 1 0.5 t\nq Q0 a 2 0.4 t\n", r"run.trec:2: doc 'a' appears twice")])
def test_malformed_run_lines(tmp_path, text, message):
    path = tmp_path / "run.trec"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_trec_run(path)


def test_read_qrels_both_forms(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1\td1\t1\nq1\td2\t1\n\nq2 0 d3 2\nq2 0 d4 0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 0}}


@pytest.mark.parametrize("text, message", [("q1\td1\t1\nq1 d2\n", r"qrels.txt:2: expected 'qid docid rel'"),
                                           ("q1\td1\tyes\n", r"qrels.txt:1: relevance 'yes'"),
                                           ("q1\td1\t1\nq1\td1\t0\n", r"qrels.txt:2: doc 'd1' .* judged both")])
def test_malformed_qrels_lines(tmp_path, text, message):
    path = tmp_path / "qrels.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_qrels(path)
    with pytest.raises(InputError, match="does not exist"):
        read_qrels(tmp_path / "missing.txt")


def test_write_metrics_json(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics_json(path, {"b": 2, "MRR@10": 62.4, "a/x": 1.5})
    text = path.read_text()
    assert json.loads(text) == {"MRR@10": 62.4, "a/x": 1.5, "b": 2.0}
    assert text.index('"MRR@10"') < text.index('"a/x"') < text.index('"b"') and '\n  "b": 2.0' in text
    with pytest.raises(InputError, match="'bad'"):
        write_metrics_json(path, {"bad": float("nan")})
