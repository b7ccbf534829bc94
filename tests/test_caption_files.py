"""One caption file for training, mining and evaluation, and its ids must be ``all_imgs.json``'s (issue 9, item 4)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from datamodules.webqa_release import Corpus
from lightning_modules.checkpoint_config import report_checkpoint_differences
from retrieval.errors import DataWarning, InputError

from builders import webqa_datamodule


def write_expanded(data_dir: Path, name: str = "all_imgs_exp.json", drop: int = 0, extra: str | None = None) -> Path:
    """A caption file like ``all_imgs.json`` whose captions end in ``[SEP] marker<id>``; ``drop`` records left out
    at the end, ``extra`` an image id added."""
    records = [json.loads(line) for line in (data_dir / "all_imgs.json").read_text().splitlines() if line.strip()]
    records = records[: len(records) - drop]
    if extra is not None:
        records.append({**records[0], "image_id": int(extra)})
    path = data_dir / name
    path.write_text(
        "".join(json.dumps({**r, "caption": f"{r['caption']} [SEP] marker{r['image_id']}"}) + "\n" for r in records)
    )
    return path


def test_caption_file_with_missing_ids_is_an_error_naming_them(data_copy: Path) -> None:
    write_expanded(data_copy, drop=1)
    last = [json.loads(line) for line in (data_copy / "all_imgs.json").read_text().splitlines() if line.strip()][-1]
    with pytest.raises(
        InputError, match=rf"all_imgs_exp.json.*1 image id\(s\) of all_imgs.json missing.*{last['image_id']}"
    ):
        Corpus.from_release(data_copy, "all_imgs_exp.json")


def test_caption_file_with_extra_ids_is_an_error_naming_them(data_copy: Path) -> None:
    write_expanded(data_copy, extra="99999999")
    with pytest.raises(InputError, match=r"all_imgs_exp.json.*1 image id\(s\) not in all_imgs.json.*99999999"):
        Corpus.from_release(data_copy, "all_imgs_exp.json")


class RecordingProcessor:
    """The encoder's processor, remembering every text it tokenizes."""

    def __init__(self, processor) -> None:  # noqa: ANN001
        self.processor, self.texts = processor, []
        self.image_shape = processor.image_shape

    def tokenize(self, texts: list[str]):  # noqa: ANN201
        self.texts.extend(texts)
        return self.processor.tokenize(texts)

    def tokenize_captions(self, captions: list[str]):  # noqa: ANN201
        self.texts.extend(captions)
        return self.processor.tokenize_captions(captions)

    def image_transform(self, image):  # noqa: ANN001, ANN201
        return self.processor.image_transform(image)


def test_training_mining_and_evaluation_encode_the_one_caption_file(data_copy: Path, tiny_encoder) -> None:  # noqa: ANN001
    write_expanded(data_copy)
    plain = {json.loads(line)["caption"] for line in (data_copy / "all_imgs.json").read_text().splitlines() if line}
    dm = webqa_datamodule(data_copy, tiny_encoder, caption_file="all_imgs_exp.json")
    recorder = RecordingProcessor(tiny_encoder.processor)
    dm.set_processor(recorder)
    dm.setup("fit")
    read = {}
    for name, loader in (
        ("training", dm.train_dataloader()),
        ("mining", dm.mining_data().corpus_loader),
        ("evaluation", dm.val_dataloader()[-1]),
    ):
        recorder.texts.clear()
        for _ in zip(range(2), loader, strict=False):
            pass
        read[name] = {text for text in recorder.texts if " [SEP] marker" in text}
        assert not set(recorder.texts) & plain, name  # no plain caption reached the encoder
    assert all(read.values()), {name: len(texts) for name, texts in read.items()}


def test_a_checkpoint_trained_on_another_caption_file_is_warned_about(tmp_path: Path) -> None:
    ckpt = tmp_path / "trained.ckpt"
    torch.save({"hyper_parameters": {}, "datamodule_hyper_parameters": {"caption_file": "all_imgs.json"}}, ckpt)
    with pytest.warns(DataWarning, match=r"trained on caption file 'all_imgs.json' but this command reads 'exp.json'"):
        report_checkpoint_differences(ckpt, {"encoder": {}}, {"caption_file": "exp.json"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_checkpoint_differences(ckpt, {"encoder": {}}, {"caption_file": "all_imgs.json"})
