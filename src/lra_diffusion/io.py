"""Atomic file writes, our safetensors files, canonical tensor layout, and validated array loading.

Every file this package writes goes through :func:`atomic_write`: a temporary file in the same folder,
flushed and fsynced, then renamed over the target. A killed process leaves either the old file or the
new one, never half of one; a failed write (disk full, permission) removes its temporary file.

Every tensor we save, load or keep as fitted state goes through :func:`canonical`, so a fitted object
and its reloaded copy hold tensors of the same dtype, shape, strides and alignment: BLAS picks its
kernel from the operands' layout, and two kernels may round the same product differently in the last
bit (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import InputError


def atomic_write(path: str | Path, data: bytes | Callable[[Any], None]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file object) to ``path`` atomically."""
    path = Path(path)
    if path.exists() and not path.is_file():  # never rename over a folder, a device (/dev/full), a pipe
        raise InputError(f"cannot write {path}: it exists and is not a regular file")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist") from None
    except PermissionError:
        raise InputError(f"cannot write {path}: permission denied") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (atomically): NaN and infinities, which ``json`` would write as the
    non-standard ``NaN`` / ``Infinity`` (e.g. an AUROC on labels without an error), become ``null``."""
    atomic_write(path, (json.dumps(finite_or_none(obj), indent=2, sort_keys=False, allow_nan=False) + "\n").encode())


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float, in nested dicts, lists and tuples too, replaced by None."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def read_json(path: str | Path) -> Any:
    """The JSON file ``path``; a missing or malformed file raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


# Fresh CPU allocations in torch are 64-byte aligned; safetensors hands back views into its buffer that
# are only 8-byte aligned. MKL documents alignment as one of the things its kernel choice (and so its
# rounding) may depend on, so canonical tensors own aligned memory too.
ALIGNMENT = 64


def row_major_strides(shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """The strides of a freshly allocated C-contiguous tensor of ``shape``: ``(3, 4) -> (4, 1)``."""
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def is_canonical(t: torch.Tensor) -> bool:
    """Whether ``t`` has row-major strides and 64-byte aligned data (what :func:`canonical` returns)."""
    return t.stride() == row_major_strides(t.shape) and (t.numel() == 0 or t.data_ptr() % ALIGNMENT == 0)


def canonical(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, with row-major strides and aligned data; dtype, shape, values and device kept.

    Returns ``t.detach()`` itself when it is already canonical, else a copy. ``contiguous()`` is not
    enough: it keeps a column-major slice's strides when a dimension has size 1 and keeps unaligned
    views. Use it on every tensor that is set as fitted state, saved or loaded, so that a fitted and a
    reloaded object compute with the same kernels and give the same bits.
    """
    t = t.detach()
    if is_canonical(t):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def canonical_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`canonical` of every value."""
    return {k: canonical(v) for k, v in tensors.items()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Save tensors (and JSON-able ``meta``) as one safetensors file, atomically."""
    tensors = {k: canonical(v.cpu()) for k, v in tensors.items()}
    atomic_write(path, st_save(tensors, metadata={"meta": json.dumps(meta or {})}))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; a missing, truncated or foreign file raises InputError.

    The tensors come back :func:`canonical` (own, aligned, row-major memory).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("meta", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError, OverflowError) as e:
        raise InputError(f"{path} is not a valid safetensors file (truncated or corrupt?): {e}") from None
    return canonical_dict(tensors), meta


def sha256_array(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (used to record and check a run's inputs)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def load_array(path: str | Path, *, what: str) -> np.ndarray:
    """Load a ``.npy`` array a user gave us (no pickles), turning every failure into one clear line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} file {path} is a directory, expected a .npy file")
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.suffix != ".npy":
        raise InputError(f"{what} file {path} must be a .npy file (got {path.suffix or 'no extension'})")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    if magic != b"\x93NUMPY":  # else np.load would try (and refuse) to unpickle it
        raise InputError(f"{what} file {path} is not a .npy file (no NumPy header{'; empty file' if not magic else ''})")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise InputError(f"{what} file {path} holds Python objects; expected a numeric array") from None
        raise InputError(f"{what} file {path} is not a valid .npy file (truncated?): {e}") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{what} file {path} cannot be read as .npy (truncated or not .npy?): {e}") from None
