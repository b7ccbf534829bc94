"""Split one ANCE refresh into encoding, indexing, search and writing: mini-WebQA, or projected to WebQA's size.

Default mode, the real refresh path on mini-WebQA (tiny model, CPU):

    python bench/bench_refresh.py [--data-dir DIR] [--repeats 3] [--workers 0]

runs ``ANCEMiningCallback`` in a ``validate`` run (as ``train.py mine`` does) several times in one process
and prints the median seconds of each part and its share.

``--webqa-scale`` mode, one refresh at WebQA's size (389,750 image docs, 787,697 text docs, 31,766 training
queries) with synthetic inputs:

    python bench/bench_refresh.py --webqa-scale --model ViT-B-32 --device cuda --precision bf16-mixed \\
        --images 20000 --texts 40000

encodes a measured fraction of the corpus (``--images`` image docs = random pixels + a caption, ``--texts``
text docs) and all ``--queries`` queries through ``UniversalRetriever.embed_batch``, the refresh's own call,
in ``--batch-size`` batches built on the CPU as the loader builds them (not pinned) and moved to the device
per batch; then projects the encoding linearly to the full corpus. Reading and decoding images and tokenising
(the DataLoader workers' part) are excluded: they run on the CPU in parallel with the GPU. The search runs at
full size: ``retrieval.index.exact_search`` of the queries over 1,177,447 fp16 unit vectors (synthetic, CPU,
as ``EncodedShard`` holds them) for top-(``--top-k`` + ``--max-positives``), exactly as ``mine_negatives``
calls it. Writing the negatives file is not measured here. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.fabric.utilities.apply_func import move_data_to_device  # noqa: E402

from callbacks.ance_mining import ANCEMiningCallback  # noqa: E402
from datamodules.batches import DocBatch, QueryBatch  # noqa: E402
from datamodules.mini_webqa import generate_mini_webqa  # noqa: E402
from datamodules.webqa_datamodule import WebQADataModule  # noqa: E402
from lightning_modules.encoders import CLIPEncoder  # noqa: E402
from lightning_modules.retriever import UniversalRetriever  # noqa: E402
from retrieval.index import exact_search  # noqa: E402

PARTS = ("encode_s", "index_s", "search_s", "write_s")
#: WebQA (UniVL-DR release): image docs, text docs, training queries.
WEBQA_IMAGES, WEBQA_TEXTS, WEBQA_TRAIN_QUERIES = 389_750, 787_697, 31_766
Batch = QueryBatch | DocBatch


# --------------------------------------------------------------------------- mini-WebQA, the real path
def run_mini_webqa(args: argparse.Namespace) -> None:
    """Median seconds of each part of ``--repeats`` real refreshes of the tiny model on mini-WebQA (CPU)."""
    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data_dir) if args.data_dir else generate_mini_webqa(Path(tmp.name) / "mini-webqa", size="small")
    torch.manual_seed(0)
    module = UniversalRetriever(CLIPEncoder("tiny-clip-64px", pretrained=None))
    dm = WebQADataModule(str(data), num_workers=args.workers, eval_batch_size=256, processor=module.encoder.processor)
    runs = []
    for repeat in range(args.repeats):
        output = str(Path(tmp.name) / f"negatives-{repeat}.json")
        miner = ANCEMiningCallback(on_validate=True, top_k=args.top_k, output_file=output)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[miner],
            default_root_dir=tmp.name,
        )
        start = time.perf_counter()
        trainer.validate(module, datamodule=dm, verbose=False)
        runs.append(dict(miner.timings[-1], total_s=time.perf_counter() - start))
    n_docs, n_queries = len(dm.corpus), len(dm.train_queries)
    medians = {part: statistics.median(r[part] for r in runs) for part in (*PARTS, "total_s")}
    mined = sum(medians[p] for p in PARTS)
    print(
        f"one refresh: tiny-clip-64px, {n_docs} docs ({int(dm.corpus.is_image.sum())} images) + {n_queries} "
        f"training queries, top-{args.top_k}, {args.workers} workers, median of {args.repeats}"
    )
    print(f"{'part':<10}{'seconds':>10}{'share':>9}")
    for part in PARTS:
        print(f"{part[:-2]:<10}{medians[part]:>10.3f}{100 * medians[part] / mined:>8.1f}%")
    print(f"{'refresh':<10}{mined:>10.3f}{100.0:>8.1f}%   (validate run incl. setup: {medians['total_s']:.2f} s)")
    print(f"encoding throughput: {(n_docs + n_queries) / medians['encode_s']:.0f} items/s")


# --------------------------------------------------------------------------- WebQA size, synthetic inputs
def synthetic_tokens(module: UniversalRetriever, n: int, kind: str) -> Any:
    """Tokens of ``n`` synthetic texts by the encoder's own tokenizer (CLIP pads to its context length)."""
    words = "entity bridge painted red blue square circle north river tower built year material stone glass"
    texts = [f"{kind} {i}: " + " ".join(words.split()[(i % 7) :]) for i in range(n)]
    return module.encoder.processor.tokenize(texts)


def synthetic_batches(module: UniversalRetriever, batch_size: int) -> dict[str, Batch]:
    """One CPU batch of each kind in the loader's layout (``datamodules.batching``): image docs, text docs, queries."""
    generator = torch.Generator().manual_seed(0)
    shape = module.encoder.processor.image_shape
    index = torch.arange(batch_size)
    ids = [str(i) for i in range(batch_size)]
    images = DocBatch(
        index=index,
        ids=ids,
        is_image=torch.ones(batch_size, dtype=torch.bool),
        text_tokens=None,
        image_pixels=torch.randn((batch_size, *shape), generator=generator),
        caption_tokens=synthetic_tokens(module, batch_size, "caption"),
        image_valid=torch.ones(batch_size, dtype=torch.bool),
    )
    texts = DocBatch(
        index=index,
        ids=ids,
        is_image=torch.zeros(batch_size, dtype=torch.bool),
        text_tokens=synthetic_tokens(module, batch_size, "fact"),
        image_pixels=torch.zeros((0, *shape)),
        caption_tokens=None,
        image_valid=torch.zeros(0, dtype=torch.bool),
    )
    queries = QueryBatch(index=index, ids=ids, tokens=synthetic_tokens(module, batch_size, "query"))
    return {"image docs": images, "text docs": texts, "queries": queries}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_encoding(
    module: UniversalRetriever,
    batch: Batch,
    n: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> float:
    """Seconds to embed ``n`` items in batches like ``batch`` (moved to the device per batch), after one warm-up."""
    batch_size = len(batch)
    with torch.no_grad(), autocast():
        module.embed_batch(move_data_to_device(batch, device))  # warm-up: kernels, allocator, autotuning
        synchronize(device)
        start = time.perf_counter()
        for first in range(0, n, batch_size):
            part = batch if n - first >= batch_size else truncate(batch, n - first)
            module.embed_batch(move_data_to_device(part, device))  # returns fp16 CPU vectors: synchronises
        synchronize(device)
    return time.perf_counter() - start


def truncate(batch: Batch, n: int) -> Batch:
    """The first ``n`` items of a synthetic batch (every field of it is per item)."""
    return dataclasses.replace(
        batch,
        **{
            f.name: None if getattr(batch, f.name) is None else getattr(batch, f.name)[:n]
            for f in dataclasses.fields(batch)
        },
    )


def synthetic_corpus(n: int, dim: int, device: torch.device, chunk: int = 262_144) -> torch.Tensor:
    """``n`` seeded random unit vectors as fp16 on the CPU (where ``EncodedShard`` keeps them), made on ``device``."""
    generator = torch.Generator(device=device).manual_seed(0)
    out = torch.empty((n, dim), dtype=torch.float16)
    for start in range(0, n, chunk):
        block = torch.randn((min(chunk, n - start), dim), generator=generator, device=device)
        out[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1).half().cpu()
    return out


def run_webqa_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Encode a fraction of a synthetic WebQA-size corpus and project it; search at full size. Returns RESULT."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    module = UniversalRetriever(CLIPEncoder(args.model, pretrained=None)).to(device).eval()
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if args.precision == "bf16-mixed"
        else contextlib.nullcontext
    )
    batches = synthetic_batches(module, args.batch_size)
    measured = {"image docs": args.images, "text docs": args.texts, "queries": args.queries}
    full = {"image docs": WEBQA_IMAGES, "text docs": WEBQA_TEXTS, "queries": WEBQA_TRAIN_QUERIES}
    seconds = {kind: time_encoding(module, batches[kind], n, device, autocast) for kind, n in measured.items()}
    projected = {kind: seconds[kind] * full[kind] / measured[kind] for kind in measured}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.model}, random weights, {args.precision}, batch {args.batch_size}, {device} ({name})")
    print(f"{'encoding':<12}{'measured':>10}{'seconds':>10}{'items/s':>10}{'full size':>11}{'projected s':>13}")
    for kind in measured:
        print(
            f"{kind:<12}{measured[kind]:>10}{seconds[kind]:>10.2f}{measured[kind] / seconds[kind]:>10.0f}"
            f"{full[kind]:>11}{projected[kind]:>13.2f}"
        )
    encode_measured, encode_projected = sum(seconds.values()), sum(projected.values())
    fraction = (args.images + args.texts) / (WEBQA_IMAGES + WEBQA_TEXTS)
    print(
        f"corpus fraction encoded {fraction:.4f}; encoding {encode_measured:.2f} s measured, "
        f"{encode_projected:.2f} s projected to full size"
    )

    n_docs = args.search_docs or WEBQA_IMAGES + WEBQA_TEXTS
    dim = module.encoder.embedding_dim
    docs = synthetic_corpus(n_docs, dim, device)
    queries = synthetic_corpus(args.queries, dim, device).float()  # gather_queries hands fp32 to the search
    depth = args.top_k + args.max_positives
    exact_search(docs[:1000], queries[:10], depth, device=device)  # warm-up (CUDA context, cuBLAS)
    synchronize(device)
    start = time.perf_counter()
    _, ranked = exact_search(docs, queries, depth, device=device)
    search_s = time.perf_counter() - start
    print(
        f"search: top-{depth} of {args.queries} queries over {n_docs} x {dim} fp16 docs on {device}: "
        f"{search_s:.2f} s (exact_search, copy to the device included)"
    )
    print(
        f"one refresh at WebQA size: {encode_projected + search_s:.1f} s (projected encoding + search measured "
        f"over {n_docs} docs), encoding {100 * encode_projected / (encode_projected + search_s):.0f}%"
    )
    if ranked.shape != (args.queries, depth) or (ranked < 0).any():
        raise SystemExit(f"search returned {ranked.shape} with -1 entries; expected {(args.queries, depth)} all found")
    return {
        "model": args.model,
        "device": str(device),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "measured": measured,
        "measured_s": seconds,
        "full": full,
        "projected_s": projected,
        "fraction": fraction,
        "encode_measured_s": encode_measured,
        "encode_projected_s": encode_projected,
        "search_docs": n_docs,
        "search_queries": args.queries,
        "search_k": depth,
        "search_s": search_s,
        "refresh_projected_s": encode_projected + search_s,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=None, help="mini-WebQA directory (default: generate 'small' in a temp dir)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for encoding")
    parser.add_argument("--top-k", type=int, default=100)
    scale = parser.add_argument_group("--webqa-scale mode")
    scale.add_argument("--webqa-scale", action="store_true", help="synthetic refresh at WebQA's size (see above)")
    scale.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights")
    scale.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    scale.add_argument("--precision", default="bf16-mixed", choices=("32-true", "bf16-mixed"))
    scale.add_argument("--batch-size", type=int, default=512, help="encoding batch (the recipes' eval_batch_size)")
    scale.add_argument("--images", type=int, default=20_000, help="image docs encoded (of 389,750)")
    scale.add_argument("--texts", type=int, default=40_000, help="text docs encoded (of 787,697)")
    scale.add_argument("--queries", type=int, default=WEBQA_TRAIN_QUERIES, help="queries encoded and searched")
    scale.add_argument("--search-docs", type=int, default=0, help="docs searched (0: WebQA's 1,177,447)")
    scale.add_argument(
        "--max-positives",
        type=int,
        default=5,
        help="extra depth for the positives the refresh drops (assumed WebQA maximum)",
    )
    args = parser.parse_args(argv)
    if min(args.images, args.texts, args.queries, args.batch_size) < 1:
        parser.error("--images, --texts, --queries and --batch-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.webqa_scale:
        print("RESULT " + json.dumps(run_webqa_scale(args)))
    else:
        run_mini_webqa(args)


if __name__ == "__main__":
    main()
