"""CLIP dual-tower encoder (open_clip): query = T(q), text doc = T(fact), image doc = I(pixels) + T(caption)."""

from __future__ import annotations

import difflib
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from lightning_modules.encoders.base import Processor, RetrievalEncoder, SimpleProcessor, TextBatch
from lightning_modules.encoders.checkpoints import ENCODER_PREFIX, read_module_state
from retrieval.errors import InputError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)  # registers tiny-clip-64px and friends by name


def _check_model_name(model_name: str) -> None:
    if model_name.startswith(("hf-hub:", "local-dir:")) or model_name in open_clip.list_models():
        return
    close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
    raise InputError(f"unknown open_clip model {model_name!r}; {hint}")


def _looks_like_path(pretrained: str) -> bool:
    return (
        "/" in pretrained
        or "\\" in pretrained
        or Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
    )


def create_clip(model_name: str, pretrained: str | None) -> tuple[torch.nn.Module, object]:
    """An open_clip model and its eval transform; ``pretrained`` is a tag (``openai``), a local path, or None."""
    _check_model_name(model_name)
    checkpoint = None
    if pretrained and (_looks_like_path(pretrained) or Path(pretrained).is_file()):
        checkpoint = Path(pretrained).expanduser()
        if not checkpoint.is_file():
            raise InputError(
                f"pretrained checkpoint {checkpoint} does not exist; give an existing file or a tag such as 'openai'"
            )
        pretrained = None
    elif pretrained and not model_name.startswith(("hf-hub:", "local-dir:")):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise InputError(
                f"no pretrained tag {pretrained!r} for {model_name}; choose one of "
                f"{tags or 'none (train from scratch: pretrained: null)'} or a checkpoint path"
            )
    model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    if checkpoint is not None:
        load_clip_weights(model, checkpoint, model_name)
    return model, transform


#: Prefix of the CLIP weights inside a checkpoint of this project's LightningModule.
LIGHTNING_PREFIX = ENCODER_PREFIX + "model."


def load_clip_weights(model: torch.nn.Module, checkpoint: Path, model_name: str) -> None:
    """Load an open_clip state dict, or the CLIP part of one of our Lightning checkpoints, strictly."""
    state = read_module_state(checkpoint, LIGHTNING_PREFIX, "CLIP")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise InputError(f"checkpoint {checkpoint} does not match architecture {model_name}: {detail}") from None


class CLIPEncoder(RetrievalEncoder):
    """UniVL-DR's encoder: shared CLIP text tower for queries, facts and captions; vision tower for pixels.

    An image doc is ``normalize(I(pixels) + T(caption))``, the sum of the two un-normalised
    projections (paper Table 7). CLIP's own ``logit_scale`` is frozen: the temperature belongs to
    the training module.

    Args:
        model_name: an open_clip architecture (``ViT-B-32``, ``tiny-clip-64px``, ``hf-hub:...``).
        pretrained: a tag (``openai``), a local checkpoint path, or None for random weights.
    """

    #: Init arguments that fix the weights' shapes (checked against a checkpoint's before loading it).
    ARCHITECTURE_ARGS = ("model_name",)

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai") -> None:
        super().__init__()
        self.model_name = model_name
        self.model, transform = create_clip(model_name, pretrained)
        self.model.logit_scale.requires_grad_(False)
        image_size = self.model.visual.image_size
        image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
        self._processor = SimpleProcessor(open_clip.get_tokenizer(model_name), transform, image_size)
        self.embedding_dim = (
            int(self.model.text_projection.shape[1])
            if hasattr(self.model, "text_projection") and self.model.text_projection is not None
            else int(self.model.embed_dim)
        )

    @property
    def processor(self) -> Processor:
        return self._processor

    def encode_queries(self, tokens: TextBatch) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens), dim=-1)

    def encode_texts(self, tokens: TextBatch) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens), dim=-1)

    def encode_images(
        self, pixels: torch.Tensor, caption_tokens: TextBatch, image_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        image = self.model.encode_image(pixels)
        if image_valid is not None:
            image = image * image_valid.to(image.dtype).unsqueeze(-1)
        return F.normalize(image + self.model.encode_text(caption_tokens), dim=-1)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels), dim=-1)

    def save_open_clip_checkpoint(self, path: str | Path) -> Path:
        """Save the CLIP weights in open_clip's format, loadable by ``pretrained: <path>``."""
        from retrieval.atomic import atomic_write

        path = Path(path)
        with atomic_write(path, "wb") as handle:
            torch.save(self.model.state_dict(), handle)
        return path
