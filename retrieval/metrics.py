"""IR metrics in percent, computed by trec_eval (pytrec_eval): MRR@10/20, NDCG@10/20, Recall@20/100, and the
image share of the top-10.

Conventions (DESIGN.md section 4):

* A run maps a query id to its scored documents, ``qid -> [(docid, score)]``. **The ranking is trec_eval's**:
  score descending, equal scores by docid descending (:func:`retrieval.trec.trec_order`), whatever the list's
  order. ``write_trec_run`` writes that order, so these are trec_eval's numbers on the written ``run.trec``.
* A document is relevant when its qrels level is > 0; NDCG uses the level as the gain (trec_eval's rules).
* Every metric is averaged over **all** queries in the qrels (``trec_eval -c``): a query missing from the
  run, or with no relevant document, scores 0. Run queries absent from the qrels are ignored.
* MRR@k (MS MARCO style): trec_eval ``recip_rank`` of the run cut to its first k documents in trec_eval's
  order, i.e. 1 / rank of the first relevant document within the top k, else 0 (read off one ``recip_rank``
  of the whole run: the cut keeps the first k ranks).
* NDCG@k = trec_eval ``ndcg_cut_k``; Recall@k = trec_eval ``recall_k`` (relevant docs found in the top k
  over all relevant docs, not a hit rate).
* ``image_share@10``: mean, over qrels queries with a non-empty ranking, of the share of image documents
  among the query's top-10 in trec_eval's order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence

import pytrec_eval

from retrieval.errors import InputError, first_ids
from retrieval.trec import trec_order

ScoredRun = Mapping[str, Sequence[tuple[str, float]]]
Ordered = dict[str, list[tuple[str, float]]]
Qrels = Mapping[str, Mapping[str, int]]
_DOC = operator.itemgetter(0)

MRR_CUTOFFS = (10, 20)
NDCG_CUTOFFS = (10, 20)
RECALL_CUTOFFS = (20, 100)
IMAGE_SHARE_CUTOFF = 10
METRIC_NAMES = tuple(
    [f"MRR@{k}" for k in MRR_CUTOFFS] + [f"NDCG@{k}" for k in NDCG_CUTOFFS] + [f"Recall@{k}" for k in RECALL_CUTOFFS]
)
TREC_MEASURES = {
    **{f"NDCG@{k}": f"ndcg_cut_{k}" for k in NDCG_CUTOFFS},
    **{f"Recall@{k}": f"recall_{k}" for k in RECALL_CUTOFFS},
}


def _ordered(run: ScoredRun) -> Ordered:
    """Each query's ranking in trec_eval's order; InputError for entries that are not (docid, score) pairs
    or for a document ranked twice."""
    ordered = {}
    for qid, ranking in run.items():
        try:
            ordered[qid] = trec_order(ranking)
        except InputError:
            raise
        except (TypeError, ValueError):
            raise InputError(
                f"the run for query {qid!r} is not a list of (docid, score) pairs; pass qid -> [(docid, score)]"
            ) from None
        if len(set(map(_DOC, ordered[qid]))) != len(ordered[qid]):
            raise InputError(f"the run ranks a document twice for query {qid!r}; de-duplicate the run")
    return ordered


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values)


def _mrr_at(reciprocal_rank: float, k: int) -> float:
    """MS MARCO MRR@k of one query from trec_eval's ``recip_rank`` on its whole run: the same value as
    ``recip_rank`` of the run cut to its top k (trec_eval's order), since cutting keeps the first k ranks."""
    return reciprocal_rank if reciprocal_rank > 0 and round(1.0 / reciprocal_rank) <= k else 0.0


def _trec_eval(ordered: Ordered, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """:data:`METRIC_NAMES` of an ordered run by pytrec_eval, averaged over all qrels queries (0 when unscored)."""
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", *TREC_MEASURES.values()})
    per_query = evaluator.evaluate({qid: dict(ranking) for qid, ranking in ordered.items() if qid in qrels})
    scored = [per_query.get(qid, {}) for qid in qrels]
    metrics = {name: _mean(q.get(measure, 0.0) for q in scored) for name, measure in TREC_MEASURES.items()}
    for k in MRR_CUTOFFS:
        metrics[f"MRR@{k}"] = _mean(_mrr_at(q.get("recip_rank", 0.0), k) for q in scored)
    return {name: metrics[name] for name in METRIC_NAMES}


def _image_share(ordered: Ordered, qids: Iterable[str], image_doc_ids: set[str], k: int) -> float:
    shares = []
    for qid in qids:
        top = ordered.get(qid, [])[:k]
        if top:
            shares.append(sum(doc in image_doc_ids for doc, _ in top) / len(top))
    return 100.0 * sum(shares) / len(shares) if shares else 0.0


def image_share(run: ScoredRun, qids: Iterable[str], image_doc_ids: set[str], k: int = IMAGE_SHARE_CUTOFF) -> float:
    """Mean share (percent) of image documents in the top-``k`` (trec_eval's order) of each query with a ranking."""
    return _image_share(_ordered(run), qids, image_doc_ids, k)


def _evaluate(ordered: Ordered, qrels: Qrels, image_doc_ids: set[str] | None) -> dict[str, float]:
    if not qrels:
        raise InputError("qrels are empty; pass the judgements of the queries being evaluated")
    judged = {qid: {doc: int(level) for doc, level in levels.items()} for qid, levels in qrels.items()}
    metrics = _trec_eval(ordered, judged)
    if image_doc_ids is not None:
        metrics[f"image_share@{IMAGE_SHARE_CUTOFF}"] = _image_share(ordered, judged, image_doc_ids, IMAGE_SHARE_CUTOFF)
    return metrics


def evaluate_run(run: ScoredRun, qrels: Qrels, image_doc_ids: set[str] | None = None) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` in percent, plus ``image_share@10`` when ``image_doc_ids`` is given."""
    return _evaluate(_ordered(run), qrels, image_doc_ids)


def _restrict_qrels(qrels: Qrels, keep_doc: Callable[[str], bool]) -> dict[str, dict[str, int]]:
    """Qrels of the queries with a relevant document passing ``keep_doc``, limited to such documents."""
    subset = {}
    for qid, judged in qrels.items():
        kept = {doc: level for doc, level in judged.items() if keep_doc(doc)}
        if any(level > 0 for level in kept.values()):
            subset[qid] = kept
    return subset


def _check_modality(run: Ordered, name: str, wrong_doc: Callable[[str], bool], wrong_kind: str) -> None:
    for qid, ranking in run.items():
        for doc, _ in ranking:
            if wrong_doc(doc):
                raise InputError(
                    f"{name} ranks {wrong_kind} document {doc!r} for query {qid!r}; "
                    f"pass the run searched against the {name.split('_')[0]}-only corpus"
                )


def evaluate_by_modality(
    run: ScoredRun,
    qrels: Qrels,
    image_doc_ids: set[str],
    text_run: ScoredRun | None = None,
    image_run: ScoredRun | None = None,
) -> dict[str, float]:
    """Paper Table 2 views: plain keys = all queries vs the mixed corpus (``run``, with ``image_share@10``);
    ``text/...`` = queries with a text positive vs the text corpus (``text_run``); ``image/...`` = queries
    with an image positive vs the image corpus (``image_run``). Each subset's qrels keep only documents of
    its modality; a view is left out when its run is None or no query has a positive of that modality.
    """
    metrics = evaluate_run(run, qrels, image_doc_ids)
    views = (
        ("text", text_run, lambda doc: doc not in image_doc_ids, "an image"),
        ("image", image_run, lambda doc: doc in image_doc_ids, "a text"),
    )
    for prefix, view_run, in_view, wrong_kind in views:
        view_qrels = _restrict_qrels(qrels, in_view)
        if view_run is None or not view_qrels:
            continue
        ordered = _ordered(view_run)
        _check_modality(ordered, f"{prefix}_run", lambda doc, in_view=in_view: not in_view(doc), wrong_kind)
        metrics.update({f"{prefix}/{name}": value for name, value in _evaluate(ordered, view_qrels, None).items()})
    return metrics


def _unknown_message(what: str, unknown: list[str], fix: str) -> str:
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return f"{what} {len(unknown)} unknown ids ({first_ids(unknown)}{more}); {fix}"


def check_run_ids(
    run: ScoredRun, qrels: Qrels, known_doc_ids: set[str] | Mapping[str, object], allow_extra_queries: bool = False
) -> None:
    """Raise InputError if the run or the qrels name documents outside ``known_doc_ids``, or (unless
    ``allow_extra_queries``) the run holds queries that have no qrels."""
    fix = "check that the run, qrels and corpus come from the same data directory"
    run_docs = (doc for ranking in run.values() for doc, _ in ranking)
    unknown_docs = list(dict.fromkeys(doc for doc in run_docs if doc not in known_doc_ids))
    if unknown_docs:
        raise InputError(_unknown_message("the run names", unknown_docs, fix))
    unknown_judged = list(dict.fromkeys(doc for judged in qrels.values() for doc in judged if doc not in known_doc_ids))
    if unknown_judged:
        raise InputError(_unknown_message("the qrels name", unknown_judged, fix))
    extra_queries = [qid for qid in run if qid not in qrels]
    if extra_queries and not allow_extra_queries:
        raise InputError(
            _unknown_message(
                "the run has queries absent from the qrels:",
                extra_queries,
                "evaluate with the qrels of the same split or pass allow_extra_queries=True",
            )
        )
