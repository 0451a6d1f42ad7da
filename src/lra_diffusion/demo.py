"""The embedded demo: scikit-learn's bundled 8x8 ``digits`` with 40% symmetric label noise.

Noise convention: 40% of the training labels are changed, each to a *different* class drawn uniformly
(so the realised noise rate is exactly 40%). Features are the pixels standardised on the training split.
LRA-diffusion and the baselines all see the same features and the same noisy labels; the clean-label
ceiling is the better of logistic regression and 5-NN trained on the clean labels. The run directory
also gets ``issues.csv`` (label-quality scores of the training labels), ``images.npy`` and ``report.html``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from .errors import InputError
from .estimator import LRAClassifier
from .io import write_json

NOISE_RATE = 0.4


def symmetric_flip(labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Change exactly ``round(rate * N)`` labels, each to a different class chosen uniformly."""
    noisy = labels.copy()
    flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy[flip] = (labels[flip] + rng.integers(1, num_classes, size=len(flip))) % num_classes
    return noisy


@dataclass
class DemoData:
    X_train: np.ndarray
    y_train_clean: np.ndarray
    y_train_noisy: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def demo_data(seed: int = 0) -> DemoData:
    """The digits split, standardised features and noisy training labels for ``seed``."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    noisy = symmetric_flip(y_tr, NOISE_RATE, 10, np.random.default_rng(seed))
    return DemoData(
        scaler.transform(X_tr).astype(np.float32), y_tr, noisy, scaler.transform(X_te).astype(np.float32), y_te
    )


def demo_images(seed: int = 0) -> np.ndarray:
    """The 8x8 training images of :func:`demo_data`'s split, uint8 (N, 8, 8), for the report."""
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    train, _ = train_test_split(images, test_size=0.3, stratify=digits.target, random_state=seed)
    return train


def run_demo(*, out: str | Path = "runs/demo", seed: int = 0, verbose: bool = True) -> dict[str, float]:
    """Train LRA-diffusion and the baselines; print the table; write the run directory. Returns accuracies."""
    d = demo_data(seed)
    if verbose:
        print(f"digits: {len(d.y_train_noisy)} train / {len(d.y_test)} test, "
              f"{(d.y_train_noisy != d.y_train_clean).mean():.0%} of training labels changed (seed {seed})")
    results: dict[str, tuple[float, float]] = {}

    def timed(name: str, est, y):
        start = time.perf_counter()
        est.fit(d.X_train, y)
        results[name] = (float(est.score(d.X_test, d.y_test)), time.perf_counter() - start)
        return est

    lra = timed("LRA-diffusion (noisy labels)", LRAClassifier(random_state=seed, verbose=verbose), d.y_train_noisy)
    timed("logistic regression (noisy labels)", LogisticRegression(max_iter=2000), d.y_train_noisy)
    timed("10-NN vote (noisy labels)", KNeighborsClassifier(10), d.y_train_noisy)
    timed("logistic regression (clean labels, ceiling)", LogisticRegression(max_iter=2000), d.y_train_clean)
    timed("5-NN (clean labels, ceiling)", KNeighborsClassifier(5), d.y_train_clean)

    out = Path(out)
    lra.save(out)
    accuracies = {name: acc for name, (acc, _) in results.items()}
    write_json(out / "demo.json", {"seed": seed, "noise_rate": NOISE_RATE, "test_accuracy": accuracies,
                                   "seconds": {name: sec for name, (_, sec) in results.items()}})
    if verbose:
        width = max(map(len, results))
        print(f"\n{'method':<{width}}  test accuracy  seconds")
        for name, (acc, sec) in results.items():
            print(f"{name:<{width}}  {acc:13.4f}  {sec:7.1f}")
    demo_label_issues(lra, d, out, seed, verbose=verbose)
    if verbose:
        print(f"\nrun directory: {out}")
    return accuracies


def demo_label_issues(lra: LRAClassifier, d: DemoData, out: Path, seed: int, *, verbose: bool) -> None:
    """Score the training labels (in-sample), compare with cleanlab when it is installed, and write
    ``issues.csv``, ``images.npy`` and ``report.html`` into the run directory."""
    from .issues import cleanlab_issues
    from .report import write_report

    issues = lra.find_label_issues(d.X_train, d.y_train_noisy, true_labels=d.y_train_clean, random_state=seed)
    issues.to_csv(out / "issues.csv")
    np.save(out / "images.npy", demo_images(seed))
    rows = {f"LRA-diffusion ({issues.score}, in-sample)": issues.metrics()}
    try:
        rows["cleanlab (logistic regression, 5-fold)"] = cleanlab_issues(
            d.X_train, d.y_train_noisy, true_labels=d.y_train_clean, random_state=seed).metrics()
    except InputError as e:  # cleanlab is optional
        if verbose:
            print(f"(no cleanlab row: {e})")
    report = write_report(out)
    if verbose:
        width = max(map(len, rows))
        print(f"\n{'finding the wrong training labels':<{width}}  precision  recall      F1   AUROC  flagged")
        for name, m in rows.items():
            print(f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['auroc']:6.4f}"
                  f"  {m['flagged']:7d}")
        print(f"({issues.metrics()['errors']} wrong labels; issues: {out / 'issues.csv'}, report: {report})")
