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
