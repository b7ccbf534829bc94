"""ContrastiveRetrievalLoss against a plain per-query reference implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.loss import ContrastiveRetrievalLoss

CONFIGS = {
    "in_batch": dict(in_batch=True, hard_negatives=False),
    "hard": dict(in_batch=False, hard_negatives=True),
    "in_batch+hard": dict(in_batch=True, hard_negatives=True),
    "share_hard": dict(in_batch=True, hard_negatives=True, share_hard_negatives=True),
    "share_hard_only": dict(in_batch=False, hard_negatives=False, share_hard_negatives=True),
}


def reference(batch: dict, in_batch: bool, hard_negatives: bool, share_hard_negatives: bool = False) -> dict:
    """Loop over queries, list the negatives by hand, take -log softmax (float64)."""
    queries, docs = batch["queries"].double(), batch["docs"].double()
    doc_ids, positive = batch["doc_ids"].tolist(), batch["positive"].tolist()
    hard, positive_ids = batch["hard_negatives"].tolist(), batch["query_positive_ids"].tolist()
    is_image = batch["doc_is_image"].tolist()
    scale = batch["logit_scale"].double()

    losses, alignments, image_lse, text_lse, counts = [], [], [], [], []
    for q in range(len(positive)):
        target = positive[q]
        listed = []
        if in_batch:
            listed += [positive[j] for j in range(len(positive)) if j != q]
        if hard_negatives:
            listed += [c for c in hard[q] if c >= 0]
        if share_hard_negatives:
            listed += [c for row in hard for c in row if c >= 0]
        excluded = {i for i in positive_ids[q] if i >= 0} | {doc_ids[target]}
        negatives = {}  # doc id -> column, first listed wins
        for column in listed:
            if doc_ids[column] not in excluded and doc_ids[column] not in negatives:
                negatives[doc_ids[column]] = column

        def score(column: int, q: int = q) -> torch.Tensor:
            return scale * queries[q] @ docs[column]

        negative_scores = [score(c) for c in negatives.values()]
        all_scores = torch.stack([score(target), *negative_scores])
        losses.append(-score(target) + torch.logsumexp(all_scores, 0))
        alignments.append(-score(target))
        images = [s for s, c in zip(negative_scores, negatives.values()) if is_image[c]]
        texts = [s for s, c in zip(negative_scores, negatives.values()) if not is_image[c]]
        if images:
            image_lse.append(torch.logsumexp(torch.stack(images), 0))
        if texts:
            text_lse.append(torch.logsumexp(torch.stack(texts), 0))
        counts.append(len(negatives))

    def mean(values: list) -> torch.Tensor:
        return torch.stack(values).mean() if values else torch.zeros((), dtype=torch.float64)

    return dict(
        loss=mean(losses),
        alignment=mean(alignments),
        image_negatives=mean(image_lse),
        text_negatives=mean(text_lse),
        candidates_per_query=torch.tensor(sum(counts) / len(counts), dtype=torch.float64),
    )


def random_batch(seed: int, duplicate_ids: bool = False, n_queries: int = 6, n_docs: int = 10) -> dict:
    """Random batch with padding, repeated hard negatives, shared positives and false negatives."""
    g = torch.Generator().manual_seed(seed)
    docs = F.normalize(torch.randn(n_docs, 8, generator=g), dim=-1)
    doc_ids = torch.randperm(50, generator=g)[:n_docs] + 100
    doc_is_image = torch.rand(n_docs, generator=g) < 0.5
    if duplicate_ids:  # the same doc in two columns, as when two ranks send it
        doc_ids[-1], docs[-1], doc_is_image[-1] = doc_ids[0], docs[0], doc_is_image[0]
    positive = torch.randint(0, n_docs, (n_queries,), generator=g)
    positive[1] = positive[0]  # a positive shared by two queries
    hard = torch.randint(0, n_docs, (n_queries, 4), generator=g)
    hard[torch.rand(n_queries, 4, generator=g) < 0.3] = -1
    hard[2, 1] = hard[2, 0]  # a repeated hard negative
    sampled = doc_ids[positive].unsqueeze(1)
    others = doc_ids[torch.randint(0, n_docs, (n_queries, 2), generator=g)]  # more in-batch positives
    outside = torch.full((n_queries, 1), 999)  # a positive outside the batch
    positive_ids = torch.cat([sampled, others, outside, sampled], 1)  # the sampled one repeated
    positive_ids[torch.rand(n_queries, 5, generator=g) < 0.3] = -1
    positive_ids[:, 0] = doc_ids[positive]
    return dict(
        queries=F.normalize(torch.randn(n_queries, 8, generator=g), dim=-1),
        docs=docs,
        doc_ids=doc_ids,
        doc_is_image=doc_is_image,
        positive=positive,
        hard_negatives=hard,
        query_positive_ids=positive_ids,
        logit_scale=torch.tensor(5.0),
    )


def assert_matches_reference(out, expected: dict) -> None:
    for field, value in expected.items():
        torch.testing.assert_close(getattr(out, field).double(), value, atol=1e-5, rtol=1e-5, msg=field)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference(config: str, seed: int) -> None:
    batch = random_batch(seed, duplicate_ids=seed % 2 == 1)
    out = ContrastiveRetrievalLoss(**CONFIGS[config])(**batch)
    assert_matches_reference(out, reference(batch, **CONFIGS[config]))


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_match_reference(config: str) -> None:
    batch = random_batch(7)
    leaves = ("queries", "docs", "logit_scale")
    ours = {k: v.double().requires_grad_() if k in leaves else v for k, v in batch.items()}
    theirs = {k: v.detach().clone().requires_grad_() if k in leaves else v for k, v in ours.items()}
    ContrastiveRetrievalLoss(**CONFIGS[config])(**ours).loss.backward()
    reference(theirs, **CONFIGS[config])["loss"].backward()
    for name in leaves:
        assert torch.isfinite(ours[name].grad).all()
        torch.testing.assert_close(ours[name].grad, theirs[name].grad, msg=name)
    assert ours["queries"].grad.abs().sum() > 0 and ours["docs"].grad.abs().sum() > 0


def small_batch(doc_ids: list[int], positive: list[int], hard: list[list[int]], positive_ids: list[list[int]]) -> dict:
    """A hand-built batch: doc columns alternate image / text, 4-d random embeddings."""
    g = torch.Generator().manual_seed(0)
    return dict(
        queries=F.normalize(torch.randn(len(positive), 4, generator=g), dim=-1),
        docs=F.normalize(torch.randn(len(doc_ids), 4, generator=g), dim=-1),
        doc_ids=torch.tensor(doc_ids),
        doc_is_image=torch.arange(len(doc_ids)) % 2 == 0,
        positive=torch.tensor(positive),
        hard_negatives=torch.tensor(hard, dtype=torch.long),
        query_positive_ids=torch.tensor(positive_ids, dtype=torch.long),
        logit_scale=torch.tensor(10.0),
    )


def manual_loss(batch: dict, negatives_per_query: list[list[int]]) -> torch.Tensor:
    """Mean over queries of -log softmax over [positive column, *given negative columns]."""
    losses = []
    for q, negatives in enumerate(negatives_per_query):
        scores = batch["logit_scale"] * batch["docs"] @ batch["queries"][q]
        losses.append(-torch.log_softmax(scores[[batch["positive"][q].item(), *negatives]], 0)[0])
    return torch.stack(losses).mean()


IN_BATCH_ONLY = ContrastiveRetrievalLoss(in_batch=True, hard_negatives=False)
HARD_ONLY = ContrastiveRetrievalLoss(in_batch=False, hard_negatives=True)


def test_shared_positive_is_not_a_negative() -> None:
    # Queries 0 and 1 both have doc 10 (column 0) as positive; query 2 has column 1.
    batch = small_batch([10, 11], positive=[0, 0, 1], hard=[[], [], []], positive_ids=[[10], [10], [11]])
    out = IN_BATCH_ONLY(**batch)
    torch.testing.assert_close(out.loss, manual_loss(batch, [[1], [1], [0]]))
    torch.testing.assert_close(out.candidates_per_query, torch.tensor(1.0))  # column 0 once for query 2


def test_same_doc_in_two_columns_counts_once() -> None:
    # Doc 10 sits in columns 0 and 2 (as after a cross-rank gather) with the same embedding.
    batch = small_batch([10, 11, 10], [0, 2, 1], hard=[[], [], []], positive_ids=[[10], [10], [11]])
    batch["docs"][2] = batch["docs"][0]
    out = IN_BATCH_ONLY(**batch)
    torch.testing.assert_close(out.loss, manual_loss(batch, [[1], [1], [0]]))
    torch.testing.assert_close(out.candidates_per_query, torch.tensor(1.0))


def test_copies_of_the_target_are_masked_without_positive_ids() -> None:
    # No positive ids given (P = 0): the other column holding the target's doc is still no negative.
    batch = small_batch([10, 11, 10], positive=[0, 2, 1], hard=[[], [], []], positive_ids=[[], [], []])
    batch["docs"][2] = batch["docs"][0]
    torch.testing.assert_close(IN_BATCH_ONLY(**batch).loss, manual_loss(batch, [[1], [1], [0]]))


def test_hard_negative_that_is_another_positive_is_masked() -> None:
    # Positives {10, 12}; hard negatives are column 2 (doc 12, masked) and column 1 (doc 11).
    batch = small_batch([10, 11, 12], positive=[0], hard=[[2, 1]], positive_ids=[[10, 12]])
    out = HARD_ONLY(**batch)
    torch.testing.assert_close(out.loss, manual_loss(batch, [[1]]))
    assert out.candidates_per_query.item() == 1.0


def test_query_without_negatives_is_finite() -> None:
    batch = small_batch([10, 11], positive=[0, 1], hard=[[-1], [0]], positive_ids=[[10, -1], [11, 10]])
    batch["queries"].requires_grad_()
    out = HARD_ONLY(**batch)
    out.loss.backward()
    torch.testing.assert_close(out.loss, torch.tensor(0.0))  # softmax over the positive alone
    for value in (out.image_negatives, out.text_negatives, out.candidates_per_query):
        assert value.item() == 0.0
    assert torch.isfinite(batch["queries"].grad).all()


def test_decomposition_of_a_single_query() -> None:
    """loss = L_Align + log(e^{-L_Align} + e^{L_Image} + e^{L_Text}) for one query (eq. 5)."""
    batch = small_batch([10, 11, 12, 13, 14], positive=[0], hard=[[1, 2, 3, 4]], positive_ids=[[10]])
    out = HARD_ONLY(**batch)
    terms = torch.stack([-out.alignment, out.image_negatives, out.text_negatives])
    torch.testing.assert_close(out.loss, out.alignment + torch.logsumexp(terms, 0))
    assert out.candidates_per_query.item() == 4.0


def test_zero_width_hard_negatives() -> None:
    batch = random_batch(3)
    batch["hard_negatives"] = batch["hard_negatives"][:, :0]
    for config in CONFIGS.values():
        out = ContrastiveRetrievalLoss(**config)(**batch)
        assert_matches_reference(out, reference(batch, **config))


def test_cross_device_without_process_group_is_local() -> None:
    batch = random_batch(4)
    local = ContrastiveRetrievalLoss(cross_device=False)(**batch)
    global_ = ContrastiveRetrievalLoss(cross_device=True)(**batch)
    torch.testing.assert_close(local.loss, global_.loss)


def test_logit_scale_receives_gradient() -> None:
    batch = random_batch(5)
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    batch["logit_scale"] = log_scale.exp()
    ContrastiveRetrievalLoss()(**batch).loss.backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad) and log_scale.grad != 0


def test_no_negative_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="no negative source enabled"):
        ContrastiveRetrievalLoss(in_batch=False, hard_negatives=False, share_hard_negatives=False)


@pytest.mark.parametrize("config", CONFIGS)
def test_loss_runs_in_fp32_under_bf16_autocast(config: str) -> None:
    # Under bf16-mixed the towers emit bf16 vectors and the loss is called inside autocast: logits at scale 100
    # in bf16 err by ~0.2. The loss must upcast and compute with autocast off.
    batch = random_batch(3, n_queries=16, n_docs=24)
    batch["logit_scale"] = torch.tensor(100.0)
    half = {k: v.bfloat16() if k in ("queries", "docs") else v for k, v in batch.items()}
    fp32 = {k: v.float() if k in ("queries", "docs") else v for k, v in half.items()}
    loss = ContrastiveRetrievalLoss(**CONFIGS[config])
    expected = loss(**fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for inputs in (fp32, half):
            out = loss(**inputs)
            assert out.loss.dtype == torch.float32
            torch.testing.assert_close(out.loss, expected.loss, atol=1e-4, rtol=0)
            torch.testing.assert_close(out.alignment, expected.alignment, atol=1e-4, rtol=0)
