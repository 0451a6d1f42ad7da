"""Text classification datasets: CSV / JSONL files with a text column and label column(s).

A :class:`TextDataset` holds ``texts`` (list of str), ``labels`` (int64 ``(N,)``, the labels to learn
from, noisy where the data has them), ``classes`` (names, in label-id order) and optionally
``clean_labels`` (the gold labels, for benchmarks and the report). ``dataset[i]`` is
``(text, label, index)``, mirroring the image datasets, and ``fingerprint()`` hashes the texts so the
feature cache keys on content.

Labels in a file may be integer ids (``0..C-1``) or class names. Names map to ids through ``classes``
(given, or the sorted names found); pass the training set's ``classes`` when loading its test split
so the ids agree. Nothing assumes a number of classes.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lra_diffusion.errors import InputError

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass
class TextDataset:
    """Texts with integer labels; ``dataset[i] -> (text, label, index)``."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64 in 0..C-1
    classes: tuple[str, ...]
    clean_labels: np.ndarray | None = None  # (N,) int64 gold labels when known
    name: str = "text"
    root: Path | None = None
    indices: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) row ids in the file

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.texts):
            raise InputError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        if self.indices is None:
            self.indices = np.arange(len(self.texts), dtype=np.int64)
        self.classes = tuple(str(c) for c in self.classes)
        if self.clean_labels is not None:
            self.clean_labels = np.asarray(self.clean_labels, dtype=np.int64).reshape(-1)
            if len(self.clean_labels) != len(self.texts):
                raise InputError(f"{self.name}: clean labels do not match the {len(self.texts)} texts")
        for what, y in (("labels", self.labels), ("clean labels", self.clean_labels)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise InputError(
                    f"{self.name}: {what} must be in 0..{len(self.classes) - 1}, got {y.min()}..{y.max()}"
                )

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int, int]:
        return self.texts[i], int(self.labels[i]), int(self.indices[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Hash of the texts in order (labels do not change features)."""
        from lra_diffusion.encoders.text import texts_fingerprint

        return texts_fingerprint(self.texts)

    def noise_rate(self) -> float | None:
        """Fraction of ``labels`` that differ from ``clean_labels`` (None when no clean labels)."""
        if self.clean_labels is None or not len(self):
            return None
        return float((self.labels != self.clean_labels).mean())

    def subset(self, rows: np.ndarray) -> TextDataset:
        """The rows ``rows`` (int indices or a boolean mask) as a new dataset."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        return TextDataset(
            [self.texts[i] for i in rows], self.labels[rows], self.classes,
            None if self.clean_labels is None else self.clean_labels[rows], self.name, self.root,
            self.indices[rows],
        )


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a CSV / TSV (with a header; quoted fields may hold newlines) or JSON Lines file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"text file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise InputError(f"text file {p} must end in one of {', '.join(TEXT_SUFFIXES)}")
    try:
        if suffix in (".csv", ".tsv"):
            with open(p, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        rows = []
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{p}:{n}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise InputError(f"{p}:{n}: each line must be a JSON object")
                    rows.append(row)
        return rows
    except UnicodeDecodeError as e:
        raise InputError(f"text file {p} is not UTF-8: {e}") from None


def _column(rows: list[dict[str, Any]], column: str, path: Path) -> list[Any]:
    if rows and column not in rows[0]:
        raise InputError(f"{path} has no column {column!r}; it has {sorted(rows[0])}")
    missing = next((i for i, r in enumerate(rows) if r.get(column) in (None, "")), None)
    if missing is not None:
        raise InputError(f"{path}: row {missing} has no value in column {column!r}")
    return [r[column] for r in rows]


def encode_labels(
    values: list[Any], classes: tuple[str, ...] | list[str] | None, *, where: str = "labels"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label values (ids or names) -> int64 ids ``(N,)`` and the class names.

    Integer ids (ints or digit strings) are used as they are when ``classes`` is None (names become
    ``"0".."C-1"``) or when they are not class names themselves; names are looked up in ``classes``
    (default: the sorted distinct names).
    """
    strs = [str(v).strip() for v in values]
    if classes is not None:
        classes = tuple(str(c) for c in classes)
        index = {c: i for i, c in enumerate(classes)}
        if all(s in index for s in strs):
            return np.array([index[s] for s in strs], dtype=np.int64), classes
    if all(_is_int(s) for s in strs):
        ids = np.array([int(s) for s in strs], dtype=np.int64)
        if len(ids) and ids.min() < 0:
            raise InputError(f"{where}: label ids must be >= 0, got {ids.min()}")
        if classes is None:
            classes = tuple(str(i) for i in range(int(ids.max()) + 1 if len(ids) else 0))
        if len(ids) and ids.max() >= len(classes):
            raise InputError(f"{where}: label id {ids.max()} but only {len(classes)} classes")
        return ids, tuple(classes)
    if classes is None:
        classes = tuple(sorted(set(strs)))
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[s] for s in strs], dtype=np.int64), classes
    unknown = sorted(set(strs) - set(classes))
    raise InputError(f"{where}: unknown class name(s) {unknown[:5]}; known: {list(classes)[:10]}...")


def _is_int(s: str) -> bool:
    return s.isdigit() or (s[:1] == "-" and s[1:].isdigit())


def load_text_file(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str = "label",
    clean_label_column: str | None = None,
    classes: tuple[str, ...] | list[str] | None = None,
    name: str | None = None,
) -> TextDataset:
    """A :class:`TextDataset` from a CSV / TSV / JSONL file.

    ``label_column`` holds the labels to learn from; ``clean_label_column`` optionally the gold
    labels. ``classes`` fixes the id of every class name (pass the training set's for a test split).
    """
    p = Path(path)
    rows = read_records(p)
    if not rows:
        raise InputError(f"text file {p} has no rows")
    texts = [str(t) for t in _column(rows, text_column, p)]
    values = _column(rows, label_column, p)
    clean_values = None if clean_label_column is None else _column(rows, clean_label_column, p)
    if classes is None:  # one class list for both columns: the clean labels may use more classes
        _, classes = encode_labels(values + (clean_values or []), None, where=str(p))
    labels, classes = encode_labels(values, classes, where=f"{p}:{label_column}")
    clean = None
    if clean_values is not None:
        clean, _ = encode_labels(clean_values, classes, where=f"{p}:{clean_label_column}")
    return TextDataset(texts, labels, classes, clean, name or p.stem, p.parent)


def load_noisy_ag_news(root: str | os.PathLike[str], split: str = "train") -> TextDataset:
    """NoisyAG-News: ``train`` (10,000 crowd labels, 19.75% noise) or ``test`` (7,600 clean).

    ``labels`` are the crowd (majority-of-three) labels, ``clean_labels`` the gold ones.
    """
    if split not in ("train", "test"):
        raise InputError(f"NoisyAG-News split must be 'train' or 'test', got {split!r}")
    ds = load_text_file(Path(root) / f"{split}.csv", label_column="noisy_label",
                        clean_label_column="clean_label", classes=AG_NEWS_CLASSES,
                        name=f"noisy-ag-news-{split}")
    ds.indices = _index_column(Path(root) / f"{split}.csv", len(ds))
    return ds


def load_banking77(root: str | os.PathLike[str], split: str = "train") -> TextDataset:
    """Banking77: ``train`` (10,003) or ``test`` (3,080) with clean labels, 77 intents.

    Class ids follow ``categories.json`` when present (else the sorted names).
    """
    if split not in ("train", "test"):
        raise InputError(f"Banking77 split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    cats = root / "categories.json"
    classes = tuple(json.loads(cats.read_text())) if cats.is_file() else None
    if classes is None:  # the class ids must not depend on the split
        classes = tuple(sorted({str(r["category"]) for r in read_records(root / "train.csv")}))
    ds = load_text_file(root / f"{split}.csv", label_column="category", classes=classes,
                        name=f"banking77-{split}")
    ds.clean_labels = ds.labels.copy()
    return ds


def _index_column(path: Path, n: int) -> np.ndarray:
    rows = read_records(path)
    if rows and "index" in rows[0] and all(_is_int(str(r["index"])) for r in rows):
        return np.array([int(r["index"]) for r in rows], dtype=np.int64)
    return np.arange(n, dtype=np.int64)


TEXT_DATASETS = {"noisy-ag-news": load_noisy_ag_news, "banking77": load_banking77}


def find_text_file(root: str | os.PathLike[str], split: str) -> Path:
    """``root`` itself when it is a file, else ``root/<split>.csv`` (or ``.jsonl``, ``.tsv``, ``.json``)."""
    root = Path(root)
    if root.is_file():
        return root
    for suffix in TEXT_SUFFIXES:
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    raise InputError(f"no {split}.csv / {split}.jsonl / {split}.tsv under {root}")


def read_texts(path: str | os.PathLike[str], text_column: str = "text") -> list[str]:
    """Only the texts of a CSV / TSV / JSONL file (no labels needed, e.g. to embed it)."""
    p = Path(path)
    return [str(t) for t in _column(read_records(p), text_column, p)]


def open_texts(dataset: str, root: str | os.PathLike[str], split: str, **columns: Any) -> TextDataset:
    """One split of a named text dataset (``noisy-ag-news``, ``banking77``), or ``text``: the file
    :func:`find_text_file` finds, read by :func:`load_text_file` with ``columns``."""
    if dataset in TEXT_DATASETS:
        return TEXT_DATASETS[dataset](root, split)
    if dataset == "text":
        return load_text_file(find_text_file(root, split), **columns)
    choices = ", ".join([*TEXT_DATASETS, "text"])
    raise InputError(f"unknown text dataset {dataset!r}; choose one of {choices}")
