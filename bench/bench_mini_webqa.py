"""Time the mini-WebQA generator.

    python bench/bench_mini_webqa.py [--sizes tiny small] [--repeats 3] [--budget 2.0]

For each size, generates the data directory ``--repeats`` times into fresh temp directories and prints the
median seconds, its ratio to ``--budget`` seconds (what the old test allowed for ``tiny``) and the bytes
written. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.mini_webqa import generate_mini_webqa  # noqa: E402


def time_generation(size: str, repeats: int) -> tuple[list[float], int]:
    """Seconds of each of ``repeats`` generations of ``size``, and the bytes of the last directory."""
    seconds, n_bytes = [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = generate_mini_webqa(Path(tmp) / "webqa", size=size, seed=0)
            seconds.append(time.perf_counter() - start)
            n_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return seconds, n_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds the old test allowed for 'tiny'")
    args = parser.parse_args()
    print(f"{'size':<8}{'median s':>10}{'min s':>8}{'max s':>8}{'ratio':>8}{'MB':>8}")
    for size in args.sizes:
        seconds, n_bytes = time_generation(size, args.repeats)
        median = statistics.median(seconds)
        print(
            f"{size:<8}{median:>10.3f}{min(seconds):>8.3f}{max(seconds):>8.3f}{median / args.budget:>8.2f}"
            f"{n_bytes / 1e6:>8.2f}"
        )


if __name__ == "__main__":
    main()
