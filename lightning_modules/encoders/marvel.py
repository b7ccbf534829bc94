"""MARVEL's encoder (OpenMatch/MARVEL, ``ANCE/multi_model.py``): a pretrained text retriever reads images through a
visual plugin.

An image doc is tokenized as ``"<im_start> " + "<im_patch>" * P + "<im_end> caption: " + caption``; the P patch
states of a CLIP vision model (``last_hidden_state[:, 1:]``, CLS dropped) pass through a Linear projector and replace
the input embeddings at the ``<im_patch>`` positions. Text docs and queries are their text alone. The embedding is
the first decoder state of an encoder-decoder language model fed ``decoder_input_ids = 0`` (T5-ANCE), or the CLS
state or mean of the token states of an encoder (BERT, MiniLM), L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from lightning_modules.encoders.base import Processor, RetrievalEncoder, TextBatch
from lightning_modules.encoders.checkpoints import ENCODER_PREFIX, read_module_state
from lightning_modules.hf_assets import load_model, load_tokenizer
from lightning_modules.weights_fit import load_fitting_state_dict
from retrieval.errors import InputError

IMAGE_PATCH = "<im_patch>"
IMAGE_START = "<im_start>"
IMAGE_END = "<im_end>"
#: The three added special tokens, in MARVEL's order.
SPECIAL_TOKENS = (IMAGE_PATCH, IMAGE_START, IMAGE_END)
#: CLIP's pixel normalisation (``CLIPImageProcessor``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POOLINGS = ("auto", "first_decoder_state", "cls", "mean")
#: The vision model's layer norm of its pooled CLS output, which MARVEL does not use.
UNUSED_VISION_PART = "post_layernorm"
#: Submodules that ``freeze`` may name.
PARTS = ("language_model", "vision_model", "projector")


def image_doc_template(caption: str, num_patches: int) -> str:
    """MARVEL's text of an image doc: start token, ``num_patches`` patch tokens, end token, then the caption."""
    return f"{IMAGE_START} {IMAGE_PATCH * num_patches}{IMAGE_END} caption: {caption}"


class MarvelProcessor:
    """Tokenizer and CLIP image transform of :class:`MarvelEncoder`; picklable (it travels to DataLoader workers).

    ``tokenize`` gives queries and facts (at most ``text_length`` tokens); ``tokenize_captions`` gives image docs in
    MARVEL's template (at most ``num_patches + 2 + text_length`` tokens, so the patch tokens always fit).
    """

    def __init__(self, tokenizer, image_size: int, num_patches: int, text_length: int) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.num_patches = num_patches
        self.text_length = text_length
        self.image_shape = (3, image_size, image_size)
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(CLIP_MEAN, CLIP_STD),
            ]
        )

    def _encode(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        out = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def tokenize(self, texts: list[str]) -> TextBatch:
        return self._encode(texts, self.text_length)

    def tokenize_captions(self, captions: list[str]) -> TextBatch:
        templated = [image_doc_template(c, self.num_patches) for c in captions]
        # truncation cuts the caption's end: the patch tokens at the start always fit
        return self._encode(templated, self.num_patches + 2 + self.text_length)

    def image_transform(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)


class MarvelEncoder(RetrievalEncoder):
    """MARVEL: any Hugging Face text encoder as the language model, a CLIP vision model as the plugin.

    Args:
        language_model: hub id, local folder or built-in name (``tiny-t5``, ``tiny-bert``: random weights) of the
            language model, e.g. ``OpenMatch/t5-ance`` or ``sentence-transformers/all-MiniLM-L6-v2``.
        vision_model: hub id, local folder or built-in name (``tiny-clip-vision``) of a ``CLIPVisionModel``.
        tokenizer: the tokenizer (default: the language model's); the three special tokens are added to it and the
            language model's embeddings resized, as MARVEL does.
        pooling: ``first_decoder_state`` (T5-ANCE), ``cls`` or ``mean``; ``auto`` = the first for an
            encoder-decoder model, else ``cls``.
        text_length: token budget of queries and facts (an image doc gets ``num_patches + 2`` more).
        freeze: parts that receive no gradient (``language_model``, ``vision_model``, ``projector``); MARVEL
            freezes the language model in plugin pretraining and the vision model in DPR and ANCE.
        pretrained: a checkpoint of this project (a previous stage) whose encoder weights are loaded, strictly.
    """

    ARCHITECTURE_ARGS = ("language_model", "vision_model")

    def __init__(
        self,
        language_model: str = "OpenMatch/t5-ance",
        vision_model: str = "openai/clip-vit-base-patch32",
        tokenizer: str | None = None,
        pooling: str = "auto",
        text_length: int = 128,
        freeze: list[str] | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        unknown = sorted(set(freeze or ()) - set(PARTS))
        if unknown:
            raise InputError(f"cannot freeze {unknown}: model.encoder.init_args.freeze takes parts of {PARTS}")
        self.language_model = language_model
        self.vision_model = vision_model
        self.freeze = list(freeze or ())
        lm = load_model(language_model)
        vision = load_model(vision_model)
        if not all(hasattr(vision.config, key) for key in ("image_size", "patch_size", "hidden_size")):
            raise InputError(f"vision_model {vision_model!r} is a {type(vision).__name__}, not a CLIPVisionModel")
        tok = load_tokenizer(tokenizer or language_model)
        tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
        lm.resize_token_embeddings(len(tok))
        self.is_encoder_decoder = bool(getattr(lm.config, "is_encoder_decoder", False))
        self.pooling = ("first_decoder_state" if self.is_encoder_decoder else "cls") if pooling == "auto" else pooling
        if (self.pooling == "first_decoder_state") != self.is_encoder_decoder:
            kind = "an encoder-decoder" if self.is_encoder_decoder else "an encoder-only"
            raise InputError(
                f"pooling {self.pooling} does not fit {language_model!r}, {kind} model: encoder-decoder models are "
                "pooled by their first decoder state, encoders by cls or mean"
            )
        self.patch_token_id = int(tok.convert_tokens_to_ids(IMAGE_PATCH))
        config = vision.config
        self.num_patches = (config.image_size // config.patch_size) ** 2
        text_dim = lm.config.d_model if self.is_encoder_decoder else lm.config.hidden_size
        self.lm = lm
        self.vision = vision
        self.projector = nn.Linear(config.hidden_size, text_dim)
        self.embedding_dim = int(text_dim)
        self._processor = MarvelProcessor(tok, config.image_size, self.num_patches, text_length)
        if pretrained:
            self.load_checkpoint(pretrained)
        for name, param in self.vision.named_parameters():
            if UNUSED_VISION_PART in name:  # the patch states are taken before it: never a gradient (DDP needs this)
                param.requires_grad_(False)
        for part in self.freeze:
            self.part(part).requires_grad_(False)

    def part(self, name: str) -> nn.Module:
        """The submodule ``freeze`` calls ``name``."""
        return {"language_model": self.lm, "vision_model": self.vision, "projector": self.projector}[name]

    @property
    def processor(self) -> Processor:
        return self._processor

    # ----------------------------------------------------------------- encoding
    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, P, text_dim]: the projected patch states (CLS dropped) of the vision model."""
        states = self.vision(pixel_values=pixels).last_hidden_state[:, 1:, :]
        return self.projector(states)

    def _pool(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.is_encoder_decoder:
            start = torch.zeros(inputs_embeds.shape[0], 1, dtype=torch.long, device=inputs_embeds.device)
            out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=start)
            return out.last_hidden_state[:, 0]
        states = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        mask = (
            attention_mask.unsqueeze(-1).to(states.dtype)
            if attention_mask is not None
            else torch.ones_like(states[..., :1])
        )
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def _embed_tokens(self, tokens: TextBatch) -> torch.Tensor:
        return self.lm.get_input_embeddings()(tokens["input_ids"])

    def _encode_text(self, tokens: TextBatch) -> torch.Tensor:
        return F.normalize(self._pool(self._embed_tokens(tokens), tokens["attention_mask"]), dim=-1)

    def encode_queries(self, tokens: TextBatch) -> torch.Tensor:
        return self._encode_text(tokens)

    def encode_texts(self, tokens: TextBatch) -> torch.Tensor:
        return self._encode_text(tokens)

    def merge_patches(self, caption_tokens: TextBatch, patches: torch.Tensor) -> torch.Tensor:
        """Input embeddings of templated image docs with ``patches`` [N, P, D] at their ``<im_patch>`` positions."""
        ids = caption_tokens["input_ids"]
        is_patch = ids == self.patch_token_id
        counts = is_patch.sum(dim=1)
        if bool((counts != self.num_patches).any()):
            raise InputError(
                f"image doc tokens hold {counts.tolist()} {IMAGE_PATCH} tokens, expected {self.num_patches} each; "
                "tokenize image docs with the encoder's processor.tokenize_captions"
            )
        embeds = self._embed_tokens(caption_tokens)
        # row-major order: the k-th patch token of row n gets patch k of image n
        return embeds.masked_scatter(is_patch.unsqueeze(-1), patches.to(embeds.dtype))

    def encode_images(
        self, pixels: torch.Tensor, caption_tokens: TextBatch, image_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        patches = self.patch_embeddings(pixels)
        if image_valid is not None:  # an undecodable image (skipped) contributes nothing but its caption
            patches = patches * image_valid.to(patches.dtype)[:, None, None]
        embeds = self.merge_patches(caption_tokens, patches)
        return F.normalize(self._pool(embeds, caption_tokens["attention_mask"]), dim=-1)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, D] normalised embeddings of pictures alone: the projected patches are the whole input (MARVEL's
        plugin pretraining, ``model(images, None)``)."""
        return F.normalize(self._pool(self.patch_embeddings(pixels), None), dim=-1)

    # ----------------------------------------------------------------- loading
    def load_checkpoint(self, path: str) -> None:
        """Load the encoder weights of one of this project's checkpoints, strictly (InputError naming the keys)."""
        state = read_module_state(Path(path), ENCODER_PREFIX, "MARVEL encoder")
        load_fitting_state_dict(self, super().load_state_dict, state, True, self.describe(), str(path))

    def describe(self) -> str:
        return f"MarvelEncoder(language_model={self.language_model!r}, vision_model={self.vision_model!r})"
