"""Raw pixels as features: flatten, standardise per coordinate, optionally PCA to ``pca_dim``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lra_diffusion.encoders.base import Encoder, ImageSource, num_images, take_images
from lra_diffusion.errors import InputError


class PixelEncoder(Encoder):
    """``uint8 (N, H, W, 3)`` -> ``float32 (N, H*W*3)`` standardised pixels, or ``(N, pca_dim)``.

    ``fit`` estimates the per-pixel mean and standard deviation (and the PCA basis) from at most
    ``n_stats`` of the given images; without ``fit`` pixels are only scaled to ``[0, 1]``.
    """

    name = "pixels"
    needs_fit = True

    def __init__(
        self,
        *,
        pca_dim: int | None = None,
        n_stats: int = 20_000,
        random_state: int = 0,
        batch_size: int = 1024,
        device: str = "cpu",
    ):
        if pca_dim is not None and pca_dim < 1:
            raise InputError(f"pixels: pca_dim must be >= 1 or None, got {pca_dim}")
        self.pca_dim = pca_dim
        self.n_stats = n_stats
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device

    @property
    def dim(self) -> int:
        if self.pca_dim is not None:
            return self.pca_dim
        if not hasattr(self, "mean_"):
            raise InputError("pixels: dim is known only after fit (it depends on the image size)")
        return int(self.mean_.numel())

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "mean_")

    def config(self) -> dict[str, Any]:
        return {
            "pca_dim": self.pca_dim,
            "n_stats": self.n_stats,
            "random_state": self.random_state,
            "batch_size": self.batch_size,
            "device": self.device,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"mean": self.mean_, "scale": self.scale_}
        if self.pca_dim is not None:
            out["components"] = self.components_
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> PixelEncoder:
        enc = cls(**config)
        enc.mean_, enc.scale_ = tensors["mean"], tensors["scale"]
        if enc.pca_dim is not None:
            enc.components_ = tensors["components"]
        return enc

    @torch.no_grad()
    def fit(self, images: ImageSource) -> PixelEncoder:
        """Per-pixel mean / std (and PCA basis) from up to ``n_stats`` unlabelled images."""
        n = num_images(images)
        rng = np.random.default_rng(self.random_state)
        which = np.sort(rng.choice(n, size=min(n, self.n_stats), replace=False))
        x = torch.from_numpy(take_images(images, which).reshape(len(which), -1)).double() / 255.0
        self.mean_ = x.mean(0).float()
        self.scale_ = x.std(0).clamp_min(1e-3).float()
        if self.pca_dim is not None:
            if self.pca_dim > min(x.shape):
                raise InputError(
                    f"pixels: pca_dim={self.pca_dim} exceeds min(images, pixels)={min(x.shape)}"
                )
            z = (x - self.mean_.double()) / self.scale_.double()
            _, _, vh = torch.linalg.svd(z, full_matrices=False)
            # (pca_dim, H*W*3); LAPACK's Vh is column-major, stored row-major (Encoder.__setattr__)
            self.components_ = vh[: self.pca_dim].float()
        return self

    def _encode_batch(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch.reshape(len(batch), -1)).to(self.device).float() / 255.0
        if x.shape[1] != self.mean_.numel():
            raise InputError(
                f"pixels: fitted on {self.mean_.numel()} values per image, got {x.shape[1]}"
            )
        z = (x - self.mean_.to(x.device)) / self.scale_.to(x.device)
        if self.pca_dim is not None:
            z = z @ self.components_.to(x.device).T
        return z
