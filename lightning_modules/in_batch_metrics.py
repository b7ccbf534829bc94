"""In-batch retrieval metrics of the training loss's candidates, computed with torchmetrics.

Inside a batch every candidate of a query is known (its sampled positive and the negatives the loss contrasts it
against), so torchmetrics' retrieval metrics are exact there, unlike on a truncated top-k corpus run where the
evaluation follows trec_eval. Each query is one torchmetrics group: its candidates are the finite entries of its row
of ``ContrastiveLossOutput.scores``, the only relevant one its target column.

Two details of torchmetrics (1.9) are handled before the scores reach it:

* ``retrieval_reciprocal_rank`` treats a document whose prediction is <= 0 as not relevant (Lightning-AI/torchmetrics
  PR 3104), and logits are often negative;
* ties are ordered by ``topk`` / ``argsort``, whose order among equal values is unspecified (and ``compute`` regroups
  the entries with a sort that is not stable), so a tie with the positive would be broken arbitrarily (on CPU the
  earlier column happens to win, so the positive's column would decide).

So each candidate is handed over as a positive integer with the same strict order as its logit, and every tie with the
positive is broken against the positive: a candidate scoring exactly as much as the positive ranks ahead of it. The
rank of the positive is thus 1 + the number of its candidates scoring >= it (pessimistic ties, so collapsed embeddings
with all scores equal read accuracy 0, not 100).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR

from lightning_modules.loss import ContrastiveLossOutput


def _order_preserving_preds(scores: Tensor, target: Tensor) -> Tensor:
    """[B, N] positive float: a row's strict order kept, its target placed below the columns it ties with."""
    below = torch.searchsorted(scores.sort(dim=1).values, scores, side="left")  # entries strictly below, per row
    preds = 2 * below + 2
    preds[torch.arange(scores.shape[0], device=scores.device), target] -= 1
    return preds.float()  # integers up to 2N + 2: exact in fp32


def _collection(prefix: str) -> MetricCollection:
    """Accuracy (the positive ranked first) and MRR, over this rank's queries only (no sync at compute)."""
    return MetricCollection(
        {
            "in_batch_accuracy": RetrievalHitRate(top_k=1, sync_on_compute=False),
            "in_batch_MRR": RetrievalMRR(sync_on_compute=False),
        },
        prefix=prefix,
    )


class InBatchRetrievalMetrics(nn.Module):
    """Per-step in-batch accuracy and MRR of the positive among each query's candidates, in percent.

    ``forward(output)`` returns, for ``prefix="train/"``:

    * ``train/in_batch_accuracy``, ``train/in_batch_MRR``: over all of this rank's queries;
    * ``train/text/in_batch_accuracy``, ``train/text/in_batch_MRR``: over the queries whose sampled positive is a
      text; present only if the batch has such a query;
    * ``train/image/in_batch_accuracy``, ``train/image/in_batch_MRR``: likewise for image positives.

    Values are scalar tensors in percent (0-100, as the evaluation reports MRR@10), the mean over queries of
    100 * [rank == 1] and 100 / rank. MRR is not truncated: every candidate counts. They cover this rank's queries
    (against the global candidates under ``cross_device``) and nothing is accumulated between calls. Log them with
    ``sync_dist=False``: the modality keys may differ between ranks. A query whose positive's logit is not finite counts
    as a miss (the loss is then non-finite too). torchmetrics loops over the queries in Python: about 30 ms a call on
    one CPU core for 64 queries and 576 columns, so a caller may log it every few steps only.
    """

    def __init__(self, prefix: str = "train/") -> None:
        super().__init__()
        self.prefix = prefix
        self.groups = nn.ModuleDict(
            {name: _collection(prefix + (f"{name}/" if name != "all" else "")) for name in ("all", "text", "image")}
        )

    def forward(self, output: ContrastiveLossOutput) -> dict[str, Tensor]:
        """The metrics of one batch, keyed as in the class docstring (a modality absent from the batch is omitted)."""
        scores, target = output.scores.detach(), output.target
        preds = _order_preserving_preds(scores, target)
        is_target = torch.zeros_like(scores, dtype=torch.bool)
        is_target[torch.arange(scores.shape[0], device=scores.device), target] = True
        rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(scores)
        selections = {
            "all": torch.ones_like(target, dtype=torch.bool),
            "text": ~output.target_is_image,
            "image": output.target_is_image,
        }
        values: dict[str, Tensor] = {}
        for name, queries in selections.items():
            keep = torch.isfinite(scores) & queries.unsqueeze(1)
            if not bool(keep.any()):
                continue
            metrics = self.groups[name]
            metrics.reset()
            metrics.update(preds[keep], is_target[keep], indexes=rows[keep])
            values.update({key: 100.0 * value for key, value in metrics.compute().items()})
            metrics.reset()
        return values
