"""Rebuild the shipped ``tiny-wordpiece`` tokenizer from the words of mini-WebQA (deterministic).

python -m lightning_modules.hf_assets.build_tiny_wordpiece [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lightning_modules.hf_assets import BUILTIN

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB_SIZE = 1200


def mini_webqa_texts(data_dir: Path) -> Iterator[str]:
    """Every query, fact and caption of a mini-WebQA directory (all files are JSON lines)."""
    fields = {"train.json": "Q", "dev.json": "Q", "test.json": "Q", "all_docs.json": "fact"}
    fields |= {"all_imgs.json": "caption", "all_imgs_exp.json": "caption"}
    for name, field in fields.items():
        for line in (data_dir / name).read_text().splitlines():
            yield json.loads(line)[field]


def build(out: Path) -> None:
    """Fit a lower-case WordPiece tokenizer on mini-WebQA (small, seed 0) and save it as a BERT fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from datamodules.mini_webqa import generate_mini_webqa

    with tempfile.TemporaryDirectory() as tmp:
        generate_mini_webqa(Path(tmp), size="small", seed=0)
        texts = list(mini_webqa_texts(Path(tmp)))
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-_/&%$#@+*=<>[]")
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, initial_alphabet=alphabet)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=512,
    )
    fast.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN["tiny-wordpiece"])
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
