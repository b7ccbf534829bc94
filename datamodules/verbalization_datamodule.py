"""Data for image verbalization: (image, caption) -> queries pairs for the query generator, and every image for
``train.py verbalize``, read from a data directory in the release layout.

Training pairs are the training queries whose positive is an image (one pair per query and image positive);
validation groups the dev queries by their image positive (one generation per image, its queries as references).
The test split is never read. Captions come from the plain caption file (``all_imgs.json``): the input ``C`` of
paper eq. 7 and 8.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from datamodules.image_store import ImageStore
from datamodules.named_datasets import parse_dataset_name
from datamodules.webqa_release import iter_jsonl, read_queries, require_data_dir, require_file
from retrieval.errors import InputError, first_ids


@dataclass
class VerbalizationBatch:
    """Images with their captions; ``references`` (training: one query each, validation: every query of the image)
    are empty lists when generating. ``images[i]`` is None for an undecodable picture (``verbalize`` keeps its
    plain caption)."""

    image_ids: list[str]
    images: list[Image.Image | None]
    captions: list[str]
    references: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)


def collate(items: list[tuple[str, Image.Image | None, str, list[str]]]) -> VerbalizationBatch:
    ids, images, captions, references = zip(*items, strict=True)
    return VerbalizationBatch(list(ids), list(images), list(captions), list(references))


def read_caption_records(path: Path) -> list[dict]:
    """The records of a caption file (``all_imgs.json`` schema) in file order, every field kept."""
    records = [record for _, record in iter_jsonl(require_file(path, "image caption file"))]
    missing = [line for line, record in enumerate(records, start=1) if "image_id" not in record]
    if missing:
        raise InputError(f"{path}: record {missing[0]} has no 'image_id'; every line needs one")
    return records


def check_images_indexed(ids: list[str], images: ImageStore, caption_file: Path) -> None:
    """Every image id of the caption file has a line in ``imgs.lineidx.new`` (InputError naming the first)."""
    missing = [image_id for image_id in ids if image_id not in images]
    if missing:
        raise InputError(
            f"{caption_file}: {len(missing)} image id(s) have no line in {images.lineidx_path}, first: "
            f"{first_ids(missing)}; regenerate the index or remove those images from the caption file"
        )


class PairDataset(Dataset):
    """(image id, picture, caption, references) items; pictures are read in the worker that asks for them."""

    def __init__(self, items: list[tuple[str, str, list[str]]], images: ImageStore) -> None:
        self.items, self.images = items, images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[str, Image.Image | None, str, list[str]]:
        image_id, caption, references = self.items[position]
        return image_id, self.images.load(image_id), caption, references


class ShardImages(IterableDataset):
    """The images of some shards, shard after shard (each DataLoader worker takes every n-th shard):
    ``verbalize`` hands each rank its unfinished shards."""

    def __init__(self, shards: list[list[tuple[str, str]]], images: ImageStore) -> None:
        self.shards, self.images = shards, images

    def __iter__(self) -> Iterator[tuple[str, Image.Image | None, str, list[str]]]:
        worker = get_worker_info()
        mine = self.shards if worker is None else self.shards[worker.id :: worker.num_workers]
        for shard in mine:
            for image_id, caption in shard:
                yield image_id, self.images.load(image_id), caption, []


class VerbalizationDataModule(L.LightningDataModule):
    """Images, captions and image-positive queries of a data directory in the release layout.

    Args:
        data_dir: the directory, or an embedded dataset name (``mini-webqa:small``, ``mini-webqa:tiny``).
        caption_file: the plain caption file whose captions are the generator's input and the expansion's prefix.
        batch_size: training pairs per step.
        eval_batch_size: images per generation batch (validation and ``verbalize``).
        num_workers: DataLoader workers (images are decoded there).
        skip_bad_images: an undecodable picture is yielded as None instead of failing (``verbalize`` always does).
    """

    def __init__(
        self,
        data_dir: str,
        caption_file: str = "all_imgs.json",
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.named_dataset = parse_dataset_name(data_dir)
        self.data_dir = self.named_dataset.path if self.named_dataset else Path(data_dir)
        self.records: list[dict] = []
        self.captions: dict[str, str] = {}
        self.images: ImageStore | None = None
        self.train_pairs: list[tuple[str, str, list[str]]] = []
        self.dev_images: list[tuple[str, str, list[str]]] = []
        self.predict_shards: list[list[tuple[str, str]]] = []  # this rank's (image id, caption) shards (verbalize)

    def prepare_data(self) -> None:
        if self.named_dataset and not self.data_dir.is_dir():
            self.named_dataset.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.named_dataset:
            self.named_dataset.prepare()
        require_data_dir(self.data_dir)
        if self.images is not None:
            return
        caption_path = self.data_dir / self.hparams.caption_file
        self.records = read_caption_records(caption_path)
        self.captions = {str(record["image_id"]): str(record.get("caption") or "") for record in self.records}
        self.images = ImageStore(
            require_file(self.data_dir / "imgs.tsv", "image file"), skip_bad_images=self.hparams.skip_bad_images
        )
        check_images_indexed(list(self.captions), self.images, caption_path)
        if stage in (None, "fit"):
            self.train_pairs = [(i, self.captions[i], [query]) for i, query in self.image_queries("train.json")]
        if stage in (None, "fit", "validate"):
            grouped: dict[str, list[str]] = defaultdict(list)
            for image_id, query in self.image_queries("dev.json"):
                grouped[image_id].append(query)
            self.dev_images = [(image_id, self.captions[image_id], queries) for image_id, queries in grouped.items()]

    def image_queries(self, split_file: str) -> list[tuple[str, str]]:
        """(image id, query text) for every image positive of every query of a split (ids checked)."""
        path = self.data_dir / split_file
        pairs = [(image_id, query.text) for query in read_queries(path) for image_id in query.image_positives]
        unknown = [image_id for image_id, _ in pairs if image_id not in self.captions]
        if unknown:
            raise InputError(
                f"{path}: {len(unknown)} image positive(s) not in {self.hparams.caption_file}, first: "
                f"{first_ids(unknown)}; check the data directory"
            )
        return pairs

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(PairDataset(self.train_pairs, self.images), self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(PairDataset(self.dev_images, self.images), self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """Every image of ``predict_shards`` (undecodable ones as None), for ``verbalize``."""
        self.images.skip_bad_images = True
        return DataLoader(
            ShardImages(self.predict_shards, self.images),
            batch_size=self.hparams.eval_batch_size,
            num_workers=min(self.hparams.num_workers, len(self.predict_shards)),
            collate_fn=collate,
        )
