"""Label retrieval: exact k nearest neighbours in f_p space and the neighbour-label draw.

The neighbours are computed once for the training set (f_p is frozen). At every visit of sample i one
label is drawn uniformly from its k+1 candidates (its own noisy label and its k neighbours' labels);
the sample's loss weight is the number of candidates equal to the draw.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import InputError

Metric = Literal["euclidean", "cosine"]


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _prepare(features: np.ndarray | torch.Tensor, metric: Metric) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
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


def knn_faiss(
    features: np.ndarray | torch.Tensor, k: int, *, metric: Metric = "euclidean", exclude_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN through faiss (``IndexFlatL2``). Same return as :func:`knn_torch`."""
    import faiss

    x = np.ascontiguousarray(_prepare(features, metric).numpy())
    kk = k + 1 if exclude_self else k
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, idx = index.search(x, kk)
    if exclude_self:
        return _drop_self(idx.astype(np.int64), dist, k)
    return idx.astype(np.int64), dist


def knn(
    features: np.ndarray | torch.Tensor,
    k: int,
    *,
    metric: Metric = "euclidean",
    backend: Literal["auto", "torch", "faiss"] = "auto",
    exclude_self: bool = True,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among all rows. Returns ``(indices, sq_distances)`` (N, k).

    ``backend="auto"`` uses chunked torch matmul on ``device`` when that is a GPU, else faiss when it
    is installed, else chunked torch matmul on the CPU. faiss (the CPU build) ignores ``device``.
    """
    n = len(features)
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    if k >= n:
        raise InputError(f"k={k} neighbours need more than {k} training samples, got {n}")
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
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

    def vote_distribution(self, num_classes: int) -> torch.Tensor:
        """(N, C) frequencies of each class among the k+1 candidates (the retrieval's label distribution)."""
        counts = torch.zeros(len(self.candidates), num_classes)
        counts.scatter_add_(1, self.candidates, torch.ones_like(self.candidates, dtype=torch.float32))
        return counts / self.candidates.shape[1]
