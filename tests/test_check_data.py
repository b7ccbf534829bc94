"""Issue 12: a data directory checked before a long run (``train.py check-data``), one-line errors from DataLoader
workers, and dev/test positives that disagree with their qrels.

Each corruption of a tiny mini-WebQA copy is run through ``check-data`` (every error listed, exit status 2) and
``fit`` (the first error, the same line, exit status 2), in this process through ``commands.cli.main`` (the function
``train.py`` calls) to keep the suite fast; a few runs go through ``python train.py`` end to end.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from torch._utils import ExceptionWrapper

from commands.cli import RUN_DIR_ENV, main
from datamodules.image_check import check_images
from datamodules.image_store import BadImageError, ImageStore
from datamodules.webqa_datamodule import WebQADataModule
from datamodules.webqa_release import RELEASE_LAYOUT
from retrieval.errors import DataWarning, InputError, error_message, exit_status

from builders import corrupt_image
from cli_runs import tiny_args, train, train_in_process

TINY = "configs/tiny/univl_dr_tiny.yaml"


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that exited with status 2, the last on stderr (no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], proc.stderr
    return lines[-1]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ------------------------------------------------------------------ 1. errors raised in DataLoader workers
def test_bad_image_in_a_loader_worker_is_one_line(data_copy: Path, tmp_path: Path) -> None:
    image_id, offset = corrupt_image(data_copy)
    proc = train(
        "fit",
        *tiny_args(data_copy, tmp_path / "run"),
        *"--data.num_workers 1 --trainer.num_sanity_val_steps 1 --data.eval_batch_size 128".split(),
        timeout=200,
    )
    assert error_line(proc) == (
        f"error: image '{image_id}' at byte offset {offset} in {data_copy / 'imgs.tsv'}: cannot decode "
        "(UnidentifiedImageError: cannot identify image file); re-export it or pass skip_bad_images=True"
    )


def _reraised_from_a_worker(error: Exception) -> Exception:
    """``error`` as torch re-raises it in the main process after a DataLoader worker raised it."""
    try:
        raise error
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 3")
    try:
        wrapper.reraise()
    except Exception as reraised:
        return reraised
    raise AssertionError("reraise did not raise")


def test_error_message_of_a_worker_error_is_the_original_line() -> None:
    message = "image '7' at byte offset 12 in imgs.tsv: cannot decode (OSError: x); re-export it"
    reraised = _reraised_from_a_worker(BadImageError(message))
    assert isinstance(reraised, BadImageError) and str(reraised).startswith("Caught BadImageError in DataLoader")
    assert error_message(reraised) == message
    assert error_message(_reraised_from_a_worker(InputError("plain: one line"))) == "plain: one line"
    assert error_message(InputError("raised in this process")) == "raised in this process"


def test_exit_status_prints_the_worker_traceback_only_when_debugging(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail() -> int:
        raise _reraised_from_a_worker(BadImageError("bad image 7"))

    monkeypatch.delenv("UNIVL_DEBUG", raising=False)
    assert exit_status(fail) == 2
    assert capsys.readouterr().err == "error: bad image 7\n"
    monkeypatch.setenv("UNIVL_DEBUG", "1")
    assert exit_status(fail) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in DataLoader worker process 3" in err and err.endswith("\nerror: bad image 7\n")


# ------------------------------------------------------------------ 3. dev/test positives vs their qrels
def disagree_with_qrels(data_dir: Path) -> list[str]:
    """Give dev query 0 a positive that is not in the corpus and dev query 1 another corpus doc than its qrels;
    return their qids."""
    records = _lines(data_dir / "dev.json")
    records[0]["txt_posFacts"] = [*records[0]["txt_posFacts"], "ghost_doc"]
    other = next(d["snippet_id"] for d in _lines(data_dir / "all_docs.json"))
    records[1]["img_posFacts"], records[1]["txt_posFacts"] = [], [other]
    _write(data_dir / "dev.json", records)
    return [records[0]["qid"], records[1]["qid"]]


def positives_warnings(data_dir: Path, qids: list[str]) -> list[str]:
    return [
        f"{data_dir / 'dev.json'}: 1 positive doc id(s) not in the corpus, first: 'ghost_doc'; evaluation judges by "
        "dev_qrels.txt only",
        f"{data_dir / 'dev.json'}: the positives of 2 of 10 queries differ from their lines in "
        f"{data_dir / 'dev_qrels.txt'}, first: {qids[0]!r}, {qids[1]!r}; evaluation judges by the qrels, fix "
        "whichever is wrong",
    ]


def test_dev_positives_that_differ_from_the_qrels_are_a_load_time_warning(data_copy: Path) -> None:
    qids = disagree_with_qrels(data_copy)
    dm = WebQADataModule(str(data_copy), num_workers=0)
    with pytest.warns(DataWarning) as caught:
        dm.setup("validate")
    assert [str(w.message) for w in caught] == positives_warnings(data_copy, qids)
    assert len(dm.eval_split("dev").qrels) == 10  # evaluation still judges by the qrels


def test_dev_positives_that_differ_from_the_qrels_are_warned_by_fit_and_listed_by_check_data(
    data_copy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    qids = disagree_with_qrels(data_copy)
    expected = positives_warnings(data_copy, qids)
    fit = train(
        "fit",
        *tiny_args(data_copy, tmp_path / "run"),
        *"--trainer.max_steps 1 --trainer.limit_val_batches 0".split(),
        timeout=300,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert problem_lines(fit.stderr) == [f"warning: {w}" for w in expected], fit.stderr
    check = train_in_process(  # check-data prints its problem lines itself: in this process too
        capfd,
        "check-data",
        "--config",
        TINY,
        "--data.data_dir",
        str(data_copy),
        "--report",
        str(tmp_path / "report.json"),
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert problem_lines(check.stderr) == [f"warning: {w}" for w in expected]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(p["kind"], p["ids"]) for p in report["problems"]] == [
        ("unknown_positive", ["ghost_doc"]),
        ("positives_differ_from_qrels", qids),
    ]
    assert "check-data: 0 error(s), 2 warning(s): nothing would stop a run" in check.stdout


# ------------------------------------------------------------------ 2. check-data
def problem_lines(stderr: str) -> list[str]:
    """The ``warning:``/``error:`` lines of a command's stderr (not the progress bar)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith(("warning: ", "error: "))]


def run_main(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python train.py ARGS`` in this process: (exit status, stdout, stderr)."""
    capfd.readouterr()
    try:
        status = main(args)
    except SystemExit as stop:  # the parser's errors
        status = int(stop.code)
    out, err = capfd.readouterr()
    return status, out, err


@dataclass
class Case:
    """A corruption's check-data errors (in order) and fit's error (default: the first); extra arguments of both."""

    errors: list[str]
    fit: str | None = None
    args: list[str] = field(default_factory=list)


def _qid(data_dir: Path, split: str, i: int = 0) -> str:
    return _lines(data_dir / f"{split}.json")[i]["qid"]


def missing_query_file(d: Path) -> Case:
    (d / "train.json").unlink()
    return Case([f"missing query file: {d / 'train.json'} does not exist; a data directory holds {RELEASE_LAYOUT}"])


def missing_qrels(d: Path) -> Case:
    (d / "dev_qrels.txt").unlink()
    path = d / "dev_qrels.txt"
    return Case(
        [f"missing dev qrels: {path} does not exist; evaluation needs dev_qrels.txt (<qid>\\t<docid>\\t1 lines)"]
    )


def missing_data_dir(d: Path) -> Case:
    missing = d.parent / "nowhere"
    return Case(
        [
            f"data directory {missing} does not exist; fix data.data_dir, or set it to mini-webqa:small for the "
            "embedded synthetic dataset"
        ],
        args=["--data.data_dir", str(missing)],
    )


def broken_json(d: Path) -> Case:
    lines = (d / "train.json").read_text().splitlines()
    lines[4] = "{not json"
    (d / "train.json").write_text("\n".join(lines) + "\n")
    path = d / "train.json"
    return Case(
        [
            f"{path}:5: not valid JSON (Expecting property name enclosed in double quotes); expected one JSON "
            "object per line"
        ]
    )


def missing_field(d: Path) -> Case:
    docs = _lines(d / "all_docs.json")
    del docs[2]["fact"]
    _write(d / "all_docs.json", docs)
    return Case([f"{d / 'all_docs.json'}:3: missing field 'fact'; record has ['snippet_id', 'title', 'url']"])


def duplicate_doc_id(d: Path) -> Case:
    docs = _lines(d / "all_docs.json")
    _write(d / "all_docs.json", [*docs, docs[1]])
    return Case(
        [
            f"{d / 'all_docs.json'}:{len(docs) + 1}: duplicate doc id {docs[1]['snippet_id']!r} (first seen at "
            f"{d / 'all_docs.json'}:2); doc ids must be unique across all_docs.json and all_imgs.json"
        ]
    )


def empty_query(d: Path) -> Case:
    records = _lines(d / "dev.json")
    records[2]["Q"] = "   "
    _write(d / "dev.json", records)
    return Case([f"{d / 'dev.json'}:3: query {records[2]['qid']!r} has an empty text 'Q'; remove it or fill it in"])


def duplicate_qid(d: Path) -> Case:
    records = _lines(d / "train.json")
    records[1]["qid"] = records[0]["qid"]
    _write(d / "train.json", records)
    return Case([f"{d / 'train.json'}:2: duplicate qid {records[0]['qid']!r}; qids must be unique within a file"])


def unknown_train_positive(d: Path) -> Case:
    records = _lines(d / "train.json")
    records[0]["txt_posFacts"] = ["nope_0"]
    _write(d / "train.json", records)
    return Case(
        [
            f"{d / 'train.json'}: 1 doc id(s) not in the corpus, first: 'nope_0'; check the data directory and "
            "caption file"
        ]
    )


def training_query_without_positive(d: Path) -> Case:
    records = _lines(d / "train.json")
    records[3]["img_posFacts"] = records[3]["txt_posFacts"] = []
    _write(d / "train.json", records)
    return Case(
        [
            f"{d / 'train.json'}: 1 training queries have no positive, first: {records[3]['qid']!r}; every training "
            "query needs img_posFacts or txt_posFacts"
        ]
    )


def qrels_unknown_ids(d: Path) -> Case:
    with open(d / "dev_qrels.txt", "a") as handle:
        handle.write(f"unknownq\t{_lines(d / 'all_docs.json')[0]['snippet_id']}\t1\n")
        handle.write(f"{_qid(d, 'dev')}\tghost_doc_1\t1\n")
    path = d / "dev_qrels.txt"
    return Case(
        [
            f"{path}: 1 qid(s) not in the query file, first: 'unknownq'",
            f"{path}: 1 doc id(s) not in the corpus, first: 'ghost_doc_1'; check the data directory and caption file",
        ]
    )


def bad_qrels_line(d: Path) -> Case:
    lines = (d / "dev_qrels.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0]
    (d / "dev_qrels.txt").write_text("\n".join(lines) + "\n")
    return Case(
        [f"{d / 'dev_qrels.txt'}:3: expected 'qid docid rel' or 'qid 0 docid rel', got 2 columns; fix the line"]
    )


def image_doc_without_line(d: Path) -> Case:
    imgs = _lines(d / "all_imgs.json")
    _write(d / "all_imgs.json", [*imgs, {"title": "x", "caption": "y", "image_id": 424242}])
    return Case(["1 image doc(s) of all_imgs.json have no line in imgs.lineidx.new, first: '424242'"])


def malformed_lineidx(d: Path) -> Case:
    lines = (d / "imgs.lineidx.new").read_text().splitlines()
    image_id = lines[2].split("\t")[0]
    lines[2] = "abc"
    (d / "imgs.lineidx.new").write_text("\n".join(lines) + "\n")
    return Case(
        [
            f"{d / 'imgs.lineidx.new'} line 3 is malformed ('abc'): expected '<image_id>\\t<byte offset>'; fix or "
            "regenerate the index",
            f"1 image doc(s) of all_imgs.json have no line in imgs.lineidx.new, first: {image_id!r}",
        ]
    )


def duplicate_lineidx_id(d: Path) -> Case:
    lines = (d / "imgs.lineidx.new").read_text().splitlines()
    (d / "imgs.lineidx.new").write_text("\n".join([*lines, lines[0]]) + "\n")
    image_id = lines[0].split("\t")[0]
    return Case(
        [
            f"image id {image_id!r} appears twice in {d / 'imgs.lineidx.new'} (lines 1 and {len(lines) + 1}); every "
            "image id must be listed once"
        ]
    )


def offset_past_end(d: Path) -> Case:
    lines = (d / "imgs.lineidx.new").read_text().splitlines()
    image_id = lines[1].split("\t")[0]
    size = (d / "imgs.tsv").stat().st_size
    lines[1] = f"{image_id}\t{size + 10}"
    (d / "imgs.lineidx.new").write_text("\n".join(lines) + "\n")
    return Case(
        [
            f"{d / 'imgs.lineidx.new'} line 2: offset {size + 10} of image {image_id!r} is past the end of "
            f"{d / 'imgs.tsv'} ({size} bytes); the index does not match the tsv, regenerate imgs.lineidx.new",
            f"1 image doc(s) of all_imgs.json have no line in imgs.lineidx.new, first: {image_id!r}",
        ]
    )


def index_points_at_another_line(d: Path) -> Case:
    lines = (d / "imgs.lineidx.new").read_text().splitlines()
    (a, a_offset), (b, b_offset) = (line.split("\t") for line in lines[:2])
    lines[:2] = [f"{a}\t{b_offset}", f"{b}\t{a_offset}"]
    (d / "imgs.lineidx.new").write_text("\n".join(lines) + "\n")
    tsv, lineidx = d / "imgs.tsv", d / "imgs.lineidx.new"
    a_error = (
        f"the line at byte offset {b_offset} of {tsv} holds image id {b!r}, not image {a!r}: {lineidx} does not "
        "match the tsv, regenerate it"
    )
    b_error = (
        f"the line at byte offset {a_offset} of {tsv} holds image id {a!r}, not image {b!r}: {lineidx} does not "
        "match the tsv, regenerate it"
    )
    return Case([b_error, a_error], fit=a_error)  # check-data reads in file order, the corpus loader in corpus order


def undecodable_image(d: Path) -> Case:
    image_id, offset = corrupt_image(d, line=3)
    return Case(
        [
            f"image {image_id!r} at byte offset {offset} in {d / 'imgs.tsv'}: cannot decode (UnidentifiedImageError: "
            "cannot identify image file); re-export it or pass skip_bad_images=True"
        ]
    )


def bad_base64(d: Path) -> Case:
    lines = (d / "imgs.tsv").read_bytes().split(b"\n")
    image_id = lines[5].split(b"\t")[0].decode()
    offset = sum(len(line) + 1 for line in lines[:5])
    lines[5] = lines[5][:-3] + b"@@@"  # same length: the offsets stay right
    (d / "imgs.tsv").write_bytes(b"\n".join(lines))
    return Case(
        [
            f"image {image_id!r} at byte offset {offset} in {d / 'imgs.tsv'}: bad base64 (Only base64 data is "
            "allowed); re-export the image file"
        ]
    )


def missing_negatives_file(d: Path) -> Case:
    from cli_runs import ROOT

    return Case(
        [
            f"negatives file train_negatives.json not found (looked in {d / 'train_negatives.json'} and "
            f"{ROOT / 'train_negatives.json'}); mine one with: python train.py mine --config ... --ckpt_path ..., "
            "or set data.negatives_file to an existing file, webqa or null"
        ],
        args=["--data.negatives_file", "train_negatives.json"],
    )


CORRUPTIONS: dict[str, Callable[[Path], Case]] = {
    f.__name__: f
    for f in (
        missing_data_dir,
        missing_query_file,
        missing_qrels,
        broken_json,
        missing_field,
        duplicate_doc_id,
        empty_query,
        duplicate_qid,
        unknown_train_positive,
        training_query_without_positive,
        qrels_unknown_ids,
        bad_qrels_line,
        image_doc_without_line,
        malformed_lineidx,
        duplicate_lineidx_id,
        offset_past_end,
        index_points_at_another_line,
        undecodable_image,
        bad_base64,
        missing_negatives_file,
    )
}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in this process: the run directory they hand to their ranks is undone afterwards."""
    monkeypatch.setenv(RUN_DIR_ENV, "")


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_check_data_lists_every_error_and_fit_stops_at_the_first_with_the_same_line(
    corruption: str, data_copy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    case = CORRUPTIONS[corruption](data_copy)
    report = tmp_path / "report.json"
    data = ["--config", TINY, "--data.data_dir", str(data_copy), *case.args]
    status, out, err = run_main(["check-data", *data, "--report", str(report), "--workers", "0"], capfd)
    assert status == 2, err
    assert [line for line in problem_lines(err) if line.startswith("error:")] == [f"error: {e}" for e in case.errors]
    assert "Traceback" not in err
    written = json.loads(report.read_text())
    assert not written["ok"] and [p["message"] for p in written["problems"] if p["severity"] == "error"] == case.errors
    fit_args = [*tiny_args(data_copy, tmp_path / "run"), *case.args]
    fit_args += "--trainer.num_sanity_val_steps 1 --data.eval_batch_size 128 --trainer.max_steps 1".split()
    status, out, err = run_main(["fit", *fit_args], capfd)
    assert status == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == f"error: {case.fit or case.errors[0]}" and "Traceback" not in err


@pytest.mark.usefixtures("cli_env")
def test_check_data_reports_every_problem_at_once(
    data_copy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cases = [f(data_copy) for f in (duplicate_doc_id, broken_json, bad_qrels_line, undecodable_image, bad_base64)]
    report = tmp_path / "report.json"
    data = ["--config", TINY, "--data.data_dir", str(data_copy)]
    status, out, err = run_main(["check-data", *data, "--report", str(report), "--workers", "2"], capfd)
    assert status == 2
    errors = [e for case in cases for e in case.errors]
    assert [line for line in problem_lines(err) if line.startswith("error:")] == [f"error: {e}" for e in errors]
    qid = (data_copy / "dev_qrels.txt").read_text().splitlines()[2].split("\t")[0]
    assert [line for line in problem_lines(err) if line.startswith("warning:")] == [
        f"warning: {data_copy / 'dev.json'}: the positives of 1 of 10 queries differ from their lines in "
        f"{data_copy / 'dev_qrels.txt'}, first: {qid!r}; evaluation judges by the qrels, fix whichever is wrong"
    ]  # the qrels line that could not be read
    written = json.loads(report.read_text())
    bad = [p for p in written["problems"] if p["kind"] == "bad_image"]
    assert [(p["ids"], p["offset"]) for p in bad] == [([i], o) for i, o in _bad_images(data_copy)]
    assert written["undecodable_images"] == [i for i, _ in _bad_images(data_copy)]
    assert "check-data: 5 error(s), 1 warning(s): a run would stop" in out
    status, out, err = run_main(["fit", *tiny_args(data_copy, tmp_path / "run")], capfd)
    assert status == 2 and err.strip().splitlines()[-1] == f"error: {errors[0]}"


def _bad_images(data_dir: Path) -> list[tuple[str, int]]:
    """(id, offset) of the images ``undecodable_image`` and ``bad_base64`` damaged (tsv lines 3 and 5)."""
    lines = (data_dir / "imgs.tsv").read_bytes().split(b"\n")
    return [(lines[i].split(b"\t")[0].decode(), sum(len(line) + 1 for line in lines[:i])) for i in (3, 5)]


@pytest.mark.usefixtures("cli_env")
def test_check_data_warns_about_what_a_run_goes_on_with(
    data_copy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    docs, imgs = _lines(data_copy / "all_docs.json"), _lines(data_copy / "all_imgs.json")
    docs[4]["fact"], imgs[6]["caption"] = " ", ""
    _write(data_copy / "all_docs.json", docs)
    _write(data_copy / "all_imgs.json", imgs)
    tsv = (data_copy / "imgs.tsv").read_bytes()
    (data_copy / "imgs.tsv").write_bytes(tsv + b"999999\t" + tsv.split(b"\n")[0].split(b"\t")[1] + b"\n")
    with open(data_copy / "imgs.lineidx.new", "a") as handle:
        handle.write(f"999999\t{len(tsv)}\n")  # an image that no caption file names
    qrels = (data_copy / "test_qrels.txt").read_text().splitlines()
    (data_copy / "test_qrels.txt").write_text("\n".join([*qrels, qrels[1], qrels[1]]) + "\n")
    dev = _lines(data_copy / "dev.json")
    train = _lines(data_copy / "train.json")
    dev[0], qid = {**train[0]}, train[0]["qid"]  # a training query that is also evaluated
    _write(data_copy / "dev.json", dev)
    with open(data_copy / "dev_qrels.txt", "w") as handle:
        handle.writelines(f"{q['qid']}\t{d}\t1\n" for q in dev for d in q["img_posFacts"] + q["txt_posFacts"])
    report = tmp_path / "report.json"
    status, out, err = run_main(
        ["check-data", "--data.data_dir", str(data_copy), "--report", str(report), "--workers", "0"], capfd
    )
    assert status == 0, err
    assert problem_lines(err) == [
        f"warning: {data_copy / 'all_docs.json'}: 1 text doc(s) have an empty 'fact', first: "
        f"{docs[4]['snippet_id']!r}; fill them in or remove them",
        f"warning: {data_copy / 'all_imgs.json'}: 1 image doc(s) have an empty caption, first: "
        f"'{imgs[6]['image_id']}'; fill them in or remove them",
        f"warning: {data_copy / 'imgs.lineidx.new'}: 1 image(s) are not image docs of all_imgs.json, first: "
        "'999999'; no run reads them",
        f"warning: {data_copy / 'test_qrels.txt'}: 2 line(s) repeat an earlier line, first: line {len(qrels) + 1} "
        f"({' '.join(qrels[1].split())!r}) repeats line 2; remove the repeats",
        f"warning: {data_copy}: 1 qid(s) appear in more than one of train.json, dev.json, test.json, first: "
        f"{qid!r}; a query trained on must not be evaluated",
    ]
    written = json.loads(report.read_text())
    assert written["ok"] and written["errors"] == 0 and written["warnings"] == 5
    assert "check-data: 0 error(s), 5 warning(s): nothing would stop a run" in out


@pytest.mark.usefixtures("cli_env")
def test_a_skip_list_lets_training_skip_the_bad_images_knowingly(
    data_copy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    case = undecodable_image(data_copy)
    image_id = _bad_images(data_copy)[0][0]
    skip = tmp_path / "lists" / "bad-images.txt"
    data = ["--config", TINY, "--data.data_dir", str(data_copy)]
    report = ["--report", str(tmp_path / "report.json"), "--workers", "1"]
    status, out, err = run_main(["check-data", *data, *report, "--write-skip-list", str(skip)], capfd)
    assert status == 2 and problem_lines(err) == [f"error: {case.errors[0]}"]
    assert skip.read_text().splitlines()[1:] == [image_id]
    assert f"skip list: {skip} (1 undecodable image(s); train with --data.skip_list FILE)" in out
    status, out, err = run_main(["check-data", *data, *report, "--data.skip_list", str(skip)], capfd)
    assert status == 0 and problem_lines(err) == [f"warning: {case.errors[0]}"]  # known: a run skips it
    status, out, err = run_main(["check-data", *data, *report, "--data.skip_bad_images", "true"], capfd)
    assert status == 0 and problem_lines(err) == [f"warning: {case.errors[0]}"]  # so does skip_bad_images
    fit = [*tiny_args(data_copy, tmp_path / "run"), "--data.skip_list", str(skip)]
    fit += "--trainer.num_sanity_val_steps 1 --data.eval_batch_size 128 --trainer.max_steps 1".split()
    fit += "--trainer.limit_val_batches 0".split()
    status, out, err = run_main(["fit", *fit], capfd)
    assert status == 0, err[-3000:]
    skip.write_text(f"{image_id}\nnot_an_image\n")
    dm = WebQADataModule(str(data_copy), num_workers=0, skip_list=str(skip))
    with pytest.warns(DataWarning) as caught:
        dm.setup("validate")
    assert [str(w.message) for w in caught] == [
        f"skip list {skip}: 1 id(s) are not image docs of all_imgs.json, first: 'not_an_image'; was it written for "
        "another data directory?"
    ]
    assert dm.images.load(image_id) is None and dm.images.bad_ids == {image_id}


def test_check_data_on_the_mini_webqa_demo_data_reports_no_problem(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    proc = train_in_process(capfd, "check-data", "--config", TINY, "--workers", "2", "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert problem_lines(proc.stderr) == [] and "images/s" in proc.stderr  # the progress bar
    written = json.loads(report.read_text())
    assert written["ok"] and written["problems"] == []
    summary = written["summary"]
    assert summary["docs"] == {"text": 932, "image": 592, "total": 1524}
    assert {split: s["queries"] for split, s in summary["splits"].items()} == {"train": 1500, "dev": 200, "test": 200}
    assert summary["images"]["decoded"] == summary["images"]["lineidx_entries"] == 592
    assert summary["decoding"]["workers"] == 2
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("data directory ") and lines[0].endswith(
        "mini-webqa-small-seed0 (captions: all_imgs.json)"
    )
    assert "check-data: 0 error(s), 0 warning(s): nothing would stop a run" in lines


def test_images_are_checked_alike_by_any_number_of_workers(data_copy: Path) -> None:
    undecodable_image(data_copy)
    bad_base64(data_copy)
    store = ImageStore(data_copy)
    results = [check_images(store, workers, progress=False, chunk=7) for workers in (0, 1, 2)]
    assert [r.checked for r in results] == [len(store)] * 3
    assert [[(p.kind, p.ids, p.offset) for p in r.bad] for r in results] == [
        [("bad_image", (i,), o) for i, o in _bad_images(data_copy)]
    ] * 3
    assert all(np.array_equal(r.sizes, results[0].sizes) for r in results)
    assert len(results[0].sizes) == len(store) - 2 and set(results[0].sizes[:, 0]) == {64}
