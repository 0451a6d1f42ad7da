"""Feature matrices larger than memory: a memory-mapped ``.npy`` read in chunks, never whole.

Everything here works the same on an in-memory array and on ``np.load(path, mmap_mode="r")``: the
statistics, checks and hashes stream over row chunks of about :data:`CHUNK_BYTES`, and a training batch
is gathered row by row. float16 files are accepted; each chunk or batch is widened to float32 on the way.

Memory: a chunk is at most ``CHUNK_BYTES`` of float32 (64 MB), so these functions need that much on
top of their results, whatever N is. The pages of a mapped file that were read stay in the OS page
cache and show up in the resident size as *file-backed* pages, which the kernel drops under pressure;
they are not copies (see docs/scale.md).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import InputError


CHUNK_BYTES = 64 * 2**20  # float32 bytes per chunk


def chunk_rows(dim: int, chunk_bytes: int | None = None) -> int:
    """Rows per chunk so that a float32 chunk of width ``dim`` holds about ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`, read at each call)."""
    return max(1, (chunk_bytes or CHUNK_BYTES) // (4 * max(1, dim)))


def float_tensor(a) -> torch.Tensor:
    """``a`` (array-like, or a tensor) as a float32 tensor, sharing its memory where it already is float32.
    A read-only array (a memory map opened with ``mmap_mode="r"``) is shared too: no caller writes into
    the features, so torch's warning about non-writable arrays would only alarm the user."""
    if isinstance(a, torch.Tensor):
        return a.to(torch.float32)
    arr = np.asarray(a, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def open_features(path: str | Path, *, what: str = "features") -> np.ndarray:
    """A 2-D numeric ``.npy`` memory-mapped read-only (``np.memmap``); nothing is read yet."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".npy":
        raise InputError(f"{what} file {path} must be an existing .npy file")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # pickled objects, a truncated file
        raise InputError(f"{what} file {path} cannot be memory-mapped as a numeric .npy: {e}") from None
    except OSError as e:
        raise InputError(f"{what} file {path} cannot be read as .npy: {e}") from None
    if a.ndim != 2 or a.dtype.kind not in "biuf" or len(a) == 0:
        raise InputError(f"{what} in {path} must be a non-empty 2-D (N, D) numeric array, got {a.dtype} {a.shape}")
    return a


def is_mapped(a) -> bool:
    """True if ``a`` (or the array it is a view of) is a memory-mapped file."""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)
        if not isinstance(a, np.ndarray):
            return False
    return False


class FeatureRows:
    """Rows ``rows`` (None = all) of a feature array, read as float32 in chunks or batches.

    The array is never copied whole: slicing returns a float32 copy of just those rows, so retrieval
    and statistics can stream over a memory-mapped file. ``shape``, ``len`` and ``dtype`` are those of
    the float32 view.

    Parameters
    ----------
    array : (N, D) float32 / float16 (or any numeric) array, in memory or memory-mapped.
    rows : (n,) int row indices into ``array`` (sorted is best for a mapped file), or None for all N.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray | None = None):
        if array.ndim != 2:
            raise InputError(f"features must be 2-D (N, D), got shape {tuple(array.shape)}")
        self.array = array
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(array) if self.rows is None else len(self.rows)
        self.shape = (n, array.shape[1])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        """``rows[a:b]`` or ``rows[index_array]`` as a float32 (len, D) array (a copy of those rows only)."""
        if self.rows is None:
            part = self.array[key]
        elif isinstance(key, slice):
            part = self.array[self.rows[key]]
        else:
            part = self.array[self.rows[np.asarray(key)]]
        return np.ascontiguousarray(part, dtype=np.float32)

    def gather(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The batch of rows ``index`` (B,) as a float32 CPU tensor (B, D)."""
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return torch.from_numpy(self[idx])

    def chunks(self, size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, float32 chunk)`` over all rows in order; chunks of ``size`` rows (default: 64 MB)."""
        size = size or chunk_rows(self.shape[1])
        for start in range(0, len(self), size):
            yield start, self[start : start + size]

    def subsample(self, seed: int, max_rows: int | None = None) -> np.ndarray:
        """Sorted indices of a seeded uniform subsample of at most ``max_rows`` rows (default: one
        chunk's worth, :func:`chunk_rows`), for fits that need their rows in memory."""
        n = len(self)
        m = min(n, max_rows or chunk_rows(self.shape[1]))
        return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))

    def to_numpy(self) -> np.ndarray:
        """The whole float32 matrix in memory (only for arrays known to fit)."""
        return self[:]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and (unbiased) standard deviation (D,), float32, in two chunked passes.

        Sums accumulated in float64 over float32 deviations; std is 1 for a single row.
        """
        n, d = self.shape
        total = np.zeros(d)
        for _, c in self.chunks():
            total += c.sum(0, dtype=np.float64)
        mean = total / max(n, 1)
        sq = np.zeros(d)
        mean32 = mean.astype(np.float32)
        for _, c in self.chunks():
            dev = c - mean32  # float32 temporaries: two chunks, not four float64 ones
            sq += (dev * dev).sum(0, dtype=np.float64)
        std = np.sqrt(sq / (n - 1)) if n > 1 else np.ones(d)
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))

    def first_nonfinite_row(self) -> int | None:
        """The first row holding NaN or inf, or None."""
        for start, c in self.chunks():
            bad = ~np.isfinite(c).all(axis=1)
            if bad.any():
                return start + int(np.argmax(bad))
        return None

    def sha256(self) -> str:
        """:func:`lra_diffusion.io.sha256_array` of the float32 rows, computed chunk by chunk (same digest)."""
        h = hashlib.sha256()
        h.update(str((self.dtype.str, self.shape)).encode())
        for _, c in self.chunks():
            h.update(memoryview(c).cast("B"))
        return h.hexdigest()


def as_rows(features: np.ndarray | torch.Tensor | FeatureRows) -> FeatureRows:
    """Wrap an array or tensor as :class:`FeatureRows` (a :class:`FeatureRows` passes through)."""
    if isinstance(features, FeatureRows):
        return features
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    return FeatureRows(features if isinstance(features, np.ndarray) else np.asarray(features))


def map_chunks(fn, features: np.ndarray | FeatureRows, rows_per_call: int = 16 * 4096) -> torch.Tensor:
    """``fn`` over row chunks of ``features``, results concatenated along dim 0.

    An in-memory array goes to ``fn`` whole (as before); :class:`FeatureRows` (a mapped file) in chunks
    of ``rows_per_call`` rows, a multiple of the predictors' 4096-row batches, so a deterministic
    prediction is the same either way.
    """
    if not isinstance(features, FeatureRows):
        return fn(features)
    return torch.cat([fn(chunk) for _, chunk in features.chunks(rows_per_call)])
