"""Collectives run on the process group's device (CUDA under NCCL, CPU under gloo); results come back home.

NCCL has no CPU collectives: every gather of evaluation and mining (query vectors, row counts, top-k
lists) must move its tensors to the current CUDA device first. The world and the backend are faked
here, so the rule is pinned without GPUs; ``bench/gpu_check.sh`` runs the real thing under NCCL.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from lightning_modules import distributed
from lightning_modules.distributed import collective_device, gather_no_grad


@pytest.mark.parametrize("backend, expected", [("nccl", torch.device("cuda", 3)), ("gloo", torch.device("cpu"))])
def test_collective_device_follows_the_backend(
    monkeypatch: pytest.MonkeyPatch, backend: str, expected: torch.device
) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collective_device() == expected


def test_collective_device_without_a_process_group_is_the_cpu() -> None:
    assert not dist.is_initialized()
    assert collective_device() == torch.device("cpu")


class Recorded(Exception):
    """Raised by the fake collective once it has seen where its input lives."""


def test_gathers_move_host_tensors_to_the_collective_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # The group's device is faked as "meta" (a stand-in for cuda:N); the caller's tensors stay on the CPU.
    seen: list[torch.device] = []

    def all_gather(chunks: list[torch.Tensor], tensor: torch.Tensor, group=None) -> None:
        seen.append(tensor.device)
        raise Recorded

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "collective_device", lambda: torch.device("meta"))
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    for host_tensor in (torch.zeros(3, 4, dtype=torch.float16), torch.arange(3), torch.tensor([True, False])):
        with pytest.raises(Recorded):
            gather_no_grad(host_tensor)
    with pytest.raises(Recorded):
        distributed.gather_sizes(5)
    assert seen == [torch.device("meta")] * 4


def test_gathered_rows_come_back_to_the_callers_device_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    def all_gather(chunks: list[torch.Tensor], tensor: torch.Tensor, group=None) -> None:
        for rank, chunk in enumerate(chunks):  # row counts (one element) are equal; rows differ by rank
            chunk.copy_(tensor if tensor.numel() == 1 or tensor.dtype == torch.uint8 else tensor + rank)

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    ids = gather_no_grad(torch.tensor([10, 20]))
    assert ids.tolist() == [10, 20, 11, 21]
    flags = gather_no_grad(torch.tensor([True, False]))
    assert flags.dtype == torch.bool and flags.tolist() == [True, False, True, False]
