"""Exact top-k search: FAISS ``DenseIndex("Flat")`` vs a torch matmul + topk baseline, on CPU (default), or
FAISS on the CPU vs torch on a GPU (``--compare-device cuda``).

For each corpus size (default 10k, 100k, 1M unit vectors, dim 512, fp32) and 5k queries, top-100:
index build time and search time of both paths, the speed-up brute/faiss, whether both return the same
documents, and the FAISS path's peak RSS per stored document next to the index's own 4*dim bytes.
Every (size, path) runs in a fresh subprocess, so peak RSS is that run's alone and the two OpenMP
runtimes (FAISS's and torch's) never share a process.

    python bench/bench_search.py                      # the full table (~2 min on 2 idle cores)
    python bench/bench_search.py --sizes 10000 --queries 500

``--compare-device DEV`` times, per size, FAISS ``Flat`` on the CPU (a fresh subprocess, ``--threads`` cores)
against ``retrieval.index.brute_force_search(..., device=DEV, **GPU_SEARCH)`` (fp16 scores, the exact search
that ``exact_search`` runs on a GPU) in this process, and FAISS's GPU index when the installed FAISS has GPU
support; it reports the seconds, their ratio, and the share of identical ids in both top-k lists (fp16 vs
fp32 scores: documents that tie in fp16 at the k-th place may differ). The torch time is split into copying
the fp32 docs to the device as fp16 and searching them there; both calls are preceded by a small warm-up.
The last line is ``RESULT {json}``.

    python bench/bench_search.py --compare-device cuda --sizes 1177447 --queries 5000
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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

GEN_CHUNK = 16384
DOC_SEED, QUERY_SEED = 0, 1


def unit_vector_chunks(n: int, dim: int, seed: int) -> Iterator[torch.Tensor]:
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


def run_faiss(n: int, dim: int, queries, k: int, reserve: bool = True, search: bool = True) -> tuple[dict, np.ndarray]:
    """Build DenseIndex("Flat") chunk by chunk (``reserve``: room reserved up front), then search.

    Memory is reported as bytes per doc over the RSS before building: peak after the build, peak overall.
    """
    from retrieval.index import DenseIndex

    baseline = rss_bytes()
    index, stats = DenseIndex(dim, "Flat"), {"build_s": 0.0}
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
        docs[offset : offset + len(chunk)] = chunk
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
        stats, indices = run_faiss(
            args.n, args.dim, queries, args.k, reserve=args.worker != "build-plain", search=args.worker == "faiss"
        )
    np.save(args.out, indices)
    print(json.dumps(stats))


def measure(path: str, n: int, args: argparse.Namespace, out: Path) -> dict:
    """Run one worker in a fresh interpreter and return its stats."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        path,
        "--n",
        str(n),
        "--queries",
        str(args.queries),
        "--dim",
        str(args.dim),
        "--k",
        str(args.k),
        "--threads",
        str(args.threads),
        "--out",
        str(out),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{path} worker for n={n} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def same_docs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each query's top-k document set shared by the two results."""
    return float(np.mean([len(np.intersect1d(x, y)) / len(x) for x, y in zip(a, b)]))


def print_table(args: argparse.Namespace, tmp: Path) -> list[tuple[int, float]]:
    """Time and memory of both paths per size; returns (docs, peak extra RSS bytes) of the FAISS path."""
    header = (
        f"{'docs':>9} | {'faiss build s':>13} {'faiss search s':>14} | {'brute build s':>13} "
        f"{'brute search s':>14} | {'brute/faiss':>11} | {'same docs':>9} | {'peak RSS B/doc':>14} "
        f"{'build B/doc':>11} {'no reserve':>10} | {'index B/doc':>11}"
    )
    print(header + "\n" + "-" * len(header))
    growth = []
    for n in args.sizes:
        stats = {path: measure(path, n, args, tmp / f"{path}.npy") for path in ("faiss", "brute", "build-plain")}
        f, b, plain = stats["faiss"], stats["brute"], stats["build-plain"]
        overlap = same_docs(np.load(tmp / "faiss.npy"), np.load(tmp / "brute.npy"))
        growth.append((n, f["peak_rss_per_doc"] * n))
        print(
            f"{n:>9} | {f['build_s']:>13.2f} {f['search_s']:>14.2f} | {b['build_s']:>13.2f} "
            f"{b['search_s']:>14.2f} | {b['search_s'] / f['search_s']:>10.2f}x | {overlap:>9.4f} | "
            f"{f['peak_rss_per_doc']:>14.0f} {f['build_rss_per_doc']:>11.0f} {plain['build_rss_per_doc']:>10.0f} | "
            f"{4 * args.dim:>11}",
            flush=True,
        )
    return growth


def main(args: argparse.Namespace) -> None:
    import faiss
    import torch

    print(
        f"threads={args.threads} (faiss.omp_set_num_threads, torch.set_num_threads); faiss {faiss.__version__}, "
        f"torch {torch.__version__}; dim={args.dim} fp32, {args.queries} queries for both paths at every size, "
        f"top-{args.k}; load average at start {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        growth = print_table(args, Path(tmp))
        print(f"load average at end of table {os.getloadavg()[0]:.2f}")
        print(
            "B/doc columns = (peak RSS - RSS before building) / docs for the FAISS path: 'peak RSS' over build and "
            f"search; 'build' after DenseIndex.reserve(n) and adds of {GEN_CHUNK}-vector chunks; 'no reserve' the "
            "same adds without reserve. The fixed part (one generation chunk, search blocks) fades as docs grow."
        )
        for (n0, rss0), (n1, rss1) in zip(growth, growth[1:]):
            print(f"  marginal peak RSS from {n0} to {n1} docs: {(rss1 - rss0) / (n1 - n0):.0f} B/doc")
        for n in args.memory_sizes:
            reserved, plain = (
                measure(path, n, args, Path(tmp) / "build.npy") for path in ("build-reserve", "build-plain")
            )
            print(
                f"  build only at {n} docs: {reserved['build_rss_per_doc']:.0f} B/doc with reserve, "
                f"{plain['build_rss_per_doc']:.0f} B/doc without (FAISS grows its buffer by doubling)"
            )


# --------------------------------------------------------------------------- FAISS CPU vs torch on a device
def fill_docs(n: int, dim: int) -> torch.Tensor:
    """The same seeded docs as the workers generate, as one fp32 CPU tensor [n, dim]."""
    import torch

    docs, offset = torch.empty(n, dim), 0
    for chunk in unit_vector_chunks(n, dim, DOC_SEED):
        docs[offset : offset + len(chunk)] = chunk
        offset += len(chunk)
    return docs


def synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_torch(docs: torch.Tensor, queries: np.ndarray, k: int, device: str) -> tuple[dict, np.ndarray]:
    """Copy the docs to ``device`` in fp16, then ``brute_force_search`` with ``GPU_SEARCH`` there."""
    from retrieval.index import GPU_SEARCH, as_device, brute_force_search

    target = as_device(device)
    brute_force_search(docs[:4096], queries[:64], k, device=target, **GPU_SEARCH)  # warm-up: context, cuBLAS
    synchronize(target)
    start = time.perf_counter()
    on_device = docs.to(target, GPU_SEARCH["dtype"])
    synchronize(target)
    copy_s = time.perf_counter() - start
    start = time.perf_counter()
    _, indices = brute_force_search(on_device, queries, k, device=target, **GPU_SEARCH)  # results come back to the CPU
    return {"copy_s": copy_s, "search_s": time.perf_counter() - start}, indices


def time_faiss_gpu(
    docs: torch.Tensor,
    queries: np.ndarray,
    k: int,
    device: str,
) -> tuple[dict, np.ndarray] | None:
    """FAISS ``Flat`` on ``device`` (add + search), or None without a GPU build of FAISS."""
    from retrieval.index import DenseIndex, as_device, faiss_gpu_count

    target = as_device(device)
    if target.type != "cuda" or faiss_gpu_count() == 0:
        return None
    DenseIndex(docs.shape[1], "Flat", device=target).add(docs[:4096])  # warm-up
    start = time.perf_counter()
    index = DenseIndex(docs.shape[1], "Flat", device=target)
    index.add(docs)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, indices = index.search(queries, k)
    return {"build_s": build_s, "search_s": time.perf_counter() - start}, indices


def compare_device(args: argparse.Namespace) -> None:
    """Per size: FAISS CPU (subprocess) vs torch on ``args.compare_device`` (and FAISS GPU when available)."""
    import torch

    device = args.compare_device
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    print(
        f"FAISS Flat on the CPU ({args.threads} threads) vs torch on {device} ({name}); {args.queries} queries, "
        f"dim {args.dim}, top-{args.k}; torch: fp32 docs copied to the device as fp16, then searched there"
    )
    torch.set_num_threads(args.threads)
    queries = torch.cat(list(unit_vector_chunks(args.queries, args.dim, QUERY_SEED))).numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            cpu = measure("faiss", n, args, Path(tmp) / "faiss.npy")
            cpu_indices = np.load(Path(tmp) / "faiss.npy")
            docs = fill_docs(n, args.dim)
            gpu, gpu_indices = time_torch(docs, queries, args.k, device)
            faiss_gpu = time_faiss_gpu(docs, queries, args.k, device)
            del docs
            row = {
                "docs": n,
                "queries": args.queries,
                "k": args.k,
                "faiss_cpu_search_s": cpu["search_s"],
                "faiss_cpu_build_s": cpu["build_s"],
                "torch_copy_s": gpu["copy_s"],
                "torch_search_s": gpu["search_s"],
                "speedup_torch_vs_faiss_cpu": cpu["search_s"] / gpu["search_s"],
                "overlap_torch_faiss_cpu": same_docs(gpu_indices, cpu_indices),
                "faiss_gpu_search_s": None,
                "overlap_faiss_gpu_faiss_cpu": None,
            }
            if faiss_gpu is not None:
                row["faiss_gpu_search_s"] = faiss_gpu[0]["search_s"]
                row["overlap_faiss_gpu_faiss_cpu"] = same_docs(faiss_gpu[1], cpu_indices)
            rows.append(row)
            faiss_gpu_text = (
                "not available (this FAISS build has no GPU support)"
                if faiss_gpu is None
                else f"{row['faiss_gpu_search_s']:.3f} s (overlap {row['overlap_faiss_gpu_faiss_cpu']:.4f})"
            )
            print(
                f"{n:>9} docs: FAISS CPU search {cpu['search_s']:.3f} s (build {cpu['build_s']:.2f} s) | "
                f"torch on {device} search {gpu['search_s']:.3f} s + copy {gpu['copy_s']:.3f} s | "
                f"FAISS CPU / torch = {row['speedup_torch_vs_faiss_cpu']:.1f}x | "
                f"top-{args.k} overlap {row['overlap_torch_faiss_cpu']:.4f} | FAISS GPU: {faiss_gpu_text}",
                flush=True,
            )
    print("RESULT " + json.dumps({"device": device, "threads": args.threads, "rows": rows}))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--memory-sizes",
        type=int,
        nargs="*",
        default=[1_177_447],
        help="build-only memory check sizes (default: the WebQA corpus)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--compare-device",
        default=None,
        help="FAISS on the CPU vs torch on this device (e.g. cuda); see the module docstring",
    )
    parser.add_argument("--worker", choices=["faiss", "brute", "build-reserve", "build-plain"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    elif arguments.compare_device:
        compare_device(arguments)
    else:
        main(arguments)
