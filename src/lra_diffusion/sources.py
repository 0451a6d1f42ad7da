"""Where ``lra run`` and ``lra predict --images`` get images and labels from, checked up front.

An image source is one of

* a folder: an ImageFolder tree ``DIR/<class>/<image>`` (the folder names are the classes), or, for
  prediction, any folder of images;
* a list file: one ``relative/path label`` per line (or a CSV with ``path`` and ``label`` columns),
  paths relative to ``root`` (default: the list file's folder); for prediction the label may be absent;
* a known dataset by name (``cifar10`` or ``cifar10:test``: the shared JPEG copy under ``root``).

A separate label file (``labels=``) replaces the source's labels. It is either a *path list* (the same
format as a list file; its rows name the images, so for a folder the rows define the training set and
their order) or a label file aligned with the source's image order (``.npy``, an ``index,label`` CSV,
one label per line; see :func:`lra_diffusion.data.load_label_file`). Labels are class ids ``0..C-1`` or
class names. Everything here is cheap (directory listings, ``stat`` calls, reading text files), so bad
input fails in seconds, before any image is decoded.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import IMG_EXTENSIONS, CIFAR10_CLASSES, ImageDataset, ImageFolder, load_label_file
from .errors import InputError

# known datasets: name -> (class names, its ImageDataset given root and split)
KNOWN_DATASETS: tuple[str, ...] = ("cifar10",)


@dataclass
class ImageSet:
    """Images with (optional) labels: ``dataset.image(i)`` is image i, ``labels[i]`` its class id.

    ``labels`` index ``class_names``; None when the source carries no labels (prediction only).
    """

    dataset: ImageDataset
    labels: np.ndarray | None
    class_names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        """The file (or archive member) of image i, for messages and output files."""
        return self.dataset.image_name(int(i))

    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]


def open_image_set(
    spec: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    labels_column: str | None = None,
    classes: list[str] | None = None,
    require_labels: bool = True,
    what: str = "images",
) -> ImageSet:
    """Open an image source (folder, list file or known dataset) with its labels; see the module doc.

    Parameters
    ----------
    spec : the folder, the list file, or ``NAME[:SPLIT]`` of a known dataset.
    root : folder the list file's paths are relative to; a known dataset's root.
    labels : a label file replacing the source's labels (a path list or an aligned label file).
    labels_column : the label column of an aligned CSV / ``.pt`` label file.
    classes : the class names the labels must map onto (a trained run's); folder names and label
        names are matched by name. None: the source defines its classes.
    require_labels : fail when no label is found (training, evaluation); otherwise unlabelled
        folders and list files of paths only are accepted (prediction).
    what : how to call the source in messages (``images``, ``test images``).
    """
    name, _, split = str(spec).partition(":")
    path = Path(spec)
    if not path.exists() and name in KNOWN_DATASETS:
        return _known(name, split or "train", root, labels, labels_column, classes, what)
    if path.is_dir():
        return _folder(path, labels, labels_column, classes, require_labels, what)
    if path.is_file():
        return _list_file(path, root, labels, labels_column, classes, require_labels, what)
    raise InputError(f"{what}: {spec} is not a folder, a list file or a known dataset "
                     f"({', '.join(KNOWN_DATASETS)})")


# ---- the three kinds of source -------------------------------------------------------------------
def _folder(path, labels, labels_column, classes, require_labels, what) -> ImageSet:
    subfolders = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if labels is not None:
        names = classes if classes is not None else (subfolders or None)
        if is_path_list(labels):
            rows = read_path_list(labels)
            return _from_rows(path, rows, labels, names, True, f"{what} {path} labelled by {labels}")
        tree = ImageFolder(path)
        ids = _aligned(labels, labels_column, len(tree), names or tree.classes)
        return ImageSet(tree, ids, list(names or tree.classes), f"{what} {path} labelled by {labels}")
    is_tree = bool(subfolders) and (classes is None or set(subfolders) <= set(classes))
    if is_tree:
        tree = ImageFolder(path)
        if classes is None:
            return ImageSet(tree, tree.labels, tree.classes, f"{what} {path} (class folders)")
        ids = np.asarray([classes.index(c) for c in tree.classes])[tree.labels]
        return ImageSet(tree, ids, list(classes), f"{what} {path} (class folders)")
    if require_labels:
        raise InputError(f"{what}: {path} has no class folders (DIR/<class>/<image>) and no --labels "
                         "file was given" if not subfolders else
                         f"{what}: class folder(s) {sorted(set(subfolders) - set(classes or []))[:5]} of "
                         f"{path} are not classes of the run ({', '.join(classes or [])})")
    files = list_images(path)
    if not files:
        raise InputError(f"{what}: no images in {path} (looked for {', '.join(IMG_EXTENSIONS)})")
    names = list(classes or ["?"])
    return ImageSet(ImageDataset(root=path, labels=np.zeros(len(files), np.int64), classes=names, paths=files),
                    None, names, f"{what} {path} (unlabelled)")


def _list_file(path, root, labels, labels_column, classes, require_labels, what) -> ImageSet:
    base = Path(root) if root is not None else path.parent
    if not base.is_dir():
        raise InputError(f"{what}: image root not found: {base}")
    rows = read_path_list(path, require_labels=require_labels and labels is None)
    if labels is None:
        unlabelled = rows.labels is None
        return _from_rows(base, rows, path, classes, not unlabelled, f"{what} listed in {path}")
    listed = _from_rows(base, rows, path, classes, False, "")
    if is_path_list(labels):
        lab = read_path_list(labels)
        where = {p: i for i, p in enumerate(rows.paths)}
        for lineno, p in zip(lab.linenos, lab.paths):
            if p not in where:
                raise InputError(f"{labels} line {lineno}: {p} is not one of the images listed in {path}")
        if len(lab.paths) != len(rows.paths):
            unlabelled = sorted(set(rows.paths) - set(lab.paths))
            raise InputError(f"{len(unlabelled)} image(s) listed in {path} have no label in {labels} "
                             f"(first: {unlabelled[0]})")
        order = np.asarray([where[p] for p in lab.paths])
        names, ids = label_ids(lab.labels, lab.linenos, labels, classes)
        ds = listed.dataset.subset(order)
        return ImageSet(_relabel(ds, ids, names), ids, names, f"{what} listed in {path} labelled by {labels}")
    names = classes if classes is not None else None
    ids = _aligned(labels, labels_column, len(listed), names)
    names = names or [str(c) for c in range(int(ids.max()) + 1)]
    return ImageSet(_relabel(listed.dataset, ids, names), ids, list(names), f"{what} listed in {path} labelled by {labels}")


def _known(name, split, root, labels, labels_column, classes, what) -> ImageSet:
    from .data import SharedCIFAR10

    if root is None:
        raise InputError(f"{what}: the known dataset {name!r} needs its root folder (--root)")
    if split not in ("train", "test"):
        raise InputError(f"{what}: {name} has splits train and test, not {split!r}")
    ds = SharedCIFAR10(root, split=split)
    names = list(CIFAR10_CLASSES)
    if classes is not None and classes != names:
        raise InputError(f"{what}: {name} has the classes {names}, the run has {classes}")
    desc = f"{what} {name}:{split} from {root}"
    if labels is None:
        return ImageSet(ds, ds.labels.copy(), names, desc)
    if is_path_list(labels):
        lab = read_path_list(labels)
        where = {p: i for i, p in enumerate(ds.paths)}
        missing = [(n, p) for n, p in zip(lab.linenos, lab.paths) if p not in where]
        if missing:
            raise InputError(f"{labels} line {missing[0][0]}: {missing[0][1]} is not an image of {name}:{split} "
                             f"(paths look like {ds.paths[0]}){_more(len(missing) - 1, 'missing')}")
        _, ids = label_ids(lab.labels, lab.linenos, labels, names)
        ds = ds.subset(np.asarray([where[p] for p in lab.paths]))
    else:
        ids = _aligned(labels, labels_column, len(ds), names)
    return ImageSet(_relabel(ds, ids, names), ids, names, f"{desc} labelled by {labels}")


def _from_rows(root: Path, rows: PathList, source, classes, labelled: bool, desc: str) -> ImageSet:
    """An ImageSet of the rows' paths under ``root``; every file must exist."""
    seen: dict[str, int] = {}
    for lineno, p in zip(rows.linenos, rows.paths):
        if p in seen:
            raise InputError(f"{source} line {lineno}: {p} was already listed on line {seen[p]}")
        seen[p] = lineno
    missing = [(n, p) for n, p in zip(rows.linenos, rows.paths) if not (root / p).is_file()]
    if missing:
        n, p = missing[0]
        raise InputError(f"{source} line {n}: image {root / p} not found{_more(len(missing) - 1, 'missing')}")
    if labelled and rows.labels is not None:
        names, ids = label_ids(rows.labels, rows.linenos, source, classes)
    else:
        names, ids = list(classes or ["?"]), None
    ds = ImageDataset(root=root, labels=ids if ids is not None else np.zeros(len(rows.paths), np.int64),
                      classes=names, paths=rows.paths)
    return ImageSet(ds, ids, names, desc)


def _relabel(ds: ImageDataset, ids: np.ndarray, names: list[str]) -> ImageDataset:
    new = object.__new__(type(ds))
    new.__dict__.update(ds.__dict__)
    new.labels, new.classes = np.asarray(ids, dtype=np.int64), list(names)
    return new


def _more(n: int, what: str) -> str:
    return f" (and {n} more {what})" if n > 0 else ""


# ---- label values --------------------------------------------------------------------------------
def label_ids(values: list[str], linenos: list[int], source, classes: list[str] | None
              ) -> tuple[list[str], np.ndarray]:
    """(class names, ids (N,)) for label values that are class ids or class names.

    With ``classes`` given, every value must name one of them (by id 0..C-1 or by name): a label of a
    class that has no images (no such folder, id out of range) fails naming its line.
    """
    all_int = all(_is_int(v) for v in values)
    if classes is None:
        if all_int:
            ints = np.asarray([int(v) for v in values], dtype=np.int64)
            bad = np.flatnonzero(ints < 0)
            if bad.size:
                raise InputError(f"{source} line {linenos[bad[0]]}: label {ints[bad[0]]} is negative")
            return [str(c) for c in range(int(ints.max()) + 1)], ints
        names = sorted(set(values))
        lookup = {c: i for i, c in enumerate(names)}
        return names, np.asarray([lookup[v] for v in values], dtype=np.int64)
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.empty(len(values), dtype=np.int64)
    for k, v in enumerate(values):
        if v in lookup:
            ids[k] = lookup[v]
        elif _is_int(v) and 0 <= int(v) < len(classes):
            ids[k] = int(v)
        else:
            shown = ", ".join(f"{i} {c}" for i, c in enumerate(classes[:12])) + (", ..." if len(classes) > 12 else "")
            raise InputError(f"{source} line {linenos[k]}: label {v!r} is not one of the classes that have "
                             f"images ({shown})")
    return list(classes), ids


def _aligned(labels, column, n: int, classes: list[str] | None) -> np.ndarray:
    """Labels (n,) from a file aligned with the image order (npy / index CSV / one per line / .pt)."""
    ids = load_label_file(labels, num_samples=n, column=column)
    if classes is not None:
        bad = np.flatnonzero((ids < 0) | (ids >= len(classes)))
        if bad.size:
            raise InputError(f"{labels}: label {ids[bad[0]]} of item {bad[0]} is not one of the classes that have "
                             f"images (0..{len(classes) - 1}: {', '.join(classes[:12])})")
    return ids


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


# ---- path lists ----------------------------------------------------------------------------------
@dataclass
class PathList:
    """Rows of a path list: relative paths (N,), their label values (N,) or None, 1-based line numbers."""

    paths: list[str]
    labels: list[str] | None
    linenos: list[int]


def is_path_list(path: str | os.PathLike) -> bool:
    """Whether a label file names its images (a path list) rather than being aligned with them.

    Path lists are text files whose first entry's path ends in an image suffix, or CSV files whose
    header has a ``path`` column; ``.npy`` / ``.pt`` files and everything else are aligned files.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file not found: {path}")
    if path.suffix.lower() in (".npy", ".pt", ".pth"):
        return False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if _is_csv(path):
                    cells = [c.strip().lower() for c in next(csv.reader([line], delimiter=_delim(path)))]
                    return "path" in cells or cells[0].endswith(IMG_EXTENSIONS)
                return (line.lower().endswith(IMG_EXTENSIONS)  # a path alone, or 'path label'
                        or line.rsplit(None, 1)[0].lower().endswith(IMG_EXTENSIONS))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text label file (not UTF-8)") from None
    return False


def read_path_list(path: str | os.PathLike, *, require_labels: bool = True) -> PathList:
    """Read ``relative/path label`` rows (whitespace-separated, the label last, so paths may hold
    spaces) or CSV rows with ``path`` and ``label`` columns (header optional). Labels are class ids or
    names; with ``require_labels=False`` a file of paths only is accepted (labels None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    entries: list[tuple[int, list[str]]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            if _is_csv(path):
                for lineno, row in enumerate(csv.reader(f, delimiter=_delim(path)), start=1):
                    cells = [c.strip() for c in row]
                    if any(cells) and not cells[0].startswith("#"):
                        entries.append((lineno, cells))
            else:
                for lineno, line in enumerate(f, start=1):
                    line = line.strip()
                    if line and not line.startswith("#"):
                        parts = line.rsplit(None, 1)
                        has_label = len(parts) == 2 and not parts[1].lower().endswith(IMG_EXTENSIONS)
                        entries.append((lineno, parts if has_label else [line]))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text list file (not UTF-8)") from None
    pi, li = 0, 1
    if entries and _is_csv(path) and "path" in [c.lower() for c in entries[0][1]]:
        header = [c.lower() for c in entries.pop(0)[1]]
        pi, li = header.index("path"), header.index("label") if "label" in header else -1
    if not entries:
        raise InputError(f"{path}: no entries")
    paths, labels, linenos = [], [], []
    for lineno, cells in entries:
        if len(cells) <= pi or not cells[pi]:
            raise InputError(f"{path} line {lineno}: expected 'relative/path label'")
        paths.append(Path(cells[pi]).as_posix())
        labels.append(cells[li] if 0 <= li < len(cells) and cells[li] else None)
        linenos.append(lineno)
    missing = [n for n, v in zip(linenos, labels) if v is None]
    if missing and (require_labels or len(missing) < len(labels)):
        raise InputError(f"{path} line {missing[0]}: no label (expected 'relative/path label')")
    return PathList(paths, None if missing else labels, linenos)


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".tsv")


def _delim(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, hidden ones skipped), relative, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(folder)
        found += [(rel / f).as_posix() for f in filenames if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)
