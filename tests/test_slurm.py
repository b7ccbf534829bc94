"""Preemption and sweeps on a real SLURM, started on this machine; and the requeue callback without SLURM.

The integration tests start a single-node cluster under ``tmp_path`` (tests/slurm/start_local_slurm.sh: its own
munged, slurmctld and slurmd, as root) and stop it by process id whatever happens. They skip, saying why, where the
Debian packages slurmctld slurmd slurm-client munge are missing (.ci/run installs them) or the tests are not root.
They run the tiny recipe on CPU (1 CPU a job, no workers) through configs/slurm/{submit.sh,train.sbatch,sweep.sbatch}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.slurm_requeue import SLURMRequeue, hpc_checkpoint_path, slurm_job_id
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever

from builders import cpu_trainer, tiny_retriever, webqa_datamodule
from cli_runs import ROOT, tiny_args

SCRIPTS = Path(__file__).resolve().parent / "slurm"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo")
ONE_CPU = ["--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1"]


# ------------------------------------------------------------------ the callback, without SLURM
def _fit(
    data_dir: Path, encoder: CLIPEncoder, root: Path, callbacks: list, ckpt: str | None = None
) -> UniversalRetriever:
    L.seed_everything(0)
    module = tiny_retriever(encoder, warmup_steps=2)
    trainer = cpu_trainer(
        root, num_sanity_val_steps=0, max_epochs=2, limit_val_batches=0, enable_checkpointing=False, callbacks=callbacks
    )
    trainer.fit(module, datamodule=webqa_datamodule(data_dir, encoder), ckpt_path=ckpt)
    return module


class _SignalAt(L.Callback):
    """Sends this process ``SIGUSR1`` as the batch of global step ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_sigusr1_saves_at_the_step_end_and_the_run_resumes_exactly(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)  # not a SLURM job: saved, nothing requeued, training goes on
    previous, threads = signal.getsignal(signal.SIGUSR1), torch.get_num_threads()
    torch.set_num_threads(1)  # 30x faster than 2 threads on 2 busy cores
    try:
        straight = _fit(tiny_data_dir, tiny_encoder, tmp_path / "straight", [])
        _fit(tiny_data_dir, tiny_encoder, tmp_path / "signalled", [SLURMRequeue(), _SignalAt(6)])
        saved = sorted(p.name for p in (tmp_path / "signalled").glob("*.ckpt"))
        assert saved == ["hpc_ckpt_1.ckpt"]
        checkpoint = tmp_path / "signalled" / "hpc_ckpt_1.ckpt"
        assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 7  # the batch's end
        resumed = _fit(tiny_data_dir, tiny_encoder, tmp_path / "resumed", [SLURMRequeue()], ckpt=str(checkpoint))
    finally:
        signal.signal(signal.SIGUSR1, previous)
        torch.set_num_threads(threads)
    for (name, x), y in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)


def test_checkpoint_numbering_and_job_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hpc_checkpoint_path(tmp_path) == tmp_path / "hpc_ckpt_1.ckpt"
    for name in ("hpc_ckpt_1.ckpt", "hpc_ckpt_12.ckpt", "hpc_ckpt_x.ckpt"):
        (tmp_path / name).touch()
    assert hpc_checkpoint_path(tmp_path) == tmp_path / "hpc_ckpt_13.ckpt"
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm_job_id() == "41"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job_id() == "40_1"  # scontrol requeue takes the array task, not the whole array


# ------------------------------------------------------------------ a local SLURM
def _ours(pid: int, cluster: Path) -> bool:
    try:
        return str(cluster) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment for sbatch & co. on a single-node cluster started for this module and stopped after it."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"SLURM is not installed here ({', '.join(missing)} missing): as root, apt-get install slurmctld "
            "slurmd slurm-client munge (.ci/run does), then run tests/test_slurm.py"
        )
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster of these tests runs its daemons as root")
    cluster = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            ["bash", str(SCRIPTS / "start_local_slurm.sh"), str(cluster)], capture_output=True, text=True, timeout=120
        )
        if started.returncode != 0:
            pytest.fail(f"the local SLURM did not start:\n{started.stdout}{started.stderr}")
        yield {**os.environ, "SLURM_CONF": str(cluster / "slurm.conf"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_local_slurm.sh"), str(cluster)], capture_output=True, timeout=120)
        pids = (cluster / "pids").read_text().split()[1::2] if (cluster / "pids").exists() else []
        for pid in map(int, pids):  # whatever the stop script did: none of our daemons survives the module
            if _ours(pid, cluster):
                os.kill(pid, signal.SIGKILL)
        assert not [pid for pid in map(int, pids) if _ours(pid, cluster)]


def _release(env: dict[str, str], job: str, *updates: str) -> None:
    """Start a requeued job now instead of after SLURM's hold of about 2 minutes.

    slurmd revokes a job's credential when the job ends; a relaunch within the same second is refused ("Job N
    already killed, do not launch batch job") and the job fails, so wait a few seconds first.
    """
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now", *updates], env=env, check=True)


def _submit(env: dict[str, str], *args: str) -> str:
    """``configs/slurm/submit.sh ARGS`` from the repository root; the job id."""
    proc = subprocess.run(
        ["bash", "configs/slurm/submit.sh", "--parsable", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _jobs(env: dict[str, str], job_id: str) -> list[dict[str, str]]:
    """``scontrol show job -o JOB``: one dict of fields per job (per task of an array)."""
    proc = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True, timeout=30
    )
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]


def _wait(
    env: dict[str, str], job_id: str, done: Callable[[list[dict[str, str]]], bool], timeout: float, what: str
) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs(env, job_id)
        if jobs and done(jobs):
            return jobs
        if any(j.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY") for j in jobs):
            break
        time.sleep(1)
    pytest.fail(f"job {job_id}: {what} did not happen within {timeout:.0f} s: {_jobs(env, job_id)}")


def _fit_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """The tiny recipe's overrides (as tests/cli_runs.py), on 1 CPU, outputs in ``run_dir``."""
    return [*tiny_args(data_dir, run_dir)[2:], "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", *extra]


def _train_steps(run_dir: Path, pattern: str) -> list[int]:
    import csv

    steps = []
    for path in sorted(run_dir.rglob(pattern)):
        with open(path, newline="") as handle:
            steps += [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    return steps


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _final_state_dict(run_dir: Path, steps: int) -> dict[str, torch.Tensor]:
    (final,) = run_dir.rglob("final.ckpt")
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == steps
    return checkpoint["state_dict"]


def test_train_sbatch_is_requeued_once_and_resumes_exactly(
    slurm: dict[str, str], tiny_data_dir: Path, tmp_path: Path
) -> None:
    # 80 epochs x 10 steps take about 80 s on a free core; SLURM signals 30-60 s after the start (its timer ticks
    # every 30 s), so the first run is always mid-training. Its twin runs straight on the other CPU.
    # Lightning 2.6 writes last.ckpt only with a new best: a checkpoint of the final weights, at the last validation.
    final = [
        *"--trainer.max_epochs 80 --trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint".split(),
        *"--trainer.callbacks.init_args.filename final --trainer.callbacks.init_args.every_n_epochs 80".split(),
    ]
    logs, preempted, straight = tmp_path / "logs", tmp_path / "preempted", tmp_path / "straight"
    options = [*ONE_CPU, "--time=2", "--signal=SIGUSR1@60", f"--output={logs}/%x-%j.out"]
    recipe = ["configs/slurm/train.sbatch", "configs/tiny/univl_dr_tiny.yaml"]
    job = _submit({**slurm, "RUN_DIR": str(preempted)}, *options, *recipe, *_fit_args(tiny_data_dir, preempted, *final))
    twin = _submit(
        {**slurm, "RUN_DIR": str(straight)},
        *ONE_CPU,
        "--time=30",
        f"--output={logs}/%x-%j.out",
        "configs/slurm/train.sbatch",
        "configs/tiny/univl_dr_tiny.yaml",
        *_fit_args(tiny_data_dir, straight, *final),
    )
    _wait(slurm, job, lambda j: j[0]["Restarts"] == "1" and j[0]["JobState"] == "PENDING", 240, "the requeue")
    # SLURM holds a requeued job for 2 minutes (BeginTime); release it now, with a time limit its rest fits in.
    _release(slurm, job, "TimeLimit=30")
    (done,) = _wait(slurm, job, lambda j: j[0]["JobState"] == "COMPLETED", 300, "the end of the requeued run")
    (twin_done,) = _wait(slurm, twin, lambda j: j[0]["JobState"] == "COMPLETED", 300, "the end of the straight run")
    assert (done["Restarts"], done["ExitCode"], twin_done["Restarts"]) == ("1", "0:0", "0")

    output = (logs / f"univl-dr-{job}.out").read_text()
    hpc = preempted / "hpc_ckpt_1.ckpt"
    assert sorted(p.name for p in preempted.glob("hpc_ckpt_*.ckpt")) == [hpc.name]
    saved_step = torch.load(hpc, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < saved_step < 800
    assert re.findall(r"train\.sbatch: job \d+, restart (\d+)", output) == ["0", "1"]
    assert re.findall(r"SIGUSR1 at step (\d+): saved (\S+); requeued", output) == [(str(saved_step), f"{hpc}")]
    assert re.findall(r"--ckpt_path auto: (.+)", output) == ["none, a fresh start", str(hpc)]
    assert f"Restored all states from the checkpoint at {hpc}" in output
    before, after = _train_steps(preempted, "metrics.until-*.csv"), _train_steps(preempted, "metrics.csv")
    assert before == list(range(len(before))) and len(before) in (saved_step - 1, saved_step)  # 1st run: to the save
    assert after == list(range(saved_step, 800))  # the requeued run: from the saved step on, none replayed or lost
    assert _train_steps(straight, "metrics.csv") == list(range(800))
    reference = _final_state_dict(straight, 800)
    resumed = _final_state_dict(preempted, 800)
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, msg=name)


def test_sweep_array_runs_two_trials_and_summarizes_them(
    slurm: dict[str, str], tiny_data_dir: Path, tmp_path: Path
) -> None:
    sweep_file, sweep_dir, logs = tmp_path / "tiny_sweep.yaml", tmp_path / "sweep", tmp_path / "logs"
    sweep_file.write_text("method: grid\nparameters:\n  model.lr: {values: [1.0e-3, 2.0e-4]}\n")
    base = _fit_args(
        tiny_data_dir,
        tmp_path / "never-used",
        *"--trainer.max_epochs 2 --trainer.check_val_every_n_epoch 1".split(),
        *"--trainer.callbacks.init_args.every_n_steps 5".split(),
    )
    options = [*ONE_CPU, "--array=0-1", "--time=30", f"--output={logs}/%x-%A_%a.out"]
    sweep = ["configs/slurm/sweep.sbatch", str(sweep_file), "--config", "configs/tiny/univl_dr_tiny.yaml"]
    job = _submit({**slurm, "SWEEP_DIR": str(sweep_dir)}, *options, *sweep, *base)
    tasks = _wait(
        slurm,
        job,
        lambda j: len(j) == 2 and all(t["JobState"] == "COMPLETED" for t in j),
        300,
        "the end of both trials",
    )
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    trials = sorted(sweep_dir.glob("trial-*"))
    assert [t.name for t in trials] == ["trial-000", "trial-001"]
    assert [t.joinpath("params").read_text() for t in trials] == ["--model.lr=0.001\n", "--model.lr=0.0002\n"]
    assert len({t.joinpath("run_id").read_text() for t in trials}) == 2
    for trial in trials:  # everything of a trial is in its directory, the trial's run directory (--run_dir)
        run = trial
        assert _manifest(run)["last_checkpoint"] == str(run / "checkpoints" / "last.ckpt")
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert sorted(p.parent.name for p in run.glob("eval/dev-step*/metrics.json")) == [
            "dev-step0000010",
            "dev-step0000020",
        ]
        assert sorted(p.name for p in run.glob("negatives/*.json")) == [
            "train-negatives-step0000005.json",
            "train-negatives-step0000010.json",
            "train-negatives-step0000015.json",
        ]
        assert (run / "logs" / trial.joinpath("run_id").read_text().strip() / "metrics.csv").is_file()
    assert not (tmp_path / "never-used").exists()
    summary = subprocess.run(
        [sys.executable, "-m", "retrieval.sweeps", "summarize", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert summary.returncode == 0, summary.stderr
    rows = [line for line in summary.stdout.splitlines() if line.startswith("| trial-")]
    assert sorted(row.split(" | ")[0] for row in rows) == ["| trial-000", "| trial-001"]
    assert all(re.match(r"\| trial-00\d \| \d+\.\d\d \| (10|20) \| --model\.lr=", row) for row in rows)
    assert (sweep_dir / "summary.json").is_file()


FAKE_AGENT = """#!/usr/bin/env bash
# Stands in for `wandb agent --count 1 SWEEP` (no W&B server here): runs configs/slurm/wandb_sweep.yaml's command once,
# with one trial's parameters and the run id the agent would give.
[[ $1 == agent && $2 == --count && $3 == 1 ]] || exit 3
echo "$4" >> "$FAKE_AGENT_LOG"
WANDB_RUN_ID=fake0001 exec bash configs/slurm/sweep.sbatch --wandb-trial --model.lr=0.0005
"""


def test_wandb_trial_requeued_resumes_the_same_trial_and_run(
    slurm: dict[str, str], tiny_data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wandb").write_text(FAKE_AGENT)
    (tmp_path / "bin" / "wandb").chmod(0o755)
    env = {
        **slurm,
        "PATH": f"{tmp_path / 'bin'}:{slurm['PATH']}",
        "FAKE_AGENT_LOG": str(tmp_path / "agent.log"),
        "WANDB_MODE": "offline",
        "SWEEP_DIR": str(tmp_path / "sweep"),
    }
    base = _fit_args(
        tiny_data_dir, tmp_path / "never-used", "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1"
    )
    job = _submit(
        env,
        "--array=0",
        *ONE_CPU,
        "--time=30",
        f"--output={tmp_path}/%x-%A_%a.out",
        *"configs/slurm/sweep.sbatch wandb:me/univl/sweep1 --config configs/tiny/univl_dr_tiny.yaml".split(),
        *base,
        "--config",
        "configs/loggers/wandb.yaml",
    )
    _wait(env, job, lambda j: j[0]["JobState"] == "COMPLETED", 240, "the end of the trial")
    subprocess.run(["scontrol", "requeue", f"{job}_0"], env=env, check=True)  # as SIGUSR1 would
    _wait(env, job, lambda j: j[0]["Restarts"] == "1" and j[0]["JobState"] == "PENDING", 60, "the requeue")
    _release(env, f"{job}_0")
    _wait(env, job, lambda j: j[0]["Restarts"] == "1" and j[0]["JobState"] == "COMPLETED", 240, "the second run")

    trial = tmp_path / "sweep" / "trial-000"
    assert (tmp_path / "agent.log").read_text() == "me/univl/sweep1\n"  # the agent ran once, at the first start
    assert (trial / "params").read_text() == "--model.lr=0.0005\n" and (trial / "run_id").read_text() == "fake0001\n"
    output = next(tmp_path.glob("univl-sweep-*_0.out")).read_text()
    last = trial / "checkpoints" / "last.ckpt"  # the trial is the run directory, whatever the logger
    assert re.findall(r"--ckpt_path auto: (.+)", output) == ["none, a fresh start", str(last)]
    runs = sorted(p.name for p in (trial / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith("-fake0001") for name in runs)  # one W&B run id for both starts
    assert not (tmp_path / "never-used").exists()
