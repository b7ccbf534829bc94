"""Paper Figure 4: where queries, text docs and image docs lie in a model's embedding space.

A fixed random sample of test queries, text docs and image docs (the same items for every model) is encoded by
each model; each panel is a 2-D principal component projection (PCA by SVD of the centred vectors, fitted on that
panel's points alone), coloured by kind. The models are the stage-1 recipe's initial weights and the checkpoints of
finished rows, each built by the same CLI as ``test`` (``--model.encoder.init_args.pretrained CKPT``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.batching import DocumentLoader, QueryCollator
from retrieval.atomic import atomic_write

KINDS = ("query", "text doc", "image doc")
COLOURS = {"query": "tab:green", "text doc": "tab:blue", "image doc": "tab:orange"}


def sample_items(n_queries: int, is_image: np.ndarray, n: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Up to ``n`` query positions, text-doc and image-doc corpus indices, drawn without replacement."""
    rng = np.random.default_rng(seed)

    def draw(pool: np.ndarray) -> list[int]:
        return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())

    return draw(np.arange(n_queries)), draw(np.flatnonzero(~is_image)), draw(np.flatnonzero(is_image))


@torch.no_grad()
def embed_sample(model: Any, datamodule: Any, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """The vectors of the sample (queries, then text docs, then image docs) and their kinds."""
    datamodule.setup("test")
    split, corpus = datamodule.eval_split("test"), datamodule.corpus
    queries, texts, images = sample_items(len(split.queries), corpus.is_image, n, seed)
    model.eval()
    query_batch = QueryCollator(datamodule.processor, split.texts, split.ids)(queries)
    docs = DocumentLoader(corpus, datamodule.images, datamodule.processor).load(texts + images)
    vectors = torch.cat([model.embed_batch(query_batch)[1], model.embed_batch(docs)[1]]).float().numpy()
    kinds = ["query"] * len(queries) + ["text doc"] * len(texts) + ["image doc"] * len(images)
    return vectors, kinds


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors`` (rows), by SVD of the centred matrix."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def build_model(settings: Any, checkpoint: str | None) -> tuple[Any, Any]:
    """The model and datamodule the stage-1 recipe builds (weights from ``checkpoint`` when given), not run."""
    from commands.cli import cli_main

    with tempfile.TemporaryDirectory() as scratch:
        args = settings.args(settings.stage1_config, None, Path(scratch))
        if checkpoint:
            args += ["--model.encoder.init_args.pretrained", checkpoint]
        cli = cli_main(args, run=False)  # no subcommand: the classes are built, nothing runs
    return cli.model, cli.datamodule


def embedding_space_figure(
    path: Path, settings: Any, panels: Sequence[tuple[str, str | None]], sample: int = 30
) -> Path:
    """One PCA panel per (title, checkpoint or None) model, the same sampled items in each; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), squeeze=False)
    for ax, (title, checkpoint) in zip(axes[0], panels):
        model, datamodule = build_model(settings, checkpoint)
        vectors, kinds = embed_sample(model, datamodule, sample, settings.seed)
        points = pca_2d(vectors)
        for kind in KINDS:
            rows = [i for i, k in enumerate(kinds) if k == kind]
            ax.scatter(points[rows, 0], points[rows, 1], s=12, color=COLOURS[kind], label=kind, alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Embedding space (PCA, 2 components per panel): {sample} test queries, text docs, image docs")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path
