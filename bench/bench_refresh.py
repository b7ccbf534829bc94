"""Split one ANCE refresh of the tiny model on mini-WebQA into encoding, indexing, search and writing.

    python bench/bench_refresh.py [--data-dir DIR] [--repeats 3] [--workers 0]

Runs the real refresh path (``ANCEMiningCallback`` in a ``validate`` run, as ``train.py mine`` does)
several times in one process and prints the median seconds of each part and its share.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from callbacks.ance_mining import ANCEMiningCallback  # noqa: E402
from datamodules.mini_webqa import generate_mini_webqa  # noqa: E402
from datamodules.webqa_datamodule import WebQADataModule  # noqa: E402
from lightning_modules.encoders import CLIPEncoder  # noqa: E402
from lightning_modules.retriever import UniversalRetriever  # noqa: E402

PARTS = ("encode_s", "index_s", "search_s", "write_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="mini-WebQA directory (default: generate 'small' into a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for encoding")
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data_dir) if args.data_dir else generate_mini_webqa(Path(tmp.name) / "mini-webqa", size="small")
    torch.manual_seed(0)
    module = UniversalRetriever(CLIPEncoder("tiny-clip-64px", pretrained=None))
    dm = WebQADataModule(str(data), num_workers=args.workers, eval_batch_size=256)
    runs = []
    for repeat in range(args.repeats):
        miner = ANCEMiningCallback(on_validate=True, top_k=args.top_k, output_file=str(Path(tmp.name) / f"negatives-{repeat}.json"))
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[miner])
        start = time.perf_counter()
        trainer.validate(module, datamodule=dm, verbose=False)
        timings = dict(miner.timings[-1], total_s=time.perf_counter() - start)
        runs.append(timings)
    n_docs, n_queries = len(dm.corpus), len(dm.train_queries)
    medians = {part: statistics.median(r[part] for r in runs) for part in (*PARTS, "total_s")}
    mined = sum(medians[p] for p in PARTS)
    print(f"one refresh: tiny-clip-64px, {n_docs} docs ({int(dm.corpus.is_image.sum())} images) + {n_queries} training queries, "
          f"top-{args.top_k}, {args.workers} workers, median of {args.repeats}")
    print(f"{'part':<10}{'seconds':>10}{'share':>9}")
    for part in PARTS:
        print(f"{part[:-2]:<10}{medians[part]:>10.3f}{100 * medians[part] / mined:>8.1f}%")
    print(f"{'refresh':<10}{mined:>10.3f}{100.0:>8.1f}%   (validate run incl. setup: {medians['total_s']:.2f} s)")
    print(f"encoding throughput: {(n_docs + n_queries) / medians['encode_s']:.0f} items/s")


if __name__ == "__main__":
    main()
