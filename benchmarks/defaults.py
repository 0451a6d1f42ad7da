"""The public defaults suite: ``LRAClassifier()`` with no arguments against strong baselines.

Every row fits LRA-diffusion with the package defaults and, on the same features, the same noisy
training labels and the same *noisy* held-out slice (10% of the training rows, used by every method for
model selection: L2 of the logistic regression, best epoch of the MLP, the denoiser's selection):
logistic regression, a 2-layer MLP, a 10-NN vote and cleanlab's ``CleanLearning`` (around the logistic
regression). Test sets have clean labels. Where the clean training labels are known, it also scores the
training labels: ours (:func:`lra_diffusion.issues.find_label_issues`, package defaults, in-sample from
the fitted model) against cleanlab (``find_label_issues`` on 5-fold logistic-regression ``pred_probs``),
F1 of the flags and AUROC of the scores.

Rows (``--rows``; ``--quick`` = the fast ones at one seed):

* ``digits-sym-0.4``: scikit-learn's digits, the ``lra demo`` split and noise;
* ``b77-sym-0.2``, ``b77-sym-0.4``, ``b77-inst-0.4``, ``ag-news``: Banking77 / NoisyAG-News on
  all-MiniLM-L6-v2 embeddings (``benchmarks/text.py`` builds them through the feature cache);
* ``c10-kmeans-pmd-0.35``, ``c10-kmeans-aggre``, ``c10-kmeans-worse``: the shared CIFAR-10 on the
  k-means encoder's features, PCA to 512; ``c10-effnet-pmd-0.35``, ``c10-effnet-aggre``,
  ``c10-effnet-worse``: on the EfficientNet-Lite features (the image default), PCA to 256;
* ``synth-200``: a 200-class Gaussian-cluster problem (``make_classification``, 40,000 train), 40%
  symmetric noise; ``synth-2``: a 2-class one (20,000 train), 30% symmetric noise.

Usage::

    python benchmarks/defaults.py --quick
    python benchmarks/defaults.py --seeds 0 1 2 --write      # results/defaults/*.json + BENCHMARKS.md
    python benchmarks/defaults.py --write-only               # the table from results/defaults/*.json
    python benchmarks/defaults.py --rows ag-news-keywords --seeds 0 1 2 --out results/probes   # a probe

``PROBES`` (``--rows`` takes them too; keep them out of ``results/defaults``, whose table is the suite's)
are further settings the defaults were checked on (BENCHMARKS "Defaults suite"): more classes, fewer rows,
pair flips, wide features, very high noise, weak supervision.

Never run as a unit test: the full suite takes hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lra_diffusion.benchmark import (
    Split,
    cifar10_features,
    cifar10_split,
    read_results,
    reduce_features,
    replace_section,
    run_baselines,
    write_result,
)
from lra_diffusion.data import make_noisy_labels
from lra_diffusion.estimator import LRAClassifier

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOLDOUT = 0.1
BASELINES = ("linear", "mlp", "knn", "cleanlab")
SUITE_OUT = ROOT / "results" / "defaults"  # the suite's results, from which --write makes BENCHMARKS.md's table


def holdout_split(X, y_noisy, y_clean, X_test, y_test, seed: int) -> Split:
    """Split the training rows into train and a 10% noisy hold-out (seeded)."""
    perm = np.random.default_rng(seed + 1000).permutation(len(y_noisy))
    n_val = int(round(HOLDOUT * len(y_noisy)))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return Split(X[tr], y_noisy[tr], y_clean[tr], X[val], y_noisy[val], X_test, y_test, val_is_clean=False)


def digits_row(seed: int) -> Split:
    from lra_diffusion.demo import demo_data

    d = demo_data(seed)
    return holdout_split(d.X_train, d.y_train_noisy, d.y_train_clean, d.X_test, d.y_test, seed)


def digits_noise_row(rate: float, noise: str = "pair") -> Callable[[int], Split]:
    """The demo's digits split with ``rate`` ``noise`` (``"pair"``: class c -> c + 1, or ``"symmetric"``;
    ``rate`` 0: the clean labels) instead of the demo's 40% symmetric noise."""
    def make(seed: int) -> Split:
        from lra_diffusion.demo import demo_data

        d = demo_data(seed)
        noisy, _ = make_noisy_labels(d.y_train_clean, model=noise, rate=rate, rng=np.random.default_rng(seed),
                                     num_classes=10)
        return holdout_split(d.X_train, noisy, d.y_train_clean, d.X_test, d.y_test, seed)

    return make


def synthetic_row(classes: int, n_train: int, rate: float, features: int, informative: int,
                  clusters: int, sep: float, weights: list[float] | None = None,
                  noise: str = "symmetric") -> Callable[[int], Split]:
    """``make_classification`` Gaussian clusters (class proportions ``weights``, default equal), ``rate``
    ``noise`` (``"symmetric"`` or ``"pair"``: class c -> c + 1) on the first ``n_train`` rows, a clean test
    set of a quarter of that size."""
    def make(seed: int) -> Split:
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=n_train + n_train // 4, n_features=features, n_informative=informative,
                                   n_redundant=0, n_classes=classes, n_clusters_per_class=clusters,
                                   class_sep=sep, flip_y=0.0, weights=weights, random_state=seed)
        X = X.astype(np.float32)
        noisy, _ = make_noisy_labels(y[:n_train], model=noise, rate=rate, rng=np.random.default_rng(seed),
                                     num_classes=classes)
        return holdout_split(X[:n_train], noisy, y[:n_train], X[n_train:], y[n_train:], seed)

    return make


def small_sklearn_row(name: str, rate: float) -> Callable[[int], Split]:
    """A small scikit-learn data set (``"iris"``, ``"wine"``, ``"breast_cancer"``: 150-569 rows): a
    stratified 70/30 split (seeded), standardised on the training rows, ``rate`` symmetric noise."""
    def make(seed: int) -> Split:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_te = (scaler.transform(a).astype(np.float32) for a in (X_tr, X_te))
        noisy, _ = make_noisy_labels(y_tr, model="symmetric", rate=rate, rng=np.random.default_rng(seed),
                                     num_classes=int(y.max()) + 1)
        return holdout_split(X_tr, noisy, y_tr, X_te, y_te, seed)

    return make


def subsampled_row(make_full: Callable[[int], Split], n_train: int) -> Callable[[int], Split]:
    """``make_full``'s row with a random ``n_train`` of its training rows and a ninth as many of its held-out
    rows (seeded; the test set whole)."""
    def make(seed: int) -> Split:
        full = make_full(seed)
        rng = np.random.default_rng(seed + 2000)
        tr = np.sort(rng.choice(len(full.y_train), n_train, replace=False))
        val = np.sort(rng.choice(len(full.y_val), n_train // 9, replace=False))
        return Split(full.X_train[tr], full.y_train[tr], full.y_train_clean[tr], full.X_val[val], full.y_val[val],
                     full.X_test, full.y_test, val_is_clean=full.val_is_clean)

    return make


_TEXT: dict = {}


def text_data(key: str):
    """``benchmarks/text.py``'s ``TextData`` of ``"ag-news"`` or ``"b77"`` (texts, labels, MiniLM features;
    loaded once, through the feature cache)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import text

    if key not in _TEXT:
        _TEXT.update(text.embed_sets(ROOT / "cache" / "features", {key})[0])
    return _TEXT[key]


def text_row(setting: str) -> Callable[[int], Split]:
    def make(seed: int) -> Split:
        text_data("ag-news" if setting == "ag-news" else "b77")  # (puts benchmarks/ on the path first)
        import text

        return text.make_split(setting, _TEXT, seed)[0]

    return make


# Keyword labelling functions for AG News (0 World, 1 Sports, 2 Business, 3 Sci/Tech), the weak-supervision probe
AG_KEYWORDS = {0: "iraq president minister killed government war palestinian israel election troops prime nuclear",
               1: "game season team win cup coach olympic league victory champion players match",
               2: "oil stocks profit company shares prices bank market sales billion economy deal",
               3: "software microsoft internet computer google space technology web users apple phone online"}


def keyword_labels(texts: list[str], num_classes: int, rng: np.random.Generator,
                   abstain: int | None = None) -> np.ndarray:
    """Weak-supervision labels: per text, the class whose keywords (``AG_KEYWORDS``, whole words) occur most
    often; ties broken at random, and where no keyword occurs (the labelling functions abstain) a random
    class, or the class ``abstain``. Feature-dependent, systematic noise (about 38% on NoisyAG-News's
    training texts either way)."""
    votes = np.zeros((len(texts), num_classes))
    words = [set(re.findall(r"[a-z]+", t.lower())) for t in texts]
    for c, keys in AG_KEYWORDS.items():
        for key in keys.split():
            votes[:, c] += [key in w for w in words]
    tie_break = rng.random(votes.shape) * 0.1
    covered = votes.sum(1) > 0
    fallback = rng.integers(0, num_classes, len(texts)) if abstain is None else np.full(len(texts), abstain)
    return np.where(covered, np.argmax(votes + tie_break, 1), fallback)


def keyword_row(abstain: int | None = None) -> Callable[[int], Split]:
    """NoisyAG-News's 10,000 training texts with ``keyword_labels`` (seeded) instead of the crowd's labels,
    against their gold labels; 10% noisy hold-out, the clean AG News test set."""
    def make(seed: int) -> Split:
        d = text_data("ag-news")
        clean = np.asarray(d.train.clean_labels)
        noisy = keyword_labels(d.train.texts, 4, np.random.default_rng(seed), abstain)
        return holdout_split(d.X_train, noisy, clean, d.X_test, np.asarray(d.test.labels), seed)

    return make


_CIFAR: dict = {}
# (encoder, PCA dimension, encoder options). The EfficientNet rows keep the float32 features they were first
# measured on (bfloat16, the default on CPUs with AMX since 2026-12-02, scores the same: BENCHMARKS "Encoders")
CIFAR_ENCODERS = {"kmeans": ("kmeans", 512, {}), "effnet": ("efficientnet-lite0", 256, {"precision": "float32"})}


def cifar_row(encoder: str, setting: str) -> Callable[[int], Split]:
    def make(seed: int) -> Split:
        name, dim, options = CIFAR_ENCODERS[encoder]
        root = SHARED / "cifar10"
        if encoder not in _CIFAR:
            train, test = cifar10_features(name, root, ROOT / "cache" / "features", options=options)
            # EfficientNet-Lite rows: the issue's protocol, PCA 256 then L2-normalised
            train, test = reduce_features(train, test, dim, seed=0, l2=encoder == "effnet")
            _CIFAR[encoder] = (train, test)
        train, test = _CIFAR[encoder]
        # every CIFAR row uses all 50,000 training images with a noisy 10% hold-out (no clean labels)
        # (a CIFAR-10N split for the clean labels of all 50,000 rows; the PMD, asymmetric and symmetric rows add their own noise)
        full = cifar10_split(setting if setting.startswith("c10n") else "c10n-worse", train, test, root, holdout=0)
        clean = full.y_train_clean
        kind, _, rate = setting.partition("-")
        if kind in ("asym", "sym"):  # asym: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
            noisy, _ = make_noisy_labels(clean, model=kind, rate=float(rate), rng=np.random.default_rng(seed),
                                         num_classes=10)
            return holdout_split(train, noisy, clean, test, full.y_test, seed)
        if setting == "pmd-0.35":
            from lra_diffusion.data import load_pmd_labels

            noisy = load_pmd_labels(root / "noisy_labels" / "pmd" / "cifar10-1-0.35.npy")
            n = len(noisy)
            return holdout_split(train[:n], noisy, clean[:n], test, full.y_test, seed)
        return holdout_split(train, full.y_train, clean, test, full.y_test, seed)

    return make


def cifar_wide_row(n_train: int, labels: str) -> Callable[[int], Split]:
    """Wide real features at few rows: EfficientNet-Lite0's raw 1,280-d features (the default precision, no
    PCA) of the first 10,000 shared CIFAR-10 training images and the first 2,000 test images (embedded
    once, through the feature cache); ``n_train`` of the 10,000 (seeded) train with their CIFAR-10N
    ``labels`` and a ninth as many others are held out (noisy), the 2,000 test images are scored."""
    def make(seed: int) -> Split:
        if "wide" not in _CIFAR:
            from lra_diffusion.data import load_shared_cifar10
            from lra_diffusion.encoders import embed, get_encoder

            root, cache = SHARED / "cifar10", ROOT / "cache" / "features"
            train, clean = load_shared_cifar10(root, "train")
            test, y_test = load_shared_cifar10(root, "test")
            encoder = get_encoder("efficientnet-lite0")
            kw = {"cache_dir": cache, "dataset": "shared-cifar10-head", "progress": True}
            _CIFAR["wide"] = (np.asarray(embed(encoder, train[:10_000], split="train10k", **kw)), clean[:10_000],
                              np.asarray(embed(encoder, test[:2_000], split="test2k", **kw)), y_test[:2_000])
        from lra_diffusion.data import load_cifar_n

        X, clean, X_test, y_test = _CIFAR["wide"]
        noisy = load_cifar_n(SHARED / "cifar10" / "noisy_labels" / "cifar10n.csv", labels)[:10_000]
        perm = np.random.default_rng(seed).permutation(10_000)
        tr, val = np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_train // 9])
        return Split(X[tr], noisy[tr], clean[tr], X[val], noisy[val], X_test, y_test, val_is_clean=False)

    return make


ROWS: dict[str, Callable[[int], Split]] = {
    "digits-sym-0.4": digits_row,
    "b77-sym-0.2": text_row("b77-sym-0.2"),
    "b77-sym-0.4": text_row("b77-sym-0.4"),
    "b77-inst-0.4": text_row("b77-inst-0.4"),
    "ag-news": text_row("ag-news"),
    "c10-kmeans-pmd-0.35": cifar_row("kmeans", "pmd-0.35"),
    "c10-kmeans-aggre": cifar_row("kmeans", "c10n-aggre"),
    "c10-kmeans-worse": cifar_row("kmeans", "c10n-worse"),
    "c10-effnet-pmd-0.35": cifar_row("effnet", "pmd-0.35"),
    "c10-effnet-aggre": cifar_row("effnet", "c10n-aggre"),
    "c10-effnet-worse": cifar_row("effnet", "c10n-worse"),
    "synth-200": synthetic_row(200, 40_000, 0.4, 64, 48, 1, 2.0),
    "synth-2": synthetic_row(2, 20_000, 0.3, 32, 8, 4, 1.0),
}
QUICK = ("digits-sym-0.4", "synth-2", "b77-sym-0.4", "synth-200")
# Robustness probes outside the suite (not in its table; ``benchmarks/ablate_defaults.py`` runs them):
# synthetic problems shaped like the issue's failures under the former defaults (a 6-class set with 51%
# weak-supervision noise, a 150-class intent set with 50% noise) and the largest class count users bring
TAIL = 0.65 ** np.arange(10)
PROBES: dict[str, Callable[[int], Split]] = {
    "synth-6-0.5": synthetic_row(6, 5_000, 0.5, 64, 16, 1, 2.0),
    "synth-150-0.5": synthetic_row(150, 16_667, 0.5, 128, 64, 1, 2.0),
    "synth-1000": synthetic_row(1000, 50_000, 0.4, 128, 64, 1, 2.0),
    # a long tail: class c holds a share proportional to 0.65^c (35% of the rows to 0.7%, 48 times fewer)
    "synth-10-tail": synthetic_row(10, 20_000, 0.3, 32, 8, 2, 1.5, weights=list(TAIL / TAIL.sum())),
    "synth-10-small": synthetic_row(10, 330, 0.4, 32, 8, 1, 2.0),  # 330 rows: 297 to train, 33 held out
    "synth-10-1k": synthetic_row(10, 1_222, 0.4, 32, 8, 1, 2.0),  # the same problem at 1,100 training rows
    # many classes at few rows: Banking77 (77 classes) with 1,500 training rows, about 19 a class
    "b77-sym-0.4-1.5k": subsampled_row(text_row("b77-sym-0.4"), 1_500),
    "b77-sym-0.2-1.5k": subsampled_row(text_row("b77-sym-0.2"), 1_500),
    "b77-inst-0.4-1.5k": subsampled_row(text_row("b77-inst-0.4"), 1_500),
    "synth-200-4k": subsampled_row(synthetic_row(200, 40_000, 0.4, 64, 48, 1, 2.0), 4_000),  # 20 rows a class
    # wide features at few rows: 2,048 dimensions of which 32 carry the classes (the rest pure noise)
    "synth-10-wide": synthetic_row(10, 3_333, 0.4, 2048, 32, 1, 2.0),
    # real data sets of 94 to 358 training rows (the step floor's cap at 200 epochs)
    "iris-sym-0.3": small_sklearn_row("iris", 0.3),
    "wine-sym-0.3": small_sklearn_row("wine", 0.3),
    "cancer-sym-0.3": small_sklearn_row("breast_cancer", 0.3),
    # class-dependent noise, which a neighbour vote cannot average away where a whole class is flipped one way
    "digits-pair-0.4": digits_noise_row(0.4),
    # at the class cap of the prior's drop (100 classes, k_check.PRIOR_DROP_MAX_CLASSES)
    "synth-100-pair-0.4": synthetic_row(100, 20_000, 0.4, 64, 48, 1, 2.0, noise="pair"),
    "synth-200-pair-0.4": synthetic_row(200, 40_000, 0.4, 64, 48, 1, 2.0, noise="pair"),  # synth-200's data
    "digits-pair-0.2": digits_noise_row(0.2),
    "b77-pair-0.4": text_row("b77-pair-0.4"),
    "b77-pair-0.2": text_row("b77-pair-0.2"),
    # very high symmetric noise on real sentence-encoder features (the issue's 150-class report was at 50%)
    "b77-sym-0.6": text_row("b77-sym-0.6"),
    "b77-sym-0.8": text_row("b77-sym-0.8"),
    "ag-news-keywords": keyword_row(),  # weak supervision: keyword labelling functions (the issue's 6-class report)
    "ag-news-keywords-world": keyword_row(abstain=0),  # ... where none fires, a default class (World)
    "c10-effnet-asym-0.4": cifar_row("effnet", "asym-0.4"),
    # the paper's kind of CIFAR-10 setting: half and four fifths of the labels wrong, uniformly
    "c10-effnet-sym-0.5": cifar_row("effnet", "sym-0.5"),
    "c10-effnet-sym-0.8": cifar_row("effnet", "sym-0.8"),
    # wide real features at few rows: EfficientNet-Lite0's raw 1,280 dimensions at 2,000 / 5,000 CIFAR-10 images
    "c10-wide-2k-worse": cifar_wide_row(2_000, "worse"),
    "c10-wide-5k-worse": cifar_wide_row(5_000, "worse"),
    "c10-wide-2k-aggre": cifar_wide_row(2_000, "aggre"),
    "c10-wide-1k-worse": cifar_wide_row(1_000, "worse"),
    "ag-news-1k": subsampled_row(text_row("ag-news"), 1_000),  # sentence features (384-d) at 1,000 texts
    "ag-news-500": subsampled_row(text_row("ag-news"), 500),
    # labels mostly or all right (does the method cost where there is little to clean?), a rare positive
    # class in a 2-class set, and 20 overlapping classes where a linear model fails
    "digits-clean": digits_noise_row(0.0, "symmetric"),
    "digits-sym-0.1": digits_noise_row(0.1, "symmetric"),
    "b77-clean": text_row("b77-sym-0.0"),
    "b77-sym-0.05": text_row("b77-sym-0.05"),
    "synth-10-0.05": synthetic_row(10, 10_000, 0.05, 32, 8, 1, 2.0),
    "synth-2-imb-0.2": synthetic_row(2, 20_000, 0.2, 32, 8, 4, 1.0, weights=[0.9, 0.1]),
    "synth-20-hard-0.4": synthetic_row(20, 20_000, 0.4, 32, 16, 2, 0.7),
}


def label_issues(split: Split, est: LRAClassifier, seed: int) -> dict:
    """F1 and AUROC of ours (package defaults, in-sample) and of cleanlab (5-fold LR) on the training rows."""
    from lra_diffusion.issues import cleanlab_issues, find_label_issues, flag_issues, issue_metrics

    out = {}
    # ours also reports the AUROC and the F1 (default threshold) of the closeness, prior and blended scores,
    # whichever "auto" stood for
    extra = ("closeness", "prior", "closeness_prior") if est.model_.has_prior else ("closeness",)
    for name, fit in (
        ("lra", lambda: find_label_issues(split.X_train, split.y_train, estimator=est, cv=None, extra_scores=extra,
                                          true_labels=split.y_train_clean, random_state=seed)),
        ("cleanlab", lambda: cleanlab_issues(split.X_train, split.y_train, true_labels=split.y_train_clean,
                                             random_state=seed)),
    ):
        start = time.perf_counter()
        res = fit()
        m = res.metrics()
        out[name] = {"f1": m["f1"], "auroc": m["auroc"], "seconds": time.perf_counter() - start, "score": res.score}
        if name == "lra":
            by_score = {s: issue_metrics(res.given_label != res.true_label, v, flag_issues(v))
                        for s, v in res.scores.items()}
            out[name]["auroc_by_score"] = {s: r["auroc"] for s, r in by_score.items()}
            out[name]["f1_by_score"] = {s: r["f1"] for s, r in by_score.items()}
    return out


def run_row(row: str, seed: int, *, issues: bool, lra_kwargs: dict | None = None) -> dict:
    split = {**ROWS, **PROBES}[row](seed)
    C = int(max(split.y_train.max(), split.y_test.max())) + 1
    info = {"n_train": len(split.y_train), "n_val": len(split.y_val), "n_test": len(split.y_test),
            "dim": split.X_train.shape[1], "classes": C,
            "noise_rate": float((split.y_train != split.y_train_clean).mean())}
    print(f"[{row} seed {seed}] {info}", flush=True)
    start = time.perf_counter()
    est = LRAClassifier(random_state=seed, **(lra_kwargs or {}))
    est.fit(split.X_train, split.y_train, X_val=split.X_val, y_val=split.y_val)
    lra = {"test_accuracy": float(est.score(split.X_test, split.y_test)), "seconds": time.perf_counter() - start,
           "epochs": est.fit_info_["epochs"], "steps": est.fit_info_["steps"],
           "best_val_accuracy": est.fit_info_["best_val_accuracy"], "best_epoch": est.fit_info_["best_epoch"],
           "k": est.fit_info_["retrieval_k"], "k_rule": est.fit_info_.get("k_rule"),
           "k_selection": est.fit_info_.get("k_selection"), "k_at_start": est.fit_info_.get("k_at_start"),
           "prior": est.fit_info_.get("prior"),
           "selection": est.fit_info_.get("selection")}
    print(f"[{row} seed {seed}] LRA-diffusion {lra['test_accuracy']:.4f} ({lra['seconds']:.0f} s, "
          f"{lra['epochs']} epochs, k={lra['k']})", flush=True)
    baselines = run_baselines(split, seed=seed, methods=BASELINES)
    print(f"[{row} seed {seed}] " + ", ".join(f"{k} {v['test_accuracy']:.4f}" for k, v in baselines.items()),
          flush=True)
    record = {"benchmark": "defaults", "row": row, "seed": seed, **info, "lra": lra, "baselines": baselines,
              "lra_config": est.config_.to_dict()}
    if issues:
        record["issues"] = label_issues(split, est, seed)
        i = record["issues"]
        print(f"[{row} seed {seed}] issues F1/AUROC: LRA {i['lra']['f1']:.4f}/{i['lra']['auroc']:.4f}, "
              f"cleanlab {i['cleanlab']['f1']:.4f}/{i['cleanlab']['auroc']:.4f}", flush=True)
    return record


def _median(values: list[float]) -> float:
    return statistics.median(values)


def table(results: list[dict]) -> str:
    """Markdown: per row, medians over seeds of every method, the margin to the best baseline, fit times."""
    head = ("| row | N train / C / D | seeds | LRA-diffusion | logistic reg. | MLP | 10-NN | cleanlab | "
            "LRA - best baseline | LRA fit s | issues F1 / AUROC: LRA | cleanlab |")
    lines = [head, "|" + "---|" * 12]
    for row in [*ROWS, *PROBES]:
        rs = [r for r in results if r["row"] == row]
        if not rs:
            continue
        lra = _median([r["lra"]["test_accuracy"] for r in rs])
        base = {m: _median([r["baselines"][m]["test_accuracy"] for r in rs]) for m in BASELINES}
        best = max(base.values())
        iss = [r["issues"] for r in rs if "issues" in r]

        def fa(who):
            aurocs = [i[who]["auroc"] for i in iss if i[who]["auroc"] is not None]  # None: no wrong label
            if not aurocs:
                return "-"
            return f"{_median([i[who]['f1'] for i in iss]):.4f} / {_median(aurocs):.4f}"

        cells = [f"{base[m]:.4f}" for m in BASELINES]
        lines.append(
            f"| {row} | {rs[0]['n_train']:,} / {rs[0]['classes']} / {rs[0]['dim']} | {len(rs)} | {lra:.4f} | "
            + " | ".join(cells) + f" | {100 * (lra - best):+.2f} pt | "
            f"{_median([r['lra']['seconds'] for r in rs]):.0f} | {fa('lra')} | {fa('cleanlab')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", choices=[*ROWS, *PROBES], default=None, metavar="ROW",
                    help=f"suite rows (default: all): {', '.join(ROWS)}; or probes (write those elsewhere: "
                         f"--out results/probes): {', '.join(PROBES)}")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="the suite's table: 0 1 2 (default: 0)")
    ap.add_argument("--quick", action="store_true", help=f"rows {', '.join(QUICK)} at seed 0")
    ap.add_argument("--no-issues", action="store_true", help="skip the label-issue scores")
    ap.add_argument("--out", type=Path, default=SUITE_OUT)
    ap.add_argument("--write", action="store_true",
                    help="write the BENCHMARKS.md table from --out (the suite's results only; other --out: print)")
    ap.add_argument("--write-only", action="store_true", help="run nothing: only print (and --write) the table")
    args = ap.parse_args()
    rows = [] if args.write_only else args.rows or (list(QUICK) if args.quick else list(ROWS))
    # BENCHMARKS.md's table is the suite's: --write from another --out (the probes) only prints
    args.write = (args.write or args.write_only) and args.out.resolve() == SUITE_OUT.resolve()
    for row in rows:
        for seed in args.seeds:
            record = run_row(row, seed, issues=not args.no_issues)
            write_result(args.out / f"{row}-seed{seed}.json", record)
    results = read_results(args.out)
    print(table(results))
    if args.write:
        dates = sorted({r["date"] for r in results})
        head = (f"## Defaults suite\n\n`LRAClassifier()` with no arguments against the baselines on the same features "
                f"and noisy labels (benchmarks/defaults.py; medians over the seeds listed per row; dates "
                f"{', '.join(dates)}; the 2-core machine's load is stated below the table). Command: "
                f"`python benchmarks/defaults.py --rows ROW ... --seeds S ...` then `--write` (reads "
                f"`results/defaults/*.json`).\n\n")
        replace_section(ROOT / "BENCHMARKS.md", "defaults", head + table(results))


if __name__ == "__main__":
    main()
