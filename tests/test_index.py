"""Dense search: FAISS paths agree with an exact torch reference, shards merge, files round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import index as index_module
from retrieval.errors import InputError
from retrieval.index import (
    DenseIndex,
    brute_force_search,
    exact_search,
    exact_search_backend,
    faiss_gpu_count,
    merge_topk,
    sharded_search,
)

DIM = 32


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1).numpy()


@pytest.fixture(scope="module")
def docs() -> np.ndarray:
    return unit_vectors(2000, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_vectors(150, seed=2)


def assert_same_topk(
    expected: tuple[np.ndarray, np.ndarray], actual: tuple[np.ndarray, np.ndarray], atol: float = 1e-5
) -> None:
    """Scores close everywhere; indices equal wherever the score is not tied with a neighbour."""
    (exp_scores, exp_idx), (act_scores, act_idx) = expected, actual
    assert act_scores.dtype == np.float32 and act_idx.dtype == np.int64
    assert act_scores.shape == exp_scores.shape == act_idx.shape
    np.testing.assert_allclose(act_scores, exp_scores, atol=atol)
    gaps = np.abs(np.diff(exp_scores, axis=1))
    untied = np.ones_like(exp_idx, dtype=bool)
    untied[:, 1:] &= gaps > atol
    untied[:, :-1] &= gaps > atol
    assert untied.mean() > 0.9
    np.testing.assert_array_equal(act_idx[untied], exp_idx[untied])


def exact_numpy(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ docs.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1).astype(np.float32), order


def test_brute_force_matches_numpy_with_doc_chunks(docs, queries):
    expected = exact_numpy(docs, queries, 50)
    assert_same_topk(expected, brute_force_search(docs, queries, 50))
    assert_same_topk(expected, brute_force_search(docs, queries, 50, chunk_size=7, doc_chunk_size=33))


def test_faiss_flat_equals_brute_force(docs, queries):
    index = DenseIndex(DIM)
    index.add(docs)
    assert index.ntotal == len(docs) and not index.on_gpu
    assert_same_topk(brute_force_search(docs, queries, 100), index.search(queries, 100))


def test_fp16_and_torch_inputs(docs, queries):
    half_docs, half_queries = torch.from_numpy(docs).half(), torch.from_numpy(queries).half()
    index = DenseIndex(DIM)
    index.add(half_docs)
    expected = brute_force_search(half_docs.float(), half_queries.float(), 20)
    assert_same_topk(expected, index.search(half_queries, 20))
    assert_same_topk(expected, brute_force_search(half_docs, half_queries, 20, doc_chunk_size=500))
    assert_same_topk(expected, index.search(half_queries.numpy(), 20))


def test_chunked_search_equals_single_call(docs, queries):
    index = DenseIndex(DIM)
    for start in range(0, len(docs), 300):
        index.add(docs[start : start + 300])
    whole = index.search(queries, 10, chunk_size=len(queries))
    chunked = index.search(queries, 10, chunk_size=16, progress=True)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])


def test_reserve_then_chunked_adds_and_block_settings_restored(docs, queries):
    import faiss

    reserved, plain = DenseIndex(DIM), DenseIndex(DIM)
    reserved.reserve(len(docs))
    for start in range(0, len(docs), 128):
        reserved.add(docs[start : start + 128])
    plain.add(docs)
    saved = faiss.cvar.distance_compute_blas_database_bs
    np.testing.assert_array_equal(reserved.search(queries, 10)[1], plain.search(queries, 10)[1])
    assert faiss.cvar.distance_compute_blas_database_bs == saved
    DenseIndex(DIM, factory="HNSW32").reserve(100)  # not a flat index: a no-op


def test_fewer_docs_than_k_pads():
    index = DenseIndex(DIM)
    scores, indices = index.search(unit_vectors(3), 4)
    assert (indices == -1).all() and np.isneginf(scores).all()
    index.add(unit_vectors(2, seed=5))
    scores, indices = index.search(unit_vectors(3), 4)
    assert (indices[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
    assert sorted(indices[0, :2]) == [0, 1]
    scores, indices = brute_force_search(unit_vectors(2, seed=5), unit_vectors(3), 4, doc_chunk_size=1)
    assert (indices[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()


def test_merge_topk_and_sharded_search_equal_single_search(docs, queries):
    index = DenseIndex(DIM)
    index.add(docs)
    expected = index.search(queries, 30)
    shards = [docs[:700], docs[700:710], docs[710:]]
    assert_same_topk(expected, sharded_search(shards, queries, 30))
    parts = [brute_force_search(shard, queries, 30) for shard in shards]
    assert_same_topk(expected, merge_topk(parts, [0, 700, 710], 30))
    torch_parts = [tuple(torch.from_numpy(a) for a in part) for part in parts]
    assert_same_topk(expected, merge_topk(torch_parts, [0, 700, 710], 30))


def test_merge_topk_pads_and_validates():
    parts = [
        (np.array([[0.9]], np.float32), np.array([[0]])),
        (np.array([[0.5, 0.0]], np.float32), np.array([[0, -1]])),
    ]
    scores, indices = merge_topk(parts, [0, 10], 3)
    np.testing.assert_array_equal(indices, [[0, 10, -1]])
    assert scores[0, 2] == -np.inf
    with pytest.raises(InputError, match="offsets"):
        merge_topk(parts, [0], 3)
    with pytest.raises(InputError, match="shard 1"):
        merge_topk([parts[0], (np.zeros((2, 2)), np.zeros((2, 2)))], [0, 1], 3)


def clustered_vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 32 fixed centres: the structure real embeddings have and ANN indexes exploit."""
    centres = unit_vectors(32, seed=99)
    generator = np.random.default_rng(seed)
    noisy = centres[generator.integers(0, 32, n)] + 0.15 * generator.standard_normal((n, DIM))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(factory: str, nprobe: int | None) -> float:
    docs, queries = clustered_vectors(3000, seed=1), clustered_vectors(200, seed=2)
    index = DenseIndex(DIM, factory=factory, nprobe=nprobe)
    index.add(docs)
    _, found = index.search(queries, 10)
    _, exact = brute_force_search(docs, queries, 10)
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))


@pytest.mark.parametrize(
    "factory, nprobe, minimum", [("IVF16,Flat", 4, 0.9), ("HNSW32", None, 0.9), ("IVF16,PQ8x4", 4, 0.3)]
)
def test_approximate_factories_have_high_recall(factory, nprobe, minimum):
    assert recall_at_10(factory, nprobe) > minimum


def test_nprobe_visiting_all_lists_is_exact():
    assert recall_at_10("IVF16,Flat", 1) < recall_at_10("IVF16,Flat", 16) == 1.0


def test_bad_arguments():
    with pytest.raises(InputError, match="'NotAnIndex,Flat'"):
        DenseIndex(DIM, factory="NotAnIndex,Flat")
    with pytest.raises(InputError, match="nprobe"):
        DenseIndex(DIM, factory="Flat", nprobe=4)
    with pytest.raises(InputError, match="dim"):
        DenseIndex(0)
    with pytest.raises(InputError, match="k="):
        DenseIndex(DIM).search(unit_vectors(2), 0)
    with pytest.raises(InputError, match="2-D"):
        DenseIndex(DIM).add(unit_vectors(2)[0])
    with pytest.raises(InputError, match="dtype"):
        DenseIndex(DIM).add(np.zeros((2, DIM), dtype=np.int64))
    with pytest.raises(InputError, match="more training vectors"):
        DenseIndex(DIM, factory="IVF64,Flat").add(unit_vectors(10))


def test_dimension_mismatch_on_add_and_search():
    index = DenseIndex(DIM)
    with pytest.raises(InputError, match=r"dimension 16 .* dimension 32"):
        index.add(unit_vectors(5, dim=16))
    with pytest.raises(InputError, match=r"dimension 16 .* dimension 32"):
        index.search(unit_vectors(5, dim=16), 3)
    with pytest.raises(InputError, match=r"dimension 16 .* dimension 32"):
        brute_force_search(unit_vectors(5), unit_vectors(5, dim=16), 3)


def test_save_load_round_trip(tmp_path, docs, queries):
    for factory, nprobe in (("Flat", None), ("IVF16,Flat", 4)):
        index = DenseIndex(DIM, factory=factory, nprobe=nprobe)
        index.add(docs)
        path = tmp_path / "sub" / f"{factory}.faiss"
        index.save(path)
        loaded = DenseIndex.load(path, expected_dim=DIM)
        assert loaded.ntotal == len(docs) and loaded.dim == DIM
        before, after = index.search(queries, 10), loaded.search(queries, 10)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_array_equal(before[0], after[0])
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["Flat.faiss", "IVF16,Flat.faiss"]


def test_load_errors(tmp_path, docs):
    index = DenseIndex(DIM)
    index.add(docs[:10])
    index.save(tmp_path / "index.faiss")
    with pytest.raises(InputError, match=r"dimension 32 .* expected_dim is 64"):
        DenseIndex.load(tmp_path / "index.faiss", expected_dim=64)
    with pytest.raises(InputError, match="does not exist"):
        DenseIndex.load(tmp_path / "missing.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="not a FAISS index"):
        DenseIndex.load(tmp_path / "junk.faiss")


@pytest.mark.skipif(faiss_gpu_count() > 0, reason="this FAISS build has GPU support")
def test_gpu_device_without_a_faiss_gpu_build_falls_back_to_the_cpu(docs, queries, caplog):
    index = DenseIndex(DIM, device="cuda:1")
    assert not index.on_gpu
    assert "faiss-cpu build" in caplog.text
    index.add(docs)
    assert_same_topk(brute_force_search(docs, queries, 10), index.search(queries, 10))


class FakeGpuFaiss:
    """Stands in for FAISS's GPU functions: records the device each index is moved to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import faiss

        self.devices: list[int] = []
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: 8, raising=False)
        monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
        monkeypatch.setattr(faiss, "index_cpu_to_gpu", self.index_cpu_to_gpu, raising=False)
        monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", self.all_gpus, raising=False)

    def index_cpu_to_gpu(self, resources: object, device: int, index: object) -> object:
        self.devices.append(device)
        return index

    @staticmethod
    def all_gpus(index: object) -> object:
        raise AssertionError("an index spread over every GPU of the node: 8 ranks would build 64 shards")


def test_each_rank_puts_its_faiss_index_on_its_own_gpu(monkeypatch: pytest.MonkeyPatch):
    fake = FakeGpuFaiss(monkeypatch)
    for device in ("cuda:3", torch.device("cuda", 5), 6):
        assert DenseIndex(DIM, factory="IVF16,Flat", device=device).on_gpu
    assert not DenseIndex(DIM, device="cpu").on_gpu and not DenseIndex(DIM).on_gpu
    assert fake.devices == [3, 5, 6]


def test_exact_search_uses_torch_on_a_gpu_and_faiss_on_the_cpu(monkeypatch: pytest.MonkeyPatch):
    assert exact_search_backend("cuda:2") == "torch"
    assert exact_search_backend(torch.device("cuda", 0)) == "torch"
    assert exact_search_backend(None) == exact_search_backend("cpu") == "faiss"
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # no FAISS installed
    assert exact_search_backend("cpu") == "torch"


def test_half_precision_torch_search_finds_the_same_documents(docs, queries):
    expected = brute_force_search(docs, queries, 20)
    scores, indices = brute_force_search(docs, queries, 20, dtype=torch.float16, chunk_size=64, doc_chunk_size=500)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_allclose(scores, expected[0], atol=2e-3)  # fp16 scores: about 3 significant digits
    same = [len(set(a) & set(b)) / 20 for a, b in zip(indices, expected[1])]
    assert np.mean(same) > 0.97


def test_without_faiss_exact_search_runs_on_torch_and_approximate_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, docs, queries
):
    flat = DenseIndex(DIM)
    flat.add(docs)
    expected = flat.search(queries, 10)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    assert not index_module.faiss_available() and faiss_gpu_count() == 0
    assert_same_topk(expected, exact_search(docs, queries, 10))
    index_module.check_index_factory("Flat")
    with pytest.raises(InputError, match=r"FAISS is not installed; pip install -e '\.\[cpu\]'"):
        index_module.check_index_factory("HNSW32")
    with pytest.raises(InputError, match="FAISS is not installed"):
        DenseIndex(DIM, factory="IVF16,Flat")
