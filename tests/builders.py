"""Builders the tests share: a tiny retriever, a mini-WebQA datamodule and a quiet one-process CPU trainer."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import lightning as L

from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.loss import ContrastiveRetrievalLoss
from lightning_modules.retriever import UniversalRetriever

#: A trainer that prints nothing and logs nothing, on one CPU process.
QUIET_CPU = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)


def cpu_trainer(root: Path, **options: Any) -> L.Trainer:
    """A quiet one-process CPU trainer under ``root``; ``options`` override or add Trainer arguments."""
    return L.Trainer(**{**QUIET_CPU, "default_root_dir": str(root), **options})


def tiny_retriever(encoder: CLIPEncoder, **options: Any) -> UniversalRetriever:
    """A retriever around a copy of ``encoder``: in-batch + hard negatives, tau 0.05, lr 1e-3 (``options`` win)."""
    defaults = dict(loss=ContrastiveRetrievalLoss(in_batch=True, hard_negatives=True), temperature=0.05, lr=1e-3)
    return UniversalRetriever(copy.deepcopy(encoder), **{**defaults, **options})


def webqa_datamodule(data_dir: Path, encoder: CLIPEncoder, **options: Any) -> WebQADataModule:
    """WebQA's distractors, balanced k=1, batch 8, no workers, the encoder's processor (``options`` win)."""
    defaults = dict(
        negatives_file="webqa",
        negative_strategy="balanced",
        negatives_k=1,
        batch_size=8,
        eval_batch_size=32,
        num_workers=0,
    )
    return WebQADataModule(str(data_dir), **{**defaults, **options}, processor=encoder.processor)


def corrupt_image(data_dir: Path, line: int = 0, payload: bytes = b"this is not a jpeg") -> tuple[str, int]:
    """Replace the payload of ``imgs.tsv``'s ``line`` (0-based) by base64 of ``payload`` (not an image) and rewrite
    ``imgs.lineidx.new`` to the new offsets; return the image's id and byte offset."""
    lines = (data_dir / "imgs.tsv").read_bytes().split(b"\n")
    image_id = lines[line].split(b"\t")[0]
    lines[line] = image_id + b"\t" + base64.b64encode(payload)
    (data_dir / "imgs.tsv").write_bytes(b"\n".join(lines))
    offsets: dict[str, int] = {}
    position = 0
    for raw in lines:
        if raw:
            offsets[raw.split(b"\t")[0].decode()] = position
        position += len(raw) + 1
    (data_dir / "imgs.lineidx.new").write_text("".join(f"{i}\t{o}\n" for i, o in offsets.items()))
    return image_id.decode(), offsets[image_id.decode()]


def write_clueweb_mm(webqa_dir: Path, out: Path, row_group_size: int = 16) -> Path:
    """The data of a release-layout directory rewritten in MARVEL's ClueWeb22-MM layout (schema of
    OpenMatch/MARVEL ``ANCE/data.py``): ``{train,dev,test}.parquet`` with one positive a query (``text_id`` or
    ``img_id``, integer image ids) and WebQA's distractors as ``img_negFacts``/``txt_negFacts``, ``text.parquet``,
    ``image.parquet`` with the picture bytes in row groups of ``row_group_size``, and qrels of that positive."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datamodules.image_store import ImageStore
    from datamodules.webqa_release import iter_jsonl

    out.mkdir(parents=True, exist_ok=True)
    docs = [record for _, record in iter_jsonl(webqa_dir / "all_docs.json")]
    pq.write_table(
        pa.table({"text_id": [d["snippet_id"] for d in docs], "surround": [d["fact"] for d in docs]}),
        out / "text.parquet",
    )
    captions = [record for _, record in iter_jsonl(webqa_dir / "all_imgs.json")]
    store = ImageStore(webqa_dir / "imgs.tsv")
    images = {
        "img_id": pa.array([int(c["image_id"]) for c in captions], pa.int64()),
        "caption": [c["caption"] for c in captions],
        "img": pa.array([store.read_bytes(str(c["image_id"])) for c in captions], pa.binary()),
    }
    pq.write_table(pa.table(images), out / "image.parquet", row_group_size=row_group_size)
    for split in ("train", "dev", "test"):
        rows = [record for _, record in iter_jsonl(webqa_dir / f"{split}.json")]
        image = [int(r["img_posFacts"][0]) if r["img_posFacts"] else None for r in rows]
        text = [r["txt_posFacts"][0] if not r["img_posFacts"] else None for r in rows]
        table = {
            "qid": [r["qid"] for r in rows],
            "query": [r["Q"] for r in rows],
            "text_id": pa.array(text, pa.string()),
            "img_id": pa.array(image, pa.int64()),
            "img_negFacts": [[str(d) for d in r["img_negFacts"]] for r in rows],
            "txt_negFacts": [r["txt_negFacts"] for r in rows],
        }
        pq.write_table(pa.table(table), out / f"{split}.parquet")
        if split != "train":
            lines = [f"{r['qid']}\t{i if i is not None else t}\t1\n" for r, i, t in zip(rows, image, text)]
            (out / f"{split}_qrels.txt").write_text("".join(lines))
    return out
