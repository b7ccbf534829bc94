"""A whole data directory checked in one pass (``python train.py check-data``): every problem, a summary, a report.

The checks are the readers' own (``webqa_release``, ``image_store``, ``negatives``) with a collecting
:class:`~retrieval.errors.Problems` sink, so each problem reads exactly as the loader would say it and reading goes on
past it; every image is decoded in worker processes (``image_check``). A few checks run only here: empty texts and
captions, images that no caption names, duplicate qrels lines, a qid in two query files. An ``error`` would stop a
run; a ``warning`` would not.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import webqa_release as release
from datamodules.image_check import ImageCheck, check_images
from datamodules.image_store import ImageStore, read_skip_list
from datamodules.negatives import NegativeStrategy, load_negative_pool
from datamodules.webqa_release import Corpus, Query, read_qrels_file, read_queries
from retrieval.atomic import atomic_write
from retrieval.errors import Problem, Problems, first_ids

SPLITS = ("train", "dev", "test")


@dataclass
class DataReport:
    """What ``check-data`` found in one data directory."""

    data_dir: Path
    caption_file: str
    problems: list[Problem]
    summary: dict[str, Any] = field(default_factory=dict)
    images: ImageCheck | None = None

    errors = property(lambda self: [p for p in self.problems if p.severity == "error"], doc="What would stop a run.")
    warnings = property(lambda self: [p for p in self.problems if p.severity == "warning"], doc="The other problems.")

    def to_json(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "caption_file": self.caption_file,
            "ok": not self.errors,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "summary": self.summary,
            "undecodable_images": self.images.undecodable_ids if self.images else [],
            "problems": [asdict(p) for p in self.problems],
        }


def check_data_dir(
    data_dir: Path,
    caption_file: str = "all_imgs.json",
    negatives_file: str | None = None,
    strategy: NegativeStrategy | None = None,
    skip_bad_images: bool = False,
    skip_list: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> DataReport:
    """Check ``data_dir`` as the loader reads it with these data settings; ``workers`` processes decode the images
    (0: this process)."""
    problems = Problems(collect=True)
    report = DataReport(Path(data_dir), caption_file, problems.found)
    with problems.guard("missing_data_dir"):
        release.require_data_dir(report.data_dir)
    if problems.found:
        return report
    corpus: Corpus | None = None
    with problems.guard("missing_file"):
        corpus = Corpus.from_release(data_dir, caption_file, problems)
    store: ImageStore | None = None
    with problems.guard("missing_file"):
        store = ImageStore(release.require_file(data_dir / "imgs.tsv", "image file"), problems=problems)
    skip_ids: list[str] = []
    if skip_list is not None:
        with problems.guard("missing_file"):
            skip_ids = read_skip_list(skip_list)
    if corpus is not None:
        _check_corpus(corpus, store, data_dir, caption_file, skip_ids, skip_list, problems)
    queries = {"train": _check_split("train", data_dir, corpus, problems)}
    if corpus is not None and queries["train"] and not problems.errors:  # else it would only repeat them
        with problems.guard("negatives"):
            load_negative_pool(negatives_file, queries["train"], corpus, strategy or NegativeStrategy(), data_dir)
    queries.update({split: _check_split(split, data_dir, corpus, problems) for split in SPLITS[1:]})
    _check_qids_across_splits(queries, data_dir, problems)
    if store is not None:
        report.images = check_images(store, workers, progress)
        tolerated = set(skip_ids) if not skip_bad_images else {p.ids[0] for p in report.images.bad}
        for problem in report.images.bad:
            known = problem.kind == "bad_image" and problem.ids[0] in tolerated
            problems.found.append(replace(problem, severity="warning") if known else problem)
    report.summary = summarize(corpus, store, queries, data_dir, report.images)
    return report


def _check_corpus(
    corpus: Corpus,
    store: ImageStore | None,
    data_dir: Path,
    caption_file: str,
    skip_ids: list[str],
    skip_list: str | None,
    problems: Problems,
) -> None:
    """Empty texts and captions; image docs against ``imgs.lineidx.new`` both ways; the skip list's ids."""
    for is_image, where, what in (
        (False, "all_docs.json", "an empty 'fact'"),
        (True, caption_file, "an empty caption"),
    ):
        empty = [d for d, t, i in zip(corpus.doc_ids, corpus.texts, corpus.is_image) if i == is_image and not t.strip()]
        if empty:
            problems.warning(
                "empty_text",
                f"{data_dir / where}: {len(empty)} {'image' if is_image else 'text'} doc(s) have {what}, first: "
                f"{first_ids(empty)}; fill them in or remove them",
                empty,
            )
    if skip_list is not None:
        release.check_skip_list(skip_ids, corpus, skip_list, caption_file, problems)
    if store is None:
        return
    release.check_image_docs(corpus, store, caption_file, problems)
    unnamed = [i for i in store.ids() if i not in corpus.index or not corpus.is_image[corpus.index[i]]]
    if unnamed:
        problems.warning(
            "image_without_doc",
            f"{store.lineidx_path}: {len(unnamed)} image(s) are not image docs of {caption_file}, first: "
            f"{first_ids(unnamed)}; no run reads them",
            unnamed,
        )


def _check_split(split: str, data_dir: Path, corpus: Corpus | None, problems: Problems) -> list[Query]:
    """The loader's checks of one query file (and, for dev/test, of its qrels); the queries read."""
    path = data_dir / f"{split}.json"
    if not path.is_file():  # reported by read_queries; checking ids against nothing would only repeat it
        with problems.guard("missing_file"):
            read_queries(path, problems)
        return []
    queries = read_queries(path, problems)
    if split == "train":
        if corpus is not None:
            release.check_queries_against_corpus(queries, corpus, str(path), problems)
        release.check_training_positives(queries, str(path), problems)
        return queries
    qrels_path = data_dir / f"{split}_qrels.txt"
    qrels = read_qrels_file(qrels_path, split, problems)
    if not qrels_path.is_file():
        return queries
    if corpus is not None:
        release.check_qrels_against(qrels, queries, corpus, str(qrels_path), problems)
        release.check_positives_against_qrels(queries, qrels, corpus, str(path), str(qrels_path), problems)
    _check_duplicate_lines(qrels_path, problems)
    return queries


def _check_duplicate_lines(path: Path, problems: Problems) -> None:
    """Lines that repeat an earlier line (whitespace aside) of a qrels file: harmless to a run, but a sign of files
    concatenated twice."""
    first: dict[str, int] = {}
    repeats: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            key = " ".join(line.split())
            if key and first.setdefault(key, number) != number:
                repeats.append((number, key))
    if repeats:
        number, key = repeats[0]
        problems.warning(
            "duplicate_line",
            f"{path}: {len(repeats)} line(s) repeat an earlier line, first: line {number} ({key!r}) repeats line "
            f"{first[key]}; remove the repeats",
            [f"{n}: {k}" for n, k in repeats],
        )


def _check_qids_across_splits(queries: dict[str, list[Query]], data_dir: Path, problems: Problems) -> None:
    """A qid in two query files: an evaluation query that is also trained on, or a file copied over another."""
    seen: dict[str, str] = {}
    shared: list[str] = []
    for split, split_queries in queries.items():
        for query in split_queries:
            if seen.setdefault(query.qid, split) != split:
                shared.append(query.qid)
    if shared:
        problems.warning(
            "qid_in_two_splits",
            f"{data_dir}: {len(shared)} qid(s) appear in more than one of {', '.join(f'{s}.json' for s in SPLITS)}, "
            f"first: {first_ids(shared)}; a query trained on must not be evaluated",
            shared,
        )


# ------------------------------------------------------------------ summary
def _stats(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def summarize(
    corpus: Corpus | None,
    store: ImageStore | None,
    queries: dict[str, list[Query]],
    data_dir: Path,
    images: ImageCheck | None,
) -> dict[str, Any]:
    """Counts per modality, queries per split, positives per query, image sizes and the decoding rate."""
    summary: dict[str, Any] = {}
    if corpus is not None:
        n_image = int(corpus.is_image.sum())
        summary["docs"] = {"text": len(corpus) - n_image, "image": n_image, "total": len(corpus)}
    splits = {}
    for split, split_queries in queries.items():
        positives = np.asarray([len(q.positives) for q in split_queries])
        qrels_path = data_dir / f"{split}_qrels.txt"
        splits[split] = {
            "queries": len(split_queries),
            "image_positive": sum(bool(q.image_positives) for q in split_queries),
            "text_positive": sum(bool(q.text_positives) for q in split_queries),
            "positives_per_query": (
                {"min": int(positives.min()), "mean": float(positives.mean()), "max": int(positives.max())}
                if len(positives)
                else None
            ),
            "qrels_lines": _count_lines(qrels_path) if split != "train" and qrels_path.is_file() else None,
        }
    summary["splits"] = splits
    if store is not None:
        summary["images"] = {"lineidx_entries": len(store)}
    if images is not None:
        sizes = images.sizes
        summary["images"].update(
            decoded=int(len(sizes)),
            bad=len(images.bad),
            width=_stats(sizes[:, 0]),
            height=_stats(sizes[:, 1]),
            payload_bytes=_stats(sizes[:, 2]),
        )
        summary["decoding"] = {
            "workers": images.workers,
            "seconds": round(images.seconds, 3),
            "images_per_second": round(images.rate, 1),
        }
    return summary


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned plain-text rows: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in [header, *rows]
    ]


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _spread(stats: dict[str, float] | None, scale: float = 1.0, digits: int = 0) -> str:
    """``min / median / max`` of ``stats`` divided by ``scale``."""
    if stats is None:
        return "-"
    return " / ".join(f"{stats[k] / scale:.{digits}f}" for k in ("min", "median", "max"))


def format_summary(report: DataReport) -> str:
    """The summary as plain-text tables: the corpus, the queries of each split, image sizes, the decoding rate."""
    summary = report.summary
    docs, images = summary.get("docs", {}), summary.get("images", {})
    lines = [f"data directory {report.data_dir} (captions: {report.caption_file})", ""]
    lines += _table(
        ["docs", "text", "image", "imgs.lineidx.new", "decoded", "bad images"],
        [
            ["", *map(_cell, (docs.get("text"), docs.get("image"), images.get("lineidx_entries")))]
            + [_cell(images.get("decoded")), _cell(images.get("bad"))]
        ],
    )
    rows = []
    for split, counts in summary.get("splits", {}).items():
        per = counts["positives_per_query"]
        spread = f"{per['min']} / {per['mean']:.2f} / {per['max']}" if per else "-"
        rows.append(
            [split, *map(_cell, (counts["queries"], counts["image_positive"], counts["text_positive"])), spread]
            + [_cell(counts["qrels_lines"])]
        )
    header = ["split", "queries", "image-positive", "text-positive", "positives/query min/mean/max", "qrels lines"]
    lines += ["", *_table(header, rows)]
    if images.get("width"):
        header = ["images", "width px min/median/max", "height px min/median/max", "payload KiB min/median/max"]
        row = ["", _spread(images["width"]), _spread(images["height"]), _spread(images["payload_bytes"], 1024, 1)]
        lines += ["", *_table(header, [row])]
    decoding = summary.get("decoding")
    if decoding:
        workers = decoding["workers"]
        by = f"{workers} worker process{'es' if workers > 1 else ''}" if workers else "the main process"
        lines += [
            "",
            f"decoded {images['decoded'] + images['bad']} images in {decoding['seconds']:.1f} s: "
            f"{decoding['images_per_second']:.0f} images/s with {by}",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------ outputs
def write_report(report: DataReport, path: Path) -> Path:
    """The report as JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        json.dump(report.to_json(), handle, indent=2)
        handle.write("\n")
    return path


def write_skip_list(report: DataReport, path: Path) -> int:
    """The ids of the undecodable images, one a line (``--data.skip_list`` reads it); how many."""
    ids = report.images.undecodable_ids if report.images else []
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(f"# images of {report.data_dir / 'imgs.tsv'} that cannot be decoded (check-data)\n")
        handle.writelines(f"{image_id}\n" for image_id in ids)
    return len(ids)
