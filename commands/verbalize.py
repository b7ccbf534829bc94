"""``train.py verbalize``: an expanded caption file ``C [SEP] V(I)`` in the release schema of ``all_imgs.json``.

The images are cut into shards in caption-file order; each rank generates its share of the unfinished shards and
writes each finished shard atomically into ``<out>.shards/``; rank 0 merges them into ``<out>`` (temporary name, then
rename) and writes ``<out>.summary.json``. A rerun with the same model, data and shard size reuses every finished
shard (390k images take hours); shards written by another setup are refused. An undecodable picture keeps its plain
caption and is counted in the summary; an image id without a line in ``imgs.lineidx.new`` is an InputError (at
setup, naming the id).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from tqdm import tqdm

from datamodules.verbalization_datamodule import VerbalizationDataModule
from lightning_modules.verbalizer import SEP
from retrieval.atomic import atomic_write
from retrieval.errors import InputError, first_ids

Shard = list[tuple[str, str]]  # (image id, plain caption)
#: Undecodable image ids listed in the summary (the count is always exact).
LISTED_BAD_IDS = 100


def plan_shards(records: list[dict], shard_size: int) -> list[Shard]:
    """The caption file's images in order, ``shard_size`` per shard."""
    if shard_size < 1:
        raise InputError(f"--shard_size {shard_size} must be at least 1")
    images = [(str(record["image_id"]), str(record.get("caption") or "")) for record in records]
    return [images[start : start + shard_size] for start in range(0, len(images), shard_size)]


def shard_dir(out: Path) -> Path:
    return out.with_name(out.name + ".shards")


def shard_path(out: Path, index: int, count: int) -> Path:
    return shard_dir(out) / f"shard-{index:05d}-of-{count:05d}.json"


def setup_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of what decides the generated texts (model settings, checkpoint, data, shard size)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_shard_dir(out: Path, settings: dict[str, Any]) -> None:
    """Create ``<out>.shards/`` with its ``setup.json``, or check that the shards there come from this setup."""
    folder, fingerprint = shard_dir(out), setup_fingerprint(settings)
    setup_file = folder / "setup.json"
    if setup_file.is_file():
        saved = json.loads(setup_file.read_text())
        if saved.get("fingerprint") != fingerprint:
            raise InputError(
                f"{folder} holds shards of another setup (model, checkpoint, data or shard size differ); "
                f"delete that folder to start over, or pass the settings it was written with (see {setup_file})"
            )
        return
    with atomic_write(setup_file) as handle:
        json.dump({"fingerprint": fingerprint, "settings": settings}, handle, indent=1, default=str)


def read_shard(path: Path, shard: Shard) -> list[str | None] | None:
    """The texts of a finished shard, None when it is not written yet; a shard of other images is an error."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved["ids"] != [image_id for image_id, _ in shard]:
        raise InputError(f"{path} holds other images than the caption file's shard; delete {path.parent}")
    return saved["texts"]


class ShardWriter(Callback):
    """Collects ``predict_step``'s ``(ids, texts)`` and writes each shard once all its images are done; after the
    run, rank 0 merges (all ranks wait for each other first)."""

    def __init__(self, out: Path, shards: list[Shard], mine: list[int], merge: Any) -> None:
        self.out, self.shards, self.merge = out, shards, merge
        self.shard_of = {image_id: k for k in mine for image_id, _ in shards[k]}
        self.texts: dict[int, dict[str, str | None]] = {k: {} for k in mine}
        self.written: list[int] = []
        self.bar: tqdm | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = sum(len(self.shards[k]) for k in self.texts)
        self.bar = tqdm(total=total, desc=f"verbalize (rank {trainer.global_rank})", unit="img", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        ids, texts = outputs
        for image_id, text in zip(ids, texts, strict=True):
            k = self.shard_of[image_id]
            self.texts[k][image_id] = text
            if len(self.texts[k]) == len(self.shards[k]):
                self._write(k)
        self.bar.update(len(ids))

    def _write(self, k: int) -> None:
        ids = [image_id for image_id, _ in self.shards[k]]
        with atomic_write(shard_path(self.out, k, len(self.shards))) as handle:
            json.dump({"ids": ids, "texts": [self.texts[k][image_id] for image_id in ids]}, handle)
        self.written.append(k)
        del self.texts[k]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar.close()
        if self.texts:
            raise RuntimeError(f"shards {sorted(self.texts)} did not receive all their images")
        trainer.strategy.barrier("verbalize-shards")
        if trainer.is_global_zero:
            self.merge()


def expanded_record(record: dict, text: str | None) -> dict:
    """The record with ``caption`` = ``C [SEP] V(I)`` (unchanged without a text); every other field kept."""
    if not text:
        return record
    return {**record, "caption": f"{record.get('caption') or ''}{SEP}{text}"}


def merge_shards(out: Path, records: list[dict], shards: list[Shard], summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``out`` from the finished shards (atomically) and ``<out>.summary.json``; return the summary."""
    texts: dict[str, str | None] = {}
    for k, shard in enumerate(shards):
        found = read_shard(shard_path(out, k, len(shards)), shard)
        if found is None:
            raise RuntimeError(f"shard {k} of {len(shards)} is missing after generation")
        texts.update(zip((image_id for image_id, _ in shard), found, strict=True))
    bad = [image_id for image_id, text in texts.items() if text is None]
    with atomic_write(out) as handle:
        for record in records:
            handle.write(json.dumps(expanded_record(record, texts[str(record["image_id"])])) + "\n")
    summary = {
        **summary,
        "images": len(records),
        "verbalized": len(records) - len(bad),
        "undecodable": len(bad),
        "undecodable_ids": bad[:LISTED_BAD_IDS],
        "out": str(out),
    }
    with atomic_write(out.with_name(out.name + ".summary.json")) as handle:
        json.dump(summary, handle, indent=1)
    return summary


def run_verbalize(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: VerbalizationDataModule,
    ckpt_path: str | None,
    out: Path,
    shard_size: int,
) -> dict[str, Any] | None:
    """Generate, shard by shard, and merge (see the module docstring); rank 0 returns the summary."""
    datamodule.prepare_data()
    datamodule.setup("predict")
    shards = plan_shards(datamodule.records, shard_size)
    settings = {
        "model": dict(model.hparams),
        "ckpt_path": str(Path(ckpt_path).resolve()) if ckpt_path else None,
        "data_dir": str(datamodule.data_dir.resolve()),
        "caption_file": datamodule.hparams.caption_file,
        "images": [shard[0][0] for shard in shards],
        "shard_size": shard_size,
    }
    if trainer.is_global_zero:
        claim_shard_dir(out, settings)
    pending = [k for k, shard in enumerate(shards) if read_shard(shard_path(out, k, len(shards)), shard) is None]
    mine = pending[trainer.global_rank :: trainer.world_size]
    setup = {key: settings[key] for key in ("model", "ckpt_path", "data_dir", "caption_file", "shard_size")}
    summary: dict[str, Any] = {**setup, "shards": len(shards), "shards_reused": len(shards) - len(pending)}

    def merge() -> None:
        summary.update(merge_shards(out, datamodule.records, shards, summary))

    datamodule.predict_shards = [shards[k] for k in mine]
    writer = ShardWriter(out, shards, mine, merge)
    trainer.callbacks.append(writer)
    try:
        trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
    if not trainer.is_global_zero:
        return None
    line = (
        f"verbalized {summary['verbalized']} of {summary['images']} images into {out} ({summary['undecodable']} "
        f"undecodable kept their plain caption; {summary['shards_reused']} of {summary['shards']} shards reused)"
    )
    if summary["undecodable"]:
        line += f"; undecodable: {first_ids(summary['undecodable_ids'])}"
    print(line)
    return summary
