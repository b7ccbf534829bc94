"""Readers for a ClueWeb22-MM data directory (MARVEL's benchmark), the parquet files of the release as
OpenMatch/MARVEL's ``ANCE/data.py`` reads them.

A data directory holds ``train.parquet``/``dev.parquet``/``test.parquet`` (one query a row: ``qid``, ``query``, and
its positive: ``text_id`` or ``img_id``, the other null; optionally ranked negatives ``img_negFacts``/
``txt_negFacts``), ``text.parquet`` (``text_id``, ``surround``: the text encoded), ``image.parquet`` (``img_id``,
``caption``, ``img``: the picture's file bytes) and ``dev_qrels.txt``/``test_qrels.txt`` (``<qid>\\t<docid>\\t1``).
The same :class:`~datamodules.webqa_release.Query` and :class:`~datamodules.webqa_release.Corpus` come out as from
the WebQA layout, so the datamodule, the samplers and mining do not change.

Pictures are never loaded whole: :class:`ParquetImageStore` keeps the ids and their row positions, and reads the
``img`` column one row group at a time (the last group read is kept, per process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.image_store import BadImageError, ImageStore, decode_rgb
from datamodules.webqa_release import Corpus, Query
from retrieval.errors import InputError, first_ids

LAYOUT = (
    "train.parquet/dev.parquet/test.parquet (qid, query, text_id, img_id), text.parquet (text_id, surround), "
    "image.parquet (img_id, caption, img), dev_qrels.txt/test_qrels.txt"
)
QUERY_COLUMNS = ("qid", "query", "text_id", "img_id")
TEXT_COLUMNS = ("text_id", "surround")
IMAGE_COLUMNS = ("img_id", "caption", "img")


def is_clueweb_dir(data_dir: Path) -> bool:
    """Whether ``data_dir`` is in the ClueWeb22-MM layout (it holds ``text.parquet`` or ``image.parquet``)."""
    return (data_dir / "text.parquet").is_file() or (data_dir / "image.parquet").is_file()


def _parquet_file(path: Path, what: str, columns: tuple[str, ...]) -> Any:
    """The ``pyarrow.parquet.ParquetFile`` of ``path``, checked for ``columns``; InputErrors name what is wrong."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading ClueWeb22-MM needs pyarrow: pip install 'univl-retrieval[clueweb]'") from None
    if not path.is_file():
        raise InputError(f"missing {what}: {path} does not exist; a ClueWeb22-MM directory holds {LAYOUT}")
    try:
        handle = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
        raise InputError(f"{path}: not a readable parquet file ({type(err).__name__}); re-export it") from None
    missing = [c for c in columns if c not in handle.schema_arrow.names]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; {what} needs {list(columns)}, has {handle.schema_arrow.names}"
        )
    return handle


def _column(handle: Any, name: str) -> list[Any]:
    return handle.read(columns=[name]).column(name).to_pylist()


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def read_parquet_queries(path: str | Path) -> list[Query]:
    """The queries of a ClueWeb22-MM split file; a query without a positive, an empty text or a repeated qid is an
    InputError naming the file and the qid."""
    path = Path(path)
    handle = _parquet_file(path, "query file", QUERY_COLUMNS)
    names = handle.schema_arrow.names
    table = handle.read(columns=[c for c in (*QUERY_COLUMNS, "img_negFacts", "txt_negFacts") if c in names])
    rows = table.to_pylist()
    queries: list[Query] = []
    seen: set[str] = set()
    for row_no, row in enumerate(rows):
        qid, text = str(row["qid"]), str(row["query"] or "").strip()
        where = f"{path} row {row_no}"
        if not text:
            raise InputError(f"{where}: query {qid!r} has an empty text 'query'; remove it or fill it in")
        if qid in seen:
            raise InputError(f"{where}: duplicate qid {qid!r}; qids must be unique within a file")
        seen.add(qid)
        image, fact = _id(row["img_id"]), _id(row["text_id"])
        if image is None and fact is None:
            raise InputError(f"{where}: query {qid!r} has neither text_id nor img_id; every query needs a positive")
        queries.append(
            Query(
                qid=qid,
                text=text,
                image_positives=(image,) if image is not None else (),
                text_positives=(fact,) if fact is not None else (),
                image_negatives=tuple(str(d) for d in row.get("img_negFacts") or []),
                text_negatives=tuple(str(d) for d in row.get("txt_negFacts") or []),
            )
        )
    if not queries:
        raise InputError(f"{path}: holds no queries; expected rows with {list(QUERY_COLUMNS)}")
    return queries


def read_clueweb_corpus(data_dir: str | Path) -> Corpus:
    """Text docs of ``text.parquet`` (``surround``) then image docs of ``image.parquet`` (``caption``), one id space;
    the pictures are not read. A doc id seen twice is an InputError."""
    data_dir = Path(data_dir)
    texts = _parquet_file(data_dir / "text.parquet", "text corpus", TEXT_COLUMNS)
    images = _parquet_file(data_dir / "image.parquet", "image corpus", IMAGE_COLUMNS)
    text_ids = [str(i) for i in _column(texts, "text_id")]
    image_ids = [str(i) for i in _column(images, "img_id")]
    doc_ids = text_ids + image_ids
    if len(set(doc_ids)) != len(doc_ids):
        seen: set[str] = set()
        repeated = [d for d in doc_ids if d in seen or seen.add(d)]
        raise InputError(
            f"{data_dir}: {len(repeated)} duplicate doc id(s) across text.parquet and image.parquet, first: "
            f"{first_ids(repeated)}; doc ids must be unique"
        )
    contents = [str(t or "") for t in _column(texts, "surround")] + [str(c or "") for c in _column(images, "caption")]
    is_image = np.zeros(len(doc_ids), dtype=bool)
    is_image[len(text_ids) :] = True
    return Corpus(doc_ids=doc_ids, texts=contents, is_image=is_image)


class ParquetImageStore:
    """Pictures of ``image.parquet`` by id, read one row group at a time (the interface of ``ImageStore``).

    Args:
        path: ``image.parquet``.
        skip_bad_images: :meth:`load` returns ``None`` for undecodable bytes and records the id in ``bad_ids``.
        skip_ids: ids known to be bad: ``None`` without reading.
    """

    def __init__(self, path: str | os.PathLike, skip_bad_images: bool = False, skip_ids: Any = ()) -> None:
        self.path = Path(path)
        handle = _parquet_file(self.path, "image corpus", IMAGE_COLUMNS)
        metadata = handle.metadata
        group_of, row_of = [], []
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            group_of += [group] * rows
            row_of += range(rows)
        ids = [str(i) for i in _column(handle, "img_id")]
        self._where = {image_id: (group_of[k], row_of[k]) for k, image_id in enumerate(ids)}
        self._order = ids
        self.skip_bad_images = skip_bad_images
        self.skip_ids = frozenset(map(str, skip_ids))
        self.bad_ids: set[str] = set()
        self._cache: tuple[int, int, list[bytes | None]] | None = None  # (pid, row group, its img column)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._where

    def ids(self) -> list[str]:
        return list(self._order)

    def _group(self, group: int) -> list[bytes | None]:
        pid = os.getpid()
        if self._cache is None or self._cache[:2] != (pid, group):
            import pyarrow.parquet as pq

            column = pq.ParquetFile(self.path).read_row_group(group, columns=["img"]).column("img").to_pylist()
            self._cache = (pid, group, column)
        return self._cache[2]

    def _location(self, image_id: str) -> tuple[int, int]:
        """(row group, row) of ``image_id``; an unknown id is an InputError."""
        if image_id not in self._where:
            raise InputError(f"unknown image id {image_id!r}: no row of {self.path} has this img_id")
        return self._where[image_id]

    def read_bytes(self, image_id: str) -> bytes:
        """The picture's file bytes; an unknown id is an InputError, empty bytes a BadImageError."""
        key = str(image_id)
        group, row = self._location(key)
        data = self._group(group)[row]
        if not data:
            raise BadImageError(f"image {key!r} in {self.path} (row group {group}, row {row}): empty img bytes")
        return data

    def _decode(self, image_id: str, data: bytes) -> Image.Image:
        group, row = self._location(image_id)
        return decode_rgb(data, f"image {image_id!r} in {self.path} (row group {group}, row {row})")

    def offset(self, image_id: str) -> tuple[int, int]:
        """Where ``image_id`` is: (row group, row); an unknown id is an InputError."""
        return self._location(str(image_id))

    #: The picture as RGB; ``None`` for a skipped id or (with ``skip_bad_images``) undecodable bytes: the rules of
    #: ``ImageStore.load``, which checks an id with :meth:`offset` and reads it with :meth:`read_bytes`.
    load = ImageStore.load

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}  # a worker reads its own row groups
