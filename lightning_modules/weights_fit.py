"""Loading weights that do not fit the model: one InputError line instead of torch's list of size mismatches."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from retrieval.errors import InputError

#: What ``nn.Module.load_state_dict`` returns (missing_keys, unexpected_keys).
IncompatibleKeys = Any


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _first(keys: list[str]) -> str:
    return f" (first: {keys[0]})" if keys else ""


def describe_model(name: str, encoder_architecture: Mapping[str, Any]) -> str:
    """``Module(Encoder(arg=value, ...))`` from an encoder's ``architecture()``."""
    arch = dict(encoder_architecture)
    encoder = str(arch.pop("class_path", "?")).rpartition(".")[2]
    return f"{name}({encoder}({', '.join(f'{key}={value!r}' for key, value in arch.items())}))"


def misfit_message(
    checkpoint: str | None,
    model: str,
    shapes: list[tuple[str, list[int], list[int]]],
    missing: list[str],
    unexpected: list[str],
) -> str:
    """One line: how the weights differ from the model's (``shapes``: key, checkpoint shape, model shape)."""
    first_shape = f" (first: {shapes[0][0]}, checkpoint {shapes[0][1]} vs model {shapes[0][2]})" if shapes else ""
    where = f"checkpoint {checkpoint}" if checkpoint else "checkpoint"
    other = _count(len(shapes), "tensor of another shape", "tensors of other shapes")
    missed = _count(len(missing), "missing key", "missing keys") + _first(missing)
    extra = _count(len(unexpected), "unexpected key", "unexpected keys") + _first(unexpected)
    return (
        f"{where} does not fit model {model}: {other}{first_shape}, {missed}, {extra}; "
        "pass a checkpoint of this architecture or change model.encoder"
    )


def load_fitting_state_dict(
    module: torch.nn.Module,
    load: Callable[..., IncompatibleKeys],
    state_dict: Mapping[str, Any],
    strict: bool,
    model: str,
    checkpoint: str | None,
    **kwargs: Any,
) -> IncompatibleKeys:
    """``load(state_dict)`` (``nn.Module.load_state_dict``) once the shapes are checked: a tensor of another shape
    is an InputError before anything is loaded; with ``strict``, so are missing or unexpected keys (after loading,
    as torch does). The message is :func:`misfit_message`."""
    own = module.state_dict()
    shapes = [
        (key, list(value.shape), list(own[key].shape))
        for key, value in state_dict.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]
    if shapes:
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        raise InputError(misfit_message(checkpoint, model, shapes, missing, unexpected))
    result = load(state_dict, strict=False, **kwargs)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise InputError(misfit_message(checkpoint, model, [], result.missing_keys, result.unexpected_keys))
    return result
