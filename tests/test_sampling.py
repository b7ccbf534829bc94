"""Hard-negative sampling: every Table 3 strategy's guarantees, determinism, variation, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.negatives import STRATEGIES, NegativePool, NegativeStrategy, sample_negatives
from datamodules.samplers import ContiguousShardSampler, NegativeRegistry, TrainSampleSampler
from datamodules.webqa_datamodule import WebQADataModule
from retrieval.errors import InputError


def _pool(n_image: list[int], n_text: list[int]) -> NegativePool:
    """Query i gets image candidates 1000*i+[0..) and text candidates 1000*i+500+[0..)."""
    image = [np.arange(n) + 1000 * i for i, n in enumerate(n_image)]
    text = [np.arange(n) + 1000 * i + 500 for i, n in enumerate(n_text)]
    mixed = [np.concatenate([a, b]) for a, b in zip(image, text)]
    return NegativePool(image=image, text=text, mixed=mixed, source="test")


def _modalities(picked: list[int]) -> tuple[int, int]:
    n_text = sum(1 for p in picked if p % 1000 >= 500)
    return len(picked) - n_text, n_text


@pytest.mark.parametrize(
    "name,k,expected",
    [
        ("balanced", 1, (1, 1)),
        ("balanced", 3, (3, 3)),
        ("only_text", 2, (0, 4)),
        ("only_image", 2, (4, 0)),
        ("text2_image1", 1, (1, 2)),
        ("text1_image2", 1, (2, 1)),
        ("none", 1, (0, 0)),
    ],
)
def test_counts_per_modality(name: str, k: int, expected: tuple[int, int]) -> None:
    pool = _pool([20], [20])
    strategy = NegativeStrategy(name, k)
    for seed in range(20):
        picked = sample_negatives(pool, 0, strategy, np.random.default_rng(seed))
        assert _modalities(picked) == expected
        assert len(set(picked)) == len(picked)


def test_random_strategy_draws_from_mixed_list_ignoring_modality() -> None:
    pool = _pool([30], [30])
    strategy = NegativeStrategy("random", 2)
    seen = {_modalities(sample_negatives(pool, 0, strategy, np.random.default_rng(s))) for s in range(200)}
    assert all(a + b == 4 for a, b in seen)
    assert len(seen) >= 3  # modality split varies


@pytest.mark.parametrize("n_image,n_text,expected", [(0, 5, (0, 2)), (1, 5, (1, 1)), (5, 0, (2, 0)), (5, 1, (1, 1))])
def test_shortfall_is_filled_by_other_modality(n_image: int, n_text: int, expected: tuple[int, int]) -> None:
    pool = _pool([n_image], [n_text])
    picked = sample_negatives(pool, 0, NegativeStrategy("balanced", 1), np.random.default_rng(0))
    assert _modalities(picked) == expected
    big = _pool([0], [10])
    assert _modalities(sample_negatives(big, 0, NegativeStrategy("balanced", 3), np.random.default_rng(1))) == (0, 6)


def test_pool_too_short_for_k_is_a_clear_error() -> None:
    pool = _pool([1, 5], [1, 5])
    message = r"k=2 \(balanced\) needs 4 negatives per query but 1 of 2 queries .*'q0'.*lower data.negatives_k"
    with pytest.raises(InputError, match=message):
        pool.check_can_give(NegativeStrategy("balanced", 2), ["q0", "q1"])


def test_unknown_strategy() -> None:
    with pytest.raises(InputError, match="unknown negative strategy 'balance'; choose one of"):
        NegativeStrategy("balance", 1)
    assert set(STRATEGIES) >= {"none", "balanced", "only_text", "only_image", "text2_image1", "text1_image2", "random"}


def _sampler(
    dm: WebQADataModule, seed: int = 0, world: int = 1, rank: int = 0, composition: str = "random"
) -> TrainSampleSampler:
    is_image = np.asarray([bool(q.image_positives) for q in dm.train_queries])
    options = dict(batch_size=4, num_replicas=world, rank=rank, seed=seed, composition=composition)
    return TrainSampleSampler(dm.train_positives, is_image, dm.registry, dm.strategy, **options)


@pytest.fixture(scope="module")
def webqa_dm(tiny_data_dir: Path) -> WebQADataModule:
    dm = WebQADataModule(
        str(tiny_data_dir), negatives_file="webqa", negative_strategy="balanced", negatives_k=1, num_workers=0
    )
    dm.setup("fit")
    return dm


def test_no_positive_is_ever_a_negative(webqa_dm: WebQADataModule) -> None:
    for epoch in range(5):
        sampler = _sampler(webqa_dm)
        sampler.set_epoch(epoch)
        for s in sampler:
            positives = set(webqa_dm.train_positives[s.query].tolist())
            assert s.positive in positives
            assert not positives & set(s.negatives)
            assert len(s.negatives) == 2


def test_deterministic_under_seed_and_varies_across_epochs(webqa_dm: WebQADataModule) -> None:
    def epoch(seed: int, e: int) -> list:
        sampler = _sampler(webqa_dm, seed=seed)
        sampler.set_epoch(e)
        return list(sampler)

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)
    by_query = lambda samples: {s.query: s.negatives for s in samples}  # noqa: E731
    a, b = by_query(epoch(0, 0)), by_query(epoch(0, 1))
    assert any(a[q] != b[q] for q in a.keys() & b.keys())  # fresh draws, not only a new order


def test_ranks_partition_the_epoch_and_draws_do_not_depend_on_world_size(webqa_dm: WebQADataModule) -> None:
    single = {s.query: s for s in _sampler(webqa_dm, world=1)}
    shards = [list(_sampler(webqa_dm, world=2, rank=r)) for r in range(2)]
    queries = [s.query for shard in shards for s in shard]
    assert len(queries) == len(set(queries))
    for shard in shards:
        for s in shard:
            assert s == single.get(s.query, s)


def test_balanced_composition_alternates_modalities(webqa_dm: WebQADataModule) -> None:
    sampler = _sampler(webqa_dm, composition="balanced")
    is_image = [bool(webqa_dm.train_queries[s.query].image_positives) for s in sampler]
    pairs = list(zip(is_image[0::2], is_image[1::2]))
    n_balanced = min(sum(is_image), len(is_image) - sum(is_image)) // 2
    assert all(a != b for a, b in pairs[:n_balanced])


def test_registry_switch_applies_to_batches_drawn_afterwards(webqa_dm: WebQADataModule) -> None:
    registry = NegativeRegistry(webqa_dm.registry.pool, "a")
    is_image = np.asarray([bool(q.image_positives) for q in webqa_dm.train_queries])
    sampler = TrainSampleSampler(webqa_dm.train_positives, is_image, registry, webqa_dm.strategy, batch_size=4)
    it = iter(sampler)
    first = [next(it) for _ in range(4)]
    registry.activate(NegativePool.empty(len(webqa_dm.train_queries)), "b")
    second = [next(it) for _ in range(4)]
    assert {s.negatives_version for s in first} == {0} and all(len(s.negatives) == 2 for s in first)
    assert {s.negatives_version for s in second} == {1} and all(s.negatives == () for s in second)


def _mined_file(dm: WebQADataModule, path: Path, bad_id: str | None = None, bad_qid: str | None = None) -> Path:
    with open(path, "w") as f:
        for q in dm.train_queries:
            negs = [d for d in dm.corpus.doc_ids[:30] if d not in q.positives]
            if bad_id:
                negs.append(bad_id)
            f.write(
                json.dumps(
                    {
                        "qid": q.qid,
                        "img_negFacts": [d for d in negs if d.isdigit()],
                        "txt_negFacts": [d for d in negs if not d.isdigit()],
                        "all_negFacts": negs,
                    }
                )
                + "\n"
            )
        if bad_qid:
            f.write(json.dumps({"qid": bad_qid, "all_negFacts": []}) + "\n")
    return path


def test_negatives_file_in_mined_schema(webqa_dm: WebQADataModule, tmp_path: Path) -> None:
    path = _mined_file(webqa_dm, tmp_path / "neg.json")
    pool = NegativePool.from_file(path, webqa_dm.train_queries, webqa_dm.corpus)
    for i, q in enumerate(webqa_dm.train_queries):
        ids = {webqa_dm.corpus.doc_ids[d] for d in pool.mixed[i]}
        assert not ids & set(q.positives)
        assert all(webqa_dm.corpus.is_image[pool.image[i]]) and not any(webqa_dm.corpus.is_image[pool.text[i]])


def test_negatives_file_with_unknown_ids(webqa_dm: WebQADataModule, tmp_path: Path) -> None:
    queries, corpus = webqa_dm.train_queries, webqa_dm.corpus
    message = r"neg.json:1 img_negFacts: 1 doc id\(s\) not in the corpus, first: '99999999999'"
    with pytest.raises(InputError, match=message):
        NegativePool.from_file(_mined_file(webqa_dm, tmp_path / "neg.json", bad_id="99999999999"), queries, corpus)
    with pytest.raises(InputError, match=r"1 qid\(s\) not in the training queries, first: 'ghost'"):
        NegativePool.from_file(_mined_file(webqa_dm, tmp_path / "neg2.json", bad_qid="ghost"), queries, corpus)


@pytest.mark.parametrize("composition", ["random", "balanced"])
@pytest.mark.parametrize("world,batch_size", [(2, 4), (3, 4), (2, 3), (3, 5)])
def test_every_rank_gets_the_same_number_of_batches(
    webqa_dm: WebQADataModule, composition: str, world: int, batch_size: int
) -> None:
    """DDP steps in lockstep: a rank with one batch more would hang the others' gradient all-reduce."""
    is_image = np.asarray([bool(q.image_positives) for q in webqa_dm.train_queries])
    n_queries = len(webqa_dm.train_queries)
    for epoch in range(3):
        shards = []
        for rank in range(world):
            sampler = TrainSampleSampler(
                webqa_dm.train_positives,
                is_image,
                webqa_dm.registry,
                webqa_dm.strategy,
                batch_size=batch_size,
                num_replicas=world,
                rank=rank,
                composition=composition,
            )
            sampler.set_epoch(epoch)
            shard = [s.query for s in sampler]
            assert len(shard) == len(sampler) == (n_queries // (batch_size * world)) * batch_size, (rank, epoch)
            shards.append(shard)
        queries = [q for shard in shards for q in shard]
        assert len(queries) == len(set(queries))  # the ranks' queries of one epoch are disjoint
        assert n_queries - len(queries) < batch_size * world  # only the incomplete global batch is dropped


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("length", [0, 1, 5, 10, 98])
def test_contiguous_shards_cover_every_index_once(length: int, world: int) -> None:
    shards = [list(ContiguousShardSampler(length, num_replicas=world, rank=rank)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(length))  # in rank order, no repeat, no padding
    assert [len(ContiguousShardSampler(length, world, rank)) for rank in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
