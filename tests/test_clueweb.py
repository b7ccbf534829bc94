"""ClueWeb22-MM (MARVEL's parquet release): the readers return the data written, bad inputs are one-line
InputErrors, and a tiny ClueWeb22-MM directory trains and evaluates through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from commands.cli import main
from datamodules.clueweb_release import ParquetImageStore, read_clueweb_corpus, read_parquet_queries
from datamodules.image_store import BadImageError, ImageStore
from datamodules.webqa_datamodule import WebQADataModule
from datamodules.webqa_release import Corpus, read_queries
from retrieval.errors import InputError

from builders import write_clueweb_mm

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "marvel_dpr_tiny.yaml"


@pytest.fixture(scope="module")
def clueweb_dir(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mini-WebQA tiny in the ClueWeb22-MM layout (read-only: copy it before damaging it)."""
    return write_clueweb_mm(tiny_data_dir, tmp_path_factory.mktemp("clueweb") / "ClueWeb22-MM")


@pytest.fixture
def clueweb_copy(clueweb_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clueweb_dir, tmp_path / "ClueWeb22-MM"))


def test_readers_return_the_queries_docs_and_picture_bytes_written(tiny_data_dir: Path, clueweb_dir: Path) -> None:
    webqa = Corpus.from_release(tiny_data_dir)
    corpus = read_clueweb_corpus(clueweb_dir)
    assert corpus.doc_ids == webqa.doc_ids and corpus.texts == webqa.texts
    assert (corpus.is_image == webqa.is_image).all()
    for query, source in zip(
        read_parquet_queries(clueweb_dir / "dev.parquet"), read_queries(tiny_data_dir / "dev.json")
    ):
        assert (query.qid, query.text, query.image_negatives) == (source.qid, source.text, source.image_negatives)
        assert query.positives == source.positives[:1]  # ClueWeb22-MM: one positive a query
    store, source = ParquetImageStore(clueweb_dir / "image.parquet"), ImageStore(tiny_data_dir / "imgs.tsv")
    assert pq.ParquetFile(clueweb_dir / "image.parquet").metadata.num_row_groups > 2  # reads span row groups
    assert sorted(store.ids()) == sorted(source.ids())
    for image_id in store.ids()[::-1]:  # backwards: every row group is read again
        assert store.read_bytes(image_id) == source.read_bytes(image_id)
    assert store.load(store.ids()[0]).size == source.load(store.ids()[0]).size


def _rewrite(path: Path, change) -> None:  # noqa: ANN001
    table = pq.read_table(path)
    pq.write_table(change(table), path, row_group_size=16)


def _break_first_picture(table):  # noqa: ANN001, ANN202
    pictures = table.column("img").to_pylist()
    pictures[0] = b"not a picture"
    return table.set_column(table.schema.get_field_index("img"), "img", pa.array(pictures, pa.binary()))


def _drop_positive(table):  # noqa: ANN001, ANN202
    for name in ("text_id", "img_id"):
        values = table.column(name).to_pylist()
        values[0] = None
        table = table.set_column(
            table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type)
        )
    return table


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "text.parquet").unlink(), r"missing text corpus: .*text.parquet does not exist"),
        (lambda d: (d / "image.parquet").write_bytes(b"PAR1 junk"), r"image.parquet: not a readable parquet file"),
        (
            lambda d: _rewrite(d / "text.parquet", lambda t: t.drop_columns(["surround"])),
            r"text.parquet: missing column\(s\) \['surround'\]",
        ),
        (
            lambda d: _rewrite(d / "train.parquet", _drop_positive),
            r"train.parquet row 0: .* neither text_id nor img_id",
        ),
        (lambda d: (d / "test_qrels.txt").write_text("q0\tno-such-doc\t1\n"), r"test_qrels.txt: 1 qid\(s\) not in"),
        (
            lambda d: (d / "dev_qrels.txt").write_text((d / "dev_qrels.txt").read_text().replace("\t1\n", "x\t1\n", 1)),
            r"dev_qrels.txt: 1 doc id\(s\) not in",
        ),
    ],
    ids=["missing-file", "not-parquet", "missing-column", "no-positive", "unknown-qid", "unknown-doc"],
)
def test_bad_inputs_stop_at_load_time_with_one_line(clueweb_copy: Path, damage, message: str) -> None:  # noqa: ANN001
    damage(clueweb_copy)
    datamodule = WebQADataModule(str(clueweb_copy), negatives_file="webqa", num_workers=0, processor=object())
    with pytest.raises(InputError, match=message) as error:
        datamodule.setup(None)
    assert "\n" not in str(error.value)


def test_an_undecodable_picture_names_its_id_and_row_group_unless_skipped(clueweb_copy: Path) -> None:
    _rewrite(clueweb_copy / "image.parquet", _break_first_picture)
    store = ParquetImageStore(clueweb_copy / "image.parquet")
    bad = store.ids()[0]
    with pytest.raises(BadImageError, match=rf"image '{bad}' in .*image.parquet \(row group 0, row 0\): cannot decode"):
        store.load(bad)
    assert store.load(store.ids()[1]) is not None
    skipping = ParquetImageStore(clueweb_copy / "image.parquet", skip_bad_images=True)
    assert skipping.load(bad) is None and skipping.bad_ids == {bad}
    with pytest.raises(InputError, match="unknown image id 'no-such-image'"):
        store.load("no-such-image")


def test_clueweb_tiny_data_trains_and_evaluates(clueweb_dir: Path, tmp_path: Path) -> None:
    common = ["--config", str(CONFIG), "--data.data_dir", str(clueweb_dir), "--data.num_workers", "0"]
    quiet = "--trainer.enable_progress_bar false --trainer.enable_model_summary false".split()
    fit = [*common, *quiet, *"--data.batch_size 8 --trainer.max_epochs 1 --trainer.check_val_every_n_epoch 1".split()]
    fit += "--model.encoder.init_args.text_length 32 --trainer.limit_train_batches 3".split()
    assert main(["fit", *fit, "--run_dir", str(tmp_path / "run")]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert (
        main(["test", *common, *quiet, "--model.encoder.init_args.text_length", "32", "--ckpt_path", str(checkpoint)])
        == 0
    )
    evaluation = next((tmp_path / "run" / "eval").glob("test-step*"))
    metrics = json.loads((evaluation / "metrics.json").read_text())
    qrels = {line.split("\t")[0] for line in (clueweb_dir / "test_qrels.txt").read_text().splitlines()}
    ranked = {line.split()[0] for line in (evaluation / "run.trec").read_text().splitlines()}
    assert ranked == qrels and 0 < metrics["MRR@10"] <= 100
