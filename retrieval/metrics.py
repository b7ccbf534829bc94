"""IR metrics in percent: MRR@10/20, NDCG@10/20, Recall@20/100 and the image share of the top-10.

Conventions (DESIGN.md section 4):

* A run maps a query id to its ranked document ids, best first. **The run's order is the ranking**:
  no re-sorting by score, so ties are whatever order the search produced. (trec_eval instead sorts by
  score and breaks ties by document id; write the run with strictly decreasing scores to match it.)
* A document is relevant when its qrels level is > 0; NDCG uses the level as the gain, as trec_eval does.
* Every metric is averaged over **all** queries in the qrels (``trec_eval -c``): a query missing from the
  run, or with no relevant document, scores 0. Run queries absent from the qrels are ignored.
* MRR@k (MS MARCO style): 1 / rank of the first relevant document within the top k, else 0.
* NDCG@k = trec_eval ``ndcg_cut_k``; Recall@k = trec_eval ``recall_k`` (relevant docs found in the top k
  over all relevant docs, not a hit rate).
* ``image_share@10``: mean, over qrels queries with a non-empty ranking, of the share of image documents
  among the query's retrieved top-10.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from retrieval.errors import InputError, first_ids

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]

MRR_CUTOFFS = (10, 20)
NDCG_CUTOFFS = (10, 20)
RECALL_CUTOFFS = (20, 100)
IMAGE_SHARE_CUTOFF = 10
METRIC_NAMES = tuple([f"MRR@{k}" for k in MRR_CUTOFFS] + [f"NDCG@{k}" for k in NDCG_CUTOFFS]
                     + [f"Recall@{k}" for k in RECALL_CUTOFFS])
DEPTH = max(MRR_CUTOFFS + NDCG_CUTOFFS + RECALL_CUTOFFS)


def _gain_matrices(run: Run, qrels: Qrels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per qrels query: gains of the ranked top-DEPTH, ideal gains (top max NDCG cutoff), number relevant."""
    ideal_depth = max(NDCG_CUTOFFS)
    gains = np.zeros((len(qrels), DEPTH))
    ideal = np.zeros((len(qrels), ideal_depth))
    num_rel = np.zeros(len(qrels))
    for row, (qid, judged) in enumerate(qrels.items()):
        ranking = list(run.get(qid, ()))[:DEPTH]
        if len(set(ranking)) != len(ranking):
            raise InputError(f"the run ranks a document twice for query {qid!r}; de-duplicate the run")
        gains[row, :len(ranking)] = [max(judged.get(doc, 0), 0) for doc in ranking]
        levels = sorted((level for level in judged.values() if level > 0), reverse=True)
        num_rel[row] = len(levels)
        ideal[row, :min(len(levels), ideal_depth)] = levels[:ideal_depth]
    return gains, ideal, num_rel


def _mrr(relevant: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant document within the top k, per query (0 if none)."""
    top = relevant[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


def _ndcg(gains: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    """trec_eval ndcg_cut_k per query: DCG with log2(rank + 1) discounts over the ideal DCG."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = gains[:, :k] @ discounts
    idcg = ideal[:, :k] @ discounts
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def _recall(relevant: np.ndarray, num_rel: np.ndarray, k: int) -> np.ndarray:
    """trec_eval recall_k per query: relevant documents in the top k over all relevant documents."""
    found = relevant[:, :k].sum(axis=1)
    return np.divide(found, num_rel, out=np.zeros_like(num_rel), where=num_rel > 0)


def image_share(run: Run, qids: Iterable[str], image_doc_ids: set[str], k: int = IMAGE_SHARE_CUTOFF) -> float:
    """Mean share (percent) of image documents in the retrieved top-``k`` of each query with a ranking."""
    shares = []
    for qid in qids:
        top = list(run.get(qid, ()))[:k]
        if top:
            shares.append(sum(doc in image_doc_ids for doc in top) / len(top))
    return 100.0 * float(np.mean(shares)) if shares else 0.0


def evaluate_run(run: Run, qrels: Qrels, image_doc_ids: set[str] | None = None) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` in percent, plus ``image_share@10`` when ``image_doc_ids`` is given."""
    if not qrels:
        raise InputError("qrels are empty; pass the judgements of the queries being evaluated")
    gains, ideal, num_rel = _gain_matrices(run, qrels)
    relevant = gains > 0
    per_query = {f"MRR@{k}": _mrr(relevant, k) for k in MRR_CUTOFFS}
    per_query.update({f"NDCG@{k}": _ndcg(gains, ideal, k) for k in NDCG_CUTOFFS})
    per_query.update({f"Recall@{k}": _recall(relevant, num_rel, k) for k in RECALL_CUTOFFS})
    metrics = {name: 100.0 * float(values.mean()) for name, values in per_query.items()}
    if image_doc_ids is not None:
        metrics[f"image_share@{IMAGE_SHARE_CUTOFF}"] = image_share(run, qrels.keys(), image_doc_ids)
    return metrics


def _restrict_qrels(qrels: Qrels, keep_doc: Callable[[str], bool]) -> dict[str, dict[str, int]]:
    """Qrels of the queries with a relevant document passing ``keep_doc``, limited to such documents."""
    subset = {}
    for qid, judged in qrels.items():
        kept = {doc: level for doc, level in judged.items() if keep_doc(doc)}
        if any(level > 0 for level in kept.values()):
            subset[qid] = kept
    return subset


def _check_modality(run: Run, name: str, wrong_doc: Callable[[str], bool], wrong_kind: str) -> None:
    for qid, ranking in run.items():
        for doc in ranking:
            if wrong_doc(doc):
                raise InputError(f"{name} ranks {wrong_kind} document {doc!r} for query {qid!r}; "
                                 f"pass the run searched against the {name.split('_')[0]}-only corpus")


def evaluate_by_modality(run: Run, qrels: Qrels, image_doc_ids: set[str], text_run: Run | None = None,
                         image_run: Run | None = None) -> dict[str, float]:
    """Paper Table 2 views: plain keys = all queries vs the mixed corpus (``run``, with ``image_share@10``);
    ``text/...`` = queries with a text positive vs the text corpus (``text_run``); ``image/...`` = queries
    with an image positive vs the image corpus (``image_run``). Each subset's qrels keep only documents of
    its modality; a view is left out when its run is None or no query has a positive of that modality.
    """
    metrics = evaluate_run(run, qrels, image_doc_ids)
    views = (("text", text_run, lambda doc: doc not in image_doc_ids, "an image"),
             ("image", image_run, lambda doc: doc in image_doc_ids, "a text"))
    for prefix, view_run, in_view, wrong_kind in views:
        view_qrels = _restrict_qrels(qrels, in_view)
        if view_run is None or not view_qrels:
            continue
        _check_modality(view_run, f"{prefix}_run", lambda doc: not in_view(doc), wrong_kind)
        metrics.update({f"{prefix}/{name}": value for name, value in evaluate_run(view_run, view_qrels).items()})
    return metrics


def _unknown_message(what: str, unknown: list[str], fix: str) -> str:
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return f"{what} {len(unknown)} unknown ids ({first_ids(unknown)}{more}); {fix}"


def check_run_ids(run: Run, qrels: Qrels, known_doc_ids: set[str] | Mapping[str, object],
                  allow_extra_queries: bool = False) -> None:
    """Raise InputError if the run or the qrels name documents outside ``known_doc_ids``, or (unless
    ``allow_extra_queries``) the run holds queries that have no qrels."""
    fix = "check that the run, qrels and corpus come from the same data directory"
    unknown_docs = list(dict.fromkeys(doc for ranking in run.values() for doc in ranking if doc not in known_doc_ids))
    if unknown_docs:
        raise InputError(_unknown_message("the run names", unknown_docs, fix))
    unknown_judged = list(dict.fromkeys(doc for judged in qrels.values() for doc in judged if doc not in known_doc_ids))
    if unknown_judged:
        raise InputError(_unknown_message("the qrels name", unknown_judged, fix))
    extra_queries = [qid for qid in run if qid not in qrels]
    if extra_queries and not allow_extra_queries:
        raise InputError(_unknown_message("the run has queries absent from the qrels:", extra_queries,
                                          "evaluate with the qrels of the same split or pass allow_extra_queries=True"))
