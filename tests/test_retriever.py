"""The LightningModule: training makes progress, evaluation writes its files, resume is exact, bad input fails."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.loss import ContrastiveRetrievalLoss
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError


def _trainer(root: Path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, default_root_dir=str(root), limit_val_batches=0)
    options.update(kwargs)
    return L.Trainer(**options)


def _module(encoder: CLIPEncoder, **kwargs) -> UniversalRetriever:
    options = dict(loss=ContrastiveRetrievalLoss(in_batch=True, hard_negatives=True), temperature=0.05, lr=1e-3, warmup_steps=2)
    options.update(kwargs)
    return UniversalRetriever(copy.deepcopy(encoder), **options)


def _datamodule(data_dir: Path, **kwargs) -> WebQADataModule:
    options = dict(negatives_file="webqa", negative_strategy="balanced", negatives_k=1, batch_size=8, eval_batch_size=32, num_workers=0)
    options.update(kwargs)
    return WebQADataModule(str(data_dir), **options)


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_training_lowers_the_loss(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    L.seed_everything(0)
    recorder = LossRecorder()
    trainer = _trainer(tmp_path, max_epochs=8, callbacks=[recorder], enable_checkpointing=False)
    trainer.fit(_module(tiny_encoder), datamodule=_datamodule(tiny_data_dir))
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert len(recorder.losses) == 8 * (40 // 8)
    assert last < 0.7 * first, (first, last)


def test_image_doc_is_the_sum_of_image_and_caption(tiny_encoder: CLIPEncoder) -> None:
    tokens = tiny_encoder.processor.tokenize(["a caption", "another caption"])
    pixels = torch.randn(2, *tiny_encoder.processor.image_shape)
    with torch.no_grad():
        got = tiny_encoder.encode_images(pixels, tokens)
        want = torch.nn.functional.normalize(tiny_encoder.model.encode_image(pixels) + tiny_encoder.model.encode_text(tokens), dim=-1)
        caption_only = tiny_encoder.encode_images(pixels, tokens, torch.tensor([False, True]))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(caption_only[0], torch.nn.functional.normalize(tiny_encoder.model.encode_text(tokens)[0], dim=-1))
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


def test_evaluation_logs_metrics_and_writes_run_files(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    module = _module(tiny_encoder)
    results = trainer.test(module, datamodule=_datamodule(tiny_data_dir))[0]
    for name in ("MRR@10", "MRR@20", "NDCG@10", "NDCG@20", "Recall@20", "Recall@100", "image_share@10", "text/MRR@10", "image/MRR@10"):
        assert 0.0 <= results[f"test/{name}"] <= 100.0
    out = next((tmp_path / "eval").glob("test-step*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["MRR@10"] == pytest.approx(results["test/MRR@10"])
    lines = (out / "run.trec").read_text().splitlines()
    qid, q0, docid, rank, score, tag = lines[0].split()
    assert q0 == "Q0" and rank == "1" and tag.startswith("test")
    assert len({line.split()[0] for line in lines}) == 10  # every test query ranked


class StopAtStep(L.Callback):
    """Interrupt a run after ``step`` optimizer steps, as a preempted job would be."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.parametrize("stop_step", [10, 7], ids=["epoch-end", "mid-epoch"])
def test_resume_continues_the_same_run(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, stop_step: int) -> None:
    def run(root: Path, ckpt: str | None = None, stop: int | None = None) -> tuple[UniversalRetriever, L.Trainer]:
        L.seed_everything(0)
        module = _module(tiny_encoder)
        callbacks = [L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{step}")]
        if stop:
            callbacks.append(StopAtStep(stop))
        trainer = _trainer(root, max_epochs=3, callbacks=callbacks)
        trainer.fit(module, datamodule=_datamodule(tiny_data_dir), ckpt_path=ckpt)
        return module, trainer

    straight, _ = run(tmp_path / "a")
    _, interrupted = run(tmp_path / "b", stop=stop_step)
    assert interrupted.global_step == stop_step
    resumed, trainer = run(tmp_path / "c", ckpt=str(tmp_path / "b" / f"step={stop_step}.ckpt"))
    assert trainer.global_step == 3 * 5
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 15


def test_non_finite_loss_stops_with_step_and_queries(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    module = _module(tiny_encoder)
    with torch.no_grad():
        module.log_logit_scale.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at global step 0, batch 0 \(queries \['"):
        _trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(module, datamodule=_datamodule(tiny_data_dir))


def test_configuration_without_negatives_is_refused(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    module = _module(tiny_encoder, loss=ContrastiveRetrievalLoss(in_batch=False, hard_negatives=True))
    with pytest.raises(InputError, match="no negatives: .*negatives_file=None"):
        _trainer(tmp_path, max_epochs=1).fit(module, datamodule=_datamodule(tiny_data_dir, negatives_file=None, negative_strategy="none"))
    module = _module(tiny_encoder, loss=ContrastiveRetrievalLoss(in_batch=True, hard_negatives=False))
    with pytest.raises(InputError, match="no negatives: .*batch 1"):
        _trainer(tmp_path, max_epochs=1).fit(module, datamodule=_datamodule(tiny_data_dir, batch_size=1, negatives_file=None))


def test_k_larger_than_lists_is_refused(tiny_data_dir: Path) -> None:
    with pytest.raises(InputError, match=r"negatives k=50 \(balanced\) needs 100 negatives per query"):
        _datamodule(tiny_data_dir, negatives_k=50).setup("fit")


def _corrupt_first_image(data_dir: Path) -> tuple[str, int]:
    """Replace the first image's payload by valid base64 of non-image bytes; return its id and offset."""
    import base64

    lines = (data_dir / "imgs.tsv").read_bytes().split(b"\n")
    image_id = lines[0].split(b"\t")[0]
    lines[0] = image_id + b"\t" + base64.b64encode(b"this is not a jpeg")
    (data_dir / "imgs.tsv").write_bytes(b"\n".join(lines))
    offsets, position = [], 0
    for line in lines:
        if line:
            offsets.append(line.split(b"\t")[0].decode() + f"\t{position}\n")
        position += len(line) + 1
    (data_dir / "imgs.lineidx.new").write_text("".join(offsets))
    return image_id.decode(), 0


def test_undecodable_image_fails_or_is_skipped_and_counted(data_copy: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    image_id, offset = _corrupt_first_image(data_copy)
    with pytest.raises(InputError, match=rf"{image_id}.*offset {offset}"):
        _trainer(tmp_path).test(_module(tiny_encoder), datamodule=_datamodule(data_copy))
    per_loader = _trainer(tmp_path).test(_module(tiny_encoder), datamodule=_datamodule(data_copy, skip_bad_images=True))
    results = {k: v for d in per_loader for k, v in d.items()}  # corpus-loader metrics come with loader 1
    assert results["test/skipped_images"] == 1.0
    assert 0.0 <= results["test/MRR@10"] <= 100.0


def test_rejected_index_factory_fails_at_construction(tiny_encoder: CLIPEncoder) -> None:
    with pytest.raises(InputError, match="IVFx"):
        _module(tiny_encoder, index_factory="IVFx,Flat")


def test_wandb_logger_runs_offline_without_api_key(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_modules.loggers import WandbAutoLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    logger = WandbAutoLogger(project="univl-test", save_dir=str(tmp_path))
    assert logger._offline
    _trainer(tmp_path, max_steps=2, logger=logger, enable_checkpointing=False).fit(_module(tiny_encoder), datamodule=_datamodule(tiny_data_dir))
    logger.experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_predict_writes_corpus_embeddings(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    import numpy as np

    from callbacks import EmbeddingWriter

    module, dm = _module(tiny_encoder), _datamodule(tiny_data_dir)
    trainer = _trainer(tmp_path, callbacks=[EmbeddingWriter(str(tmp_path / "emb"))])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    vectors = np.load(tmp_path / "emb" / "embeddings-rank0.npy")
    ids = (tmp_path / "emb" / "doc_ids-rank0.txt").read_text().split()
    assert vectors.dtype == np.float16 and vectors.shape == (len(dm.corpus), tiny_encoder.embedding_dim)
    assert ids == dm.corpus.doc_ids
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=1e-2)
