"""TrainCollator: the batch's columns are the sampler's draws, each doc once, and they reach the loss intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.batching import TrainCollator
from datamodules.samplers import TrainSample
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.loss import ContrastiveRetrievalLoss

BATCH_SIZE = 8


@pytest.fixture(scope="module", params=[1, 2], ids=["k=1", "k=2"])
def balanced_dm(request: pytest.FixtureRequest, tiny_data_dir: Path, tiny_encoder: CLIPEncoder) -> WebQADataModule:
    """The tiny data with WebQA's distractors drawn k image + k text per query."""
    dm = WebQADataModule(
        str(tiny_data_dir),
        negatives_file="webqa",
        negative_strategy="balanced",
        negatives_k=request.param,
        batch_size=BATCH_SIZE,
        num_workers=0,
    )
    dm.setup("fit")
    dm.set_processor(tiny_encoder.processor)
    return dm


def _collator(dm: WebQADataModule) -> TrainCollator:
    """The collator the training loader uses."""
    collate = dm.train_dataloader().collate_fn
    assert isinstance(collate, TrainCollator)
    return collate


def _release_positives(dm: WebQADataModule) -> list[set[int]]:
    """Per training query, the corpus indices of its positives read from train.json (not from the datamodule)."""
    lines = (dm.data_dir / "train.json").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["qid"] for r in records] == [q.qid for q in dm.train_queries]
    return [{dm.corpus.index[d] for d in r["img_posFacts"] + r["txt_posFacts"]} for r in records]


def _check_batch(batch: dict[str, Any], samples: list[TrainSample], dm: WebQADataModule) -> None:
    """Every column of ``batch`` holds the doc the sampler drew for it; each doc appears once."""
    ids = batch.docs.index.tolist()
    is_image = batch.docs.is_image
    assert len(ids) == len(set(ids))
    assert set(ids) == {d for s in samples for d in (s.positive, *s.negatives)}
    assert is_image.tolist() == [bool(dm.corpus.is_image[d]) for d in ids]
    n_text, n_image = int((~is_image).sum()), int(is_image.sum())
    assert batch.docs.image_pixels.shape[0] == n_image
    assert (batch.docs.text_tokens is None) == (n_text == 0)
    if n_text:
        assert len(batch.docs.text_tokens) == n_text
    assert batch.queries.index.tolist() == [s.query for s in samples]
    positives = _release_positives(dm)
    width = max(len(positives[s.query]) for s in samples)
    assert batch.positive_index.shape == (len(samples), width)
    for row, s in enumerate(samples):
        assert ids[batch.positive[row]] == s.positive
        hard = batch.hard_negatives[row]
        assert [ids[c] for c in hard if c >= 0] == list(s.negatives)
        assert (hard[len(s.negatives) :] == -1).all()
        listed = batch.positive_index[row].tolist()
        assert set(listed[: len(positives[s.query])]) == positives[s.query]
        assert listed[len(positives[s.query]) :] == [-1] * (width - len(positives[s.query]))


def test_loader_batch_holds_k_image_and_k_text_negatives_per_query(balanced_dm: WebQADataModule) -> None:
    k = balanced_dm.strategy.k
    batch = next(iter(balanced_dm.train_dataloader()))
    samples = list(balanced_dm.train_sampler())[:BATCH_SIZE]  # the loader's first batch: same seed, epoch 0
    _check_batch(batch, samples, balanced_dm)
    is_image = batch.docs.is_image
    assert batch.hard_negatives.shape == (BATCH_SIZE, 2 * k)
    for row in batch.hard_negatives:
        assert int(is_image[row].sum()) == k and int((~is_image[row]).sum()) == k


def test_collator_on_an_epoch_of_sampler_draws(balanced_dm: WebQADataModule) -> None:
    collate = _collator(balanced_dm)
    sampler = balanced_dm.train_sampler()
    sampler.set_epoch(3)
    samples = list(sampler)
    for start in range(0, len(samples), BATCH_SIZE):
        _check_batch(collate(samples[start : start + BATCH_SIZE]), samples[start : start + BATCH_SIZE], balanced_dm)


def test_docs_shared_by_samples_get_one_column(balanced_dm: WebQADataModule) -> None:
    """Hand-made samples: a positive shared by two queries, a negative that is another query's positive,
    and a negative shared by two queries each occupy one column that every reference points to."""
    corpus = balanced_dm.corpus
    images = np.flatnonzero(corpus.is_image)[:4].tolist()
    texts = np.flatnonzero(~corpus.is_image)[:4].tolist()
    samples = [
        TrainSample(query=0, positive=texts[0], negatives=(images[0], texts[1]), negatives_version=0),
        TrainSample(query=1, positive=texts[0], negatives=(images[1], texts[2]), negatives_version=0),  # same positive
        TrainSample(query=2, positive=images[2], negatives=(images[0], texts[0]), negatives_version=0),  # shared negs
        TrainSample(query=3, positive=images[3], negatives=(images[2], texts[3]), negatives_version=0),  # 2's positive
    ]
    batch = _collator(balanced_dm)(samples)
    _check_batch(batch, samples, balanced_dm)
    ids = batch.docs.index.tolist()
    column = {doc: ids.index(doc) for doc in ids}
    assert len(ids) == 8  # 12 references to 8 distinct docs
    assert batch.positive.tolist() == [column[texts[0]], column[texts[0]], column[images[2]], column[images[3]]]
    assert batch.hard_negatives.tolist() == [
        [column[images[0]], column[texts[1]]],
        [column[images[1]], column[texts[2]]],
        [column[images[0]], column[texts[0]]],
        [column[images[2]], column[texts[3]]],
    ]
    assert ids[:3] == [texts[0], images[2], images[3]]  # positives first, in sample order


def test_exactly_the_sampled_negatives_reach_the_loss(balanced_dm: WebQADataModule) -> None:
    k = balanced_dm.strategy.k
    batch = next(iter(balanced_dm.train_dataloader()))
    docs, positives = batch.docs, batch.positive_index
    for row, hard in enumerate(batch.hard_negatives):  # the sampler never draws a query's positive as negative
        assert not set(docs.index[hard].tolist()) & set(positives[row].tolist())
    g = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(BATCH_SIZE, 16, generator=g), dim=-1)
    vectors = F.normalize(torch.randn(len(docs), 16, generator=g), dim=-1)
    scale = torch.tensor(20.0)
    loss = ContrastiveRetrievalLoss(in_batch=False, hard_negatives=True)
    out = loss(queries, vectors, docs.index, docs.is_image, batch.positive, batch.hard_negatives, positives, scale)
    assert float(out.candidates_per_query) == 2 * k
    # cross-entropy of each query over its positive and its own 2k negatives, nothing else
    columns = torch.cat([batch.positive.unsqueeze(1), batch.hard_negatives], dim=1)
    logits = scale * (queries.unsqueeze(1) * vectors[columns]).sum(-1)
    expected = F.cross_entropy(logits, torch.zeros(BATCH_SIZE, dtype=torch.long))
    torch.testing.assert_close(out.loss, expected)
