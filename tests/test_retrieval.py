"""Label retrieval: exact k-NN against brute force, and the neighbour-label draw and its weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion import retrieval
from lra_diffusion.errors import InputError
from lra_diffusion.retrieval import NeighbourLabelSampler, faiss_available, flip_concentration, knn, knn_torch

BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="no faiss"))]


def brute_force(X: np.ndarray, k: int, metric: str, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Full (N, N) squared-distance matrix in float64, argsorted."""
    X = X.astype(np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.floats
def test_knn_equals_brute_force(backend, metric, exclude_self):
    X = np.random.default_rng(0).normal(size=(150, 6)).astype(np.float32)
    idx, dist = knn(X, 7, metric=metric, backend=backend, exclude_self=exclude_self)
    ref_idx, ref_dist = brute_force(X, 7, metric, exclude_self)
    assert idx.shape == dist.shape == (150, 7) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    if not exclude_self:
        np.testing.assert_array_equal(idx[:, 0], np.arange(150))  # each point is its own nearest


@pytest.mark.floats
def test_knn_torch_chunking_does_not_change_the_result():
    X = np.random.default_rng(1).normal(size=(101, 5)).astype(np.float32)
    a = knn_torch(X, 4, chunk_size=7)
    b = knn_torch(X, 4, chunk_size=4096)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_self_with_exact_duplicates(backend):
    # pairs of identical rows: each row's nearest other row is its twin, never itself
    base = np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32)
    X = np.concatenate([base, base])
    idx, dist = knn(X, 1, backend=backend)
    twin = np.concatenate([np.arange(20, 40), np.arange(20)])
    np.testing.assert_array_equal(idx[:, 0], twin)
    assert (idx[:, 0] != np.arange(40)).all()
    np.testing.assert_allclose(dist, 0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_must_be_below_the_number_of_samples(backend):
    X = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    with pytest.raises(InputError, match="k=5 neighbours need more than 5 training samples, got 5"):
        knn(X, 5, backend=backend)
    with pytest.raises(InputError, match="k=9"):
        knn(X, 9, backend=backend)
    assert knn(X, 4, backend=backend)[0].shape == (5, 4)
    assert knn(X, 0, backend=backend)[0].shape == (5, 0)


@pytest.mark.parametrize("kwargs,message", [
    ({"k": -1}, "k must be >= 0"),
    ({"k": 2, "backend": "annoy"}, r"unknown retrieval backend 'annoy'; valid: \['auto', 'faiss', 'torch'\]"),
    ({"k": 2, "metric": "manhattan", "backend": "torch"}, r"unknown metric 'manhattan'; valid"),
])
def test_knn_bad_arguments(kwargs, message):
    X = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(InputError, match=message):
        knn(X, **kwargs)


def test_knn_rejects_1d_features():
    with pytest.raises(InputError, match="features must be 2-D"):
        knn(np.zeros(10, dtype=np.float32), 2, backend="torch")


# ---- the neighbour-label draw --------------------------------------------------------------------


@pytest.fixture()
def sampler() -> NeighbourLabelSampler:
    # sample 0 has label 0 and neighbours 1 (label 0) and 2 (label 1): candidates [0, 0, 1]
    labels = np.array([0, 0, 1])
    neighbours = np.array([[1, 2], [0, 2], [0, 1]])
    return NeighbourLabelSampler(labels, neighbours)


def test_candidates_are_own_label_then_neighbours(sampler):
    assert sampler.candidates.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]


def test_draw_frequencies_and_weights(sampler):
    index = torch.zeros(30_000, dtype=torch.int64)
    drawn, weights = sampler.sample(index, torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.int64 and weights.dtype == torch.float32
    assert (drawn == 0).float().mean().item() == pytest.approx(2 / 3, abs=0.01)
    assert (weights[drawn == 0] == 2).all() and (weights[drawn == 1] == 1).all()


def test_draws_depend_on_the_sample(sampler):
    drawn, weights = sampler.sample(torch.full((30_000,), 2), torch.Generator().manual_seed(0))
    assert (drawn == 1).float().mean().item() == pytest.approx(1 / 3, abs=0.01)  # candidates [1, 0, 0]
    assert (weights[drawn == 1] == 1).all() and (weights[drawn == 0] == 2).all()


def test_uniform_weights_when_weighting_is_off():
    s = NeighbourLabelSampler(np.array([0, 0, 1]), np.array([[1, 2], [0, 2], [0, 1]]), weighting=False)
    _, weights = s.sample(torch.zeros(100, dtype=torch.int64), torch.Generator().manual_seed(0))
    assert torch.equal(weights, torch.ones(100))


@pytest.mark.floats
def test_seed_fixes_the_draws(sampler):
    index = torch.tensor([0, 1, 2] * 100)
    a = sampler.sample(index, torch.Generator().manual_seed(3))
    b = sampler.sample(index, torch.Generator().manual_seed(3))
    c = sampler.sample(index, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_no_neighbours_draws_the_own_label():
    s = NeighbourLabelSampler(np.array([2, 0, 1]), np.zeros((3, 0), dtype=np.int64))
    drawn, weights = s.sample(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert drawn.tolist() == [2, 0, 1] and weights.tolist() == [1, 1, 1]


def test_agreement_and_vote_distribution(sampler):
    torch.testing.assert_close(sampler.agreement(), torch.tensor([2 / 3, 2 / 3, 1 / 3]))
    votes = sampler.vote_distribution(3)
    torch.testing.assert_close(votes, torch.tensor([[2 / 3, 1 / 3, 0], [2 / 3, 1 / 3, 0], [2 / 3, 1 / 3, 0]]))


def test_target_distribution_is_the_weighted_mean_of_the_draws(sampler):
    # candidates [0, 0, 1]: class 0 drawn 2/3 of the time with weight 2, class 1 1/3 with weight 1
    torch.testing.assert_close(sampler.target_distribution(3)[0], torch.tensor([0.8, 0.2, 0.0]))
    unweighted = NeighbourLabelSampler(np.array([0, 0, 1]), np.array([[1, 2], [0, 2], [0, 1]]), weighting=False)
    torch.testing.assert_close(unweighted.target_distribution(3), unweighted.vote_distribution(3))
    torch.testing.assert_close(sampler.target_distribution(3, np.array([2, 0])), sampler.target_distribution(3)[[2, 0]])
    # what the weighted squared error is minimised by: E[w y] / E[w] over the sampler's own draws
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    weighted = NeighbourLabelSampler(labels, rng.integers(0, 50, (50, 6)))
    g = torch.Generator().manual_seed(0)
    total, norm = torch.zeros(50, 4), torch.zeros(50, 1)
    for _ in range(4000):
        drawn, w = weighted.sample(torch.arange(50), g)
        total += w[:, None] * torch.nn.functional.one_hot(drawn, 4)
        norm += w[:, None]
    torch.testing.assert_close(total / norm, weighted.target_distribution(4), atol=0.04, rtol=0)


def test_neighbour_vote_takes_the_majority_and_breaks_ties_by_the_nearest():
    from lra_diffusion.retrieval import neighbour_vote

    labels = np.array([[1, 2, 2, 0], [3, 1, 1, 3], [0, 1, 2, 3], [4, 4, 4, 4]])
    assert neighbour_vote(labels).tolist() == [2, 3, 0, 4]


def test_flip_concentration_is_0_for_uniform_flips_and_1_for_pair_flips(monkeypatch):
    # every row's neighbours vote for its own class c = row % 3; labels: the vote, or a flip
    clean = np.arange(30) % 3
    neighbours = np.array([[j for j in range(30) if j % 3 == i % 3 and j != i] for i in range(30)])  # (30, 9)
    monkeypatch.setattr(retrieval, "FLIP_MIN_ROWS", 2)  # 6 of 30 rows flipped: two a class
    pair = clean.copy()
    pair[:6] = (clean[:6] + 1) % 3  # two rows of each class flipped, all to the next class
    assert flip_concentration(pair, neighbours, 3) == pytest.approx(1.0)
    uniform = clean.copy()
    uniform[:6] = (clean[:6] + np.array([1, 1, 1, 2, 2, 2])) % 3  # per class: one to each other class
    assert flip_concentration(uniform, neighbours, 3) == pytest.approx(0.0)
    assert flip_concentration(clean, neighbours, 3) is None  # no disagreement
    assert flip_concentration(clean % 2, neighbours, 2) is None  # two classes: every flip is a pair flip
    monkeypatch.setattr(retrieval, "FLIP_MIN_ROWS", 3)
    assert flip_concentration(pair, neighbours, 3) is None  # too few disagreeing rows to tell


def test_class_capped_k_allows_one_neighbour_per_three_rows_of_a_class():
    from lra_diffusion.retrieval import class_capped_k

    assert class_capped_k(10, 1_500, 77, 3.0) == 6  # 19.5 rows a class
    assert class_capped_k(10, 1_131, 10, 3.0) == 10  # 113 rows a class: no cap
    assert class_capped_k(10, 100, 100, 3.0) == 1  # never below one neighbour
    assert class_capped_k(0, 100, 100, 3.0) == 0  # no retrieval stays none
    assert class_capped_k(10, 100, 100, 0.0) == 10  # 0: no cap
