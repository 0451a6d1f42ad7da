"""Real-world noisy datasets in their official on-disk formats.

* :class:`Food101N` (Lee et al., CVPR 2018): ``Food-101N_release/meta/{classes.txt,imagelist.tsv,
  verified_train.tsv,verified_val.tsv}`` and ``images/<class>/<file>.jpg``; tested on
  :class:`Food101` (``food-101/meta/{classes.txt,train.txt,test.txt}``, ``images/``).
* :class:`Clothing1M` (Xiao et al., CVPR 2015): ``noisy_label_kv.txt``, ``clean_label_kv.txt``,
  ``clean_{train,val,test}_key_list.txt`` (and ``noisy_train_key_list.txt``), in the root or in
  ``annotations/``; keys are image paths relative to the root (``images/0/00/xxx.jpg``). 14 classes.
* :class:`MiniWebVision` (Li et al., 2017; Jiang et al., 2018): the Google images of the first 50
  classes, ``info/train_filelist_google.txt`` and ``info/val_filelist.txt`` (validation images in
  ``val_images_256/``); class ids follow ``info/synsets.txt``.
* :class:`ILSVRC12Val`: the ILSVRC2012 validation images of the same classes, mapped through the
  synset ids; either a folder per synset (``val/<synset>/<file>``) or a flat folder with the
  ``LOC_val_solution.csv`` annotation file.

All datasets list files cheaply and check that each listed file exists (``check_exists=True``); a
missing file raises :class:`InputError` naming it, or is skipped with a warning when
``on_error="skip"``. Index order is the order of the official list files.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from lra_diffusion.data.images import ImageDataset, check_files, check_on_error
from lra_diffusion.errors import InputError

__all__ = [
    "CLOTHING1M_CLASSES",
    "Clothing1M",
    "Food101",
    "Food101N",
    "ILSVRC12Val",
    "MiniWebVision",
    "read_webvision_synsets",
]

CLOTHING1M_CLASSES: tuple[str, ...] = (
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
    "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based line numbers."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [(n, s.strip()) for n, s in enumerate(f, start=1) if s.strip()]


def _find_dir(root: Path, marker: str, candidates: Sequence[str], what: str) -> Path:
    """The first of ``root / c`` (for c in candidates) that holds ``marker``."""
    if not root.exists():
        raise InputError(f"{what} directory not found: {root}")
    for c in candidates:
        if (root / c / marker).is_file():
            return root / c
    raise InputError(f"{root} is not in the {what} format: {marker} not found in "
                     + ", ".join(str(root / c) if c else str(root) for c in candidates))


def _finish(
    self: ImageDataset,
    *,
    root: Path,
    paths: list[str],
    labels: np.ndarray,
    classes: Sequence[str],
    on_error: str,
    source: str,
    check_exists: bool,
) -> np.ndarray | None:
    """Check files and initialise ``self``; returns the kept positions (``None``: all kept)."""
    keep = None
    if check_exists or on_error == "skip":
        keep = check_files(root, paths, on_error=on_error, source=source)  # type: ignore[arg-type]
        if len(keep) == len(paths):
            keep = None
        else:
            paths = [paths[i] for i in keep]
            labels = labels[keep]
    ImageDataset.__init__(self, root=root, labels=labels, classes=classes, paths=paths, indices=keep)
    return keep


# ---------------------------------------------------------------------------------------------
# Food-101N and Food-101
# ---------------------------------------------------------------------------------------------
def _food_classes(path: Path) -> list[str]:
    names = [s for _, s in _lines(path)]
    if names and names[0] == "class_name":  # Food-101N's classes.txt has a header line
        names = names[1:]
    if len(set(names)) != len(names) or not names:
        raise InputError(f"{path}: expected one unique class name per line")
    return names


class Food101N(ImageDataset):
    """Food-101N: 310k web images of the 101 Food-101 classes, labelled by their search query.

    Parameters
    ----------
    root
        The ``Food-101N_release`` folder (or its parent).
    split
        ``"train"`` (all images in ``meta/imagelist.tsv``), or ``"verified_train"`` /
        ``"verified_val"`` (the human-verified subsets, with a ``verified`` flag per image).
    on_error, check_exists
        See the module docstring.

    Attributes
    ----------
    verified : np.ndarray | None
        bool ``(N,)`` for the verified splits: whether the (query) label is correct.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Literal["train", "verified_train", "verified_val"] = "train",
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        files = {"train": "imagelist.tsv", "verified_train": "verified_train.tsv",
                 "verified_val": "verified_val.tsv"}
        if split not in files:
            raise InputError(f"split={split!r} is not one of {', '.join(files)}")
        base = _find_dir(Path(root), "meta/classes.txt", ["", "Food-101N_release"], "Food-101N")
        classes = _food_classes(base / "meta" / "classes.txt")
        index = {c: i for i, c in enumerate(classes)}
        list_path = base / "meta" / files[split]
        paths: list[str] = []
        labels: list[int] = []
        verified: list[bool] = []
        rows = _lines(list_path)
        if rows and rows[0][1].startswith("class_name"):
            rows = rows[1:]
        for lineno, line in rows:
            parts = line.split("\t") if "\t" in line else line.split()
            key = parts[0]
            cls = key.split("/", 1)[0]
            if cls not in index or "/" not in key:
                raise InputError(f"{list_path} line {lineno}: {key!r} is not '<class>/<file>' with a "
                                 "class from meta/classes.txt")
            if split != "train":
                if len(parts) < 2 or parts[1] not in ("0", "1"):
                    raise InputError(f"{list_path} line {lineno}: expected '<class>/<file>\\t0|1'")
                verified.append(parts[1] == "1")
            paths.append(f"images/{key}")
            labels.append(index[cls])
        keep = _finish(self, root=base, paths=paths, labels=np.asarray(labels, dtype=np.int64),
                       classes=classes, on_error=on_error, source=str(list_path),
                       check_exists=check_exists)
        self.split = split
        self.verified = None
        if split != "train":
            v = np.asarray(verified, dtype=bool)
            self.verified = v if keep is None else v[keep]


class Food101(ImageDataset):
    """Food-101 (Bossard et al., 2014), the clean test set for Food-101N.

    Parameters
    ----------
    root
        The ``food-101`` folder (``meta/classes.txt``, ``meta/{train,test}.txt``, ``images/``) or its
        parent.
    split
        ``"test"`` (25,250 images) or ``"train"``.
    classes
        Class names in label order; default ``meta/classes.txt``. Pass ``Food101N(...).classes``
        to make sure both use the same ids (they must name the same classes).
    on_error, check_exists
        See the module docstring.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Literal["train", "test"] = "test",
        classes: Sequence[str] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        if split not in ("train", "test"):
            raise InputError(f"split={split!r} is not one of train, test")
        base = _find_dir(Path(root), "meta/classes.txt", ["", "food-101"], "Food-101")
        own = _food_classes(base / "meta" / "classes.txt")
        if classes is None:
            classes = own
        else:
            classes = [str(c) for c in classes]
            if sorted(classes) != sorted(own):
                raise InputError(f"{base / 'meta' / 'classes.txt'} names different classes from the "
                                 "ones given (Food-101N and Food-101 must share the 101 classes)")
        index = {c: i for i, c in enumerate(classes)}
        list_path = base / "meta" / f"{split}.txt"
        paths: list[str] = []
        labels: list[int] = []
        for lineno, key in _lines(list_path):
            cls = key.split("/", 1)[0]
            if cls not in index or "/" not in key:
                raise InputError(f"{list_path} line {lineno}: {key!r} is not '<class>/<image id>'")
            paths.append(f"images/{key}.jpg")
            labels.append(index[cls])
        _finish(self, root=base, paths=paths, labels=np.asarray(labels, dtype=np.int64),
                classes=classes, on_error=on_error, source=str(list_path), check_exists=check_exists)
        self.split = split


# ---------------------------------------------------------------------------------------------
# Clothing1M
# ---------------------------------------------------------------------------------------------
def _read_kv(path: Path, num_classes: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path} line {lineno}: expected '<image key> <label>', got {line!r}")
        try:
            lab = int(parts[1])
        except ValueError:
            raise InputError(f"{path} line {lineno}: label {parts[1]!r} is not an integer") from None
        if not 0 <= lab < num_classes:
            raise InputError(f"{path} line {lineno}: label {lab} is outside 0..{num_classes - 1}")
        out[parts[0]] = lab
    return out


class Clothing1M(ImageDataset):
    """Clothing1M: 1M online-shopping images with noisy labels and small clean subsets.

    Parameters
    ----------
    root
        The Clothing1M folder: the annotation files in it or in ``annotations/``, the images
        under it (keys such as ``images/0/00/xxx.jpg`` are relative to it).
    split
        ``"noisy_train"`` (keys of ``noisy_train_key_list.txt``, or every key of
        ``noisy_label_kv.txt`` when that list is absent; noisy labels), ``"clean_train"``,
        ``"clean_val"`` (14,313 images) or ``"clean_test"`` (10,526; clean labels).
    key_list
        Use these keys instead (a file with one key per line), e.g. the paper's selected subset.
    on_error, check_exists
        See the module docstring.

    Attributes
    ----------
    clean_labels : np.ndarray
        int64 ``(N,)``: the clean label where ``clean_label_kv.txt`` has one, else -1.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Literal["noisy_train", "clean_train", "clean_val", "clean_test"] = "noisy_train",
        key_list: str | os.PathLike | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        splits = ("noisy_train", "clean_train", "clean_val", "clean_test")
        if split not in splits:
            raise InputError(f"split={split!r} is not one of {', '.join(splits)}")
        root = Path(root)
        noisy_file = "noisy_label_kv.txt" if split == "noisy_train" else "clean_label_kv.txt"
        ann = _find_dir(root, noisy_file, ["", "annotations"], "Clothing1M")
        names_file = ann / "category_names_eng.txt"
        classes = [s for _, s in _lines(names_file)] if names_file.is_file() else list(CLOTHING1M_CLASSES)
        if len(classes) != 14:
            raise InputError(f"{names_file}: expected 14 class names, got {len(classes)}")
        C = len(classes)
        clean_kv = _read_kv(ann / "clean_label_kv.txt", C) if (ann / "clean_label_kv.txt").is_file() else {}
        if split == "noisy_train":
            kv = _read_kv(ann / "noisy_label_kv.txt", C)
            kv_name = ann / "noisy_label_kv.txt"
            default_list = ann / "noisy_train_key_list.txt"
        else:
            kv = clean_kv
            kv_name = ann / "clean_label_kv.txt"
            default_list = ann / f"{split}_key_list.txt"
        if key_list is not None:
            list_path = Path(key_list)
        elif default_list.is_file() or split != "noisy_train":
            list_path = default_list
        else:
            list_path = None
        if list_path is None:
            keys = list(kv)
            source = str(kv_name)
        else:
            keys = []
            for lineno, key in _lines(list_path):
                if key not in kv:
                    raise InputError(f"{list_path} line {lineno}: key {key} has no label in {kv_name}")
                keys.append(key)
            source = str(list_path)
        labels = np.asarray([kv[k] for k in keys], dtype=np.int64)
        clean = np.asarray([clean_kv.get(k, -1) for k in keys], dtype=np.int64)
        keep = _finish(self, root=root, paths=keys, labels=labels, classes=classes,
                       on_error=on_error, source=source, check_exists=check_exists)
        self.split = split
        self.clean_labels = clean if keep is None else clean[keep]


# ---------------------------------------------------------------------------------------------
# mini-WebVision and the ILSVRC2012 validation subset
# ---------------------------------------------------------------------------------------------
_SYNSET = re.compile(r"^n\d{8}$")


def read_webvision_synsets(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read WebVision's ``info/synsets.txt`` (``n01440764 tench, Tinca tinca`` per line).

    Returns
    -------
    synsets : list[str]
        WordNet ids in WebVision class order (class ``c`` is ``synsets[c]``).
    descriptions : list[str]
        The words after each id.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "info" / "synsets.txt"
    ids, words = [], []
    for lineno, line in _lines(path):
        sid, _, desc = line.partition(" ")
        if not _SYNSET.match(sid):
            raise InputError(f"{path} line {lineno}: {sid!r} is not a WordNet id like n01440764")
        ids.append(sid)
        words.append(desc.strip())
    return ids, words


def _webvision_list(path: Path, num_classes: int) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path} line {lineno}: expected '<path> <label>', got {line!r}")
        try:
            lab = int(parts[1])
        except ValueError:
            raise InputError(f"{path} line {lineno}: label {parts[1]!r} is not an integer") from None
        if lab < 0 or lab >= 1000:
            raise InputError(f"{path} line {lineno}: label {lab} is outside 0..999")
        if lab < num_classes:
            paths.append(parts[0])
            labels.append(lab)
    return paths, labels


class MiniWebVision(ImageDataset):
    """mini-WebVision: WebVision 1.0's Google images of the first ``num_classes`` (50) classes.

    Parameters
    ----------
    root
        The WebVision folder (``info/``, ``google/``, ``val_images_256/``).
    split
        ``"train"`` (``info/train_filelist_google.txt``) or ``"val"`` (``info/val_filelist.txt``).
    num_classes
        Keep classes ``0..num_classes-1`` (50 for mini-WebVision).
    on_error, check_exists
        See the module docstring.

    Attributes
    ----------
    synsets : list[str] | None
        WordNet ids of the kept classes when ``info/synsets.txt`` is present.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: Literal["train", "val"] = "train",
        num_classes: int = 50,
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        if split not in ("train", "val"):
            raise InputError(f"split={split!r} is not one of train, val")
        if not 1 <= num_classes <= 1000:
            raise InputError(f"num_classes={num_classes} must lie in 1..1000")
        list_name = "train_filelist_google.txt" if split == "train" else "val_filelist.txt"
        root = _find_dir(Path(root), f"info/{list_name}", [""], "WebVision")
        list_path = root / "info" / list_name
        paths, labels = _webvision_list(list_path, num_classes)
        if split == "val":
            folder = next((d for d in ("val_images_256", "val_images") if (root / d).is_dir()), None)
            if folder is None:
                raise InputError(f"{root} has no val_images_256/ (or val_images/) folder")
            paths = [f"{folder}/{p}" for p in paths]
        synsets = None
        classes = [str(c) for c in range(num_classes)]
        if (root / "info" / "synsets.txt").is_file():
            ids, _ = read_webvision_synsets(root / "info" / "synsets.txt")
            synsets = ids[:num_classes]
            classes = list(synsets)
        if not paths:
            raise InputError(f"{list_path}: no images of classes 0..{num_classes - 1}")
        _finish(self, root=root, paths=paths, labels=np.asarray(labels, dtype=np.int64),
                classes=classes, on_error=on_error, source=str(list_path), check_exists=check_exists)
        self.split = split
        self.synsets = synsets


class ILSVRC12Val(ImageDataset):
    """The ILSVRC2012 validation images of the mini-WebVision classes, labelled by WebVision id.

    Parameters
    ----------
    root
        Either a folder per synset (``<root>/n01440764/ILSVRC2012_val_00000293.JPEG``) or a flat
        folder of ``ILSVRC2012_val_*.JPEG`` with ``LOC_val_solution.csv`` in it or its parent.
    synsets
        WordNet ids in WebVision class order: a list, WebVision's ``info/synsets.txt`` or the
        WebVision root.
    num_classes
        Keep the first ``num_classes`` synsets (50).
    on_error, check_exists
        See the module docstring.

    Index order is by file name (``ILSVRC2012_val_00000001`` first) for both layouts.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        synsets: Sequence[str] | str | os.PathLike,
        num_classes: int = 50,
        on_error: Literal["raise", "skip"] = "raise",
        check_exists: bool = True,
    ) -> None:
        on_error = check_on_error(on_error)
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"ILSVRC2012 validation folder not found: {root}")
        ids = read_webvision_synsets(synsets)[0] if isinstance(synsets, (str, os.PathLike)) else list(synsets)
        if len(ids) < num_classes:
            raise InputError(f"{len(ids)} synsets given, fewer than num_classes={num_classes}")
        wanted = {s: i for i, s in enumerate(ids[:num_classes])}
        entries: list[tuple[str, int]] = []
        synset_dirs = [d for d in root.iterdir() if d.is_dir() and _SYNSET.match(d.name)]
        if synset_dirs:
            source = str(root)
            for d in synset_dirs:
                if d.name in wanted:
                    entries.extend((f"{d.name}/{f.name}", wanted[d.name]) for f in d.iterdir()
                                   if f.is_file() and not f.name.startswith("."))
            entries.sort(key=lambda e: e[0].split("/")[-1])
        else:
            sol = next((p for p in (root / "LOC_val_solution.csv", root.parent / "LOC_val_solution.csv")
                        if p.is_file()), None)
            if sol is None:
                raise InputError(f"{root} is not an ILSVRC2012 validation folder: expected synset "
                                 "sub-folders (n01440764/...) or LOC_val_solution.csv")
            source = str(sol)
            with open(sol, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                    raise InputError(f"{sol}: expected the header 'ImageId,PredictionString'")
                for lineno, row in enumerate(reader, start=2):
                    if len(row) < 2 or not row[1].split():
                        raise InputError(f"{sol} line {lineno}: expected 'ImageId,<synset> ...'")
                    sid = row[1].split()[0]
                    if sid in wanted:
                        entries.append((f"{row[0].strip()}.JPEG", wanted[sid]))
            entries.sort()
        if not entries:
            raise InputError(f"{root}: no validation images of the first {num_classes} synsets")
        paths = [p for p, _ in entries]
        labels = np.asarray([y for _, y in entries], dtype=np.int64)
        _finish(self, root=root, paths=paths, labels=labels, classes=ids[:num_classes],
                on_error=on_error, source=source, check_exists=check_exists)
        self.synsets = ids[:num_classes]
