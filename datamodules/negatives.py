"""Hard-negative pools (the release's mined schema) and the paper's Table 3 sampling strategies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.webqa_release import Corpus, Query, iter_jsonl, require_file
from retrieval.atomic import atomic_write
from retrieval.errors import InputError, first_ids

#: ``negatives_file`` value that samples WebQA's own distractors from the query file.
WEBQA_DISTRACTORS = "webqa"

#: strategy name -> (image negatives, text negatives, drawn from the mixed list) in units of k.
STRATEGIES: dict[str, tuple[int, int, bool]] = {
    "none": (0, 0, False),  # in-batch negatives only
    "balanced": (1, 1, False),  # k image + k text (UniVL-DR)
    "only_text": (0, 2, False),
    "only_image": (2, 0, False),
    "text2_image1": (1, 2, False),  # "2 texts & 1 image" for k = 1
    "text1_image2": (2, 1, False),  # "1 text & 2 images" for k = 1
    "random": (0, 0, True),  # 2k from the mixed ranked list, ignoring modality (ANCE random)
}


@dataclass(frozen=True)
class NegativeStrategy:
    """How many hard negatives of each modality a query gets."""

    name: str = "balanced"
    k: int = 1

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise InputError(f"unknown negative strategy {self.name!r}; choose one of {sorted(STRATEGIES)}")
        if self.k < 0:
            raise InputError(f"negatives k must be >= 0, got {self.k}")

    @property
    def n_image(self) -> int:
        return STRATEGIES[self.name][0] * self.k

    @property
    def n_text(self) -> int:
        return STRATEGIES[self.name][1] * self.k

    @property
    def mixed(self) -> bool:
        return STRATEGIES[self.name][2]

    @property
    def total(self) -> int:
        return 2 * self.k if self.mixed else self.n_image + self.n_text


def find_negatives_file(name: str | Path, data_dir: Path) -> Path:
    """The negatives file ``name``: an absolute path as given; a relative one in ``data_dir`` first, then in the
    working directory. InputError naming where it looked and how to mine one if it is in none of them."""
    path = Path(name)
    places = [path] if path.is_absolute() else [data_dir / path, path]
    found = next((p for p in places if p.exists()), None)
    if found is not None:
        return found
    looked = "" if path.is_absolute() else f" (looked in {data_dir / path} and {Path.cwd() / path})"
    raise InputError(
        f"negatives file {name} not found{looked}; mine one with: python train.py mine --config ... "
        "--ckpt_path ..., or set data.negatives_file to an existing file, webqa or null"
    )


@dataclass
class NegativePool:
    """Ranked hard-negative candidates per training query, as corpus indices, positives removed."""

    image: list[np.ndarray]
    text: list[np.ndarray]
    mixed: list[np.ndarray]
    source: str

    @classmethod
    def empty(cls, n_queries: int) -> NegativePool:
        none = [np.zeros(0, dtype=np.int64) for _ in range(n_queries)]
        return cls(image=none, text=list(none), mixed=list(none), source="<none>")

    @classmethod
    def from_file(cls, path: str | Path, queries: list[Query], corpus: Corpus) -> NegativePool:
        """Read a negatives file in the release's mined schema (``img_negFacts``, ``txt_negFacts``, ``all_negFacts``).

        Queries missing from the file get empty lists; unknown qids or doc ids are an error.
        """
        path = require_file(Path(path), "negatives file")
        position = {q.qid: i for i, q in enumerate(queries)}
        pool = cls.empty(len(queries))
        pool.source = str(path)
        unknown_q: list[str] = []
        for line_no, record in iter_jsonl(path):
            qid = str(record.get("qid"))
            if qid not in position:
                unknown_q.append(qid)
                continue
            i = position[qid]
            positives = set(queries[i].positives)
            lists = {}
            for key in ("img_negFacts", "txt_negFacts", "all_negFacts"):
                ids = [str(d) for d in record.get(key) or [] if str(d) not in positives]
                lists[key] = np.asarray(corpus.lookup(ids, f"{path}:{line_no} {key}"), dtype=np.int64)
            if not len(lists["all_negFacts"]):
                lists["all_negFacts"] = np.concatenate([lists["img_negFacts"], lists["txt_negFacts"]])
            pool.image[i] = lists["img_negFacts"][corpus.is_image[lists["img_negFacts"]]]
            pool.text[i] = lists["txt_negFacts"][~corpus.is_image[lists["txt_negFacts"]]]
            pool.mixed[i] = lists["all_negFacts"]
        if unknown_q:
            raise InputError(
                f"{path}: {len(unknown_q)} qid(s) not in the training queries, first: {first_ids(unknown_q)}; "
                f"was it mined for another split?"
            )
        return pool

    def check_can_give(self, strategy: NegativeStrategy, qids: list[str]) -> None:
        """Every query must be able to get ``strategy.total`` negatives (after the modality fill)."""
        if strategy.total == 0:
            return
        sizes = np.asarray(
            [len(m) if strategy.mixed else len(i) + len(t) for i, t, m in zip(self.image, self.text, self.mixed)]
        )
        short = np.flatnonzero(sizes < strategy.total)
        if len(short):
            raise InputError(
                f"negatives k={strategy.k} ({strategy.name}) needs {strategy.total} negatives per query but "
                f"{len(short)} of {len(qids)} queries have fewer in {self.source} (first: "
                f"{first_ids([qids[i] for i in short])}; smallest list {sizes.min()}); "
                "lower data.negatives_k or mine deeper lists"
            )


def sample_negatives(
    pool: NegativePool, query_index: int, strategy: NegativeStrategy, rng: np.random.Generator
) -> list[int]:
    """Draw this query's hard negatives; a modality with too few candidates is topped up by the other."""
    if strategy.total == 0:
        return []
    if strategy.mixed:
        mixed = pool.mixed[query_index]
        return rng.choice(mixed, size=min(strategy.total, len(mixed)), replace=False).tolist()
    images, texts = pool.image[query_index], pool.text[query_index]
    n_img = min(strategy.n_image, len(images))
    n_txt = min(strategy.n_text, len(texts))
    shortfall = strategy.total - n_img - n_txt
    n_img = min(len(images), n_img + shortfall)  # top up with images when texts ran short
    n_txt = min(len(texts), strategy.total - n_img)  # and with texts when images ran short
    picked = np.concatenate(
        [rng.choice(images, size=n_img, replace=False), rng.choice(texts, size=n_txt, replace=False)]
    )
    return picked.astype(np.int64).tolist()


def write_negatives_file(
    path: str | Path,
    queries: list[Query],
    ranked: list[list[int]],
    corpus: Corpus,
    depth: int = 100,
) -> Path:
    """Write mined ranked lists in the release's schema (positives removed), atomically."""
    path = Path(path)
    with atomic_write(path) as handle:
        for query, doc_indices in zip(queries, ranked):
            positives = set(query.positives)
            kept = [d for d in doc_indices if d >= 0 and corpus.doc_ids[d] not in positives][:depth]
            record = {
                "qid": query.qid,
                "Q": query.text,
                "img_posFacts": list(query.image_positives),
                "txt_posFacts": list(query.text_positives),
                "img_negFacts": [corpus.doc_ids[d] for d in kept if corpus.is_image[d]],
                "txt_negFacts": [corpus.doc_ids[d] for d in kept if not corpus.is_image[d]],
                "all_negFacts": [corpus.doc_ids[d] for d in kept],
            }
            handle.write(json.dumps(record) + "\n")
    return path


def webqa_distractor_pool(queries: list[Query], corpus: Corpus, where: str) -> NegativePool:
    """A pool from WebQA's own distractors (``img_negFacts``/``txt_negFacts`` of the query file)."""
    pool = NegativePool.empty(len(queries))
    pool.source = where
    for i, q in enumerate(queries):
        positives = set(q.positives)
        img = [d for d in q.image_negatives if d not in positives]
        txt = [d for d in q.text_negatives if d not in positives]
        pool.image[i] = np.asarray(corpus.lookup(img, f"{where} (qid {q.qid})"), dtype=np.int64)
        pool.text[i] = np.asarray(corpus.lookup(txt, f"{where} (qid {q.qid})"), dtype=np.int64)
        pool.mixed[i] = np.concatenate([pool.image[i], pool.text[i]])
    return pool


def load_negative_pool(
    source: str | None, queries: list[Query], corpus: Corpus, strategy: NegativeStrategy, data_dir: Path
) -> NegativePool:
    """The pool ``source`` names for the training ``queries``: a negatives file (relative: in ``data_dir`` first, see
    :func:`find_negatives_file`), ``"webqa"`` (the query file's distractors) or None (none); checked against
    ``strategy``."""
    if source is None:
        return NegativePool.empty(len(queries))
    if source == WEBQA_DISTRACTORS:
        pool = webqa_distractor_pool(queries, corpus, str(data_dir / "train.json"))
    else:
        pool = NegativePool.from_file(find_negatives_file(source, data_dir), queries, corpus)
    pool.check_can_give(strategy, [q.qid for q in queries])
    return pool
