"""InBatchRetrievalMetrics on handcrafted score matrices and on the real ContrastiveRetrievalLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalMRR

from lightning_modules.in_batch_metrics import InBatchRetrievalMetrics
from lightning_modules.loss import ContrastiveLossOutput, ContrastiveRetrievalLoss

INF = float("inf")
KEYS = ("in_batch_accuracy", "in_batch_MRR")


def output(scores: list[list[float]], target: list[int], is_image: list[bool]) -> ContrastiveLossOutput:
    """A loss output holding only what the metrics read."""
    zero = torch.tensor(0.0)
    return ContrastiveLossOutput(
        loss=zero,
        alignment=zero,
        image_negatives=zero,
        text_negatives=zero,
        candidates_per_query=zero,
        scores=torch.tensor(scores),
        target=torch.tensor(target),
        target_is_image=torch.tensor(is_image),
    )


def metrics(out: ContrastiveLossOutput) -> dict[str, float]:
    return {key: value.item() for key, value in InBatchRetrievalMetrics()(out).items()}


def test_masked_columns_that_would_outrank_the_positive() -> None:
    # Raw logits; columns outside a query's candidates score above its positive before masking.
    raw = [
        [9.0, 1.0, 0.5, 0.2],  # positive col 1; col 0 masked -> rank 1
        [0.1, 0.3, 9.0, 0.2],  # positive col 3; col 2 masked, col 1 a candidate above -> rank 2
        [9.0, 8.0, 7.0, 0.4],  # positive col 3; cols 0, 1 masked, col 2 a candidate above -> rank 2
        [0.9, 0.8, 0.7, 0.1],  # positive col 3; all candidates above -> rank 4
    ]
    candidates = [[0, 1, 1, 1], [1, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]]
    masked = [[s if c else -INF for s, c in zip(row, mask)] for row, mask in zip(raw, candidates)]
    target, is_image = [1, 3, 3, 3], [False, False, True, True]
    # reciprocal ranks 1, 1/2, 1/2, 1/4
    assert metrics(output(masked, target, is_image)) == {
        "train/in_batch_accuracy": 25.0,
        "train/in_batch_MRR": 100.0 * (1 + 0.5 + 0.5 + 0.25) / 4,
        "train/text/in_batch_accuracy": 50.0,
        "train/text/in_batch_MRR": 75.0,
        "train/image/in_batch_accuracy": 0.0,
        "train/image/in_batch_MRR": 37.5,
    }
    # the same logits unmasked: reciprocal ranks 1/2, 1/3, 1/4, 1/4
    unmasked = metrics(output(raw, target, is_image))
    assert unmasked["train/in_batch_accuracy"] == 0.0
    assert unmasked["train/text/in_batch_MRR"] == pytest.approx(100.0 * (1 / 2 + 1 / 3) / 2)


def test_positive_third_of_four_is_one_third_exactly() -> None:
    result = InBatchRetrievalMetrics()(output([[0.5, 0.2, 0.9, 0.1, -INF]], [1], [True]))
    one_third = 100.0 * (torch.tensor(1.0) / torch.tensor(3.0))
    assert result["train/in_batch_MRR"].item() == one_third.item()
    assert result["train/image/in_batch_MRR"].item() == one_third.item()
    assert result["train/in_batch_accuracy"].item() == 0.0
    assert math.isclose(result["train/in_batch_MRR"].item(), 100 / 3, rel_tol=1e-6)


def test_all_text_positives_omit_the_image_keys() -> None:
    scores = [[2.0, 1.0, -INF], [0.5, 1.5, 1.0], [-INF, 3.0, 4.0], [1.0, 0.0, 2.0]]
    result = InBatchRetrievalMetrics()(output(scores, [0, 1, 1, 0], [False] * 4))
    assert sorted(result) == sorted([f"train/{k}" for k in KEYS] + [f"train/text/{k}" for k in KEYS])
    # reciprocal ranks 1, 1, 1/2, 1/2
    assert {k: v.item() for k, v in result.items()} == {
        "train/in_batch_accuracy": 50.0,
        "train/in_batch_MRR": 75.0,
        "train/text/in_batch_accuracy": 50.0,
        "train/text/in_batch_MRR": 75.0,
    }
    assert all(v.dtype == torch.float32 and v.shape == () for v in result.values())


def test_all_image_positives_omit_the_text_keys() -> None:
    result = metrics(output([[1.0, 2.0], [1.0, 2.0]], [1, 0], [True, True]))
    assert result == {
        "train/in_batch_accuracy": 50.0,
        "train/in_batch_MRR": 75.0,
        "train/image/in_batch_accuracy": 50.0,
        "train/image/in_batch_MRR": 75.0,
    }


@pytest.mark.parametrize("positive_column", [0, 2])
def test_a_tie_with_the_positive_ranks_the_positive_behind(positive_column: int) -> None:
    # col 0 and col 2 tie at 0.7, whichever of them is the positive; col 1 scores below, col 3 is masked.
    result = metrics(output([[0.7, 0.1, 0.7, -INF]], [positive_column], [False]))
    assert result["train/in_batch_accuracy"] == 0.0
    assert result["train/in_batch_MRR"] == 50.0


def test_collapsed_scores_rank_the_positive_last() -> None:
    result = metrics(output([[0.3, 0.3, 0.3, 0.3], [0.3, 0.3, -INF, -INF]], [2, 0], [False, True]))
    assert result["train/text/in_batch_MRR"] == 25.0
    assert result["train/image/in_batch_MRR"] == 50.0
    assert result["train/in_batch_accuracy"] == 0.0


def test_ties_below_the_positive_do_not_matter() -> None:
    result = metrics(output([[0.9, 0.2, 0.2, 0.2, 0.5, -INF]], [4], [True]))
    assert result["train/in_batch_accuracy"] == 0.0
    assert result["train/in_batch_MRR"] == 50.0


def test_negative_logits_are_ranked() -> None:
    scores = [[-1.0, -3.0, -2.0], [-30.0, -10.0, -20.0]]
    assert metrics(output(scores, [0, 2], [False, False])) == {
        "train/in_batch_accuracy": 50.0,
        "train/in_batch_MRR": 75.0,
        "train/text/in_batch_accuracy": 50.0,
        "train/text/in_batch_MRR": 75.0,
    }


def test_torchmetrics_drops_non_positive_predictions() -> None:
    """Why the module hands torchmetrics positive order-preserving values rather than the logits."""
    mrr = RetrievalMRR()
    mrr.update(torch.tensor([-1.0, -3.0]), torch.tensor([True, False]), indexes=torch.tensor([0, 0]))
    assert mrr.compute().item() == 0.0  # the positive ranked first, yet RR 0: its prediction is <= 0


def test_calls_do_not_accumulate_and_hold_no_state() -> None:
    module = InBatchRetrievalMetrics(prefix="val/")
    first = module(output([[1.0, 2.0]], [0], [False]))
    second = module(output([[3.0, 2.0]], [0], [False]))
    assert {k: v.item() for k, v in first.items()} == {
        "val/in_batch_accuracy": 0.0,
        "val/in_batch_MRR": 50.0,
        "val/text/in_batch_accuracy": 0.0,
        "val/text/in_batch_MRR": 50.0,
    }
    assert second["val/in_batch_accuracy"].item() == 100.0 and second["val/in_batch_MRR"].item() == 100.0
    assert module.state_dict() == {}  # nothing enters a checkpoint


def test_loss_masks_an_outranking_column_of_another_positive() -> None:
    """Query 0's other positive is in the batch (query 2's sampled positive) and scores above its target."""
    e = torch.eye(4)
    queries = torch.stack([e[0], e[1], e[0]])
    docs = torch.stack([0.8 * e[0] + 0.6 * e[2], 0.6 * e[0] + 0.8 * e[1], e[0]])
    out = ContrastiveRetrievalLoss(in_batch=True, hard_negatives=False)(
        queries=queries,
        docs=docs,
        doc_ids=torch.tensor([10, 11, 12]),
        doc_is_image=torch.tensor([True, False, False]),
        positive=torch.tensor([0, 1, 2]),
        hard_negatives=torch.zeros(3, 0, dtype=torch.long),
        query_positive_ids=torch.tensor([[10, 12], [11, -1], [12, -1]]),
        logit_scale=torch.tensor(10.0),
    )
    assert out.target.tolist() == [0, 1, 2]
    assert out.target_is_image.tolist() == [True, False, False]
    assert out.scores[0, 2].item() == -INF and (queries[0] @ docs[2]) > (queries[0] @ docs[0])
    torch.testing.assert_close(out.scores[0, :2], torch.tensor([8.0, 6.0]))
    assert out.scores.requires_grad is False
    assert metrics(out) == {
        key: 100.0 for key in [f"train/{k}" for k in KEYS] + [f"train/{m}/{k}" for m in ("text", "image") for k in KEYS]
    }


def reference_ranks(out: ContrastiveLossOutput) -> torch.Tensor:
    """1 + the candidates scoring at least as much as the positive, row by row in plain torch."""
    ranks = []
    for b, t in enumerate(out.target.tolist()):
        row = out.scores[b]
        others = torch.isfinite(row) & (torch.arange(row.shape[0]) != t)
        ranks.append(1 + int((others & (row >= row[t])).sum()))
    return torch.tensor(ranks, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("in_batch", [True, False])
def test_real_loss_matches_plain_torch_ranks(seed: int, in_batch: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    n_queries, n_docs = 8, 20
    positive = torch.randperm(n_docs, generator=g)[:n_queries]
    hard = torch.randint(0, n_docs, (n_queries, 5), generator=g)
    hard[torch.rand(n_queries, 5, generator=g) < 0.2] = -1
    doc_ids = torch.arange(n_docs) + 100
    is_image = torch.arange(n_docs) % 2 == 1
    is_image[positive[:3]] = True  # both modalities among the sampled positives
    is_image[positive[3:5]] = False
    docs = F.normalize(torch.randn(n_docs, 16, generator=g), dim=-1)
    noise = 0.6 * torch.randn(n_queries, 16, generator=g)
    queries = F.normalize(docs[positive] + noise, dim=-1)  # near their positives, not always first
    loss = ContrastiveRetrievalLoss(in_batch=in_batch, hard_negatives=True)
    out = loss(queries, docs, doc_ids, is_image, positive, hard, doc_ids[positive].unsqueeze(1), torch.tensor(20.0))
    assert out.scores.dtype == torch.float32 and (out.scores < 0).any()  # negative logits are in play
    assert out.target.tolist() == positive.tolist()
    assert out.target_is_image.tolist() == is_image[positive].tolist()
    ranks = reference_ranks(out)
    assert (ranks > 1).any() and (ranks == 1).any(), ranks
    result = InBatchRetrievalMetrics()(out)
    groups = {"train/": slice(None), "train/text/": ~out.target_is_image, "train/image/": out.target_is_image}
    for prefix, rows in groups.items():
        selected = ranks[rows]
        hits = int((selected == 1).sum())
        assert round(result[prefix + "in_batch_accuracy"].item() * len(selected) / 100) == hits
        torch.testing.assert_close(
            result[prefix + "in_batch_accuracy"].double(),
            torch.tensor(100.0 * hits / len(selected), dtype=torch.float64),
            atol=1e-4,
            rtol=0,
        )
        torch.testing.assert_close(
            result[prefix + "in_batch_MRR"].double(), 100.0 * (1 / selected).mean(), atol=1e-4, rtol=0
        )
