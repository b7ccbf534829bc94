"""The end-to-end demo on mini-WebQA (``python train.py demo``), on CPU in a few minutes.

1. generate mini-WebQA (release layout) unless the output folder has it;
2. stage 1, CLIP-DPR: train a tiny CLIP with in-batch negatives; evaluate on test;
3. mine top-100 hard negatives for the training queries with the stage-1 model (paper stage 2);
4. stage 3, UniVL-DR: continue from stage 1 with modality-balanced hard negatives and in-loop
   ANCE refresh; evaluate on test;
5. print a results table and write ``results.md``, ``results.json`` and a plot of the dev curves
   (``results.png``) into the output folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from callbacks.ance_mining import ANCEMiningCallback
from retrieval.atomic import atomic_write

STAGE1_CONFIG = "configs/tiny/clip_dpr_tiny.yaml"
STAGE3_CONFIG = "configs/tiny/univl_dr_tiny.yaml"
COLUMNS = ("MRR@10", "NDCG@10", "Recall@100", "image_share@10", "text/MRR@10", "image/MRR@10")


def _fit_args(config: str, out: Path, data: Path, epochs: int, extra: list[str]) -> list[str]:
    return [
        "fit", "--config", config,
        "--data.data_dir", str(data),
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.max_epochs", str(epochs),
        *extra,
    ]


def _test(cli: Any, ckpt_path: str | None) -> dict[str, float]:
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    return {k.removeprefix("test/"): v for k, v in results.items()}


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the stages' test metrics."""
    head = "| stage | " + " | ".join(COLUMNS) + " | minutes |"
    rule = "|---|" + "---:|" * (len(COLUMNS) + 1)
    body = [f"| {r['stage']} | " + " | ".join(f"{r['metrics'][c]:.2f}" for c in COLUMNS) + f" | {r['minutes']:.1f} |" for r in rows]
    return "\n".join([head, rule, *body])


def dev_curves(stage_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) of every dev evaluation of a stage, in step order."""
    points = []
    for path in stage_dir.rglob("dev-step*/metrics.json"):
        points.append((int(path.parent.name.removeprefix("dev-step")), json.loads(path.read_text())))
    return sorted(points, key=lambda point: point[0])


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
            ax.plot(steps, [m[key] for _, m in points], style, color=colour, marker="o", markersize=3, label=f"{label}: {key}")
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
    """Run the whole pipeline into ``out``; return one row per stage. ``overrides`` are CLI arguments for both stages."""
    overrides = list(overrides or [])
    from train import cli_main

    data = out / "data"
    if not (data / "train.json").exists():
        from datamodules.mini_webqa import generate_mini_webqa

        generate_mini_webqa(data, size=size, seed=seed)
    rows: list[dict[str, Any]] = []

    start = time.perf_counter()
    stage1 = cli_main(_fit_args(STAGE1_CONFIG, out / "stage1_clip_dpr", data, stage1_epochs, ["--seed_everything", str(seed), *overrides]))
    best1 = stage1.trainer.checkpoint_callback.best_model_path
    rows.append({"stage": "1. CLIP-DPR (in-batch)", "metrics": _test(stage1, best1), "minutes": (time.perf_counter() - start) / 60})

    start = time.perf_counter()
    negatives = out / "negatives" / "stage1-train-negatives.json"
    miner = ANCEMiningCallback(on_validate=True, output_file=str(negatives))
    stage1.trainer.callbacks.append(miner)
    stage1.trainer.validate(stage1.model, datamodule=stage1.datamodule, ckpt_path=best1, verbose=False)
    mining = {"minutes": (time.perf_counter() - start) / 60, "timings": miner.timings[-1], "file": str(negatives)}

    start = time.perf_counter()
    stage3 = cli_main(
        _fit_args(
            STAGE3_CONFIG, out / "stage3_univl_dr", data, stage3_epochs,
            ["--seed_everything", str(seed), "--data.negatives_file", str(negatives),
             "--model.encoder.init_args.pretrained", best1,
             "--trainer.callbacks.init_args.every_n_steps", str(refresh_every), *overrides],
        )
    )
    refreshes = next(cb for cb in stage3.trainer.callbacks if isinstance(cb, ANCEMiningCallback)).mined_files
    rows.append({"stage": f"3. UniVL-DR (balanced hard negatives, {len(refreshes)} in-loop refreshes)",
                 "metrics": _test(stage3, stage3.trainer.checkpoint_callback.best_model_path),
                 "minutes": (time.perf_counter() - start) / 60})

    refresh_steps = [int(Path(f).stem[-7:]) for f in refreshes]
    plot = plot_dev_curves(out / "results.png", [("1. CLIP-DPR", out / "stage1_clip_dpr"), ("3. UniVL-DR", out / "stage3_univl_dr")], refresh_steps)
    table = results_table(rows)
    with atomic_write(out / "results.md") as handle:
        handle.write(f"# mini-WebQA demo ({size}, seed {seed}): test split, mixed corpus\n\n{table}\n\n"
                     f"Stage 2 (mining top-100 with the stage-1 model): {mining['minutes']:.1f} min -> {negatives}\n")
    with atomic_write(out / "results.json") as handle:
        json.dump({"rows": rows, "mining": mining, "refreshes": refreshes}, handle, indent=2)
    print(f"\n{table}\n\nwritten: {out / 'results.md'}, {out / 'results.json'}, {plot}")
    return rows


def run_demo_cli(argv: list[str]) -> int:
    """Parse the demo's options and run it."""
    parser = argparse.ArgumentParser(prog="train.py demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (data, checkpoints, logs, results)")
    parser.add_argument("--size", default="small", choices=["tiny", "small"], help="mini-WebQA preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-epochs", type=int, default=16)
    parser.add_argument("--stage3-epochs", type=int, default=12)
    parser.add_argument("--refresh-every", type=int, default=69, help="re-mine hard negatives every N steps in stage 3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_demo(Path(args.out), args.size, args.seed, args.stage1_epochs, args.stage3_epochs, args.refresh_every)
    return 0
