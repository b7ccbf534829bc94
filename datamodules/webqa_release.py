"""Readers for a WebQA data directory in the UniVL-DR release layout (DESIGN.md section 5).

Text docs (``all_docs.json``) and image docs (a caption file such as ``all_imgs.json``) share one
id space: a :class:`Corpus` gives every doc an integer index and a modality flag.

Every check reports to a :class:`~retrieval.errors.Problems` sink: by default (the loaders) the first error raises
an InputError; ``check-data`` passes a collecting one and the same checks go on past each problem.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.errors import InputError, Problems, first_ids, strict
from retrieval.trec import read_qrels

#: The release's plain caption file; any other caption file must hold the same image ids.
PLAIN_CAPTIONS = "all_imgs.json"
RELEASE_LAYOUT = (
    "train.json/dev.json/test.json (queries), all_docs.json (text docs), all_imgs.json (image captions), "
    "imgs.tsv + imgs.lineidx.new (images), dev_qrels.txt/test_qrels.txt"
)


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise an InputError naming it and the expected layout."""
    if not path.is_file():
        raise InputError(f"missing {what}: {path} does not exist; a data directory holds {RELEASE_LAYOUT}")
    return path


def require_data_dir(data_dir: Path) -> Path:
    """``data_dir`` if it is a directory, else an InputError (nothing is generated into a mistyped path)."""
    if not data_dir.is_dir():
        raise InputError(
            f"data directory {data_dir} does not exist; fix data.data_dir, "
            "or set it to mini-webqa:small for the embedded synthetic dataset"
        )
    return data_dir


def iter_jsonl(path: Path, problems: Problems | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSON-lines file (a line that is not a JSON
    object is reported and skipped)."""
    problems = strict(problems)
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.error(
                    "bad_json", f"{path}:{line_no}: not valid JSON ({err.msg}); expected one JSON object per line"
                )
                continue
            if not isinstance(record, dict):
                problems.error("bad_json", f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                continue
            yield line_no, record


def _has(record: dict, key: str, path: Path, line_no: int, problems: Problems) -> bool:
    """Whether ``record`` has ``key``; if not, that is reported."""
    if key not in record:
        problems.error("missing_field", f"{path}:{line_no}: missing field {key!r}; record has {sorted(record)}")
    return key in record


def _id_list(record: dict, key: str) -> list[str]:
    return [str(x) for x in record.get(key) or []]


@dataclass(frozen=True)
class Query:
    """One query of ``train/dev/test.json`` with its positives and WebQA's distractors (doc ids)."""

    qid: str
    text: str
    answers: tuple[str, ...] = ()
    image_positives: tuple[str, ...] = ()
    text_positives: tuple[str, ...] = ()
    image_negatives: tuple[str, ...] = ()
    text_negatives: tuple[str, ...] = ()

    @property
    def positives(self) -> tuple[str, ...]:
        return self.image_positives + self.text_positives


def read_queries(path: str | Path, problems: Problems | None = None) -> list[Query]:
    """Read a query file of the release; empty texts and duplicate qids are errors (collecting: reported, and a
    duplicate is skipped)."""
    problems = strict(problems)
    path = require_file(Path(path), "query file")
    queries: list[Query] = []
    seen: set[str] = set()
    for line_no, record in iter_jsonl(path, problems):
        if not _has(record, "qid", path, line_no, problems):
            continue
        qid = str(record["qid"])
        text = str(record["Q"]).strip() if _has(record, "Q", path, line_no, problems) else ""
        if not text and "Q" in record:
            problems.error(
                "empty_query", f"{path}:{line_no}: query {qid!r} has an empty text 'Q'; remove it or fill it in", [qid]
            )  # collecting: the query is kept, so that the checks of its ids do not fail for it too
        if qid in seen:
            problems.error(
                "duplicate_qid", f"{path}:{line_no}: duplicate qid {qid!r}; qids must be unique within a file", [qid]
            )
            continue
        seen.add(qid)
        queries.append(
            Query(
                qid=qid,
                text=text,
                answers=tuple(str(a) for a in record.get("A") or []),
                image_positives=tuple(_id_list(record, "img_posFacts")),
                text_positives=tuple(_id_list(record, "txt_posFacts")),
                image_negatives=tuple(_id_list(record, "img_negFacts")),
                text_negatives=tuple(_id_list(record, "txt_negFacts")),
            )
        )
    if not queries:
        problems.error("no_queries", f"{path}: holds no queries; expected JSON lines with 'qid' and 'Q'")
    return queries


@dataclass
class Corpus:
    """All docs of one data directory in one id space: text docs first, then image docs."""

    doc_ids: list[str]
    texts: list[str]  # the fact of a text doc, the caption of an image doc
    is_image: np.ndarray  # bool [N]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}

    def __len__(self) -> int:
        return len(self.doc_ids)

    def lookup(self, doc_ids: list[str] | tuple[str, ...], where: str) -> list[int]:
        """Map doc ids to corpus indices; unknown ids are an InputError naming the first few and the count."""
        missing = [d for d in doc_ids if d not in self.index]
        if missing:
            raise unknown_ids_error(missing, where)
        return [self.index[d] for d in doc_ids]

    @classmethod
    def from_release(
        cls, data_dir: str | Path, caption_file: str = "all_imgs.json", problems: Problems | None = None
    ) -> Corpus:
        """Read ``all_docs.json`` and the caption file; duplicate doc ids are an error (reported and skipped)."""
        problems = strict(problems)
        data_dir = Path(data_dir)
        docs_path = require_file(data_dir / "all_docs.json", "text corpus")
        imgs_path = require_file(data_dir / caption_file, "image caption file")
        doc_ids: list[str] = []
        texts: list[str] = []
        first_seen: dict[str, str] = {}

        def add(doc_id: str, text: str, where: str) -> None:
            if doc_id in first_seen:
                problems.error(
                    "duplicate_doc_id",
                    f"{where}: duplicate doc id {doc_id!r} (first seen at {first_seen[doc_id]}); doc ids must "
                    f"be unique across {docs_path.name} and {imgs_path.name}",
                    [doc_id],
                )
                return
            first_seen[doc_id] = where
            doc_ids.append(doc_id)
            texts.append(text)

        for line_no, record in iter_jsonl(docs_path, problems):
            if _has(record, "snippet_id", docs_path, line_no, problems):
                fact = str(record["fact"]) if _has(record, "fact", docs_path, line_no, problems) else ""
                add(str(record["snippet_id"]), fact, f"{docs_path}:{line_no}")
        n_text = len(doc_ids)
        for line_no, record in iter_jsonl(imgs_path, problems):
            if _has(record, "image_id", imgs_path, line_no, problems):
                add(str(record["image_id"]), str(record.get("caption") or ""), f"{imgs_path}:{line_no}")
        if imgs_path.name != PLAIN_CAPTIONS and (data_dir / PLAIN_CAPTIONS).is_file():
            check_same_image_ids(data_dir / PLAIN_CAPTIONS, imgs_path, doc_ids[n_text:], problems)
        is_image = np.zeros(len(doc_ids), dtype=bool)
        is_image[n_text:] = True
        return cls(doc_ids=doc_ids, texts=texts, is_image=is_image, index={d: i for i, d in enumerate(doc_ids)})


def check_same_image_ids(plain: Path, caption_file: Path, ids: list[str], problems: Problems) -> None:
    """A caption file swapped in (``all_imgs_exp.json``, a verbalized one) must hold exactly ``all_imgs.json``'s
    image ids: a doc missing or added would change the corpus that training, mining and evaluation search."""
    expected = [str(r["image_id"]) for _, r in iter_jsonl(plain, Problems(collect=True)) if "image_id" in r]
    have, want = set(ids), set(expected)
    missing = [i for i in expected if i not in have]
    extra = [i for i in ids if i not in want]
    for found, text in ((missing, f"of {plain.name} missing"), (extra, f"not in {plain.name}")):
        if found:
            problems.error(
                "caption_file_ids",
                f"{caption_file}: {len(found)} image id(s) {text}, first: {first_ids(found)}; a caption file must "
                f"hold exactly the images of {plain.name} (regenerate it with train.py verbalize)",
                found,
            )


def unknown_ids_error(missing: list[str], where: str) -> InputError:
    """The error for ids that are not in the corpus: first few ids and the count."""
    return InputError(
        f"{where}: {len(missing)} doc id(s) not in the corpus, first: {first_ids(missing)}; check the data "
        f"directory and caption file"
    )


def check_queries_against_corpus(
    queries: list[Query], corpus: Corpus, where: str, problems: Problems | None = None
) -> None:
    """Every positive and distractor of every query must be a corpus doc."""
    missing = [d for q in queries for d in q.positives + q.image_negatives + q.text_negatives if d not in corpus.index]
    if missing:
        strict(problems).error("unknown_doc_id", str(unknown_ids_error(missing, where)), missing)


def check_qrels_against(
    qrels: dict[str, dict[str, int]], queries: list[Query], corpus: Corpus, where: str, problems: Problems | None = None
) -> None:
    """Qrels must name known queries and known docs."""
    problems = strict(problems)
    qids = {q.qid for q in queries}
    missing_q = [q for q in qrels if q not in qids]
    if missing_q:
        problems.error(
            "unknown_qid",
            f"{where}: {len(missing_q)} qid(s) not in the query file, first: {first_ids(missing_q)}",
            missing_q,
        )
    missing = [d for rels in qrels.values() for d in rels if d not in corpus.index]
    if missing:
        problems.error("unknown_doc_id", str(unknown_ids_error(missing, where)), missing)


def check_positives_against_qrels(
    queries: list[Query],
    qrels: dict[str, dict[str, int]],
    corpus: Corpus,
    where: str,
    qrels_where: str,
    problems: Problems | None = None,
) -> None:
    """Warn when an evaluation split's positives (``img_posFacts``/``txt_posFacts``) name docs that are not in the
    corpus, or differ from the query's relevant qrels lines; evaluation judges by the qrels only."""
    problems = strict(problems)
    unknown = [d for q in queries for d in q.positives if d not in corpus.index]
    if unknown:
        problems.warning(
            "unknown_positive",
            f"{where}: {len(unknown)} positive doc id(s) not in the corpus, first: {first_ids(unknown)}; "
            f"evaluation judges by {Path(qrels_where).name} only",
            unknown,
        )
    relevant = {qid: {d for d, level in rels.items() if level > 0} for qid, rels in qrels.items()}
    differ = [q.qid for q in queries if set(q.positives) != relevant.get(q.qid, set())]
    if differ:
        problems.warning(
            "positives_differ_from_qrels",
            f"{where}: the positives of {len(differ)} of {len(queries)} queries differ from their lines in "
            f"{qrels_where}, first: {first_ids(differ)}; evaluation judges by the qrels, fix whichever is wrong",
            differ,
        )


def check_training_positives(queries: list[Query], where: str, problems: Problems | None = None) -> None:
    """Every training query needs a positive."""
    empty = [q.qid for q in queries if not q.positives]
    if empty:
        strict(problems).error(
            "no_positive",
            f"{where}: {len(empty)} training queries have no positive, first: {first_ids(empty)}; every "
            f"training query needs img_posFacts or txt_posFacts",
            empty,
        )


def check_image_docs(
    corpus: Corpus, images: Container[str], caption_file: str, problems: Problems | None = None
) -> None:
    """Every image doc of the caption file needs a line in ``imgs.lineidx.new`` (``images``: its ids)."""
    missing = [d for d, is_image in zip(corpus.doc_ids, corpus.is_image) if is_image and d not in images]
    if missing:
        strict(problems).error(
            "image_without_line",
            f"{len(missing)} image doc(s) of {caption_file} have no line in imgs.lineidx.new, "
            f"first: {first_ids(missing)}",
            missing,
        )


def check_skip_list(ids: list[str], corpus: Corpus, where: str, caption_file: str, problems: Problems) -> None:
    """Warn about ids of a skip list that are not image docs (a list written for another data directory?)."""
    unknown = [i for i in ids if i not in corpus.index or not corpus.is_image[corpus.index[i]]]
    if unknown:
        problems.warning(
            "skip_list_unknown_id",
            f"skip list {where}: {len(unknown)} id(s) are not image docs of {caption_file}, first: "
            f"{first_ids(unknown)}; was it written for another data directory?",
            unknown,
        )


def read_qrels_file(path: Path, split: str, problems: Problems | None = None) -> dict[str, dict[str, int]]:
    """The qrels of an evaluation split (``dev_qrels.txt``); a missing file names the format."""
    if not path.is_file():
        strict(problems).error(
            "missing_file",
            f"missing {split} qrels: {path} does not exist; evaluation needs {split}_qrels.txt "
            f"(<qid>\\t<docid>\\t1 lines)",
        )
        return {}
    return read_qrels(path, problems)
