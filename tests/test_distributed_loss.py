"""Cross-device loss on 2 gloo ranks equals the single-process loss on the concatenated batch.

One ``torch.multiprocessing`` spawn (module-scoped fixture) runs every distributed check and saves
its results; the tests compare them with single-process computations in the main process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lightning_modules.distributed import gather_no_grad, gather_with_grad, rank_offset
from lightning_modules.loss import ContrastiveRetrievalLoss

WORLD_SIZE = 2
QUERIES_PER_RANK = 4
CONFIGS = {
    "in_batch+hard": dict(in_batch=True, hard_negatives=True),
    "share_hard": dict(in_batch=True, hard_negatives=True, share_hard_negatives=True),
    "hard": dict(in_batch=False, hard_negatives=True),
}

# Per query: (sampled positive, all positives, hard negatives), as corpus indices; -1 = padding.
QUERIES = [
    # rank 0
    (0, [0, 1], [2, 3]),
    (0, [0], [1, 4]),  # shares its positive with the query above (one column on this rank)
    (5, [5], [6, -1]),  # doc 5 is also a positive on rank 1
    (7, [7, 2], [2, 8]),  # hard negative 2 is one of its own positives
    # rank 1
    (5, [5], [9, 0]),  # doc 0 is also on rank 0
    (10, [10], [3, -1]),  # doc 3 is also on rank 0
    (11, [11, 9], [-1, -1]),  # doc 9, another query's positive here, is its own positive
    (9, [9], [10, 11]),
]
N_CORPUS, IN_DIM, OUT_DIM = 12, 8, 6


def corpus() -> tuple[Tensor, Tensor, Tensor]:
    """Fixed query inputs, doc inputs and doc modality flags."""
    g = torch.Generator().manual_seed(0)
    query_inputs = torch.randn(len(QUERIES), IN_DIM, generator=g)
    doc_inputs = torch.randn(N_CORPUS, IN_DIM, generator=g)
    return query_inputs, doc_inputs, torch.arange(N_CORPUS) % 3 == 0


def local_queries(rank: int) -> range:
    return range(rank * QUERIES_PER_RANK, (rank + 1) * QUERIES_PER_RANK)


def make_batch(query_indices: range) -> dict:
    """Inputs and loss arguments for some queries; their docs are unique, in first-seen order."""
    query_inputs, doc_inputs, is_image = corpus()
    specs = [QUERIES[i] for i in query_indices]
    docs = list(dict.fromkeys(d for pos, _, hard in specs for d in [pos, *hard] if d >= 0))
    column = {doc: i for i, doc in enumerate(docs)}

    def doc_id(doc: int) -> int:
        return 1000 + doc  # corpus ids differ from columns

    max_positives = max(len(p) for _, p, _ in specs)
    return dict(
        query_inputs=query_inputs[list(query_indices)],
        doc_inputs=doc_inputs[docs],
        doc_ids=torch.tensor([doc_id(d) for d in docs]),
        doc_is_image=is_image[docs],
        positive=torch.tensor([column[pos] for pos, _, _ in specs]),
        hard_negatives=torch.tensor([[column.get(d, -1) for d in hard] for _, _, hard in specs]),
        query_positive_ids=torch.tensor(
            [[doc_id(d) for d in p] + [-1] * (max_positives - len(p)) for _, p, _ in specs]
        ),
    )


class Encoder(nn.Module):
    """A shared linear "tower" with a learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Linear(IN_DIM, OUT_DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(x), dim=-1)


def loss_and_grads(model: nn.Module, encoder: Encoder, batch: dict, loss_fn: nn.Module) -> dict:
    """Encode queries and docs in one forward pass, compute the loss, backward."""
    n_queries = batch["query_inputs"].shape[0]
    embeddings = model(torch.cat([batch["query_inputs"], batch["doc_inputs"]]))
    out = loss_fn(
        embeddings[:n_queries],
        embeddings[n_queries:],
        batch["doc_ids"],
        batch["doc_is_image"],
        batch["positive"],
        batch["hard_negatives"],
        batch["query_positive_ids"],
        encoder.logit_scale.exp(),
    )
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    return {"loss": out.loss.detach(), "candidates": out.candidates_per_query, "grads": grads}


def gather_checks(rank: int) -> dict:
    """Variable-size gathers: rank r holds 2 + r rows."""
    x = (torch.arange((2 + rank) * 3.0).reshape(-1, 3) + 100 * rank).requires_grad_()
    gathered = gather_with_grad(x)
    weight = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape) * (rank + 1)
    (gathered * weight).sum().backward()
    return {
        "gathered": gathered.detach(),
        "grad": x.grad,
        "ids": gather_no_grad(torch.arange(2 + rank) + 10 * rank),
        "flags": gather_no_grad(torch.tensor([True, False, True])[: 2 + rank]),
        "empty_on_rank0": gather_no_grad(torch.full((2 * rank, 2), 7)),
        "offset": rank_offset(2 + rank),
    }


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {"gather": gather_checks(rank)}
        local = local_queries(rank)
        for name, config in CONFIGS.items():
            encoder = Encoder()
            loss_fn = ContrastiveRetrievalLoss(cross_device=True, **config)
            ddp = DistributedDataParallel(encoder)
            results[name] = loss_and_grads(ddp, encoder, make_batch(local), loss_fn)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def test_batch_halves_overlap() -> None:
    """The data exercises cross-rank de-duplication."""
    ids = [set(make_batch(local_queries(r))["doc_ids"].tolist()) for r in range(WORLD_SIZE)]
    assert len(ids[0]) != len(ids[1]) and ids[0] & ids[1]


@pytest.mark.parametrize("config", CONFIGS)
def test_ddp_gradients_equal_single_process(ranks: list[dict], config: str) -> None:
    encoder = Encoder()
    loss_fn = ContrastiveRetrievalLoss(cross_device=False, **CONFIGS[config])
    expected = loss_and_grads(encoder, encoder, make_batch(range(len(QUERIES))), loss_fn)

    mean_loss = torch.stack([r[config]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_loss, expected["loss"], atol=1e-6, rtol=1e-6)
    for rank in ranks:
        for name, grad in expected["grads"].items():
            torch.testing.assert_close(rank[config]["grads"][name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_gather_with_grad(ranks: list[dict]) -> None:
    rows = [torch.arange((2 + r) * 3.0).reshape(-1, 3) + 100 * r for r in range(WORLD_SIZE)]
    weight = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    for rank, result in enumerate(r["gather"] for r in ranks):
        torch.testing.assert_close(result["gathered"], torch.cat(rows))
        # d/dx of sum_r (r + 1) * <gathered, weight>, restricted to this rank's rows.
        start = 0 if rank == 0 else 2
        torch.testing.assert_close(result["grad"], 3 * weight[start : start + 2 + rank])
        assert result["offset"] == start


def test_gather_no_grad(ranks: list[dict]) -> None:
    for result in (r["gather"] for r in ranks):
        assert result["ids"].tolist() == [0, 1, 10, 11, 12]
        assert result["flags"].dtype == torch.bool
        assert result["flags"].tolist() == [True, False, True, False, True]
        assert result["empty_on_rank0"].tolist() == [[7, 7], [7, 7]]


def test_gathers_are_identity_without_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x and gather_no_grad(x) is x
    assert rank_offset(3) == 0
