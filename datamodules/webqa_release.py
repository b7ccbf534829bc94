"""Readers for a WebQA data directory in the UniVL-DR release layout (DESIGN.md section 5).

Text docs (``all_docs.json``) and image docs (a caption file such as ``all_imgs.json``) share one
id space: a :class:`Corpus` gives every doc an integer index and a modality flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.errors import InputError, first_ids

RELEASE_LAYOUT = (
    "train.json/dev.json/test.json (queries), all_docs.json (text docs), all_imgs.json (image captions), "
    "imgs.tsv + imgs.lineidx.new (images), dev_qrels.txt/test_qrels.txt"
)


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise an InputError naming it and the expected layout."""
    if not path.is_file():
        raise InputError(f"missing {what}: {path} does not exist; a data directory holds {RELEASE_LAYOUT}")
    return path


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(
                    f"{path}:{line_no}: not valid JSON ({err.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record


def _field(record: dict, key: str, path: Path, line_no: int) -> object:
    if key not in record:
        raise InputError(f"{path}:{line_no}: missing field {key!r}; record has {sorted(record)}")
    return record[key]


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


def read_queries(path: str | Path) -> list[Query]:
    """Read a query file of the release; empty texts and duplicate qids are errors."""
    path = require_file(Path(path), "query file")
    queries: list[Query] = []
    seen: set[str] = set()
    for line_no, record in iter_jsonl(path):
        qid = str(_field(record, "qid", path, line_no))
        text = str(_field(record, "Q", path, line_no)).strip()
        if not text:
            raise InputError(f"{path}:{line_no}: query {qid!r} has an empty text 'Q'; remove it or fill it in")
        if qid in seen:
            raise InputError(f"{path}:{line_no}: duplicate qid {qid!r}; qids must be unique within a file")
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
        raise InputError(f"{path}: holds no queries; expected JSON lines with 'qid' and 'Q'")
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
    def from_release(cls, data_dir: str | Path, caption_file: str = "all_imgs.json") -> Corpus:
        """Read ``all_docs.json`` and the caption file; duplicate doc ids are an error."""
        data_dir = Path(data_dir)
        docs_path = require_file(data_dir / "all_docs.json", "text corpus")
        imgs_path = require_file(data_dir / caption_file, "image caption file")
        doc_ids: list[str] = []
        texts: list[str] = []
        first_seen: dict[str, str] = {}

        def add(doc_id: str, text: str, where: str) -> None:
            if doc_id in first_seen:
                raise InputError(
                    f"{where}: duplicate doc id {doc_id!r} (first seen at {first_seen[doc_id]}); doc ids must "
                    f"be unique across {docs_path.name} and {imgs_path.name}"
                )
            first_seen[doc_id] = where
            doc_ids.append(doc_id)
            texts.append(text)

        for line_no, record in iter_jsonl(docs_path):
            add(
                str(_field(record, "snippet_id", docs_path, line_no)),
                str(_field(record, "fact", docs_path, line_no)),
                f"{docs_path}:{line_no}",
            )
        n_text = len(doc_ids)
        for line_no, record in iter_jsonl(imgs_path):
            add(
                str(_field(record, "image_id", imgs_path, line_no)),
                str(record.get("caption") or ""),
                f"{imgs_path}:{line_no}",
            )
        is_image = np.zeros(len(doc_ids), dtype=bool)
        is_image[n_text:] = True
        return cls(doc_ids=doc_ids, texts=texts, is_image=is_image, index={d: i for i, d in enumerate(doc_ids)})


def unknown_ids_error(missing: list[str], where: str) -> InputError:
    """The error for ids that are not in the corpus: first few ids and the count."""
    return InputError(
        f"{where}: {len(missing)} doc id(s) not in the corpus, first: {first_ids(missing)}; check the data "
        f"directory and caption file"
    )


def check_queries_against_corpus(queries: list[Query], corpus: Corpus, where: str) -> None:
    """Every positive and distractor of every query must be a corpus doc."""
    missing = [d for q in queries for d in q.positives + q.image_negatives + q.text_negatives if d not in corpus.index]
    if missing:
        raise unknown_ids_error(missing, where)


def check_qrels_against(qrels: dict[str, dict[str, int]], queries: list[Query], corpus: Corpus, where: str) -> None:
    """Qrels must name known queries and known docs."""
    qids = {q.qid for q in queries}
    missing_q = [q for q in qrels if q not in qids]
    if missing_q:
        raise InputError(f"{where}: {len(missing_q)} qid(s) not in the query file, first: {first_ids(missing_q)}")
    missing = [d for rels in qrels.values() for d in rels if d not in corpus.index]
    if missing:
        raise unknown_ids_error(missing, where)
