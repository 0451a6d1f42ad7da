"""Label files: the paper's PMD files, CIFAR-10N / CIFAR-100N, and users' own files.

Every loader returns an int64 array aligned with the dataset index (``labels[i]`` is the label of
item ``i``) and checks what it can: the length against the dataset (``num_samples``) and the range
against the class count (``num_classes``). Problems raise :class:`InputError` naming the file.

Supported files (:func:`load_label_file` picks by suffix):

* ``.npy``: a 1-D integer array (the PMD files are int64 arrays of length 45,000).
* ``.csv``: a header row with an ``index`` column and one label column (or pick one with
  ``column=``); rows may come in any order, but the indices must be exactly ``0..N-1``.
* ``.txt``: one integer label per line, or ``index label`` per line.
* ``.pt``: the CIFAR-N release (``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``), a dict of arrays,
  loaded with ``torch.load(..., weights_only=True)``; pick the column with ``column=``.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lra_diffusion.errors import InputError

__all__ = [
    "CIFAR10N_COLUMNS",
    "CIFAR100N_COLUMNS",
    "check_labels",
    "load_label_file",
    "load_pmd_labels",
    "load_cifar_n",
    "save_label_file",
    "parse_pmd_name",
]

# CIFAR-N column names as in the shared cifar10n.csv, and the keys of the official .pt files.
CIFAR10N_COLUMNS: dict[str, str] = {
    "clean": "clean_label",
    "aggre": "aggre_label",
    "worse": "worse_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
}
CIFAR100N_COLUMNS: dict[str, str] = {
    "clean": "clean_label",
    "noisy": "noisy_label",
    "clean_coarse": "clean_coarse_label",
    "noisy_coarse": "noisy_coarse_label",
}


def check_labels(
    labels: Sequence[int] | np.ndarray,
    *,
    num_samples: int | None = None,
    num_classes: int | None = None,
    name: str = "labels",
) -> np.ndarray:
    """Validate a label array and return it as int64.

    Parameters
    ----------
    labels
        Shape ``(N,)``; integers, or floats with integral values.
    num_samples
        Expected N (the dataset length), if known.
    num_classes
        Labels must lie in ``0..num_classes-1``, if given (otherwise they must be >= 0).
    name
        What to call the labels in messages (e.g. the file name).

    Returns
    -------
    np.ndarray
        int64 ``(N,)``.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise InputError(f"{name}: label {arr[bad]} at index {bad} is not an integer")
    out = arr.astype(np.int64)
    if num_samples is not None and len(out) != num_samples:
        raise InputError(f"{name}: has {len(out)} labels but the dataset has {num_samples} items")
    if out.size:
        hi = None if num_classes is None else num_classes - 1
        bad_mask = (out < 0) if hi is None else ((out < 0) | (out > hi))
        if bad_mask.any():
            bad = int(np.flatnonzero(bad_mask)[0])
            rng = "0..(C-1)" if hi is None else f"0..{hi}"
            raise InputError(f"{name}: label {out[bad]} at index {bad} is outside {rng}")
    return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a plain numeric .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read .npy file ({exc})") from None


def _load_csv(path: Path, column: str | None) -> np.ndarray:
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(f, dialect)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path}: empty CSV file")
        header = [h.strip() for h in header]
        if "index" not in header:
            raise InputError(f"{path}: CSV label files need a header with an 'index' column, "
                             f"got {header}")
        others = [h for h in header if h != "index"]
        if column is None:
            if "label" in others:
                column = "label"
            elif len(others) == 1:
                column = others[0]
            else:
                raise InputError(f"{path}: several label columns ({', '.join(others)}); choose one "
                                 "with column=")
        if column not in header:
            raise InputError(f"{path}: no column {column!r}; columns are {', '.join(header)}")
        ci, li = header.index("index"), header.index(column)
        idx: list[int] = []
        lab: list[int] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(ci, li):
                raise InputError(f"{path} line {lineno}: expected {len(header)} fields, got {len(row)}")
            try:
                idx.append(int(row[ci]))
                lab.append(int(row[li]))
            except ValueError:
                raise InputError(f"{path} line {lineno}: index and {column!r} must be integers, "
                                 f"got {row[ci]!r}, {row[li]!r}") from None
    return _order_by_index(path, np.asarray(idx, dtype=np.int64), np.asarray(lab, dtype=np.int64))


def _order_by_index(path: Path, idx: np.ndarray, lab: np.ndarray) -> np.ndarray:
    n = len(idx)
    if n == 0:
        raise InputError(f"{path}: no labels in the file")
    out_of_range = (idx < 0) | (idx >= n)
    if out_of_range.any():
        k = int(np.flatnonzero(out_of_range)[0])
        raise InputError(f"{path}: index {idx[k]} (row {k + 1}) is outside 0..{n - 1}; "
                         "indices must be exactly 0..N-1")
    counts = np.bincount(idx, minlength=n)
    if (counts > 1).any():
        dup = int(np.flatnonzero(counts > 1)[0])
        raise InputError(f"{path}: index {dup} appears {counts[dup]} times")
    out = np.empty(n, dtype=np.int64)
    out[idx] = lab
    return out


def _load_txt(path: Path) -> np.ndarray:
    idx: list[int] = []
    lab: list[int] = []
    ncols = None
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.replace(",", " ").split()
            if not parts or parts[0].startswith("#"):
                continue
            if ncols is None:
                ncols = len(parts)
                if ncols not in (1, 2):
                    raise InputError(f"{path} line {lineno}: expected 'label' or 'index label', "
                                     f"got {len(parts)} fields")
            if len(parts) != ncols:
                raise InputError(f"{path} line {lineno}: expected {ncols} fields, got {len(parts)}")
            try:
                vals = [int(p) for p in parts]
            except ValueError:
                raise InputError(f"{path} line {lineno}: not an integer label: {line.strip()!r}") from None
            if ncols == 1:
                lab.append(vals[0])
            else:
                idx.append(vals[0])
                lab.append(vals[1])
    if ncols == 2:
        return _order_by_index(path, np.asarray(idx, dtype=np.int64), np.asarray(lab, dtype=np.int64))
    if not lab:
        raise InputError(f"{path}: no labels in the file")
    return np.asarray(lab, dtype=np.int64)


def _load_pt(path: Path, column: str | None) -> np.ndarray:
    import torch

    safe = [np.ndarray, np.dtype, np.dtypes.Int64DType, np.dtypes.Int32DType, np.dtypes.Float64DType]
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    safe.append(_reconstruct)
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or non-torch files fail in many ways
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in text:
            glob = re.search(r"GLOBAL (\S+)", text)
            raise InputError(f"{path}: holds objects other than label arrays "
                             f"({glob.group(1) if glob else 'unknown'}); refusing to unpickle them "
                             "(loaded with weights_only=True)") from None
        detail = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = detail[-2] if isinstance(exc, pickle.UnpicklingError) and len(detail) > 1 else (
            detail[0] if detail else type(exc).__name__)
        raise InputError(f"{path}: cannot load as a CIFAR-N .pt label file ({why})") from None
    if not isinstance(obj, dict):
        return np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
    keys = [str(k) for k in obj]
    if column is None:
        raise InputError(f"{path}: holds several label arrays ({', '.join(keys)}); choose one with "
                         "column=")
    key = CIFAR10N_COLUMNS.get(column) or CIFAR100N_COLUMNS.get(column) or column
    if key not in obj:
        raise InputError(f"{path}: no labels {column!r}; available: {', '.join(keys)}")
    val = obj[key]
    return np.asarray(val.numpy() if hasattr(val, "numpy") else val)


def load_label_file(
    path: str | os.PathLike,
    *,
    num_samples: int | None = None,
    num_classes: int | None = None,
    column: str | None = None,
) -> np.ndarray:
    """Load a label file (``.npy``, ``.csv``, ``.txt`` or CIFAR-N ``.pt``) as int64 labels.

    Parameters
    ----------
    path
        The file; its suffix picks the format (see the module docstring).
    num_samples
        Expected number of labels (the dataset length); a mismatch is an error.
    num_classes
        Labels must lie in ``0..num_classes-1``.
    column
        The label column of a CSV file or the key of a ``.pt`` dict (CIFAR-N short names such as
        ``"aggre"`` and ``"worse"`` work for both).

    Returns
    -------
    np.ndarray
        int64 ``(N,)``, ordered by index.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raw = _load_npy(path)
    elif suffix in (".csv", ".tsv"):
        raw = _load_csv(path, column)
    elif suffix in (".txt", ".lst", ".labels"):
        raw = _load_txt(path)
    elif suffix in (".pt", ".pth"):
        raw = _load_pt(path, column)
    else:
        raise InputError(f"{path}: unknown label file type {suffix!r}; use .npy, .csv, .txt or .pt")
    return check_labels(raw, num_samples=num_samples, num_classes=num_classes, name=str(path))


def save_label_file(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write labels ``(N,)`` as ``.npy`` (int64) or ``.csv`` (``index,label``), by suffix."""
    path = Path(path)
    labels = check_labels(labels, name="labels to save")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, labels)
    elif suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "label"])
            w.writerows(enumerate(labels.tolist()))
    elif suffix == ".txt":
        np.savetxt(path, labels, fmt="%d")
    else:
        raise InputError(f"{path}: cannot write labels as {suffix!r}; use .npy, .csv or .txt")
    return path


# ---------------------------------------------------------------------------------------------
# Named label sets
# ---------------------------------------------------------------------------------------------
_PMD_NAME = re.compile(
    r"^(?P<dataset>cifar10|cifar100)-(?P<type>[123])-(?P<rate>\d+(?:\.\d+)?)"
    r"(?:_(?P<extra>[UA])_(?P<extra_rate>\d+(?:\.\d+)?))?$")


def parse_pmd_name(path: str | os.PathLike) -> dict:
    """Parse a PMD file name such as ``cifar10-1-0.35_U_0.6.npy``.

    Returns
    -------
    dict
        ``dataset``, ``pmd_type`` (1-3), ``pmd_rate`` (float), ``extra`` (``"symmetric"``,
        ``"asymmetric"`` or ``None``), ``extra_rate`` (float or ``None``).
    """
    stem = Path(path).name
    stem = stem[:-4] if stem.endswith(".npy") else stem
    m = _PMD_NAME.match(stem)
    if m is None:
        raise InputError(f"{path}: not a PMD label file name like cifar10-1-0.35[_U_0.3|_A_0.3].npy")
    extra = {"U": "symmetric", "A": "asymmetric", None: None}[m["extra"]]
    return {
        "dataset": m["dataset"],
        "pmd_type": int(m["type"]),
        "pmd_rate": float(m["rate"]),
        "extra": extra,
        "extra_rate": None if m["extra_rate"] is None else float(m["extra_rate"]),
    }


def load_pmd_labels(
    path: str | os.PathLike,
    *,
    num_samples: int | None = 45_000,
    num_classes: int | None = None,
) -> np.ndarray:
    """Load one of the paper's PMD noisy-label files (``noisy_labels/pmd/*.npy``).

    Parameters
    ----------
    path
        ``cifar10-1-<r>[_U_<u>|_A_<a>].npy`` (or any ``.npy`` of the same layout).
    num_samples
        Expected length: 45,000 (training images 0..44,999 of the paper's protocol); ``None``
        skips the check.
    num_classes
        Defaults to 10 for ``cifar10-*`` and 100 for ``cifar100-*`` names.

    Returns
    -------
    np.ndarray
        int64 ``(num_samples,)``, aligned with training images ``0..num_samples-1``.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: PMD label files are .npy arrays")
    if num_classes is None:
        num_classes = 100 if path.name.startswith("cifar100") else 10
    return load_label_file(path, num_samples=num_samples, num_classes=num_classes)


def load_cifar_n(
    path: str | os.PathLike,
    column: str = "aggre",
    *,
    num_samples: int | None = 50_000,
) -> np.ndarray:
    """Load CIFAR-10N / CIFAR-100N human labels (Wei et al., ICLR 2022).

    Parameters
    ----------
    path
        The shared ``cifar10n.csv`` (``index,clean,aggre,worse,random1``) or the official
        ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``.
    column
        CIFAR-10N: ``clean``, ``aggre``, ``worse``, ``random1`` (``random2``, ``random3`` in the
        ``.pt``); CIFAR-100N: ``clean``, ``noisy`` (and ``*_coarse``).
    num_samples
        Expected length (50,000 training images in canonical order).

    Returns
    -------
    np.ndarray
        int64 ``(num_samples,)``.
    """
    path = Path(path)
    is100 = "100" in path.name
    valid = CIFAR100N_COLUMNS if is100 else CIFAR10N_COLUMNS
    if column not in valid and column not in valid.values():
        raise InputError(f"column={column!r} is not one of {', '.join(valid)}")
    if column.endswith("coarse") or column.endswith("coarse_label"):
        num_classes = 20
    else:
        num_classes = 100 if is100 else 10
    return load_label_file(path, column=column, num_samples=num_samples, num_classes=num_classes)
