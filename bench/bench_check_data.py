"""Benchmark ``check-data``'s image pass: every image of a 20,000-image ``imgs.tsv`` decoded by 1 and 2 workers.

Writes the synthetic ``imgs.tsv`` + ``imgs.lineidx.new`` of ``bench/bench_image_reading.py`` (256 px JPEGs) into a
temporary directory (or ``--dir``, kept and reused), then runs ``datamodules.image_check.check_images`` (what
``python train.py check-data`` runs) with each number of worker processes. Prints images/s, the time WebQA's 389,750
images would take at that rate, and the resident memory of the main process and of the workers, sampled through the
run: it must stay flat (only the index is held; each worker reads one line at a time), far below the file's size.
Asserts nothing.

    python bench/bench_check_data.py [--n 20000] [--workers 1 2] [--image-size 256] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_image_reading import MB, prepare  # noqa: E402

from datamodules.image_check import check_images  # noqa: E402
from datamodules.image_store import TSV_NAME, ImageStore  # noqa: E402

#: Images in WebQA's imgs.tsv (the UniVL-DR release).
WEBQA_IMAGES = 389_750


class MemorySampler(threading.Thread):
    """Samples the RSS of this process and of its children every ``interval`` seconds while it runs."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (main MiB, largest child MiB)
        self._done = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.is_set():
            children = []
            for child in me.children(recursive=True):
                try:
                    children.append(child.memory_info().rss)
                except psutil.Error:
                    pass
            self.samples.append((me.memory_info().rss / MB, max(children, default=0) / MB))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def at(self, fraction: float, column: int) -> float:
        """The sample at ``fraction`` of the run (of the samples where the column is non-zero)."""
        values = [s[column] for s in self.samples if s[column]]
        return values[min(int(fraction * len(values)), len(values) - 1)] if values else 0.0

    def peak(self, column: int) -> float:
        return max((s[column] for s in self.samples), default=0.0)


def run(directory: Path, n: int, image_size: int, workers: list[int]) -> None:
    seconds = prepare(directory, n, image_size)
    store = ImageStore(directory)
    size = (directory / TSV_NAME).stat().st_size
    made = f"generated in {seconds:.0f}s" if seconds else "reused"
    print(f"{TSV_NAME}: {len(store)} images of {image_size}px, {size / MB:.0f} MiB ({made})")
    print(
        f"main process RSS before checking: {psutil.Process().memory_info().rss / MB:.0f} MiB (numpy + PIL, no torch)"
    )
    print(
        f"{'workers':>7} {'images':>7} {'seconds':>8} {'img/s':>7} {'WebQA 389,750 (min)':>20}"
        f" {'main@10%':>9} {'main@end':>9} {'wkr@10%':>8} {'wkr@end':>8} {'wkr peak':>9}   (RSS in MiB)"
    )
    peaks = [0.0, 0.0]
    for count in workers:
        sampler = MemorySampler()
        sampler.start()
        result = check_images(store, count, progress=False)
        sampler.stop()
        assert result.checked == len(store) and not result.bad, "the generated images must all decode"
        peaks = [max(peaks[0], sampler.peak(0)), max(peaks[1], sampler.peak(1))]
        minutes = WEBQA_IMAGES / result.rate / 60
        worker_mib = [f"{v:.0f}" if count else "-" for v in (sampler.at(0.1, 1), sampler.at(0.9, 1), sampler.peak(1))]
        print(
            f"{count:>7} {result.checked:>7} {result.seconds:>8.1f} {result.rate:>7.0f} {minutes:>20.1f}"
            f" {sampler.at(0.1, 0):>9.0f} {sampler.at(0.9, 0):>9.0f} {worker_mib[0]:>8} {worker_mib[1]:>8}"
            f" {worker_mib[2]:>9}",
            flush=True,
        )
    print(
        f"peak RSS over all runs: main {peaks[0]:.0f} MiB, largest worker {peaks[1]:.0f} MiB; tsv {size / MB:.0f} MiB. "
        "The projection is linear in the number of images; real WebQA pictures are larger than these and decode slower."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images in the generated tsv")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes of each run")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the tsv here")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, args.n, args.image_size, args.workers)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_check_data_") as tmp:
            run(Path(tmp), args.n, args.image_size, args.workers)


if __name__ == "__main__":
    main()
