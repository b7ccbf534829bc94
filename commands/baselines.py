"""``python train.py bm25`` and ``python train.py fuse``: the baselines of paper Table 1 on any data directory.

Both write what a dense evaluation writes (``run.trec``, ``metrics.json`` with the same metrics and Table 2 views,
scored by the same code: ``retrieval.report.evaluate_runs``), so their numbers sit in one table with the dense runs.

* ``bm25``: one BM25 index over the mixed corpus (facts and captions), saved in ``OUT/index`` and reused when the
  corpus and settings are the same; every query of the split searched over all docs (``run.trec``), the text docs
  alone (``run-text.trec``) and the image docs alone (``run-image.trec``).
* ``fuse``: two or more run files fused (RRF or score interpolation), optionally routed by the oracle (each query
  answered only from the modality of its relevant docs), written as ``run.trec`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from datamodules.webqa_datamodule import EvalSplit, WebQADataModule, read_eval_split
from datamodules.webqa_release import Corpus
from retrieval.atomic import atomic_write
from retrieval.bm25 import VIEWS, BM25Settings, build_or_load
from retrieval.errors import InputError
from retrieval.fusion import FusionSettings, check_runs_fit, oracle_route
from retrieval.report import evaluate_runs, write_evaluation
from retrieval.trec import read_trec_run, trec_order

SUMMARY = ("MRR@10", "NDCG@10", "Recall@100", "image_share@10", "text/MRR@10", "image/MRR@10")


@dataclass(frozen=True)
class SplitData:
    """What a baseline reads from a data directory: the corpus and one evaluation split."""

    corpus: Corpus
    split: EvalSplit

    @property
    def image_doc_ids(self) -> set[str]:
        return {d for d, img in zip(self.corpus.doc_ids, self.corpus.is_image) if img}


def read_split_data(datamodule: WebQADataModule, split: str) -> SplitData:
    """The corpus (facts and the configured caption file) and the ``split`` queries and qrels (a named dataset is
    generated first)."""
    if split not in ("dev", "test"):
        raise InputError(f"--split {split!r}: choose dev or test (the splits with qrels)")
    datamodule.prepare_data()
    corpus = Corpus.from_release(datamodule.data_dir, datamodule.hparams.caption_file)
    return SplitData(corpus, read_eval_split(datamodule.data_dir, split, corpus))


def summary_line(name: str, metrics: dict[str, float]) -> str:
    """One line of the headline metrics (those present)."""
    return f"{name}: " + ", ".join(f"{key} {metrics[key]:.2f}" for key in SUMMARY if key in metrics)


def _write_info(path: Path, info: dict) -> None:
    with atomic_write(path) as handle:
        json.dump(info, handle, indent=2)


def run_bm25(
    datamodule: WebQADataModule,
    split: str = "test",
    out: str | Path = "runs/bm25",
    settings: BM25Settings = BM25Settings(),
    top_k: int = 100,
    threads: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """BM25 over the data directory's mixed corpus for the ``split`` queries; writes into ``out`` and returns the
    metrics."""
    if top_k < 1:
        raise InputError(f"--top_k must be >= 1, got {top_k}")
    data = read_split_data(datamodule, split)
    out = Path(out)
    corpus = data.corpus
    start = time.perf_counter()
    index, loaded = build_or_load(out / "index", corpus.doc_ids, corpus.texts, corpus.is_image, settings, progress)
    indexed = time.perf_counter()
    queries = data.split.queries
    texts, qids = [q.text for q in queries], [q.qid for q in queries]
    runs = {}
    for view in VIEWS:
        rankings = index.search(texts, k=top_k, view=view, progress=progress, threads=threads)
        runs[view] = {qid: trec_order(ranking) for qid, ranking in zip(qids, rankings) if ranking}
    searched = time.perf_counter()
    metrics = evaluate_runs(runs, data.split.qrels, corpus.doc_ids, corpus.is_image)
    views = {view: runs[view] for view in ("text", "image")}
    write_evaluation(out, runs["all"], metrics, f"bm25-{split}", views)
    _write_info(
        out / "bm25.json",
        {
            "data_dir": str(datamodule.data_dir),
            "caption_file": datamodule.hparams.caption_file,
            "split": split,
            "settings": asdict(settings),
            "docs": len(corpus),
            "queries": len(queries),
            "queries_without_match": len(queries) - len(runs["all"]),
            "index": str(out / "index"),
            "index_loaded": loaded,
            "index_seconds": indexed - start,
            "search_seconds": searched - indexed,
        },
    )
    print(summary_line(f"bm25 ({split}, {len(queries)} queries, {len(corpus)} docs)", metrics))
    how = "loaded from" if loaded else "saved in"
    print(f"written: {out / 'run.trec'}, {out / 'metrics.json'} (index {how} {out / 'index'})")
    return metrics


def run_fusion(
    datamodule: WebQADataModule,
    runs: Sequence[str],
    out: str | Path = "runs/fused",
    settings: FusionSettings = FusionSettings(),
    split: str = "test",
) -> dict[str, float]:
    """Fuse the run files ``runs`` (and route by the oracle); write ``run.trec`` and ``metrics.json`` into ``out``
    and return the metrics."""
    data = read_split_data(datamodule, split)
    loaded = {path: read_trec_run(path) for path in runs}
    check_runs_fit(loaded, set(data.split.ids), data.corpus.index, split)
    rankings = list(loaded.values())
    if len(rankings) >= 2 and not set.intersection(*(set(run) for run in rankings)):
        raise InputError(f"the runs {', '.join(runs)} have no query in common; fuse runs of the same query set")
    fused = settings.fuse(rankings)
    if settings.oracle_routing:
        fused = oracle_route(fused, data.split.qrels, data.image_doc_ids)
    fused = {qid: ranking for qid, ranking in fused.items() if ranking}
    metrics = evaluate_runs({"all": fused}, data.split.qrels, data.corpus.doc_ids, data.corpus.is_image)
    out = Path(out)
    write_evaluation(out, fused, metrics, f"{settings.name}-{split}")
    _write_info(out / "fusion.json", {"runs": list(runs), "split": split, **asdict(settings)})
    print(summary_line(f"fused ({settings.name})", metrics))
    print(f"written: {out / 'run.trec'}, {out / 'metrics.json'}")
    return metrics
