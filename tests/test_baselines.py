"""BM25 (against the formula), fusion (against hand-computed RRF and interpolation), oracle routing, the ``bm25`` and
``fuse`` subcommands with their bad inputs, and the reproduction runner's resume."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from commands.reproduce import Settings, run_reproduce, select_rows
from datamodules.webqa_datamodule import WebQADataModule
from datamodules.webqa_release import Corpus, read_queries
from retrieval.bm25 import BM25Index, BM25Settings, fingerprint, tokenize
from retrieval.errors import InputError
from retrieval.fusion import interpolate, oracle_route, reciprocal_rank_fusion
from retrieval.metrics import evaluate_by_modality
from retrieval.trec import read_qrels, read_trec_run

from test_commands import run_in_process

DOCS = {
    "t1": "The Orvane bridge crosses the river Tay in three red arches.",
    "t2": "Orvane is a town; its bridge was built in 1850.",
    "t3": "A museum of old clocks and a museum of maps.",
    "i1": "The Orvane bridge at night, lit in red.",
    "i2": "Clocks, clocks and more clocks in the museum hall.",
    "i3": "",
}
IMAGES = {"i1", "i2", "i3"}
QUERIES = ["red bridge of Orvane", "museum clocks", "bridge bridge", "unseen words only"]


def lucene_bm25(query: list[str], docs: list[list[str]], k1: float, b: float) -> list[float]:
    """Lucene's BM25 written out: sum over query tokens of idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl))."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    df = Counter(token for doc in docs for token in set(doc))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for token in query:
            if tf[token]:
                idf = math.log(1 + (n - df[token] + 0.5) / (df[token] + 0.5))
                score += idf * tf[token] / (tf[token] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(score)
    return scores


@pytest.mark.parametrize("k1, b", [(0.9, 0.4), (1.5, 0.75)])
def test_bm25_scores_are_the_lucene_formula_and_views_keep_one_modality(k1: float, b: float) -> None:
    settings = BM25Settings(k1=k1, b=b)
    ids, texts = list(DOCS), list(DOCS.values())
    index = BM25Index.build(ids, texts, [d in IMAGES for d in ids], settings, progress=False)
    doc_tokens = tokenize(texts, settings)
    for query, ranking, image_ranking in zip(
        QUERIES, index.search(QUERIES, k=10, progress=False), index.search(QUERIES, k=10, view="image", progress=False)
    ):
        expected = dict(zip(ids, lucene_bm25(tokenize([query], settings)[0], doc_tokens, k1, b)))
        matching = {d: s for d, s in expected.items() if s > 0}
        assert dict(ranking) == pytest.approx(matching, rel=1e-5)
        assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
        assert dict(image_ranking) == pytest.approx({d: s for d, s in matching.items() if d in IMAGES}, rel=1e-5)
    assert index.search(["unseen words only"], progress=False) == [[]]  # nothing matches: nothing is returned


def test_bm25_index_is_reloaded_memory_mapped_only_for_the_same_corpus_and_settings(tmp_path: Path) -> None:
    ids, texts = list(DOCS), list(DOCS.values())
    index = BM25Index.build(ids, texts, [d in IMAGES for d in ids], progress=False)
    index.save(tmp_path / "index", fingerprint(ids, texts))
    loaded = BM25Index.load(tmp_path / "index", BM25Settings(), fingerprint(ids, texts))
    assert type(loaded.retriever.scores["data"]).__name__ == "memmap"
    assert loaded.search(QUERIES, progress=False) == index.search(QUERIES, progress=False)
    assert BM25Index.load(tmp_path / "index", BM25Settings(b=0.5), fingerprint(ids, texts)) is None
    assert BM25Index.load(tmp_path / "index", BM25Settings(), fingerprint(ids, [*texts[:-1], "new"])) is None


def test_rrf_and_interpolation_match_hand_computation() -> None:
    run_a = {"q": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}
    run_b = {"q": [("d3", 0.9), ("d4", 0.5)], "r": [("d1", 1.0)]}
    fused = reciprocal_rank_fusion([run_a, run_b], k=60)
    # d3: 1/63 + 1/61; d1: 1/61; d2 and d4: 1/62 each, tied, so by doc id descending (trec_eval's order)
    assert fused["q"] == [("d3", 1 / 63 + 1 / 61), ("d1", 1 / 61), ("d4", 1 / 62), ("d2", 1 / 62)]
    assert fused["r"] == [("d1", 1 / 61)]
    weighted = reciprocal_rank_fusion([run_a, run_b], k=0, weights=[2.0, 1.0], depth=2)
    assert weighted["q"] == [("d1", 2 / 1), ("d3", 2 / 3 + 1 / 1)]  # d2: 2 / 2 and d4: 1 / 2 cut by depth 2
    # min-max: a = d1 1, d2 0.5, d3 0; b = d3 1, d4 0; a doc a run misses gets that run's lowest value
    assert interpolate([run_a, run_b])["q"] == [("d3", 1.0), ("d1", 1.0), ("d2", 0.5), ("d4", 0.0)]
    assert interpolate([run_a, run_b], weights=[0.25, 0.75])["q"][0] == ("d3", 0.75)
    # z-score: a = (3, 2, 1) -> (1.2247, 0, -1.2247) (population sd sqrt(2/3)); b = (0.9, 0.5) -> (1, -1); a missed
    # doc gets the run's lowest value: d1 1.2247 - 1, d2 0 - 1, d3 -1.2247 + 1, d4 -1.2247 - 1
    z = 1 / math.sqrt(2 / 3)
    expected = {"d1": z - 1, "d3": 1 - z, "d2": -1.0, "d4": -z - 1}
    zscored = interpolate([run_a, run_b], normalisation="zscore")["q"]
    assert [doc for doc, _ in zscored] == ["d1", "d3", "d2", "d4"]
    assert all(score == pytest.approx(expected[doc], abs=1e-12) for doc, score in zscored)
    with pytest.raises(InputError, match="at least two runs"):
        reciprocal_rank_fusion([run_a])
    with pytest.raises(InputError, match="weights"):
        interpolate([run_a, run_b], weights=[1.0])


def test_oracle_routing_never_returns_the_other_modality() -> None:
    run = {"qt": [("i1", 5.0), ("t1", 4.0), ("i2", 3.0), ("t2", 2.0)], "qi": [("t1", 9.0), ("i2", 1.0)], "qx": []}
    qrels = {"qt": {"t9": 1}, "qi": {"i7": 1, "t1": 0}, "qx": {"i1": 1, "t1": 1}}
    routed = oracle_route(run, qrels, IMAGES | {"i7"})
    assert routed == {"qt": [("t1", 4.0), ("t2", 2.0)], "qi": [("i2", 1.0)], "qx": []}


@pytest.fixture(scope="module")
def bm25_out(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.py bm25`` on the tiny data, run twice (the second run loads the saved index)."""
    out = tmp_path_factory.mktemp("bm25")
    for _ in range(2):
        proc = run_in_process("bm25", "--data.data_dir", str(tiny_data_dir), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_bm25_command_writes_runs_and_metrics_scored_like_dense_runs(bm25_out: Path, tiny_data_dir: Path) -> None:
    info = json.loads((bm25_out / "bm25.json").read_text())
    assert info["index_loaded"] and info["settings"]["k1"] == 0.9 and info["settings"]["b"] == 0.4
    corpus = Corpus.from_release(tiny_data_dir)
    images = {d for d, img in zip(corpus.doc_ids, corpus.is_image) if img}
    runs = {v: read_trec_run(bm25_out / f"run{'' if v == 'all' else '-' + v}.trec") for v in ("all", "text", "image")}
    assert all(doc in images for ranking in runs["image"].values() for doc, _ in ranking)
    assert not any(doc in images for ranking in runs["text"].values() for doc, _ in ranking)
    qrels = read_qrels(tiny_data_dir / "test_qrels.txt")
    expected = evaluate_by_modality(runs["all"], qrels, images, runs["text"], runs["image"])
    written = json.loads((bm25_out / "metrics.json").read_text())
    assert written == pytest.approx(expected) and "image/MRR@10" in written and "image_share@10" in written


def test_fuse_command_routes_by_the_oracle(bm25_out: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    runs = [str(bm25_out / "run-text.trec"), str(bm25_out / "run-image.trec")]
    proc = run_in_process(
        "fuse", "--data.data_dir", str(tiny_data_dir), "--runs", json.dumps(runs), "--oracle_routing", "true",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    fused = read_trec_run(tmp_path / "run.trec")
    image_queries = {q.qid for q in read_queries(tiny_data_dir / "test.json") if q.image_positives}
    image_run = read_trec_run(bm25_out / "run-image.trec")
    text_run = read_trec_run(bm25_out / "run-text.trec")
    for qid, ranking in fused.items():  # each query answered from its modality's run alone, in that run's order
        routed = image_run if qid in image_queries else text_run
        assert [doc for doc, _ in ranking] == [doc for doc, _ in routed[qid]]


def test_fuse_bad_runs_get_one_line_errors(bm25_out: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    good = bm25_out / "run-text.trec"
    qid, _, doc = good.read_text().split("\n", 1)[0].split()[:3]
    cases = {
        "not in the corpus": f"{qid} Q0 no-such-doc 1 1.0 x\n",
        "not test queries": f"a-dev-query Q0 {doc} 1 1.0 x\n",
        "appears twice": f"{qid} Q0 {doc} 1 1.0 x\n{qid} Q0 {doc} 2 0.5 x\n",
    }
    for expected, lines in cases.items():
        bad = tmp_path / "bad.trec"
        bad.write_text(lines)
        proc = run_in_process(
            "fuse", "--data.data_dir", str(tiny_data_dir), "--runs", json.dumps([str(good), str(bad)]),
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        error = proc.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and expected in error[0], error


def test_bm25_on_a_corpus_without_images_is_a_one_line_error(data_copy: Path, tmp_path: Path) -> None:
    (data_copy / "all_imgs.json").write_text("")  # a release without image docs (a caption file must match it)
    corpus = Corpus.from_release(data_copy)
    texts = {d for d, img in zip(corpus.doc_ids, corpus.is_image) if not img}
    qrels = [line for line in (data_copy / "test_qrels.txt").read_text().splitlines() if line.split()[1] in texts]
    (data_copy / "test_qrels.txt").write_text("\n".join(qrels) + "\n")
    proc = run_in_process(*f"bm25 --data.data_dir {data_copy} --out {tmp_path}".split())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the corpus has no image docs"), proc.stderr[-2000:]


def test_rows_bring_the_rows_they_need() -> None:
    assert [r.name for r in select_rows(["univl_dr"])] == ["clip_dpr", "univl_dr"]
    assert [r.name for r in select_rows(["bm25_clip_dpr_oracle"])] == ["bm25", "clip_dpr", "bm25_clip_dpr_oracle"]
    with pytest.raises(InputError, match="unknown row"):
        select_rows(["bm26"])


def test_runner_reports_a_failed_row_keeps_the_others_and_resumes(tiny_data_dir: Path, tmp_path: Path) -> None:
    datamodule = WebQADataModule(str(tiny_data_dir))
    fast = ("--data.num_workers", "0", "--trainer.enable_progress_bar", "false")
    broken = Settings(str(tiny_data_dir), "all_imgs.json", stage1_config="configs/tiny/missing.yaml", overrides=fast)
    first = run_reproduce(datamodule, tmp_path, ["bm25", "zero_shot"], broken, embedding_sample=0, progress=False)
    assert [(r["name"], r["status"]) for r in first] == [("bm25", "done"), ("zero_shot", "failed")]
    assert "missing.yaml" in first[1]["error"]
    table = (tmp_path / "results.md").read_text()
    assert "failed: " in table and f"| {first[0]['metrics']['MRR@10']:.2f} |" in table
    bm25_result = tmp_path / "rows" / "bm25" / "result.json"
    stamp = bm25_result.stat().st_mtime_ns
    report = run_reproduce(datamodule, tmp_path, ["bm25", "zero_shot"], broken, 0, progress=False, report_only=True)
    assert [(r["name"], r["status"]) for r in report] == [("bm25", "done"), ("zero_shot", "not run")]
    fixed = Settings(str(tiny_data_dir), "all_imgs.json", overrides=fast)
    second = run_reproduce(datamodule, tmp_path, ["zero_shot", "bm25"], fixed, embedding_sample=0, progress=False)
    assert [(r["name"], r["status"], r.get("resumed", False)) for r in second] == [
        ("bm25", "done", True),
        ("zero_shot", "done", False),
    ]
    assert bm25_result.stat().st_mtime_ns == stamp and second[0]["metrics"] == first[0]["metrics"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in saved["rows"]] == ["done", "done"]
    assert saved["rows"][1]["metrics"]["MRR@10"] == pytest.approx(
        json.loads((Path(second[1]["eval_dir"]) / "metrics.json").read_text())["MRR@10"]
    )
    assert (tmp_path / "mrr_by_row.png").stat().st_size > 0
    eval_dir = Path(second[1]["eval_dir"])  # a test evaluation also writes its text-only and image-only runs
    corpus = Corpus.from_release(tiny_data_dir)
    images = {d for d, img in zip(corpus.doc_ids, corpus.is_image) if img}
    image_run = read_trec_run(eval_dir / "run-image.trec")
    assert len(image_run) == 10 and all(doc in images for ranking in image_run.values() for doc, _ in ranking)
