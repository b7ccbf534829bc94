"""The learnable temperature moves during training, even from tau = 0.01, and never exceeds its bound."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever

from builders import cpu_trainer, tiny_retriever, webqa_datamodule


class LogitScaleRecorder(L.Callback):
    """The logged ``train/logit_scale`` after every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(trainer.callback_metrics["train/logit_scale"]))


def _fit(
    data_dir: Path, encoder: CLIPEncoder, root: Path, steps: int, callbacks: list | None = None, **module_options
) -> LogitScaleRecorder:
    L.seed_everything(0)
    module = tiny_retriever(encoder, **{"temperature": 0.01, **module_options})
    dm = webqa_datamodule(data_dir, encoder)
    recorder = LogitScaleRecorder()
    cpu_trainer(
        root, enable_checkpointing=False, limit_val_batches=0, max_steps=steps, callbacks=[recorder, *(callbacks or [])]
    ).fit(module, datamodule=dm)
    return recorder


def test_learnable_temperature_moves_from_tau_001(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    # The recipes start at tau = 0.01, i.e. exactly at the bound 1/tau = 100: a clamp inside the forward pass
    # has zero gradient there (exp(log 100) > 100 in fp32), so the scale would never move.
    values = _fit(tiny_data_dir, tiny_encoder, tmp_path, 20, temperature=0.01, learnable_temperature=True).values
    assert len(values) == 20
    assert values[0] <= 100.0 + 1e-4
    assert min(values) < 99.5, values
    assert max(values) <= 100.0 + 1e-4, values


class StartAboveTheBound(L.Callback):
    """Puts the learnable 1/tau at 200 before the first step."""

    def on_fit_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            pl_module.log_logit_scale.fill_(math.log(200.0))


def test_logit_scale_is_clamped_after_the_optimizer_step(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    # Above the bound, the parameter is brought back to log(max) by the first optimizer step, as open_clip does.
    values = _fit(
        tiny_data_dir, tiny_encoder, tmp_path, 3, [StartAboveTheBound()], temperature=0.01, learnable_temperature=True
    ).values
    assert values[0] > 199.0 and all(v <= 100.0 + 1e-4 for v in values[1:]), values


def test_learnable_temperature_below_the_bound_is_refused(tiny_encoder: CLIPEncoder) -> None:
    with pytest.raises(ValueError, match="temperature 0.01 is below 1/max_logit_scale = 0.02"):
        UniversalRetriever(
            copy.deepcopy(tiny_encoder), temperature=0.01, learnable_temperature=True, max_logit_scale=50.0
        )


def test_fixed_temperature_stays(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    values = _fit(tiny_data_dir, tiny_encoder, tmp_path, 3, temperature=0.05).values
    assert values == [torch.tensor(math.log(20.0)).exp().item()] * 3
