"""BM25 (``retrieval.bm25``) and run fusion (``retrieval.fusion``) throughput.

BM25: for each corpus size (default 100k and 1M), synthetic short docs of 25 tokens drawn from a Zipf vocabulary
(50,000 letter words, exponent 1.1, as word frequencies in text), indexed with the project's settings (Lucene BM25,
k1 0.9, b 0.4, English stemmer and stop words); then ``--queries`` queries of 5 tokens from the same vocabulary,
top-100 over the whole corpus. Printed: tokenizing + indexing docs/s, search queries/s (wall clock, and the CPU
seconds of the process, which a busy machine inflates less), and the peak RSS of the
process over the docs (``ru_maxrss`` minus the RSS before the texts were made, per doc; the texts themselves
included). Each size runs in a fresh subprocess, so each peak is that size's alone.

Fusion: two runs of 5,000 queries x 100 docs (half of the docs shared), RRF and min-max interpolation, the best of
three timings of each (in memory; reading and writing the files is timed separately).

    python bench/bench_bm25.py                    # 100k and 1M docs (a few minutes on 2 cores)
    python bench/bench_bm25.py --sizes 100000 --queries 500
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCABULARY, ZIPF, DOC_TOKENS, QUERY_TOKENS = 50_000, 1.1, 25, 5


def vocabulary(size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct lower-case letter words of 4 to 9 letters."""
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    while len(words) < size:
        length = int(rng.integers(4, 10))
        words.add("".join(rng.choice(letters, size=length)))
    return np.array(sorted(words))


def zipf_texts(words: np.ndarray, n: int, tokens: int, seed: int) -> list[str]:
    """``n`` texts of ``tokens`` words, word ranks drawn from a Zipf law over the vocabulary."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    probabilities = ranks**-ZIPF
    probabilities /= probabilities.sum()
    ids = rng.choice(len(words), size=(n, tokens), p=probabilities)
    return [" ".join(row) for row in words[ids]]


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bm25_size(n: int, queries: int) -> dict[str, float]:
    """One size, in this process: indexing and search rates, peak RSS per doc."""
    from retrieval.bm25 import BM25Index

    words = vocabulary(VOCABULARY)
    base = rss_bytes()
    texts = zipf_texts(words, n, DOC_TOKENS, seed=1)
    start, cpu = time.perf_counter(), time.process_time()
    index = BM25Index.build([str(i) for i in range(n)], texts, np.zeros(n, dtype=bool), progress=False)
    indexed, index_cpu = time.perf_counter() - start, time.process_time() - cpu
    del texts
    query_texts = zipf_texts(words, queries, QUERY_TOKENS, seed=2)
    start, cpu = time.perf_counter(), time.process_time()
    results = index.search(query_texts, k=100, progress=False)
    searched, search_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "docs": n,
        "index_s": indexed,
        "docs_per_s": n / indexed,
        "index_cpu_s": index_cpu,
        "search_s": searched,
        "queries_per_s": queries / searched,
        "search_cpu_s": search_cpu,
        "mean_results": float(np.mean([len(r) for r in results])),
        "peak_rss_per_doc": (peak - base) / n,
    }


def two_runs(n_queries: int, depth: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    runs = []
    for offset in (0, depth // 2):  # the second run shares half of each query's docs with the first
        run = {}
        for q in range(n_queries):
            scores = np.sort(rng.random(depth))[::-1]
            run[f"q{q}"] = [(f"d{q}-{offset + i}", float(s)) for i, s in enumerate(scores)]
        runs.append(run)
    return runs[0], runs[1]


def fusion(n_queries: int = 5000, depth: int = 100) -> dict[str, float]:
    from retrieval.fusion import interpolate, reciprocal_rank_fusion
    from retrieval.trec import read_trec_run, write_trec_run

    run_a, run_b = two_runs(n_queries, depth)
    timings = {}
    for name, fuse in (("rrf", reciprocal_rank_fusion), ("interpolation", interpolate)):
        best, best_cpu = float("inf"), float("inf")
        for _ in range(3):
            start, cpu = time.perf_counter(), time.process_time()
            fused = fuse([run_a, run_b], depth=depth)
            best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
        assert len(fused) == n_queries and all(len(r) == depth for r in fused.values())
        timings[f"{name}_s"], timings[f"{name}_cpu_s"] = best, best_cpu
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_trec_run(Path(folder) / "a.trec", run_a, tag="a")
        timings["write_one_run_s"] = time.perf_counter() - start
        start = time.perf_counter()
        read_trec_run(Path(folder) / "a.trec")
        timings["read_one_run_s"] = time.perf_counter() - start
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # the subprocess of one size
    args = parser.parse_args()
    if args.one_size:
        print("RESULT " + json.dumps(bm25_size(args.one_size, args.queries)))
        return
    rows = []
    for n in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--one-size", str(n), "--queries", str(args.queries)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(proc.stdout.split("RESULT ", 1)[1]))
        r = rows[-1]
        print(
            f"BM25 {r['docs']:>9,} docs: index {r['index_s']:.1f} s ({r['docs_per_s']:,.0f} docs/s; CPU "
            f"{r['index_cpu_s']:.1f} s), {args.queries} queries {r['search_s']:.1f} s ({r['queries_per_s']:,.0f} "
            f"queries/s; CPU {r['search_cpu_s']:.1f} s; {r['mean_results']:.0f} results each), peak RSS "
            f"{r['peak_rss_per_doc']:,.0f} B/doc",
            flush=True,
        )
    timings = fusion()
    print(
        f"fusion of two 5,000 x 100 runs: RRF {timings['rrf_s']:.3f} s (CPU {timings['rrf_cpu_s']:.3f} s), "
        f"interpolation {timings['interpolation_s']:.3f} s (CPU {timings['interpolation_cpu_s']:.3f} s); target < 1 s "
        f"(writing one run {timings['write_one_run_s']:.2f} s, "
        f"reading it {timings['read_one_run_s']:.2f} s)"
    )
    print("RESULT " + json.dumps({"bm25": rows, "fusion": timings}))


if __name__ == "__main__":
    main()
