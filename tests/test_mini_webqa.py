"""The synthetic WebQA generator: release layout, determinism, and a task that is not trivial."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from datamodules.image_store import ImageStore
from datamodules.mini_webqa import generate_mini_webqa, main, make_config, write_image_tsv
from retrieval.errors import InputError

FILES = {
    "train.json",
    "dev.json",
    "test.json",
    "all_docs.json",
    "all_imgs.json",
    "all_imgs_exp.json",
    "imgs.tsv",
    "imgs.lineidx.new",
    "dev_qrels.txt",
    "test_qrels.txt",
    "README.txt",
}
QUERY_KEYS = ["qid", "Q", "A", "img_posFacts", "img_negFacts", "txt_posFacts", "txt_negFacts"]
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_mini_webqa(tmp_path_factory.mktemp("tiny"), size="tiny", seed=0)  # timed: bench/bench_mini_webqa.py


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _queries(root: Path) -> dict[str, list[dict]]:
    return {s: _jsonl(root / f"{s}.json") for s in SPLITS}


def _positives(query: dict) -> list[str]:
    return query["img_posFacts"] + query["txt_posFacts"]


def test_layout_and_readme(tiny: Path) -> None:
    assert {p.name for p in tiny.iterdir()} == FILES
    readme = (tiny / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "size=tiny seed=0" in readme


def test_deterministic_per_seed(tiny: Path, tmp_path: Path) -> None:
    again = generate_mini_webqa(tmp_path / "again", size="tiny", seed=0)
    other = generate_mini_webqa(tmp_path / "other", size="tiny", seed=1)
    for name in FILES:
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name
    for name in FILES - {"README.txt"}:
        assert (other / name).read_bytes() != (tiny / name).read_bytes(), name


def test_same_bytes_in_a_fresh_interpreter(tiny: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [sys.executable, "-m", "datamodules.mini_webqa", "--out", str(tmp_path / "fresh"), "--size", "tiny"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    for name in FILES:
        assert (tmp_path / "fresh" / name).read_bytes() == (tiny / name).read_bytes(), name


def test_corpus_schema(tiny: Path) -> None:
    docs, imgs, exp = (_jsonl(tiny / n) for n in ("all_docs.json", "all_imgs.json", "all_imgs_exp.json"))
    assert 60 <= len(docs) + len(imgs) <= 120
    assert all(list(d) == ["title", "fact", "url", "snippet_id"] for d in docs)
    assert all(re.fullmatch(r"[0-9a-f]{32}_\d+", d["snippet_id"]) for d in docs)
    assert len({d["snippet_id"] for d in docs}) == len(docs)
    assert all(list(i) == ["title", "caption", "image_id"] and isinstance(i["image_id"], int) for i in imgs)
    assert len({i["image_id"] for i in imgs}) == len(imgs)
    assert [(i["title"], i["image_id"]) for i in imgs] == [(e["title"], e["image_id"]) for e in exp]
    for plain, verbal in zip(imgs, exp):
        assert list(verbal) == ["title", "caption", "image_id"]
        assert verbal["caption"].startswith(plain["caption"] + " [SEP] ")
        assert re.search(r"background$", verbal["caption"])


def test_query_schema(tiny: Path) -> None:
    docs = {d["snippet_id"] for d in _jsonl(tiny / "all_docs.json")}
    imgs = {str(i["image_id"]) for i in _jsonl(tiny / "all_imgs.json")}
    queries = _queries(tiny)
    assert [len(queries[s]) for s in SPLITS] == [40, 10, 10]
    assert len({q["qid"] for qs in queries.values() for q in qs}) == 60
    for split, qs in queries.items():
        assert sum(bool(q["img_posFacts"]) for q in qs) == len(qs) // 2, split
        for q in qs:
            assert list(q) == QUERY_KEYS and isinstance(q["Q"], str) and len(q["A"]) == 1
            assert bool(q["img_posFacts"]) != bool(q["txt_posFacts"])
            assert 1 <= len(_positives(q)) <= 2
            assert set(q["img_posFacts"] + q["img_negFacts"]) <= imgs
            assert set(q["txt_posFacts"] + q["txt_negFacts"]) <= docs
            assert not set(_positives(q)) & set(q["img_negFacts"] + q["txt_negFacts"])
            assert q["img_negFacts"] and q["txt_negFacts"]


def test_qrels_match_queries(tiny: Path) -> None:
    corpus = {d["snippet_id"] for d in _jsonl(tiny / "all_docs.json")}
    corpus |= {str(i["image_id"]) for i in _jsonl(tiny / "all_imgs.json")}
    for split in ("dev", "test"):
        rows = [line.split("\t") for line in (tiny / f"{split}_qrels.txt").read_text().splitlines()]
        assert all(len(r) == 3 and r[2] == "1" and r[1] in corpus for r in rows)
        expected = {(q["qid"], d) for q in _jsonl(tiny / f"{split}.json") for d in _positives(q)}
        assert {(r[0], r[1]) for r in rows} == expected


def test_images_readable_through_store(tiny: Path) -> None:
    store = ImageStore(tiny)
    ids = [str(i["image_id"]) for i in _jsonl(tiny / "all_imgs.json")]
    assert store.ids() == ids
    raw = (tiny / "imgs.tsv").read_bytes()
    for image_id in ids:
        assert raw[store.offset(image_id) :].split(b"\n", 1)[0].startswith(image_id.encode() + b"\t")
        assert store.load(image_id).size == (64, 64)


def test_captions_alone_cannot_tell_images_apart(tiny: Path) -> None:
    store = ImageStore(tiny)
    by_caption: dict[str, list[str]] = defaultdict(list)
    for img in _jsonl(tiny / "all_imgs.json"):
        by_caption[img["caption"]].append(str(img["image_id"]))
    groups = [ids for ids in by_caption.values() if len(ids) >= 3]
    assert len(groups) >= len(by_caption) // 2
    for ids in groups:
        pixels = [np.asarray(store.load(i), dtype=np.float32) for i in ids]
        assert all(np.abs(a - b).mean() > 5 for k, a in enumerate(pixels) for b in pixels[k + 1 :])
    caption_of = {str(i["image_id"]): i["caption"] for i in _jsonl(tiny / "all_imgs.json")}
    image_queries = [q for qs in _queries(tiny).values() for q in qs if q["img_posFacts"]]
    same = [
        q
        for q in image_queries
        if {caption_of[i] for i in q["img_negFacts"]} & {caption_of[i] for i in q["img_posFacts"]}
    ]
    assert len(same) == len(image_queries)


def test_held_out_positives_and_unasked_docs(tiny: Path) -> None:
    queries = _queries(tiny)
    train = {d for q in queries["train"] for d in _positives(q)}
    for split in ("dev", "test"):
        assert not {d for q in queries[split] for d in _positives(q)} & train
    asked = {d for qs in queries.values() for q in qs for d in _positives(q)}
    corpus = {d["snippet_id"] for d in _jsonl(tiny / "all_docs.json")}
    assert corpus - asked


def test_overrides_and_bad_options(tmp_path: Path) -> None:
    out = generate_mini_webqa(tmp_path / "o", size="tiny", seed=2, image_size=32, n_train=20)
    assert len(_jsonl(out / "train.json")) == 20
    assert ImageStore(out).load(ImageStore(out).ids()[0]).size == (32, 32)
    assert "image_size=32" in (out / "README.txt").read_text()
    with pytest.raises(InputError, match="unknown mini_webqa option.*colours"):
        make_config("tiny", colours=3)
    with pytest.raises(InputError, match="unknown mini_webqa size 'huge'"):
        make_config("huge")
    with pytest.raises(InputError, match="image_size=4 is out of range"):
        make_config("tiny", image_size=4)
    with pytest.raises(InputError, match=r"only \d+ (train|dev) (image|text) queries can be drawn, \d+ asked; lower"):
        generate_mini_webqa(tmp_path / "x", size="tiny", n_dev=500)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        generate_mini_webqa(tmp_path / "file", size="tiny")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path / "cli"), "--size", "tiny", "--seed", "3"]) == 0
    assert "size=tiny seed=3" in (tmp_path / "cli" / "README.txt").read_text()
    assert "wrote" in capsys.readouterr().out


def test_write_image_tsv(tmp_path: Path) -> None:
    ids = write_image_tsv(tmp_path / "imgs.tsv", tmp_path / "imgs.lineidx.new", 5, image_size=24, seed=1)
    store = ImageStore(tmp_path)
    assert store.ids() == ids and len(set(ids)) == 5
    assert all(store.load(i).size == (24, 24) for i in ids)
    with pytest.raises(InputError, match="n_images=0"):
        write_image_tsv(tmp_path / "a.tsv", tmp_path / "a.idx", 0)
