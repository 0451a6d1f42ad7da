"""Label retrieval: k nearest neighbours in f_p space (exact or approximate) and the neighbour-label draw.

The neighbours are computed once for the training set (f_p is frozen). At every visit of sample i one
label is drawn uniformly from its k+1 candidates (its own noisy label and its k neighbours' labels);
the sample's loss weight is the number of candidates equal to the draw.

Index types (``[retrieval] index``): ``exact`` (faiss ``IndexFlatL2`` or chunked torch matmul), ``ivf``
(faiss inverted lists over k-means cells, vectors stored flat or scalar-quantised to 8 bits), ``hnsw``
(faiss ``IndexHNSWFlat``), and ``auto`` = exact up to :data:`AUTO_EXACT_MAX` samples, IVF above. The
parameters of the approximate indexes come from N by :func:`ann_params`; the rule and its measurements
are in docs/scale.md and BENCHMARKS.md "Scale".
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import InputError
from .features import FeatureRows, as_rows, chunk_rows, float_tensor, is_mapped

Metric = Literal["euclidean", "cosine"]
IndexKind = Literal["exact", "ivf", "hnsw", "auto"]
INDEXES = ("auto", "exact", "hnsw", "ivf")
STORES = ("auto", "flat", "sq8")
# `auto` switches to IVF above this many samples: exact search costs N^2 D (about 147 GFLOP/s on 2 cores
# with faiss's AVX-512 kernels: 100k x 512 in ~70 s), IVF about N * (nlist + probed rows) * D (1M x 512:
# 210 s; see BENCHMARKS.md "Scale").
AUTO_EXACT_MAX = 100_000
# `store = "auto"`: IVF keeps float32 vectors (4 N D bytes) up to this size, 8-bit codes (N D) above
AUTO_FLAT_MAX_BYTES = 4 * 2**30


def faiss_available() -> bool:
    """Is faiss installed (``backend = "auto"`` uses it when so)?"""
    return importlib.util.find_spec("faiss") is not None


# OpenBLAS kernel families for torch's CPU capability (both need the instructions they are named for)
_OPENBLAS_CORES = {"AVX512": "SkylakeX", "AVX2": "Haswell"}


def import_faiss():
    """``faiss``, imported with the matrix-product kernels of its bundled OpenBLAS chosen for this CPU.

    faiss-cpu's wheel bundles OpenBLAS 0.3.15, which does not recognise newer CPUs (this machine's Xeon
    with AMX is taken for a generic "Prescott"): its products then run at 27 GFLOP/s against 143 with
    the AVX-512 kernels (measured on 2 cores, BENCHMARKS.md "Scale"). Unless ``OPENBLAS_CORETYPE`` is
    set, it is set for the import from torch's CPU capability (AVX512: SkylakeX, AVX2: Haswell) and
    restored afterwards, so child processes and other libraries see the environment unchanged.
    """
    core = None
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        core = _OPENBLAS_CORES.get(torch.backends.cpu.get_cpu_capability())
    if core is not None:
        os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import faiss
    finally:
        if core is not None:
            del os.environ["OPENBLAS_CORETYPE"]
    return faiss


def class_capped_k(k: int, n: int, num_classes: int, rows_per_neighbour: float) -> int:
    """``k``, but at most one neighbour per ``rows_per_neighbour`` rows of an average class,
    ``n / (num_classes * rows_per_neighbour)`` (at least 1; ``k`` itself where it is 0 or the cap is 0):
    where classes have few rows, more of a row's k nearest rows belong to other classes and carry their
    labels into the draws (a third at about 19 rows a class on Banking77, against 15% with all its rows)."""
    if k == 0 or rows_per_neighbour <= 0:
        return k
    return max(1, min(k, int(n / (num_classes * rows_per_neighbour))))


def _prepare(features: np.ndarray | torch.Tensor, metric: Metric) -> torch.Tensor:
    x = float_tensor(features)
    if x.ndim != 2:
        raise InputError(f"features must be 2-D (N, D), got shape {tuple(x.shape)}")
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    elif metric != "euclidean":
        raise InputError(f"unknown metric {metric!r}; valid: ['cosine', 'euclidean']")
    return x


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 results per row, remove the query itself (or the farthest one if it is absent)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    # a query missing from its own results (exact duplicates tie with it): drop the farthest instead
    is_self[~is_self.any(axis=1), -1] = True
    keep = np.ones_like(is_self)
    keep[np.arange(n), np.argmax(is_self, axis=1)] = False  # drop exactly one column per row
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def knn_torch(
    features: np.ndarray | torch.Tensor,
    k: int,
    *,
    metric: Metric = "euclidean",
    exclude_self: bool = True,
    chunk_size: int = 2048,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by chunked matmul (never an N x N matrix). Returns ``(indices, sq_distances)`` (N, k).

    Squared Euclidean distances |q|^2 - 2 q.x + |x|^2; for ``cosine`` the rows are L2-normalised first.
    Rows are sorted by increasing distance. ``device``: where the matmuls run (None = CPU); the
    features are copied there once and the results come back as NumPy arrays.
    """
    x = _prepare(features, metric)
    if device is not None and device.type != "cpu":
        x = x.to(device)
    n = x.shape[0]
    kk = k + 1 if exclude_self else k
    # a chunk's (chunk, N) distance block stays under about 1 GB, however large N is
    chunk_size = max(1, min(chunk_size, 2**28 // max(n, 1)))
    norms = (x * x).sum(1)
    all_idx = np.empty((n, kk), dtype=np.int64)
    all_dist = np.empty((n, kk), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, n, chunk_size), desc="kNN", disable=not progress, leave=False):
            q = x[start : start + chunk_size]
            d = norms[start : start + chunk_size, None] - 2 * q @ x.T + norms[None, :]
            dist, idx = torch.topk(d, kk, dim=1, largest=False, sorted=True)
            all_idx[start : start + len(q)] = idx.cpu().numpy()
            all_dist[start : start + len(q)] = dist.clamp_min(0).cpu().numpy()
    if exclude_self:
        return _drop_self(all_idx, all_dist, k)
    return all_idx, all_dist


def knn_streaming(
    features: np.ndarray | FeatureRows,
    k: int,
    *,
    queries: np.ndarray | FeatureRows | None = None,
    metric: Metric = "euclidean",
    exclude_self: bool = True,
    progress: bool = False,
    device: torch.device | None = None,
    block_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of rows read block by block (a memory-mapped file stays on disk). Same return as
    :func:`knn_torch`.

    Each block of queries is compared with every block of rows (``block_bytes`` of float32 each, default
    a quarter of the feature chunk, 16 MB), keeping a running top-k: memory is two blocks, their distance
    block and the (N, k) results, whatever N is; the rows are read N / block times (from the page cache).
    ``queries``: other rows (Q, D) whose neighbours among ``features`` are wanted instead (nothing is
    excluded then); the results are (Q, k).
    """
    from . import features as features_mod

    rows = as_rows(features)
    n, d = rows.shape
    qrows = rows if queries is None else as_rows(queries)
    exclude_self = exclude_self and queries is None
    kk = k + 1 if exclude_self else k
    # at most 4096 rows a block: the (rows x rows) distance block stays at 64 MB however narrow D is
    size = min(4096, chunk_rows(d, block_bytes or features_mod.CHUNK_BYTES // 4))
    dev = device if device is not None else torch.device("cpu")

    def block(source: FeatureRows, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(_prepare_np(source[start : start + size], metric)).to(dev)
        return x, (x * x).sum(1)

    all_idx = np.empty((len(qrows), kk), dtype=np.int64)
    all_dist = np.empty((len(qrows), kk), dtype=np.float32)
    with torch.no_grad():
        for qs in tqdm(range(0, len(qrows), size), desc="kNN", disable=not progress, leave=False):
            q, qn = block(qrows, qs)
            best_d = torch.full((len(q), kk), float("inf"), device=dev)
            best_i = torch.zeros((len(q), kk), dtype=torch.int64, device=dev)
            for ds in range(0, n, size):
                x, xn = (q, qn) if queries is None and ds == qs else block(rows, ds)
                dist = qn[:, None] - 2 * q @ x.T + xn[None, :]
                cand_d = torch.cat([best_d, dist], 1)
                cand_i = torch.cat([best_i, torch.arange(ds, ds + len(x), device=dev).expand(len(q), -1)], 1)
                best_d, j = torch.topk(cand_d, kk, dim=1, largest=False, sorted=True)
                best_i = cand_i.gather(1, j)
            all_idx[qs : qs + len(q)] = best_i.cpu().numpy()
            all_dist[qs : qs + len(q)] = best_d.clamp_min(0).cpu().numpy()
    if exclude_self:
        return _drop_self(all_idx, all_dist, k)
    return all_idx, all_dist


def knn_faiss(
    features: np.ndarray | torch.Tensor, k: int, *, metric: Metric = "euclidean", exclude_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN through faiss (``IndexFlatL2``). Same return as :func:`knn_torch`."""
    faiss = import_faiss()

    x = np.ascontiguousarray(_prepare(features, metric).numpy())
    kk = k + 1 if exclude_self else k
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, idx = index.search(x, kk)
    if exclude_self:
        return _drop_self(idx.astype(np.int64), dist, k)
    return idx.astype(np.int64), dist


def knn(
    features: np.ndarray | torch.Tensor | FeatureRows,
    k: int,
    *,
    metric: Metric = "euclidean",
    backend: Literal["auto", "torch", "faiss"] = "auto",
    index: IndexKind = "auto",
    ann: AnnParams | None = None,
    exclude_self: bool = True,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among all rows. Returns ``(indices, sq_distances)`` (N, k).

    ``index``: ``exact``, ``ivf``, ``hnsw`` or ``auto`` (exact up to :data:`AUTO_EXACT_MAX` rows, IVF
    above). ``ann``: the approximate index's parameters (None: :func:`ann_params` of N).

    Exact search: ``backend="auto"`` uses chunked torch matmul on ``device`` when that is a GPU, else
    faiss when it is installed, else chunked torch matmul on the CPU. faiss (the CPU build) ignores
    ``device``. A memory-mapped array (or :class:`~lra_diffusion.features.FeatureRows`) is read in
    chunks by the faiss paths; the index itself holds its copy of the vectors (see :func:`ann_params`).
    """
    n = len(features)
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    if index not in INDEXES:
        raise InputError(f"unknown retrieval index {index!r}; valid: {list(INDEXES)}")
    if k >= n:
        raise InputError(f"k={k} neighbours need more than {k} training samples, got {n}")
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if index == "auto":
        index = "exact" if n <= AUTO_EXACT_MAX else "ivf"
    if index != "exact":
        if not faiss_available():
            raise InputError(f"retrieval index {index!r} needs faiss: pip install faiss-cpu")
        params = ann if ann is not None else ann_params(n, index, dim=features.shape[1])
        if params.index != index:
            params = replace(params, index=index)
        return knn_ann(features, k, params, metric=metric, exclude_self=exclude_self, progress=progress,
                       device=device)
    if isinstance(features, FeatureRows) or is_mapped(features):
        # out of core: blocks of queries against blocks of rows, never the whole matrix (nor a copy in faiss)
        return knn_streaming(features, k, metric=metric, exclude_self=exclude_self, progress=progress, device=device)
    on_gpu = device is not None and device.type != "cpu"
    if backend == "auto":
        backend = "torch" if on_gpu or not faiss_available() else "faiss"
    if backend == "faiss":
        if not faiss_available():
            raise InputError("retrieval backend 'faiss' needs faiss-cpu: pip install faiss-cpu")
        return knn_faiss(features, k, metric=metric, exclude_self=exclude_self)
    if backend == "torch":
        return knn_torch(features, k, metric=metric, exclude_self=exclude_self, progress=progress, device=device)
    raise InputError(f"unknown retrieval backend {backend!r}; valid: ['auto', 'faiss', 'torch']")


# ---- approximate search -----------------------------------------------------------------------


@dataclass(frozen=True)
class AnnParams:
    """Parameters of a faiss index (see :func:`ann_params` for the defaults' rule).

    index : "ivf", "hnsw" or "exact" (a flat index fed in chunks).
    nlist : IVF cells (k-means centroids); nprobe : cells visited per query.
    store : IVF vector store, "flat" (float32, 4 D bytes per row) or "sq8" (8-bit codes, D bytes).
    train_size : rows (a seeded uniform subsample) the IVF k-means is trained on.
    m, ef_construction, ef_search : HNSW links per node, and the candidate lists of build and search.
    query_chunk : query rows per faiss search call (bounds the result buffers and shows progress).
    threads : faiss OpenMP threads (0: torch's thread count, which honours OMP_NUM_THREADS).
    gpu : move the index to a GPU when faiss has GPU support and the device is CUDA (untested here).
    """

    index: str = "ivf"
    nlist: int = 1024
    nprobe: int = 16
    store: str = "flat"
    train_size: int = 65_536
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    query_chunk: int = 16_384
    threads: int = 0
    gpu: bool = True


def ann_params(n: int, index: str = "ivf", *, dim: int = 512, store: str = "auto", **overrides) -> AnnParams:
    """Index parameters for N rows of width ``dim``, by the rule measured in BENCHMARKS.md "Scale".

    IVF: ``nlist`` = the power of two nearest ``4 sqrt(N)`` (at most N / 39, faiss's minimum of
    training points per cell), trained on ``min(N, 16 nlist)`` rows; ``nprobe`` = 16 (all cells when
    nlist <= 16). Measured recall@10 of this rule: BENCHMARKS.md "Scale". ``store="auto"``: float32 vectors while ``4 N D`` bytes
    stay under 4 GiB, 8-bit scalar codes (``N D`` bytes) above. HNSW: M = 32, efConstruction = 80,
    efSearch = 128 at any N. ``overrides``: any :class:`AnnParams` field.
    """
    if store not in STORES:
        raise InputError(f"unknown IVF store {store!r}; valid: {list(STORES)}")
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    nlist = int(max(1, min(nlist, n // 39)))
    nprobe = int(min(nlist, 16))
    if store == "auto":
        store = "flat" if 4 * n * dim <= AUTO_FLAT_MAX_BYTES else "sq8"
    params = AnnParams(index=index, nlist=nlist, nprobe=nprobe, store=store, train_size=min(n, 16 * nlist))
    bad = set(overrides) - set(AnnParams.__dataclass_fields__)
    if bad:
        raise InputError(f"unknown ANN parameter(s) {sorted(bad)}; valid: {sorted(AnnParams.__dataclass_fields__)}")
    return replace(params, **{k: v for k, v in overrides.items() if v is not None})


def _faiss_threads(threads: int) -> int:
    return threads if threads > 0 else torch.get_num_threads()


def build_index(features: np.ndarray | torch.Tensor | FeatureRows, params: AnnParams, *, metric: Metric = "euclidean",
                device: torch.device | None = None, progress: bool = False):
    """A faiss index over the rows of ``features``, trained (IVF) and filled chunk by chunk.

    The rows are read in chunks of about 64 MB (a memory-mapped file is never read whole); the index
    holds its own copy: 4 N D bytes (exact, IVF flat, HNSW; HNSW adds about 8 M N bytes of links) or
    N D bytes (IVF sq8), plus nlist D floats of centroids.
    """
    faiss = import_faiss()

    faiss.omp_set_num_threads(_faiss_threads(params.threads))
    rows = as_rows(features)
    n, d = rows.shape
    if params.index == "exact":
        index = faiss.IndexFlatL2(d)
    elif params.index == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.m)
        index.hnsw.efConstruction = params.ef_construction
    elif params.index == "ivf":
        index = _trained_ivf(rows, params, metric)
    else:
        raise InputError(f"unknown retrieval index {params.index!r}; valid: ['exact', 'hnsw', 'ivf']")
    index = _maybe_gpu(index, params, device)
    for _, chunk in tqdm(rows.chunks(), total=-(-n // chunk_rows(d)), desc="index", disable=not progress,
                         leave=False):
        index.add(_prepare_np(chunk, metric))
    if params.index == "hnsw":
        index.hnsw.efSearch = params.ef_search
    return index


def _gpu_faiss(params: AnnParams, device: torch.device | None) -> bool:
    """Whether the index goes to a GPU: asked for, ``device`` is CUDA and faiss was built with GPU support."""
    faiss = import_faiss()

    return (params.gpu and params.index != "hnsw"  # faiss has no GPU HNSW
            and device is not None and device.type == "cuda" and hasattr(faiss, "StandardGpuResources"))


def _maybe_gpu(index, params: AnnParams, device: torch.device | None):
    """The index on the GPU when :func:`_gpu_faiss` says so (untested here: no GPU faiss on this machine)."""
    faiss = import_faiss()

    if not _gpu_faiss(params, device):
        return index
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, device.index or 0, index)


def _prepare_np(chunk: np.ndarray, metric: Metric) -> np.ndarray:
    x = np.ascontiguousarray(chunk, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif metric != "euclidean":
        raise InputError(f"unknown metric {metric!r}; valid: ['cosine', 'euclidean']")
    return np.ascontiguousarray(x, dtype=np.float32)


def search_index(index, queries: np.ndarray | torch.Tensor | FeatureRows, k: int, params: AnnParams, *,
                 metric: Metric = "euclidean", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64, sq_distances float32)`` (Q, k) of the rows of ``queries``, chunk by chunk.

    Missing results (an IVF visiting too few cells to find k rows) come back as index -1, distance inf.
    """
    rows = as_rows(queries)
    q = len(rows)
    all_idx = np.empty((q, k), dtype=np.int64)
    all_dist = np.empty((q, k), dtype=np.float32)
    step = max(1, params.query_chunk)
    for start in tqdm(range(0, q, step), desc="search", disable=not progress, leave=False):
        dist, idx = index.search(_prepare_np(rows[start : start + step], metric), k)
        all_idx[start : start + len(idx)] = idx
        all_dist[start : start + len(idx)] = np.where(idx < 0, np.inf, np.maximum(dist, 0))
    return all_idx, all_dist


def knn_ann(
    features: np.ndarray | torch.Tensor | FeatureRows,
    k: int,
    params: AnnParams,
    *,
    metric: Metric = "euclidean",
    exclude_self: bool = True,
    progress: bool = False,
    device: torch.device | None = None,
    timings: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of every row among all rows through a faiss index (:func:`build_index`). Same return as
    :func:`knn_torch`; ``timings`` (if given) receives ``build_s`` and ``search_s``.

    For IVF on the CPU the queries are the indexed rows, so one coarse pass serves both: each row's
    ``nprobe`` nearest cells are found once, the first is where it is added, and all are searched;
    the queries then run in the order of their cell, so consecutive queries scan the same inverted lists
    while they are in cache (half the time of file order, measured in BENCHMARKS.md "Scale").
    """
    t0 = time.perf_counter()
    kk = k + 1 if exclude_self else k
    if params.index == "ivf" and not _gpu_faiss(params, device):
        index, coarse = _build_ivf_self(features, params, metric=metric, progress=progress)
        t1 = time.perf_counter()
        if params.store == "flat":
            idx, dist = _search_cells(features, kk, coarse[0], metric=metric, progress=progress)
        else:
            idx, dist = _search_ivf_self(index, features, kk, params, coarse, metric=metric, progress=progress)
    else:
        index = build_index(features, params, metric=metric, device=device, progress=progress)
        t1 = time.perf_counter()
        idx, dist = search_index(index, features, kk, params, metric=metric, progress=progress)
    if timings is not None:
        timings.update(build_s=t1 - t0, search_s=time.perf_counter() - t1)
    if exclude_self:
        idx, dist = _drop_self(idx, dist, k)
    # a neighbour the index did not find (too few rows in the visited cells) counts as the row itself:
    # its candidate is the row's own label, never the label of row -1
    missing = idx < 0
    if missing.any():
        idx[missing] = np.nonzero(missing)[0]
    return idx, dist


def _trained_ivf(rows: FeatureRows, params: AnnParams, metric: Metric):
    """An empty IVF index (flat or sq8 store) whose k-means cells are trained on a seeded subsample."""
    faiss = import_faiss()

    n, d = rows.shape
    if params.store not in ("flat", "sq8"):
        raise InputError(f"unknown IVF store {params.store!r}; valid: ['flat', 'sq8']")
    nlist = max(1, min(params.nlist, n))
    quantizer = faiss.IndexFlatL2(d)
    if params.store == "flat":
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
    else:
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit)
    # a seeded uniform subsample trains the k-means (faiss's own would draw from all N rows in memory)
    m = min(n, max(params.train_size, nlist))
    pick = np.sort(np.random.default_rng(0).choice(n, size=m, replace=False))
    index.cp.max_points_per_centroid = max(1, -(-m // nlist))  # keep the whole subsample
    index.cp.min_points_per_centroid = 1  # a few points per cell are enough to place it (no warning)
    index.train(_prepare_np(rows[pick], metric))
    index.nprobe = min(params.nprobe, nlist)
    return index


def _coarse_cells(index, rows: FeatureRows, metric: Metric, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``index.nprobe`` nearest IVF cells and their distances (N, nprobe), chunk by chunk."""
    n, d = rows.shape
    cells = np.empty((n, index.nprobe), dtype=np.int64)
    cell_dist = np.empty((n, index.nprobe), dtype=np.float32)
    for start, chunk in tqdm(rows.chunks(), total=-(-n // chunk_rows(d)), desc="cells", disable=not progress,
                             leave=False):
        dist, cell = index.quantizer.search(_prepare_np(chunk, metric), index.nprobe)
        cells[start : start + len(chunk)], cell_dist[start : start + len(chunk)] = cell, dist
    return cells, cell_dist


def _build_ivf_self(features, params: AnnParams, *, metric: Metric, progress: bool):
    """The trained IVF (its quantizer) and each row's ``nprobe`` nearest cells (N, nprobe); the flat
    store's vectors are not added (:func:`_search_cells` reads the rows), the sq8 store's codes are."""
    faiss = import_faiss()
    faiss.omp_set_num_threads(_faiss_threads(params.threads))
    rows = as_rows(features)
    index = _trained_ivf(rows, params, metric)
    cells, cell_dist = _coarse_cells(index, rows, metric, progress=progress)
    if params.store != "flat":
        for start, chunk in rows.chunks():
            x = _prepare_np(chunk, metric)
            first = np.ascontiguousarray(cells[start : start + len(x), 0])
            index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(first))  # ids = row numbers
    return index, (cells, cell_dist)


def _search_cells(features, k: int, cells: np.ndarray, *, metric: Metric, progress: bool,
                  block_floats: int = 2**24) -> tuple[np.ndarray, np.ndarray]:
    """IVF search of every row with dense matrix products: the rows are sorted by their first cell
    (a float32 copy, 4 N D bytes, as IVF's flat store), and the rows of one cell are compared at once
    with all rows of every cell any of them probes (a superset of each row's own ``nprobe`` cells, so
    the recall is at least that of faiss's per-query scan). One product of (rows in the cell) x
    (rows of the probed cells), at most ``block_floats`` distances at a time; measured 3.6x faster
    than faiss's ``search_preassigned`` at 1M x 512 (BENCHMARKS.md "Scale"). Rows whose probed cells
    hold fewer than ``k`` rows get index -1 (distance inf) in the missing places."""
    rows = as_rows(features)
    n, d = rows.shape
    order = np.argsort(cells[:, 0], kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    nlist = int(cells.max()) + 1
    starts = np.searchsorted(cells[order, 0], np.arange(nlist + 1))
    xs = np.empty((n, d), dtype=np.float32)  # the rows in cell order
    for start, chunk in rows.chunks():
        xs[rank[start : start + len(chunk)]] = _prepare_np(chunk, metric)
    xs_t = torch.from_numpy(xs)
    norms = (xs_t * xs_t).sum(1)
    all_idx = np.full((n, k), -1, dtype=np.int64)
    all_dist = np.full((n, k), np.inf, dtype=np.float32)
    with torch.inference_mode():
        for c in tqdm(range(nlist), desc="search", disable=not progress, leave=False):
            a, b = int(starts[c]), int(starts[c + 1])
            probed = np.unique(cells[order[a:b]])
            step = max(1, block_floats // max(1, int((starts[probed + 1] - starts[probed]).sum())))
            for qa in range(a, b, step):
                qb = min(b, qa + step)
                if qb - qa < b - a:  # a cell split into blocks: each block probes only its own rows' cells
                    probed = np.unique(cells[order[qa:qb]])
                base = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in probed])
                dist = norms[base][None, :] - 2 * xs_t[qa:qb] @ xs_t[base].T + norms[qa:qb, None]
                kk = min(k, len(base))
                best, j = torch.topk(dist, kk, dim=1, largest=False, sorted=True)
                all_idx[order[qa:qb], :kk] = order[base[j.numpy()]]
                all_dist[order[qa:qb], :kk] = best.clamp_min(0).numpy()
    return all_idx, all_dist


def _search_ivf_self(index, features, k: int, params: AnnParams, coarse, *, metric: Metric, progress: bool):
    """faiss's scan of the inverted lists (the sq8 store), queries in the order of their cell."""
    rows = as_rows(features)
    cells, cell_dist = coarse
    order = np.argsort(cells[:, 0], kind="stable")
    all_idx = np.empty((len(rows), k), dtype=np.int64)
    all_dist = np.empty((len(rows), k), dtype=np.float32)
    step = max(1, params.query_chunk)
    for start in tqdm(range(0, len(order), step), desc="search", disable=not progress, leave=False):
        block = order[start : start + step]
        q = _prepare_np(rows[block], metric)
        dist, idx = index.search_preassigned(q, k, cells[block], cell_dist[block])
        all_idx[block] = idx
        all_dist[block] = np.where(idx < 0, np.inf, np.maximum(dist, 0))
    return all_idx, all_dist


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """The mean fraction of each row's exact k neighbours (Q, k) that are among ``found`` (Q, k')."""
    if exact.size == 0:
        return 1.0
    hits = 0
    for s in range(0, len(exact), 65_536):  # (rows, k', k) comparisons, a block at a time
        f, e = found[s : s + 65_536], exact[s : s + 65_536]
        hits += int((e[:, :, None] == f[:, None, :]).any(2).sum())
    return hits / exact.size


def neighbour_vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """The majority label of each row of ``neighbour_labels`` (Q, k), nearest neighbour first; a tie goes
    to the label of the nearest of the tied neighbours. Returns (Q,)."""
    labels = np.asarray(neighbour_labels)
    counts = (labels[:, :, None] == labels[:, None, :]).sum(2)  # (Q, k): votes for each position's label
    return labels[np.arange(len(labels)), counts.argmax(1)]


FLIP_MIN_ROWS = 20  # disagreeing rows per class below which flip_concentration says nothing


def flip_concentration(labels: np.ndarray, neighbours: np.ndarray, num_classes: int) -> float | None:
    """How concentrated the disagreements between the labels (N,) and the majority vote of each row's
    neighbours (N, k) are, label-free: over the rows whose label differs from their vote, the share whose
    label is the most common other label of their vote class, rescaled so that 0 is the uniform share
    1 / (C - 1) (flips to any class alike: symmetric noise) and 1 means every such row of a class carries
    one and the same other label (pair-flip noise). None with fewer than 3 classes, no neighbours or fewer
    than :data:`FLIP_MIN_ROWS` disagreeing rows per class (a few rows concentrate by chance: 12 a class
    under uniform flips read 0.14-0.18). Feature confusion between similar classes concentrates too; the
    caller reads it only where the vote is not clearly worse than a classifier fitted to the labels."""
    if num_classes < 3 or neighbours.shape[1] == 0:
        return None
    vote = neighbour_vote(labels[neighbours])
    off = vote != labels
    if off.sum() < FLIP_MIN_ROWS * num_classes:
        return None
    pairs = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(pairs, (vote[off], labels[off]), 1)
    uniform = 1 / (num_classes - 1)
    return float((pairs.max(1).sum() / off.sum() - uniform) / (1 - uniform))


class NeighbourLabelSampler:
    """Draws a retrieved label per visit and its agreement weight.

    Parameters
    ----------
    labels : (N,) int noisy labels in 0..C-1.
    neighbours : (N, k) int indices of each sample's neighbours.
    weighting : if False, every weight is 1 (the Clothing1M / WebVision scripts).
    """

    def __init__(self, labels: np.ndarray, neighbours: np.ndarray, *, weighting: bool = True):
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        nb = torch.as_tensor(np.asarray(neighbours), dtype=torch.int64).reshape(len(labels), -1)
        self.candidates = torch.cat([labels[:, None], labels[nb]], dim=1)  # (N, k+1), own label first
        self.weighting = weighting

    def sample(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """For samples ``index`` (B,), return ``(drawn_labels (B,) int64, weights (B,) float32)``.

        Weights are the agreement counts (1..k+1), not yet normalised over the batch.
        """
        cand = self.candidates[index]
        j = torch.randint(0, cand.shape[1], (len(index),), generator=generator)
        drawn = cand[torch.arange(len(index)), j]
        if not self.weighting:
            return drawn, torch.ones(len(index))
        return drawn, (cand == drawn[:, None]).sum(1).float()

    def agreement(self) -> torch.Tensor:
        """The fraction of the k+1 candidates equal to each sample's own label, (N,)."""
        return (self.candidates == self.candidates[:, :1]).float().mean(1)

    def vote_distribution(self, num_classes: int, rows=None) -> torch.Tensor:
        """(N, C) frequencies of each class among the k+1 candidates (the retrieval's label distribution);
        ``rows``: only those samples' rows (an index array)."""
        cand = self.candidates if rows is None else self.candidates[torch.as_tensor(rows)]
        counts = torch.zeros(len(cand), num_classes)
        counts.scatter_add_(1, cand, torch.ones_like(cand, dtype=torch.float32))
        return counts / cand.shape[1]

    def target_distribution(self, num_classes: int, rows=None) -> torch.Tensor:
        """(N, C) expected training target of each sample (``rows``: only those): the label vector that
        minimises the expected weighted squared error over its draws. A class held by n_c of the k+1
        candidates is drawn with probability n_c / (k+1) and weighted n_c, so the target is
        n_c^2 / sum_c n_c^2 (n_c / (k+1) without weighting)."""
        votes = self.vote_distribution(num_classes, rows)
        if self.weighting:
            votes = votes.square()
        return votes / votes.sum(1, keepdim=True)
