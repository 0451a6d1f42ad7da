"""Measure the noise rates of the shared CIFAR-10 noisy-label files.

Usage::

    python -m lra_diffusion.data.noise_rates ../shared/data/cifar10

Compares every ``noisy_labels/pmd/*.npy`` (45,000 labels, training images 0..44,999) and every
CIFAR-10N column of ``noisy_labels/cifar10n.csv`` with the clean labels of ``train.csv`` and prints
one line per file: the number of labels and the fraction that differ.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from lra_diffusion.data.cifar import CIFAR10_CLASSES, read_index_csv
from lra_diffusion.data.labels import load_cifar_n, load_pmd_labels
from lra_diffusion.data.noise import noise_rate
from lra_diffusion.errors import InputError

__all__ = ["shared_noise_rates", "main"]


def shared_noise_rates(root: str | os.PathLike) -> list[tuple[str, int, float]]:
    """Noise rates of the shared label files.

    Parameters
    ----------
    root
        The shared ``cifar10`` folder (``train.csv`` and ``noisy_labels/``).

    Returns
    -------
    list[tuple[str, int, float]]
        ``(name, number of labels, noise rate in [0, 1])`` per file / column: the PMD files sorted
        by name, then CIFAR-10N ``aggre``, ``random1``, ``worse`` (and ``clean``, which must be 0).
    """
    root = Path(root)
    _, clean = read_index_csv(root / "train.csv", num_classes=len(CIFAR10_CLASSES))
    out: list[tuple[str, int, float]] = []
    pmd_dir = root / "noisy_labels" / "pmd"
    for path in sorted(pmd_dir.glob("*.npy")) if pmd_dir.is_dir() else []:
        noisy = load_pmd_labels(path, num_samples=None)
        if len(noisy) > len(clean):
            raise InputError(f"{path}: {len(noisy)} labels but train.csv has {len(clean)}")
        out.append((f"pmd/{path.name}", len(noisy), noise_rate(clean[: len(noisy)], noisy)))
    cn = root / "noisy_labels" / "cifar10n.csv"
    if cn.is_file():
        for col in ("aggre", "random1", "worse", "clean"):
            noisy = load_cifar_n(cn, col, num_samples=len(clean))
            out.append((f"cifar10n.csv:{col}", len(noisy), noise_rate(clean, noisy)))
    if not out:
        raise InputError(f"{root}: no noisy label files found under noisy_labels/")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the shared cifar10 folder (train.csv, noisy_labels/)")
    args = parser.parse_args(argv)
    try:
        rows = shared_noise_rates(args.root)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(r[0]) for r in rows)
    print(f"{'file':<{width}}  {'labels':>6}  {'noise rate':>10}")
    for name, n, rate in rows:
        print(f"{name:<{width}}  {n:>6}  {100 * rate:>9.2f}%")
    return 0


if __name__ == "__main__":  # pragma: no cover
    np.set_printoptions(precision=3)
    raise SystemExit(main())
