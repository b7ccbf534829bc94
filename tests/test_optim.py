"""Parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_modules.optim import build_param_groups, cosine_schedule_with_warmup


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(4, 3))
        self.norm = nn.LayerNorm(3)
        self.proj = nn.Linear(3, 2)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def group_names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_param_groups() -> None:
    model = TinyModel()
    decay, no_decay = build_param_groups(model, weight_decay=0.2)
    assert (decay["name"], decay["weight_decay"]) == ("decay", 0.2)
    assert (no_decay["name"], no_decay["weight_decay"]) == ("no_decay", 0.0)
    assert group_names(model, decay) == {"positional_embedding", "proj.weight"}
    assert group_names(model, no_decay) == {"norm.weight", "norm.bias", "proj.bias", "logit_scale"}
    torch.optim.AdamW([decay, no_decay], lr=1e-3)  # accepted as-is


def test_logit_scale_is_excluded_whatever_its_shape() -> None:
    model = nn.Module()
    model.logit_scale = nn.Parameter(torch.ones(1, 1))
    (group,) = build_param_groups(model, weight_decay=0.2)
    assert group["name"] == "no_decay"


def lrs(warmup: int, total: int, min_lr_ratio: float = 0.0, base_lr: float = 2.0) -> list[float]:
    """Learning rate at every step 0..total + 2."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total, min_lr_ratio)
    values = []
    for _ in range(total + 3):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_schedule_values() -> None:
    values = lrs(warmup=10, total=110, min_lr_ratio=0.1)
    assert values[0] == 0.0
    assert values[5] == pytest.approx(1.0)  # halfway through warmup
    assert values[10] == pytest.approx(2.0)  # end of warmup: the base lr
    assert values[60] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # middle of the cosine
    assert values[110] == pytest.approx(0.2)  # end: min_lr_ratio * base lr
    assert values[112] == pytest.approx(0.2)  # stays there
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_schedule_without_warmup() -> None:
    values = lrs(warmup=0, total=4)
    cosine = [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 - math.cos(math.pi / 4)) / 2, 0.0]
    assert values[:5] == pytest.approx([2.0 * c for c in cosine])


@pytest.mark.parametrize(
    "warmup, total, min_lr_ratio, message",
    [
        (0, 0, 0.0, "total_steps"),
        (5, -1, 0.0, "total_steps"),
        (11, 10, 0.0, "warmup_steps"),
        (-1, 10, 0.0, "warmup_steps"),
        (1, 10, 1.5, "min_lr_ratio"),
    ],
)
def test_schedule_validation(warmup: int, total: int, min_lr_ratio: float, message: str) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        cosine_schedule_with_warmup(optimizer, warmup, total, min_lr_ratio)
