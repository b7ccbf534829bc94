"""The one-shot GPU check: runs every GPU-relevant check of the project and prints one line per check.

Each line is ``PASS <check>: <numbers>``, ``FAIL <check>: <reason>`` or ``SKIP <check>: <why>``, printed as the
check ends, then a ``SUMMARY`` line. Full logs (one per step), the fit's metrics and ``summary.json`` go to
``--logs``. Every step is a subprocess in its own process group with a time limit (interrupted, then killed), and
all limits are clamped to ``--deadline`` so that one hung step cannot eat the others' time. Started by
``bench/gpu_check.sh``, which installs the carried wheels first; it measures:

* ``env``: versions, the GPU, and where the carried packages were imported from;
* ``train-throughput``: ``bench/bench_training.py``, Lightning vs the bare loop, ViT-B-32 bf16-mixed batch 64;
* ``refresh-webqa``: ``bench/bench_refresh.py --webqa-scale``, one ANCE refresh at WebQA's size (encoding of a
  measured fraction projected linearly, search at full size);
* ``search``: ``bench/bench_search.py --compare-device cuda``, exact top-100 of 5,000 queries over 1,177,447 docs,
  FAISS on all CPU cores vs torch on the GPU (and FAISS GPU when the FAISS build has it), with the overlap;
* ``verbalize-throughput``: ``bench/bench_verbalization.py --size real``, caption generation images/s at batch
  1/16/64 with a real-sized random VisionEncoderDecoder in bf16, projected to WebQA's 389,750 images;
* ``marvel-fit-ddp``: the same as ``fit-ddp`` with MARVEL's tiny ANCE stage (``marvel_ance_tiny.yaml``);
* ``fit-ddp``: ``train.py fit`` on mini-WebQA with the tiny recipe, one GPU under NCCL DDP (world size 1) in
  bf16-mixed, 2 epochs with 2 in-loop ANCE refreshes and 2 validations, then ``train.py test`` on ``last.ckpt``;
* ``wandb-test``: the W&B logger test alone, with wandb's wheels (kept off the path of everything else);
* ``tests``: the test files about devices, collectives, search and precision (``GPU_RELEVANT_TESTS``);
* ``repo-clean``: no run output (checkpoints, logs, metrics, mined files) was written inside the checkout.

The timing benchmarks run first, alone on the machine; then the suite runs while the fit, the test run and the
W&B test run beside it (their seconds are wall times under that load). ``--dry-run`` runs every check on the CPU
at tiny sizes (tiny-clip-64px, 2k docs, a few steps, one small test file) to exercise the plumbing.

    python3 bench/gpu_check.py [--dry-run] [--logs DIR] [--deadline EPOCH_SECONDS] [--wandb-path DIR]
    python3 bench/gpu_check.py --probe          # the environment as JSON (used by the env check)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
WANDB_TEST = "tests/test_retriever.py::test_wandb_logger_runs_offline_without_api_key"
DRY_RUN_TESTS = "tests/test_optim.py"
#: The test files about devices, collectives, search and precision. The whole suite does not fit the GPU budget:
#: on the H100 machine its CLI subprocess tests took 22-28 s each (10-13 s on the 2-core CPU machine), and the
#: first run stopped after 18 tests; CI runs the whole suite on the CPU.
GPU_RELEVANT_TESTS = (
    *"tests/test_collectives.py tests/test_distributed_eval.py tests/test_index.py tests/test_loss.py".split(),
    *"tests/test_temperature.py tests/test_partial_evaluation.py".split(),
)
#: Modules the package and its tests import; the first group is carried as wheels (bench/fetch_gpu_wheels.sh).
CARRIED = (
    *"open_clip ftfy wcwidth jsonargparse docstring_parser typeshed_client omegaconf faiss pytrec_eval".split(),
    *"ir_measures".split(),
)
IMAGE = (
    *"torch torchvision lightning transformers torchmetrics timm numpy PIL matplotlib yaml tqdm pytest".split(),
    *"huggingface_hub safetensors regex".split(),
)
#: Paths a stray run would write inside the checkout (``tests/conftest.py`` checks the same with git).
RUN_OUTPUT = re.compile(
    r"^(runs|data|lightning_logs|wandb|eval)/|\.ckpt$|\.trec$|(^|/)metrics\.(json|csv)$|"
    r"train-negatives[^/]*\.json$"
)
PRINT_LOCK = threading.Lock()
#: Seconds pytest gets after SIGINT to print its summary; the steps' deadline is the run's minus DEADLINE_MARGIN,
#: so that a step stopped at it (interrupt, terminate, kill) still ends before the shell's own timeout.
INTERRUPT_GRACE, DEADLINE_MARGIN = 20, 20


# --------------------------------------------------------------------------- results and steps
@dataclass
class Result:
    """One check's outcome: status PASS/FAIL/SKIP, its one-line message and its numbers."""

    check: str
    status: str
    message: str
    seconds: float
    numbers: dict[str, Any]

    def line(self) -> str:
        return f"{self.status} {self.check}: {self.message}"


@dataclass
class Step:
    """One subprocess run: exit status (None when stopped at its time limit), wall seconds, log file."""

    rc: int | None
    seconds: float
    log: Path
    limit: float

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def failure(self) -> str:
        """Why the step failed, in a few words, with the last meaningful log line."""
        if self.rc is None:
            return f"stopped at its {self.limit:.0f} s time limit; log {self.log.name}"
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"Error|error:|Exception|FAILED|Traceback", line)]
        last = (errors or lines or ["(no output)"])[-1]
        return f"exit status {self.rc}: {last[:300]}; log {self.log.name}"


class Runner:
    """Runs steps as subprocesses under a global deadline, writing one log per step."""

    def __init__(self, logs: Path, deadline: float, env: dict[str, str]) -> None:
        self.logs, self.deadline, self.env = logs, deadline, env
        self.results: list[Result] = []

    def remaining(self) -> float:
        return self.deadline - time.time()

    def run(
        self, name: str, command: list[str], limit: float, env: dict[str, str] | None = None, interrupt: bool = False
    ) -> Step:
        """Run ``command`` in the repository root, at most ``limit`` seconds (never past the deadline).

        At the limit the process group gets SIGINT when ``interrupt`` (pytest then prints its summary), then
        SIGTERM, then SIGKILL.
        """
        limit = max(1.0, min(limit, self.remaining()))
        log = self.logs / f"{name}.log"
        start = time.perf_counter()
        with open(log, "w") as handle:
            handle.write(f"$ {shlex.join(command)}\n# time limit {limit:.0f} s\n")
            handle.flush()
            process = subprocess.Popen(
                command, cwd=ROOT, env=env or self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                rc: int | None = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                stop_group(process, interrupt)
                rc = None
        return Step(rc, time.perf_counter() - start, log, limit)

    def report(self, result: Result) -> Result:
        with PRINT_LOCK:
            self.results.append(result)
            print(result.line(), flush=True)
        return result


def stop_group(process: subprocess.Popen, interrupt: bool) -> None:
    """Stop the process group this script started for ``process`` (its own session), politely first."""
    signals = ([signal.SIGINT] if interrupt else []) + [signal.SIGTERM, signal.SIGKILL]
    for sig in signals:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=INTERRUPT_GRACE if sig == signal.SIGINT else 10)
            return
        except subprocess.TimeoutExpired:
            continue


def last_result(text: str) -> dict[str, Any] | None:
    """The JSON of the last ``RESULT {...}`` line a benchmark printed."""
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT ") :]) if lines else None


# --------------------------------------------------------------------------- env
def probe() -> dict[str, Any]:
    """Versions and origins of the modules the checks need, and the accelerator (printed as JSON by --probe)."""
    import importlib

    info: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "modules": {}, "missing": []}
    for name in CARRIED + IMAGE:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any import failure is a missing module here
            info["missing"].append(f"{name} ({type(err).__name__}: {err})")
            continue
        info["modules"][name] = {
            "version": str(getattr(module, "__version__", "?")),
            "from": str(Path(getattr(module, "__file__", "") or "?").parent),
        }
    import torch

    info["cuda"] = torch.cuda.is_available()
    info["torch_cuda"] = torch.version.cuda
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["bf16"] = torch.cuda.is_bf16_supported()
        try:
            version = torch.cuda.nccl.version()
            info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception as err:  # noqa: BLE001 - reported, not fatal: the fit check tells whether NCCL works
            info["nccl"] = f"unknown ({type(err).__name__})"
    if "faiss" in info["modules"]:
        import faiss

        info["faiss_gpus"] = faiss.get_num_gpus()
    return info


def check_env(runner: Runner, dry_run: bool, wandb_env: dict[str, str] | None) -> dict[str, Any]:
    step = runner.run("env", [PYTHON, __file__, "--probe"], 120)
    info = last_result(step.text) if step.rc == 0 else None
    if info is None:
        runner.report(Result("env", "FAIL", step.failure(), step.seconds, {}))
        return {}
    wandb = "not carried"
    if wandb_env is not None:
        probe_wandb = runner.run(
            "env-wandb", [PYTHON, "-c", "import wandb; print('RESULT', wandb.__version__)"], 60, env=wandb_env
        )
        wandb = probe_wandb.text.split("RESULT")[-1].strip() if probe_wandb.rc == 0 else "import failed"
    info["wandb"] = wandb
    modules = info["modules"]
    version = {name: modules.get(name, {}).get("version", "missing") for name in CARRIED + IMAGE}
    gpu = (
        f"{info.get('gpu')} x{info.get('gpus')} (sm {info.get('capability')}, bf16 {info.get('bf16')}, "
        f"NCCL {info.get('nccl')})"
        if info["cuda"]
        else "no CUDA device"
    )
    message = (
        f"python {info['python']}, {info['cpus']} cpus, torch {version['torch']} (CUDA {info['torch_cuda']}), "
        f"{gpu}; lightning {version['lightning']}, open_clip {version['open_clip']}, timm {version['timm']}, "
        f"transformers {version['transformers']}, faiss {version['faiss']} ({info.get('faiss_gpus')} GPUs), "
        f"jsonargparse {version['jsonargparse']}, wandb {wandb}"
    )
    problems = [f"missing {', '.join(info['missing'])}"] if info["missing"] else []
    if not dry_run and not info["cuda"]:
        problems.append("torch sees no CUDA device")
    status = "FAIL" if problems else "PASS"
    runner.report(Result("env", status, "; ".join(problems + [message]), step.seconds, info))
    return info


# --------------------------------------------------------------------------- the benchmarks (c, d, e)
def check_training(runner: Runner, dry_run: bool, data_dir: Path, limit: float) -> None:
    """Lightning vs the bare loop on identical work (bench/bench_training.py)."""
    if dry_run:
        sizes = [
            *"--model tiny-clip-64px --device cpu --steps 2 --warmup 1 --rounds 1 --threads 1 --loader-workers".split(),
        ]
    else:
        sizes = [
            *"--model ViT-B-32 --device cuda --steps 30 --warmup 5 --rounds 2 --threads 8 --loader-workers 8".split(),
            *"--loader-batches 20".split(),
        ]
    command = [
        PYTHON,
        "bench/bench_training.py",
        *sizes,
        *"--precision bf16-mixed --batch-size 64 --data-dir".split(),
        str(data_dir),
    ]
    step = runner.run("train-throughput", command, limit)
    result = last_result(step.text) if step.rc == 0 else None
    if result is None:
        runner.report(Result("train-throughput", "FAIL", step.failure(), step.seconds, {}))
        return
    loaders = ", ".join(
        f"DataLoader {workers} workers {rate:.0f} samples/s" for workers, rate in result["loader_samples_per_s"].items()
    )
    message = (
        f"{result['model']} random init, {result['precision']}, batch {result['batch_size']} on "
        f"{result['device']}: "
        f"bare PyTorch {result['bare_samples_per_s']:.1f} samples/s, Lightning "
        f"{result['lightning_samples_per_s']:.1f} samples/s, ratio Lightning/bare {result['ratio']:.3f} "
        f"(median step of {result['timed_steps']} timed steps, median over rounds)"
        + (f"; {loaders}" if loaders else "")
        + f"; {step.seconds:.0f} s"
    )
    runner.report(Result("train-throughput", "PASS", message, step.seconds, result))


def check_refresh(runner: Runner, dry_run: bool, limit: float) -> None:
    """One ANCE refresh at WebQA's size: measured fraction of the encoding, projected; full-size search."""
    if dry_run:
        sizes = [
            *"--model tiny-clip-64px --device cpu --precision 32-true --images 256 --texts 256 --queries 256".split(),
            *"--batch-size 128 --search-docs 2000".split(),
        ]
    else:
        sizes = [
            *"--model ViT-B-32 --device cuda --precision bf16-mixed --images 20000 --texts 40000".split(),
            *"--batch-size 512".split(),
        ]
    step = runner.run("refresh-webqa", [PYTHON, "bench/bench_refresh.py", "--webqa-scale", *sizes], limit)
    r = last_result(step.text) if step.rc == 0 else None
    if r is None:
        runner.report(Result("refresh-webqa", "FAIL", step.failure(), step.seconds, {}))
        return
    m, s, p = r["measured"], r["measured_s"], r["projected_s"]
    message = (
        f"{r['model']} {r['precision']} batch {r['batch_size']} on {r['device']}: encoded "
        f"{m['image docs']} image docs {s['image docs']:.2f} s, "
        f"{m['text docs']} text docs {s['text docs']:.2f} s, "
        f"{m['queries']} queries {s['queries']:.2f} s (corpus fraction {r['fraction']:.4f}); projected to "
        f"389,750 + 787,697 docs + 31,766 queries: encoding {r['encode_projected_s']:.1f} s (images "
        f"{p['image docs']:.1f}, texts {p['text docs']:.1f}, queries {p['queries']:.1f}); search top-"
        f"{r['search_k']} of {r['search_queries']} queries over {r['search_docs']} fp16 docs "
        f"{r['search_s']:.2f} s (measured); refresh ~{r['refresh_projected_s']:.1f} s "
        f"(data loading excluded)"
    )
    runner.report(Result("refresh-webqa", "PASS", message, step.seconds, r))


def check_search(runner: Runner, dry_run: bool, limit: float) -> None:
    """Exact top-100: FAISS CPU (all cores) vs torch on the GPU (fp16), and FAISS GPU when available."""
    threads = str(os.cpu_count() or 1)
    if dry_run:
        sizes = ["--compare-device", "cpu", "--sizes", "2000", "--queries", "100"]
    else:
        sizes = ["--compare-device", "cuda", "--sizes", "1177447", "--queries", "5000"]
    step = runner.run("search", [PYTHON, "bench/bench_search.py", *sizes, "--k", "100", "--threads", threads], limit)
    r = last_result(step.text) if step.rc == 0 else None
    if r is None:
        runner.report(Result("search", "FAIL", step.failure(), step.seconds, {}))
        return
    row = r["rows"][-1]
    faiss_gpu = (
        "FAISS GPU n/a (faiss-cpu build)"
        if row["faiss_gpu_search_s"] is None
        else f"FAISS GPU {row['faiss_gpu_search_s']:.3f} s (overlap {row['overlap_faiss_gpu_faiss_cpu']:.4f})"
    )
    message = (
        f"top-{row['k']} of {row['queries']} queries over {row['docs']} x 512: FAISS CPU Flat "
        f"({r['threads']} threads) {row['faiss_cpu_search_s']:.3f} s, torch on {r['device']} fp16 "
        f"{row['torch_search_s']:.3f} s (+ {row['torch_copy_s']:.3f} s copying the docs), FAISS CPU/torch "
        f"{row['speedup_torch_vs_faiss_cpu']:.1f}x; {faiss_gpu}; mean share of identical ids torch vs FAISS "
        f"CPU {row['overlap_torch_faiss_cpu']:.4f}"
    )
    status = "PASS" if row["overlap_torch_faiss_cpu"] >= 0.98 else "FAIL"
    if status == "FAIL":
        message = f"overlap below 0.98 (more than fp16 ties at the k-th place); {message}"
    runner.report(Result("search", status, message, step.seconds, r))


def check_verbalize(runner: Runner, dry_run: bool, limit: float) -> None:
    """Caption generation throughput (``bench/bench_verbalization.py``): a real-sized random VisionEncoderDecoder
    (ViT-B/16 + GPT-2 small) in bf16, beam 5, 20 new tokens, batch 1/16/64, with WebQA's projection."""
    if dry_run:
        sizes = [*"--size tiny --device cpu --batch-sizes 1 4 --max-seconds 10".split()]
    else:
        sizes = [*"--size real --device cuda --dtype bfloat16 --max-seconds 60".split()]
    step = runner.run("verbalize-throughput", [PYTHON, "bench/bench_verbalization.py", *sizes], limit)
    r = last_result(step.text) if step.rc == 0 else None
    if r is None:
        runner.report(Result("verbalize-throughput", "FAIL", step.failure(), step.seconds, {}))
        return
    rows = ", ".join(
        f"batch {row['batch_size']} {row['images_per_s']:.1f} images/s ({row['peak_mib']:.0f} MiB peak)"
        for row in r["rows"]
    )
    message = (
        f"{r['size']} VisionEncoderDecoder ({r['parameters'] / 1e6:.0f} M parameters, {r['dtype']}) on {r['device']},"
        f" beam 5, 20 new tokens: {rows}; WebQA's {r['webqa_images']:,} images at batch {r['best_batch_size']}: "
        f"{r['webqa_projected_h']:.2f} h"
    )
    runner.report(Result("verbalize-throughput", "PASS", message, step.seconds, r))


# --------------------------------------------------------------------------- fit + test (b), W&B, the suite (a)
def read_metric(paths: list[Path], key: str = "MRR@10") -> float | None:
    """``key`` from the last (by name: by step) metrics.json of ``paths``."""
    return json.loads(sorted(paths)[-1].read_text()).get(key) if paths else None


#: The fit checks: name -> the tiny recipe they train (UniVL-DR's CLIP family; MARVEL's ANCE stage).
FIT_CONFIGS = {"fit-ddp": "configs/tiny/univl_dr_tiny.yaml", "marvel-fit-ddp": "configs/tiny/marvel_ance_tiny.yaml"}


def check_fit(runner: Runner, dry_run: bool, work: Path, name: str = "fit-ddp") -> None:
    """``train.py fit`` with NCCL DDP at world size 1 (gloo on the CPU in a dry run), then ``train.py test``."""
    out = work / name
    common = [
        *f"--config {FIT_CONFIGS[name]} --trainer.devices 1 --trainer.strategy ddp".split(),
        *"--data.data_dir mini-webqa:small --trainer.enable_progress_bar false".split(),
    ]
    env = {**runner.env, "UNIVL_RETRIEVAL_CACHE": str(out / "cache")}  # the named dataset is generated there
    if dry_run:
        common += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--data.num_workers", "0"]
        schedule = [
            *"--trainer.max_epochs 1 --trainer.limit_train_batches 3".split(),
            *"--trainer.callbacks.init_args.every_n_steps 2".split(),
        ]
    else:
        common += ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed"]
        schedule = ["--trainer.max_epochs", "2", "--trainer.callbacks.init_args.every_n_steps", "20"]
    schedule += ["--trainer.check_val_every_n_epoch", "1"]
    run_dir = out / "run"
    fit_command = [PYTHON, "train.py", "fit", *common, *schedule, "--run_dir", str(run_dir)]
    fit = runner.run(f"{name}-fit", fit_command, 300, env=env)
    manifest = read_manifest(run_dir)
    last = manifest.get("last_checkpoint")
    if fit.rc != 0 or not last:
        reason = fit.failure() if fit.rc != 0 else f"no last checkpoint in {run_dir / 'run.json'}"
        runner.report(Result(name, "FAIL", f"fit: {reason}", fit.seconds, {}))
        return
    refresh_steps = [m["step"] for m in manifest.get("mined", [])]
    val_mrr = read_metric(
        [Path(e["directory"]) / "metrics.json" for e in manifest.get("evaluations", []) if e["split"] == "dev"]
    )
    backend = re.search(r"distributed_backend=(\w+)", fit.text)
    test = runner.run(f"{name}-test", [PYTHON, "train.py", "test", *common, "--ckpt_path", last], 150, env=env)
    tested = [e for e in read_manifest(run_dir).get("evaluations", []) if e["split"] == "test"]
    test_files = [Path(e["directory"]) / "metrics.json" for e in tested]
    test_mrr = read_metric(test_files)
    keep_artifacts(run_dir, runner.logs / name)
    numbers = {
        "fit_s": fit.seconds,
        "test_s": test.seconds,
        "refresh_steps": refresh_steps,
        "val_MRR@10": val_mrr,
        "test_MRR@10": test_mrr,
        "test_step": tested[-1]["step"] if tested else None,
        "backend": backend.group(1) if backend else None,
    }
    val_text = f"{val_mrr:.2f}" if val_mrr is not None else "missing"
    test_text = f"{test_mrr:.2f}" if test_mrr is not None else "missing"
    message = (
        f"fit {fit.seconds:.0f} s ({'CPU gloo, dry run' if dry_run else 'GPU bf16-mixed'}, DDP backend "
        f"{numbers['backend']}, world size 1), {len(refresh_steps)} in-loop ANCE refresh"
        f"{'es' if len(refresh_steps) != 1 else ''} (steps {refresh_steps}), "
        f"val MRR@10 {val_text}; test {test.seconds:.0f} s of last.ckpt (labelled step {numbers['test_step']}), "
        f"test MRR@10 {test_text}"
    )
    problems = []
    if test.rc != 0:
        problems.append(f"test: {test.failure()}")
    elif not test_files:
        problems.append("test: no test evaluation in run.json")
    if not refresh_steps:
        problems.append("no in-loop refresh happened")
    if not dry_run and numbers["backend"] != "nccl":
        problems.append(f"DDP backend {numbers['backend']}, not nccl")
    status = "FAIL" if problems else "PASS"
    runner.report(Result(name, status, "; ".join(problems + [message]), fit.seconds + test.seconds, numbers))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's ``run.json`` (empty when the run wrote none)."""
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def keep_artifacts(run_dir: Path, dest: Path) -> None:
    """Copy the small outputs of the fit and test runs (manifest, configs, metrics) next to the logs."""
    dest.mkdir(parents=True, exist_ok=True)
    small = [
        run_dir / "run.json",
        *run_dir.glob("*-config.yaml"),
        *run_dir.rglob("metrics.csv"),
        *run_dir.glob("eval/*/metrics.json"),
    ]
    for path in small:
        if path.is_file():
            shutil.copyfile(path, dest / "-".join(path.relative_to(run_dir).parts))


def pytest_counts(text: str) -> dict[str, int]:
    """Counts from pytest's final summary line (``3 passed, 1 skipped in 2.0s``)."""
    summary = [
        line
        for line in text.splitlines()
        if re.search(r"\d+ (passed|failed|error|skipped|deselected)", line) and re.search(r" in [\d.]+s", line)
    ]
    if not summary:
        return {}
    return {
        word.rstrip("s") if word.startswith("error") else word: int(n)
        for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", summary[-1])
    }


def check_pytest(runner: Runner, name: str, args: list[str], limit: float, env: dict[str, str] | None = None) -> None:
    """Run pytest with ``args``; PASS when it exits 0 within ``limit``."""
    step = runner.run(
        name, [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], limit, env=env, interrupt=True
    )
    counts = pytest_counts(step.text)
    shown = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no summary"
    first_failure = next((line for line in step.text.splitlines() if line.startswith(("FAILED ", "ERROR "))), "")
    if step.rc == 0:
        runner.report(Result(name, "PASS", f"{shown} in {step.seconds:.0f} s", step.seconds, counts))
    elif step.rc is None:
        runner.report(
            Result(
                name,
                "FAIL",
                f"stopped at the {step.limit:.0f} s time limit after {shown}"
                + (f"; first failure {first_failure}" if first_failure else ""),
                step.seconds,
                counts,
            )
        )
    else:
        reason = first_failure or checkout_changes(step.text) or step.failure()
        runner.report(Result(name, "FAIL", f"{shown} in {step.seconds:.0f} s; {reason[:300]}", step.seconds, counts))


def checkout_changes(text: str) -> str:
    """The paths listed by ``tests/conftest.py``'s checkout check when the tests wrote into the checkout."""
    if "checkout changed" not in text:
        return ""
    section = text.split("checkout changed", 1)[1].splitlines()[2:]
    paths = [line.strip() for line in section[:12] if line.startswith("    ")]
    return "tests changed the git checkout (tests/conftest.py): " + "; ".join(paths)


def check_repo_clean(runner: Runner, since: float) -> None:
    """No run output written inside the checkout since ``since`` (tests and runs must write under temp dirs)."""
    written = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in (".git", ".whl", "__pycache__")]
        for file in files:
            path = Path(directory, file)
            relative = path.relative_to(ROOT).as_posix()
            try:
                fresh = path.stat().st_mtime >= since
            except OSError:
                continue
            if fresh and RUN_OUTPUT.search(relative):
                written.append(relative)
    status = "FAIL" if written else "PASS"
    message = (
        f"written inside the checkout: {', '.join(written[:10])}" if written else "no run output inside the checkout"
    )
    runner.report(Result("repo-clean", status, message, 0.0, {"written": written}))


# --------------------------------------------------------------------------- main
def child_env(extra_path: str | None = None, dry_run: bool = False) -> dict[str, str]:
    """The checks' environment: the repository importable, no network attempts, unbuffered output.

    In a dry run, ``tests/conftest.py``'s git checkout check is off: on the development machine other people edit
    the checkout while the tests run (``repo-clean`` still looks for run outputs written inside it).
    """
    paths = [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    if extra_path:
        paths.append(extra_path)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)),
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
    )
    env.pop("WANDB_MODE", None)
    if dry_run:
        env["UNIVL_SKIP_CHECKOUT_CHECK"] = "1"
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every check on the CPU at tiny sizes")
    parser.add_argument("--logs", default=None, help="where logs go (default: a temp dir)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="epoch seconds by which everything must end (default: now + 480 s, now + 300 s in a dry run)",
    )
    parser.add_argument(
        "--wandb-path",
        default=None,
        help="site dir holding wandb and its dependencies (added to the path of the W&B test only)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data, runs, checkpoints)")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated checks to run (env and repo-clean always run); default all: {', '.join(CHECKS)}",
    )
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


#: Every check, in the order it runs (``env`` and ``repo-clean`` always run).
CHECKS = (
    *"train-throughput refresh-webqa search verbalize-throughput fit-ddp marvel-fit-ddp wandb-test tests".split(),
)


def selected_checks(only: str | None) -> set[str]:
    """The checks ``--only`` names (all when None); an unknown name stops with the list of valid ones."""
    if only is None:
        return set(CHECKS)
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise SystemExit(f"gpu_check.py: unknown check(s) {', '.join(unknown)}; choose among {', '.join(CHECKS)}")
    return names


def run_checks(args: argparse.Namespace, runner: Runner, work: Path) -> None:
    """The benchmarks alone first, then the suite beside the fit, the test run and the W&B test."""
    started = time.time()
    wanted = selected_checks(args.only)
    wandb_env = child_env(args.wandb_path, args.dry_run) if (args.wandb_path or args.dry_run) else None
    check_env(runner, args.dry_run, wandb_env)
    data_dir = work / "mini-webqa"
    phase_two = 150 if args.dry_run else 230  # seconds kept for the suite and the fit whatever the benchmarks take
    if not wanted & {"fit-ddp", "marvel-fit-ddp", "wandb-test", "tests"}:
        phase_two = 0

    def bench_limit(cap: float) -> float:
        return max(10.0, min(cap, runner.remaining() - phase_two))

    if "train-throughput" in wanted:
        check_training(runner, args.dry_run, data_dir, bench_limit(150))
    if "refresh-webqa" in wanted:
        check_refresh(runner, args.dry_run, bench_limit(150))
    if "search" in wanted:
        check_search(runner, args.dry_run, bench_limit(180))
    if "verbalize-throughput" in wanted:
        check_verbalize(runner, args.dry_run, bench_limit(120))

    def beside() -> None:
        for name in FIT_CONFIGS:
            if name in wanted:
                check_fit(runner, args.dry_run, work, name)
        if "wandb-test" not in wanted:
            return
        if wandb_env is None:
            runner.report(Result("wandb-test", "SKIP", "wandb wheels not installed (no --wandb-path)", 0.0, {}))
        else:
            check_pytest(
                runner,
                "wandb-test",
                ["--basetemp", str(work / "pytest-wandb"), WANDB_TEST],
                runner.remaining() - INTERRUPT_GRACE,
                env=wandb_env,
            )

    thread = threading.Thread(target=beside)
    thread.start()
    if "tests" in wanted:
        suite = [DRY_RUN_TESTS] if args.dry_run else ["--durations", "20", *GPU_RELEVANT_TESTS]
        check_pytest(
            runner, "tests", ["--basetemp", str(work / "pytest"), *suite], runner.remaining() - INTERRUPT_GRACE
        )
    thread.join()
    check_repo_clean(runner, started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        print("RESULT " + json.dumps(probe()))
        return 0
    start = time.time()
    deadline = args.deadline or start + (300 if args.dry_run else 480)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="gpu_check_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_work_"))
    runner = Runner(logs, deadline - DEADLINE_MARGIN, child_env(dry_run=args.dry_run))
    print(
        f"gpu_check.py: {'DRY RUN on the CPU at tiny sizes; ' if args.dry_run else ''}"
        f"{deadline - start:.0f} s left; work dir {work}; logs {logs}",
        flush=True,
    )
    try:
        run_checks(args, runner, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    counts = {status: sum(r.status == status for r in runner.results) for status in ("PASS", "FAIL", "SKIP")}
    (logs / "summary.json").write_text(json.dumps([asdict(r) for r in runner.results], indent=1))
    print(
        f"SUMMARY{' (dry run)' if args.dry_run else ''}: {len(runner.results)} checks, {counts['PASS']} PASS, "
        f"{counts['FAIL']} FAIL, {counts['SKIP']} SKIP in {time.time() - start:.0f} s; logs in {logs}",
        flush=True,
    )
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
