"""Optimiser helpers following the CLIP fine-tuning recipe.

Weight decay applies to matrices (and higher-rank tensors such as conv kernels and 2-D positional
embeddings) only; biases, 1-D parameters (norm gains, class embeddings) and the temperature
``logit_scale`` are not decayed. The learning rate warms up linearly and then follows a cosine.
"""

from __future__ import annotations

import math

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def exclude_from_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases, parameters with fewer than two dimensions, and the temperature."""
    return param.ndim < 2 or name.endswith("bias") or "logit_scale" in name


def build_param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups, ``decay`` and ``no_decay``; frozen parameters are left out.

    Groups carry a ``name`` (Lightning's LearningRateMonitor logs it); an empty group is dropped.
    """
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if exclude_from_weight_decay(name, param) else decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def cosine_schedule_with_warmup(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup from 0 to the base lr over ``warmup_steps``, then a cosine decay that reaches
    ``min_lr_ratio * base lr`` at ``total_steps`` and stays there.

    The multiplier at step t is ``t / warmup_steps`` during warmup, then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * progress)) / 2`` with
    ``progress = (t - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1].
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def lr_multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, lr_multiplier)
