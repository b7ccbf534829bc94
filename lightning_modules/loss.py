"""Temperature-scaled contrastive loss for universal vision-language retrieval (UniVL-DR eq. 5).

For a query q with sampled positive d+ and negatives D-, with s(q, d) = logit_scale * <q, d>:

    L = -log( e^{s(q,d+)} / (e^{s(q,d+)} + sum_{d- in D-} e^{s(q,d-)}) )

The negatives come from up to three switchable sources:

* ``in_batch``: the sampled positives of the other queries of the batch (CLIP-DPR);
* ``hard_negatives``: the query's own mined negatives (the released UniVL-DR recipe);
* ``share_hard_negatives``: every hard negative of the batch, the query's own included (DPR).

MARVEL-ANCE is ``in_batch`` + ``hard_negatives``. With ``cross_device=True`` the documents of all
ranks are gathered (with gradient) and the local queries are scored against this global batch
(open_clip's "local loss"), so the negative pool grows with the number of ranks.

Two rules keep the candidate set honest: a column whose doc id is a positive of the query is never
a negative (only the target column stands for the query's positives), and a doc id that occupies
several columns (a positive shared by two queries, the same doc sent by two ranks) counts once,
represented by its lowest column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.distributed import gather_no_grad, gather_with_grad, rank_offset
from retrieval.errors import InputError


@dataclass
class ContrastiveLossOutput:
    """The loss and its eq. 5 decomposition, averaged over this rank's queries.

    The diagnostic terms are detached. ``image_negatives`` / ``text_negatives`` average the
    per-query logsumexp over the queries with at least one negative of that modality (0 if none).
    ``scores``, ``target`` and ``target_is_image`` (detached, for in-batch metrics) are the masked logits
    [B, N] (fp32, or fp64 if the embeddings are; -inf where a column is no candidate of the query), each
    query's global target column [B] long, and whether its sampled positive is an image [B] bool.
    """

    loss: Tensor
    alignment: Tensor
    image_negatives: Tensor
    text_negatives: Tensor
    candidates_per_query: Tensor
    scores: Tensor
    target: Tensor
    target_is_image: Tensor


@dataclass
class _GlobalDocs:
    """The documents every query is scored against: this rank's, or all ranks' concatenated."""

    embeddings: Tensor  # [N, D]
    ids: Tensor  # [N] long
    is_image: Tensor  # [N] bool
    is_positive: Tensor  # [N] bool, the column is some query's sampled positive
    is_hard: Tensor  # [N] bool, the column is some query's hard negative
    offset: int  # global column of this rank's first doc


def _columns_used(columns: Tensor, n_columns: int) -> Tensor:
    """[n_columns] bool flags of the columns listed in ``columns`` (entries < 0 are padding)."""
    flat = columns.reshape(-1)
    flags = torch.zeros(n_columns + 1, dtype=torch.bool, device=columns.device)
    flags[torch.where(flat >= 0, flat, n_columns)] = True
    return flags[:n_columns]


def _rows_to_mask(columns: Tensor, n_columns: int) -> Tensor:
    """[B, n_columns] bool mask with row b set at the columns listed in ``columns[b]`` (-1 = none)."""
    mask = torch.zeros(columns.shape[0], n_columns + 1, dtype=torch.bool, device=columns.device)
    mask.scatter_(1, torch.where(columns >= 0, columns, n_columns), True)
    return mask[:, :n_columns]


def _first_column_per_id(ids: Tensor) -> Tensor:
    """[N] long: for each column, the lowest column holding the same doc id."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    columns = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full((unique.shape[0],), ids.shape[0], dtype=torch.long, device=ids.device)
    return first.scatter_reduce(0, inverse, columns, reduce="amin")[inverse]


def _count_each_doc_once(candidates: Tensor, ids: Tensor) -> Tensor:
    """Move every candidate to the first column holding its doc id, so duplicates count once."""
    hits = torch.zeros(candidates.shape, dtype=torch.int32, device=candidates.device)
    hits.index_add_(1, _first_column_per_id(ids), candidates.to(torch.int32))
    return hits > 0


def _mean_logsumexp(scores: Tensor, mask: Tensor) -> Tensor:
    """Mean over rows with any masked-in entry of the logsumexp of those entries (0 if no row)."""
    has_any = mask.any(dim=1)
    lse = scores.masked_fill(~mask, float("-inf")).logsumexp(dim=1)
    return torch.where(has_any, lse, 0.0).sum() / has_any.sum().clamp(min=1)


def _at_least_fp32(x: Tensor) -> Tensor:
    """fp16/bf16 upcast to fp32; fp32 and fp64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ContrastiveRetrievalLoss(nn.Module):
    """Softmax cross-entropy of each query over its positive and its negative candidates."""

    #: The training batches this loss needs (the CLI links it to ``data.train_task``).
    train_task = "queries"

    def __init__(
        self,
        in_batch: bool = True,
        hard_negatives: bool = True,
        cross_device: bool = False,
        share_hard_negatives: bool = False,
    ) -> None:
        super().__init__()
        if not (in_batch or hard_negatives or share_hard_negatives):
            raise ValueError("no negative source enabled: set in_batch or hard_negatives")
        self.in_batch = in_batch
        self.hard_negatives = hard_negatives
        self.cross_device = cross_device
        self.share_hard_negatives = share_hard_negatives

    def check_has_negatives(
        self, batch_size: int, world_size: int, hard_per_query: int, mines_at_start: bool, negatives: str = ""
    ) -> None:
        """InputError when batches of ``batch_size`` queries per rank with ``hard_per_query`` hard negatives each
        (0 without a negatives file) would give no query a single negative under this loss."""
        batch = batch_size * (world_size if self.cross_device else 1)
        has_in_batch = self.in_batch and batch > 1
        has_hard = (self.hard_negatives or self.share_hard_negatives) and (hard_per_query > 0 or mines_at_start)
        if not (has_in_batch or has_hard):
            raise InputError(
                f"no negatives: loss(in_batch={self.in_batch}, hard_negatives={self.hard_negatives}) with batch "
                f"{batch} "
                f"and {hard_per_query} hard negatives per query ({negatives}); raise data.batch_size, enable "
                "model.loss.init_args.in_batch, or give data.negatives_file with a strategy other than none"
            )

    def extra_repr(self) -> str:
        return (
            f"in_batch={self.in_batch}, hard_negatives={self.hard_negatives}, "
            f"cross_device={self.cross_device}, share_hard_negatives={self.share_hard_negatives}"
        )

    def _global_docs(
        self,
        docs: Tensor,
        doc_ids: Tensor,
        doc_is_image: Tensor,
        positive: Tensor,
        hard_negatives: Tensor,
    ) -> _GlobalDocs:
        """This rank's docs, or with ``cross_device`` the docs of all ranks in rank order."""
        n_local = docs.shape[0]
        metadata = torch.stack(
            [
                doc_ids,
                doc_is_image.long(),
                _columns_used(positive, n_local).long(),
                _columns_used(hard_negatives, n_local).long(),
            ],
            dim=1,
        )
        offset = 0
        if self.cross_device:
            offset = rank_offset(n_local, docs.device)
            docs, metadata = gather_with_grad(docs), gather_no_grad(metadata)
        ids, is_image, is_positive, is_hard = metadata.unbind(dim=1)
        return _GlobalDocs(docs, ids, is_image.bool(), is_positive.bool(), is_hard.bool(), offset)

    def _negatives(
        self, docs: _GlobalDocs, target: Tensor, hard_negatives: Tensor, query_positive_ids: Tensor
    ) -> Tensor:
        """[B, N] bool: the columns each query is contrasted against, masked and de-duplicated."""
        n_docs = docs.ids.shape[0]
        candidates = torch.zeros(target.shape[0], n_docs, dtype=torch.bool, device=target.device)
        if self.in_batch:
            candidates |= docs.is_positive  # the target itself is removed below
        if self.share_hard_negatives:
            candidates |= docs.is_hard
        if self.hard_negatives:
            own = torch.where(hard_negatives >= 0, hard_negatives + docs.offset, -1)
            candidates |= _rows_to_mask(own, n_docs)

        ids = docs.ids.unsqueeze(0)  # [1, N]
        same_doc_as_target = ids == docs.ids[target].unsqueeze(1)
        positive_ids = query_positive_ids.unsqueeze(1)  # [B, 1, P]
        is_own_positive = ((ids.unsqueeze(2) == positive_ids) & (positive_ids >= 0)).any(dim=2)
        candidates &= ~(same_doc_as_target | is_own_positive)
        return _count_each_doc_once(candidates, docs.ids)

    def forward(
        self,
        queries: Tensor,
        docs: Tensor,
        doc_ids: Tensor,
        doc_is_image: Tensor,
        positive: Tensor,
        hard_negatives: Tensor,
        query_positive_ids: Tensor,
        logit_scale: Tensor,
    ) -> ContrastiveLossOutput:
        """Contrastive loss of this rank's queries.

        Args:
            queries: [B, D] L2-normalised query embeddings.
            docs: [N, D] L2-normalised embeddings of the batch's unique docs.
            doc_ids: [N] long corpus-wide id of each doc.
            doc_is_image: [N] bool.
            positive: [B] long column in ``docs`` of each query's sampled positive.
            hard_negatives: [B, H] long columns in ``docs``, -1 = padding (H may be 0).
            query_positive_ids: [B, P] long corpus ids of all positives of each query, -1 = padding.
            logit_scale: scalar 1 / tau.

        Runs in fp32 with autocast off: under bf16-mixed the embeddings arrive in bf16, and bf16 logits at
        scale 100 are off by ~0.2.
        """
        with torch.autocast(device_type=queries.device.type, enabled=False):
            queries, docs, logit_scale = (_at_least_fp32(x) for x in (queries, docs, logit_scale))
            global_docs = self._global_docs(docs, doc_ids, doc_is_image, positive, hard_negatives)
            target = positive + global_docs.offset
            negatives = self._negatives(global_docs, target, hard_negatives, query_positive_ids)

            is_target = F.one_hot(target, global_docs.ids.shape[0]).bool()
            logits = logit_scale * queries @ global_docs.embeddings.T
            logits = logits.masked_fill(~(negatives | is_target), float("-inf"))
            loss = F.cross_entropy(logits, target)

        scores = logits.detach()
        return ContrastiveLossOutput(
            loss=loss,
            alignment=-scores.gather(1, target.unsqueeze(1)).mean(),
            image_negatives=_mean_logsumexp(scores, negatives & global_docs.is_image),
            text_negatives=_mean_logsumexp(scores, negatives & ~global_docs.is_image),
            candidates_per_query=negatives.sum(dim=1).float().mean(),
            scores=scores,
            target=target,
            target_is_image=global_docs.is_image[target],
        )
