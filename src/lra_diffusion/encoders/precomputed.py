"""Bring-your-own features: a ``.npy`` / ``.npz`` / ``.safetensors`` array with one row per image."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from lra_diffusion.encoders.base import Encoder, ImageSource, num_images
from lra_diffusion.errors import InputError

SUFFIXES = (".npy", ".npz", ".safetensors")


def load_feature_file(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Read a ``(N, D)`` floating-point feature array; ``.npy`` files are memory-mapped.

    ``key`` picks the array inside an ``.npz`` / ``.safetensors`` file holding several.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"precomputed: feature file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise InputError(f"precomputed: cannot read {p}: {e}") from None
    elif suffix in (".npz", ".safetensors"):
        arrays = _read_archive(p, suffix)
        if key is None:
            if len(arrays) != 1:
                raise InputError(
                    f"precomputed: {p} holds {len(arrays)} arrays {sorted(arrays)}; choose one "
                    "with key=..."
                )
            key = next(iter(arrays))
        if key not in arrays:
            raise InputError(f"precomputed: {p} has no array {key!r}; it has {sorted(arrays)}")
        arr = arrays[key]
    else:
        raise InputError(f"precomputed: {p} must end in one of {', '.join(SUFFIXES)}")
    if arr.ndim != 2:
        raise InputError(f"precomputed: features in {p} must be 2-D (N, D), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"precomputed: features in {p} must be floating point, got {arr.dtype}")
    return arr


def _read_archive(p: Path, suffix: str) -> dict[str, np.ndarray]:
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        from safetensors.numpy import load_file

        return dict(load_file(str(p)))
    except Exception as e:  # corrupt archive: name the file, one line
        raise InputError(f"precomputed: cannot read {p}: {type(e).__name__}: {e}") from None


class PrecomputedEncoder(Encoder):
    """Features a user computed elsewhere, aligned row by row with the dataset.

    ``encode(images)`` checks that ``len(images)`` equals the number of feature rows and returns the
    rows (as float32); the images themselves are not decoded.
    """

    name = "precomputed"

    def __init__(self, *, path: str | os.PathLike[str], key: str | None = None):
        self.path = str(path)
        self.key = key
        self.features_ = load_feature_file(path, key)
        if not np.isfinite(self.features_[: min(len(self.features_), 100_000)]).all():
            raise InputError(f"precomputed: features in {path} contain NaN or infinity")

    @property
    def dim(self) -> int:
        return int(self.features_.shape[1])

    def config(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key}

    def fingerprint(self) -> str:
        """Hash of the file content, so replacing the file invalidates cached features."""
        h = hashlib.sha256(f"{self.name}:{self.key}".encode())
        with open(self.path, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
        return h.hexdigest()[:16]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        raise InputError("precomputed: features are already on disk; nothing to save")

    def encode_slice(
        self,
        images: ImageSource,
        start: int,
        stop: int,
        *,
        batch_size: int | None = None,
        bar: Any = None,
    ) -> np.ndarray:
        """Rows ``start:stop`` as float32 after checking ``len(images)`` equals the row count."""
        n = num_images(images)
        if n != len(self.features_):
            raise InputError(
                f"precomputed: {self.path} has {len(self.features_)} rows but the dataset has "
                f"{n} images"
            )
        out = np.asarray(self.features_[start:stop], dtype=np.float32)
        if bar is not None:
            bar.update(len(out))
        return out
