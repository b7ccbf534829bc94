"""All-gathers for contrastive losses whose ranks hold different numbers of rows.

``torch.distributed.all_gather`` needs equally shaped tensors, and the backward of
``torch.distributed.nn.all_gather`` uses collectives that gloo lacks. The helpers here gather the
row counts first, pad every rank to the largest, gather, and strip the padding. The backward of
``gather_with_grad`` sums the gradient over ranks with ``all_reduce`` (available on gloo and NCCL)
and keeps this rank's rows.

Every function is the identity (offset 0) when torch.distributed is not initialised or the world
has a single rank, so the same code runs on a laptop and on a cluster.

Collectives run on the process group's device (:func:`collective_device`): NCCL has no CPU
collectives, so CPU tensors (ids, top-k lists, fp16 vectors kept on the host) travel through the
current CUDA device under NCCL and come back to their own device afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where the default process group's collectives run: the current CUDA device under NCCL, else the CPU.

    Lightning's DDP strategy sets each rank's CUDA device before any collective, so under NCCL the
    current device is this rank's own.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_sizes(n_local: int, device: torch.device | str | None = None) -> list[int]:
    """Number of rows held by every rank, in rank order (a collective: all ranks must call it).

    ``device`` is where the collective runs; None means :func:`collective_device`.
    """
    if not is_distributed():
        return [n_local]
    size = torch.tensor([n_local], dtype=torch.long, device=device or collective_device())
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def rank_offset(n_local: int, device: torch.device | str | None = None) -> int:
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

    Meant for ids, masks, top-k lists and evaluation vectors. The collective runs on
    :func:`collective_device` and the result comes back to ``x``'s device; bools travel as uint8
    because gloo has no boolean all-gather.
    """
    if not is_distributed():
        return x
    device = collective_device()
    sizes = gather_sizes(x.shape[0], device)
    moved = x.to(device, torch.uint8 if x.dtype == torch.bool else x.dtype).contiguous()
    return _all_gather_rows(moved, sizes).to(x.device, x.dtype)
