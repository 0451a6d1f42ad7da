"""File-level noisy-label making, the logic behind ``lra noise``.

:func:`make_noisy_label_file` reads a clean label file, applies a noise model (and optional models
on top), writes the noisy labels and returns a :class:`NoiseReport`; :func:`format_report` renders
the realised rate and transition matrix for the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lra_diffusion.data.labels import load_label_file, save_label_file
from lra_diffusion.data.noise import make_noisy_labels, noise_rate
from lra_diffusion.errors import InputError

__all__ = ["NoiseReport", "format_report", "make_noisy_label_file"]


@dataclass(frozen=True)
class NoiseReport:
    """What :func:`make_noisy_label_file` did.

    Attributes
    ----------
    output : Path
    model : str
        The model chain, e.g. ``"pmd:0.35+symmetric:0.6"``.
    seed : int
    num_samples, num_classes : int
    rate : float
        Realised fraction of labels changed.
    transition : np.ndarray
        float64 ``(C, C)`` realised transition matrix (rows: clean class).
    """

    output: Path
    model: str
    seed: int
    num_samples: int
    num_classes: int
    rate: float
    transition: np.ndarray


def _load_array(path: str | os.PathLike | None, what: str, n: int) -> np.ndarray | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")
    if p.suffix.lower() != ".npy":
        raise InputError(f"{p}: {what} must be a .npy array")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read {what} ({exc})") from None
    if arr.ndim != 2 or len(arr) < n:
        raise InputError(f"{p}: {what} must have shape (N, D) with N >= {n}, got {arr.shape}")
    return arr[:n]


def make_noisy_label_file(
    clean: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str,
    rate: float,
    seed: int,
    then: Sequence[tuple[str, float]] = (),
    num_classes: int | None = None,
    column: str | None = None,
    first: int | None = None,
    features: str | os.PathLike | None = None,
    posteriors: str | os.PathLike | None = None,
    pmd_type: int = 1,
    overwrite: bool = False,
) -> NoiseReport:
    """Make a noisy label file from a clean one.

    Parameters
    ----------
    clean
        Clean labels (``.npy``, ``.csv`` with an index column, ``.txt``, ``.pt``); the shared
        ``train.csv`` works (its ``label`` column is used).
    output
        Where to write the noisy labels (``.npy``, ``.csv`` or ``.txt``).
    model, rate
        The noise model and its rate (see :mod:`lra_diffusion.data.noise`).
    seed
        Integer seed; the same seed gives the same file.
    then
        ``(model, rate)`` steps applied on top (e.g. ``[("symmetric", 0.6)]``).
    num_classes
        C; default: the largest clean label + 1 (or the posteriors' width).
    column
        Label column of a CSV / key of a ``.pt`` clean file.
    first
        Use only the first ``first`` labels (e.g. 45,000 for the paper's CIFAR protocol).
    features
        ``.npy`` ``(N, D)`` per-sample features for ``instance`` noise.
    posteriors
        ``.npy`` ``(N, C)`` class posteriors for ``pmd`` noise.
    pmd_type
        1, 2 or 3.
    overwrite
        Replace an existing output file.

    Returns
    -------
    NoiseReport
    """
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if out.suffix.lower() not in (".npy", ".csv", ".txt"):
        raise InputError(f"{out}: write noisy labels as .npy, .csv or .txt")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    labels = load_label_file(clean, num_classes=num_classes, column=column)
    if first is not None:
        if not 0 < first <= len(labels):
            raise InputError(f"first={first} must lie in 1..{len(labels)} (labels in {clean})")
        labels = labels[:first]
    n = len(labels)
    feats = _load_array(features, "features", n)
    post = _load_array(posteriors, "posteriors", n)
    noisy, T = make_noisy_labels(labels, model=model, rate=rate, rng=int(seed),
                                 num_classes=num_classes, then=then, features=feats,
                                 posteriors=post, pmd_type=pmd_type)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    save_label_file(out, noisy)
    chain = "+".join(f"{m}:{r:g}" for m, r in [(model, rate), *then])
    return NoiseReport(output=out, model=chain, seed=int(seed), num_samples=n,
                       num_classes=T.shape[0], rate=noise_rate(labels, noisy), transition=T)


def format_report(report: NoiseReport, *, classes: Sequence[str] | None = None) -> str:
    """Render a report: realised rate, then the transition matrix (rows clean, columns noisy)."""
    C = report.num_classes
    names = [str(c) for c in (classes if classes is not None else range(C))]
    lines = [
        f"wrote {report.num_samples} noisy labels to {report.output}",
        f"model {report.model}, seed {report.seed}, {C} classes",
        f"realised noise rate: {100 * report.rate:.2f}%",
        "transition matrix T[clean, noisy]:",
    ]
    w = max(5, *(len(n) for n in names))
    lines.append(" " * (w + 1) + " ".join(f"{n:>{w}}" for n in names))
    for i, row in enumerate(report.transition):
        lines.append(f"{names[i]:>{w}} " + " ".join(f"{v:>{w}.3f}" for v in row))
    return "\n".join(lines)
