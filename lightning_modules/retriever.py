"""The universal retriever as a LightningModule: contrastive training and full-corpus evaluation."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from datamodules.batches import DocBatch, PairBatch, QueryBatch, TrainBatch
from lightning_modules.checkpoint_config import ARCHITECTURE_KEY
from lightning_modules.corpus_search import EncodedShard, count_rows, gather_queries, search_shards
from lightning_modules.encoders.base import RetrievalEncoder
from lightning_modules.image_caption_loss import ImageCaptionContrastiveLoss
from lightning_modules.in_batch_metrics import InBatchRetrievalMetrics
from lightning_modules.loss import ContrastiveLossOutput, ContrastiveRetrievalLoss
from lightning_modules.optim import build_param_groups, cosine_schedule_with_warmup
from lightning_modules.weights_fit import describe_model, load_fitting_state_dict
from retrieval.errors import InputError
from retrieval.index import IndexConfig
from retrieval.report import SearchResult, evaluate_runs, score_runs

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """One finished evaluation: the split, the step it is labelled with, the metrics (every rank) and, on rank 0,
    the scored runs (``all``, and ``text``/``image`` with ``eval_subsets``) for the evaluation writer callback."""

    split: str
    step: int
    metrics: dict[str, float]
    runs: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.split}-step{self.step}"


@dataclass
class _EvalParts:
    """Vectors collected during an evaluation epoch, by batch type."""

    queries: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    docs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class UniversalRetriever(L.LightningModule):
    """Trains a :class:`RetrievalEncoder` with the contrastive loss; evaluates on the full mixed corpus.

    Args:
        encoder: the model family (``CLIPEncoder`` by default; any ``RetrievalEncoder``).
        loss: negative sources of the contrastive loss (in-batch / hard / cross-device), or the symmetric
            image-caption loss of plugin pretraining (``ImageCaptionContrastiveLoss``, trains on ``PairBatch``).
        temperature: tau; the score is cos / tau.
        learnable_temperature: learn log(1/tau) like CLIP's ``logit_scale`` (clamped after each optimizer step).
        max_logit_scale: upper bound of a learnable 1/tau.
        lr, weight_decay, betas, eps: AdamW (no decay on biases, norms and the temperature).
        warmup_steps: linear warmup before the cosine decay; ``schedule='constant'`` keeps lr flat after it.
        eval_top_k: depth of the evaluation search (100 for Recall@100).
        eval_subsets: also search text-only and image-only corpora (paper Table 2 views).
        index: how the corpus is searched, in evaluation and by the mining callback (``Flat`` = exact).

    Evaluation reads its qrels and corpus ids through the datamodule's one read method ``evaluation_data(split)``;
    the callback ``callbacks.EvaluationWriter`` writes ``run.trec`` and ``metrics.json`` from :attr:`last_evaluation`.
    """

    def __init__(
        self,
        encoder: RetrievalEncoder,
        loss: ContrastiveRetrievalLoss | ImageCaptionContrastiveLoss | None = None,
        temperature: float = 0.01,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        lr: float = 5e-6,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        eval_top_k: int = 100,
        eval_subsets: bool = True,
        index: IndexConfig = IndexConfig(),
    ) -> None:
        super().__init__()
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'constant'")
        if not 0 < temperature:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if learnable_temperature and 1.0 / temperature > max_logit_scale * (1 + 1e-6):
            raise ValueError(
                f"temperature {temperature} is below 1/max_logit_scale = {1.0 / max_logit_scale}; "
                "raise model.temperature or model.max_logit_scale"
            )
        index.check(encoder.embedding_dim)  # reject a bad factory now, not at the first evaluation
        self.save_hyperparameters(ignore=["encoder", "loss", "index"])
        self.hparams["index"] = asdict(index)
        self.index = index
        self.in_batch_metrics = InBatchRetrievalMetrics(prefix="train/")
        self.encoder = encoder
        self.loss = loss if loss is not None else ContrastiveRetrievalLoss()
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self._eval_parts = _EvalParts()
        self._checkpoint_step = 0  # global step of the checkpoint an evaluation outside fit was restored from
        self.last_evaluation: Evaluation | None = None

    # ----------------------------------------------------------------- encoding
    def logit_scale(self) -> torch.Tensor:
        """1 / tau. A learnable one is kept within ``[1, max_logit_scale]`` by :meth:`optimizer_step`.

        No clamp here: a clamp in the forward pass has zero gradient at the bound, and the recipes start
        exactly there (tau = 0.01, bound 100; exp(log 100) > 100 in fp32).
        """
        return self.log_logit_scale.exp()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the learnable temperature clamped to ``[0, log max_logit_scale]`` (open_clip)."""
        super().optimizer_step(*args, **kwargs)
        if isinstance(self.log_logit_scale, nn.Parameter):
            with torch.no_grad():
                self.log_logit_scale.clamp_(0.0, math.log(self.hparams.max_logit_scale))

    def encode_docs(self, docs: DocBatch) -> torch.Tensor:
        """Vectors of a doc batch in its order (``docs.index``)."""
        is_image = docs.is_image
        parts, positions = [], []
        if docs.text_tokens is not None:
            parts.append(self.encoder.encode_texts(docs.text_tokens))
            positions.append(torch.nonzero(~is_image).squeeze(1))
        if docs.caption_tokens is not None:
            parts.append(self.encoder.encode_images(docs.image_pixels, docs.caption_tokens, docs.image_valid))
            positions.append(torch.nonzero(is_image).squeeze(1))
        vectors = torch.cat(parts)
        order = torch.argsort(torch.cat(positions))
        return vectors[order]

    # ----------------------------------------------------------------- training
    def compute_loss(self, batch: TrainBatch | PairBatch) -> ContrastiveLossOutput:
        """The contrastive loss of one training batch."""
        if isinstance(batch, PairBatch):
            return self._require_loss(ImageCaptionContrastiveLoss, batch)(
                images=self.encoder.encode_pixels(batch.pixels),
                captions=self.encoder.encode_texts(batch.caption_tokens),
                caption_groups=batch.caption_groups,
                image_valid=batch.image_valid,
                logit_scale=self.logit_scale(),
            )
        loss = self._require_loss(ContrastiveRetrievalLoss, batch)
        out = loss(  # in fp32 with autocast off, whatever the precision of the towers
            queries=self.encoder.encode_queries(batch.queries.tokens),
            docs=self.encode_docs(batch.docs),
            doc_ids=batch.docs.index,
            doc_is_image=batch.docs.is_image,
            positive=batch.positive,
            hard_negatives=batch.hard_negatives,
            query_positive_ids=batch.positive_index,
            logit_scale=self.logit_scale(),
        )
        if not batch.has_images:  # the vision tower took no part: keep DDP's reducer whole
            out.loss = out.loss + 0.0 * sum(p.sum() for p in self.encoder.parameters() if p.requires_grad)
        return out

    def _require_loss(self, kind: type[nn.Module], batch: TrainBatch | PairBatch) -> nn.Module:
        """The loss, if it is of the kind ``batch`` needs; else an InputError (the data's train_task and the loss
        disagree, which the CLI's link rules out)."""
        if not isinstance(self.loss, kind):
            raise InputError(
                f"model.loss is {type(self.loss).__name__} but the batch is a {type(batch).__name__}; set "
                f"data.train_task to {self.loss.train_task!r} (the CLI links it from the loss)"
            )
        return self.loss

    def training_step(self, batch: TrainBatch | PairBatch, batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        self._stop_on_non_finite(out.loss, batch, batch_idx)
        size = len(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        self.log_dict(
            {
                "train/loss_alignment": out.alignment,
                "train/loss_image_negatives": out.image_negatives,
                "train/loss_text_negatives": out.text_negatives,
                "train/negatives_per_query": out.candidates_per_query,
                "train/logit_scale": self.logit_scale().detach(),
            },
            batch_size=size,
        )
        if isinstance(batch, TrainBatch):
            self.log_dict(
                {
                    "train/negatives_version": batch.negatives_version.max().float(),
                    "train/skipped_images": batch.docs.skipped_images,
                },
                batch_size=size,
            )
        else:
            self.log("train/skipped_images", batch.skipped_images, batch_size=size)
        if self._logs_this_step():  # torchmetrics groups query by query: only on the steps the logger records
            self.log_dict(self.in_batch_metrics(out), batch_size=size)  # per rank: modalities differ across ranks
        return out.loss

    def _logs_this_step(self) -> bool:
        """Whether the loggers record this step (Lightning's own rule, ``trainer.log_every_n_steps``)."""
        trainer = self._trainer
        return trainer is None or bool(trainer._logger_connector.should_update_logs)

    def _stop_on_non_finite(self, loss: torch.Tensor, batch: TrainBatch | PairBatch, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss))
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            what, ids = ("queries", batch.queries.ids) if isinstance(batch, TrainBatch) else ("images", batch.ids)
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at global step {self.global_step}, batch {batch_idx} ({what} "
                f"{ids[:8]}); "
                "lower model.lr, check the data, or use precision 32"
            )

    def on_train_start(self) -> None:
        """Give the optimizer and schedule this run's settings.

        A resumed fit restores the optimizer's and scheduler's state from the checkpoint, learning rate and
        AdamW settings included; the configuration's values win (the CLI prints those that differ).
        """
        hp = self.hparams
        optimizer, scheduler = self.optimizers(use_pl_optimizer=False), self.lr_schedulers()
        scheduler.base_lrs = [hp.lr] * len(optimizer.param_groups)
        for group, multiplier in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group.update(
                initial_lr=hp.lr, lr=hp.lr * multiplier(scheduler.last_epoch), betas=tuple(hp.betas), eps=hp.eps
            )
            if group.get("name") == "decay":
                group["weight_decay"] = hp.weight_decay

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ARCHITECTURE_KEY] = self.encoder.architecture()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict``, but weights of another architecture are one InputError line."""
        model = describe_model(type(self).__name__, self.encoder.architecture())
        return load_fitting_state_dict(
            self,
            super().load_state_dict,
            state_dict,
            strict,
            model,
            getattr(self._trainer, "ckpt_path", None),
            **kwargs,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            build_param_groups(self, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total)
        if hp.schedule == "cosine":
            scheduler = cosine_schedule_with_warmup(optimizer, warmup, total, hp.min_lr_ratio)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / warmup) if warmup else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Remember the checkpoint's step: an evaluation outside ``fit`` is labelled with it."""
        self._checkpoint_step = int(checkpoint.get("global_step", 0))

    # --------------------------------------------------------------- evaluation
    def embed_batch(self, batch: QueryBatch | DocBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, fp16 CPU vectors) of a query batch (positions in its split) or a doc batch (corpus indices)."""
        if isinstance(batch, DocBatch):
            return batch.index.cpu(), self.encode_docs(batch).half().cpu()
        if isinstance(batch, QueryBatch):
            return batch.index.cpu(), self.encoder.encode_queries(batch.tokens).half().cpu()
        raise TypeError(f"embed_batch takes a QueryBatch or a DocBatch, got {type(batch).__name__}")

    def validation_step(self, batch: QueryBatch | DocBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, "val")

    def test_step(self, batch: QueryBatch | DocBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, "test")

    def _collect(self, batch: QueryBatch | DocBatch, stage: str) -> None:
        part = self.embed_batch(batch)
        if isinstance(batch, QueryBatch):
            self._eval_parts.queries.append(part)
            return
        self._eval_parts.docs.append(part)  # images skipped as undecodable (data.skip_bad_images), summed over ranks
        self.log(
            f"{stage}/skipped_images",
            batch.skipped_images,
            reduce_fx="sum",
            sync_dist=True,
            add_dataloader_idx=False,
            batch_size=1,
        )

    def predict_step(
        self, batch: DocBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_batch(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("dev", "val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test", "test")

    def evaluation_step(self) -> int:
        """The step an evaluation is labelled with: the fit's step, or the evaluated checkpoint's."""
        return self.global_step if self.trainer.state.fn == "fit" else self._checkpoint_step

    def _search(self, queries: torch.Tensor, docs: EncodedShard, keep: Any = None) -> SearchResult:
        return search_shards(queries, docs, self.hparams.eval_top_k, keep=keep, index=self.index, device=self.device)

    def _finish_evaluation(self, split_name: str, stage: str) -> None:
        parts, self._eval_parts = self._eval_parts, _EvalParts()
        if self.trainer.sanity_checking:
            return
        data = self.trainer.datamodule.evaluation_data(split_name)
        dim = self.encoder.embedding_dim
        rows, queries = gather_queries(EncodedShard.concat(parts.queries, dim))
        docs = EncodedShard.concat(parts.docs, dim)
        coverage = {"queries_evaluated": len(rows), "docs_indexed": count_rows(docs)}
        self._warn_if_partial(split_name, len(data.query_ids), len(data.doc_ids), **coverage)
        step = self.evaluation_step()
        rank_zero_info(
            f"{split_name}-step{step}: top-{self.hparams.eval_top_k} search of {len(rows)} queries over "
            f"{coverage['docs_indexed']} docs with index {self.index.factory!r} on {self.device}"
        )
        results = {"all": self._search(queries, docs)}
        if self.hparams.eval_subsets:
            results["text"] = self._search(queries, docs, keep=~data.doc_is_image)
            results["image"] = self._search(queries, docs, keep=data.doc_is_image)
        metrics, runs = None, {}
        if self.trainer.is_global_zero:
            qids = [data.query_ids[i] for i in rows]
            runs = score_runs(results, qids, data.doc_ids)
            qrels = {qid: data.qrels[qid] for qid in qids if qid in data.qrels}
            metrics = evaluate_runs(runs, qrels, data.doc_ids, data.doc_is_image)
        metrics = self.trainer.strategy.broadcast(metrics, src=0)
        self.last_evaluation = Evaluation(split_name, step, metrics, runs)
        logged = {**metrics, **coverage}
        self.log_dict({f"{stage}/{name}": float(value) for name, value in logged.items()}, sync_dist=False)

    def _warn_if_partial(
        self, split_name: str, n_queries: int, n_docs: int, queries_evaluated: int, docs_indexed: int
    ) -> None:
        """Say when the evaluation loaders were cut short (``limit_val_batches`` / ``limit_test_batches`` < 1)."""
        if (queries_evaluated, docs_indexed) != (n_queries, n_docs):
            rank_zero_warn(
                f"evaluated {queries_evaluated} of {n_queries} {split_name} queries against {docs_indexed} of {n_docs} "
                "docs (the trainer's limit_*_batches cut the loaders); the metrics cover only those"
            )
