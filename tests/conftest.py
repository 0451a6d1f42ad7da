"""Tiny shared fixtures for the core tests: a small config and a small, learnable dataset.

Keep this file small; module-specific helpers live in their test modules.
"""

from __future__ import annotations

import numpy as np
import pytest

from lra_diffusion.config import Config

# A config small enough that a fit takes well under a second on one CPU thread.
TINY = {
    "diffusion": {"timesteps": 50, "ddim_steps": 5},
    "model": {"feature_dim": 16},
    "retrieval": {"k": 5},
    "train": {"epochs": 3, "batch_size": 32},
}


@pytest.fixture()
def tiny_config() -> Config:
    return Config.from_dict(TINY)


def make_blobs(n: int = 240, d: int = 8, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 points (N, D) in ``classes`` well-separated Gaussian blobs, labels 0..C-1 (N,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, d))
    y = np.arange(n) % classes
    X = centres[y] + rng.normal(size=(n, d))
    return X.astype(np.float32), y.astype(np.int64)


def weak_neighbours(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes split by the sign of one feature, with 40 wide noise features: a linear prior finds
    the split, while the nearest neighbours are decided by the noise (a weak encoder's feature space)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.concatenate([(2 * y - 1)[:, None] * 2.0 + rng.normal(size=(n, 1)), rng.normal(scale=3.0, size=(n, 40))], 1)
    return X.astype(np.float32), y.astype(np.int64)


@pytest.fixture()
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs()
