"""Named embedded datasets (``data_dir: mini-webqa:small``): parsed, generated once into the cache, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import datamodules.named_datasets as named
from datamodules.named_datasets import CACHE_ENV, NamedDataset, cache_dir, parse_dataset_name
from datamodules.webqa_datamodule import WebQADataModule
from retrieval.errors import InputError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache directory for this test."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_session_cache_is_not_in_the_home_directory() -> None:
    assert os.environ[CACHE_ENV] and not cache_dir().is_relative_to(Path.home() / ".cache")


def test_default_cache_is_under_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "univl_retrieval"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mini-webqa:small", NamedDataset("small", 0)),
        ("mini-webqa:tiny", NamedDataset("tiny", 0)),
        ("mini-webqa:small:seed=3", NamedDataset("small", 3)),
        ("data/mini-webqa", None),
        ("/data/WebQA", None),
    ],
)
def test_parse_dataset_name(text: str, expected: NamedDataset | None) -> None:
    assert parse_dataset_name(text) == expected


@pytest.mark.parametrize("text", ["mini-webqa:huge", "mini-webqa:", "mini-webqa:small:seed=x", "mini-webqa:tiny:sed=1"])
def test_unknown_name_lists_the_valid_names(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_dataset_name(text)
    assert str(err.value) == (
        f"unknown dataset name {text!r}; valid names: mini-webqa:small, mini-webqa:tiny "
        "(optionally :seed=N, e.g. mini-webqa:small:seed=1), or give a directory path"
    )


def test_path_names_size_and_seed(cache: Path) -> None:
    assert NamedDataset("small", 0).path == cache / "mini-webqa-small-seed0"
    assert NamedDataset("tiny", 2).path == cache / "mini-webqa-tiny-seed2"


def test_prepare_generates_once_then_reuses(cache: Path) -> None:
    dataset = NamedDataset("tiny", 0)
    path = dataset.prepare()
    assert path == cache / "mini-webqa-tiny-seed0" and (path / "train.json").is_file()
    stamp = (path / "train.json").stat().st_mtime_ns
    assert dataset.prepare() == path and (path / "train.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == ["mini-webqa-tiny-seed0"]  # no temporary directory left


def test_a_process_that_loses_the_race_uses_the_winners_directory(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate = named.generate_mini_webqa

    def generate_while_another_process_finishes_first(out: Path, size: str, seed: int) -> Path:
        winner = cache / "mini-webqa-tiny-seed0"
        winner.mkdir(parents=True)
        (winner / "train.json").write_text("the winner's\n")
        return generate(out, size=size, seed=seed)

    monkeypatch.setattr(named, "generate_mini_webqa", generate_while_another_process_finishes_first)
    path = NamedDataset("tiny", 0).prepare()
    assert (path / "train.json").read_text() == "the winner's\n"
    assert sorted(p.name for p in cache.iterdir()) == ["mini-webqa-tiny-seed0"]


def test_a_failed_generation_leaves_nothing_behind(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(out: Path, size: str, seed: int) -> Path:
        (Path(out) / "train.json").write_text("half\n")
        raise OSError("disk full")

    monkeypatch.setattr(named, "generate_mini_webqa", fail)
    with pytest.raises(OSError, match="disk full"):
        NamedDataset("tiny", 0).prepare()
    assert list(cache.iterdir()) == []


def test_datamodule_generates_in_prepare_data_and_reads_in_setup(cache: Path) -> None:
    dm = WebQADataModule("mini-webqa:tiny", batch_size=4, num_workers=0)
    assert not cache.exists()
    dm.prepare_data()
    assert dm.data_dir == cache / "mini-webqa-tiny-seed0" and (dm.data_dir / "train.json").is_file()
    dm.setup("validate")
    assert len(dm.eval_split("dev").queries) == 10


def test_datamodule_rejects_an_unknown_name_at_construction() -> None:
    with pytest.raises(InputError, match="^unknown dataset name 'mini-webqa:huge'; valid names: mini-webqa:small"):
        WebQADataModule("mini-webqa:huge")


def test_a_missing_directory_is_never_generated(tmp_path: Path) -> None:
    dm = WebQADataModule(str(tmp_path / "typo"), num_workers=0)
    dm.prepare_data()
    with pytest.raises(InputError) as err:
        dm.setup("fit")
    assert str(err.value) == (
        f"data directory {tmp_path / 'typo'} does not exist; fix data.data_dir, "
        "or set it to mini-webqa:small for the embedded synthetic dataset"
    )
    assert not (tmp_path / "typo").exists()
