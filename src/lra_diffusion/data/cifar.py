"""CIFAR-10 and CIFAR-100: the official python release, the shared JPEG copy, the paper's split.

* :class:`CIFAR` reads the official python release (``cifar-10-batches-py/`` or
  ``cifar-100-python/``, extracted or as the ``.tar.gz``), optionally downloading the archive and
  checking its published MD5.
* :class:`SharedCIFAR10` reads the team's shared JPEG copy (``cifar10-jpeg.tar.gz`` plus
  ``train.csv`` / ``test.csv``) straight from the archive in the canonical order given by the CSV,
  which is the order of the official release and of every published noisy-label file.
* :func:`cifar_protocol_split` cuts train/val/test as the paper does (train 0..44,999 with noisy
  labels, val 45,000..49,999 with clean labels, the 10,000 test images).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lra_diffusion.data.images import ImageDataset, check_on_error, load_images, report_skipped
from lra_diffusion.errors import InputError

Split = Literal["train", "test"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# Official archives and their published MD5 sums (https://www.cs.toronto.edu/~kriz/cifar.html).
_RELEASES = {
    10: {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{k}" for k in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": b"labels",
        "names_key": b"label_names",
    },
    100: {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": b"fine_labels",
        "names_key": b"fine_label_names",
    },
}

__all__ = [
    "CIFAR",
    "CIFAR10_CLASSES",
    "SharedCIFAR10",
    "ProtocolSplit",
    "cifar_protocol_split",
    "download_cifar",
    "file_md5",
    "check_md5",
    "load_shared_cifar10",
]


def _check_split(split: str) -> Split:
    if split not in ("train", "test"):
        raise InputError(f"split={split!r} is not one of train, test")
    return split  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Checksums and download
# --------------------------------------------------------------------------------------------
def file_md5(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`InputError` unless the file's MD5 equals ``expected`` (hex)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    got = file_md5(path)
    if got != expected.lower():
        raise InputError(f"checksum mismatch for {path}: MD5 {got}, expected {expected.lower()}"
                         " (the file is corrupt or incomplete; delete it and download again)")


def download_cifar(root: str | os.PathLike, *, num_classes: Literal[10, 100] = 10) -> Path:
    """Download the official CIFAR python archive into ``root`` (if needed) and verify its MD5.

    An archive already in ``root`` is checked, not fetched again.

    Returns
    -------
    Path
        The verified ``.tar.gz``.
    """
    rel = _release(num_classes)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / rel["archive"]
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(rel["url"], timeout=60) as resp, open(tmp, "wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"could not download {rel['url']}: {exc}") from None
        tmp.replace(target)
    check_md5(target, rel["md5"])
    return target


def _release(num_classes: int) -> dict:
    if num_classes not in _RELEASES:
        raise InputError(f"num_classes={num_classes!r} is not one of 10, 100")
    return _RELEASES[num_classes]


# --------------------------------------------------------------------------------------------
# Official python release
# --------------------------------------------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Unpickle only what the CIFAR batches contain (dicts, lists, bytes, numpy arrays)."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        # The official files were pickled by NumPy 1.x, which lived in numpy.core.
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        if (module, name) in self._ALLOWED or (module == "numpy.core.multiarray"
                                               and name in ("_reconstruct", "scalar")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any corruption: say which file
        raise InputError(f"{name} is not a readable CIFAR batch: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{name} is not a CIFAR batch (expected a dict)")
    return obj


class _Source:
    """Reads member files of a CIFAR release from a folder or from the .tar.gz."""

    def __init__(self, root: Path, rel: dict) -> None:
        self.folder: Path | None = None
        self.archive: Path | None = None
        for cand in (root / rel["folder"], root):
            if (cand / rel["meta"]).is_file():
                self.folder = cand
                return
        for cand in (root / rel["archive"], root):
            if cand.is_file() and cand.name.endswith((".tar.gz", ".tgz", ".tar")):
                self.archive = cand
                return
        raise InputError(
            f"{root} does not hold the CIFAR-{100 if rel['folder'].startswith('cifar-100') else 10} "
            f"python release: expected {rel['folder']}/ or {rel['archive']}")

    def read(self, names: Sequence[str], rel: dict) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if self.folder is not None:
            for n in names:
                p = self.folder / n
                if not p.is_file():
                    raise InputError(f"missing CIFAR batch file {p}")
                out[n] = p.read_bytes()
            return out
        assert self.archive is not None
        wanted = {f"{rel['folder']}/{n}": n for n in names}
        try:
            with tarfile.open(self.archive, "r:*") as tf:
                for m in tf:
                    if m.name in wanted and m.isfile():
                        out[wanted[m.name]] = tf.extractfile(m).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read archive {self.archive}: {exc}") from None
        missing = [k for k, v in wanted.items() if v not in out]
        if missing:
            raise InputError(f"archive {self.archive} lacks {missing[0]}")
        return out


class CIFAR(ImageDataset):
    """CIFAR-10 or CIFAR-100 from the official python release.

    Parameters
    ----------
    root
        A directory holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``), or the official
        ``.tar.gz``; the extracted folder itself or the archive path also work.
    split
        ``"train"`` (50,000 images, ``data_batch_1..5`` order) or ``"test"`` (10,000).
    num_classes
        10 or 100 (fine labels).
    download
        Fetch the official archive into ``root`` if no release is there, verifying its MD5.
    check_integrity
        Verify the archive's MD5 before reading it (only when reading from the ``.tar.gz``).

    Attributes
    ----------
    array : np.ndarray
        uint8 ``(N, 32, 32, 3)``.
    coarse_labels : np.ndarray | None
        int64 ``(N,)`` superclass labels for CIFAR-100, else ``None``.
    coarse_classes : list[str] | None
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Split = "train",
        num_classes: Literal[10, 100] = 10,
        download: bool = False,
        check_integrity: bool = False,
    ) -> None:
        rel = _release(num_classes)
        split = _check_split(split)
        root = Path(root)
        if download:
            try:
                _Source(root, rel)
            except InputError:
                download_cifar(root, num_classes=num_classes)
        elif not root.exists():
            raise InputError(f"CIFAR directory not found: {root} (pass download=True to fetch it)")
        src = _Source(root, rel)
        if src.archive is not None and check_integrity:
            check_md5(src.archive, rel["md5"])
        names = list(rel[split])
        blobs = src.read([*names, rel["meta"]], rel)
        meta = _unpickle(blobs[rel["meta"]], rel["meta"])
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(rel["names_key"], [])]
        if len(classes) != num_classes:
            raise InputError(f"{rel['meta']} lists {len(classes)} class names, expected {num_classes}")
        data, labels, coarse = [], [], []
        for n in names:
            batch = _unpickle(blobs[n], n)
            try:
                x = np.asarray(batch[b"data"], dtype=np.uint8)
                y = np.asarray(batch[rel["label_key"]], dtype=np.int64)
            except KeyError as exc:
                raise InputError(f"CIFAR batch {n} lacks the key {exc.args[0]!r}") from None
            if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
                raise InputError(f"CIFAR batch {n} has data of shape {x.shape} for {len(y)} labels")
            data.append(x)
            labels.append(y)
            if num_classes == 100:
                coarse.append(np.asarray(batch.get(b"coarse_labels", []), dtype=np.int64))
        # Rows are 3072 bytes: 1024 red, 1024 green, 1024 blue, each row-major 32x32.
        array = np.ascontiguousarray(np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        super().__init__(root=root, labels=np.concatenate(labels), classes=classes, array=array)
        self.split = split
        self.coarse_labels: np.ndarray | None = None
        self.coarse_classes: list[str] | None = None
        if num_classes == 100:
            cl = np.concatenate(coarse)
            if len(cl) == len(self.labels):
                self.coarse_labels = cl
                self.coarse_classes = [c.decode() if isinstance(c, bytes) else str(c)
                                       for c in meta.get(b"coarse_label_names", [])]


# --------------------------------------------------------------------------------------------
# The shared JPEG copy
# --------------------------------------------------------------------------------------------
def read_index_csv(path: Path, *, num_classes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read an ``index,path,label`` CSV whose index runs 0..N-1 in order.

    Returns
    -------
    paths : list[str]
        Length N.
    labels : np.ndarray
        int64 ``(N,)``.
    """
    if not path.is_file():
        raise InputError(f"index file not found: {path}")
    paths: list[str] = []
    labels: list[int] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["index", "path", "label"]:
            raise InputError(f"{path}: expected the header 'index,path,label', got {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise InputError(f"{path} line {lineno}: expected 3 fields, got {len(row)}")
            try:
                idx, lab = int(row[0]), int(row[2])
            except ValueError:
                raise InputError(f"{path} line {lineno}: index and label must be integers") from None
            if idx != len(paths):
                raise InputError(f"{path} line {lineno}: index {idx}, expected {len(paths)} "
                                 "(rows must be in index order)")
            if lab < 0 or (num_classes is not None and lab >= num_classes):
                raise InputError(f"{path} line {lineno}: label {lab} outside 0..{num_classes - 1}")
            paths.append(row[1].strip())
            labels.append(lab)
    return paths, np.asarray(labels, dtype=np.int64)


def _shared_root(root: Path) -> Path:
    if (root / "train.csv").is_file() or (root / "test.csv").is_file():
        return root
    if (root / "cifar10" / "train.csv").is_file():
        return root / "cifar10"
    raise InputError(f"{root} is not the shared CIFAR-10 folder (expected train.csv, test.csv and "
                     "cifar10-jpeg.tar.gz)")


class SharedCIFAR10(ImageDataset):
    """The shared JPEG copy of CIFAR-10, in the canonical order of ``train.csv`` / ``test.csv``.

    The JPEG bytes are read once from ``cifar10-jpeg.tar.gz`` into memory (about 55 MB for both
    splits) and decoded on access. If the archive has been extracted into ``root`` instead, the
    files are read from there.

    Parameters
    ----------
    root
        The shared ``cifar10`` folder (``train.csv``, ``test.csv``, ``cifar10-jpeg.tar.gz``).
    split
        ``"train"`` (50,000) or ``"test"`` (10,000).
    on_error
        ``"raise"``: a missing image is an error naming it; ``"skip"``: drop it with a warning.

    Attributes
    ----------
    paths : list[str]
        Archive member names (``train/<class>/NNNN.jpg``).
    """

    archive_name = "cifar10-jpeg.tar.gz"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Split = "train",
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        split = _check_split(split)
        on_error = check_on_error(on_error)
        root = _shared_root(Path(root))
        csv_path = root / f"{split}.csv"
        paths, labels = read_index_csv(csv_path, num_classes=len(CIFAR10_CLASSES))
        for i, (p, y) in enumerate(zip(paths, labels)):
            parts = p.split("/")
            if len(parts) < 2 or parts[-2] != CIFAR10_CLASSES[y]:
                raise InputError(f"{csv_path} line {i + 2}: path {p} is not in the folder of its "
                                 f"label {y} ({CIFAR10_CLASSES[y]})")
        archive = root / self.archive_name
        if archive.is_file():
            blobs_by_name = _read_tar_members(archive, set(paths))
            blobs: list[bytes] | None = []
            keep = []
            missing = []
            for i, p in enumerate(paths):
                b = blobs_by_name.get(p)
                if b is None:
                    missing.append(f"{p} (not in {archive})")
                else:
                    blobs.append(b)  # type: ignore[union-attr]
                    keep.append(i)
        elif (root / split).is_dir():
            blobs = None
            missing = [str(root / p) for p in paths if not (root / p).is_file()]
            missing_set = set(missing)
            keep = [i for i, p in enumerate(paths) if str(root / p) not in missing_set]
        else:
            raise InputError(f"{root} has neither {self.archive_name} nor an extracted {split}/ folder")
        if missing:
            if on_error == "raise":
                raise InputError(f"image listed in {csv_path} is missing: {missing[0]}"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            report_skipped([f"missing {m}" for m in missing])
        keep_arr = np.asarray(keep, dtype=np.int64)
        super().__init__(
            root=root,
            labels=labels[keep_arr],
            classes=CIFAR10_CLASSES,
            paths=[paths[i] for i in keep],
            blobs=blobs,
            indices=keep_arr,
        )
        self.split = split


def _read_tar_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if name in wanted and m.isfile():
                    out[name] = tf.extractfile(m).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read archive {archive}: {exc}") from None
    return out


def load_shared_cifar10(
    root: str | os.PathLike,
    split: Split = "train",
    *,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the shared CIFAR-10 copy into arrays, in canonical order.

    Parameters
    ----------
    root
        The shared ``cifar10`` folder (holding ``train.csv``, ``test.csv``, ``cifar10-jpeg.tar.gz``).
    split
        ``"train"`` or ``"test"``.
    progress
        Show a progress bar while decoding.

    Returns
    -------
    images : np.ndarray
        uint8 ``(N, 32, 32, 3)``; N = 50,000 (train) or 10,000 (test).
    labels : np.ndarray
        int64 ``(N,)``, clean labels in ``0..9``.
    """
    ds = SharedCIFAR10(root, split=split)
    return load_images(ds, progress=progress), ds.labels.copy()


# --------------------------------------------------------------------------------------------
# The paper's split
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProtocolSplit:
    """Train / validation / test datasets of a protocol (see :func:`cifar_protocol_split`)."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset


def cifar_protocol_split(
    train: ImageDataset,
    test: ImageDataset,
    *,
    noisy_labels: np.ndarray | None = None,
    num_train: int = 45_000,
    num_val: int | None = None,
) -> ProtocolSplit:
    """Split CIFAR as the paper does: train on items ``0..num_train-1`` (with the noisy labels),
    validate on the following ``num_val`` items (clean labels), test on ``test``.

    Parameters
    ----------
    train
        The 50,000 training images in canonical order (any :class:`ImageDataset`).
    test
        The test images.
    noisy_labels
        int ``(num_train,)`` labels for the training part (e.g. a PMD file); ``None`` keeps the
        dataset's labels. A length-``len(train)`` array is accepted too and cut to ``num_train``.
    num_train
        Size of the training part (paper: 45,000).
    num_val
        Size of the validation part; default: all remaining items (paper: 5,000).

    Returns
    -------
    ProtocolSplit
        ``train`` (indices 0..num_train-1), ``val`` (num_train..num_train+num_val-1), ``test``.
    """
    n = len(train)
    if not 0 < num_train <= n:
        raise InputError(f"num_train={num_train} must lie in 1..{n}")
    rest = n - num_train
    num_val = rest if num_val is None else num_val
    if not 0 <= num_val <= rest:
        raise InputError(f"num_val={num_val} must lie in 0..{rest} (after {num_train} training items)")
    tr = train.subset(np.arange(num_train))
    if noisy_labels is not None:
        noisy = np.asarray(noisy_labels).reshape(-1)
        if len(noisy) == n and n != num_train:
            noisy = noisy[:num_train]
        if len(noisy) != num_train:
            raise InputError(f"noisy labels have length {len(noisy)}, expected {num_train} "
                             f"(training items 0..{num_train - 1})")
        tr = tr.with_labels(noisy)
    va = train.subset(np.arange(num_train, num_train + num_val))
    if num_val == 0:
        warnings.warn("cifar_protocol_split: empty validation split", UserWarning, stacklevel=2)
    return ProtocolSplit(train=tr, val=va, test=test)
