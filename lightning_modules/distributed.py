"""All-gathers for contrastive losses whose ranks hold different numbers of rows.

``torch.distributed.all_gather`` needs equally shaped tensors, and the backward of
``torch.distributed.nn.all_gather`` uses collectives that gloo lacks. The helpers here gather the
row counts first, pad every rank to the largest, gather, and strip the padding. The backward of
``gather_with_grad`` sums the gradient over ranks with ``all_reduce`` (available on gloo and NCCL)
and keeps this rank's rows.

Every function is the identity (offset 0) when torch.distributed is not initialised or the world
has a single rank, so the same code runs on a laptop and on a cluster.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_sizes(n_local: int, device: torch.device | str = "cpu") -> list[int]:
    """Number of rows held by every rank, in rank order (a collective: all ranks must call it)."""
    if not is_distributed():
        return [n_local]
    size = torch.tensor([n_local], dtype=torch.long, device=device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def rank_offset(n_local: int, device: torch.device | str = "cpu") -> int:
    """Index of this rank's first row in the gathered tensor (rows held by lower ranks)."""
    if not is_distributed():
        return 0
    return sum(gather_sizes(n_local, device)[: dist.get_rank()])


def _all_gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, given each rank's row count."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """Forward: variable-size all-gather. Backward: sum the gradient over ranks, keep own rows."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        sizes = gather_sizes(x.shape[0], x.device)
        ctx.start = sum(sizes[: dist.get_rank()])
        ctx.stop = ctx.start + x.shape[0]
        return _all_gather_rows(x.contiguous(), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Every rank's loss may depend on our rows: their gradient is the sum over ranks.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 across ranks (row counts may differ), differentiably.

    The gradient reaching this rank's ``x`` is the sum of the gradients every rank computed for
    these rows, so with a per-rank loss and DDP gradient averaging the parameters receive the
    gradient of the mean of the per-rank losses.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 across ranks (row counts may differ), without gradient.

    Meant for ids, masks and other integer or boolean metadata; bools travel as uint8 because
    gloo has no boolean all-gather.
    """
    if not is_distributed():
        return x
    sizes = gather_sizes(x.shape[0], x.device)
    if x.dtype == torch.bool:
        return _all_gather_rows(x.to(torch.uint8), sizes).bool()
    return _all_gather_rows(x.contiguous(), sizes)
