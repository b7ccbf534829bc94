"""A checkpoint's saved settings against the configuration a command was given: report, never override.

Every ``--model.*`` value the user gives (config files and command line) is used as given. The checkpoint's
saved hyperparameters are compared with it and the keys that differ are listed in one line; the encoder's
architecture, which the weights need to load, must match the checkpoint's or the command stops.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from retrieval.errors import DataWarning, InputError

#: Key of the checkpoint entry that records the encoder's architecture (written by ``UniversalRetriever``).
ARCHITECTURE_KEY = "encoder_architecture"


def qualified_name(cls: type) -> str:
    """``module.Class`` of a class, as recorded in checkpoints."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _comparable(value: Any) -> Any:
    if hasattr(value, "as_dict"):  # a group of settings in the configuration (jsonargparse Namespace)
        value = value.as_dict()
    return list(value) if isinstance(value, (tuple, list)) else value


def hyperparameter_differences(saved: Mapping[str, Any], model_config: Mapping[str, Any]) -> list[str]:
    """``"key (checkpoint A, now B)"`` for every saved scalar hyperparameter the configuration sets otherwise."""
    differences = []
    for key, old in saved.items():
        if key.startswith("_") or key not in model_config:
            continue
        new, old = _comparable(model_config[key]), _comparable(old)
        if new != old:
            differences.append(f"{key} (checkpoint {old!r}, now {new!r})")
    return differences


def _configured_architecture(encoder_config: Any) -> dict[str, Any]:
    """The architecture the configuration's encoder would have, as ``{"class_path", init arg: value}``."""
    module, _, name = encoder_config["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    init_args = encoder_config.get("init_args") or {}
    return {
        "class_path": qualified_name(cls),
        **{arg: init_args.get(arg) for arg in getattr(cls, "ARCHITECTURE_ARGS", ())},
    }


def check_architecture(saved: Mapping[str, Any] | None, encoder_config: Any, ckpt_path: str) -> None:
    """InputError when the configured encoder is not the architecture the checkpoint was trained with."""
    if not saved:
        return  # a checkpoint written before architectures were recorded
    configured = _configured_architecture(encoder_config)
    for key, old in saved.items():
        new = configured.get(key)
        if new != old:
            flag = "model.encoder.class_path" if key == "class_path" else f"model.encoder.init_args.{key}"
            raise InputError(
                f"checkpoint {ckpt_path} was trained with {flag} {old!r} but the configuration gives "
                f"{new!r}; use the configuration the checkpoint was trained with, or drop --ckpt_path"
            )


def check_caption_file(saved: Mapping[str, Any], data_config: Any, ckpt_path: str) -> None:
    """Warn (one line) when a command reads another caption file than the checkpoint was trained on: the original
    release mined with other captions than it trained with (DESIGN.md section 6)."""
    trained, now = saved.get("caption_file"), (data_config or {}).get("caption_file")
    if trained and now and trained != now:
        rank_zero_warn(
            f"{ckpt_path} was trained on caption file {trained!r} but this command reads {now!r}; training, mining "
            f"and evaluation should read one caption file (pass --data.caption_file {trained} to match)",
            category=DataWarning,
        )


def report_checkpoint_differences(ckpt_path: str | Path, model_config: Any, data_config: Any = None) -> None:
    """Refuse another architecture; print one line with the hyperparameters the configuration changes; warn about
    another caption file than the checkpoint's training data."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    check_caption_file(checkpoint.get("datamodule_hyper_parameters", {}), data_config, str(ckpt_path))
    if "encoder" not in model_config:  # not a retriever: nothing to compare the architecture with
        model_config = model_config.get("init_args") or {}
    else:
        check_architecture(checkpoint.get(ARCHITECTURE_KEY), model_config["encoder"], str(ckpt_path))
    differences = hyperparameter_differences(checkpoint.get("hyper_parameters", {}), model_config)
    if differences:
        rank_zero_info(
            f"{ckpt_path}: the configuration differs from the checkpoint's in {', '.join(differences)}; "
            "the configuration's values are used"
        )
