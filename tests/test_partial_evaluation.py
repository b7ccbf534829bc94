"""An evaluation that did not encode every query and doc says so, and scores only what it encoded.

``limit_val_batches < 1`` (or ``limit_test_batches``) truncates both evaluation loaders. The metrics must
then be over the queries that were encoded, searched against the docs that were indexed, with both counts
logged next to them, never zero vectors standing in for the queries that were skipped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from callbacks import EvaluationWriter
from datamodules.webqa_release import Corpus
from lightning_modules.encoders import CLIPEncoder
from lightning_modules.retriever import UniversalRetriever
from retrieval.trec import read_trec_run

from builders import cpu_trainer, webqa_datamodule


def _test(data_dir: Path, encoder: CLIPEncoder, root: Path, **trainer_options) -> dict[str, float]:
    module = UniversalRetriever(copy.deepcopy(encoder))
    dm = webqa_datamodule(data_dir, encoder, negatives_file=None, eval_batch_size=4)
    trainer = cpu_trainer(root, callbacks=[EvaluationWriter()], **trainer_options)
    return {k: v for d in trainer.test(module, datamodule=dm, verbose=False) for k, v in d.items()}


def test_full_evaluation_counts_every_query_and_doc(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    results = _test(tiny_data_dir, tiny_encoder, tmp_path)
    assert results["test/queries_evaluated"] == 10 and results["test/docs_indexed"] == 98


def test_partial_evaluation_scores_only_what_was_encoded(
    tiny_data_dir: Path, tiny_encoder: CLIPEncoder, tmp_path: Path
) -> None:
    # 10 test queries in batches of 4 -> 3 batches, half of them: 1 batch; 98 docs -> 25 batches, half: 12.
    with pytest.warns(UserWarning, match=r"evaluated 4 of 10 test queries against 48 of 98 docs"):
        results = _test(tiny_data_dir, tiny_encoder, tmp_path, limit_test_batches=0.5)
    assert results["test/queries_evaluated"] == 4 and results["test/docs_indexed"] == 48
    out = next((tmp_path / "eval").glob("test-step*"))
    run = read_trec_run(out / "run.trec")
    assert len(run) == 4  # no ranking for the queries that were never encoded
    indexed = set(Corpus.from_release(tiny_data_dir).doc_ids[:48])  # one rank: the corpus loader's first 12 batches
    assert all(doc in indexed for ranking in run.values() for doc, _ in ranking)
