"""Resuming from the checkpoints the recipes actually write continues the very same run.

The recipes checkpoint at validation ends (``ModelCheckpoint(monitor="val/MRR@10")``) and refresh ANCE
negatives in the loop; a run resumed from any such checkpoint must draw the same batches and end with the
same weights as the run that was never interrupted (``num_workers: 0``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.ance_mining import ANCEMiningCallback
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever

from builders import cpu_trainer, tiny_retriever, webqa_datamodule


class BatchRecorder(L.Callback):
    """What every training batch held: step, queries, docs and the negatives version."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int], list[int], int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(
            (
                trainer.global_step,
                batch.queries.index.tolist(),
                batch.docs.index.tolist(),
                int(batch.negatives_version.max()),
            )
        )


def _run(
    data_dir: Path, encoder: CLIPEncoder, root: Path, callbacks: list, ckpt: str | None = None, **trainer_options
) -> tuple[UniversalRetriever, BatchRecorder]:
    L.seed_everything(0)
    module = tiny_retriever(encoder, warmup_steps=2)
    recorder = BatchRecorder()
    trainer = cpu_trainer(root, num_sanity_val_steps=0, callbacks=[*callbacks, recorder], **trainer_options)
    trainer.fit(module, datamodule=webqa_datamodule(data_dir, encoder), ckpt_path=ckpt)
    return module, recorder


def _assert_same_weights(a: UniversalRetriever, b: UniversalRetriever) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)


def test_resume_from_a_mid_epoch_validation_checkpoint(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    # 40 queries / batch 8 = 5 steps per epoch; validation (and the recipes' checkpoint) after step 3 of each epoch.
    def checkpoint() -> L.pytorch.callbacks.ModelCheckpoint:
        return L.pytorch.callbacks.ModelCheckpoint(
            monitor="val/MRR@10", mode="max", save_top_k=-1, filename="best-step{step}", auto_insert_metric_name=False
        )

    options = dict(max_epochs=2, val_check_interval=3, check_val_every_n_epoch=1)
    straight, recorded = _run(tiny_data_dir, tiny_encoder, tmp_path / "a", [checkpoint()], **options)
    written = sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("*.ckpt"))
    assert written == ["best-step3.ckpt", "best-step8.ckpt"]
    resumed, replayed = _run(
        tiny_data_dir,
        tiny_encoder,
        tmp_path / "b",
        [checkpoint()],
        ckpt=str(tmp_path / "a" / "checkpoints" / "best-step3.ckpt"),
        **options,
    )
    assert [b[0] for b in replayed.batches] == list(range(3, 10))  # steps 4..10, none replayed
    assert replayed.batches == recorded.batches[3:]
    _assert_same_weights(straight, resumed)


def test_resume_after_two_refreshes_draws_the_same_negatives(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    def callbacks() -> list:
        return [
            ANCEMiningCallback(every_n_steps=3, top_k=20),
            L.pytorch.callbacks.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}"),
        ]

    options = dict(max_epochs=2, limit_val_batches=0)
    straight, recorded = _run(tiny_data_dir, tiny_encoder, tmp_path / "a", callbacks(), **options)
    assert [b[3] for b in recorded.batches] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # refreshes after steps 3, 6, 9
    resumed, replayed = _run(
        tiny_data_dir,
        tiny_encoder,
        tmp_path / "b",
        callbacks(),
        ckpt=str(tmp_path / "a" / "checkpoints" / "step=7.ckpt"),
        **options,
    )
    assert replayed.batches == recorded.batches[7:]
    _assert_same_weights(straight, resumed)


@pytest.mark.parametrize("training", [True, False], ids=["training", "validating"])
def test_datamodule_state_records_the_position_in_fit_whatever_the_loop(tiny_data_dir: Path, training: bool) -> None:
    class FakeTrainer:
        """A fit stopped after 3 of 5 batches, inside or outside the in-fit validation loop."""

        class state:
            fn = "fit"

        def __init__(self) -> None:
            self.training, self.validating = training, not training
            progress = L.pytorch.loops.progress._BatchProgress()
            progress.current.processed, progress.is_last_batch = 3, False
            self.fit_loop = type("Loop", (), {"epoch_loop": type("Epoch", (), {"batch_progress": progress})})

    dm = WebQADataModule(str(tiny_data_dir), negatives_file="webqa", num_workers=0, batch_size=8)
    dm.trainer = FakeTrainer()
    assert dm.state_dict()["batches_into_epoch"] == 3
