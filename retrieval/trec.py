"""TREC run and qrels files, and metrics JSON.

* Run: ``qid Q0 docid rank score tag`` per line, rank from 1, in trec_eval's order: score descending, equal
  scores by docid descending (trec_eval's ``strcmp`` rule, reversed), so the rank column is trec_eval's rank.
* Qrels: the release's ``qid<TAB>docid<TAB>rel`` lines, or TREC's ``qid iter docid rel``.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from retrieval.atomic import atomic_write
from retrieval.errors import InputError, Problems, strict

ScoredRun = Mapping[str, Sequence[tuple[str, float]]]
_SCORE = operator.itemgetter(1)
#: The sort key of trec_eval's order (with ``reverse=True``): score, then docid.
SCORE_THEN_DOCID = operator.itemgetter(1, 0)


def _check_token(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise InputError(f"{what} {value!r} is empty or contains whitespace; TREC files need one-word ids")


def trec_order(ranking: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``ranking`` as trec_eval ranks it: score descending, ties by docid descending (Python's ``str`` order
    is UTF-8 byte order, as ``strcmp``'s)."""
    pairs = [(docid, float(score)) for docid, score in ranking]
    if any(map(math.isnan, map(_SCORE, pairs))):
        raise InputError("a run score is NaN; check the embeddings for NaN before searching")
    return sorted(pairs, key=SCORE_THEN_DOCID, reverse=True)


def _check_decreasing(qid: str, ranking: Sequence[tuple[str, float]]) -> None:
    previous = math.inf
    for rank, (docid, score) in enumerate(ranking, start=1):
        _check_token(docid, "doc id")
        if not float(score) <= previous:
            raise InputError(
                f"query {qid!r}: score {score!r} at rank {rank} is above rank {rank - 1}'s "
                f"or not a number; sort each ranking by decreasing score"
            )
        previous = float(score)


def _run_lines(run: ScoredRun, tag: str) -> Iterator[str]:
    for qid, ranking in run.items():
        _check_token(qid, "query id")
        _check_decreasing(qid, ranking)
        for rank, (docid, score) in enumerate(trec_order(ranking), start=1):
            yield f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def write_trec_run(path: str | os.PathLike, run: ScoredRun, tag: str) -> None:
    """Write ``run`` (qid -> [(docid, score)], scores non-increasing) as a 6-column TREC run; equal scores
    are written in trec_eval's order (:func:`trec_order`) and ranked 1..n in that order."""
    _check_token(tag, "run tag")
    with atomic_write(path) as handle:
        handle.writelines(_run_lines(run, tag))


def _lines(path: str | os.PathLike, what: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, whitespace-split fields) of the non-blank lines of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist; fix the path")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields:
                yield number, fields


def _parse_run_line(fields: list[str], where: str) -> tuple[str, str, int, float]:
    if len(fields) != 6:
        raise InputError(f"{where}: expected 6 columns 'qid Q0 docid rank score tag', got {len(fields)}; fix the line")
    qid, _, docid, rank, score, _ = fields
    try:
        parsed = qid, docid, int(rank), float(score)
    except ValueError:
        raise InputError(f"{where}: rank {rank!r} or score {score!r} is not a number; fix the line") from None
    if math.isnan(parsed[3]):
        raise InputError(f"{where}: score is NaN; fix the line")
    return parsed


def read_trec_run(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a 6-column TREC run as qid -> [(docid, score)] in trec_eval's order (:func:`trec_order`); the
    rank column is ignored, as trec_eval ignores it."""
    run: dict[str, list[tuple[str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for number, fields in _lines(path, "run"):
        where = f"{path}:{number}"
        qid, docid, _, score = _parse_run_line(fields, where)
        if (qid, docid) in seen:
            raise InputError(f"{where}: doc {docid!r} appears twice for query {qid!r}; de-duplicate the run")
        seen.add((qid, docid))
        run.setdefault(qid, []).append((docid, score))
    return {qid: trec_order(ranking) for qid, ranking in run.items()}


def _parse_qrels_line(fields: list[str], where: str) -> tuple[str, str, int]:
    if len(fields) == 3:
        qid, docid, level = fields
    elif len(fields) == 4:
        qid, _, docid, level = fields
    else:
        raise InputError(
            f"{where}: expected 'qid docid rel' or 'qid 0 docid rel', got {len(fields)} columns; fix the line"
        )
    try:
        return qid, docid, int(level)
    except ValueError:
        raise InputError(f"{where}: relevance {level!r} is not an integer; fix the line") from None


def read_qrels(path: str | os.PathLike, problems: Problems | None = None) -> dict[str, dict[str, int]]:
    """Read qrels (``qid docid rel`` or ``qid iter docid rel``) as qid -> {docid: rel}; a bad line is an error
    (``problems`` collecting: reported and skipped)."""
    problems = strict(problems)
    qrels: dict[str, dict[str, int]] = {}
    for number, fields in _lines(path, "qrels"):
        where = f"{path}:{number}"
        with problems.guard("bad_qrels_line"):
            qid, docid, level = _parse_qrels_line(fields, where)
            judged = qrels.setdefault(qid, {})
            if judged.get(docid, level) != level:
                raise InputError(
                    f"{where}: doc {docid!r} of query {qid!r} judged both {judged[docid]} and {level}; "
                    "keep one judgement"
                )
            judged[docid] = level
    return qrels


def write_metrics_json(path: str | os.PathLike, metrics: Mapping[str, float]) -> None:
    """Write ``metrics`` as JSON (sorted keys, indent 2), atomically; values must be finite numbers."""
    for name, value in metrics.items():
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InputError(f"metric {name!r} is {value!r}; only finite numbers can be written")
    with atomic_write(path) as handle:
        json.dump({name: float(value) for name, value in metrics.items()}, handle, sort_keys=True, indent=2)
        handle.write("\n")
