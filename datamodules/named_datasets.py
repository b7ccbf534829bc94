"""Named embedded datasets: ``data_dir: mini-webqa:small`` instead of a directory path.

A name is ``mini-webqa:<size>`` (``small`` or ``tiny``), optionally ``mini-webqa:<size>:seed=N`` (default seed 0).
The synthetic mini-WebQA of that size and seed (``datamodules.mini_webqa``) is generated on first use into
``<cache>/mini-webqa-<size>-seed<N>``, where ``<cache>`` is ``$UNIVL_RETRIEVAL_CACHE`` (default
``~/.cache/univl_retrieval``). It is written into a temporary directory next to it and renamed into place, so a
reader never sees half a dataset and, when two processes race, the loser drops its copy and uses the winner's.
Delete the directory to regenerate it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from datamodules.mini_webqa import PRESETS, generate_mini_webqa
from retrieval.errors import InputError

#: Environment variable naming the cache directory of generated datasets.
CACHE_ENV = "UNIVL_RETRIEVAL_CACHE"
DEFAULT_CACHE = "~/.cache/univl_retrieval"
PREFIX = "mini-webqa:"
_NAME = re.compile(r"mini-webqa:(?P<size>[a-z]+)(?::seed=(?P<seed>\d+))?")


def cache_dir() -> Path:
    """The cache directory of generated datasets (``$UNIVL_RETRIEVAL_CACHE``, default ``~/.cache/univl_retrieval``)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class NamedDataset:
    """The synthetic mini-WebQA of one size and seed, kept in the cache."""

    size: str
    seed: int = 0

    @property
    def path(self) -> Path:
        return cache_dir() / f"mini-webqa-{self.size}-seed{self.seed}"

    def prepare(self) -> Path:
        """The dataset's directory, generated first if the cache does not hold it yet (atomically)."""
        final = self.path
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            generate_mini_webqa(tmp, size=self.size, seed=self.seed)
            tmp.chmod(0o755)
            try:
                tmp.rename(final)
            except OSError:
                if not final.is_dir():  # not a lost race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def parse_dataset_name(data_dir: str) -> NamedDataset | None:
    """The dataset ``data_dir`` names (``mini-webqa:...``), None for a path; InputError for an unknown name."""
    if not str(data_dir).startswith(PREFIX):
        return None
    match = _NAME.fullmatch(str(data_dir))
    if match is None or match["size"] not in PRESETS:
        names = ", ".join(PREFIX + size for size in sorted(PRESETS))
        raise InputError(
            f"unknown dataset name {str(data_dir)!r}; valid names: {names} (optionally :seed=N, "
            "e.g. mini-webqa:small:seed=1), or give a directory path"
        )
    return NamedDataset(match["size"], int(match["seed"] or 0))
