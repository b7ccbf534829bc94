"""The end-to-end demo on mini-WebQA (``python train.py demo``), on CPU in a few minutes.

Each step is the command a user would type, run through the same CLI (``commands.cli.cli_main``):

1. generate mini-WebQA (release layout) unless the output folder has it;
2. stage 1, CLIP-DPR: ``fit`` a tiny CLIP with in-batch negatives, then ``test`` its best checkpoint;
3. ``mine`` top-100 hard negatives for the training queries with the stage-1 checkpoint (paper stage 2);
4. stage 3, UniVL-DR: ``fit`` from stage 1 with modality-balanced hard negatives and in-loop ANCE refresh, ``test``;
5. print a results table and write ``results.md``, ``results.json`` and a plot of the dev curves
   (``results.png``) into the output folder.

Paths between the steps come from each run's ``run.json`` (``callbacks.RunManifest``), as a user's would.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from callbacks.evaluation_writer import EvaluationWriter
from callbacks.run_directory import MANIFEST
from retrieval.atomic import atomic_write
from retrieval.errors import InputError

STAGE1_CONFIG = "configs/tiny/clip_dpr_tiny.yaml"
STAGE3_CONFIG = "configs/tiny/univl_dr_tiny.yaml"
COLUMNS = ("MRR@10", "NDCG@10", "Recall@100", "image_share@10", "text/MRR@10", "image/MRR@10")


def _common(config: str, data: Path, out: Path, seed: int, overrides: list[str]) -> list[str]:
    return [
        "--config",
        config,
        "--data.data_dir",
        str(data),
        "--trainer.default_root_dir",
        str(out),
        "--seed_everything",
        str(seed),
        *overrides,
    ]


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MANIFEST).read_text())


def stage_checkpoint(manifest: dict[str, Any], run_dir: Path) -> str:
    """The checkpoint the next step starts from: the run's best, else its last (a stage shorter than its
    validation interval has no best)."""
    checkpoint = manifest.get("best_checkpoint") or manifest.get("last_checkpoint")
    if not checkpoint:
        raise InputError(f"run {run_dir} saved no checkpoint; give the stage more epochs")
    return checkpoint


def _test_metrics(cli: Any) -> dict[str, float]:
    """The test metrics the ``test`` command just wrote (its evaluation in the run's manifest)."""
    written = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationWriter)).written[-1]
    return dict(written.metrics)


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the stages' test metrics."""
    head = "| stage | " + " | ".join(COLUMNS) + " | minutes |"
    rule = "|---|" + "---:|" * (len(COLUMNS) + 1)
    body = [
        f"| {r['stage']} | " + " | ".join(f"{r['metrics'][c]:.2f}" for c in COLUMNS) + f" | {r['minutes']:.1f} |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


def dev_curves(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) of every dev evaluation of a run during its fit, in step order (from its ``run.json``)."""
    evaluations = _manifest(run_dir).get("evaluations", [])
    return sorted((e["step"], e["metrics"]) for e in evaluations if e["split"] == "dev")


def plot_dev_curves(path: Path, stages: list[tuple[str, Path]], refresh_steps: list[int]) -> Path:
    """Dev MRR@10 (all / text / image queries) over training steps, stages end to end, refreshes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for (label, stage_dir), style in zip(stages, ("--", "-")):
        points = dev_curves(stage_dir)
        steps = [offset + step for step, _ in points]
        for key, colour in (("MRR@10", "black"), ("text/MRR@10", "tab:blue"), ("image/MRR@10", "tab:orange")):
            ax.plot(
                steps,
                [m[key] for _, m in points],
                style,
                color=colour,
                marker="o",
                markersize=3,
                label=f"{label}: {key}",
            )
        if label.startswith("3"):
            ax.axvline(offset, color="grey", linestyle=":", linewidth=1.5)  # stage 2: mining with the stage-1 model
            for step in refresh_steps:
                ax.axvline(offset + step, color="grey", alpha=0.3, linewidth=1)
        offset = steps[-1] if steps else offset
    ax.set_xlabel("training step (stage 3 continues from stage 1; dotted: mining, grey: ANCE refreshes)")
    ax.set_ylabel("dev MRR@10 (%)")
    ax.set_title("mini-WebQA dev MRR@10: all queries vs mixed corpus, text and image views")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path


def run_demo(
    out: Path,
    size: str = "small",
    seed: int = 0,
    stage1_epochs: int = 16,
    stage3_epochs: int = 12,
    refresh_every: int = 69,
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the whole pipeline into ``out``; return one row per stage (``overrides``: CLI arguments for both stages)."""
    from commands.cli import cli_main

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(overrides or [])
    data = out / "data"
    if not (data / "train.json").exists():
        from datamodules.mini_webqa import generate_mini_webqa

        generate_mini_webqa(data, size=size, seed=seed)
    rows: list[dict[str, Any]] = []

    start = time.perf_counter()
    stage1 = cli_main(
        [
            "fit",
            *_common(STAGE1_CONFIG, data, out / "stage1_clip_dpr", seed, overrides),
            "--trainer.max_epochs",
            str(stage1_epochs),
        ]
    )
    run1 = stage1.run_dir
    best1 = stage_checkpoint(_manifest(run1), run1)
    tested1 = cli_main(
        ["test", *_common(STAGE1_CONFIG, data, out / "stage1_clip_dpr", seed, overrides), "--ckpt_path", best1]
    )
    rows.append(
        {
            "stage": "1. CLIP-DPR (in-batch)",
            "metrics": _test_metrics(tested1),
            "minutes": (time.perf_counter() - start) / 60,
        }
    )

    start = time.perf_counter()
    negatives = out / "negatives" / "stage1-train-negatives.json"
    cli_main(
        [
            "mine",
            *_common(STAGE1_CONFIG, data, out / "stage1_clip_dpr", seed, overrides),
            "--ckpt_path",
            best1,
            "--out",
            str(negatives),
        ]
    )
    mined = [m for m in _manifest(run1)["mined"] if m["path"] == str(negatives.resolve())]
    mining = {"minutes": (time.perf_counter() - start) / 60, "file": str(negatives), "step": mined[-1]["step"]}

    start = time.perf_counter()
    stage3_args = _common(STAGE3_CONFIG, data, out / "stage3_univl_dr", seed, overrides)
    stage3 = cli_main(
        [
            "fit",
            *stage3_args,
            "--trainer.max_epochs",
            str(stage3_epochs),
            "--data.negatives_file",
            str(negatives),
            "--model.encoder.init_args.pretrained",
            best1,
            "--trainer.callbacks.init_args.every_n_steps",
            str(refresh_every),
        ]
    )
    run3 = stage3.run_dir
    manifest3 = _manifest(run3)
    refreshes = manifest3.get("mined", [])
    tested3 = cli_main(["test", *stage3_args, "--ckpt_path", stage_checkpoint(manifest3, run3)])
    rows.append(
        {
            "stage": f"3. UniVL-DR (balanced hard negatives, {len(refreshes)} in-loop refreshes)",
            "metrics": _test_metrics(tested3),
            "minutes": (time.perf_counter() - start) / 60,
        }
    )

    refresh_steps = [m["step"] for m in refreshes]
    plot = plot_dev_curves(out / "results.png", [("1. CLIP-DPR", run1), ("3. UniVL-DR", run3)], refresh_steps)
    table = results_table(rows)
    with atomic_write(out / "results.md") as handle:
        handle.write(
            f"# mini-WebQA demo ({size}, seed {seed}): test split, mixed corpus\n\n{table}\n\n"
            f"Stage 2 (mining top-100 with the stage-1 model): {mining['minutes']:.1f} min -> {negatives}\n"
            f"Runs: stage 1 {run1}, stage 3 {run3} (each with its run.json)\n"
        )
    with atomic_write(out / "results.json") as handle:
        json.dump(
            {"rows": rows, "mining": mining, "refreshes": refreshes, "runs": [str(run1), str(run3)]}, handle, indent=2
        )
    print(f"\n{table}\n\nwritten: {out / 'results.md'}, {out / 'results.json'}, {plot}")
    return rows
