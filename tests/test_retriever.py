"""The LightningModule: training makes progress, evaluation writes its files, resume is exact, bad input fails."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import EvaluationWriter
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.loss import ContrastiveRetrievalLoss
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError
from retrieval.index import IndexConfig

from builders import cpu_trainer, tiny_retriever, webqa_datamodule
from cli_runs import tiny_args, train_in_process


def _trainer(root: Path, **kwargs) -> L.Trainer:
    """A CPU trainer under ``root``; evaluations are written by ``EvaluationWriter`` into ``root/eval``."""
    return cpu_trainer(
        root, **{"num_sanity_val_steps": 0, "limit_val_batches": 0, "callbacks": [EvaluationWriter()], **kwargs}
    )


def _module(encoder: CLIPEncoder, **kwargs) -> UniversalRetriever:
    return tiny_retriever(encoder, **{"warmup_steps": 2, **kwargs})


def _datamodule(data_dir: Path, encoder: CLIPEncoder, **kwargs) -> WebQADataModule:
    return webqa_datamodule(data_dir, encoder, **kwargs)


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def trained(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[UniversalRetriever, list[float]]:
    """The module after 8 epochs on the tiny training queries from seed 0, and the loss of each of its steps."""
    L.seed_everything(0)
    recorder = LossRecorder()
    module = _module(tiny_encoder)
    trainer = _trainer(
        tmp_path_factory.mktemp("trained"), max_epochs=8, callbacks=[recorder], enable_checkpointing=False
    )
    trainer.fit(module, datamodule=_datamodule(tiny_data_dir, tiny_encoder))
    return module, recorder.losses


def test_training_lowers_the_loss(trained: tuple[UniversalRetriever, list[float]]) -> None:
    losses = trained[1]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert len(losses) == 8 * (40 // 8)
    assert last < 0.7 * first, (first, last)


def test_image_doc_is_the_sum_of_image_and_caption(tiny_encoder: CLIPEncoder) -> None:
    tokens = tiny_encoder.processor.tokenize(["a caption", "another caption"])
    pixels = torch.randn(2, *tiny_encoder.processor.image_shape)
    with torch.no_grad():
        got = tiny_encoder.encode_images(pixels, tokens)
        image, text = tiny_encoder.model.encode_image(pixels), tiny_encoder.model.encode_text(tokens)
        want = torch.nn.functional.normalize(image + text, dim=-1)
        caption_only = tiny_encoder.encode_images(pixels, tokens, torch.tensor([False, True]))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(caption_only[0], torch.nn.functional.normalize(text[0], dim=-1))
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


PLAIN_METRICS = ("MRR@10", "MRR@20", "NDCG@10", "NDCG@20", "Recall@20", "Recall@100")
ALL_METRICS = (
    *PLAIN_METRICS,
    "image_share@10",
    *(f"{view}/{name}" for view in ("text", "image") for name in PLAIN_METRICS),
)


def _read_run(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    """qid -> [(docid, rank, score)] of a 6-column TREC run file, in file order; checks the fixed columns."""
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in path.read_text().splitlines():
        qid, q0, docid, rank, score, tag = line.split()
        assert q0 == "Q0" and tag.startswith("test-step"), line
        run.setdefault(qid, []).append((docid, int(rank), float(score)))
    return run


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qid -> {docid: level} of the release's ``qid<TAB>docid<TAB>level`` qrels."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        qid, docid, level = line.split()
        qrels.setdefault(qid, {})[docid] = int(level)
    return qrels


def _pytrec_metrics(run: dict[str, list[tuple[str, int, float]]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """MRR@10/20, NDCG@10/20, Recall@20/100 in percent by trec_eval (pytrec_eval), averaged over all qrels queries.

    trec_eval orders each query's docs by score; MRR@k is its ``recip_rank`` on the run cut to the top k.
    """
    import pytrec_eval

    def mean(measure: str, key: str, depth: int | None = None) -> float:
        cut = {q: {d: s for d, rank, s in docs if depth is None or rank <= depth} for q, docs in run.items()}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(cut)
        return 100.0 * sum(per_query.get(q, {}).get(key, 0.0) for q in qrels) / len(qrels)

    return {
        "MRR@10": mean("recip_rank", "recip_rank", 10),
        "MRR@20": mean("recip_rank", "recip_rank", 20),
        "NDCG@10": mean("ndcg_cut", "ndcg_cut_10"),
        "NDCG@20": mean("ndcg_cut", "ndcg_cut_20"),
        "Recall@20": mean("recall", "recall_20"),
        "Recall@100": mean("recall", "recall_100"),
    }


def _expected_metrics(
    run: dict[str, list[tuple[str, int, float]]], qrels: dict[str, dict[str, int]], is_image: dict[str, bool]
) -> dict[str, float]:
    """Every evaluation metric recomputed from the mixed run alone (it ranks the whole tiny corpus).

    The text and image views (paper Table 2) search one modality's docs: with the whole corpus in the run, that
    is the mixed run restricted to the modality, scored against the queries with a positive of that modality.
    """
    expected = _pytrec_metrics(run, qrels)
    shares = [
        sum(is_image[d] for d, _, _ in sorted(docs, key=lambda x: x[1])[:10]) / min(10, len(docs))
        for q, docs in run.items()
        if q in qrels and docs
    ]
    expected["image_share@10"] = 100.0 * sum(shares) / len(shares)
    for view, image in (("text", False), ("image", True)):
        view_qrels = {q: {d: r for d, r in judged.items() if is_image[d] == image} for q, judged in qrels.items()}
        view_qrels = {q: judged for q, judged in view_qrels.items() if any(r > 0 for r in judged.values())}
        view_run = {q: [x for x in docs if is_image[x[0]] == image] for q, docs in run.items()}
        view_run = {q: [(d, rank, s) for rank, (d, _, s) in enumerate(docs, start=1)] for q, docs in view_run.items()}
        expected.update({f"{view}/{name}": value for name, value in _pytrec_metrics(view_run, view_qrels).items()})
    return expected


def _check_eval_dir(out: Path, results: dict[str, float], dm: WebQADataModule, data_dir: Path) -> dict:
    """Check one ``eval/test-step*`` directory against the logged results and pytrec_eval; return its run."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(ALL_METRICS)
    assert {name: results[f"test/{name}"] for name in metrics} == pytest.approx(metrics, abs=1e-4)  # logged as float32
    run = _read_run(out / "run.trec")
    queries = [json.loads(line)["qid"] for line in (data_dir / "test.json").read_text().splitlines()]
    assert sorted(run) == sorted(queries)  # every test query ranked
    for docs in run.values():
        assert [rank for _, rank, _ in docs] == list(range(1, len(dm.corpus) + 1))  # the whole corpus (< top 100)
        assert len({d for d, _, _ in docs}) == len(dm.corpus)
        assert all(a[2] >= b[2] for a, b in zip(docs, docs[1:]))  # best first
    is_image = dict(zip(dm.corpus.doc_ids, map(bool, dm.corpus.is_image)))
    expected = _expected_metrics(run, _read_qrels(data_dir / "test_qrels.txt"), is_image)
    assert metrics == pytest.approx(expected, abs=1e-6)
    return run


def test_evaluation_logs_metrics_and_writes_run_files(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    dm = _datamodule(tiny_data_dir, tiny_encoder)
    results = _trainer(tmp_path).test(_module(tiny_encoder), datamodule=dm)[0]
    [out] = (tmp_path / "eval").glob("test-step*")
    _check_eval_dir(out, results, dm, tiny_data_dir)


def _test_split_of_training_queries(data_dir: Path) -> Path:
    """Make ``data_dir``'s test split the training queries, judged by their positives (qrels level 1)."""
    train = (data_dir / "train.json").read_text()
    (data_dir / "test.json").write_text(train)
    qrels = []
    for line in train.splitlines():
        query = json.loads(line)
        qrels += [f"{query['qid']}\t{doc}\t1\n" for doc in query["img_posFacts"] + query["txt_posFacts"]]
    (data_dir / "test_qrels.txt").write_text("".join(qrels))
    return data_dir


def test_training_beats_the_untrained_model(
    data_copy: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, trained: tuple[UniversalRetriever, list[float]]
) -> None:
    """The trained queries' positives rise to the top through the whole evaluation path (ids, search, metrics).

    On the tiny data the real test split (10 queries about unseen docs) barely moves (MRR@10 13.3 -> 15.9 after
    8 epochs), so the test split here is the 40 training queries (those ``trained`` was trained on: its copy of the
    data has the same training split). Observed after 8 epochs: MRR@10 12.6 -> 87.9, image/MRR@10 14.5 -> 81.7,
    text/MRR@10 25.2 -> 96.7 (after 4 epochs: 71.6, 65.4, 80.4).
    """
    data_dir = _test_split_of_training_queries(data_copy)
    untrained = _trainer(tmp_path / "untrained").test(
        _module(tiny_encoder), datamodule=_datamodule(data_dir, tiny_encoder)
    )[0]
    after = _trainer(tmp_path / "trained").test(trained[0], datamodule=_datamodule(data_dir, tiny_encoder))[0]
    names = ("MRR@10", "image/MRR@10", "text/MRR@10")
    gains = {name: after[f"test/{name}"] - untrained[f"test/{name}"] for name in names}
    assert gains["MRR@10"] > 30.0, (untrained, after)
    assert gains["image/MRR@10"] > 20.0 and gains["text/MRR@10"] > 20.0, gains


class StopAtStep(L.Callback):
    """Interrupt a run after ``step`` optimizer steps, as a preempted job would be."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _resumable_run(
    data_dir: Path, encoder: CLIPEncoder, root: Path, ckpt: str | None = None, stop: int | None = None
) -> tuple[UniversalRetriever, L.Trainer]:
    """3 epochs from seed 0, a checkpoint at every step; interrupted after ``stop`` steps or resumed from ``ckpt``."""
    L.seed_everything(0)
    module = _module(encoder)
    every_step = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{step}"
    )
    callbacks: list[L.Callback] = [every_step]
    if stop:
        callbacks.append(StopAtStep(stop))
    trainer = _trainer(root, max_epochs=3, callbacks=callbacks)
    trainer.fit(module, datamodule=_datamodule(data_dir, encoder), ckpt_path=ckpt)
    return module, trainer


@pytest.fixture(scope="module")
def straight_run(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path_factory: pytest.TempPathFactory
) -> UniversalRetriever:
    """The module after the uninterrupted 3 epochs of ``_resumable_run`` (one run for both resume tests)."""
    return _resumable_run(tiny_data_dir, tiny_encoder, tmp_path_factory.mktemp("straight"))[0]


@pytest.mark.parametrize("stop_step", [10, 7], ids=["epoch-end", "mid-epoch"])
def test_resume_continues_the_same_run(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, stop_step: int, straight_run: UniversalRetriever
) -> None:
    _, interrupted = _resumable_run(tiny_data_dir, tiny_encoder, tmp_path / "b", stop=stop_step)
    assert interrupted.global_step == stop_step
    ckpt = str(tmp_path / "b" / f"step={stop_step}.ckpt")
    resumed, trainer = _resumable_run(tiny_data_dir, tiny_encoder, tmp_path / "c", ckpt=ckpt)
    assert trainer.global_step == 3 * 5
    for (name, a), b in zip(straight_run.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 15


def test_non_finite_loss_stops_with_step_and_queries(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    module = _module(tiny_encoder)
    with torch.no_grad():
        module.log_logit_scale.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at global step 0, batch 0 \(queries \['"):
        _trainer(tmp_path, max_epochs=1, enable_checkpointing=False).fit(
            module, datamodule=_datamodule(tiny_data_dir, tiny_encoder)
        )


def test_configuration_without_negatives_is_refused(tiny_data_dir: Path, tiny_encoder: CLIPEncoder) -> None:
    hard_only = ContrastiveRetrievalLoss(in_batch=False, hard_negatives=True)
    dm = _datamodule(tiny_data_dir, tiny_encoder, negatives_file=None, negative_strategy="none")
    with pytest.raises(InputError, match="no negatives: .*negatives_file=None"):
        hard_only.check_has_negatives(8, 1, dm.hard_negatives_per_query(), False, negatives="negatives_file=None")
    hard_only.check_has_negatives(8, 1, 0, mines_at_start=True)  # mined before the first step: accepted
    in_batch_only = ContrastiveRetrievalLoss(in_batch=True, hard_negatives=False)
    with pytest.raises(InputError, match="no negatives: .*batch 1"):
        in_batch_only.check_has_negatives(1, 1, 0, False)
    with pytest.raises(InputError, match="no negatives: .*batch 1"):  # two ranks of one query, not gathered
        in_batch_only.check_has_negatives(1, 2, 0, False)


def test_fit_command_refuses_a_configuration_without_negatives(
    tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = "--data.negatives_file null --model.loss.init_args.in_batch false --trainer.max_steps 1".split()
    proc = train_in_process(capfd, "fit", *tiny_args(tiny_data_dir, tmp_path), *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no negatives: loss(in_batch=False, ")


def test_k_larger_than_lists_is_refused(tiny_data_dir: Path, tiny_encoder: CLIPEncoder) -> None:
    with pytest.raises(InputError, match=r"negatives k=50 \(balanced\) needs 100 negatives per query"):
        _datamodule(tiny_data_dir, tiny_encoder, negatives_k=50).setup("fit")


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


def test_undecodable_image_fails_or_is_skipped_and_counted(
    data_copy: Path, tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    image_id, offset = _corrupt_first_image(data_copy)
    with pytest.raises(InputError, match=rf"{image_id}.*offset {offset}"):
        _trainer(tmp_path).test(_module(tiny_encoder), datamodule=_datamodule(data_copy, tiny_encoder))
    dm = _datamodule(data_copy, tiny_encoder, skip_bad_images=True)
    per_loader = _trainer(tmp_path / "skip").test(_module(tiny_encoder), datamodule=dm)
    results = {k: v for d in per_loader for k, v in d.items()}  # corpus-loader metrics come with loader 1
    assert results["test/skipped_images"] == 1.0
    run = _check_eval_dir(next((tmp_path / "skip" / "eval").glob("test-step*")), results, dm, data_copy)
    _trainer(tmp_path / "clean").test(_module(tiny_encoder), datamodule=_datamodule(tiny_data_dir, tiny_encoder))
    clean = _read_run(next((tmp_path / "clean" / "eval").glob("test-step*")) / "run.trec")
    for qid, docs in run.items():  # the bad image is still ranked (by its caption); every other doc scores the same
        assert image_id in {d for d, _, _ in docs}
        others = {d: s for d, _, s in docs if d != image_id}
        assert others == pytest.approx({d: s for d, _, s in clean[qid] if d != image_id}, abs=1e-6), qid


def test_rejected_index_factory_fails_at_construction(tiny_encoder: CLIPEncoder) -> None:
    with pytest.raises(InputError, match="IVFx"):
        _module(tiny_encoder, index=IndexConfig("IVFx,Flat"))


def test_wandb_logger_runs_offline_without_api_key(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_modules.loggers import WandbAutoLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    logger = WandbAutoLogger(project="univl-test", save_dir=str(tmp_path))
    assert logger._offline
    trainer = _trainer(tmp_path, max_steps=2, logger=logger, enable_checkpointing=False)
    trainer.fit(_module(tiny_encoder), datamodule=_datamodule(tiny_data_dir, tiny_encoder))
    logger.experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_predict_writes_corpus_embeddings(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    import numpy as np

    from callbacks import EmbeddingWriter

    module, dm = _module(tiny_encoder), _datamodule(tiny_data_dir, tiny_encoder)
    trainer = _trainer(tmp_path, callbacks=[EmbeddingWriter(str(tmp_path / "emb"))])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    vectors = np.load(tmp_path / "emb" / "embeddings-rank0.npy")
    ids = (tmp_path / "emb" / "doc_ids-rank0.txt").read_text().split()
    assert vectors.dtype == np.float16 and vectors.shape == (len(dm.corpus), tiny_encoder.embedding_dim)
    assert ids == dm.corpus.doc_ids
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=1e-2)
