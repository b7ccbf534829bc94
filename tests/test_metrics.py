"""Metrics equal trec_eval's (via pytrec_eval, ties included) and hand-worked values; TREC files parse and fail
clearly."""

from __future__ import annotations

import functools
import json
import math
import random

import pytest
import pytrec_eval

from retrieval.errors import InputError
from retrieval.metrics import check_run_ids, evaluate_by_modality, evaluate_run
from retrieval.trec import read_qrels, read_trec_run, write_metrics_json, write_trec_run

TREC_MEASURES = {
    "NDCG@10": "ndcg_cut_10",
    "NDCG@20": "ndcg_cut_20",
    "Recall@20": "recall_20",
    "Recall@100": "recall_100",
}
TIED_SCORES = (0.75, 0.5, 0.375, 0.25, 0.125)  # few distinct fp16 values: ties at every cutoff


def scored(ranking: list[str]) -> list[tuple[str, float]]:
    """A ranking as a scored list with strictly decreasing scores (no ties)."""
    return [(doc, float(len(ranking) - rank)) for rank, doc in enumerate(ranking)]


def search_order(docs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Score descending, ties by docid ascending: the opposite of trec_eval's tie rule."""
    return sorted(docs, key=lambda pair: (-pair[1], pair[0]))


def strcmp_order(a: tuple[str, float], b: tuple[str, float]) -> int:
    """trec_eval's comp_sim_docno, written out: score descending, then docno descending."""
    if a[1] != b[1]:
        return -1 if a[1] > b[1] else 1
    return (a[0] < b[0]) - (a[0] > b[0])


def trec_ranking(docs: list[tuple[str, float]]) -> list[str]:
    return [doc for doc, _ in sorted(docs, key=functools.cmp_to_key(strcmp_order))]


def random_case(seed: int, n_queries: int = 300, n_docs: int = 400, depth: int = 120):
    """Random tied run (distinct docs per query, search order by docid ascending among ties) and qrels with
    1-4 judged docs (levels 0-2); some queries are missing from the run, some have no relevant doc."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        ranking = search_order([(doc, rng.choice(TIED_SCORES)) for doc in rng.sample(docs, rng.randint(0, depth))])
        top = [doc for doc, _ in ranking[:25]]
        wanted, relevant = rng.randint(1, 4), set()
        while len(relevant) < wanted:
            relevant.add(rng.choice(top if top and rng.random() < 0.6 else docs))
        qrels[qid] = {doc: rng.choice([1, 1, 2]) for doc in relevant}
        if rng.random() < 0.3:
            qrels[qid][rng.choice(docs)] = 0
        if rng.random() < 0.05:  # judged, none relevant: trec_eval scores such a query 0
            qrels[qid] = {doc: 0 for doc in qrels[qid]}
        if rng.random() > 0.05:
            run[qid] = ranking
    return run, qrels


def trec_eval_means(run: dict[str, dict[str, float]], qrels) -> dict[str, float]:
    """pytrec_eval over all qrels queries (as ``trec_eval -c``) of a run given as qid -> {docid: score};
    MRR@k = recip_rank when the first relevant rank is <= k, i.e. recip_rank >= 1/k."""
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", *TREC_MEASURES.values()})
    per_query = evaluator.evaluate(run)
    means = {
        name: 100.0 * sum(per_query.get(qid, {}).get(measure, 0.0) for qid in qrels) / len(qrels)
        for name, measure in TREC_MEASURES.items()
    }
    rr = [per_query.get(qid, {}).get("recip_rank", 0.0) for qid in qrels]
    for k in (10, 20):
        means[f"MRR@{k}"] = 100.0 * sum(r for r in rr if r >= 1.0 / k - 1e-12) / len(qrels)
    return means


def mrr_loop(rankings: dict[str, list[str]], qrels, k: int) -> float:
    total = 0.0
    for qid, judged in qrels.items():
        for rank, doc in enumerate(rankings.get(qid, [])[:k], start=1):
            if judged.get(doc, 0) > 0:
                total += 1.0 / rank
                break
    return 100.0 * total / len(qrels)


def parse_run_file(path) -> dict[str, list[tuple[str, int, float]]]:
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, _ = line.split()
        run.setdefault(qid, []).append((doc, int(rank), float(score)))
    return run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_metrics_equal_trec_eval_with_ties(seed):
    run, qrels = random_case(seed)
    ours = evaluate_run(run, qrels)
    theirs = trec_eval_means({qid: dict(docs) for qid, docs in run.items()}, qrels)
    assert set(ours) == set(theirs)
    for name in theirs:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mrr_equals_plain_loop_in_trec_eval_order(seed):
    run, qrels = random_case(seed)
    metrics = evaluate_run(run, qrels)
    ordered = {qid: trec_ranking(docs) for qid, docs in run.items()}
    search = {qid: [doc for doc, _ in docs] for qid, docs in run.items()}
    for k in (10, 20):
        assert metrics[f"MRR@{k}"] == pytest.approx(mrr_loop(ordered, qrels, k), abs=1e-9)
        assert metrics[f"MRR@{k}"] != pytest.approx(mrr_loop(search, qrels, k), abs=1e-6)  # the ties matter


def test_metrics_equal_trec_eval_on_the_written_and_read_run(tmp_path):
    run, qrels = random_case(3, n_queries=60)
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="t")
    written = parse_run_file(path)
    for qid, lines in written.items():
        assert [rank for _, rank, _ in lines] == list(range(1, len(lines) + 1))
        assert [doc for doc, _, _ in lines] == trec_ranking(run[qid])
    theirs = trec_eval_means({qid: {doc: score for doc, _, score in lines} for qid, lines in written.items()}, qrels)
    read_back = read_trec_run(path)
    assert {qid: [doc for doc, _ in docs] for qid, docs in read_back.items()} == {
        qid: [doc for doc, _, _ in lines] for qid, lines in written.items()
    }
    for ours in (evaluate_run(run, qrels), evaluate_run(read_back, qrels)):
        for name in theirs:
            assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


def test_ties_rank_the_larger_docid_first():
    qrels = {"q": {"a": 1}}
    metrics = evaluate_run({"q": [("a", 0.5), ("ab", 0.5), ("B", 0.5)]}, qrels)  # trec_eval: "ab", "a", "B"
    assert metrics["MRR@10"] == pytest.approx(50.0)
    assert metrics["NDCG@10"] == pytest.approx(100 / math.log2(3))
    assert evaluate_run({"q": [("a", 0.6), ("b", 0.5)]}, qrels)["MRR@10"] == pytest.approx(100.0)


def test_hand_worked_example():
    qrels = {"a": {"x": 1, "y": 1}, "b": {"z": 1}, "c": {"w": 1}, "d": {"v": 1}}
    run = {
        "a": scored(["n1", "x", "n2", "y"]),  # first hit at rank 2
        "b": scored([f"m{i}" for i in range(14)] + ["z"]),  # first hit at rank 15
        "c": scored(["n1", "n2"]),  # no hit
        "extra": scored(["w"]),
    }  # not in qrels: ignored; "d" missing from the run: 0
    metrics = evaluate_run(run, qrels)
    assert metrics["MRR@10"] == pytest.approx(100 * (1 / 2) / 4)
    assert metrics["MRR@20"] == pytest.approx(100 * (1 / 2 + 1 / 15) / 4)
    assert metrics["Recall@20"] == pytest.approx(100 * (1.0 + 1.0) / 4)
    ndcg_a = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert metrics["NDCG@10"] == pytest.approx(100 * ndcg_a / 4)
    assert metrics["NDCG@20"] == pytest.approx(100 * (ndcg_a + 1 / math.log2(16)) / 4)
    assert list(metrics) == ["MRR@10", "MRR@20", "NDCG@10", "NDCG@20", "Recall@20", "Recall@100"]


def test_recall_is_a_fraction_not_a_hit_rate():
    metrics = evaluate_run({"q": scored(["a", "x", "y"])}, {"q": {"a": 1, "b": 1, "c": 1, "d": 1}})
    assert metrics["Recall@20"] == pytest.approx(25.0)


def test_bad_runs_and_qrels_rejected():
    with pytest.raises(InputError, match="twice"):
        evaluate_run({"q": [("a", 1.0), ("a", 0.5)]}, {"q": {"a": 1}})
    with pytest.raises(InputError, match="empty"):
        evaluate_run({"q": [("a", 1.0)]}, {})
    with pytest.raises(InputError, match=r"query 'q' is not a list of \(docid, score\) pairs"):
        evaluate_run({"q": ["a", "b"]}, {"q": {"a": 1}})
    with pytest.raises(InputError, match="NaN"):
        evaluate_run({"q": [("a", float("nan"))]}, {"q": {"a": 1}})


def test_image_share():
    images = {"i1", "i2", "i3"}
    run = {
        "a": scored(["i1", "t1", "i2", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "i3"]),  # 2 of top-10
        "b": scored(["i1", "t1"]),  # 1 of 2 retrieved
        "c": [],
    }  # no ranking: skipped
    qrels = {"a": {"t1": 1}, "b": {"i1": 1}, "c": {"t1": 1}}
    assert evaluate_run(run, qrels, images)["image_share@10"] == pytest.approx(100 * (0.2 + 0.5) / 2)
    assert "image_share@10" not in evaluate_run(run, qrels)
    tied = {"a": [(doc, 1.0) for doc in ["i1", "i2", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]]}
    assert evaluate_run(tied, qrels, images)["image_share@10"] == pytest.approx(10.0)  # "i1" is 11th, not 1st


def test_modality_views():
    images = {"i1", "i2", "i3"}
    qrels = {"tq": {"t1": 1, "t2": 1}, "iq": {"i1": 1}, "iq2": {"i2": 1}}
    mixed = {"tq": scored(["i1", "t1", "t2"]), "iq": scored(["i1"]), "iq2": scored(["t1", "i2"])}
    text_run = {"tq": scored(["t2", "t1"]), "iq": scored(["t1"]), "iq2": scored(["t3"])}
    image_run = {"tq": scored(["i3"]), "iq": [("i1", 0.5), ("i2", 0.5)], "iq2": scored(["i2"])}  # tie: "i2" first
    metrics = evaluate_by_modality(mixed, qrels, images, text_run=text_run, image_run=image_run)
    assert metrics["MRR@10"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["image_share@10"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 2) / 3)
    assert metrics["text/MRR@10"] == pytest.approx(100.0)  # only "tq" is a text query
    assert metrics["text/Recall@20"] == pytest.approx(100.0)
    assert metrics["image/MRR@10"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert "text/image_share@10" not in metrics
    only_mixed = evaluate_by_modality(mixed, qrels, images)
    assert not any("/" in key for key in only_mixed)
    with pytest.raises(InputError, match="text_run ranks an image document 'i1'"):
        evaluate_by_modality(mixed, qrels, images, text_run={"tq": scored(["i1"])})
    with pytest.raises(InputError, match="image_run ranks a text document 't1'"):
        evaluate_by_modality(mixed, qrels, images, image_run={"iq": scored(["t1"])})


def test_check_run_ids():
    known = {"a", "b", "c"}
    check_run_ids({"q": scored(["a", "b"])}, {"q": {"c": 1}}, known)
    with pytest.raises(InputError, match=r"run names 7 unknown ids \('x0', 'x1', 'x2', 'x3', 'x4' and 2 more\)"):
        check_run_ids({"q": scored(["a"] + [f"x{i}" for i in range(7)])}, {"q": {"a": 1}}, known)
    with pytest.raises(InputError, match=r"qrels name 1 unknown ids \('zz'\)"):
        check_run_ids({"q": scored(["a"])}, {"q": {"zz": 1}}, known)
    with pytest.raises(InputError, match="absent from the qrels"):
        check_run_ids({"q": scored(["a"]), "other": scored(["b"])}, {"q": {"a": 1}}, known)
    check_run_ids({"q": scored(["a"]), "other": scored(["b"])}, {"q": {"a": 1}}, known, allow_extra_queries=True)


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
    assert [doc for doc, _ in read_trec_run(path)["q"]] == ["a", "c", "b"]  # equal scores: docid descending


def test_write_trec_run_writes_ties_in_trec_eval_order(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q": [("a", 1.0), ("ab", 1.0), ("B", 1.0), ("c", 0.5)]}, tag="t")
    assert [line.split()[2:4] for line in path.read_text().splitlines()] == [
        ["ab", "1"],
        ["a", "2"],
        ["B", "3"],
        ["c", "4"],
    ]


def test_write_trec_run_rejects_bad_rankings(tmp_path):
    with pytest.raises(InputError, match="decreasing score"):
        write_trec_run(tmp_path / "r", {"q": [("a", 0.1), ("b", 0.2)]}, "t")
    with pytest.raises(InputError, match="whitespace"):
        write_trec_run(tmp_path / "r", {"q 1": [("a", 0.1)]}, "t")
    with pytest.raises(InputError, match="run tag"):
        write_trec_run(tmp_path / "r", {"q": [("a", 0.1)]}, "my tag")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text, message",
    [
        ("q Q0 a 1 0.5\n", r"run.trec:1: expected 6 columns"),
        ("q Q0 a 1 0.5 t\nq Q0 b one 0.4 t\n", r"run.trec:2: rank 'one'"),
        ("q Q0 a 1 0.5 t\nq Q0 a 2 0.4 t\n", r"run.trec:2: doc 'a' appears twice"),
    ],
)
def test_malformed_run_lines(tmp_path, text, message):
    path = tmp_path / "run.trec"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_trec_run(path)


def test_read_qrels_both_forms(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1\td1\t1\nq1\td2\t1\n\nq2 0 d3 2\nq2 0 d4 0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 0}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("q1\td1\t1\nq1 d2\n", r"qrels.txt:2: expected 'qid docid rel'"),
        ("q1\td1\tyes\n", r"qrels.txt:1: relevance 'yes'"),
        ("q1\td1\t1\nq1\td1\t0\n", r"qrels.txt:2: doc 'd1' .* judged both"),
    ],
)
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
