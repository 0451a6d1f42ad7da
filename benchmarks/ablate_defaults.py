"""Ablation rows for the defaults: LRA-diffusion variants on one row of the defaults suite.

    python benchmarks/ablate_defaults.py ROW SEED '{"name": {config changes}, ...}'   # options:
        [--clean] [--balanced] [--mlp] [--fit-seed S]

ROW is a row of ``benchmarks/defaults.py`` or one of its ``PROBES`` (same features, noisy labels, 10%
noisy hold-out and clean test set). Prints the logistic regression (L2 on the hold-out) and 10-NN test
accuracies, then per variant the test accuracy, the best hold-out accuracy, the epochs, the selected epoch,
the seconds, the kept k, the prior's kind and targets and (with ``selection = "prefer_last"`` or ``"average"``) the selection record.
A variant is a nested dict of config sections (``{}`` = the package defaults), e.g.
``'{"paper": {"diffusion": {"prior": "zero", "prediction": "eps"}, "train": {"auto_epochs": 0}}}'``.

``--clean``: the clean-label diagnostic instead. Every method trains on the *clean* labels of 90% of the
row's training rows and selects (L2, MLP epoch, denoiser epoch) on the clean labels of the other 10%
(seeded); the MLP is printed as well, e.g. ``'{"k0": {"retrieval": {"k": 0}}}' --clean`` for the
denoiser's own limit against the cross-entropy heads.

``--balanced``: print the balanced accuracy (the mean of the per-class recalls) after each test accuracy,
for rows with unequal classes (the ``synth-10-tail`` probe).

``--mlp``: print the 2-layer MLP baseline too (the epoch with the best noisy hold-out accuracy kept).

``--fit-seed S``: LRA-diffusion's own seed (its draws, initialisation, batches; default SEED) while the row's
split stays that of SEED, to measure run-to-run variation on fixed data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import defaults  # noqa: E402

from lra_diffusion.benchmark import Split, fit_linear, fit_mlp  # noqa: E402
from lra_diffusion.estimator import LRAClassifier  # noqa: E402


def clean_split(split: Split, seed: int) -> Split:
    """The training rows with their clean labels, 10% of them (seeded) held out with clean labels."""
    y = split.y_train_clean
    held = defaults.holdout_split(split.X_train, y, y, split.X_test, split.y_test, seed + 1000)
    return dataclasses.replace(held, val_is_clean=True)


def prior_text(info: dict) -> str:
    """The kept prior's kind and targets, e.g. ``prior linear/retrieval ``, the k check's flip concentration
    and the projection check (rank, kept or not, held-out rows only it / only all features get right)."""
    prior = info.get("prior")
    conc = (info.get("k_rule") or {}).get("flip_concentration")
    proj = info.get("projection")
    return (f"prior {prior['kind']}/{prior.get('targets', 'dropped')} " if prior else "") + (
        f"flips {conc:.2f} " if conc is not None else "") + (
        f"projection {proj['rank']} {'kept' if proj['kept'] else 'not kept'} ({proj['projected_only']} / "
        f"{proj['whole_only']}) " if proj else "")


def main() -> None:
    row, seed, variants = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    clean = "--clean" in sys.argv[4:]
    balanced = "--balanced" in sys.argv[4:]
    fit_seed = int(sys.argv[sys.argv.index("--fit-seed") + 1]) if "--fit-seed" in sys.argv else seed
    split = {**defaults.ROWS, **defaults.PROBES}[row](seed)
    split = clean_split(split, seed) if clean else split

    def scores(predicted) -> str:
        """Test accuracy (and with ``--balanced`` the balanced accuracy) of predicted test labels."""
        acc = f"{(predicted == split.y_test).mean():.4f}"
        return f"{acc} (bal. {balanced_accuracy_score(split.y_test, predicted):.4f})" if balanced else acc

    start = time.perf_counter()
    linear = scores(fit_linear(split, split.y_train)[0].predict(split.X_test))
    knn = scores(KNeighborsClassifier(10).fit(split.X_train, split.y_train).predict(split.X_test))
    mlp = (f" mlp {scores(fit_mlp(split, split.y_train, seed=seed)[0](split.X_test))}"
           if clean or "--mlp" in sys.argv[4:] else "")
    which = f"{row} s{seed}{f' fit seed {fit_seed}' if fit_seed != seed else ''}{' clean labels' if clean else ''}"
    print(f"{which} N={len(split.y_train)} D={split.X_train.shape[1]} "
          f"linear {linear} ({time.perf_counter() - start:.0f}s) knn {knn}{mlp}", flush=True)
    for name, config in variants.items():
        start = time.perf_counter()
        est = LRAClassifier(config=config, random_state=fit_seed)
        est.fit(split.X_train, split.y_train, X_val=split.X_val, y_val=split.y_val)
        info = est.fit_info_
        print(f"  {name:30s} {scores(est.predict(split.X_test))}  val {info['best_val_accuracy']:.4f} "
              f"ep {info['epochs']} best {info['best_epoch']} {time.perf_counter() - start:.0f}s "
              f"k {info['retrieval_k']} {prior_text(info)}{info.get('selection', '')}", flush=True)


if __name__ == "__main__":
    main()
