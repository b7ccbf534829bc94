"""The image verbalizer as a LightningModule: zero-shot captions, or queries generated from pixels and caption.

Paper 4.3: ``V(I)`` is a generated caption (eq. 6, the captioner used as it is) or a generated query (eq. 7, a
captioner trained to produce an image's training queries from its pixels and its caption). The paper's VinVL fills
masked query tokens (MLM) after ``[CLS] q [SEP] C [SEP] regions``; with today's image-to-text models the same
conditioning is a decoder prefix: the decoder reads ``[CLS] C [SEP]`` (the caption, at most 30 tokens, padded to a
fixed length so that every prefix of a batch has one length), attends to the image through cross-attention, and
continues with the query (at most 40 tokens, then ``[SEP]``); the loss is the cross-entropy of the query tokens only.

``mode="caption"`` generates without a prefix (zero-shot captioning: BLIP, GIT, VisionEncoderDecoder); it is not
trained. ``mode="query"`` trains a ``VisionEncoderDecoderModel`` (a pretrained one by name, else the tiny twin from
configs). Validation generates for each dev image once (beam search, as ``verbalize`` does) and scores the text
against every dev query of that image: BLEU-4 (torchmetrics ``BLEUScore``, several references) and token F1
(torchmetrics ``SQuAD``, best reference).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torchmetrics.text import BLEUScore, SQuAD

from datamodules.verbalization_datamodule import VerbalizationBatch
from lightning_modules.captioner import (
    MAX_NEW_TOKENS,
    NUM_BEAMS,
    ImageToText,
    build_vision_encoder_decoder,
    load_image_to_text,
)
from lightning_modules.optim import build_param_groups, cosine_schedule_with_warmup
from retrieval.errors import InputError

#: Separator between a caption and its verbalization in an expanded caption file (paper eq. 8).
SEP = " [SEP] "


class ImageVerbalizer(L.LightningModule):
    """Generates ``V(I)`` for images; trains the query generator of paper eq. 7.

    Args:
        mode: ``query`` (conditioned on the caption, trainable) or ``caption`` (zero-shot, no prefix).
        pretrained: hub id or local folder of an image-to-text model (``Salesforce/blip-image-captioning-base``,
            ``microsoft/git-base``, a ``VisionEncoderDecoderModel``); None: the tiny twin, randomly initialised.
        image_size: picture side of the tiny twin (ignored with ``pretrained``).
        caption_length: caption tokens in the prefix (paper A.3: 30).
        query_length: query tokens trained on (paper A.3: 40).
        num_beams: beam size of generation (paper A.3: 5).
        max_new_tokens: generated tokens at most (paper A.3: 20).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup_steps: linear warm-up steps before the cosine decay.
        seed: seed of the tiny twin's initial weights.
    """

    def __init__(
        self,
        mode: Literal["query", "caption"] = "query",
        pretrained: str | None = None,
        image_size: int = 64,
        caption_length: int = 30,
        query_length: int = 40,
        num_beams: int = NUM_BEAMS,
        max_new_tokens: int = MAX_NEW_TOKENS,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("query", "caption"):
            raise InputError(f"model.mode {mode!r} is not one of 'query', 'caption'")
        self.save_hyperparameters()
        self.image_to_text: ImageToText = (
            load_image_to_text(pretrained) if pretrained else build_vision_encoder_decoder("tiny", image_size, seed)
        )
        self.model = self.image_to_text.model.train()  # registered, so that checkpoints hold its weights
        self.bleu = BLEUScore(n_gram=4, smooth=True)
        self.token_f1 = SQuAD()
        self.examples: list[tuple[str, str, str]] = []

    # ------------------------------------------------------------------ tokens
    @property
    def tokenizer(self) -> Any:
        return self.image_to_text.tokenizer

    def _special_ids(self) -> tuple[int, int, int]:
        """(start, separator, pad) ids: the decoder's start token, [SEP] (or end of text), [PAD]."""
        tok, generation = self.tokenizer, self.model.generation_config
        start = generation.decoder_start_token_id if self.image_to_text.is_encoder_decoder else None
        start = start if start is not None else (tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id)
        sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else sep
        return start, sep, pad

    def _tokens(self, texts: list[str], length: int) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=length)["input_ids"]

    def caption_prefix(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] C [PAD]... [SEP]`` rows of one length (``caption_length + 2``) and their attention mask."""
        start, sep, pad = self._special_ids()
        length = self.hparams.caption_length
        rows, masks = [], []
        for tokens in self._tokens(captions, length):
            padding = length - len(tokens)
            rows.append([start, *tokens, *[pad] * padding, sep])
            masks.append([1] * (1 + len(tokens)) + [0] * padding + [1])
        return torch.tensor(rows, device=self.device), torch.tensor(masks, device=self.device)

    def training_sequences(self, batch: VerbalizationBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoder ids, attention mask, target mask) of ``prefix + query + [SEP]``, right-padded; the target mask
        marks the positions of ``ids[:, 1:]`` the loss reads (the query and its closing [SEP])."""
        _, sep, pad = self._special_ids()
        prefix, prefix_mask = self.caption_prefix(batch.captions)
        queries = self._tokens([refs[0] for refs in batch.references], self.hparams.query_length)
        width = max(len(q) for q in queries) + 1
        tails = torch.full((len(queries), width), pad, device=self.device)
        tail_mask = torch.zeros_like(tails)
        for row, tokens in enumerate(queries):
            tails[row, : len(tokens) + 1] = torch.tensor([*tokens, sep], device=self.device)
            tail_mask[row, : len(tokens) + 1] = 1
        ids = torch.cat([prefix, tails], dim=1)
        mask = torch.cat([prefix_mask, tail_mask], dim=1)
        targets = torch.cat([torch.zeros_like(prefix_mask), tail_mask], dim=1)[:, 1:].bool()
        return ids, mask, targets

    # ---------------------------------------------------------------- training
    def training_step(self, batch: VerbalizationBatch, batch_idx: int) -> torch.Tensor:
        if self.hparams.mode != "query":
            raise InputError("model.mode caption is zero-shot (nothing to train); train with model.mode query")
        if not self.image_to_text.is_encoder_decoder:
            raise InputError(
                f"training the query generator needs a VisionEncoderDecoderModel; {self.hparams.pretrained!r} is "
                f"{type(self.model).__name__} (use it zero-shot with model.mode caption)"
            )
        kept = [i for i, image in enumerate(batch.images) if image is not None]
        batch = VerbalizationBatch(*[[column[i] for i in kept] for column in vars(batch).values()])
        ids, mask, targets = self.training_sequences(batch)
        pixels = self.image_to_text.pixel_values(batch.images).to(self.device)
        logits = self.model(pixel_values=pixels, decoder_input_ids=ids, decoder_attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1][targets], ids[:, 1:][targets])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(build_param_groups(self, self.hparams.weight_decay), lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = cosine_schedule_with_warmup(optimizer, min(self.hparams.warmup_steps, total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -------------------------------------------------------------- generation
    def generate(self, batch: VerbalizationBatch) -> list[str | None]:
        """``V(I)`` for each image of the batch; None for an undecodable picture."""
        kept = [i for i, image in enumerate(batch.images) if image is not None]
        texts: list[str | None] = [None] * len(batch)
        if not kept:
            return texts
        prefix = mask = None
        if self.hparams.mode == "query":
            prefix, mask = self.caption_prefix([batch.captions[i] for i in kept])
        generated = self.image_to_text.verbalize(
            [batch.images[i] for i in kept], prefix, mask, self.hparams.num_beams, self.hparams.max_new_tokens
        )
        for i, text in zip(kept, generated, strict=True):
            texts[i] = text
        return texts

    def predict_step(self, batch: VerbalizationBatch, batch_idx: int) -> tuple[list[str], list[str | None]]:
        return batch.image_ids, self.generate(batch)

    def validation_step(self, batch: VerbalizationBatch, batch_idx: int) -> None:
        texts = self.generate(batch)
        pairs = [(t, refs, i) for t, refs, i in zip(texts, batch.references, batch.image_ids, strict=True) if t]
        if not pairs:
            return
        self.bleu.update([t for t, _, _ in pairs], [refs for _, refs, _ in pairs])
        self.token_f1.update(
            [{"prediction_text": t, "id": i} for t, _, i in pairs],
            [{"answers": {"text": refs, "answer_start": [0] * len(refs)}, "id": i} for _, refs, i in pairs],
        )
        if batch_idx == 0:
            self.examples = [(batch.captions[0], texts[0] or "", batch.references[0][0])]

    def on_validation_epoch_end(self) -> None:
        bleu = self.bleu.compute() * 100
        f1 = self.token_f1.compute()["f1"]
        self.log_dict({"val/BLEU": bleu, "val/token_F1": f1}, prog_bar=True, sync_dist=True)
        self.bleu.reset()
        self.token_f1.reset()
        for caption, generated, reference in self.examples:
            rank_zero_info(f"example: caption {caption!r} -> generated {generated!r} (a reference: {reference!r})")
