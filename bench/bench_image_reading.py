"""Benchmark random-access image reading from imgs.tsv through ImageStore and a DataLoader.

Writes a synthetic ``imgs.tsv`` + ``imgs.lineidx.new`` (default 20,000 images, 256 px JPEGs)
into a temporary directory (or ``--dir``, kept and reused), then reads random ids with
``ImageStore.load`` at 0, 1 and 2 DataLoader workers, once decoding to RGB only and once with a
CLIP eval transform (resize 224, centre crop, to tensor, normalise). Prints images/s and the
resident memory of the main process and of the workers next to the file size: memory must stay
flat however much of the file is read, since only the index is held and one line is read per image.

    python bench/bench_image_reading.py [--n 20000] [--reads 3000] [--image-size 256] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from datamodules.image_store import LINEIDX_NAME, TSV_NAME, ImageStore  # noqa: E402
from datamodules.mini_webqa import write_image_tsv  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MB = 1024 * 1024


class StoreDataset:
    """Map-style dataset: images of ``ids`` as tensors, raw RGB uint8 or CLIP-transformed floats."""

    def __init__(self, store: ImageStore, ids: list[str], clip: bool) -> None:
        from torchvision import transforms  # torch stays out of the lean --probe process

        self.store, self.ids = store, ids
        self.transform = (
            transforms.Compose(
                [
                    transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                    transforms.CenterCrop(224),
                    transforms.ToTensor(),
                    transforms.Normalize(CLIP_MEAN, CLIP_STD),
                ]
            )
            if clip
            else transforms.PILToTensor()
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):  # -> torch.Tensor
        return self.transform(self.store.load(self.ids[index]))


def rss_mb() -> tuple[float, float]:
    """Resident memory now, in MiB: (main process, largest child such as a DataLoader worker)."""
    me = psutil.Process()
    children = [c.memory_info().rss for c in me.children(recursive=True) if c.is_running()]
    return me.memory_info().rss / MB, max(children, default=0) / MB


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory so far, in MiB: (this process, largest finished child)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


@dataclass
class Row:
    mode: str
    workers: int
    images: int
    seconds: float
    rss_1k: tuple[float, float]
    rss_end: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def format(self) -> str:
        per_worker = self.rate / max(self.workers, 1)
        mib = [f"{v:.0f}" if v else "-" for v in (*self.rss_1k[:1], self.rss_end[0], self.rss_1k[1], self.rss_end[1])]
        return (
            f"{self.mode:<8} {self.workers:>7} {self.images:>7} {self.rate:>8.0f} {per_worker:>10.0f}"
            f" {mib[0]:>9} {mib[1]:>9} {mib[2]:>10} {mib[3]:>10}"
        )


HEADER = (
    f"{'mode':<8} {'workers':>7} {'images':>7} {'img/s':>8} {'img/s/wkr':>10}"
    f" {'main@1k':>9} {'main@end':>9} {'wkr@1k':>10} {'wkr@end':>10}   (RSS in MiB)"
)


def read_through_loader(store: ImageStore, ids: list[str], clip: bool, workers: int) -> Row:
    """Read ``ids`` through a DataLoader; time it and sample RSS after 1,000 images and at the end."""
    from torch.utils.data import DataLoader

    loader = DataLoader(StoreDataset(store, ids, clip), batch_size=32, num_workers=workers)
    seen, rss_1k = 0, (0.0, 0.0)
    start = time.perf_counter()
    for batch in loader:
        if seen < 1000 <= seen + len(batch):
            rss_1k = rss_mb()
        seen += len(batch)
        if seen == len(ids):
            rss_end = rss_mb()  # workers are still alive here
    return Row("clip224" if clip else "decode", workers, seen, time.perf_counter() - start, rss_1k, rss_end)


def probe(directory: Path, seed: int) -> dict[str, float]:
    """Read every image once in random order with a plain loop (no torch); RSS before/1k/end."""
    store = ImageStore(directory)
    ids = random.Random(seed).sample(store.ids(), len(store))
    rss = {"before": rss_mb()[0]}
    start = time.perf_counter()
    for count, image_id in enumerate(ids, start=1):
        store.load(image_id)
        if count == 1000:
            rss["1k"] = rss_mb()[0]
    rss.update(end=rss_mb()[0], images=len(ids), seconds=time.perf_counter() - start)
    return rss


def run_probe(directory: Path, seed: int) -> Row:
    """:func:`probe` in a fresh interpreter that imports no torch, so its RSS is the store's own."""
    out = subprocess.run(
        [sys.executable, __file__, "--probe", str(directory), "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out.splitlines()[-1])
    print(f"lean process (numpy + PIL, no torch): RSS {r['before']:.0f} MiB before reading", flush=True)
    return Row("loop", 0, int(r["images"]), r["seconds"], (r["1k"], 0.0), (r["end"], 0.0))


def prepare(directory: Path, n: int, image_size: int) -> float:
    """Write the tsv + index unless ``directory`` already holds ``n`` images; return seconds spent."""
    tsv, lineidx = directory / TSV_NAME, directory / LINEIDX_NAME
    if tsv.is_file() and lineidx.is_file() and len(ImageStore(tsv)) == n:
        return 0.0
    start = time.perf_counter()
    write_image_tsv(tsv, lineidx, n, image_size=image_size, workers=2)
    return time.perf_counter() - start


def run(directory: Path, n: int, reads: int, image_size: int, seed: int) -> None:
    """Generate (if needed), then print the throughput and memory table."""
    seconds = prepare(directory, n, image_size)  # before torch: the pool's workers stay lean
    import torch
    import torchvision  # noqa: F401 - imported before the baseline RSS is taken

    store = ImageStore(directory)
    size = (directory / TSV_NAME).stat().st_size
    index_kib = (store._ids.nbytes + store._offsets.nbytes) / 1024
    made = f"generated in {seconds:.0f}s" if seconds else "reused"
    print(
        f"{TSV_NAME}: {len(store)} images of {image_size}px, {size / MB:.0f} MiB ({made}); "
        f"ImageStore index in memory: {index_kib:.0f} KiB"
    )
    lean = run_probe(directory, seed)
    print(f"torch process: RSS {rss_mb()[0]:.0f} MiB before reading (interpreter + torch + torchvision)")
    rng = random.Random(seed)
    sample = rng.sample(store.ids(), min(reads, len(store)))
    everything = rng.sample(store.ids(), len(store))
    torch.set_num_threads(1)
    print(HEADER)
    print(lean.format(), " <- every image once, plain loop, lean process", flush=True)
    for clip in (False, True):
        for workers in (0, 1, 2):
            print(read_through_loader(store, sample, clip, workers).format(), flush=True)
    print(read_through_loader(store, everything, False, 2).format(), " <- every image once, DataLoader")
    peak_self, peak_child = peak_rss_mb()
    print(
        f"peak RSS (getrusage): main {peak_self:.0f} MiB, largest child {peak_child:.0f} MiB "
        f"(a forked worker's peak starts at the parent's RSS at fork); tsv {size / MB:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images in the generated tsv")
    parser.add_argument("--reads", type=int, default=3000, help="random images read per timed row")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the tsv here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        print(json.dumps(probe(args.probe, args.seed)))
    elif args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, args.n, args.reads, args.image_size, args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_images_") as tmp:
            run(Path(tmp), args.n, args.reads, args.image_size, args.seed)


if __name__ == "__main__":
    main()
