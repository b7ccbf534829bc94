"""Generation throughput of image verbalization: images/s at batch sizes 1, 16, 64, peak memory, WebQA projection.

Runs ``ImageToText.verbalize`` (image processor, beam search with 5 beams, at most 20 new tokens, decoding), the
path ``train.py verbalize`` takes for every batch, on synthetic images (no data directory needed), with a randomly
initialised ``VisionEncoderDecoderModel``: ``--size tiny`` (the tests' twin, about 1 M parameters) or ``--size real``
(ViT-B/16 + GPT-2 small shapes, about 240 M). A random decoder rarely ends a beam early, so every batch runs the full
20 steps: the worst case of a real captioner. Ratios are against batch size 1 in the same run.

    python bench/bench_verbalization.py                                  # tiny, CPU
    python bench/bench_verbalization.py --size real --device cuda        # the GPU check (one H100: about 1 minute)

Memory: CUDA ``torch.cuda.max_memory_allocated`` per batch size (reset before each); CPU the process's peak resident
set size so far (``ru_maxrss``, monotone over the run).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.captioner import MAX_NEW_TOKENS, NUM_BEAMS, ImageToText, build_vision_encoder_decoder  # noqa: E402

#: Images of WebQA's open-domain corpus (paper; DESIGN.md section 1).
WEBQA_IMAGES = 389_750


def synthetic_images(count: int, side: int = 256, seed: int = 0) -> list[Image.Image]:
    """Random RGB pictures (the image processor resizes them to the model's size, as it would real ones)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: KiB


def measure(
    verbalizer: ImageToText, batch_size: int, device: str, seconds: float, min_batches: int
) -> tuple[float, int, float]:
    """(images/s, images done, peak MiB) of repeated ``verbalize`` calls on one batch size for ``seconds``."""
    images = synthetic_images(batch_size, seed=batch_size)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, batches, start = 0, 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - start < seconds:
        texts = verbalizer.verbalize(images)
        sync(device)
        assert len(texts) == batch_size
        done, batches = done + batch_size, batches + 1
    elapsed = time.perf_counter() - start
    return done / elapsed, done, peak_memory_mib(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time budget for all measurements")
    parser.add_argument("--min-batches", type=int, default=1, help="batches per size at least")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    started = time.perf_counter()
    verbalizer = build_vision_encoder_decoder(args.size)
    verbalizer.model.to(device=args.device, dtype=getattr(torch, args.dtype))
    parameters = sum(p.numel() for p in verbalizer.model.parameters())
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"model: {args.size} VisionEncoderDecoder ({parameters / 1e6:.1f} M parameters, {args.dtype}), {name}; "
        f"beam {NUM_BEAMS}, up to {MAX_NEW_TOKENS} new tokens"
    )
    verbalizer.verbalize(synthetic_images(1))  # warm-up: kernels, allocator, lazy imports
    sync(args.device)
    print(f"set-up and warm-up: {time.perf_counter() - started:.1f} s")
    budget_left = args.max_seconds - (time.perf_counter() - started)
    rows: list[tuple[int, float, int, float]] = []
    for position, batch_size in enumerate(args.batch_sizes):
        share = budget_left / (len(args.batch_sizes) - position)
        if share <= 0:
            print(f"batch {batch_size}: skipped (--max-seconds {args.max_seconds:g} spent)")
            continue
        phase = time.perf_counter()
        throughput, done, peak = measure(verbalizer, batch_size, args.device, share * 0.8, args.min_batches)
        budget_left -= time.perf_counter() - phase
        rows.append((batch_size, throughput, done, peak))
        print(f"batch {batch_size:>3}: {throughput:8.2f} images/s ({done} images), peak memory {peak:8.1f} MiB")
    if not rows:
        return 1
    base = rows[0][1]
    print(f"\n| batch | images/s | vs batch {rows[0][0]} | peak MiB | WebQA {WEBQA_IMAGES} images |")
    print("|---:|---:|---:|---:|---:|")
    for batch_size, throughput, _, peak in rows:
        hours = WEBQA_IMAGES / throughput / 3600
        print(f"| {batch_size} | {throughput:.2f} | {throughput / base:.2f} | {peak:.0f} | {hours:.2f} h |")
    best = max(rows, key=lambda row: row[1])
    print(
        f"projected: {WEBQA_IMAGES} images at {best[1]:.1f} images/s (batch {best[0]}) = "
        f"{WEBQA_IMAGES / best[1] / 3600:.2f} h on one device; total time {time.perf_counter() - started:.1f} s"
    )
    result = {
        "size": args.size,
        "device": name,
        "dtype": args.dtype,
        "parameters": parameters,
        "rows": [
            {"batch_size": b, "images_per_s": t, "images": n, "peak_mib": p, "vs_batch_1": t / base}
            for b, t, n, p in rows
        ],
        "best_batch_size": best[0],
        "webqa_images": WEBQA_IMAGES,
        "webqa_projected_h": WEBQA_IMAGES / best[1] / 3600,
    }
    print("RESULT " + json.dumps(result))  # for bench/gpu_check.py
    return 0


if __name__ == "__main__":
    sys.exit(main())
