"""Approximate retrieval (faiss IVF / HNSW): the parameter rule, recall against exact search, chunked
and memory-mapped input, and the `index` choice in `knn`."""

from __future__ import annotations

import numpy as np
import pytest

from lra_diffusion.errors import InputError
from lra_diffusion.features import FeatureRows
from lra_diffusion.retrieval import (
    AUTO_EXACT_MAX, AnnParams, ann_params, faiss_available, knn, knn_ann, recall_at_k,
)

pytestmark = pytest.mark.skipif(not faiss_available(), reason="no faiss")


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Rows near 20 centres: neighbours an index can find (unlike isotropic high-d noise)."""
    g = np.random.default_rng(seed)
    centres = g.normal(size=(20, d)) * 4
    return (centres[g.integers(0, 20, n)] + g.normal(size=(n, d))).astype(np.float32)


def test_rule_follows_n():
    p = ann_params(100_000, "ivf", dim=512)
    assert (p.nlist, p.nprobe, p.store, p.train_size) == (1024, 16, "flat", 16_384)
    p = ann_params(1_000_000, "ivf", dim=512)
    assert (p.nlist, p.nprobe, p.store) == (4096, 16, "flat")
    assert ann_params(1_000_000, "ivf", dim=2048).store == "sq8"  # 8 GB of float32 > 4 GiB
    small = ann_params(500, "ivf")
    assert small.nlist <= 500 // 39 and small.nprobe <= small.nlist
    assert ann_params(10_000, "ivf", nprobe=3).nprobe == 3
    with pytest.raises(InputError, match="unknown ANN parameter"):
        ann_params(10_000, "ivf", probes=3)
    with pytest.raises(InputError, match="unknown IVF store 'pq'"):
        ann_params(10_000, "ivf", store="pq")


@pytest.mark.parametrize("params", [
    AnnParams(index="ivf", nlist=16, nprobe=4, train_size=1000),
    AnnParams(index="ivf", nlist=16, nprobe=4, train_size=1000, store="sq8"),
    AnnParams(index="hnsw", m=16, ef_search=64),
], ids=["ivf-flat", "ivf-sq8", "hnsw"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_recall_against_exact(params, metric):
    X = clustered(3000)
    exact, _ = knn(X, 10, index="exact", metric=metric)
    found, dist = knn_ann(X, 10, params, metric=metric)
    assert found.shape == (3000, 10) and found.dtype == np.int64
    assert (found != np.arange(3000)[:, None]).all()  # self excluded
    assert recall_at_k(found, exact) >= 0.9
    assert (np.diff(dist, axis=1) >= -1e-3).all()  # sorted by distance


def test_ivf_visiting_every_cell_is_exact():
    X = clustered(2000)
    exact, _ = knn(X, 5, index="exact")
    found, _ = knn_ann(X, 5, AnnParams(index="ivf", nlist=8, nprobe=8, train_size=2000))
    assert recall_at_k(found, exact) == 1.0


def test_memmap_and_chunks_give_the_same_neighbours(tmp_path, monkeypatch):
    X = clustered(3000)
    np.save(tmp_path / "x.npy", X.astype(np.float16))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    params = AnnParams(index="ivf", nlist=16, nprobe=4, train_size=1000, query_chunk=700)
    a, _ = knn_ann(X.astype(np.float16).astype(np.float32), 8, params)
    monkeypatch.setattr("lra_diffusion.features.CHUNK_BYTES", 4 * 16 * 333)  # 333-row chunks
    b, _ = knn_ann(mapped, 8, params)
    np.testing.assert_array_equal(a, b)
    rows = np.arange(0, 3000, 2)
    c, _ = knn(FeatureRows(mapped, rows), 8, index="exact")
    d, _ = knn(np.ascontiguousarray(mapped[rows], dtype=np.float32), 8, index="exact")
    np.testing.assert_array_equal(c, d)


def test_auto_is_exact_up_to_the_threshold(monkeypatch):
    X = clustered(400)
    exact, _ = knn(X, 5, index="exact")
    np.testing.assert_array_equal(knn(X, 5, index="auto")[0], exact)
    calls = []
    monkeypatch.setattr("lra_diffusion.retrieval.AUTO_EXACT_MAX", 100)
    real = knn_ann

    def spy(features, k, params, **kw):
        calls.append(params.index)
        return real(features, k, params, **kw)

    monkeypatch.setattr("lra_diffusion.retrieval.knn_ann", spy)
    knn(X, 5, index="auto")
    assert calls == ["ivf"] and AUTO_EXACT_MAX > 100


def test_missing_neighbours_fall_back_to_self():
    # one cell visited of 8, tiny cells: some rows find fewer than k others
    X = clustered(300)
    found, _ = knn_ann(X, 30, AnnParams(index="ivf", nlist=8, nprobe=1, train_size=300))
    assert (found >= 0).all() and (found < 300).all()


def test_unknown_index():
    with pytest.raises(InputError, match=r"unknown retrieval index 'lsh'; valid: \['auto', 'exact', 'hnsw', 'ivf'\]"):
        knn(clustered(50), 3, index="lsh")


def test_recall_at_k():
    exact = np.array([[1, 2], [3, 4]])
    assert recall_at_k(np.array([[2, 1], [3, 9]]), exact) == 0.75


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_streaming_exact_equals_in_memory_exact(tmp_path, exclude_self, metric):
    from lra_diffusion.retrieval import knn_streaming

    X = np.random.default_rng(3).normal(size=(777, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    ref_idx, ref_dist = knn(X, 6, index="exact", backend="torch", metric=metric, exclude_self=exclude_self)
    idx, dist = knn_streaming(mapped, 6, metric=metric, exclude_self=exclude_self, block_bytes=4 * 12 * 100)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(knn(mapped, 6, index="exact", metric=metric, exclude_self=exclude_self)[0], ref_idx)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_streaming_queries_equal_brute_force(metric):
    """Other rows as queries (the k rule's held-out rows): their neighbours among the rows, nothing excluded."""
    from lra_diffusion.retrieval import knn_streaming

    rng = np.random.default_rng(4)
    X, Q = rng.normal(size=(333, 7)).astype(np.float32), rng.normal(size=(41, 7)).astype(np.float32)
    both = np.concatenate([Q, X])
    idx, dist = knn_streaming(X, 5, queries=Q, metric=metric, block_bytes=4 * 7 * 50)
    assert idx.shape == dist.shape == (41, 5)
    # the same neighbours as among queries and rows together, less the queries themselves
    expect = [[j - len(Q) for j in row if j >= len(Q)][:5] for row in
              knn(both, 5 + len(Q), index="exact", backend="torch", metric=metric, exclude_self=False)[0][: len(Q)]]
    np.testing.assert_array_equal(idx, np.array(expect))


def test_cell_blocks_search_a_superset_of_each_rows_probes():
    """The dense per-cell search (flat store) compares each row with every row of the cells its cell's
    rows probe: never farther neighbours than faiss's own scan of the row's nprobe cells, and the
    same result however the blocks are split."""
    from lra_diffusion.retrieval import _build_ivf_self, _search_cells

    X = clustered(3000)
    flat = AnnParams(index="ivf", nlist=64, nprobe=3, train_size=3000)
    _, (cells, cell_dist) = _build_ivf_self(X, flat, metric="euclidean", progress=False)
    ours, ours_d = _search_cells(X, 9, cells, metric="euclidean", progress=False)
    small, small_d = _search_cells(X, 9, cells, metric="euclidean", progress=False, block_floats=5000)
    np.testing.assert_array_equal(ours, small)
    index, coarse = _build_ivf_self(X, flat.__class__(**{**flat.__dict__, "store": "sq8"}), metric="euclidean",
                                    progress=False)
    import faiss  # noqa: F401  (imported by the call above)

    scan = faiss.IndexIVFFlat(index.quantizer, X.shape[1], index.nlist)
    first = np.ascontiguousarray(cells[:, 0])  # a named array: swig_ptr does not keep it alive
    scan.add_core(len(X), faiss.swig_ptr(X), None, faiss.swig_ptr(first))
    scan.nprobe = 3
    theirs_d, _ = scan.search_preassigned(X, 9, cells, cell_dist)
    assert (ours_d[:, -1] <= theirs_d[:, -1] * (1 + 1e-4) + 1e-4).all()
    exact, _ = knn(X, 8, index="exact")
    assert recall_at_k(knn_ann(X, 8, flat)[0], exact) >= 0.9


def test_faiss_import_picks_the_openblas_kernels_and_leaves_the_environment(tmp_path):
    """OPENBLAS_CORETYPE set by the user is kept; otherwise it is set only for faiss's import."""
    import os
    import subprocess
    import sys

    code = ("import os\nfrom lra_diffusion.retrieval import import_faiss\nimport_faiss()\n"
            "print(os.environ.get('OPENBLAS_CORETYPE'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OPENBLAS_CORETYPE": "Haswell"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Haswell"
