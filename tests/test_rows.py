"""The rows a run trains and selects on: the noisy hold-out and the neighbours found once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion.config import Config
from lra_diffusion.distributed import Context
from lra_diffusion.errors import InputError
from lra_diffusion.rows import feature_stats, principal_projection, split_holdout, training_rows

from conftest import make_blobs


def test_split_holdout():
    g = torch.Generator().manual_seed(0)
    tr, va = split_holdout(100, 0.1, g)
    assert len(va) == 10 and len(tr) == 90
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    assert split_holdout(100, 0.0, g)[1] is None
    assert split_holdout(3, 0.5, g)[1] is None  # would leave fewer than 2 training rows
    a = split_holdout(50, 0.2, torch.Generator().manual_seed(1))
    b = split_holdout(50, 0.2, torch.Generator().manual_seed(1))
    assert np.array_equal(a[1], b[1])


def _rows(X, y, *, val=None, k=3, fraction=0.2, seed=0):
    config = Config().replace(retrieval={"k": k}, train={"val_fraction": fraction})
    vx, vy = val if val is not None else (None, None)
    return training_rows(X, y, int(y.max()) + 1, config, vx, vy, torch.Generator().manual_seed(seed),
                         torch.device("cpu"), Context())


def test_training_rows_hold_out_noisy_rows_and_find_neighbours_among_the_rest():
    X, y = make_blobs(n=60, d=4, classes=3, seed=0)
    rows = _rows(X, y)
    assert sorted(np.concatenate([rows.index, rows.val_index]).tolist()) == list(range(60))
    assert len(rows.val_index) == 12 and len(rows) == 48
    assert np.array_equal(rows.labels, y[rows.index]) and np.array_equal(rows.val_labels, y[rows.val_index])
    assert np.array_equal(rows.val_features, X[rows.val_index])
    assert rows.neighbours.shape == (48, 3)
    assert (rows.neighbours != np.arange(48)[:, None]).all()  # a row is not its own neighbour
    # the nearest other training row, by brute force
    xt = X[rows.index]
    d = ((xt[:, None] - xt[None]) ** 2).sum(-1) + np.diag(np.full(48, np.inf))
    assert np.array_equal(rows.neighbours[:, 0], d.argmin(1))
    assert np.array_equal(_rows(X, y).val_index, rows.val_index)  # seeded


def test_training_rows_with_validation_data_train_on_every_row():
    X, y = make_blobs(n=40, d=3, classes=2, seed=1)
    rows = _rows(X, y, val=(X[:5], y[:5]))
    assert rows.val_index is None and np.array_equal(rows.index, np.arange(40))
    with pytest.raises(InputError, match="give both"):
        _rows(X, y, val=(X[:5], None))



def _wide(n=200, d=120, seed=0):
    """n rows of d noise dimensions, two of them scaled up (the directions a projection must keep)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 5] *= 6.0
    X[:, 17] *= 4.0
    return X, rng.integers(0, 2, n)


@pytest.mark.floats
def test_principal_projection_keeps_the_directions_of_most_variance():
    X, _ = _wide()
    x = torch.from_numpy(X)
    mean, std, proj = principal_projection(x, 16)
    assert proj.shape == (120, 16)
    assert torch.allclose(proj.T @ proj, torch.eye(16), atol=1e-5)  # orthonormal columns
    # the two scaled-up directions come first, in order of variance
    assert abs(proj[5, 0]) > 0.95 and abs(proj[17, 1]) > 0.95  # a random direction: about 0.1
    assert torch.allclose(mean, x.mean(0), atol=1e-5)
    assert torch.allclose(std, ((x - mean) @ proj).std(0), rtol=1e-4)
    assert (std[:-1] >= std[1:] - 1e-5).all()  # descending variance


def wide_config(**model):
    return Config().replace(model={"input_rows_per_dim": 10.0, "input_min_rank": 8, **model},
                            retrieval={"k": 3}, train={"val_fraction": 0.2})


def wide_labels(seed: int, *, informative: bool):
    """600 rows, 1,000 dimensions. informative: 4 classes on 8 dimensions of large variance (30% of the
    labels random); else 2 classes on one low-variance dimension, which the top 48 directions miss."""
    rng = np.random.default_rng(seed)
    if informative:
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=600, n_features=1000, n_informative=8, n_redundant=0, n_classes=4,
                                   class_sep=2.0, random_state=seed)
        y = np.where(rng.random(600) < 0.3, rng.integers(0, 4, 600), y)
    else:
        X = rng.normal(size=(600, 1000))
        X[:, :150] *= 3.0
        y = (X[:, 990] > 0).astype(int)
    rows = training_rows(X.astype(np.float32), y, int(y.max()) + 1, wide_config(), None, None,
                         torch.Generator().manual_seed(0), torch.device("cpu"), Context())
    return rows, int(y.max()) + 1


def test_feature_stats_without_the_projection_are_the_plain_mean_and_std():
    X, y = _wide()
    rows = _rows(X, y)
    never = Config().replace(model={"input_rows_per_dim": 0.0})
    mean, std, proj, record = feature_stats(rows, never, num_classes=2)
    assert proj is None and record is None
    assert torch.equal(mean, rows.x.mean(0)) and torch.equal(std, rows.x.std(0))
    narrow = Config().replace(model={"input_rows_per_dim": 1.0})  # 160 rows: rank 160 >= 120 dims
    assert feature_stats(rows, narrow, num_classes=2)[2:] == (None, None)
    tiny = _rows(*_wide(n=50, d=120))  # 40 training rows: fewer than the rank, 64
    assert feature_stats(tiny, Config(), num_classes=2)[2:] == (None, None)
    # the default (10 rows a dimension, at least 64) makes it a candidate; random labels do not keep it
    mean, std, proj, record = feature_stats(rows, Config(), num_classes=2)
    assert record["rank"] == 64 and not record["kept"] and proj is None
    assert torch.equal(mean, rows.x.mean(0)) and torch.equal(std, rows.x.std(0))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_projection_is_kept_only_where_the_held_out_labels_clearly_prefer_it(seed):
    rows, classes = wide_labels(seed, informative=True)  # 480 training rows: rank 48
    mean, std, proj, record = feature_stats(rows, wide_config(), num_classes=classes)
    assert record["rank"] == 48 and record["kept"] and proj.shape == (1000, 48) and std.shape == (48,)
    assert record["projected_only"] > 2 * record["whole_only"]
    assert record["projected_val_accuracy"] > record["whole_val_accuracy"] + 0.1
    rows, classes = wide_labels(seed, informative=False)  # the class lies off the top directions
    mean, std, proj, record = feature_stats(rows, wide_config(), num_classes=classes)
    assert not record["kept"] and proj is None and std.shape == (1000,)
    assert record["whole_val_accuracy"] > record["projected_val_accuracy"] + 0.1
    assert feature_stats(rows, wide_config(input_min_rank=1000), num_classes=classes)[3] is None  # floor
