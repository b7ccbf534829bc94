"""The WebQA ``LightningDataModule``: modality-balanced training batches and full-corpus evaluation."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.batching import CorpusCollator, DocumentLoader, PairCollator, QueryCollator, TrainCollator
from datamodules.clueweb_release import ParquetImageStore, is_clueweb_dir, read_clueweb_corpus, read_parquet_queries
from datamodules.image_store import ImageStore, read_skip_list
from datamodules.named_datasets import parse_dataset_name
from datamodules.negatives import (
    WEBQA_DISTRACTORS,  # noqa: F401 - re-exported: the name was defined here
    NegativePool,
    NegativeStrategy,
    find_negatives_file,
    load_negative_pool,
)
from datamodules.samplers import ContiguousShardSampler, IndexDataset, NegativeRegistry, TrainSampleSampler
from datamodules.webqa_release import (
    Corpus,
    Query,
    check_image_docs,
    check_positives_against_qrels,
    check_qrels_against,
    check_queries_against_corpus,
    check_skip_list,
    check_training_positives,
    read_qrels_file,
    read_queries,
    require_data_dir,
    require_file,
)
from retrieval.errors import DataWarning, InputError, Problems

log = logging.getLogger(__name__)

#: What a training batch holds: queries with their docs (``TrainBatch``), or pictures with captions (``PairBatch``).
TRAIN_TASKS = ("queries", "image_caption")

# Lightning warns that a mid-epoch resume may replay data; TrainSampleSampler resumes exactly
# (it skips the batches the checkpoint had already seen), so the warning does not apply here.
warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")


@dataclass
class EvalSplit:
    """Queries of one evaluation split with their qrels."""

    name: str
    queries: list[Query]
    qrels: dict[str, dict[str, int]]

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.queries]

    @property
    def ids(self) -> list[str]:
        return [q.qid for q in self.queries]


@dataclass(frozen=True)
class EvaluationData:
    """What scoring an evaluation needs besides the vectors: the split's qrels and the corpus' ids and modalities."""

    split: str
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]
    doc_is_image: np.ndarray


@dataclass(frozen=True)
class MiningData:
    """What a hard-negative refresh needs: loaders over the training queries and this rank's corpus shard, the
    training queries in order, their positives (corpus indices) and the corpus."""

    query_loader: DataLoader
    corpus_loader: DataLoader
    queries: list[Query]
    positives: list[np.ndarray]
    corpus: Corpus


def read_split_queries(data_dir: Path, name: str) -> tuple[Path, list[Query]]:
    """The query file of split ``name`` (``train``/``dev``/``test``) and its queries, in either layout (the UniVL-DR
    release's JSON lines or ClueWeb22-MM's parquet files)."""
    if is_clueweb_dir(data_dir):
        path = data_dir / f"{name}.parquet"
        return path, read_parquet_queries(path)
    path = data_dir / f"{name}.json"
    return path, read_queries(path)


def read_eval_split(data_dir: Path, name: str, corpus: Corpus) -> EvalSplit:
    """Queries and qrels of ``dev`` or ``test`` in ``data_dir``, checked against ``corpus`` (positives that differ
    from the qrels are a warning)."""
    (path, queries), qrels_path = read_split_queries(data_dir, name), data_dir / f"{name}_qrels.txt"
    qrels = read_qrels_file(qrels_path, name)
    check_qrels_against(qrels, queries, corpus, str(qrels_path))
    check_positives_against_qrels(queries, qrels, corpus, str(path), str(qrels_path), _warnings_only())
    return EvalSplit(name, queries, qrels)


def _warnings_only() -> Problems:
    """A strict sink whose warnings are Lightning's rank-zero warnings (one per run, not one per rank)."""
    return Problems(warn=lambda message: rank_zero_warn(message, category=DataWarning))


class WebQADataModule(L.LightningDataModule):
    """Reads a data directory in the UniVL-DR release layout, or in MARVEL's ClueWeb22-MM layout (parquet files,
    ``datamodules.clueweb_release``).

    Args:
        data_dir: the directory (``train.json``, ``all_docs.json``, ``imgs.tsv``, ...; or ``train.parquet``,
            ``text.parquet``, ``image.parquet``, ...), or the name of an embedded dataset, ``mini-webqa:small`` or
            ``mini-webqa:tiny`` (``datamodules.named_datasets``), generated on first use into a cache directory.
        caption_file: image caption file of the WebQA layout; a verbalized one (``all_imgs_exp.json``) drops in
            (ClueWeb22-MM: the captions of ``image.parquet``).
        negatives_file: ranked hard negatives in the release's mined schema; ``"webqa"`` uses the
            query file's own distractors; ``None`` trains with in-batch negatives only. Relative
            paths are looked up in ``data_dir`` first.
        negative_strategy: one of ``datamodules.negatives.STRATEGIES`` (paper Table 3).
        negatives_k: k of the strategy (``balanced`` gives k image + k text per query).
        batch_composition: ``random`` or ``balanced`` (alternate image/text-positive queries).
        batch_size: queries per device per step.
        eval_batch_size: queries or docs per encoding batch.
        num_workers: DataLoader workers (images are decoded there).
        seed: seeds shuffling and negative draws.
        processor: the encoder's tokenizer and image transform (the CLI links ``model.encoder.processor`` here;
            without the CLI, pass it or call :meth:`set_processor`).
        skip_bad_images: encode an undecodable image's caption only and count it, instead of failing.
        skip_list: a file of image ids (one a line, as ``check-data --write-skip-list`` writes it) whose pictures
            are known to be bad: those docs are encoded by caption alone and counted, any other bad image still
            stops the run.
        train_task: ``queries`` (training queries with positives and negatives) or ``image_caption`` (the corpus'
            image docs as picture-caption pairs, MARVEL's plugin pretraining); the CLI links it from the loss
            (``model.loss.train_task``).
    """

    def __init__(
        self,
        data_dir: str,
        caption_file: str = "all_imgs.json",
        negatives_file: str | None = None,
        negative_strategy: str = "balanced",
        negatives_k: int = 1,
        batch_composition: str = "random",
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        seed: int = 0,
        skip_bad_images: bool = False,
        skip_list: str | None = None,
        train_task: str = "queries",
        processor: Any = None,
    ) -> None:
        super().__init__()
        if train_task not in TRAIN_TASKS:
            raise InputError(f"unknown data.train_task {train_task!r}; choose one of {TRAIN_TASKS}")
        self.save_hyperparameters(ignore=["processor"])
        self.named_dataset = parse_dataset_name(data_dir)
        self.data_dir = self.named_dataset.path if self.named_dataset else Path(data_dir)
        self.strategy = NegativeStrategy(negative_strategy, negatives_k)
        self.processor: Any = processor
        self.corpus: Corpus | None = None
        self.images: ImageStore | None = None
        self.train_queries: list[Query] = []
        self.train_positives: list[np.ndarray] = []
        self.registry: NegativeRegistry | None = None
        self.splits: dict[str, EvalSplit] = {}
        self._restored_negatives: str | None = None
        self._restored_version = 0
        self._skip_batches = 0

    # ------------------------------------------------------------------ setup
    def set_processor(self, processor: Any) -> None:
        """Give the datamodule the encoder's tokenizer and image transform (the CLI links it at instantiation)."""
        self.processor = processor

    def prepare_data(self) -> None:
        """Generate a named dataset into the cache if it is not there yet (local rank 0 only); a path is only read."""
        if self.named_dataset and not self.data_dir.is_dir():
            log.info("generating %s into %s", self.hparams.data_dir, self.data_dir)
            self.named_dataset.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.named_dataset:
            self.named_dataset.prepare()  # a no-op after prepare_data (the Trainer calls it first)
        require_data_dir(self.data_dir)
        if self.corpus is None and self.is_clueweb:
            self.corpus = read_clueweb_corpus(self.data_dir)
            self.images = ParquetImageStore(
                self.data_dir / "image.parquet", self.hparams.skip_bad_images, skip_ids=self._skip_ids()
            )
        if self.corpus is None:
            self.corpus = Corpus.from_release(self.data_dir, self.hparams.caption_file)
            self.images = ImageStore(
                require_file(self.data_dir / "imgs.tsv", "image file"),
                skip_bad_images=self.hparams.skip_bad_images,
                skip_ids=self._skip_ids(),
            )
            check_image_docs(self.corpus, self.images, self.hparams.caption_file)
        if stage in (None, "fit"):
            self.setup_train()
        if stage in (None, "fit", "validate"):
            self.eval_split("dev")
        if stage in (None, "test"):
            self.eval_split("test")

    @property
    def is_clueweb(self) -> bool:
        """Whether the data directory is in MARVEL's ClueWeb22-MM layout (parquet files)."""
        return is_clueweb_dir(self.data_dir)

    def _read_split(self, name: str) -> tuple[Path, list[Query]]:
        """The query file of split ``name`` (``train``/``dev``/``test``) and its queries, in either layout."""
        return read_split_queries(self.data_dir, name)

    def _skip_ids(self) -> list[str]:
        """The ids of ``skip_list`` (none without one); ids that are not image docs are warned about."""
        if self.hparams.skip_list is None:
            return []
        ids = read_skip_list(self.hparams.skip_list)
        check_skip_list(ids, self.corpus, self.hparams.skip_list, self.hparams.caption_file, _warnings_only())
        return ids

    def setup_train(self) -> None:
        """Load the training queries, their positives and the negatives pool (once)."""
        if self.train_queries:
            return
        path, self.train_queries = self._read_split("train")
        check_queries_against_corpus(self.train_queries, self.corpus, str(path))
        self.train_positives = [
            np.asarray(self.corpus.lookup(q.positives, str(path)), dtype=np.int64) for q in self.train_queries
        ]
        check_training_positives(self.train_queries, str(path))
        source = self._restored_negatives or self.hparams.negatives_file
        self.registry = NegativeRegistry(self.load_negatives(source), source, version=self._restored_version)
        if source is None and self.strategy.total:
            log.info("no negatives_file: training with in-batch negatives only")

    def resolve(self, path: str) -> Path:
        """A relative path is looked up in ``data_dir`` first, then the working directory (InputError if in neither)."""
        return find_negatives_file(path, self.data_dir)

    def load_negatives(self, source: str | None) -> NegativePool:
        """The pool named by ``source`` (a file, ``"webqa"``, or None for none), checked against the strategy."""
        return load_negative_pool(source, self.train_queries, self.corpus, self.strategy, self.data_dir)

    def activate_negatives(self, path: str | Path) -> int:
        """Switch training to the negatives in ``path``; batches drawn from now on use them."""
        pool = self.load_negatives(str(path))
        return self.registry.activate(pool, str(path))

    @property
    def active_negatives(self) -> str | None:
        return self.registry.source if self.registry else self._restored_negatives

    def evaluation_data(self, split: str) -> EvaluationData:
        """The read method of evaluation: qrels of ``split`` (``dev``/``test``) and the corpus' ids and modalities."""
        queries = self.eval_split(split)
        return EvaluationData(split, queries.ids, queries.qrels, self.corpus.doc_ids, self.corpus.is_image)

    def mining_data(self) -> MiningData:
        """The read method of a hard-negative refresh (the training queries are loaded if they were not)."""
        self.setup_train()
        return MiningData(
            query_loader=self.query_dataloader(self.train_queries),
            corpus_loader=self.corpus_dataloader(persistent=False),  # a loader per refresh
            queries=self.train_queries,
            positives=self.train_positives,
            corpus=self.corpus,
        )

    def hard_negatives_per_query(self) -> int:
        """Hard negatives each training query gets from the active negatives (0 without a negatives file)."""
        source = self.active_negatives if self.registry is not None else self.hparams.negatives_file
        return self.strategy.total if source is not None else 0

    def eval_split(self, name: str) -> EvalSplit:
        """Queries and qrels of ``dev`` or ``test`` (loaded once, checked against the corpus)."""
        if name not in self.splits:
            self.splits[name] = read_eval_split(self.data_dir, name, self.corpus)
        return self.splits[name]

    # ------------------------------------------------------------ dataloaders
    def _require_processor(self) -> Any:
        if self.processor is None:
            raise RuntimeError(
                "WebQADataModule has no processor: pass processor=encoder.processor or call "
                "set_processor(encoder.processor) (the CLI links model.encoder.processor to it)"
            )
        return self.processor

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, sampler, collate, length: int, persistent: bool = True, train: bool = False) -> DataLoader:
        """A loader whose sampler yields items and whose collator (in the workers) does the loading."""
        workers = self.hparams.num_workers
        return DataLoader(
            IndexDataset(length),
            batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            drop_last=train,
        )

    def train_sampler(self) -> TrainSampleSampler:
        world, rank = self._world()
        is_image = np.asarray([bool(q.image_positives) for q in self.train_queries])
        return TrainSampleSampler(
            self.train_positives,
            is_image,
            self.registry,
            self.strategy,
            batch_size=self.hparams.batch_size,
            num_replicas=world,
            rank=rank,
            seed=self.hparams.seed,
            composition=self.hparams.batch_composition,
        )

    def train_dataloader(self) -> DataLoader:
        if self.hparams.train_task == "image_caption":
            return self.pair_dataloader()
        sampler = self.train_sampler()
        sampler.skip_batches, self._skip_batches = self._skip_batches, 0
        docs = DocumentLoader(self.corpus, self.images, self._require_processor())
        queries = QueryCollator(
            self.processor, [q.text for q in self.train_queries], [q.qid for q in self.train_queries]
        )
        collate = TrainCollator(docs, queries, self.train_positives)
        return self._loader(sampler, collate, len(self.train_queries), train=True)

    def pair_dataloader(self) -> DataLoader:
        """The corpus' image docs as picture-caption pairs, reshuffled each epoch (``train_task: image_caption``)."""
        image_docs = np.flatnonzero(self.corpus.is_image)
        if image_docs.size < 2:
            raise InputError(f"{self.data_dir}: image-caption training needs image docs, found {image_docs.size}")
        world, rank = self._world()
        sampler = DistributedSampler(
            IndexDataset(image_docs.size), world, rank, shuffle=True, seed=self.hparams.seed, drop_last=True
        )
        docs = DocumentLoader(self.corpus, self.images, self._require_processor())
        return self._loader(sampler, PairCollator(docs, image_docs), image_docs.size, train=True)

    def query_dataloader(self, queries: list[Query]) -> DataLoader:
        """This rank's shard of ``queries`` in encoding batches."""
        world, rank = self._world()
        sampler = ContiguousShardSampler(len(queries), world, rank)
        collate = QueryCollator(self._require_processor(), [q.text for q in queries], [q.qid for q in queries])
        return self._loader(sampler, collate, len(queries), persistent=False)

    def corpus_dataloader(self, persistent: bool = True) -> DataLoader:
        """This rank's shard of the whole mixed corpus in encoding batches (``persistent``: keep its workers alive)."""
        world, rank = self._world()
        docs = DocumentLoader(self.corpus, self.images, self._require_processor())
        sampler = ContiguousShardSampler(len(self.corpus), world, rank)
        return self._loader(sampler, CorpusCollator(docs), len(self.corpus), persistent=persistent)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.query_dataloader(self.eval_split("dev").queries), self.corpus_dataloader()]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.query_dataloader(self.eval_split("test").queries), self.corpus_dataloader()]

    def predict_dataloader(self) -> DataLoader:
        return self.corpus_dataloader()

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The active negatives (file and version) and, inside ``fit``, the batches already drawn this epoch.

        The position is recorded whether the checkpoint is written from the training loop or from the
        in-fit validation loop (where the recipes' ``ModelCheckpoint(monitor="val/MRR@10")`` writes), so a
        mid-epoch checkpoint resumes after the batches it saw. Draws are seeded by the negatives version,
        so it is saved too.
        """
        trainer = getattr(self, "trainer", None)
        state = {"active_negatives": self.active_negatives, "negatives_version": self._negatives_version()}
        if trainer is not None and trainer.state.fn == "fit":
            progress = trainer.fit_loop.epoch_loop.batch_progress
            state["batches_into_epoch"] = 0 if progress.is_last_batch else int(progress.current.processed)
        return state

    def _negatives_version(self) -> int:
        return self.registry.version if self.registry is not None else self._restored_version

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_negatives = state_dict.get("active_negatives")
        self._restored_version = int(state_dict.get("negatives_version", 0))
        self._skip_batches = int(state_dict.get("batches_into_epoch", 0))
        if self.registry is not None:
            if self._restored_negatives != self.registry.source:
                self.registry.activate(self.load_negatives(self._restored_negatives), self._restored_negatives)
            self.registry.restore(self._restored_version)
