"""Image-to-text models for image verbalization (paper 4.3): loading, tiny twins, and the one generation path.

``load_image_to_text(name)`` loads any Hugging Face captioner by hub id or local folder: a
``VisionEncoderDecoderModel`` (ViT + BERT/GPT-2 decoder) or an ``AutoModelForImageTextToText`` model (BLIP
``Salesforce/blip-image-captioning-base``, GIT ``microsoft/git-base``), with its image processor and tokenizer.
``ImageToText.verbalize`` is the generation every caller uses (``train.py verbalize``, the query generator's
validation, ``bench/bench_verbalization.py``): beam search, at most 20 new tokens (paper A.3), optionally continuing
a text prefix (the query generator's ``[CLS] caption [SEP]``, paper eq. 7).

``build_vision_encoder_decoder(size)`` makes a randomly initialised model from configs: ``tiny`` (64 px ViT, 2+2
layers, the shipped ``tiny-wordpiece`` tokenizer, about 1 M parameters) or ``real`` (ViT-B/16 + GPT-2 small shapes,
the benchmark's stand-in for a real captioner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from lightning_modules.hf_assets import load_tokenizer, resolve_pretrained
from retrieval.errors import InputError

#: Beam size and generated-token budget of the paper (A.3).
NUM_BEAMS = 5
MAX_NEW_TOKENS = 20
#: Name the tiny twins use for their tokenizer (shipped with the package).
TINY_TOKENIZER = "tiny-wordpiece"


@dataclass
class ImageToText:
    """A captioning model with the image processor and tokenizer that go with it."""

    model: Any  # a transformers PreTrainedModel with ``generate``
    image_processor: Any
    tokenizer: Any

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        """The model's input tensor for a list of RGB images (resized and normalised by the image processor)."""
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    @torch.inference_mode()
    def generate_ids(
        self,
        pixel_values: torch.Tensor,
        prefix_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        num_beams: int = NUM_BEAMS,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> torch.Tensor:
        """Token ids generated after ``prefix_ids`` (none: after the start token), prefix removed, on the model's
        device. Prefixes of one batch have one length (the query generator pads captions to a fixed length)."""
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        kwargs: dict[str, Any] = {
            "pixel_values": pixel_values.to(device=device, dtype=dtype),
            "num_beams": num_beams,
            "max_new_tokens": max_new_tokens,
        }
        if num_beams > 1:
            kwargs["early_stopping"] = True  # a beam search ends when num_beams finished candidates exist
        if prefix_ids is not None:
            prefix_ids = prefix_ids.to(device)
            mask = torch.ones_like(prefix_ids) if prefix_mask is None else prefix_mask.to(device)
            if self.is_encoder_decoder:
                kwargs.update(decoder_input_ids=prefix_ids, decoder_attention_mask=mask)
            else:
                kwargs.update(input_ids=prefix_ids, attention_mask=mask)
        out = self.model.generate(**kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        return sequences[:, prefix_ids.shape[1] :] if prefix_ids is not None else sequences

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Generated ids as clean text (special tokens dropped, whitespace collapsed)."""
        texts = self.tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]

    def verbalize(
        self,
        images: list[Image.Image] | torch.Tensor,
        prefix_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        num_beams: int = NUM_BEAMS,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> list[str]:
        """Text for each image (a list of PIL images or ready pixel values): the one generation path."""
        pixels = images if isinstance(images, torch.Tensor) else self.pixel_values(images)
        return self.decode(self.generate_ids(pixels, prefix_ids, prefix_mask, num_beams, max_new_tokens))

    def save_pretrained(self, folder: str) -> None:
        """Model, image processor and tokenizer in one folder, loadable by :func:`load_image_to_text`."""
        self.model.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


def load_image_to_text(name: str) -> ImageToText:
    """A captioner from a hub id or local folder (VisionEncoderDecoder, BLIP, GIT, ...), in eval mode."""
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageTextToText,
        VisionEncoderDecoderModel,
    )

    source = resolve_pretrained(name)
    try:
        config = AutoConfig.from_pretrained(source)
        model_class = (
            VisionEncoderDecoderModel if config.model_type == "vision-encoder-decoder" else AutoModelForImageTextToText
        )
        model = model_class.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"cannot load an image-to-text model from {name!r} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            f"give a local folder saved by save_pretrained or a Hugging Face hub id reachable from this machine "
            f"(e.g. Salesforce/blip-image-captioning-base, microsoft/git-base)"
        ) from None
    return ImageToText(model.eval(), image_processor, load_tokenizer(name))


def _decoder_config(size: str, tokenizer: Any) -> Any:
    """A BERT decoder (tiny, the tokenizer's vocabulary) or a GPT-2 small decoder (real, GPT-2's vocabulary)."""
    from transformers import BertConfig, GPT2Config

    if size == "real":
        return GPT2Config(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, add_cross_attention=True)
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_vision_encoder_decoder(size: str = "tiny", image_size: int = 64, seed: int = 0) -> ImageToText:
    """A randomly initialised ``VisionEncoderDecoderModel`` with an image processor and the tiny tokenizer.

    ``tiny``: ViT (``image_size`` px, patch 16, width 128, 2 layers) + a 2-layer BERT decoder. ``real``: ViT-B/16 at
    224 px + GPT-2 small (about 240 M parameters), for benchmarks (its texts decode to nothing useful).
    """
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor

    if size not in ("tiny", "real"):
        raise InputError(f"size {size!r} is not one of 'tiny', 'real'")
    tokenizer = load_tokenizer(TINY_TOKENIZER)
    if size == "real":
        image_size = 224
        encoder = ViTConfig(image_size=224, patch_size=16)  # ViT-B/16: width 768, 12 layers, 12 heads
    else:
        encoder = ViTConfig(
            image_size=image_size,
            patch_size=16,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
        )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, _decoder_config(size, tokenizer))
    start, end, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, end, pad
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    generation = model.generation_config
    generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id = start, end, pad
    generation.bos_token_id = start
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return ImageToText(model.eval(), processor, tokenizer)
