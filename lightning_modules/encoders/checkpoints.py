"""Reading one module's weights out of a checkpoint file: a plain state dict, or a checkpoint of this project."""

from __future__ import annotations

from pathlib import Path

import torch

from retrieval.errors import InputError

#: Prefix of the encoder's weights inside a checkpoint of this project's LightningModule.
ENCODER_PREFIX = "encoder."


def read_module_state(checkpoint: Path, prefix: str, what: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (prefix removed) of a Lightning checkpoint, or the whole of a plain state dict;
    an InputError when the file is missing, unreadable or holds no such weights (``what`` names them)."""
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise InputError(f"pretrained checkpoint {checkpoint} does not exist; give an existing file")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or unsafe pickle
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"cannot read checkpoint {checkpoint}: {type(err).__name__}: {first}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    if not isinstance(state, dict) or not state:
        raise InputError(f"checkpoint {checkpoint} holds no {what} weights; give a checkpoint of this project")
    return state
