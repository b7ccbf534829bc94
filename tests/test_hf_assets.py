"""The shipped tiny tokenizer loads by name offline; a name that resolves nowhere is a one-line InputError."""

from __future__ import annotations

import pytest

from lightning_modules.hf_assets import BUILTIN, load_tokenizer, resolve_pretrained
from retrieval.errors import InputError


def test_tiny_wordpiece_round_trips_mini_webqa_text_and_marks_bert_specials():
    tokenizer = load_tokenizer("tiny-wordpiece")
    text = "Which picture of the Orvane bridge shows a red circle?"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.sep_token_id == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()


def test_a_local_folder_resolves_to_itself_and_a_builtin_name_to_its_folder(tmp_path):
    assert resolve_pretrained(str(tmp_path)) == str(tmp_path)
    assert resolve_pretrained("tiny-wordpiece") == str(BUILTIN["tiny-wordpiece"])
    assert resolve_pretrained("org/model-on-the-hub") == "org/model-on-the-hub"


def test_an_empty_folder_is_an_input_error_listing_the_builtin_names(tmp_path):
    with pytest.raises(InputError, match="cannot load a tokenizer from .*tiny-wordpiece"):
        load_tokenizer(str(tmp_path))
