"""Exact top-k search: FAISS ``DenseIndex("Flat")`` vs a torch matmul + topk baseline, on CPU.

For each corpus size (default 10k, 100k, 1M unit vectors, dim 512, fp32) and 5k queries, top-100:
index build time and search time of both paths, the speed-up brute/faiss, whether both return the same
documents, and the FAISS path's peak RSS per stored document next to the index's own 4*dim bytes.
Every (size, path) runs in a fresh subprocess, so peak RSS is that run's alone and the two OpenMP
runtimes (FAISS's and torch's) never share a process.

    python bench/bench_search.py                      # the full table (~2 min on 2 idle cores)
    python bench/bench_search.py --sizes 10000 --queries 500
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

GEN_CHUNK = 16384
DOC_SEED, QUERY_SEED = 0, 1


def unit_vector_chunks(n: int, dim: int, seed: int) -> Iterator["torch.Tensor"]:  # noqa: F821
    """Yield seeded random unit vectors [<=GEN_CHUNK, dim] (fp32 torch) until ``n`` have been produced."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, GEN_CHUNK):
        chunk = torch.randn(min(GEN_CHUNK, n - start), dim, generator=generator)
        yield chunk.div_(chunk.norm(dim=1, keepdim=True))  # in place: one buffer per chunk


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_threads(threads: int) -> None:
    """Use ``threads`` cores in both FAISS's and torch's OpenMP pools."""
    import faiss
    import torch

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)


def run_faiss(n: int, dim: int, queries, k: int, reserve: bool = True,
              search: bool = True) -> tuple[dict, np.ndarray]:
    """Build DenseIndex("Flat") chunk by chunk (``reserve``: room reserved up front), then search.

    Memory is reported as bytes per doc over the RSS before building: peak after the build, peak overall.
    """
    from retrieval.index import DenseIndex

    baseline = rss_bytes()
    index, stats = DenseIndex(dim, "Flat", use_gpu=False), {"build_s": 0.0}
    if reserve:
        index.reserve(n)
    for chunk in unit_vector_chunks(n, dim, DOC_SEED):
        start = time.perf_counter()
        index.add(chunk)
        stats["build_s"] += time.perf_counter() - start
    stats["build_rss_per_doc"] = (peak_rss_bytes() - baseline) / n
    if not search:
        return stats, np.empty((0, k), dtype=np.int64)
    start = time.perf_counter()
    _, indices = index.search(queries, k)
    stats["search_s"] = time.perf_counter() - start
    stats["peak_rss_per_doc"] = (peak_rss_bytes() - baseline) / n
    return stats, indices


def run_brute(n: int, dim: int, queries, k: int) -> tuple[dict, np.ndarray]:
    """Fill one [n, dim] fp32 tensor chunk by chunk, then exact matmul + topk search."""
    import torch

    from retrieval.index import brute_force_search

    docs, build, offset = torch.empty(n, dim), 0.0, 0
    for chunk in unit_vector_chunks(n, dim, DOC_SEED):
        start = time.perf_counter()
        docs[offset:offset + len(chunk)] = chunk
        build += time.perf_counter() - start
        offset += len(chunk)
    start = time.perf_counter()
    _, indices = brute_force_search(docs, queries, k)
    return {"build_s": build, "search_s": time.perf_counter() - start}, indices


def worker(args: argparse.Namespace) -> None:
    """One (size, path) measurement; prints a JSON line and saves the result indices to args.out."""
    import torch

    set_threads(args.threads)
    queries = torch.cat(list(unit_vector_chunks(args.queries, args.dim, QUERY_SEED))).numpy()
    if args.worker == "brute":
        stats, indices = run_brute(args.n, args.dim, queries, args.k)
    else:
        stats, indices = run_faiss(args.n, args.dim, queries, args.k, reserve=args.worker != "build-plain",
                                   search=args.worker == "faiss")
    np.save(args.out, indices)
    print(json.dumps(stats))


def measure(path: str, n: int, args: argparse.Namespace, out: Path) -> dict:
    """Run one worker in a fresh interpreter and return its stats."""
    command = [sys.executable, __file__, "--worker", path, "--n", str(n), "--queries", str(args.queries),
               "--dim", str(args.dim), "--k", str(args.k), "--threads", str(args.threads), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{path} worker for n={n} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def same_docs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each query's top-k document set shared by the two results."""
    return float(np.mean([len(np.intersect1d(x, y)) / len(x) for x, y in zip(a, b)]))


def print_table(args: argparse.Namespace, tmp: Path) -> list[tuple[int, float]]:
    """Time and memory of both paths per size; returns (docs, peak extra RSS bytes) of the FAISS path."""
    header = (f"{'docs':>9} | {'faiss build s':>13} {'faiss search s':>14} | {'brute build s':>13} "
              f"{'brute search s':>14} | {'brute/faiss':>11} | {'same docs':>9} | {'peak RSS B/doc':>14} "
              f"{'build B/doc':>11} {'no reserve':>10} | {'index B/doc':>11}")
    print(header + "\n" + "-" * len(header))
    growth = []
    for n in args.sizes:
        stats = {path: measure(path, n, args, tmp / f"{path}.npy") for path in ("faiss", "brute", "build-plain")}
        f, b, plain = stats["faiss"], stats["brute"], stats["build-plain"]
        overlap = same_docs(np.load(tmp / "faiss.npy"), np.load(tmp / "brute.npy"))
        growth.append((n, f["peak_rss_per_doc"] * n))
        print(f"{n:>9} | {f['build_s']:>13.2f} {f['search_s']:>14.2f} | {b['build_s']:>13.2f} "
              f"{b['search_s']:>14.2f} | {b['search_s'] / f['search_s']:>10.2f}x | {overlap:>9.4f} | "
              f"{f['peak_rss_per_doc']:>14.0f} {f['build_rss_per_doc']:>11.0f} {plain['build_rss_per_doc']:>10.0f} | "
              f"{4 * args.dim:>11}", flush=True)
    return growth


def main(args: argparse.Namespace) -> None:
    import faiss
    import torch

    print(f"threads={args.threads} (faiss.omp_set_num_threads, torch.set_num_threads); faiss {faiss.__version__}, "
          f"torch {torch.__version__}; dim={args.dim} fp32, {args.queries} queries for both paths at every size, "
          f"top-{args.k}; load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        growth = print_table(args, Path(tmp))
        print(f"load average at end of table {os.getloadavg()[0]:.2f}")
        print("B/doc columns = (peak RSS - RSS before building) / docs for the FAISS path: 'peak RSS' over build and "
              f"search; 'build' after DenseIndex.reserve(n) and adds of {GEN_CHUNK}-vector chunks; 'no reserve' the "
              "same adds without reserve. The fixed part (one generation chunk, search blocks) fades as docs grow.")
        for (n0, rss0), (n1, rss1) in zip(growth, growth[1:]):
            print(f"  marginal peak RSS from {n0} to {n1} docs: {(rss1 - rss0) / (n1 - n0):.0f} B/doc")
        for n in args.memory_sizes:
            reserved, plain = (measure(path, n, args, Path(tmp) / "build.npy")
                               for path in ("build-reserve", "build-plain"))
            print(f"  build only at {n} docs: {reserved['build_rss_per_doc']:.0f} B/doc with reserve, "
                  f"{plain['build_rss_per_doc']:.0f} B/doc without (FAISS grows its buffer by doubling)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1_177_447],
                        help="build-only memory check sizes (default: the WebQA corpus)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", choices=["faiss", "brute", "build-reserve", "build-plain"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    worker(arguments) if arguments.worker else main(arguments)
