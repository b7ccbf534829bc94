"""In-loop ANCE mining: the mined lists are the current model's top-k, training switches to them, resume keeps them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import torch

from callbacks import EvaluationWriter
from callbacks.ance_mining import ANCEMiningCallback
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever
from retrieval.index import brute_force_search

from builders import cpu_trainer, tiny_retriever, webqa_datamodule


def _setup(tiny_data_dir: Path, tiny_encoder: CLIPEncoder) -> tuple[UniversalRetriever, WebQADataModule]:
    return tiny_retriever(tiny_encoder), webqa_datamodule(tiny_data_dir, tiny_encoder, eval_batch_size=16)


def _trainer(root: Path, callbacks: list, **kwargs) -> L.Trainer:
    return cpu_trainer(root, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks, **kwargs)


class VersionRecorder(L.Callback):
    def __init__(self) -> None:
        self.versions: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.versions.append(int(batch.negatives_version.max()))


class WeightsAtFirstMining(ANCEMiningCallback):
    """Keeps a copy of the encoder the first mining used, to re-derive its top-k by brute force."""

    def refresh(self, trainer, module):
        if not self.mined_files:
            self.snapshot = copy.deepcopy(module.encoder).eval()
        return super().refresh(trainer, module)


def _brute_force_negatives(encoder: CLIPEncoder, dm: WebQADataModule, k: int) -> list[list[str]]:
    corpus = dm.corpus
    with torch.no_grad():
        docs = [encoder_batch for encoder_batch in dm.corpus_dataloader()]
        from lightning_modules.retriever import UniversalRetriever as R

        holder = R(encoder)
        doc_vecs = torch.cat([holder.encode_docs(b).half() for b in docs]).float()
        texts = [q.text for q in dm.train_queries]
        chunks = [texts[i : i + 16] for i in range(0, len(texts), 16)]
        q_vecs = torch.cat([encoder.encode_queries(encoder.processor.tokenize(c)).half() for c in chunks]).float()
    _, idx = brute_force_search(doc_vecs, q_vecs, k + 4)
    lists = []
    for q, row in zip(dm.train_queries, idx.tolist()):
        lists.append([corpus.doc_ids[d] for d in row if corpus.doc_ids[d] not in q.positives][:k])
    return lists


def test_mining_switches_negatives_mid_fit_to_the_current_models_top_k(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    module, dm = _setup(tiny_data_dir, tiny_encoder)
    miner = WeightsAtFirstMining(every_n_steps=3, top_k=20)
    recorder = VersionRecorder()
    trainer = _trainer(tmp_path, [miner, recorder], max_steps=9, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)

    names = [Path(f).name for f in miner.mined_files]
    assert names == ["train-negatives-step0000003.json", "train-negatives-step0000006.json"]
    assert recorder.versions == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # num_workers=0: the very next batch uses them
    assert dm.active_negatives == miner.mined_files[-1]
    assert not list((tmp_path / "negatives").glob(".*.tmp"))  # no half files left behind

    records = [json.loads(line) for line in Path(miner.mined_files[0]).read_text().splitlines()]
    assert [r["qid"] for r in records] == [q.qid for q in dm.train_queries]
    expected = _brute_force_negatives(miner.snapshot, dm, k=20)
    for record, query, want in zip(records, dm.train_queries, expected):
        assert len(record["all_negFacts"]) == 20
        assert not set(record["all_negFacts"]) & set(query.positives)
        assert set(record["img_negFacts"]) | set(record["txt_negFacts"]) == set(record["all_negFacts"])
        assert all(dm.corpus.is_image[dm.corpus.index[d]] for d in record["img_negFacts"])
        overlap = len(set(record["all_negFacts"][:15]) & set(want))  # fp16 ties may swap neighbours at the edge
        assert overlap >= 14, (record["qid"], overlap)


def test_resume_after_mining_keeps_the_negatives_and_does_not_mine_again(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    module, dm = _setup(tiny_data_dir, tiny_encoder)
    miner = ANCEMiningCallback(at_fit_start=True, top_k=20)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}"
    )
    _trainer(tmp_path, [miner, checkpoint], max_steps=4).fit(module, datamodule=dm)
    assert len(miner.mined_files) == 1

    module2, dm2 = _setup(tiny_data_dir, tiny_encoder)
    miner2 = ANCEMiningCallback(at_fit_start=True, top_k=20)
    recorder = VersionRecorder()
    trainer = _trainer(tmp_path / "resumed", [miner2, recorder], max_steps=6)
    trainer.fit(module2, datamodule=dm2, ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert miner2.mined_files == miner.mined_files  # restored, not mined again
    assert dm2.active_negatives == miner.mined_files[0]
    assert recorder.versions == [1, 1]  # sampling from the restored mined file


def test_offline_mining_through_validate(tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    module, dm = _setup(tiny_data_dir, tiny_encoder)
    out = tmp_path / "mined.json"
    miner = ANCEMiningCallback(on_validate=True, top_k=10, output_file=str(out))
    trainer = cpu_trainer(tmp_path, callbacks=[miner, EvaluationWriter()])
    trainer.validate(module, datamodule=dm, verbose=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 40 and all(len(json.loads(line)["all_negFacts"]) == 10 for line in lines)
    assert set(miner.timings[0]) == {"encode_s", "index_s", "search_s", "write_s"}
    assert (tmp_path / "eval" / "dev-step0000000" / "metrics.json").is_file()  # under the trainer's root, not the cwd
    assert miner.mined == [(0, str(out))]  # (step of the weights, file): an untrained module is step 0
