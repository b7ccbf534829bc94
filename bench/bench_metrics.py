"""Time ``evaluate_run`` (pytrec_eval, trec_eval order, ``image_share@10``) on a synthetic run.

    python bench/bench_metrics.py [--queries 5000] [--depth 100] [--repeats 3] [--budget 1.0]

Builds a seeded run of ``--queries`` queries x ``--depth`` scored docs (scores on a 1/256 grid, so ties are
common) drawn from 1M doc ids, with 1-4 relevant docs per query (mostly among the retrieved), and prints the
median seconds of ``evaluate_run`` over ``--repeats`` runs and its ratio to ``--budget`` seconds. It measures;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.metrics import evaluate_run  # noqa: E402

N_DOC_IDS = 10**6


def synthetic_case(n_queries: int, depth: int, seed: int = 0) -> tuple[dict, dict, set[str]]:
    """(scored run, qrels, image doc ids) with scores on a 1/256 grid: many ties per query."""
    rng = random.Random(seed)
    run, qrels = {}, {}
    for i in range(n_queries):
        docs = [f"d{j}" for j in rng.sample(range(N_DOC_IDS), depth)]
        run[f"q{i}"] = sorted(((doc, rng.randrange(256) / 256) for doc in docs), key=lambda pair: -pair[1])
        pool = docs if rng.random() < 0.7 else [f"d{rng.randrange(N_DOC_IDS)}"]  # 30%: a doc outside the run
        qrels[f"q{i}"] = {rng.choice(pool): rng.choice((1, 2)) for _ in range(rng.randint(1, 4))}
    images = {f"d{j}" for j in range(0, N_DOC_IDS, 2)}
    return run, qrels, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds the old test allowed")
    args = parser.parse_args()
    run, qrels, images = synthetic_case(args.queries, args.depth)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        metrics = evaluate_run(run, qrels, image_doc_ids=images)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(
        f"evaluate_run: {args.queries} queries x {args.depth} docs, median of {args.repeats}: {median:.3f} s "
        f"(min {min(seconds):.3f}, max {max(seconds):.3f})"
    )
    print(f"budget {args.budget:.2f} s: ratio {median / args.budget:.2f}  (MRR@10 {metrics['MRR@10']:.3f})")


if __name__ == "__main__":
    main()
