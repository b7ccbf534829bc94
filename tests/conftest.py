"""Shared fixtures: a generated tiny mini-WebQA and a tiny CLIP encoder (built once per session)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamodules.mini_webqa import generate_mini_webqa


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mini-WebQA directory in the release layout (read-only: copy it before corrupting)."""
    return generate_mini_webqa(tmp_path_factory.mktemp("mini") / "webqa", size="tiny", seed=0)


@pytest.fixture
def data_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny directory that a test may damage."""
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "webqa"))


@pytest.fixture(scope="session")
def tiny_encoder():
    from lightning_modules.encoders import CLIPEncoder

    return CLIPEncoder("tiny-clip-64px", pretrained=None)
