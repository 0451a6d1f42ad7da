"""Generic datasets: ``ImageFolder`` trees and list files, the way most users' data arrives.

* :class:`ImageFolder`: ``root/<class>/<file>`` (files may sit in nested folders below the class
  folder); classes are the sorted folder names, items are sorted by path within each class, so the
  index order is stable across machines.
* :class:`ListFileDataset`: a text file with one ``relative/path label`` per line (whitespace
  separated; the path may contain spaces since the label is the last field) or a CSV file with a
  ``path`` and a ``label`` column (the header is optional: without one the first two columns are
  path and label). Paths are relative to ``root`` (default: the list file's folder).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from lra_diffusion.data.images import ImageDataset, check_files, check_on_error
from lra_diffusion.errors import InputError

IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif",
)

__all__ = ["IMG_EXTENSIONS", "ImageFolder", "ListFileDataset", "read_list_file"]


class ImageFolder(ImageDataset):
    """Images in ``root/<class>/<file>``, labelled by their class folder.

    Parameters
    ----------
    root
        The tree's root directory.
    classes
        Class names (folder names) in label order; default: all sub-folders, sorted. Folders not
        listed are ignored; a listed folder that is missing is an error.
    extensions
        File suffixes (case-insensitive) that count as images; other files are ignored.
    on_error
        ``"skip"``: leave out files whose image header cannot be read, with one warning;
        ``"raise"`` (default) reads nothing up front, and a bad file raises
        :class:`InputError` naming it when it is decoded.

    Attributes
    ----------
    paths : list[str]
        ``<class>/<file>`` relative to ``root``, in index order.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        on_error = check_on_error(on_error)
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"image folder not found: {root}")
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is None:
            classes = found
            if not classes:
                raise InputError(f"{root} is not an ImageFolder tree: expected one sub-folder per "
                                 "class (root/<class>/<image>), found none")
        else:
            classes = [str(c) for c in classes]
            missing = [c for c in classes if c not in found]
            if missing:
                raise InputError(f"class folder {root / missing[0]} not found")
        exts = tuple(e.lower() for e in extensions)
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            files = []
            for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = Path(dirpath).relative_to(root)
                files.extend((rel / f).as_posix() for f in filenames
                             if f.lower().endswith(exts) and not f.startswith("."))
            if not files:
                raise InputError(f"class folder {root / name} has no images "
                                 f"(looked for {', '.join(exts)})")
            files.sort()
            paths.extend(files)
            labels.extend([label] * len(files))
        keep = None
        if on_error == "skip":
            keep = check_files(root, paths, on_error="skip", source=str(root))
            paths = [paths[i] for i in keep]
            labels = [labels[i] for i in keep]
        # Skipped items leave gaps: indices stay the positions in the full sorted listing.
        super().__init__(root=root, labels=labels, classes=classes, paths=paths, indices=keep)


def read_list_file(
    path: str | os.PathLike,
    *,
    delimiter: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Read ``relative/path label`` pairs from a list file.

    Parameters
    ----------
    path
        ``.csv`` files (or any file when ``delimiter`` is given) are read as CSV with an optional
        header naming ``path`` and ``label`` columns; other files as whitespace-separated lines
        whose last field is the label. Blank lines and lines starting with ``#`` are ignored.
    delimiter
        CSV delimiter; ``None`` means whitespace for non-CSV files and ``,`` for ``.csv``.

    Returns
    -------
    paths : list[str]
        Length N.
    labels : np.ndarray
        int64 ``(N,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    paths: list[str] = []
    labels: list[int] = []
    is_csv = delimiter is not None or path.suffix.lower() in (".csv", ".tsv")
    if is_csv:
        delim = delimiter if delimiter is not None else ("\t" if path.suffix.lower() == ".tsv" else ",")
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=delim))
        rows = [(n, r) for n, r in enumerate(rows, start=1) if r and any(c.strip() for c in r)]
        if not rows:
            raise InputError(f"{path}: no entries")
        first = [c.strip() for c in rows[0][1]]
        pi, li = 0, 1
        if not _is_int(first[-1]):  # a header row
            low = [c.lower() for c in first]
            if "path" not in low or "label" not in low:
                raise InputError(f"{path}: the header must name 'path' and 'label' columns, got {first}")
            pi, li = low.index("path"), low.index("label")
            rows = rows[1:]
        for lineno, row in rows:
            if len(row) <= max(pi, li):
                raise InputError(f"{path} line {lineno}: expected at least {max(pi, li) + 1} fields")
            p, lab = row[pi].strip(), row[li].strip()
            if not _is_int(lab):
                raise InputError(f"{path} line {lineno}: label {lab!r} is not an integer")
            paths.append(p)
            labels.append(int(lab))
    else:
        with open(path) as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.rsplit(None, 1)
                if len(parts) != 2:
                    raise InputError(f"{path} line {lineno}: expected 'relative/path label', got {line!r}")
                if not _is_int(parts[1]):
                    raise InputError(f"{path} line {lineno}: label {parts[1]!r} is not an integer")
                paths.append(parts[0])
                labels.append(int(parts[1]))
    if not paths:
        raise InputError(f"{path}: no entries")
    return paths, np.asarray(labels, dtype=np.int64)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


class ListFileDataset(ImageDataset):
    """Images listed in a file as ``relative/path label`` (see :func:`read_list_file`).

    Parameters
    ----------
    list_file
        The list file.
    root
        Directory the paths are relative to; default: the list file's folder.
    classes
        Class names in label order; default ``["0", "1", ...]`` up to ``num_classes``.
    num_classes
        C; default ``len(classes)`` or the largest label + 1. Labels outside ``0..C-1`` are an
        error naming the line.
    delimiter
        As in :func:`read_list_file`.
    on_error
        ``"raise"``: a missing file is an error naming it; ``"skip"``: missing files and files
        whose header cannot be read are left out with one warning.
    check_exists
        Check that every file exists when the dataset is built (cheap; turn off for very large
        lists on slow storage).
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        *,
        root: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        delimiter: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        list_file = Path(list_file)
        root = list_file.parent if root is None else Path(root)
        if not root.is_dir():
            raise InputError(f"image root not found: {root}")
        paths, labels = read_list_file(list_file, delimiter=delimiter)
        if classes is not None:
            classes = [str(c) for c in classes]
            if num_classes is not None and num_classes != len(classes):
                raise InputError(f"num_classes={num_classes} but {len(classes)} class names given")
            num_classes = len(classes)
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise InputError(f"{list_file}: label {labels[bad[0]]} of {paths[bad[0]]} is outside "
                             f"0..{num_classes - 1}")
        if classes is None:
            classes = [str(c) for c in range(num_classes)]
        keep = None
        if check_exists or on_error == "skip":
            keep = check_files(root, paths, on_error=on_error, source=str(list_file))
            paths = [paths[i] for i in keep]
            labels = labels[keep]
        # Indices are line positions among the entries, so label files keep lining up after skips.
        super().__init__(root=root, labels=labels, classes=classes, paths=paths, indices=keep)
        self.list_file = list_file
