"""The release readers on a generated directory, and every bad input they must reject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.webqa_datamodule import WebQADataModule
from datamodules.webqa_release import Corpus, read_queries
from retrieval.errors import InputError


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_corpus_has_one_id_space_with_modality_flags(tiny_data_dir: Path) -> None:
    corpus = Corpus.from_release(tiny_data_dir)
    docs = _lines(tiny_data_dir / "all_docs.json")
    imgs = _lines(tiny_data_dir / "all_imgs.json")
    assert len(corpus) == len(docs) + len(imgs)
    assert corpus.is_image.sum() == len(imgs)
    first_img = str(imgs[0]["image_id"])
    assert corpus.is_image[corpus.index[first_img]]
    assert corpus.texts[corpus.index[first_img]] == imgs[0]["caption"]
    assert not corpus.is_image[corpus.index[docs[0]["snippet_id"]]]
    assert corpus.texts[corpus.index[docs[0]["snippet_id"]]] == docs[0]["fact"]


def test_caption_file_is_selectable(tiny_data_dir: Path) -> None:
    plain = Corpus.from_release(tiny_data_dir)
    expanded = Corpus.from_release(tiny_data_dir, caption_file="all_imgs_exp.json")
    assert plain.doc_ids == expanded.doc_ids
    i = int(plain.is_image.argmax())
    assert expanded.texts[i].startswith(plain.texts[i]) and "[SEP]" in expanded.texts[i]


def test_queries_are_read_as_published(tiny_data_dir: Path) -> None:
    raw = _lines(tiny_data_dir / "train.json")
    queries = read_queries(tiny_data_dir / "train.json")
    assert [q.qid for q in queries] == [r["qid"] for r in raw]
    assert queries[0].text == raw[0]["Q"]
    assert list(queries[0].image_positives) == raw[0]["img_posFacts"]
    assert list(queries[0].text_positives) == raw[0]["txt_posFacts"]


def test_datamodule_setup_reads_everything(tiny_data_dir: Path) -> None:
    dm = WebQADataModule(str(tiny_data_dir), num_workers=0)
    dm.setup("fit")
    assert len(dm.train_queries) == len(_lines(tiny_data_dir / "train.json"))
    dev = dm.eval_split("dev")
    assert set(dev.qrels) <= {q.qid for q in dev.queries}


@pytest.mark.parametrize("name", ["all_docs.json", "all_imgs.json", "train.json", "imgs.tsv", "imgs.lineidx.new"])
def test_missing_file_names_file_and_layout(data_copy: Path, name: str) -> None:
    (data_copy / name).unlink()
    with pytest.raises(
        InputError, match=rf"{name.replace('.', '[.]')}.*(data directory holds|imgs.lineidx.new|expected)"
    ):
        WebQADataModule(str(data_copy), num_workers=0).setup("fit")


def test_missing_test_qrels_is_an_error(data_copy: Path) -> None:
    (data_copy / "test_qrels.txt").unlink()
    with pytest.raises(InputError, match="test_qrels.txt"):
        WebQADataModule(str(data_copy), num_workers=0).setup("test")


def test_qrels_doc_missing_from_corpus(data_copy: Path) -> None:
    with open(data_copy / "dev_qrels.txt", "a") as f:
        f.write("unknownq\tghost_doc_1\t1\n")
    with pytest.raises(InputError, match=r"1 qid\(s\) not in the query file.*unknownq"):
        WebQADataModule(str(data_copy), num_workers=0).setup("validate")
    dev = _lines(data_copy / "dev.json")
    lines = (data_copy / "dev_qrels.txt").read_text().splitlines()[:-1] + [
        f"{dev[0]['qid']}\tghost_doc_1\t1",
        f"{dev[0]['qid']}\tghost_doc_2\t1",
    ]
    (data_copy / "dev_qrels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"2 doc id\(s\) not in the corpus, first: 'ghost_doc_1', 'ghost_doc_2'"):
        WebQADataModule(str(data_copy), num_workers=0).setup("validate")


def test_query_positive_missing_from_corpus(data_copy: Path) -> None:
    records = _lines(data_copy / "train.json")
    records[0]["txt_posFacts"] = ["nope_0"]
    _write(data_copy / "train.json", records)
    with pytest.raises(InputError, match=r"train.json: 1 doc id\(s\) not in the corpus, first: 'nope_0'"):
        WebQADataModule(str(data_copy), num_workers=0).setup("fit")


def test_duplicate_doc_id(data_copy: Path) -> None:
    docs = _lines(data_copy / "all_docs.json")
    _write(data_copy / "all_docs.json", docs + [docs[1]])
    with pytest.raises(
        InputError, match=rf"duplicate doc id '{docs[1]['snippet_id']}' \(first seen at .*all_docs.json:2\)"
    ):
        Corpus.from_release(data_copy)


def test_empty_query(data_copy: Path) -> None:
    records = _lines(data_copy / "dev.json")
    records[2]["Q"] = "   "
    _write(data_copy / "dev.json", records)
    with pytest.raises(InputError, match=rf"dev.json:3: query '{records[2]['qid']}' has an empty text"):
        read_queries(data_copy / "dev.json")


def test_broken_json_line_names_line(data_copy: Path) -> None:
    text = (data_copy / "train.json").read_text().splitlines()
    text[4] = text[4][:-5]
    (data_copy / "train.json").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"train.json:5: not valid JSON"):
        read_queries(data_copy / "train.json")


def test_image_doc_without_image_line(data_copy: Path) -> None:
    imgs = _lines(data_copy / "all_imgs.json")
    _write(data_copy / "all_imgs.json", imgs + [{"title": "x", "caption": "y", "image_id": 424242}])
    with pytest.raises(InputError, match=r"1 image doc\(s\) .* no line in imgs.lineidx.new, first: '424242'"):
        WebQADataModule(str(data_copy), num_workers=0).setup("validate")


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data directory .* does not exist"):
        WebQADataModule(str(tmp_path / "nowhere"), num_workers=0).setup("fit")
