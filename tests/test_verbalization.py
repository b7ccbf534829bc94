"""Image verbalization (issue 9): loading a captioner, the query generator's training sequences, and ``train.py fit``
and ``verbalize`` through the CLI: the release schema, resume after an interruption, bad inputs, the 2-rank merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from commands.verbalize import shard_dir
from datamodules.verbalization_datamodule import VerbalizationBatch
from lightning_modules.captioner import build_vision_encoder_decoder, load_image_to_text
from lightning_modules.verbalizer import ImageVerbalizer
from retrieval.errors import InputError

from builders import corrupt_image
from cli_runs import train
from test_commands import run_in_process

CONFIG = "configs/verbalization/query_generator_tiny.yaml"
#: Greedy, 3 tokens, small batches and shards: the tests' generation settings.
FAST = [*"--model.init_args.num_beams 1 --model.init_args.max_new_tokens 3".split()]
QUIET = [*"--trainer.enable_progress_bar false --trainer.enable_model_summary false".split()]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_saved_captioner_loads_from_its_folder_and_generates_the_same(tmp_path: Path) -> None:
    built = build_vision_encoder_decoder("tiny", seed=3)
    built.save_pretrained(str(tmp_path / "captioner"))
    loaded = load_image_to_text(str(tmp_path / "captioner"))
    assert type(loaded.model).__name__ == "VisionEncoderDecoderModel"
    images = [Image.new("RGB", (80, 60), colour) for colour in ("red", "navy")]
    assert loaded.verbalize(images, num_beams=2, max_new_tokens=6) == built.verbalize(
        images, num_beams=2, max_new_tokens=6
    )


def test_a_folder_without_a_model_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"cannot load an image-to-text model from .*empty"):
        load_image_to_text(str(tmp_path / "empty"))


def test_training_sequences_put_the_caption_first_and_train_on_the_query_only() -> None:
    module = ImageVerbalizer(caption_length=8)
    batch = VerbalizationBatch(
        ["1", "2"],
        [Image.new("RGB", (64, 64))] * 2,
        ["the orvane bridge", "picture of the kaith stadium on a clear day"],
        [["which picture shows a red triangle?"], ["what colour is it?"]],
    )
    ids, mask, targets = module.training_sequences(batch)
    tokenizer = module.tokenizer
    for row in range(2):
        prefix = ids[row, :10].tolist()
        assert prefix[0] == tokenizer.cls_token_id and prefix[-1] == tokenizer.sep_token_id  # [CLS] C [PAD]... [SEP]
        caption = tokenizer.decode([t for t, m in zip(prefix[1:-1], mask[row, 1:9], strict=True) if m])
        assert caption == " ".join(tokenizer.tokenize(batch.captions[row])[:8]).replace(" ##", "")
        trained = ids[row, 1:][targets[row]].tolist()
        assert trained[-1] == tokenizer.sep_token_id
        assert tokenizer.decode(trained[:-1]) == tokenizer.decode(
            tokenizer(batch.references[row][0])["input_ids"][1:-1]
        )
    assert not targets[:, :9].any()  # nothing of the prefix is a target


@pytest.fixture(scope="module")
def generator(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A query generator trained for 3 steps through ``train.py fit`` and one single-process ``verbalize``, on a
    copy of the tiny data whose second picture is undecodable."""
    root = tmp_path_factory.mktemp("verbalization")
    data_dir = Path(shutil.copytree(tiny_data_dir, root / "webqa"))
    bad_id, _ = corrupt_image(data_dir, line=1)
    data = ["--data.data_dir", str(data_dir), *"--data.batch_size 8 --data.eval_batch_size 8".split()]
    fit = run_in_process(
        "fit",
        *["--config", CONFIG, *data, *FAST, *QUIET, "--run_dir", str(root / "fit")],
        *"--data.skip_bad_images true --trainer.max_epochs 1 --trainer.limit_train_batches 3".split(),
        *"--trainer.limit_val_batches 1 --trainer.check_val_every_n_epoch 1 --trainer.log_every_n_steps 1".split(),
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = next((root / "fit" / "checkpoints").glob("best-step*.ckpt"))
    out = root / "all_imgs_query.json"
    args = ["--config", CONFIG, *data, *FAST, *QUIET, "--ckpt_path", str(ckpt), "--shard_size", "16"]
    done = run_in_process("verbalize", *args, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "ckpt": ckpt, "out": out, "data": data_dir, "args": args, "bad_id": bad_id}


def test_fit_validates_with_generation_metrics(generator: dict) -> None:
    (metrics,) = (generator["root"] / "fit").rglob("metrics.csv")
    header = metrics.read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/BLEU", "val/token_F1"} <= set(header)


def test_verbalized_file_keeps_the_release_schema_and_the_plain_caption_of_an_undecodable_image(
    generator: dict,
) -> None:
    plain, expanded = records(generator["data"] / "all_imgs.json"), records(generator["out"])
    assert [r["image_id"] for r in expanded] == [r["image_id"] for r in plain]
    for before, after in zip(plain, expanded, strict=True):
        assert {k: v for k, v in after.items() if k != "caption"} == {k: v for k, v in before.items() if k != "caption"}
        if str(before["image_id"]) == generator["bad_id"]:
            assert after["caption"] == before["caption"]
            continue
        caption, sep, text = after["caption"].partition(" [SEP] ")
        assert caption == before["caption"] and sep and text.strip()
    summary = json.loads(Path(f"{generator['out']}.summary.json").read_text())
    counts = (summary["images"], summary["verbalized"], summary["undecodable"], summary["undecodable_ids"])
    assert counts == (len(plain), len(plain) - 1, 1, [generator["bad_id"]])
    assert summary["shards"] == -(-len(plain) // 16) and summary["shards_reused"] == 0
    assert summary["ckpt_path"] == str(generator["ckpt"].resolve()) and summary["model"]["mode"] == "query"


def test_an_interrupted_run_resumes_without_regenerating_finished_shards(
    generator: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "resumed.json"
    calls = {"n": 0}
    original = ImageVerbalizer.generate

    def failing(self: ImageVerbalizer, batch: VerbalizationBatch) -> list[str | None]:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("interrupted")
        return original(self, batch)

    monkeypatch.setattr(ImageVerbalizer, "generate", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_in_process("verbalize", *generator["args"], "--data.eval_batch_size", "16", "--out", str(out))
    assert not out.exists() and len(list(shard_dir(out).glob("shard-*.json"))) == 2
    calls["n"] = -1000
    done = run_in_process("verbalize", *generator["args"], "--data.eval_batch_size", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["shards_reused"] == 2 and calls["n"] == -1000 + summary["shards"] - 2
    assert out.read_text() == generator["out"].read_text()  # the same file as an uninterrupted run
    other = run_in_process("verbalize", *generator["args"], "--model.init_args.max_new_tokens", "5", "--out", str(out))
    assert other.returncode == 2 and "holds shards of another setup" in other.stderr


def test_an_image_id_without_an_index_line_is_an_input_error_naming_it(generator: dict, data_copy: Path) -> None:
    lines = (data_copy / "imgs.lineidx.new").read_text().splitlines(keepends=True)
    missing = lines[2].split("\t")[0]
    (data_copy / "imgs.lineidx.new").write_text("".join(lines[:2] + lines[3:]))
    done = run_in_process(
        "verbalize", *generator["args"], "--data.data_dir", str(data_copy), "--out", str(data_copy / "x.json")
    )
    assert done.returncode == 2
    assert f"have no line in {data_copy / 'imgs.lineidx.new'}, first: '{missing}'" in done.stderr


def test_two_ddp_ranks_write_their_shards_and_rank_zero_merges_the_same_file(generator: dict, tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    ddp = "--trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp".split()
    proc = train("verbalize", *generator["args"], *ddp, "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text() == generator["out"].read_text()
    assert json.loads(Path(f"{out}.summary.json").read_text())["shards_reused"] == 0
    assert "verbalize (rank 1)" in proc.stderr  # the second rank generated its share


def test_the_module_generates_nothing_for_a_missing_picture() -> None:
    module = ImageVerbalizer(num_beams=1, max_new_tokens=2)
    batch = VerbalizationBatch(["1", "2"], [None, Image.new("RGB", (64, 64))], ["a", "b"], [[], []])
    texts = module.generate(batch)
    assert texts[0] is None and isinstance(texts[1], str) and len(texts) == 2
