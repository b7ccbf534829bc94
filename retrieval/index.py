"""Dense top-k search over L2-normalised vectors by inner product.

Three ways to search, all returning ``(scores float32 [Q, k], indices int64 [Q, k])`` with indices in
insertion order and ``-1`` / ``-inf`` padding when there are fewer than ``k`` documents:

* :class:`DenseIndex`: a FAISS index (exact ``"Flat"`` by default, any ``index_factory`` string), on the
  CPU, or on one GPU given by ``device`` when the installed FAISS build has GPU support;
* :func:`brute_force_search`: torch matmul + topk on any device and dtype, chunked so memory stays
  bounded (the exact search on a GPU, a reference on the CPU);
* :func:`sharded_search` / :func:`merge_topk`: one index per shard, per-shard top-k lists merged into
  the global top-k (the DDP mode: each rank searches its shard, the gathered lists are merged).

:func:`exact_search` picks the exact backend for a device: torch on a GPU (no FAISS GPU build needed),
FAISS ``Flat`` on the CPU, torch again when FAISS is not installed. FAISS is imported lazily: the
package ``faiss-cpu`` (extra ``[cpu]``) and the GPU build (extra ``[gpu]``, ``faiss-gpu-cu12``) both
install the module ``faiss``, so an environment holds exactly one of them.

Vectors are not normalised here: callers pass unit vectors, so inner product = cosine.
Among equal scores the order is whatever the backend produces; compare results up to ties.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from retrieval.atomic import atomic_write
from retrieval.errors import InputError

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

Array = np.ndarray | torch.Tensor
SearchResult = tuple[np.ndarray, np.ndarray]

# Exact CPU search scores queries x docs blocks with one BLAS call each, then updates the per-query top-k
# in an OpenMP loop. FAISS's default blocks (4096 x 1024) mean two parallel regions per 1024 docs. On an idle
# 2-core machine both settings sit at the BLAS bound (1M docs x 5k queries, k=100: 20.7 s default, 20.4 s
# with 1024 x 16384); with other processes competing for the cores, where every barrier waits for a preempted
# thread, the default blocks were 1.3-3x slower in our runs. 64 MiB of scores per block. bench/bench_search.py.
FLAT_BLOCK_QUERIES = 1024
FLAT_BLOCK_DOCS = 16384


def as_float32_matrix(
    vectors: Array, name: str = "vectors", dim: int | None = None, dim_owner: str = "the index"
) -> np.ndarray:
    """Return ``vectors`` (numpy or torch, any float dtype) as a C-contiguous float32 [N, dim] array."""
    if isinstance(vectors, torch.Tensor):
        tensor = vectors.detach().cpu()
        if not tensor.is_floating_point():
            raise InputError(f"{name} has dtype {tensor.dtype}; pass floating-point vectors (fp16/bf16/fp32)")
        array = tensor.to(torch.float32).numpy()
    elif isinstance(vectors, np.ndarray):
        if not np.issubdtype(vectors.dtype, np.floating):
            raise InputError(f"{name} has dtype {vectors.dtype}; pass floating-point vectors (fp16/fp32)")
        array = vectors
    else:
        raise InputError(f"{name} is a {type(vectors).__name__}; pass a numpy array or a torch tensor")
    if array.ndim != 2:
        raise InputError(f"{name} has shape {tuple(array.shape)}; pass a 2-D array [N, dim]")
    if dim is not None and array.shape[1] != dim:
        raise InputError(
            f"{name} have dimension {array.shape[1]} but {dim_owner} has dimension {dim}; "
            "encode both with the same model"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k={k!r} is not a positive integer; pass k >= 1")
    return int(k)


def _check_chunk(chunk_size: int, name: str = "chunk_size") -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError(f"{name}={chunk_size!r} is not a positive integer; pass e.g. 4096")
    return int(chunk_size)


def _pad_invalid(scores: np.ndarray, indices: np.ndarray) -> SearchResult:
    """Normalise backend padding: every slot without a document gets index -1 and score -inf."""
    scores = scores.astype(np.float32, copy=False)
    indices = indices.astype(np.int64, copy=False)
    scores[indices < 0] = -np.inf
    return scores, indices


def _check_factory_string(factory: str) -> None:
    if not isinstance(factory, str) or not factory.strip():
        raise InputError(f"index factory {factory!r} is not a FAISS factory string; pass e.g. 'Flat' or 'IVF1024,Flat'")


def _build_faiss_index(dim: int, factory: str) -> faiss.Index:
    """Build an inner-product FAISS index from a factory string, turning FAISS errors into InputError."""
    _check_factory_string(factory)
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "rejected"
        raise InputError(
            f"FAISS rejected index factory string {factory!r} ({reason}); "
            "pass a valid one such as 'Flat', 'IVF1024,Flat' or 'HNSW32'"
        ) from None


@dataclass(frozen=True)
class IndexConfig:
    """How the corpus is searched, in evaluation and in hard-negative mining alike (``model.index`` in configs).

    Args:
        factory: FAISS index factory string; ``Flat`` is exact (torch on a GPU, FAISS or torch on the CPU).
        nprobe: inverted lists visited per query by IVF factories (None: FAISS's default).
    """

    factory: str = "Flat"
    nprobe: int | None = None

    def check(self, dim: int) -> None:
        """Reject a factory FAISS cannot build, or an ``nprobe`` it cannot take, before any search runs."""
        check_index_factory(self.factory, dim)
        if self.nprobe is not None and self.factory != "Flat":
            _set_nprobe(_build_faiss_index(dim, self.factory), self.nprobe, self.factory)
        elif self.nprobe is not None:
            raise InputError(
                f"nprobe={self.nprobe} was given but index 'Flat' has no inverted lists; "
                "drop nprobe or use an IVF factory such as 'IVF1024,Flat'"
            )


def check_index_factory(factory: str, dim: int = 8) -> None:
    """Reject a factory string FAISS cannot build (``'Flat'`` is always accepted: torch searches it exactly)."""
    _check_factory_string(factory)
    if factory != "Flat" or faiss_available():
        _build_faiss_index(dim, factory)


def _set_nprobe(index: faiss.Index, nprobe: int, factory: str) -> None:
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
        raise InputError(f"nprobe={nprobe!r} is not a positive integer; pass e.g. 16")
    try:
        _faiss().ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
    except RuntimeError:
        raise InputError(
            f"nprobe={nprobe} was given but index {factory!r} has no inverted lists; "
            "drop nprobe or use an IVF factory such as 'IVF1024,Flat'"
        ) from None


def _faiss() -> Any:
    """The ``faiss`` module, or a one-line error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise InputError(
            "FAISS is not installed; pip install -e '.[cpu]' (faiss-cpu) or '.[gpu]' (faiss-gpu-cu12), "
            "or use the exact index factory 'Flat', which torch can search without FAISS"
        ) from None
    return faiss


def faiss_available() -> bool:
    """True when a FAISS build is importable."""
    try:
        _faiss()
    except InputError:
        return False
    return True


def faiss_gpu_count() -> int:
    """GPUs the installed FAISS build can use (0 for faiss-cpu, or without FAISS)."""
    if not faiss_available():
        return 0
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def as_device(device: torch.device | str | int | None) -> torch.device:
    """``device`` as a ``torch.device``: None is the CPU, an int is that CUDA device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device("cuda", device)
    return torch.device(device)


@functools.cache
def _warn_cpu_fallback(gpu: int) -> None:
    log.warning(
        "FAISS has no GPU support here (faiss-cpu build); the index for cuda:%d stays on the CPU. "
        "Exact search ('Flat') runs on the GPU through torch anyway; for approximate indexes on the GPU "
        "install the GPU build in place of faiss-cpu (README, 'FAISS on GPUs').",
        gpu,
    )


def _to_gpu(index: faiss.Index, device: torch.device) -> tuple[faiss.Index, Any]:
    """Move ``index`` to this one GPU (never to all of them: each DDP rank owns one device).

    Returns the index and the GPU resources object that must live as long as it (None on the CPU).
    Without a GPU build of FAISS the index stays on the CPU, with a warning logged once per device.
    """
    if device.type != "cuda":
        return index, None
    gpu = device.index if device.index is not None else torch.cuda.current_device()
    if faiss_gpu_count() == 0:
        _warn_cpu_fallback(gpu)
        return index, None
    faiss = _faiss()
    resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(resources, gpu, index), resources
    except (RuntimeError, AttributeError) as err:
        raise InputError(
            f"this FAISS index cannot run on the GPU ({err}); search it on the CPU or use "
            "index factory 'Flat' (exact search on the GPU with torch)"
        ) from None


@contextlib.contextmanager
def _flat_blocks(queries: int, docs: int) -> Iterator[None]:
    """Temporarily set FAISS's BLAS block sizes for exhaustive CPU search (a process-wide setting)."""
    cvar = _faiss().cvar
    if not hasattr(cvar, "distance_compute_blas_database_bs"):
        yield
        return
    saved = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = queries, docs
    try:
        yield
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = saved


def _progress(iterable: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk")


class DenseIndex:
    """A FAISS inner-product index over unit vectors; indices returned are insertion order.

    ``factory`` is a FAISS ``index_factory`` string (``"Flat"`` = exact search). ``device`` is where it
    searches: None or ``"cpu"``, or one GPU (``"cuda:1"``, ``1``, a ``torch.device``), used when the FAISS
    build has GPU support and otherwise replaced by the CPU with a warning. ``nprobe`` sets the number of
    inverted lists visited by IVF indexes.
    """

    def __init__(
        self, dim: int, factory: str = "Flat", device: torch.device | str | int | None = None, nprobe: int | None = None
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"dim={dim!r} is not a positive integer; pass the embedding dimension, e.g. 512")
        index = _build_faiss_index(int(dim), factory)
        if nprobe is not None:
            _set_nprobe(index, nprobe, factory)
        self._attach(index, factory, device)

    def _attach(self, index: faiss.Index, factory: str, device: torch.device | str | int | None) -> None:
        self.dim: int = index.d
        self.factory: str = factory
        self._index, self._gpu_resources = _to_gpu(index, as_device(device))
        self.on_gpu: bool = self._gpu_resources is not None

    @property
    def ntotal(self) -> int:
        """Number of documents added."""
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        """Whether the index is ready for ``add`` (always true for ``"Flat"``)."""
        return bool(self._index.is_trained)

    def train(self, vectors: Array) -> None:
        """Train the index (IVF centroids, quantisers) on ``vectors`` [N, dim]; a no-op if not needed."""
        if self._index.is_trained:
            return
        array = as_float32_matrix(vectors, "training vectors", self.dim)
        try:
            self._index.train(array)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1]
            raise InputError(
                f"training index {self.factory!r} on {len(array)} vectors failed ({reason}); "
                "pass more training vectors or a smaller factory (fewer IVF lists)"
            ) from None

    def reserve(self, total: int) -> None:
        """Pre-allocate room for ``total`` vectors in a flat (``"Flat"``, ``"SQ8"``, ``"PQ..."``) CPU index.

        Without it, chunked ``add`` calls grow FAISS's code buffer by doubling, and while it is copied the
        old and new buffers coexist: peak memory up to twice the index. Other index types ignore this.
        """
        codes = getattr(_faiss().downcast_index(self._index), "codes", None)
        if self.on_gpu or codes is None or not hasattr(codes, "resize"):
            return
        used = codes.size()
        codes.resize(max(used, int(total) * self._index.sa_code_size()))
        codes.resize(used)  # shrinking keeps the capacity: later adds up to ``total`` do not reallocate

    def add(self, vectors: Array) -> None:
        """Append ``vectors`` [N, dim] (numpy/torch, fp16/fp32); the first call trains the index if needed."""
        array = as_float32_matrix(vectors, "vectors", self.dim)
        if len(array) == 0:
            return
        self.train(array)
        self._index.add(array)

    def search(self, queries: Array, k: int, chunk_size: int = 4096, progress: bool = False) -> SearchResult:
        """Top-``k`` documents per query: ``(scores float32 [Q, k], indices int64 [Q, k])``, best first.

        Queries are searched ``chunk_size`` at a time (optionally with a tqdm bar). Slots beyond the
        number of documents hold index -1 and score -inf.
        """
        array = as_float32_matrix(queries, "queries", self.dim)
        k, chunk_size = _check_k(k), _check_chunk(chunk_size)
        scores = np.full((len(array), k), -np.inf, dtype=np.float32)
        indices = np.full((len(array), k), -1, dtype=np.int64)
        if self.ntotal == 0 or len(array) == 0:
            return scores, indices
        starts = range(0, len(array), chunk_size)
        blocks = contextlib.nullcontext() if self.on_gpu else _flat_blocks(FLAT_BLOCK_QUERIES, FLAT_BLOCK_DOCS)
        with blocks:
            for start in _progress(starts, len(starts), progress, "search"):
                stop = start + chunk_size
                scores[start:stop], indices[start:stop] = self._index.search(array[start:stop], k)
        return _pad_invalid(scores, indices)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a GPU index is copied to the CPU first)."""
        faiss = _faiss()
        index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        with atomic_write(path, "wb") as handle:
            faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))

    @classmethod
    def load(
        cls, path: str | os.PathLike, expected_dim: int | None = None, device: torch.device | str | int | None = None
    ) -> DenseIndex:
        """Read an index written by :meth:`save`; ``expected_dim`` guards against a wrong encoder."""
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"index file {str(path)!r} does not exist; build it first or fix the path")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            raise InputError(
                f"{str(path)!r} is not a FAISS index file; pass a file written by DenseIndex.save"
            ) from None
        if expected_dim is not None and index.d != expected_dim:
            raise InputError(
                f"index {str(path)!r} has dimension {index.d} but expected_dim is {expected_dim}; "
                "load the index built with this encoder or rebuild it"
            )
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise InputError(f"index {str(path)!r} does not use inner product; rebuild it with DenseIndex")
        loaded = cls.__new__(cls)
        loaded._attach(index, f"loaded:{type(index).__name__}", device)
        return loaded

    def __repr__(self) -> str:
        return f"DenseIndex(dim={self.dim}, factory={self.factory!r}, ntotal={self.ntotal}, on_gpu={self.on_gpu})"


@torch.inference_mode()
def _topk_over_docs(
    queries: torch.Tensor, docs: torch.Tensor, k: int, doc_chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of ``queries @ docs.T`` computed ``doc_chunk_size`` docs at a time, merged as it goes.

    Scores are computed in the inputs' dtype (fp16/bf16 on a GPU) and merged in fp32.
    """
    best_scores = torch.full((len(queries), k), -torch.inf, device=queries.device)
    best_indices = torch.full((len(queries), k), -1, dtype=torch.int64, device=queries.device)
    for start in range(0, len(docs), doc_chunk_size):
        block = docs[start : start + doc_chunk_size]
        scores, indices = (queries @ block.T).topk(min(k, len(block)), dim=1)
        merged_scores = torch.cat([best_scores, scores.float()], dim=1)
        merged_indices = torch.cat([best_indices, indices + start], dim=1)
        best_scores, order = merged_scores.topk(k, dim=1)
        best_indices = merged_indices.gather(1, order)
    return best_scores, best_indices


def brute_force_search(
    docs: Array,
    queries: Array,
    k: int,
    chunk_size: int = 1024,
    doc_chunk_size: int = 131072,
    device: torch.device | str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> SearchResult:
    """Exact top-``k`` by torch matmul + topk, never holding more than ``chunk_size x doc_chunk_size`` scores.

    The docs are copied to ``device`` (None: the CPU) once, in ``dtype``; queries follow chunk by chunk.
    Returns the same layout as :meth:`DenseIndex.search`, on the CPU.
    """
    doc_tensor = torch.as_tensor(docs) if isinstance(docs, np.ndarray) else docs
    if not isinstance(doc_tensor, torch.Tensor) or doc_tensor.ndim != 2 or not doc_tensor.is_floating_point():
        raise InputError("docs must be a 2-D floating-point numpy array or torch tensor [N, dim]")
    target = as_device(device)
    doc_tensor = doc_tensor.detach().to(target, dtype)
    query_array = as_float32_matrix(queries, "queries", doc_tensor.shape[1], dim_owner="docs")
    k, chunk_size = _check_k(k), _check_chunk(chunk_size)
    doc_chunk_size = _check_chunk(doc_chunk_size, "doc_chunk_size")
    scores = np.full((len(query_array), k), -np.inf, dtype=np.float32)
    indices = np.full((len(query_array), k), -1, dtype=np.int64)
    for start in range(0, len(query_array), chunk_size):
        chunk = torch.from_numpy(query_array[start : start + chunk_size]).to(target, dtype)
        top_scores, top_indices = _topk_over_docs(chunk, doc_tensor, k, doc_chunk_size)
        scores[start : start + len(chunk)] = top_scores.cpu().numpy()
        indices[start : start + len(chunk)] = top_indices.cpu().numpy()
    return _pad_invalid(scores, indices)


#: Exact search on a GPU: fp16 scores (vectors are stored in fp16 anyway), 4096 queries x 256k docs per block
#: (2 GiB of scores at most).
GPU_SEARCH = dict(dtype=torch.float16, chunk_size=4096, doc_chunk_size=262144)


def exact_search_backend(device: torch.device | str | int | None) -> str:
    """``"torch"`` or ``"faiss"``: who searches exactly on ``device``.

    On a GPU, torch (chunked fp16 matmul + topk on that device; see ``bench/gpu_check.sh`` for the
    measurement against FAISS); on the CPU, FAISS ``Flat`` (about 1.5x faster than torch there,
    ``bench/bench_search.py``), or torch when FAISS is not installed.
    """
    if as_device(device).type == "cuda" or not faiss_available():
        return "torch"
    return "faiss"


def exact_search(docs: Array, queries: Array, k: int, device: torch.device | str | int | None = None) -> SearchResult:
    """Exact top-``k`` of ``queries`` over ``docs`` with the backend :func:`exact_search_backend` picks."""
    target = as_device(device)
    if exact_search_backend(target) == "torch":
        options = GPU_SEARCH if target.type == "cuda" else {}
        return brute_force_search(docs, queries, k, device=target, **options)
    index = DenseIndex(int(docs.shape[1]))
    index.reserve(len(docs))
    index.add(docs)
    return index.search(queries, k)


def merge_topk(parts: Sequence[tuple[Array, Array]], offsets: Sequence[int], k: int) -> SearchResult:
    """Merge per-shard top-k lists into the global top-``k``.

    ``parts[i] = (scores [Q, k_i], indices [Q, k_i])`` with shard-local indices (-1 = padding);
    ``offsets[i]`` is the global position of shard i's first document. Equal scores keep shard order.
    """
    k = _check_k(k)
    if len(parts) != len(offsets):
        raise InputError(f"merge_topk got {len(parts)} parts but {len(offsets)} offsets; pass one offset per shard")
    if not parts:
        raise InputError("merge_topk got no parts; pass at least one (scores, indices) pair")
    all_scores, all_indices = [], []
    for shard, ((scores, indices), offset) in enumerate(zip(parts, offsets)):
        scores = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float32)
        indices = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        if scores.ndim != 2 or scores.shape != indices.shape or len(scores) != len(parts[0][0]):
            raise InputError(
                f"shard {shard} has scores {scores.shape} and indices {indices.shape}; "
                f"every shard needs matching [Q, k_i] arrays for the same {len(parts[0][0])} queries"
            )
        all_scores.append(np.where(indices >= 0, scores, -np.inf).astype(np.float32))
        all_indices.append(np.where(indices >= 0, indices + int(offset), -1))
    scores, indices = np.concatenate(all_scores, axis=1), np.concatenate(all_indices, axis=1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return _pad_invalid(np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1))


def sharded_search(shards: Sequence[Array], queries: Array, k: int, **index_kwargs: Any) -> SearchResult:
    """Build one :class:`DenseIndex` per shard, search each, merge: equal to searching the concatenation.

    ``index_kwargs`` go to :class:`DenseIndex` (``factory``, ``device``, ``nprobe``).
    """
    if not shards:
        raise InputError("sharded_search got no shards; pass at least one [N_i, dim] array")
    dim = as_float32_matrix(shards[0][:1], "shard 0").shape[1]
    parts, offsets, offset = [], [], 0
    for shard in shards:
        index = DenseIndex(dim, **index_kwargs)
        index.add(shard)
        parts.append(index.search(queries, k))
        offsets.append(offset)
        offset += index.ntotal
    return merge_topk(parts, offsets, k)
