"""Hugging Face names that resolve to files shipped with this package, and the tokenizer loader.

No tokenizer can be downloaded on machines without internet, yet the tiny twins of the Hugging Face based models
(MARVEL's text side, the verbalizers) need one. ``tiny-wordpiece`` is a BERT-style WordPiece tokenizer (lower case,
``[PAD] [UNK] [CLS] [SEP] [MASK]``, about 1,000 tokens) fitted on the words of mini-WebQA, shipped in this folder and
loadable by name wherever a hub id or a local folder is accepted. Rebuild it with
``python -m lightning_modules.hf_assets.build_tiny_wordpiece``.
"""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import InputError

ASSET_DIR = Path(__file__).parent
#: Built-in names and the folders they resolve to.
BUILTIN = {"tiny-wordpiece": ASSET_DIR / "tiny-wordpiece"}


def resolve_pretrained(name: str) -> str:
    """A built-in name's folder; any other hub id or local folder unchanged (``~`` expanded for paths)."""
    if name in BUILTIN:
        return str(BUILTIN[name])
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def load_tokenizer(name: str):  # noqa: ANN201 (a transformers PreTrainedTokenizerBase)
    """``AutoTokenizer.from_pretrained`` of a built-in name, hub id or local folder, with a one-line error."""
    from transformers import AutoTokenizer

    source = resolve_pretrained(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load a tokenizer from {name!r} ({type(err).__name__}); give a local folder with tokenizer files, "
            f"a Hugging Face hub id reachable from this machine, or one of the built-in names {sorted(BUILTIN)}"
        ) from None
