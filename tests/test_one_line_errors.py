"""Mistakes that get one clear ``error:`` line and exit status 2 (issue 15): a dataset name or a missing data
directory, a checkpoint of another architecture, a missing negatives file, a typo in a flag or a config key.

The commands run in this process (``train_in_process``, the same ``main`` as train.py), except a flag typo, which
runs as ``python train.py``: its whole stderr must be that one line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import open_clip
import pytest
import torch

from datamodules.named_datasets import CACHE_ENV
from datamodules.negatives import find_negatives_file
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError

from cli_runs import ROOT, tiny_args, train, train_in_process

TINY = "configs/tiny/univl_dr_tiny.yaml"
MINE_HINT = (
    "mine one with: python train.py mine --config ... --ckpt_path ..., or set data.negatives_file to an "
    "existing file, webqa or null"
)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that exited with status 2, the last on stderr (no traceback, no usage)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and not any(line.startswith("usage:") for line in lines), proc.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], proc.stderr
    return lines[-1]


def first_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a command that stopped while parsing its arguments: the only line on stderr."""
    line = error_line(proc)
    assert proc.stderr.strip().splitlines() == [line], proc.stderr
    return line


# ------------------------------------------------------------------ 4. named datasets
def test_fit_on_a_named_dataset_generates_it_into_the_cache(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    proc = train_in_process(
        capfd,
        "fit",
        *tiny_args(Path("mini-webqa:tiny"), tmp_path),
        *"--trainer.max_steps 2 --trainer.limit_val_batches 0".split(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (Path(os.environ[CACHE_ENV]) / "mini-webqa-tiny-seed0" / "train.json").is_file()
    assert not (ROOT / "mini-webqa:tiny").exists()


def test_unknown_dataset_name_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    proc = train_in_process(capfd, "fit", *tiny_args(Path("mini-webqa:huge"), tmp_path))
    assert error_line(proc) == (
        "error: unknown dataset name 'mini-webqa:huge'; valid names: mini-webqa:small, "
        "mini-webqa:tiny (optionally :seed=N, e.g. mini-webqa:small:seed=1), or give a "
        "directory path"
    )


# ------------------------------------------------------------------ 5. a checkpoint of another architecture
def test_checkpoint_of_another_architecture_is_one_line(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import lightning

    # An older checkpoint (no encoder_architecture entry) whose weights have other shapes and other names.
    state = UniversalRetriever(copy.deepcopy(tiny_encoder)).state_dict()
    state["encoder.model.text_projection"] = torch.zeros(64, 32)
    del state["encoder.model.ln_final.bias"]
    state["encoder.model.extra.weight"] = torch.zeros(1)
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": lightning.__version__}, ckpt)
    proc = train_in_process(capfd, "test", *tiny_args(tiny_data_dir, tmp_path / "run"), "--ckpt_path", str(ckpt))
    assert error_line(proc) == (
        f"error: checkpoint {ckpt} does not fit model UniversalRetriever(CLIPEncoder(model_name='tiny-clip-64px')): "
        "1 tensor of another shape (first: encoder.model.text_projection, checkpoint [64, 32] vs model [64, 64]), "
        "1 missing key (first: encoder.model.ln_final.bias), 1 unexpected key (first: encoder.model.extra.weight); "
        "pass a checkpoint of this architecture or change model.encoder"
    )


@pytest.fixture(scope="module")
def wide_encoder(tmp_path_factory: pytest.TempPathFactory) -> CLIPEncoder:
    """A tiny CLIP of other sizes (widths 96), registered under a name of its own."""
    config = json.loads((ROOT / "lightning_modules/encoders/model_configs/tiny-clip-64px.json").read_text())
    config["embed_dim"] = config["vision_cfg"]["width"] = config["text_cfg"]["width"] = 96
    folder = tmp_path_factory.mktemp("model_configs")
    (folder / "test-wide-clip-64px.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return CLIPEncoder("test-wide-clip-64px", pretrained=None)


def test_weights_of_another_architecture_do_not_load(tiny_encoder: CLIPEncoder, wide_encoder: CLIPEncoder) -> None:
    module = UniversalRetriever(copy.deepcopy(tiny_encoder))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(InputError) as err:
        module.load_state_dict(UniversalRetriever(wide_encoder).state_dict())
    assert str(err.value) == (
        "checkpoint does not fit model UniversalRetriever(CLIPEncoder(model_name='tiny-clip-64px')): 61 tensors of "
        "other shapes (first: encoder.model.positional_embedding, checkpoint [77, 96] vs model [77, 64]), 0 missing "
        "keys, 0 unexpected keys; pass a checkpoint of this architecture or change model.encoder"
    )
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # nothing was loaded


def test_non_strict_loading_still_tolerates_missing_and_unexpected_keys(tiny_encoder: CLIPEncoder) -> None:
    module = UniversalRetriever(copy.deepcopy(tiny_encoder))
    state = module.state_dict()
    del state["log_logit_scale"]
    state["extra"] = torch.zeros(1)
    result = module.load_state_dict(state, strict=False)
    assert (result.missing_keys, result.unexpected_keys) == (["log_logit_scale"], ["extra"])
    state["encoder.model.text_projection"] = torch.zeros(64, 32)
    with pytest.raises(InputError, match=r"1 tensor of another shape .* 1 missing key .* 1 unexpected key"):
        module.load_state_dict(state, strict=False)


# ------------------------------------------------------------------ 6. a missing negatives file
def test_missing_negatives_file_names_the_folders_and_mining(
    tiny_data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = train_in_process(
        capfd, "fit", *tiny_args(tiny_data_dir, tmp_path), "--data.negatives_file", "train_negatives.json"
    )
    assert error_line(proc) == (
        f"error: negatives file train_negatives.json not found (looked in {tiny_data_dir / 'train_negatives.json'} "
        f"and {ROOT / 'train_negatives.json'}); {MINE_HINT}"
    )


def test_find_negatives_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    data.mkdir(), cwd.mkdir()
    monkeypatch.chdir(cwd)
    (cwd / "here.json").write_text("")
    (data / "both.json").write_text("")
    (cwd / "both.json").write_text("")
    assert find_negatives_file("here.json", data) == Path("here.json")
    assert find_negatives_file("both.json", data) == data / "both.json"  # the data directory first
    with pytest.raises(InputError) as err:
        find_negatives_file(str(tmp_path / "absent.json"), data)
    assert str(err.value) == f"negatives file {tmp_path / 'absent.json'} not found; {MINE_HINT}"


# ------------------------------------------------------------------ 7. a typo in a flag or a config key
def test_flag_typo_is_one_line_with_the_closest_flag() -> None:
    proc = train("fit", "--config", TINY, "--data.batch_sise", "4", timeout=120)
    assert first_error(proc) == "error: unrecognized argument --data.batch_sise; did you mean --data.batch_size?"


def test_config_file_key_typo_is_one_line_with_the_closest_key(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  num_workers: 0\n  batch_sise: 4\n")
    proc = train_in_process(capfd, "fit", "--config", TINY, "--config", str(typo))
    assert first_error(proc) == (
        f"error: unknown key data.batch_sise in config file {typo}; did you mean data.batch_size?"
    )


def test_typo_in_an_init_arg_of_a_class_is_one_line_with_the_closest_arg(capfd: pytest.CaptureFixture[str]) -> None:
    proc = train_in_process(capfd, "fit", "--config", TINY, "--model.encoder.init_args.model_nme", "x")
    assert first_error(proc) == (
        "error: unrecognized argument --model.encoder.init_args.model_nme; "
        "did you mean --model.encoder.init_args.model_name?"
    )
