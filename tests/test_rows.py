"""The rows a run trains and selects on: the noisy hold-out and the neighbours found once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion.config import Config
from lra_diffusion.distributed import Context
from lra_diffusion.errors import InputError
from lra_diffusion.rows import split_holdout, training_rows

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


@pytest.mark.floats


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
