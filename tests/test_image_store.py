"""ImageStore: offset-indexed reading of imgs.tsv, its error messages, and multi-process use."""

from __future__ import annotations

import base64
import hashlib
import io
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.image_store import BadImageError, ImageStore, read_skip_list
from datamodules.mini_webqa import encode_jpeg, write_tsv
from retrieval.errors import InputError, Problems

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (20, 20, 20), (240, 240, 240)]


def _jpeg(colour: tuple[int, int, int], side: int = 16) -> bytes:
    return encode_jpeg(Image.new("RGB", (side, side), colour))


@pytest.fixture
def data(tmp_path: Path) -> dict[str, bytes]:
    """Six solid-colour JPEGs with ids '100'..'105' written as imgs.tsv + imgs.lineidx.new."""
    images = {str(100 + i): _jpeg(c) for i, c in enumerate(COLOURS)}
    write_tsv(tmp_path / "imgs.tsv", tmp_path / "imgs.lineidx.new", images.items())
    return images


def _write_raw(tmp_path: Path, lines: list[bytes], index: str | None = None) -> ImageStore:
    """Write raw tsv lines (and an index of their true offsets unless ``index`` is given)."""
    (tmp_path / "imgs.tsv").write_bytes(b"".join(lines))
    if index is None:
        offsets = np.cumsum([0] + [len(line) for line in lines[:-1]])
        ids = [line.partition(b"\t")[0].decode() for line in lines]
        index = "".join(f"{i}\t{o}\n" for i, o in zip(ids, offsets))
    (tmp_path / "imgs.lineidx.new").write_text(index)
    return ImageStore(tmp_path / "imgs.tsv")


def _line(image_id: str, data: bytes) -> bytes:
    return image_id.encode() + b"\t" + base64.b64encode(data) + b"\n"


def _message(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- reading
def test_round_trip(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path / "imgs.tsv")
    assert len(store) == 6 and store.ids() == list(data)
    assert "100" in store and 103 in store and "999" not in store and None not in store
    for (image_id, jpeg), colour in zip(data.items(), COLOURS):
        assert store.read_bytes(image_id) == jpeg
        image = store.load(image_id)
        assert image.mode == "RGB" and image.size == (16, 16)
        assert np.abs(np.asarray(image, dtype=int)[8, 8] - colour).max() < 12
    assert store.read_bytes(104) == data["104"]  # int ids as in all_imgs.json


def test_data_dir_argument_and_offsets(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path)
    raw = (tmp_path / "imgs.tsv").read_bytes()
    for image_id in data:
        assert raw[store.offset(image_id) :].startswith(image_id.encode() + b"\t")
    with ImageStore(tmp_path, tmp_path / "imgs.lineidx.new") as explicit:
        assert explicit.read_bytes("105") == data["105"]


def test_non_rgb_images_are_converted(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    store = _write_raw(tmp_path, [_line("7", buffer.getvalue())])
    assert store.load("7").mode == "RGB"


# --------------------------------------------------------------------------- structural errors
def test_missing_tsv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as excinfo:
        ImageStore(tmp_path / "imgs.tsv")
    message = _message(excinfo)
    assert "imgs.tsv" in message and "imgs.lineidx.new" in message and "data dir" in message


def test_missing_lineidx(tmp_path: Path) -> None:
    (tmp_path / "imgs.tsv").write_bytes(_line("1", _jpeg(COLOURS[0])))
    with pytest.raises(InputError, match=r"image index .*imgs\.lineidx\.new not found") as excinfo:
        ImageStore(tmp_path / "imgs.tsv")
    _message(excinfo)


@pytest.mark.parametrize("bad", ["101", "101\tabc", "101\t5\textra", "\t5"])
def test_malformed_lineidx_line(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError, match="line 3 is malformed") as excinfo:
        _write_raw(tmp_path, [_line("100", _jpeg(COLOURS[0]))], index=f"100\t0\n\n{bad}\n")
    assert "<image_id>\\t<byte offset>" in _message(excinfo)


def test_duplicate_id(tmp_path: Path) -> None:
    lines = [_line("100", _jpeg(COLOURS[0])), _line("101", _jpeg(COLOURS[1]))]
    with pytest.raises(InputError, match=r"'100' appears twice .*lines 1 and 3") as excinfo:
        _write_raw(tmp_path, lines, index=f"100\t0\n101\t{len(lines[0])}\n100\t0\n")
    _message(excinfo)


def test_empty_lineidx(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no entries"):
        _write_raw(tmp_path, [_line("100", _jpeg(COLOURS[0]))], index="\n")


def test_unknown_id(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path, skip_bad_images=True)
    for call in (store.load, store.read_bytes, store.offset):
        with pytest.raises(InputError, match="unknown image id '999'") as excinfo:
            call("999")
        _message(excinfo)


def test_offset_past_end_in_index(tmp_path: Path) -> None:
    line = _line("100", _jpeg(COLOURS[0]))
    with pytest.raises(InputError, match=rf"line 1: offset {len(line) + 10} of image '100' is past the end") as excinfo:
        _write_raw(tmp_path, [line], index=f"100\t{len(line) + 10}\n")
    _message(excinfo)


def test_tsv_shrunk_after_indexing(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path)
    tsv = tmp_path / "imgs.tsv"
    tsv.write_bytes(tsv.read_bytes()[: store.offset("105")])
    with pytest.raises(InputError, match="offset .* of image '105' is past the end") as excinfo:
        store.load("105")
    _message(excinfo)


def test_index_pointing_at_another_id(tmp_path: Path) -> None:
    lines = [_line("100", _jpeg(COLOURS[0])), _line("101", _jpeg(COLOURS[1]))]
    store = _write_raw(tmp_path, lines, index=f"100\t{len(lines[0])}\n101\t0\n")
    with pytest.raises(InputError, match=r"holds image id '101', not image '100'.*does not match") as excinfo:
        store.load("100")
    _message(excinfo)


def test_index_pointing_mid_line(tmp_path: Path) -> None:
    lines = [_line("100", _jpeg(COLOURS[0])), _line("101", _jpeg(COLOURS[1]))]
    store = _write_raw(tmp_path, lines, index=f"100\t0\n101\t{len(lines[0]) + 20}\n")
    with pytest.raises(InputError, match=r"no '<id>\\t' prefix.*not image '101'") as excinfo:
        store.load("101")
    assert not isinstance(excinfo.value, BadImageError)
    _message(excinfo)


# --------------------------------------------------------------------------- bad payloads
def test_bad_base64(tmp_path: Path) -> None:
    store = _write_raw(tmp_path, [b"100\tnot*base64!\n"])
    with pytest.raises(BadImageError, match="image '100' at byte offset 0 .*bad base64") as excinfo:
        store.load("100")
    _message(excinfo)


def test_truncated_line(tmp_path: Path) -> None:
    good = _line("100", _jpeg(COLOURS[0]))
    cut = _line("101", _jpeg(COLOURS[1]))
    cut = cut[: len(b"101\t") + 4 * ((len(cut) - 10) // 4) + 1]  # base64 length not a multiple of 4
    store = _write_raw(tmp_path, [good, cut])
    with pytest.raises(BadImageError, match=rf"image '101' at byte offset {len(good)} .*truncated") as excinfo:
        store.load("101")
    _message(excinfo)


def test_truncated_jpeg(tmp_path: Path) -> None:
    jpeg = _jpeg(COLOURS[0], side=64)
    store = _write_raw(tmp_path, [_line("100", jpeg[: len(jpeg) // 2])])
    with pytest.raises(BadImageError, match="image '100' at byte offset 0 .*cannot decode") as excinfo:
        store.load("100")
    _message(excinfo)


def test_undecodable_image(tmp_path: Path) -> None:
    good = _line("100", _jpeg(COLOURS[0]))
    store = _write_raw(tmp_path, [good, _line("101", b"this is not an image")])
    assert store.read_bytes("101") == b"this is not an image"
    pattern = rf"image '101' at byte offset {len(good)} .*cannot decode.*skip_bad_images"
    with pytest.raises(BadImageError, match=pattern) as excinfo:
        store.load("101")
    _message(excinfo)


def test_skip_bad_images(tmp_path: Path) -> None:
    lines = [_line("100", _jpeg(COLOURS[0])), b"101\t@@@@\n", _line("102", b"garbage"), _line("103", _jpeg(COLOURS[1]))]
    store = _write_raw(tmp_path, lines)
    store.skip_bad_images = True
    loaded = {i: store.load(i) for i in store.ids()}
    assert [i for i, image in loaded.items() if image is None] == ["101", "102"]
    assert store.bad_ids == {"101", "102"}
    store.load("101")
    assert len(store.bad_ids) == 2
    with pytest.raises(InputError, match="unknown image id"):
        store.load("555")
    with pytest.raises(BadImageError):
        store.read_bytes("101")  # raw access still reports the fault


# --------------------------------------------------------------------------- processes
def test_pickle_drops_handle(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path, skip_bad_images=True)
    store.load("100")
    assert store._handle is not None
    state = store.__getstate__()
    assert state["_handle"] is None and state["_lock"] is None
    clone = pickle.loads(pickle.dumps(store))
    assert clone._handle is None and clone.skip_bad_images
    assert all(clone.read_bytes(i) == jpeg for i, jpeg in data.items())
    store.close()
    assert store.read_bytes("101") == data["101"]  # reopens after close


def _child_reads(store: ImageStore, ids: list[str], queue: mp.Queue) -> None:
    digests = [hashlib.md5(store.read_bytes(i)).hexdigest() for i in ids]
    queue.put((os.getpid(), store._pid, digests))


def test_forked_child_reopens_its_own_handle(tmp_path: Path, data: dict[str, bytes]) -> None:
    store = ImageStore(tmp_path)
    store.read_bytes("100")  # the parent's handle is open before the fork
    parent_handle = store._handle
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    ids = list(data)[::-1] * 3
    child = ctx.Process(target=_child_reads, args=(store, ids, queue))
    child.start()
    pid, store_pid, digests = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0 and pid == store_pid != os.getpid()
    assert digests == [hashlib.md5(data[i]).hexdigest() for i in ids]
    assert store._handle is parent_handle and store.read_bytes("103") == data["103"]


class _Digests:
    """A map-style dataset: (index, worker pid, md5 of the image bytes)."""

    def __init__(self, store: ImageStore) -> None:
        self.store, self.ids = store, store.ids()

    def __len__(self) -> int:
        return len(self.ids) * 4

    def __getitem__(self, index: int) -> tuple[int, int, str]:
        image_id = self.ids[index % len(self.ids)]
        assert self.store.load(image_id).size == (16, 16)
        return index, os.getpid(), hashlib.md5(self.store.read_bytes(image_id)).hexdigest()


def test_dataloader_with_two_workers(tmp_path: Path, data: dict[str, bytes]) -> None:
    from torch.utils.data import DataLoader

    store = ImageStore(tmp_path)
    store.load("100")
    loader = DataLoader(_Digests(store), batch_size=3, num_workers=2, collate_fn=list)
    rows = [row for batch in loader for row in batch]
    ids = store.ids()
    assert sorted(r[0] for r in rows) == list(range(len(ids) * 4))
    assert all(r[2] == hashlib.md5(data[ids[r[0] % len(ids)]]).hexdigest() for r in rows)
    assert len({r[1] for r in rows}) == 2 and os.getpid() not in {r[1] for r in rows}


# --------------------------------------------------------------------------- check-data: every fault, skip lists
def test_a_collecting_sink_gets_every_fault_of_the_index(tmp_path: Path) -> None:
    lines = [_line(str(100 + i), _jpeg(COLOURS[i])) for i in range(4)]
    offsets = np.cumsum([0] + [len(line) for line in lines[:-1]])
    index = [f"{100 + i}\t{o}" for i, o in enumerate(offsets)]
    index += ["bad line", "100\t0", "101\t0", "101\t0", "x\t", "104\t99999"]
    (tmp_path / "imgs.tsv").write_bytes(b"".join(lines))
    (tmp_path / "imgs.lineidx.new").write_text("\n".join(index) + "\n")
    lineidx = tmp_path / "imgs.lineidx.new"
    with pytest.raises(InputError, match="line 5 is malformed"):
        ImageStore(tmp_path)  # the loader: the first fault
    problems = Problems(collect=True)
    store = ImageStore(tmp_path, problems=problems)
    assert [(p.kind, p.ids) for p in problems.found] == [
        ("bad_lineidx_line", ()),
        ("bad_lineidx_line", ()),
        ("duplicate_image_id", ("100",)),
        ("duplicate_image_id", ("101",)),
        ("offset_past_end", ("104",)),
    ]
    assert problems.found[3].message == (
        f"image id '101' appears twice in {lineidx} (lines 2 and 7); every image id must be listed once"
    )
    assert problems.found[4].offset == 99999
    assert store.ids() == ["100", "101", "102", "103"]  # the first of each id, the offsets inside the file
    assert [store.measure(i) for i in store.ids()] == [(16, 16, len(_jpeg(c))) for c in COLOURS[:4]]


def test_skip_ids_are_not_read(tmp_path: Path) -> None:
    store = _write_raw(tmp_path, [_line("100", b"garbage"), _line("101", _jpeg(COLOURS[0]))])
    with pytest.raises(BadImageError):
        store.load("100")
    store = ImageStore(tmp_path, skip_ids=["100"])
    assert store.load("100") is None and store.load("101").size == (16, 16) and store.bad_ids == {"100"}
    with pytest.raises(BadImageError):
        store.measure("100")  # check-data still decodes it
    with pytest.raises(InputError, match="unknown image id '555'"):
        ImageStore(tmp_path, skip_ids=["555"]).load("555")


def test_skip_list_file(tmp_path: Path) -> None:
    (tmp_path / "skip.txt").write_text("# undecodable\n100\n\n 101 \n")
    assert read_skip_list(tmp_path / "skip.txt") == ["100", "101"]
    with pytest.raises(InputError) as excinfo:
        read_skip_list(tmp_path / "none.txt")
    assert _message(excinfo) == (
        f"skip list {tmp_path / 'none.txt'} does not exist; write one with: python train.py check-data "
        f"--data.data_dir DIR --write-skip-list {tmp_path / 'none.txt'}"
    )
