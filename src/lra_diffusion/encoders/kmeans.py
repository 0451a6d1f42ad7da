"""Single-layer unsupervised k-means features (Coates, Lee & Ng, AISTATS 2011).

The pipeline of the paper's section 3, learned from unlabelled images only:

1. ``n_patches`` random ``w x w`` RGB patches (``w = patch_size``, 6 by default);
2. per-patch contrast normalisation ``x_n = (p - mean(p)) / sqrt(var(p) + norm_eps)`` in 0..255 units;
3. ZCA whitening ``x_w = P (x_n - M)`` with ``P = V (D + whiten_eps)^-1/2 V^T``;
4. a k-means dictionary ``c_1..c_K`` of the whitened patches (spherical init from data points);
5. for every dense patch (stride 1) the "triangle" activation ``f_k = max(0, mean_j(z_j) - z_k)``
   with ``z_k = ||x_w - c_k||``;
6. sum-pooling of the ``K`` activation maps over a ``pool_grid x pool_grid`` grid (2 = the four
   quadrants of the paper), giving ``pool_grid**2 * K`` features;
7. a square root of the pooled sums (``sqrt_pool``, on by default: it damps the burstiness of
   sum-pooling and gained about a point of linear-probe accuracy on CIFAR-10, see BENCHMARKS.md),
   a per-feature standardisation and optionally a PCA to ``pca_dim``, the last two estimated from
   ``n_stats`` of the fit images.

Step 5 is written as convolutions so a whole batch is encoded at once: the whitening matrix is folded
into ``patch_dim`` convolution filters (``P p`` for every patch ``p``), the patch mean and energy are
box-filter convolutions, and the distances to the centroids are one batched matrix product.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lra_diffusion.encoders.base import (
    Encoder,
    ImageSource,
    image_batches,
    num_images,
    take_images,
    to_float_nchw,
)
from lra_diffusion.errors import InputError


class KMeansEncoder(Encoder):
    """Coates-Lee-Ng k-means features: ``uint8 (N, H, W, 3)`` -> ``float32 (N, D)``.

    ``D = pool_grid**2 * n_centroids`` (6,400 by default), or ``pca_dim`` when set.
    """

    name = "kmeans"
    needs_fit = True

    def __init__(
        self,
        *,
        n_centroids: int = 1600,
        patch_size: int = 6,
        n_patches: int = 400_000,
        kmeans_iters: int = 50,
        pool_grid: int = 2,
        norm_eps: float = 10.0,
        whiten_eps: float = 0.1,
        sqrt_pool: bool = True,
        standardize: bool = True,
        pca_dim: int | None = None,
        n_stats: int = 5000,
        random_state: int = 0,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        self.n_centroids = n_centroids
        self.patch_size = patch_size
        self.n_patches = n_patches
        self.kmeans_iters = kmeans_iters
        self.pool_grid = pool_grid
        self.norm_eps = norm_eps
        self.whiten_eps = whiten_eps
        self.sqrt_pool = sqrt_pool
        self.standardize = standardize
        self.pca_dim = pca_dim
        self.n_stats = n_stats
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device
        for key in ("n_centroids", "patch_size", "n_patches", "pool_grid", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"kmeans: {key} must be >= 1, got {getattr(self, key)}")
        if pca_dim is not None and pca_dim < 1:
            raise InputError(f"kmeans: pca_dim must be >= 1 or None, got {pca_dim}")

    # -- state ---------------------------------------------------------------------------------
    @property
    def pooled_dim(self) -> int:
        return self.pool_grid**2 * self.n_centroids

    @property
    def dim(self) -> int:
        return self.pca_dim if self.pca_dim is not None else self.pooled_dim

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "centroids_")

    def config(self) -> dict[str, Any]:
        return {
            "n_centroids": self.n_centroids,
            "patch_size": self.patch_size,
            "n_patches": self.n_patches,
            "kmeans_iters": self.kmeans_iters,
            "pool_grid": self.pool_grid,
            "norm_eps": self.norm_eps,
            "whiten_eps": self.whiten_eps,
            "sqrt_pool": self.sqrt_pool,
            "standardize": self.standardize,
            "pca_dim": self.pca_dim,
            "n_stats": self.n_stats,
            "random_state": self.random_state,
            "batch_size": self.batch_size,
            "device": self.device,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"whiten": self.whiten_, "patch_mean": self.patch_mean_, "centroids": self.centroids_}
        if self.standardize:
            out["feature_mean"] = self.feature_mean_
            out["feature_scale"] = self.feature_scale_
        if self.pca_dim is not None:
            out["pca_mean"] = self.pca_mean_
            out["pca_components"] = self.pca_components_
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> KMeansEncoder:
        enc = cls(**config)
        enc.whiten_ = tensors["whiten"]
        enc.patch_mean_ = tensors["patch_mean"]
        enc.centroids_ = tensors["centroids"]
        if enc.standardize:
            enc.feature_mean_ = tensors["feature_mean"]
            enc.feature_scale_ = tensors["feature_scale"]
        if enc.pca_dim is not None:
            enc.pca_mean_ = tensors["pca_mean"]
            enc.pca_components_ = tensors["pca_components"]
        return enc

    # -- fit -----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, images: ImageSource) -> KMeansEncoder:
        """Learn whitening, dictionary and feature statistics from unlabelled ``images``."""
        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator().manual_seed(self.random_state)
        patches = self._random_patches(images, rng)  # (n_patches, patch_dim) float64
        patches = normalize_patches(patches, self.norm_eps)
        mean = patches.mean(axis=0)
        cov = np.cov(patches, rowvar=False)
        eigval, eigvec = np.linalg.eigh(cov)
        whiten = (eigvec / np.sqrt(eigval + self.whiten_eps)) @ eigvec.T  # symmetric ZCA matrix
        white = torch.from_numpy(((patches - mean) @ whiten).astype(np.float32))
        del patches
        self.whiten_ = torch.from_numpy(whiten.astype(np.float32))
        self.patch_mean_ = torch.from_numpy(mean.astype(np.float32))
        self.centroids_ = spherical_init_kmeans(white, self.n_centroids, self.kmeans_iters, gen)
        del white
        self._fit_feature_stats(images, rng)
        return self

    def _random_patches(self, images: ImageSource, rng: np.random.Generator) -> np.ndarray:
        n = num_images(images)
        w = self.patch_size
        # Draw patches from at most 10,000 distinct images so a dataset need not be read whole.
        which = np.sort(rng.choice(n, size=min(n, 10_000), replace=False))
        pool = take_images(images, which)
        _, h, wd, _ = pool.shape
        if h < w or wd < w:
            raise InputError(f"kmeans: images {h}x{wd} are smaller than patch_size={w}")
        idx = rng.integers(0, len(pool), self.n_patches)
        r = rng.integers(0, h - w + 1, self.n_patches)
        c = rng.integers(0, wd - w + 1, self.n_patches)
        dr, dc = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
        p = pool[idx[:, None, None], r[:, None, None] + dr, c[:, None, None] + dc]  # (n, w, w, 3)
        # channel-major (3, w, w) flattening, the layout of a conv2d weight
        return p.transpose(0, 3, 1, 2).reshape(self.n_patches, -1).astype(np.float64)

    def _fit_feature_stats(self, images: ImageSource, rng: np.random.Generator) -> None:
        if not self.standardize and self.pca_dim is None:
            return
        n = num_images(images)
        which = np.sort(rng.choice(n, size=min(n, self.n_stats), replace=False))
        sample = take_images(images, which)
        feats = torch.cat([self._pooled(b) for b in image_batches(sample, self.batch_size)])
        feats = feats.double()
        if self.standardize:
            self.feature_mean_ = feats.mean(0).float()
            # Coates et al. add 0.01 to the variance; pooled sums are large, so it only guards 0.
            self.feature_scale_ = (feats.var(0) + 0.01).sqrt().float()
            feats = (feats - self.feature_mean_.double()) / self.feature_scale_.double()
        if self.pca_dim is not None:
            if self.pca_dim > min(feats.shape):
                raise InputError(
                    f"kmeans: pca_dim={self.pca_dim} exceeds min(n_stats, features)={min(feats.shape)}"
                )
            mean = feats.mean(0)
            _, _, vh = torch.linalg.svd(feats - mean, full_matrices=False)
            self.pca_mean_ = mean.float()
            # (pca_dim, pooled_dim); LAPACK's Vh is column-major, stored row-major (Encoder.__setattr__)
            self.pca_components_ = vh[: self.pca_dim].float()

    # -- encode --------------------------------------------------------------------------------
    def _pooled(self, batch: np.ndarray) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> pooled triangle activations ``(B, pool_grid**2 * K)``."""
        x = to_float_nchw(batch, self.device) - 128.0  # centring keeps float32 sums accurate
        w = self.patch_size
        if x.shape[2] < w or x.shape[3] < w:
            raise InputError(f"kmeans: images {tuple(x.shape[2:])} are smaller than {w}x{w}")
        whiten = self.whiten_.to(x.device)
        centroids = self.centroids_.to(x.device)
        patch_dim = whiten.shape[0]
        # P p for every patch p: the whitening matrix as patch_dim conv filters.
        proj = F.conv2d(x, whiten.reshape(patch_dim, 3, w, w))  # (B, patch_dim, h, w)
        box = torch.ones(1, 3, w, w, device=x.device)
        s1 = F.conv2d(x, box)  # sum of each patch
        s2 = F.conv2d(x * x, box)  # sum of squares
        mean = s1 / patch_dim
        var = (s2 - patch_dim * mean * mean) / (patch_dim - 1)  # unbiased, as MATLAB's var
        scale = (var.clamp_min(0) + self.norm_eps).rsqrt()
        # P (x_n - M) with x_n = (p - mean) / sd
        white = (proj - mean * whiten.sum(1).view(1, -1, 1, 1)) * scale
        white -= (whiten @ self.patch_mean_.to(x.device)).view(1, -1, 1, 1)
        b, _, h, wd = white.shape
        white = white.reshape(b, patch_dim, h * wd)
        # squared distances ||x_w||^2 + ||c_k||^2 - 2 c_k . x_w, shape (B, K, h*w)
        c2 = (centroids * centroids).sum(1).view(1, -1, 1)
        x2 = (white * white).sum(1, keepdim=True)
        z = torch.baddbmm(c2 + x2, centroids.expand(b, -1, -1), white, alpha=-2.0)
        z = z.clamp_min_(0).sqrt_()
        act = z.sub_(z.mean(1, keepdim=True)).neg_().clamp_min_(0)  # max(0, mean_j z_j - z_k)
        pooled = act @ pooling_matrix(h, wd, self.pool_grid, x.device)  # (B, K, g*g)
        pooled = pooled.transpose(1, 2).reshape(b, -1)
        if self.sqrt_pool:
            pooled = pooled.sqrt()
        return pooled

    def _encode_batch(self, batch: np.ndarray) -> torch.Tensor:
        feats = self._pooled(batch)
        if self.standardize:
            feats = (feats - self.feature_mean_.to(feats.device)) / self.feature_scale_.to(
                feats.device
            )
        if self.pca_dim is not None:
            feats = (feats - self.pca_mean_.to(feats.device)) @ self.pca_components_.to(
                feats.device
            ).T
        return feats


def normalize_patches(patches: np.ndarray, eps: float) -> np.ndarray:
    """Per-patch contrast normalisation ``(p - mean(p)) / sqrt(var(p) + eps)``, rows ``(n, d)``."""
    mean = patches.mean(axis=1, keepdims=True)
    var = patches.var(axis=1, ddof=1, keepdims=True)
    return (patches - mean) / np.sqrt(var + eps)


def spherical_init_kmeans(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator, chunk: int = 65_536
) -> torch.Tensor:
    """Lloyd's k-means on rows of ``x (n, d)``; returns centroids ``(k, d)``.

    Centroids start at ``k`` distinct random rows; a cluster that empties is re-seeded with a random
    row (Coates et al. zero it instead, which wastes the centroid).
    """
    n = x.shape[0]
    if n < k:
        raise InputError(f"kmeans: n_patches={n} must be >= n_centroids={k}")
    centroids = x[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in range(iters):
        sums = torch.zeros_like(centroids, dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        half_c2 = 0.5 * (centroids * centroids).sum(1)
        for lo in range(0, n, chunk):
            xb = x[lo : lo + chunk]
            assign = (xb @ centroids.T - half_c2).argmax(1)
            sums.index_add_(0, assign, xb.double())
            counts += torch.bincount(assign, minlength=k).double()
        empty = counts == 0
        centroids = (sums / counts.clamp_min(1).unsqueeze(1)).float()
        if empty.any():
            centroids[empty] = x[torch.randint(0, n, (int(empty.sum()),), generator=generator)]
    return centroids


def pooling_matrix(h: int, w: int, grid: int, device: torch.device | str) -> torch.Tensor:
    """``(h*w, grid*grid)`` 0/1 matrix summing an ``h x w`` map over a ``grid x grid`` partition.

    Boundaries round half up, as MATLAB's ``round`` in the reference code (27 rows -> 14 + 13).
    """
    rows = _bin_index(h, grid)
    cols = _bin_index(w, grid)
    cell = (rows[:, None] * grid + cols[None, :]).reshape(-1)
    return F.one_hot(cell, grid * grid).float().to(device)


def _bin_index(n: int, grid: int) -> torch.Tensor:
    edges = [math.floor(i * n / grid + 0.5) for i in range(grid + 1)]
    idx = torch.empty(n, dtype=torch.long)
    for g in range(grid):
        idx[edges[g] : edges[g + 1]] = g
    return idx
