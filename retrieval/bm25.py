"""BM25 over a mixed corpus of text docs (facts) and image docs (captions), with ``bm25s``.

One index holds every doc; a search over one modality alone masks the other (``bm25s``'s ``weight_mask``), so the
IDF statistics are the mixed corpus' in all three views, as the dense views search one set of vectors. Scoring is
Lucene's (``method="lucene"``): ``sum over query tokens t of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))``
with ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))``; tokens are lower-cased ``\\w\\w+`` words without English stop
words, stemmed by PyStemmer's English (Snowball) stemmer. Docs that share no token with the query (score 0) are not
returned, as Lucene returns only matching docs.

The index is saved as ``bm25s`` writes it (sparse score matrix as ``.npy`` files, vocabulary and parameters as JSON)
plus ``corpus.json`` (the doc ids and modality flags, the settings and a fingerprint of the texts); it is loaded back
memory-mapped, and only when it was built from the same texts with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

from retrieval.atomic import atomic_write
from retrieval.errors import InputError

#: Which docs a search ranks: the whole mixed corpus, or one modality alone.
VIEWS = ("all", "text", "image")
CORPUS_FILE = "corpus.json"


@dataclass(frozen=True)
class BM25Settings:
    """BM25's parameters and text processing (defaults: Pyserini's k1 0.9, b 0.4; Lucene scoring)."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}; fix --k1/--b")
        if self.stemmer is not None and self.stemmer not in Stemmer.algorithms():
            raise InputError(
                f"unknown stemmer {self.stemmer!r}; choose one of {', '.join(Stemmer.algorithms())} or none"
            )


def tokenize(
    texts: Sequence[str], settings: BM25Settings, progress: bool = False, as_ids: bool = False
) -> list[list[str]] | bm25s.tokenization.Tokenized:
    """Each text as its list of (stemmed) tokens, stop words removed (``as_ids``: token ids and their vocabulary,
    what ``bm25s`` indexes)."""
    stemmer = Stemmer.Stemmer(settings.stemmer) if settings.stemmer else None
    return bm25s.tokenize(
        list(texts), stopwords=settings.stopwords, stemmer=stemmer, return_ids=as_ids, show_progress=progress
    )


def fingerprint(doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    """SHA-256 over the ids and texts, in order: an index is reused only for the same corpus."""
    digest = hashlib.sha256()
    for doc_id, text in zip(doc_ids, texts):
        digest.update(doc_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class BM25Index:
    """A BM25 index over ``doc_ids``/``texts`` with their modality flags (``is_image``)."""

    def __init__(self, retriever: bm25s.BM25, doc_ids: list[str], is_image: np.ndarray, settings: BM25Settings) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.is_image = np.asarray(is_image, dtype=bool)
        self.settings = settings

    def __len__(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def build(
        cls,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        is_image: Sequence[bool] | np.ndarray,
        settings: BM25Settings = BM25Settings(),
        progress: bool = True,
    ) -> BM25Index:
        """Tokenize and index the corpus (progress bars for both)."""
        if len(doc_ids) != len(texts) or len(doc_ids) != len(is_image):
            raise ValueError(f"{len(doc_ids)} doc ids, {len(texts)} texts and {len(is_image)} modality flags")
        if not doc_ids:
            raise InputError("the corpus is empty; BM25 needs at least one doc")
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(tokenize(texts, settings, progress, as_ids=True), show_progress=progress)
        return cls(retriever, list(doc_ids), np.asarray(is_image, dtype=bool), settings)

    def view_mask(self, view: str) -> np.ndarray | None:
        """The weight mask of a view (None for ``all``); InputError when the view's modality has no docs."""
        if view == "all":
            return None
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; one of {VIEWS}")
        keep = self.is_image if view == "image" else ~self.is_image
        if not keep.any():
            raise InputError(
                f"the corpus has no {view} docs, so it cannot be searched for them; check the data directory "
                f"({'the caption file' if view == 'image' else 'all_docs.json'}) or leave the {view} view out"
            )
        return keep.astype(np.float32)

    def search(
        self,
        queries: Sequence[str],
        k: int = 100,
        view: str = "all",
        progress: bool = True,
        threads: int = 0,
    ) -> list[list[tuple[str, float]]]:
        """The top-``k`` ``(doc id, score)`` of each query over the view's docs, best first, zero scores left out."""
        mask = self.view_mask(view)
        if not queries:
            return []
        tokens = tokenize(queries, self.settings)
        depth = min(k, len(self))
        indices, scores = self.retriever.retrieve(
            tokens, k=depth, show_progress=progress, n_threads=threads, weight_mask=mask
        )
        return [
            [(self.doc_ids[i], float(s)) for i, s in zip(row_idx.tolist(), row_scores.tolist()) if s > 0]
            for row_idx, row_scores in zip(indices, scores)
        ]

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike, corpus_fingerprint: str) -> Path:
        """Write the index into ``directory`` (built in a temporary folder, then renamed into place)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            self.retriever.save(tmp, show_progress=False)
            meta = {
                "settings": asdict(self.settings),
                "fingerprint": corpus_fingerprint,
                "doc_ids": self.doc_ids,
                "is_image": self.is_image.astype(int).tolist(),
            }
            with atomic_write(tmp / CORPUS_FILE) as handle:
                json.dump(meta, handle)
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike, settings: BM25Settings, corpus_fingerprint: str, mmap: bool = True
    ) -> BM25Index | None:
        """The index saved in ``directory`` (memory-mapped), or None when there is none or it was built from other
        texts or with other settings."""
        meta_path = Path(directory) / CORPUS_FILE
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") != asdict(settings) or meta.get("fingerprint") != corpus_fingerprint:
            return None
        retriever = bm25s.BM25.load(directory, mmap=mmap, show_progress=False)
        return cls(retriever, meta["doc_ids"], np.asarray(meta["is_image"], dtype=bool), settings)


def build_or_load(
    directory: str | os.PathLike | None,
    doc_ids: Sequence[str],
    texts: Sequence[str],
    is_image: np.ndarray,
    settings: BM25Settings = BM25Settings(),
    progress: bool = True,
) -> tuple[BM25Index, bool]:
    """The index of this corpus: loaded from ``directory`` when it holds one for the same texts and settings, else
    built (and saved there when ``directory`` is given). Returns the index and whether it was loaded."""
    corpus_fingerprint = fingerprint(doc_ids, texts)
    if directory is not None:
        loaded = BM25Index.load(directory, settings, corpus_fingerprint)
        if loaded is not None:
            return loaded, True
    index = BM25Index.build(doc_ids, texts, is_image, settings, progress=progress)
    if directory is not None:
        index.save(directory, corpus_fingerprint)
    return index, False
