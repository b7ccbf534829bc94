"""Random access to the WebQA image file ``imgs.tsv`` through its byte-offset index.

``imgs.tsv`` holds one ``<image_id>\\t<base64 of a JPEG>`` line per image (tens of GB in the
real release), ``imgs.lineidx.new`` one ``<image_id>\\t<byte offset>`` line per image. The store
keeps only the index in memory (two sorted numpy arrays) and reads one line per request:
seek to the offset, ``readline``. The file handle is opened lazily once per process, so the
object can be handed to DataLoader workers (forked or spawned) and each reopens its own.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from retrieval.errors import InputError, Problems, strict

TSV_NAME = "imgs.tsv"
LINEIDX_NAME = "imgs.lineidx.new"
LAYOUT = (
    f"the data dir must hold {TSV_NAME} ('<image_id>\\t<base64 JPEG>' per line) and "
    f"{LINEIDX_NAME} ('<image_id>\\t<byte offset>' per line)"
)

ImageId = str | int
#: The repr of the in-memory file PIL names in its messages: an address, different in every process.
_BUFFER_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class BadImageError(InputError):
    """One image's payload is unusable: truncated line, bad base64 or undecodable bytes."""


def _one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace so a message stays on one line, and cap its length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _preview(raw: bytes, limit: int = 40) -> str:
    """A short printable excerpt of raw file bytes for error messages."""
    text = raw[:limit].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(raw) > limit else ""))


def decode_rgb(data: bytes, where: str) -> Image.Image:
    """Picture file bytes decoded to RGB, or a BadImageError ``"<where>: cannot decode (...)"``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(
            f"{where}: cannot decode ({type(err).__name__}: {_one_line(_BUFFER_REPR.sub('', str(err)))}); re-export "
            f"it or pass skip_bad_images=True"
        ) from None


def read_lineidx(path: Path, problems: Problems | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``<image_id>\\t<byte offset>`` lines; return (ids, offsets, line numbers), in file order.

    Blank lines are skipped; any other line that is not exactly two tab-separated fields with a
    non-negative integer offset is an error naming its line number (``problems`` collecting: reported and skipped).
    """
    problems = strict(problems)
    ids: list[bytes] = []
    offsets: list[int] = []
    numbers: list[int] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            fields = line.split(b"\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip().isdigit():
                problems.error(
                    "bad_lineidx_line",
                    f"{path} line {number} is malformed ({_preview(line)}): expected "
                    f"'<image_id>\\t<byte offset>'; fix or regenerate the index",
                )
                continue
            ids.append(fields[0].strip())
            offsets.append(int(fields[1]))
            numbers.append(number)
    return np.array(ids, dtype=bytes), np.array(offsets, dtype=np.int64), np.array(numbers, dtype=np.int64)


def read_skip_list(path: str | os.PathLike) -> list[str]:
    """The image ids of a skip list (one a line; blank lines and ``#`` comments ignored), as
    ``check-data --write-skip-list`` writes it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"skip list {path} does not exist; write one with: python train.py check-data --data.data_dir DIR "
            f"--write-skip-list {path}"
        )
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class ImageStore:
    """Read single images of ``imgs.tsv`` by id, never holding more than one line in memory.

    Args:
        tsv_path: ``imgs.tsv``, or the data directory that holds it.
        lineidx_path: the ``<image_id>\\t<byte offset>`` index; default ``imgs.lineidx.new``
            beside the tsv.
        skip_bad_images: if true, :meth:`load` returns ``None`` for an image whose payload is
            unusable (truncated, bad base64, undecodable) and records its id in ``bad_ids`` (per
            process: a DataLoader worker's ids stay in that worker); structural faults (missing
            files, unknown ids, index/tsv mismatch) still raise.
        skip_ids: ids whose pictures are known to be bad (``check-data --write-skip-list``): :meth:`load` returns
            ``None`` for them without reading and records them in ``bad_ids``.
        problems: where the index's faults go; default: the first one raises. A collecting sink
            (``check-data``) gets every fault, and the store keeps the entries it can use (the first of
            duplicate ids, offsets inside the file).
    """

    def __init__(
        self,
        tsv_path: str | os.PathLike,
        lineidx_path: str | os.PathLike | None = None,
        skip_bad_images: bool = False,
        skip_ids: Iterable[str] = (),
        problems: Problems | None = None,
    ) -> None:
        tsv = Path(tsv_path)
        if tsv.is_dir():
            tsv = tsv / TSV_NAME
        self.tsv_path = tsv
        self.lineidx_path = Path(lineidx_path) if lineidx_path is not None else tsv.with_name(LINEIDX_NAME)
        self.skip_bad_images = skip_bad_images
        self.skip_ids = frozenset(map(str, skip_ids))
        self.bad_ids: set[str] = set()
        self._check_files()
        self._file_size = self.tsv_path.stat().st_size
        self._ids, self._offsets = self._build_index(strict(problems))
        self._handle: IO[bytes] | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- index
    def _check_files(self) -> None:
        """Raise a layout-naming InputError if the tsv or its index is missing."""
        for path, what in ((self.tsv_path, "image file"), (self.lineidx_path, "image index")):
            if not path.is_file():
                raise InputError(f"{what} {path} not found: {LAYOUT}")

    def _build_index(self, problems: Problems) -> tuple[np.ndarray, np.ndarray]:
        """Read the lineidx into id-sorted arrays; report empty, duplicate or out-of-file entries (and drop them)."""
        ids, offsets, numbers = read_lineidx(self.lineidx_path, problems)
        if ids.size == 0:
            problems.error("empty_lineidx", f"image index {self.lineidx_path} holds no entries: {LAYOUT}")
            return ids, offsets
        order = np.argsort(ids, kind="stable")
        ids, offsets, numbers = ids[order], offsets[order], numbers[order]
        repeats = ids[1:] == ids[:-1]  # entry i + 1 repeats entry i (file order within an id: stable sort)
        for i in np.flatnonzero(repeats & ~np.r_[False, repeats[:-1]]):  # the first two lines of each repeated id
            problems.error(
                "duplicate_image_id",
                f"image id {ids[i].decode()!r} appears twice in {self.lineidx_path} (lines "
                f"{numbers[i]} and {numbers[i + 1]}); every image id must be listed once",
                [ids[i].decode()],
            )
        keep = np.r_[True, ~repeats]
        for i in np.flatnonzero(keep & (offsets >= self._file_size)):
            problems.error(
                "offset_past_end",
                f"{self.lineidx_path} line {numbers[i]}: offset {offsets[i]} of image "
                f"{ids[i].decode()!r} is past the end of {self.tsv_path} ({self._file_size} bytes); "
                f"the index does not match the tsv, regenerate {LINEIDX_NAME}",
                [ids[i].decode()],
                offset=int(offsets[i]),
            )
        keep &= offsets < self._file_size
        return ids[keep], offsets[keep]

    def _position(self, image_id: ImageId) -> int:
        """Index of ``image_id`` in the sorted id array, or -1 if absent."""
        key = str(image_id).encode()
        i = int(np.searchsorted(self._ids, key))
        return i if i < self._ids.size and self._ids[i] == key else -1

    def __len__(self) -> int:
        return int(self._ids.size)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, (str, int)) and self._position(image_id) >= 0

    def ids(self) -> list[str]:
        """All image ids, in the order their lines appear in the tsv."""
        return [i.decode() for i in self._ids[np.argsort(self._offsets, kind="stable")]]

    def offset(self, image_id: ImageId) -> int:
        """Byte offset of the image's line in the tsv."""
        i = self._position(image_id)
        if i < 0:
            raise InputError(
                f"unknown image id {str(image_id)!r}: not listed in {self.lineidx_path}; "
                f"check the id or use the {LINEIDX_NAME} that belongs to this data dir"
            )
        return int(self._offsets[i])

    # ----------------------------------------------------------------- reading
    def _file(self) -> tuple[IO[bytes], threading.Lock]:
        """This process's handle on the tsv (opened on first use and after a fork) and its lock."""
        pid = os.getpid()
        if self._handle is None or self._pid != pid:
            self._lock = threading.Lock()
            self._handle = open(self.tsv_path, "rb")  # noqa: SIM115 - lives as long as the store
            self._pid = pid
        return self._handle, self._lock

    def _read_line(self, image_id: ImageId) -> tuple[bytes, int]:
        """The raw line stored for ``image_id`` and its offset, after checking it holds that id."""
        offset = self.offset(image_id)
        handle, lock = self._file()
        with lock:
            handle.seek(offset)
            line = handle.readline()
        if not line:
            raise InputError(
                f"offset {offset} of image {str(image_id)!r} is past the end of {self.tsv_path}; "
                f"the tsv is shorter than its index says, regenerate {LINEIDX_NAME}"
            )
        found, tab, _ = line.partition(b"\t")
        if tab and found == str(image_id).encode():
            return line, offset
        if not line.endswith(b"\n") and not tab:
            raise BadImageError(
                f"image {str(image_id)!r} at byte offset {offset} in {self.tsv_path}: line is "
                f"truncated (no tab, no newline at end of file); re-export the image file"
            )
        got = f"image id {found.decode('utf-8', 'replace')!r}" if tab else f"no '<id>\\t' prefix ({_preview(line)})"
        raise InputError(
            f"the line at byte offset {offset} of {self.tsv_path} holds {got}, not image "
            f"{str(image_id)!r}: {self.lineidx_path} does not match the tsv, regenerate it"
        )

    def read_bytes(self, image_id: ImageId) -> bytes:
        """The image file bytes (base64-decoded payload) of ``image_id``."""
        line, offset = self._read_line(image_id)
        payload = line.partition(b"\t")[2].rstrip(b"\r\n")
        where = f"image {str(image_id)!r} at byte offset {offset} in {self.tsv_path}"
        truncated = "" if line.endswith(b"\n") else " (no newline at end of file: line truncated?)"
        if not payload:
            raise BadImageError(f"{where}: empty payload{truncated}; re-export the image file")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadImageError(
                f"{where}: bad base64 ({_one_line(str(err))}){truncated}; re-export the image file"
            ) from None

    def _decode(self, image_id: ImageId, data: bytes) -> Image.Image:
        """Decode image bytes to an RGB PIL image, or raise BadImageError naming id and offset."""
        return decode_rgb(data, f"image {str(image_id)!r} at byte offset {self.offset(image_id)} in {self.tsv_path}")

    def load(self, image_id: ImageId) -> Image.Image | None:
        """The image as an RGB PIL image; ``None`` for a bad payload when ``skip_bad_images``, and for an id of
        ``skip_ids`` (not read)."""
        if str(image_id) in self.skip_ids:
            self.offset(image_id)  # an unknown id is still an error
            self.bad_ids.add(str(image_id))
            return None
        try:
            return self._decode(image_id, self.read_bytes(image_id))
        except BadImageError:
            if not self.skip_bad_images:
                raise
            self.bad_ids.add(str(image_id))
            return None

    def measure(self, image_id: ImageId) -> tuple[int, int, int]:
        """Decode the image as :meth:`load` does, raising what it raises (``skip_bad_images`` and ``skip_ids``
        aside); return its width, height and payload bytes."""
        data = self.read_bytes(image_id)
        image = self._decode(image_id, data)
        return image.width, image.height, len(data)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close this process's handle (it is reopened on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_handle=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.tsv_path)!r}, images={len(self)})"
