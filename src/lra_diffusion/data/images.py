"""The base image dataset and a fast bulk decoder.

Every dataset in :mod:`lra_diffusion.data` is an :class:`ImageDataset`: a list of images (files on disk,
encoded bytes held in memory, or a decoded uint8 array) with integer labels, class names and a stable
*index* per item. ``dataset[i]`` returns ``(image, label, index)`` where ``image`` is a uint8
``(H, W, 3)`` RGB array and ``index`` is the item's position in the original (canonical) order, which
stays the same when a dataset is cut into subsets, so label files keep lining up.

:func:`load_images` decodes a whole dataset of same-size images into one ``(N, H, W, 3)`` uint8 array,
with a progress bar.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lra_diffusion.errors import InputError

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "skip")

# Pillow refuses images above ~179 Mpx by default (decompression-bomb guard); web-crawled sets
# (WebVision, Clothing1M) are below that, so we leave the guard on.

__all__ = [
    "ImageDataset",
    "decode_image",
    "load_images",
    "drop_unreadable",
    "check_on_error",
    "check_files",
]


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` option (``"raise"`` or ``"skip"``)."""
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"on_error={on_error!r} is not one of {', '.join(ON_ERROR_CHOICES)}")
    return on_error  # type: ignore[return-value]


def decode_image(source: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode one image file (path or encoded bytes) into a uint8 RGB array, upright (EXIF orientation applied).

    Parameters
    ----------
    source
        A path to an image file, or the file's bytes.
    name
        What to call the image in an error message (defaults to the path).

    Returns
    -------
    np.ndarray
        uint8 array of shape ``(H, W, 3)``.

    Raises
    ------
    InputError
        If the file is missing, unreadable or not a decodable image; the message names the file.
    """
    label = name if name is not None else (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(fp) as im:
            # phone photos are often stored sideways with an EXIF Orientation tag: decode them upright
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode != "RGB":
                im = im.convert("RGB")
            else:
                im.load()
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"image file not found: {label}") from None
    except UnidentifiedImageError:
        raise InputError(f"not a readable image (corrupt or unknown format): {label}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated data, bad headers, ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot decode image {label}: {msg}") from None


class ImageDataset:
    """A labelled list of images with a stable index per item.

    Subclasses (or the constructor arguments) provide where the images come from: ``root`` plus
    relative ``paths`` (files on disk), an in-memory list of encoded ``blobs`` (e.g. members of a
    tar archive), or a decoded uint8 ``array``.

    Parameters
    ----------
    root
        The directory the dataset was read from (paths are relative to it).
    labels
        Integer labels, shape ``(N,)``, each in ``0..len(classes)-1``.
    classes
        Class names; ``classes[c]`` is the name of label ``c``.
    paths
        Image paths relative to ``root`` (or archive member names for in-memory data), length N;
        ``None`` for array-backed datasets.
    blobs
        Encoded image bytes, length N (optional; then ``paths`` only name the images).
    array
        Decoded images, uint8 ``(N, H, W, 3)`` (optional; array-backed dataset).
    indices
        The canonical index of each item, shape ``(N,)``; defaults to ``0..N-1``.

    Attributes
    ----------
    labels : np.ndarray
        int64, shape ``(N,)``.
    classes : list[str]
    paths : list[str] | None
    indices : np.ndarray
        int64, shape ``(N,)``; ``dataset[i][2] == indices[i]``.
    root : Path
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        paths: Sequence[str] | None = None,
        blobs: Sequence[bytes] | None = None,
        array: np.ndarray | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.root = Path(root)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.classes = [str(c) for c in classes]
        self.paths = None if paths is None else [str(p) for p in paths]
        self.blobs = None if blobs is None else list(blobs)
        self.array = array
        n = len(self.labels)
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.paths is None and self.array is None:
            raise InputError("an ImageDataset needs paths or an image array")
        for what, seq in (("paths", self.paths), ("blobs", self.blobs), ("array", self.array),
                          ("indices", self.indices)):
            if seq is not None and len(seq) != n:
                raise InputError(f"{what} has {len(seq)} entries but there are {n} labels")
        if self.array is not None and (self.array.ndim != 4 or self.array.shape[-1] != 3
                                       or self.array.dtype != np.uint8):
            raise InputError(
                f"image array must be uint8 (N, H, W, 3), got {self.array.dtype} {self.array.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= len(self.classes)))[0])
            raise InputError(
                f"label {self.labels[bad]} of item {bad} is outside 0..{len(self.classes) - 1}")

    # -- the small protocol every dataset follows -------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        """Return ``(image uint8 (H, W, 3), label, index)`` of item ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        return self.image(i), int(self.labels[i]), int(self.indices[i])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, "
                f"classes={self.num_classes})")

    def image_name(self, i: int) -> str:
        """A human-readable name for item ``i`` (its file path) used in error messages."""
        if self.paths is not None:
            p = self.paths[i]
            return p if self.blobs is not None else str(self.root / p)
        return f"{self.root} item {int(self.indices[i])}"

    def image(self, i: int) -> np.ndarray:
        """Decode item ``i`` into a uint8 ``(H, W, 3)`` array (InputError names a bad file)."""
        if self.array is not None:
            return self.array[i]
        if self.blobs is not None:
            return decode_image(self.blobs[i], name=self.image_name(i))
        return decode_image(self.root / self.paths[i], name=self.image_name(i))  # type: ignore[index]

    def subset(self, items: Sequence[int] | np.ndarray) -> ImageDataset:
        """Return a dataset of the given items (positions in this dataset), keeping their indices.

        Parameters
        ----------
        items
            Positions ``(M,)`` into this dataset, or a boolean mask ``(N,)``.
        """
        items = np.asarray(items)
        if items.dtype == bool:
            if items.shape != (len(self),):
                raise InputError(f"mask has shape {items.shape}, expected ({len(self)},)")
            items = np.flatnonzero(items)
        items = items.astype(np.int64).reshape(-1)
        if items.size and (items.min() < -len(self) or items.max() >= len(self)):
            raise InputError(f"subset positions must lie in 0..{len(self) - 1}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.labels = self.labels[items]
        new.indices = self.indices[items]
        new.paths = None if self.paths is None else [self.paths[k] for k in items]
        new.blobs = None if self.blobs is None else [self.blobs[k] for k in items]
        new.array = None if self.array is None else self.array[items]
        return new

    def with_labels(self, labels: Sequence[int] | np.ndarray) -> ImageDataset:
        """Return a copy with different labels (e.g. noisy ones), shape ``(N,)``, same order."""
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(self):
            raise InputError(f"{len(labels)} labels given for a dataset of {len(self)} items")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise InputError(f"labels must lie in 0..{self.num_classes - 1}, "
                             f"got {labels.min()}..{labels.max()}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.labels = labels.astype(np.int64)
        return new


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, mininterval=0.5)


def _default_workers(dataset: ImageDataset) -> int:
    # In-memory JPEG decoding is CPU-bound and Pillow holds the GIL for most of a small image's
    # decode, so threads only add overhead there; reading files from disk is I/O-bound, where
    # threads help.
    if dataset.array is not None or dataset.blobs is not None:
        return 0
    return min(8, os.cpu_count() or 1)


def load_images(
    dataset: ImageDataset,
    *,
    progress: bool = True,
    num_workers: int | None = None,
    chunk_size: int = 512,
) -> np.ndarray:
    """Decode every image of a dataset of same-size images into one array.

    Parameters
    ----------
    dataset
        Any :class:`ImageDataset` whose images all have the same height and width.
    progress
        Show a tqdm progress bar.
    num_workers
        Decoding threads; 0 decodes in this thread. Default: 0 for in-memory data, up to 8
        threads for files on disk.
    chunk_size
        Images per work unit.

    Returns
    -------
    np.ndarray
        uint8 array of shape ``(N, H, W, 3)`` in dataset order.

    Raises
    ------
    InputError
        If an image cannot be decoded (the message names the file) or the sizes differ.
    """
    n = len(dataset)
    if dataset.array is not None:
        return np.ascontiguousarray(dataset.array)
    if n == 0:
        raise InputError(f"dataset at {dataset.root} has no images")
    first = dataset.image(0)
    out = np.empty((n, *first.shape), dtype=np.uint8)
    out[0] = first

    def fill(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            img = dataset.image(i)
            if img.shape != first.shape:
                raise InputError(
                    f"image {dataset.image_name(i)} has shape {img.shape}, expected {first.shape} "
                    "like the first image; load_images needs same-size images")
            out[i] = img
        return hi - lo

    workers = _default_workers(dataset) if num_workers is None else int(num_workers)
    chunks = [(lo, min(lo + chunk_size, n)) for lo in range(1, n, chunk_size)]
    with _progress(n, "decoding images", progress) as bar:
        bar.update(1)
        if workers <= 0:
            for lo, hi in chunks:
                bar.update(fill(lo, hi))
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(lambda c: fill(*c), chunks):
                    bar.update(done)
    return out


def drop_unreadable(
    dataset: ImageDataset,
    *,
    progress: bool = False,
    num_workers: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> ImageDataset:
    """Decode every image once and return the subset that decodes, warning about the others.

    Parameters
    ----------
    dataset
        The dataset to check.
    progress
        Show a progress bar.
    num_workers
        Decoding threads (as in :func:`load_images`).
    warn
        Called with the warning message; default :func:`warnings.warn`.

    Returns
    -------
    ImageDataset
        The readable items (indices preserved); ``dataset`` itself when all are readable.
    """
    n = len(dataset)
    ok = np.ones(n, dtype=bool)
    bad: list[str] = []

    def check(i: int) -> None:
        try:
            dataset.image(i)
        except InputError as exc:
            ok[i] = False
            bad.append(str(exc))

    workers = _default_workers(dataset) if num_workers is None else int(num_workers)
    with _progress(n, "checking images", progress) as bar:
        if workers <= 0:
            for i in range(n):
                check(i)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(check, range(n)):
                    bar.update(1)
    if ok.all():
        return dataset
    report_skipped(bad, warn=warn)
    return dataset.subset(ok)


def _header_problem(path: Path) -> str | None:
    """Why ``path`` is not an openable image (``None`` if it is); reads only the header."""
    if not path.is_file():
        return f"missing image {path}"
    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"unreadable image {path}"


def check_files(
    root: Path,
    paths: Sequence[str],
    *,
    on_error: OnError,
    source: str,
    check_headers: bool | None = None,
) -> np.ndarray:
    """Check that listed image files exist (and, when skipping, that their headers read).

    Parameters
    ----------
    root
        Directory the paths are relative to.
    paths
        Relative image paths ``(N,)``.
    on_error
        ``"raise"``: the first missing file is an :class:`InputError` naming it and ``source``;
        ``"skip"``: missing or unreadable files are left out with one warning.
    source
        The list file or folder the paths came from (for messages).
    check_headers
        Also open each image's header; default: only when skipping.

    Returns
    -------
    np.ndarray
        int64 positions of the usable paths.
    """
    check_headers = (on_error == "skip") if check_headers is None else check_headers
    problems: list[str] = []
    keep: list[int] = []
    for i, p in enumerate(paths):
        full = root / p
        why = _header_problem(full) if check_headers else (None if full.is_file() else f"missing image {full}")
        if why is None:
            keep.append(i)
            continue
        if on_error == "raise":
            more = sum(1 for q in paths[i + 1:] if not (root / q).is_file())
            tail = f" (and {more} more missing)" if more else ""
            raise InputError(f"{why} (listed in {source}){tail}")
        problems.append(why)
    report_skipped(problems)
    return np.asarray(keep, dtype=np.int64)


def report_skipped(messages: Sequence[str], *, warn: Callable[[str], None] | None = None) -> None:
    """Warn once about skipped images, naming the first few."""
    if not messages:
        return
    shown = "; ".join(sorted(messages)[:3])
    more = f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""
    msg = f"skipped {len(messages)} image(s): {shown}{more}"
    if warn is None:
        warnings.warn(msg, UserWarning, stacklevel=3)
    else:
        warn(msg)
