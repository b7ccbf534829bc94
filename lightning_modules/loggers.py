"""W&B logger that runs offline when no API key is configured (never asks for one)."""

from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_key_available() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``wandb login`` stored a key in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbAutoLogger(WandbLogger):
    """``WandbLogger`` with ``offline`` defaulting to "no API key available" (``WANDB_MODE`` still wins)."""

    def __init__(self, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_key_available()
        super().__init__(offline=offline, **kwargs)
