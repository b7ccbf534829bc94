"""What ``train.py reproduce`` writes besides the runs: the Markdown tables, the plots, the W&B logging.

* ``mrr_by_row.png``: test MRR@10 of every finished row, all queries vs the mixed corpus and the Table 2 views
  (text queries vs text docs, image queries vs image docs);
* ``image_share.png``: ``image_share@10`` (share of images in the top 10) of the Table 3 rows against the share of
  image-positive test queries (the paper's modality-preference finding);
* ``embedding_space.png``: paper Figure 4 (``commands.embedding_space``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.webqa_release import read_queries
from retrieval.atomic import atomic_write

TABLE1 = ("MRR@10", "NDCG@10", "MRR@20", "NDCG@20", "Recall@20", "Recall@100")
TABLE3 = ("text/MRR@10", "image/MRR@10", "MRR@10", "image_share@10")


def image_query_share(data_dir: Path, split: str) -> float:
    """Percent of the split's queries whose positives are images (the share a perfect router sends to images)."""
    queries = read_queries(Path(data_dir) / f"{split}.json")
    return 100.0 * sum(bool(q.image_positives) for q in queries) / len(queries)


def _cell(result: dict[str, Any], key: str) -> str:
    value = result.get("metrics", {}).get(key)
    return f"{value:.2f}" if value is not None else "-"


def _status(result: dict[str, Any]) -> str:
    if result["status"] != "done":
        return f"{result['status']}: {result.get('error', '')}".replace("|", "/")
    return f"{result['minutes']:.1f} min" + (" (earlier run)" if result.get("resumed") else "")


def _table(results: Sequence[dict[str, Any]], table: str, columns: Sequence[str]) -> str:
    head = "| row | " + " | ".join(columns) + " | time / status |"
    rule = "|---|" + "---:|" * len(columns) + "---|"
    body = [
        f"| {r['label']} (`{r['name']}`) | " + " | ".join(_cell(r, c) for c in columns) + f" | {_status(r)} |"
        for r in results
        if table in r["tables"]
    ]
    return "\n".join([head, rule, *body])


def results_markdown(results: Sequence[dict[str, Any]], true_share: float) -> str:
    """Table 1 (all metrics) and Table 3 (the views and ``image_share@10``) of the rows, in percent."""
    return (
        "## Table 1: multi-modal retrieval (all test queries vs the mixed corpus)\n\n"
        + _table(results, "1", TABLE1)
        + "\n\n## Table 3: negative sampling (MRR@10: text queries vs text docs, image queries vs image docs, all vs"
        " all; image share of the top 10)\n\n"
        + _table(results, "3", TABLE3)
        + f"\n\nImage-positive test queries: {true_share:.2f} %; a model that routes every query to its modality puts "
        "about this share of images in the top 10."
    )


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_mrr(path: Path, results: Sequence[dict[str, Any]]) -> Path:
    """Grouped bars: MRR@10 of each finished row, all / text view / image view."""
    import numpy as np

    plt = _pyplot()
    done = [r for r in results if r["status"] == "done"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(done) + 2), 4.5))
    x = np.arange(len(done))
    for offset, (key, colour) in zip(
        (-0.27, 0.0, 0.27), (("MRR@10", "black"), ("text/MRR@10", "tab:blue"), ("image/MRR@10", "tab:orange"))
    ):
        values = [r["metrics"].get(key, np.nan) for r in done]
        ax.bar(x + offset, values, width=0.27, color=colour, label=key)
    ax.set_xticks(x, [r["name"] for r in done], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("test MRR@10 (%)")
    ax.set_title("MRR@10 per row: all queries vs mixed corpus, text and image views")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_image_share(path: Path, results: Sequence[dict[str, Any]], true_share: float) -> Path:
    """Bars: ``image_share@10`` of the finished Table 3 rows; a line at the share of image-positive queries."""
    plt = _pyplot()
    done = [r for r in results if r["status"] == "done" and "3" in r["tables"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(done) + 2), 4.5))
    ax.bar(range(len(done)), [r["metrics"]["image_share@10"] for r in done], color="tab:orange")
    ax.axhline(true_share, color="black", linestyle="--", label=f"image-positive queries: {true_share:.1f} %")
    ax.set_xticks(range(len(done)), [r["name"] for r in done], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("images in the top 10 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Modality preference per sampling strategy (paper Table 3)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def write_plots(out: Path, results: Sequence[dict[str, Any]], true_share: float) -> list[Path]:
    """The two result plots (each only when a row it shows has finished)."""
    figures = []
    if any(r["status"] == "done" for r in results):
        figures.append(plot_mrr(out / "mrr_by_row.png", results))
    if any(r["status"] == "done" and "3" in r["tables"] for r in results):
        figures.append(plot_image_share(out / "image_share.png", results, true_share))
    return figures


#: The models of the embedding picture (paper Figure 4), as (title, row whose checkpoint it is; None: initial).
EMBEDDING_PANELS = (
    ("initial weights", None),
    ("CLIP-DPR", "clip_dpr"),
    ("only texts", "hn_only_text"),
    ("only images", "hn_only_image"),
    ("UniVL-DR", "univl_dr"),
)


def embedding_figure(out: Path, settings: Any, done: dict[str, dict[str, Any]], sample: int) -> list[Path]:
    """Paper Figure 4 with the initial weights and every finished row of :data:`EMBEDDING_PANELS` (none when no
    trained row finished or ``sample`` is 0)."""
    from commands.embedding_space import embedding_space_figure

    panels = [
        (title, done[name]["checkpoint"] if name else None)
        for title, name in EMBEDDING_PANELS
        if name is None or name in done
    ]
    if sample <= 0 or len(panels) < 2:
        return []
    return [embedding_space_figure(out / "embedding_space.png", settings, panels, sample)]


def log_to_wandb(out: Path, results: Sequence[dict[str, Any]], figures: Sequence[Path]) -> None:
    """The results table (``wandb.Table``) and the figures (``wandb.Image``) in one W&B run (offline without a key)."""
    from lightning_modules.loggers import WandbAutoLogger

    logger = WandbAutoLogger(project="univl-retrieval", name=f"reproduce-{out.name}", save_dir=str(out))
    columns = ["row", "label", "status", *TABLE1, *TABLE3[:2], TABLE3[3]]
    data = [[r["name"], r["label"], r["status"], *(r.get("metrics", {}).get(c) for c in columns[3:])] for r in results]
    logger.log_table("reproduce/results", columns=columns, data=data)
    for figure in figures:
        logger.log_image(f"reproduce/{Path(figure).stem}", images=[str(figure)])
    logger.experiment.finish()
