"""Benchmark training throughput: a bare PyTorch loop against the Lightning ``UniversalRetriever``.

Both loops train the same CLIP (default the tiny ``tiny-clip-64px``; ``--model ViT-B-32`` for the paper's;
random weights, same seed) with the same
``ContrastiveRetrievalLoss`` (in-batch + hard negatives, balanced k=1 WebQA distractors), the same
AdamW param groups and cosine schedule, on the SAME pre-collated mini-WebQA batches held in memory,
so data loading is excluded from both. Repeats alternate (bare, lightning, bare, lightning, ...)
so machine noise hits both alike; each repeat starts from a fresh copy of the same initial weights
and times the steps after ``--warmup`` untimed ones. The real ``WebQADataModule.train_dataloader``
is then timed alone at 0 and 2 workers, to compare its samples/s with the training samples/s.

The bare loop calls ``UniversalRetriever.compute_loss`` as a plain ``nn.Module`` (no trainer
attached), so both loops run the identical forward; what differs is Lightning's loop, hooks,
``self.log`` bookkeeping and the non-finite check of ``training_step``. ``--variants`` adds
monkeypatched Lightning runs (no ``self.log``; no non-finite check) that attribute that overhead.

On a GPU (``--device cuda``) the batches are moved to the device once, before timing, for both loops;
``--precision bf16-mixed`` runs the bare loop's forward under ``torch.autocast(bfloat16)`` exactly as
Lightning's ``bf16-mixed`` plugin does (fp32 master weights, no grad scaler), and every step's clock is
read after ``torch.cuda.synchronize()``, in both loops. The last line is ``RESULT {json}`` for scripts.

``--encoder marvel`` trains the tiny MARVEL encoder instead (``tiny-t5`` + ``tiny-clip-vision``: 49 patch tokens,
text length 64) in both loops, and then times encoding the corpus' image docs with it against the tiny CLIP
(``tiny-clip-64px``) in eval mode without gradients: image docs/s of each and the ratio MARVEL/CLIP. A MARVEL image
doc is one pass of the language model over 49 projected patches + the template + the caption; a CLIP image doc is
one vision pass plus one text pass over the caption (77 tokens).

Each step is timed end to end (from the end of the previous step, so fetching the batch, hooks and
logging count). Three clocks are reported: the median step (the headline, robust to bursts of load
from other processes on a shared machine), the whole timed span, and this process's CPU time.
``--threads`` defaults to 1: on a shared 2-core machine two intra-op threads collapse as soon as
other processes take a core (OpenMP threads wait on each other at every op; steps ran 10-15x slower).

    python bench/bench_training.py [--steps 20] [--warmup 3] [--batch-size 64] [--rounds 3]
                                   [--threads 1] [--data-dir DIR] [--variants]
    python bench/bench_training.py --model ViT-B-32 --device cuda --precision bf16-mixed --steps 30 --warmup 5
    python bench/bench_training.py --encoder marvel
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.fabric.utilities.apply_func import move_data_to_device  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datamodules.batches import DocBatch, TrainBatch  # noqa: E402
from datamodules.mini_webqa import generate_mini_webqa  # noqa: E402
from datamodules.webqa_datamodule import WEBQA_DISTRACTORS, WebQADataModule  # noqa: E402
from lightning_modules.encoders.base import RetrievalEncoder  # noqa: E402
from lightning_modules.encoders.clip import CLIPEncoder  # noqa: E402
from lightning_modules.encoders.marvel import MarvelEncoder  # noqa: E402
from lightning_modules.loss import ContrastiveRetrievalLoss  # noqa: E402
from lightning_modules.optim import build_param_groups, cosine_schedule_with_warmup  # noqa: E402
from lightning_modules.retriever import UniversalRetriever  # noqa: E402

MODEL_NAME = "tiny-clip-64px"
ENCODERS = ("clip", "marvel")
PRECISIONS = ("32-true", "bf16-mixed")
TARGET_RATIO = 0.9
MEDIAN_STEP = "median step"
Batch = TrainBatch


# --------------------------------------------------------------------------- setup
def quiet() -> None:
    """Silence Lightning's banner and warnings about this setup, and open_clip's random-init notice."""
    for name in ("lightning.pytorch", "lightning.fabric", ""):  # "" = root (open_clip logs there)
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")


@contextlib.contextmanager
def data_directory(data_dir: str | None) -> Iterator[Path]:
    """``data_dir`` (mini-WebQA small generated there if it holds no ``train.json``), else a temp dir."""
    if data_dir is not None:
        path = Path(data_dir)
        if not (path / "train.json").exists():
            generate_mini_webqa(path, size="small", seed=0)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        yield generate_mini_webqa(Path(tmp) / "mini-webqa", size="small", seed=0)


def make_datamodule(data_dir: Path, encoder: RetrievalEncoder, batch_size: int, num_workers: int) -> WebQADataModule:
    """A set-up WebQA datamodule with balanced k=1 WebQA-distractor negatives."""
    dm = WebQADataModule(
        str(data_dir),
        negatives_file=WEBQA_DISTRACTORS,
        negative_strategy="balanced",
        negatives_k=1,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    dm.setup("fit")
    dm.set_processor(encoder.processor)
    return dm


def collect_batches(dm: WebQADataModule, n: int) -> list[Batch]:
    """The first ``n`` training batches, collated once in this process (epochs repeat if needed)."""
    batches: list[Batch] = []
    while len(batches) < n:
        for batch in dm.train_dataloader():
            batches.append(batch)
            if len(batches) == n:
                break
    return batches


def make_module(initial_encoder: RetrievalEncoder) -> UniversalRetriever:
    """A retriever around a fresh copy of ``initial_encoder``: every run starts from the same weights."""
    loss = ContrastiveRetrievalLoss(in_batch=True, hard_negatives=True)
    return UniversalRetriever(copy.deepcopy(initial_encoder), loss=loss)


@dataclass(frozen=True)
class Setup:
    """Where and how both loops train: the device and Lightning's precision string."""

    device: torch.device
    precision: str = "32-true"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The bare loop's forward context: what Lightning's precision plugin does around ``training_step``."""
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait for the device's queued work, so the clock read next covers it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def trainer_device(self) -> dict[str, Any]:
        """``accelerator`` and ``devices`` of a ``Trainer`` on this device."""
        if self.device.type == "cuda":
            return {"accelerator": "gpu", "devices": [self.device.index or 0]}
        return {"accelerator": "cpu", "devices": 1}


SETUP = Setup(torch.device("cpu"))  # set by main() from --device/--precision


# --------------------------------------------------------------------------- the two loops
def differences(marks: tuple[float, ...], warmup: int) -> list[float]:
    """Durations of the steps after ``warmup`` from the clock readings at the end of every step."""
    return [after - before for before, after in zip(marks[warmup - 1 :], marks[warmup:])]


@dataclass
class Timing:
    """Wall and process-CPU seconds of each timed step of one run, and the trained module."""

    wall: list[float]
    cpu: list[float]
    module: UniversalRetriever

    def rates(self, batch_size: int) -> dict[str, float]:
        """Samples/s by three clocks: the median step (robust to load bursts of other processes),
        the whole timed span, and this process's CPU time (blind to time taken by other processes)."""
        n = len(self.wall) * batch_size
        return {
            MEDIAN_STEP: batch_size / statistics.median(self.wall),
            "whole span": n / sum(self.wall),
            "cpu time": n / sum(self.cpu),
        }


class StepTimes:
    """Clock readings (wall, process CPU) at the end of every step; the end-to-end differences include
    everything a loop does between steps (fetching the next batch, hooks, logging)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        SETUP.synchronize()  # a no-op on the CPU
        self.marks.append((time.perf_counter(), time.process_time()))

    def timing(self, warmup: int, module: UniversalRetriever) -> Timing:
        wall, cpu = zip(*self.marks)
        return Timing(differences(wall, warmup), differences(cpu, warmup), module)


def bare_optimizer(module: UniversalRetriever, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW + cosine exactly as ``UniversalRetriever.configure_optimizers`` builds them."""
    hp = module.hparams
    groups = build_param_groups(module, hp.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
    scheduler = cosine_schedule_with_warmup(optimizer, min(hp.warmup_steps, total_steps), total_steps, hp.min_lr_ratio)
    return optimizer, scheduler


def run_bare(initial_encoder: RetrievalEncoder, batches: list[Batch], warmup: int) -> Timing:
    """Plain PyTorch: forward, backward, optimizer step, zero_grad, scheduler step."""
    module = make_module(initial_encoder).to(SETUP.device)
    module.train()
    optimizer, scheduler = bare_optimizer(module, len(batches))
    times = StepTimes()
    for batch in batches:
        with SETUP.autocast():
            loss = module.compute_loss(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        times.mark()
    return times.timing(warmup, module)


class StepClock(L.Callback):
    """Marks the end of every training step (Lightning steps the scheduler before ``on_train_batch_end``)."""

    def __init__(self) -> None:
        self.times = StepTimes()
        self.threads = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.threads = torch.get_num_threads()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.times.mark()


def run_lightning(initial_encoder: RetrievalEncoder, batches: list[Batch], warmup: int) -> Timing:
    """``lightning.Trainer.fit`` over the in-memory batches, with the module's own ``configure_optimizers``."""
    module = make_module(initial_encoder)
    clock = StepClock()
    trainer = L.Trainer(
        **SETUP.trainer_device(),
        precision=SETUP.precision,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    if clock.threads != torch.get_num_threads():
        raise RuntimeError(f"Lightning ran with {clock.threads} threads, the bare loop with {torch.get_num_threads()}")
    return clock.times.timing(warmup, module)


# --------------------------------------------------------------------------- monkeypatched variants
@contextlib.contextmanager
def patched(target: object, name: str, replacement: Any) -> Iterator[None]:
    """Temporarily replace ``target.name``."""
    original = getattr(target, name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        setattr(target, name, original)


def no_logging() -> contextlib.AbstractContextManager:
    """``self.log`` / ``self.log_dict`` do nothing (no ResultCollection bookkeeping per step)."""
    stack = contextlib.ExitStack()
    stack.enter_context(patched(UniversalRetriever, "log", lambda self, *a, **k: None))
    stack.enter_context(patched(UniversalRetriever, "log_dict", lambda self, *a, **k: None))
    return stack


def no_finite_check() -> contextlib.AbstractContextManager:
    """``_stop_on_non_finite`` does nothing (no isfinite sync, no ``reduce_boolean_decision``)."""
    return patched(UniversalRetriever, "_stop_on_non_finite", lambda self, *a, **k: None)


def lightning_variant(
    patch: Callable[[], contextlib.AbstractContextManager],
) -> Callable[[RetrievalEncoder, list[Batch], int], Timing]:
    """``run_lightning`` under ``patch``."""

    def run(initial_encoder: RetrievalEncoder, batches: list[Batch], warmup: int) -> Timing:
        with patch():
            return run_lightning(initial_encoder, batches, warmup)

    return run


# --------------------------------------------------------------------------- measurement
@dataclass
class Contender:
    """One way of training, and the samples/s of each of its repeats by each clock of ``Timing.rates``."""

    name: str
    run: Callable[[RetrievalEncoder, list[Batch], int], Timing]
    rates: dict[str, list[float]] = field(default_factory=dict)
    first: Timing | None = None

    def median(self, clock: str = MEDIAN_STEP) -> float:
        """Median over repeats; by default of the median-step throughput, the headline number."""
        return statistics.median(self.rates[clock])


def alternate(
    contenders: list[Contender],
    initial_encoder: RetrievalEncoder,
    batches: list[Batch],
    warmup: int,
    rounds: int,
    batch_size: int,
) -> None:
    """Run every contender once per round, in turn, recording its samples/s (and keeping its first run)."""
    for round_index in range(rounds):
        for c in contenders:
            timing = c.run(initial_encoder, batches, warmup)
            rates = timing.rates(batch_size)
            for clock, rate in rates.items():
                c.rates.setdefault(clock, []).append(rate)
            c.first = c.first or timing
            shown = ", ".join(f"{rate:6.1f} ({clock})" for clock, rate in rates.items())
            print(f"  round {round_index + 1}: {c.name:<26} samples/s {shown}", flush=True)


def variants() -> list[Contender]:
    """Lightning with its per-step extras switched off one at a time."""
    return [
        Contender("lightning, no self.log", lightning_variant(no_logging)),
        Contender("lightning, no finite check", lightning_variant(no_finite_check)),
    ]


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference between the parameters of two same-architecture modules, compared on the CPU
    (Lightning moves its module back to the CPU when ``fit`` ends; the bare loop's stays on the device)."""
    return max(
        (pa.detach().cpu() - pb.detach().cpu()).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters())
    )


@dataclass
class LoaderRate:
    """Throughput of the real training DataLoader."""

    workers: int
    batches: int
    first_batch_s: float
    steady_s: float

    def batches_per_s(self) -> float:
        return (self.batches - 1) / self.steady_s


def time_loader(
    data_dir: Path, encoder: RetrievalEncoder, batch_size: int, workers: int, max_batches: int
) -> LoaderRate:
    """Iterate ``dm.train_dataloader()`` alone: latency of the first batch, then the steady rate."""
    loader = make_datamodule(data_dir, encoder, batch_size, workers).train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    count = 1
    for _ in iterator:
        count += 1
        if count == max_batches:
            break
    end = time.perf_counter()
    del iterator, loader  # shuts persistent workers down
    return LoaderRate(workers, count, first - start, end - first)


# --------------------------------------------------------------------------- report
def print_training_table(contenders: list[Contender], batch_size: int) -> None:
    """Per clock: median samples/s over repeats and its ratio to the first contender (the bare loop)."""
    clocks = list(contenders[0].rates)
    header = "".join(f"{clock + ' samples/s':>22}{'ratio':>7}" for clock in clocks)
    print(f"\n{'loop':<28}{'ms/step':>9}{header}")
    for c in contenders:
        cells = "".join(f"{c.median(k):22.1f}{c.median(k) / contenders[0].median(k):7.3f}" for k in clocks)
        print(f"{c.name:<28}{1000 * batch_size / c.median():9.1f}{cells}")


def print_loader_table(rates: list[LoaderRate], batch_size: int, train_rate: float) -> None:
    """Batches/s and samples/s of the real loader, and how many times the (faster) training samples/s that is."""
    print(f"\n{'train_dataloader':<24}{'batches/s':>10}{'samples/s':>11}{'x training':>12}{'first batch s':>15}")
    for r in rates:
        samples = r.batches_per_s() * batch_size
        print(
            f"{'num_workers=' + str(r.workers):<24}{r.batches_per_s():10.2f}{samples:11.1f}"
            f"{samples / train_rate:12.1f}{r.first_batch_s:15.2f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run (>= 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="queries per batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats of each loop")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads for both loops (see the module docstring)"
    )
    parser.add_argument("--loader-batches", type=int, default=20, help="batches read per DataLoader measurement")
    parser.add_argument(
        "--loader-workers",
        type=int,
        nargs="*",
        default=[0, 2],
        help="num_workers values of the DataLoader measurement (none: skip it)",
    )
    parser.add_argument("--encoder", default="clip", choices=ENCODERS, help="clip (--model) or the tiny MARVEL")
    parser.add_argument("--model", default=MODEL_NAME, help="open_clip architecture, random weights (e.g. ViT-B-32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]; batches are moved there before timing")
    parser.add_argument(
        "--precision", default="32-true", choices=PRECISIONS, help="Lightning precision, mirrored in the bare loop"
    )
    parser.add_argument(
        "--data-dir", default=None, help="mini-WebQA directory (generated 'small' if empty); default: a temp dir"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help=f"also time monkeypatched Lightning (forced when ratio < {TARGET_RATIO})",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    return args


def describe_batches(dm: WebQADataModule, batches: list[Batch]) -> str:
    """One line about the data: queries, docs per batch, batches where the 0 * sum(params) guard fires."""
    docs = statistics.mean(len(b.docs) for b in batches)
    text_only = sum(not b.has_images for b in batches)
    return (
        f"{len(dm.train_queries)} train queries, {docs:.0f} docs per batch on average, "
        f"{text_only} of {len(batches)} batches without image docs (where compute_loss adds 0 * sum(params))"
    )


def compare_loops(args: argparse.Namespace, initial_encoder: RetrievalEncoder, batches: list[Batch]) -> list[Contender]:
    """Alternate bare and Lightning (and the variants when asked or when Lightning is too slow); print the tables."""
    contenders = [Contender("bare pytorch", run_bare), Contender("lightning", run_lightning)]
    contenders += variants() if args.variants else []
    if SETUP.device.type == "cuda":  # the first loop on a fresh CUDA context would pay for everyone's warm-up
        run_bare(initial_encoder, batches, warmup=1)
        print(
            "  (one untimed bare pass over all batches first: lazy kernel loading, cuBLAS heuristics for every "
            "batch shape and the caching allocator are warm for both loops)",
            flush=True,
        )
    alternate(contenders, initial_encoder, batches, args.warmup, args.rounds, args.batch_size)
    print_training_table(contenders, args.batch_size)
    diff = max_weight_difference(contenders[0].first.module, contenders[1].first.module)
    print(f"max |weight difference| bare vs lightning after {len(batches)} steps (round 1): {diff:.2e}")
    ratio = contenders[1].median() / contenders[0].median()
    if ratio < TARGET_RATIO and not args.variants:
        print(f"\nratio {ratio:.2f} < {TARGET_RATIO}: timing monkeypatched Lightning against the bare loop again")
        block = [Contender("bare pytorch", run_bare), *variants()]
        alternate(block, initial_encoder, batches, args.warmup, args.rounds, args.batch_size)
        print_training_table(block, args.batch_size)
    return contenders


def build_encoder(kind: str, model: str) -> RetrievalEncoder:
    """The encoder both loops train: a CLIP of architecture ``model``, or the tiny MARVEL (random weights)."""
    if kind == "marvel":
        return MarvelEncoder("tiny-t5", "tiny-clip-vision", tokenizer="tiny-wordpiece", text_length=64)
    return CLIPEncoder(model, pretrained=None)


def image_doc_batches(data_dir: Path, encoder: RetrievalEncoder, batch_size: int, n: int) -> list[DocBatch]:
    """The first ``n`` batches of image docs of the corpus, collated for ``encoder``."""
    dm = make_datamodule(data_dir, encoder, batch_size, num_workers=0)
    dm.hparams.eval_batch_size = batch_size
    images = [i for i, is_image in enumerate(dm.corpus.is_image) if is_image][: n * batch_size]
    loader = dm.corpus_dataloader(persistent=False)
    return [loader.collate_fn(images[k : k + batch_size]) for k in range(0, len(images), batch_size)]


def time_image_encoding(encoder: RetrievalEncoder, batches: list[DocBatch]) -> float:
    """Image docs/s of ``encoder.encode_images`` over ``batches`` (eval mode, no gradients, after one warm batch)."""
    encoder.eval()
    with torch.no_grad():
        encoder.encode_images(batches[0].image_pixels, batches[0].caption_tokens)
        start = time.perf_counter()
        for batch in batches:
            encoder.encode_images(batch.image_pixels, batch.caption_tokens)
        return sum(len(b) for b in batches) / (time.perf_counter() - start)


def compare_image_encoding(data_dir: Path, marvel: RetrievalEncoder, batch_size: int, rounds: int) -> float:
    """MARVEL vs tiny CLIP image-doc encoding, alternating rounds; prints both and returns MARVEL/CLIP."""
    clip = CLIPEncoder(MODEL_NAME, pretrained=None)
    encoders = {"marvel (49 patches + caption)": marvel, f"clip {MODEL_NAME} (image + caption)": clip}
    batches = {name: image_doc_batches(data_dir, e, batch_size, 5) for name, e in encoders.items()}
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            rates[name].append(time_image_encoding(encoder, batches[name]))
    print(f"\n{'image-doc encoding':<40}{'docs/s':>10}")
    for name in encoders:
        print(f"{name:<40}{statistics.median(rates[name]):10.1f}")
    names = list(encoders)
    ratio = statistics.median(rates[names[0]]) / statistics.median(rates[names[1]])
    print(f"RATIO marvel/clip image-doc encoding = {ratio:.2f}")
    return ratio


def describe_device(setup: Setup) -> str:
    """The device in words (GPU name when on CUDA) and the precision."""
    name = torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "cpu"
    return f"device {setup.device} ({name}), precision {setup.precision}"


def main(argv: list[str] | None = None) -> None:
    global SETUP
    args = parse_args(argv)
    quiet()
    SETUP = Setup(torch.device(args.device), args.precision)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    initial_encoder = build_encoder(args.encoder, args.model)
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, {describe_device(SETUP)}"
    )
    print(
        f"{args.encoder if args.encoder != 'clip' else args.model}: batch {args.batch_size}, {args.warmup} warmup + "
        f"{args.steps} timed steps, {args.rounds} rounds"
    )
    with data_directory(args.data_dir) as data_dir:
        dm = make_datamodule(data_dir, initial_encoder, args.batch_size, num_workers=0)
        batches = collect_batches(dm, args.warmup + args.steps)
        print(f"data {data_dir}: {describe_batches(dm, batches)}\n")
        batches = [move_data_to_device(batch, SETUP.device) for batch in batches]  # a no-op on the CPU
        contenders = compare_loops(args, initial_encoder, batches)
        loaders = [
            time_loader(data_dir, initial_encoder, args.batch_size, workers, args.loader_batches)
            for workers in args.loader_workers
        ]
        encoding = None
        if args.encoder == "marvel":
            encoding = compare_image_encoding(data_dir, initial_encoder, args.batch_size, args.rounds)
    bare, lightning = contenders[0].median(), contenders[1].median()
    if loaders:
        print_loader_table(loaders, args.batch_size, max(bare, lightning))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"RATIO lightning/bare = {lightning / bare:.2f}")
    result = {
        "model": args.encoder if args.encoder != "clip" else args.model,
        "marvel_over_clip_image_encoding": encoding,
        "device": str(SETUP.device),
        "precision": SETUP.precision,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "bare_samples_per_s": bare,
        "lightning_samples_per_s": lightning,
        "ratio": lightning / bare,
        "loader_samples_per_s": {str(r.workers): r.batches_per_s() * args.batch_size for r in loaders},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
