"""Ablation rows for the defaults: LRA-diffusion variants on one row of the defaults suite.

    python benchmarks/ablate_defaults.py ROW SEED '{"name": {config changes}, ...}'

ROW is a row of ``benchmarks/defaults.py`` (same features, noisy labels, 10% noisy hold-out and clean
test set). Prints the logistic regression (L2 on the hold-out) and 10-NN test accuracies, then per
variant the test accuracy, the best hold-out accuracy, the epochs, the selected epoch and the seconds.
A variant is a nested dict of config sections (``{}`` = the package defaults), e.g.
``'{"paper": {"diffusion": {"prior": "zero", "prediction": "eps"}, "train": {"auto_epochs": 0}}}'``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import defaults  # noqa: E402

from lra_diffusion.benchmark import fit_linear  # noqa: E402
from lra_diffusion.estimator import LRAClassifier  # noqa: E402


def main() -> None:
    row, seed, variants = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    split = defaults.ROWS[row](seed)
    start = time.perf_counter()
    linear = fit_linear(split, split.y_train)[0].score(split.X_test, split.y_test)
    knn = KNeighborsClassifier(10).fit(split.X_train, split.y_train).score(split.X_test, split.y_test)
    print(f"{row} s{seed} N={len(split.y_train)} D={split.X_train.shape[1]} linear {linear:.4f} "
          f"({time.perf_counter() - start:.0f}s) knn {knn:.4f}", flush=True)
    for name, config in variants.items():
        start = time.perf_counter()
        est = LRAClassifier(config=config, random_state=seed)
        est.fit(split.X_train, split.y_train, X_val=split.X_val, y_val=split.y_val)
        info = est.fit_info_
        print(f"  {name:30s} {est.score(split.X_test, split.y_test):.4f}  val {info['best_val_accuracy']:.4f} "
              f"ep {info['epochs']} best {info['best_epoch']} {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
