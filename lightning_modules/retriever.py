"""The universal retriever as a LightningModule: contrastive training and full-corpus evaluation."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
import torch
from torch import nn

from lightning_modules.checkpoint_config import ARCHITECTURE_KEY
from lightning_modules.corpus_search import EncodedShard, count_rows, gather_queries, search_shards
from lightning_modules.encoders.base import RetrievalEncoder
from lightning_modules.loss import ContrastiveLossOutput, ContrastiveRetrievalLoss
from lightning_modules.optim import build_param_groups, cosine_schedule_with_warmup
from lightning_modules.weights_fit import describe_model, load_fitting_state_dict
from retrieval.errors import InputError
from retrieval.index import check_index_factory
from retrieval.report import evaluate_and_write

log = logging.getLogger(__name__)

QUERIES, CORPUS = 0, 1  # dataloader indices of the evaluation loaders


class UniversalRetriever(L.LightningModule):
    """Trains a :class:`RetrievalEncoder` with the contrastive loss; evaluates on the full mixed corpus.

    Args:
        encoder: the model family (``CLIPEncoder`` by default; any ``RetrievalEncoder``).
        loss: negative sources of the contrastive loss (in-batch / hard / cross-device).
        temperature: tau; the score is cos / tau.
        learnable_temperature: learn log(1/tau) like CLIP's ``logit_scale`` (clamped after each optimizer step).
        max_logit_scale: upper bound of a learnable 1/tau.
        lr, weight_decay, betas, eps: AdamW (no decay on biases, norms and the temperature).
        warmup_steps: linear warmup before the cosine decay; ``schedule='constant'`` keeps lr flat after it.
        eval_top_k: depth of the evaluation search (100 for Recall@100).
        eval_subsets: also search text-only and image-only corpora (paper Table 2 views).
        index_factory: FAISS index factory for evaluation search (``Flat`` = exact).
    """

    def __init__(
        self,
        encoder: RetrievalEncoder,
        loss: ContrastiveRetrievalLoss | None = None,
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
        index_factory: str = "Flat",
    ) -> None:
        super().__init__()
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'constant'")
        if not 0 < temperature:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if learnable_temperature and 1.0 / temperature > max_logit_scale * (1 + 1e-6):
            raise ValueError(f"temperature {temperature} is below 1/max_logit_scale = {1.0 / max_logit_scale}; "
                             "raise model.temperature or model.max_logit_scale")
        check_index_factory(index_factory, encoder.embedding_dim)  # reject a bad factory now, not at the first evaluation
        self.save_hyperparameters(ignore=["encoder", "loss"])
        self.encoder = encoder
        self.loss = loss if loss is not None else ContrastiveRetrievalLoss()
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self._eval_parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {QUERIES: [], CORPUS: []}

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

    def encode_docs(self, docs: dict[str, Any]) -> torch.Tensor:
        """Vectors of a doc batch (see ``datamodules.batching``) in the order of ``docs['ids']``."""
        is_image = docs["is_image"]
        parts, positions = [], []
        if docs["text_tokens"] is not None:
            parts.append(self.encoder.encode_texts(docs["text_tokens"]))
            positions.append(torch.nonzero(~is_image).squeeze(1))
        if docs["caption_tokens"] is not None:
            parts.append(self.encoder.encode_images(docs["image_pixels"], docs["caption_tokens"], docs["image_valid"]))
            positions.append(torch.nonzero(is_image).squeeze(1))
        vectors = torch.cat(parts)
        order = torch.argsort(torch.cat(positions))
        return vectors[order]

    # ----------------------------------------------------------------- training
    def compute_loss(self, batch: dict[str, Any]) -> ContrastiveLossOutput:
        """The contrastive loss of one training batch."""
        queries = self.encoder.encode_queries(batch["query_tokens"])
        docs = self.encode_docs(batch["docs"])
        out = self.loss(  # in fp32 with autocast off, whatever the precision of the towers
            queries,
            docs,
            batch["docs"]["ids"],
            batch["docs"]["is_image"],
            batch["positive"],
            batch["hard_negatives"],
            batch["query_positive_ids"],
            self.logit_scale(),
        )
        if batch["docs"]["caption_tokens"] is None:  # the vision tower took no part: keep DDP's reducer whole
            out.loss = out.loss + 0.0 * sum(p.sum() for p in self.encoder.parameters() if p.requires_grad)
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        self._stop_on_non_finite(out.loss, batch, batch_idx)
        size = batch["positive"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        self.log_dict(
            {
                "train/loss_alignment": out.alignment,
                "train/loss_image_negatives": out.image_negatives,
                "train/loss_text_negatives": out.text_negatives,
                "train/negatives_per_query": out.candidates_per_query,
                "train/logit_scale": self.logit_scale().detach(),
                "train/negatives_version": batch["negatives_version"].max().float(),
                "train/skipped_images": (~batch["docs"]["image_valid"]).sum().float(),
            },
            batch_size=size,
        )
        return out.loss

    def _stop_on_non_finite(self, loss: torch.Tensor, batch: dict[str, Any], batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss))
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            rows = batch["query_index"].tolist()
            dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            qids = [dm.train_queries[i].qid for i in rows] if dm is not None and getattr(dm, "train_queries", None) else rows
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at global step {self.global_step}, batch {batch_idx} (queries {qids[:8]}); "
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
            group.update(initial_lr=hp.lr, lr=hp.lr * multiplier(scheduler.last_epoch), betas=tuple(hp.betas), eps=hp.eps)
            if group.get("name") == "decay":
                group["weight_decay"] = hp.weight_decay

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ARCHITECTURE_KEY] = self.encoder.architecture()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict``, but weights of another architecture are one InputError line."""
        model = describe_model(type(self).__name__, self.encoder.architecture())
        return load_fitting_state_dict(self, super().load_state_dict, state_dict, strict, model,
                                       getattr(self._trainer, "ckpt_path", None), **kwargs)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(build_param_groups(self, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total)
        if hp.schedule == "cosine":
            scheduler = cosine_schedule_with_warmup(optimizer, warmup, total, hp.min_lr_ratio)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / warmup) if warmup else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_processor"):
            datamodule.set_processor(self.encoder.processor)
        if stage == "fit" and datamodule is not None:
            self._check_negatives_exist(datamodule)

    def _check_negatives_exist(self, datamodule: Any) -> None:
        """Refuse a configuration whose batches would hold no negative at all."""
        loss, world = self.loss, self.trainer.world_size
        batch = datamodule.hparams.batch_size * (world if loss.cross_device else 1)
        hard_per_query = datamodule.strategy.total if datamodule.active_negatives is not None else 0
        mines_at_start = any(getattr(cb, "at_fit_start", False) for cb in self.trainer.callbacks)
        has_in_batch = loss.in_batch and batch > 1
        has_hard = (loss.hard_negatives or loss.share_hard_negatives) and (hard_per_query > 0 or mines_at_start)
        if not (has_in_batch or has_hard):
            raise InputError(
                f"no negatives: loss(in_batch={loss.in_batch}, hard_negatives={loss.hard_negatives}) with batch {batch} and "
                f"{hard_per_query} hard negatives per query (negatives_file={datamodule.active_negatives}, strategy={datamodule.strategy.name}); "
                "raise data.batch_size, enable model.loss.init_args.in_batch, or give data.negatives_file with a strategy other than none"
            )

    # --------------------------------------------------------------- evaluation
    def embed_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, fp16 CPU vectors) of a query batch or a corpus batch."""
        if "docs" in batch:
            return batch["docs"]["ids"].cpu(), self.encode_docs(batch["docs"]).half().cpu()
        return batch["query_index"].cpu(), self.encoder.encode_queries(batch["query_tokens"]).half().cpu()

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx, "test")

    def _collect(self, batch: dict[str, Any], dataloader_idx: int, stage: str) -> None:
        self._eval_parts[dataloader_idx].append(self.embed_batch(batch))
        if dataloader_idx == CORPUS:  # images skipped as undecodable (data.skip_bad_images), summed over ranks
            skipped = (~batch["docs"]["image_valid"]).sum().float()
            self.log(f"{stage}/skipped_images", skipped, reduce_fx="sum", sync_dist=True, add_dataloader_idx=False, batch_size=1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_batch(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("dev", "val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test", "test")

    def _finish_evaluation(self, split_name: str, stage: str) -> None:
        dm = self.trainer.datamodule
        parts, self._eval_parts = self._eval_parts, {QUERIES: [], CORPUS: []}
        if self.trainer.sanity_checking:
            return
        split, corpus = dm.eval_split(split_name), dm.corpus
        dim = self.encoder.embedding_dim
        rows, queries = gather_queries(EncodedShard.concat(parts[QUERIES], dim))
        docs = EncodedShard.concat(parts[CORPUS], dim)
        coverage = {"queries_evaluated": len(rows), "docs_indexed": count_rows(docs)}
        self._warn_if_partial(split_name, len(split.queries), len(corpus), **coverage)
        k, factory = self.hparams.eval_top_k, self.hparams.index_factory
        rank_zero_info(f"{split_name}-step{self.global_step}: top-{k} search of {len(rows)} queries over "
                       f"{coverage['docs_indexed']} docs with index {factory!r} on {self.device}")
        runs = {"all": search_shards(queries, docs, k, factory=factory, device=self.device)}
        if self.hparams.eval_subsets:
            runs["text"] = search_shards(queries, docs, k, keep=~corpus.is_image, factory=factory, device=self.device)
            runs["image"] = search_shards(queries, docs, k, keep=corpus.is_image, factory=factory, device=self.device)
        metrics = None
        out_dir = self.run_dir() / "eval" / f"{split_name}-step{self.global_step:07d}"  # a collective: all ranks
        if self.trainer.is_global_zero:
            qids = [split.queries[i].qid for i in rows]
            qrels = {qid: split.qrels[qid] for qid in qids if qid in split.qrels}
            metrics = evaluate_and_write(runs, qids, qrels, corpus.doc_ids, corpus.is_image, out_dir,
                                         tag=f"{split_name}-step{self.global_step}")
        metrics = {**self.trainer.strategy.broadcast(metrics, src=0), **coverage}
        self.log_dict({f"{stage}/{name}": float(value) for name, value in metrics.items()}, sync_dist=False)

    def _warn_if_partial(self, split_name: str, n_queries: int, n_docs: int, queries_evaluated: int,
                         docs_indexed: int) -> None:
        """Say when the evaluation loaders were cut short (``limit_val_batches`` / ``limit_test_batches`` < 1)."""
        if (queries_evaluated, docs_indexed) != (n_queries, n_docs):
            rank_zero_warn(
                f"evaluated {queries_evaluated} of {n_queries} {split_name} queries against {docs_indexed} of {n_docs} "
                "docs (the trainer's limit_*_batches cut the loaders); the metrics cover only those"
            )

    def run_dir(self) -> Path:
        """Where evaluation and mining outputs go: the logger's directory, else the trainer's root.

        ``trainer.log_dir`` broadcasts from rank 0 under DDP, so every rank must call this.
        """
        trainer = self.trainer
        return Path(trainer.log_dir or trainer.default_root_dir)
