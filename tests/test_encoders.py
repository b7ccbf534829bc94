"""The CLIP encoder's real loading paths (tag, local checkpoint, our Lightning checkpoint) and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.encoders import CLIPEncoder
from retrieval.errors import InputError


def _same_outputs(a: CLIPEncoder, b: CLIPEncoder) -> None:
    tokens = a.processor.tokenize(["which picture of the orvane bridge shows a red star"])
    pixels = torch.randn(1, *a.processor.image_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.encode_queries(tokens), b.encode_queries(tokens))
        torch.testing.assert_close(a.encode_images(pixels, tokens), b.encode_images(pixels, tokens))


def test_local_open_clip_checkpoint_loads_back(tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    path = tiny_encoder.save_open_clip_checkpoint(tmp_path / "tiny.pt")
    _same_outputs(tiny_encoder, CLIPEncoder("tiny-clip-64px", pretrained=str(path)))


def test_lightning_checkpoint_loads_as_pretrained(tiny_encoder: CLIPEncoder, tmp_path: Path) -> None:
    state = {f"encoder.model.{k}": v for k, v in tiny_encoder.model.state_dict().items()}
    torch.save({"state_dict": {**state, "log_logit_scale": torch.tensor(3.0)}}, tmp_path / "run.ckpt")
    _same_outputs(tiny_encoder, CLIPEncoder("tiny-clip-64px", pretrained=str(tmp_path / "run.ckpt")))


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    torch.save({"visual.proj": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other.pt does not match architecture tiny-clip-64px"):
        CLIPEncoder("tiny-clip-64px", pretrained=str(tmp_path / "other.pt"))


def test_missing_checkpoint_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"pretrained checkpoint .*nope.pt does not exist"):
        CLIPEncoder("tiny-clip-64px", pretrained=str(tmp_path / "nope.pt"))


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"cannot read checkpoint .*junk.pt"):
        CLIPEncoder("tiny-clip-64px", pretrained=str(tmp_path / "junk.pt"))


def test_unknown_model_name_suggests_close_names() -> None:
    with pytest.raises(InputError, match=r"unknown open_clip model 'ViT-B-33'; did you mean .*ViT-B-32"):
        CLIPEncoder("ViT-B-33", pretrained=None)


def test_unknown_pretrained_tag_lists_the_valid_ones() -> None:
    with pytest.raises(InputError, match=r"no pretrained tag 'openia' for ViT-B-32; choose one of .*openai"):
        CLIPEncoder("ViT-B-32", pretrained="openia")


def test_clip_logit_scale_is_frozen(tiny_encoder: CLIPEncoder) -> None:
    assert not tiny_encoder.model.logit_scale.requires_grad
    assert 1e5 < sum(p.numel() for p in tiny_encoder.parameters()) < 5e6
