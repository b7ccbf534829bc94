"""Decode every image of ``imgs.tsv`` once, in worker processes, and report each one the loader would fail on.

Each worker holds the :class:`~datamodules.image_store.ImageStore` (its index only) and opens the tsv itself; the
parent sends chunks of ids in file order, so reads are sequential and no process ever holds more than one line of the
file. The messages are the store's own (``load`` raises them), so they are the loader's, with id and byte offset.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from datamodules.image_store import BadImageError, ImageStore
from retrieval.errors import InputError, Problem

#: Images per task sent to a worker.
CHUNK = 256

_store: ImageStore | None = None  # a worker's store, set by _init_worker


@dataclass
class ImageCheck:
    """What decoding every image found: the unusable ones (as problems with id and offset) and the sizes of the rest.

    ``sizes`` holds one ``(width, height, payload bytes)`` row per decoded image.
    """

    checked: int = 0
    bad: list[Problem] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    seconds: float = 0.0
    workers: int = 0

    @property
    def rate(self) -> float:
        """Images decoded per second."""
        return self.checked / self.seconds if self.seconds > 0 else 0.0

    @property
    def undecodable_ids(self) -> list[str]:
        """Ids of the images whose payload is unusable (what ``skip_bad_images`` would skip)."""
        return [p.ids[0] for p in self.bad if p.kind == "bad_image"]


def check_chunk(store: ImageStore, ids: list[str]) -> tuple[list[Problem], np.ndarray]:
    """Decode ``ids`` as the loader does; the problems of the bad ones and the sizes of the good ones."""
    bad: list[Problem] = []
    sizes = np.zeros((len(ids), 3), dtype=np.int64)
    good = np.zeros(len(ids), dtype=bool)
    for row, image_id in enumerate(ids):
        try:
            sizes[row] = store.measure(image_id)
            good[row] = True
        except BadImageError as err:  # the payload: skip_bad_images would skip it
            bad.append(Problem("bad_image", str(err), "error", (image_id,), store.offset(image_id)))
        except InputError as err:  # the index points elsewhere: nothing skips that
            bad.append(Problem("image_line_mismatch", str(err), "error", (image_id,), store.offset(image_id)))
    return bad, sizes[good]


def _init_worker(store: ImageStore) -> None:
    global _store
    _store = store


def _check_in_worker(ids: list[str]) -> tuple[int, list[Problem], np.ndarray]:
    bad, sizes = check_chunk(_store, ids)
    return len(ids), bad, sizes


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def check_images(store: ImageStore, workers: int = 1, progress: bool = True, chunk: int = CHUNK) -> ImageCheck:
    """Decode every image of ``store`` with ``workers`` processes (0: in this process), with a progress bar."""
    ids = store.ids()
    result = ImageCheck(workers=workers)
    sizes: list[np.ndarray] = []
    bar = tqdm(total=len(ids), unit=" images", desc="decoding images", disable=not progress, file=sys.stderr)
    start = time.perf_counter()
    if workers <= 0:
        outcomes: Iterator[tuple[int, list[Problem], np.ndarray]] = (
            (len(part), *check_chunk(store, part)) for part in _chunks(ids, chunk)
        )
        result.checked = _collect(outcomes, result, sizes, bar)
    else:
        context = multiprocessing.get_context()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(store,)) as pool:
            result.checked = _collect(pool.map(_check_in_worker, _chunks(ids, chunk)), result, sizes, bar)
    result.seconds = time.perf_counter() - start
    bar.close()
    result.sizes = np.concatenate(sizes) if sizes else result.sizes
    return result


def _collect(
    outcomes: Iterator[tuple[int, list[Problem], np.ndarray]], result: ImageCheck, sizes: list[np.ndarray], bar: tqdm
) -> int:
    checked = 0
    for count, bad, chunk_sizes in outcomes:
        result.bad.extend(bad)
        sizes.append(chunk_sizes)
        checked += count
        bar.update(count)
    return checked
