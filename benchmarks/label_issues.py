"""Label-issue detection: our scores against cleanlab on the same features, with real errors known.

Settings:

* ``digits``: the ``lra demo`` data (scikit-learn digits, 40% symmetric noise, standardised pixels);
* ``cifar10n``: the shared CIFAR-10 training images (all 50,000) with a CIFAR-10N label column
  (``worse`` by default, 40.21% noise) and their clean labels, on precomputed features (e.g. the k-means
  features of ``benchmarks/encoders.py``), optionally PCA-reduced (fitted on the unlabelled features).

For each setting it prints precision, recall and F1 of the flags and AUROC of the scores for

* ours: every score (stochastic, closeness, agreement, mean) in-sample (one model trained on all the
  data) and out-of-sample (``--cv`` folds), flags at the default threshold;
* cleanlab: ``find_label_issues`` (flags) and ``get_label_quality_scores`` (AUROC) given out-of-sample
  ``pred_probs`` of a logistic regression on the same features (``cross_val_predict``).

``--write`` puts the rows into BENCHMARKS.md under ``## Label issues`` (one block per setting, replaced
on a re-run). ``--run-dir`` also saves our in-sample run with ``issues.csv`` and ``report.html``.

Usage::

    python benchmarks/label_issues.py digits --write
    python benchmarks/label_issues.py cifar10n --features cache/features/kmeans/train.npy --pca 256 --write

Never run as a unit test.
"""

from __future__ import annotations

import argparse
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from lra_diffusion.estimator import LRAClassifier
from lra_diffusion.io import atomic_write
from lra_diffusion.issues import DEFAULT_SCORE, SCORES, cleanlab_issues, find_label_issues, issue_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
DATE = "2026-11-24"
MACHINE = "2-core CPU, 1 thread (OMP_NUM_THREADS=1)"


def digits_setting(seed: int):
    from lra_diffusion.demo import demo_data, demo_images

    d = demo_data(seed)
    return d.X_train, d.y_train_noisy, d.y_train_clean, demo_images(seed), None


def cifar10n_setting(features: Path, column: str, pca: int | None, seed: int, want_images: bool):
    from lra_diffusion.data import load_cifar_n, load_shared_cifar10

    pixels = str(features) == "pixels"
    images = load_shared_cifar10(SHARED, "train", progress=False)[0] if want_images or pixels else None
    if pixels:  # the fallback encoder: raw pixels in [0, 1]
        X = images.reshape(len(images), -1).astype(np.float32) / 255
    else:
        X = np.load(features, mmap_mode="r")
    noisy = load_cifar_n(SHARED / "noisy_labels" / "cifar10n.csv", column)
    clean = load_cifar_n(SHARED / "noisy_labels" / "cifar10n.csv", "clean")
    if len(X) != len(noisy):
        sys.exit(f"{features} has {len(X)} rows; expected the {len(noisy)} CIFAR-10 training images")
    X = np.asarray(X, dtype=np.float32)
    if pca:
        from sklearn.decomposition import PCA

        t = time.perf_counter()
        X = PCA(pca, svd_solver="randomized", random_state=seed).fit_transform(X).astype(np.float32)
        print(f"PCA {features} -> {pca} dims in {time.perf_counter() - t:.0f} s (unsupervised)")
    from lra_diffusion.data import CIFAR10_CLASSES

    return X, noisy, clean, images, list(CIFAR10_CLASSES)


def row(method: str, scoring: str, m: dict, seconds: float) -> dict:
    return {"method": method, "scores": scoring, **m, "seconds": seconds}


def format_rows(rows: list[dict], markdown: bool) -> str:
    head = ["method", "scores", "precision", "recall", "F1", "AUROC", "flagged", "seconds"]
    lines = []
    for r in rows:
        lines.append([r["method"], r["scores"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}",
                      f"{r['auroc']:.4f}", str(r["flagged"]), f"{r['seconds']:.0f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head)] + [fmt(c) for c in lines])


def write_benchmarks(key: str, title: str, body: str) -> None:
    """Replace (or append) the ``key`` block inside ``## Label issues`` of BENCHMARKS.md, re-read just now."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = f"<!-- label-issues:{key} -->", f"<!-- /label-issues:{key} -->"
    block = f"{start}\n### {title}\n\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif "\n## Label issues\n" in text:
        head, tail = text.split("\n## Label issues\n", 1)
        nxt = tail.find("\n## ")
        section, rest = (tail, "") if nxt < 0 else (tail[:nxt], tail[nxt:])
        text = f"{head}\n## Label issues\n{section.rstrip()}\n\n{block}\n{rest}"
    else:
        intro = ("Finding the wrong training labels (issue 5): precision / recall / F1 of the flags and AUROC of "
                 "the scores against the real label errors; ours vs cleanlab on the same features. "
                 "Method notes: docs/label-issues.md.")
        text = f"{text.rstrip()}\n\n## Label issues\n\n{intro}\n\n{block}\n"
    atomic_write(path, text.encode())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("setting", choices=["digits", "cifar10n"])
    p.add_argument("--features", type=Path,
                   help="cifar10n: (50000, D) .npy features of the training images, or 'pixels'")
    p.add_argument("--column", default="worse", help="cifar10n label column (worse, aggre, random1)")
    p.add_argument("--pca", type=int, default=None, help="cifar10n: reduce the features to this many dims first")
    p.add_argument("--steps", type=int, default=None, help="our training steps (default: the config's auto_steps)")
    p.add_argument("--cv", default="none,2", help="our scoring modes: 'none' (in-sample) and/or fold counts")
    p.add_argument("--k", type=lambda v: v if v == "auto" else int(v), default=None,
                   help="our retrieval neighbours (default: the config's 10); 'auto': fit k = 10 and k = 0, keep "
                        "the one with the higher accuracy on the held-out noisy labels (no clean labels used)")
    p.add_argument("--n-samples", type=int, default=20, help="stochastic DDIM runs of the 'stochastic' score")
    p.add_argument("--cleanlab-cv", type=int, default=5, help="folds of the logistic regression's cross_val_predict")
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None, help="save our in-sample run, issues.csv and report.html")
    p.add_argument("--write", action="store_true", help="write the rows into BENCHMARKS.md")
    args = p.parse_args(argv)

    if args.setting == "digits":
        X, y, clean, images, names = digits_setting(args.seed)
        title = "digits (the `lra demo` data: 1,257 training images, 40% symmetric noise, standardised pixels)"
    else:
        if args.features is None:
            p.error("cifar10n needs --features")
        X, y, clean, images, names = cifar10n_setting(args.features, args.column, args.pca, args.seed,
                                                         want_images=args.run_dir is not None)
        feat = f"{args.features}" + (f", PCA to {args.pca}" if args.pca else "")
        title = (f"CIFAR-10N `{args.column}` (all 50,000 training images, "
                 f"{(y != clean).mean():.2%} noise), features {feat}")
    if args.limit:
        X, y, clean = X[: args.limit], y[: args.limit], clean[: args.limit]
        images = images[: args.limit] if images is not None else None
        title += f", first {args.limit} samples only"
    is_error = y != clean
    print(f"{args.setting}: {len(y)} samples, {X.shape[1]} features, {is_error.sum()} wrong labels "
          f"({is_error.mean():.2%}); seed {args.seed}")
    config = {"train": {"auto_steps": args.steps}} if args.steps else {}
    # k = 0 (or possibly with auto): no label retrieval, then no agreement / mean score either
    score_names = SCORES if args.k is None or isinstance(args.k, int) and args.k > 0 else ("stochastic", "closeness")
    setup = [f"{args.steps} training steps" if args.steps else "default training length",
             f"k = {args.k}" if args.k is not None else "default k = 10"]
    title += f"; ours: {', '.join(setup)}"

    rows: list[dict] = []
    selection = ""
    for mode in args.cv.split(","):
        cv = None if mode == "none" else int(mode)
        est = LRAClassifier(k=args.k, config=config or None, random_state=args.seed, verbose=False)
        t = time.perf_counter()
        res = find_label_issues(X, y, estimator=est, cv=cv, true_labels=clean, n_samples=args.n_samples,
                                extra_scores=score_names, random_state=args.seed)
        seconds = time.perf_counter() - t
        how = "in-sample" if cv is None else f"out-of-sample, {cv}-fold"
        acc = (res.predicted_label == clean).mean()
        print(f"ours {how}: {seconds:.0f} s; predictions match the clean labels on {acc:.2%}")
        if cv is None and "k_selection" in est.fit_info_:
            accs = ", ".join(f"k = {k}: {a:.4f}" for k, a in est.fit_info_["k_selection"].items())
            selection = (f"k = auto chose k = {est.config_.retrieval.k} (accuracy on the held-out 10% of the noisy "
                         f"labels: {accs}; no clean labels used). ")
            print(selection)
        for name in score_names:
            m = issue_metrics(is_error, res.scores[name], res.scores[name] < 0.5)
            tag = " (default score)" if name == DEFAULT_SCORE and cv is None else ""
            rows.append(row(f"LRA-diffusion, {how}", name + tag, m, seconds))
        if cv is None and args.run_dir is not None:
            from lra_diffusion.report import write_report

            est.save(args.run_dir)
            res.to_csv(args.run_dir / "issues.csv")
            print(f"report: {write_report(args.run_dir, images=images, class_names=names)}")
    t = time.perf_counter()
    cl = cleanlab_issues(X, y, cv=args.cleanlab_cv, true_labels=clean, random_state=args.seed)
    rows.append(row(f"cleanlab, LR pred_probs ({args.cleanlab_cv}-fold)", "self_confidence; prune_by_noise_rate",
                    cl.metrics(), time.perf_counter() - t))
    print()
    print(format_rows(rows, markdown=False))

    if args.write:
        command = "OMP_NUM_THREADS=1 python benchmarks/label_issues.py " + shlex.join(argv or sys.argv[1:])
        body = (f"Command: `{command}`  \nDate: {DATE}; machine: {MACHINE}, Python {platform.python_version()}; "
                f"seed {args.seed}. {selection}Flags: ours `label_quality < 0.5`; cleanlab `find_label_issues` defaults. "
                f"AUROC of the scores for detecting a wrong label. `seconds` = the whole mode (all scores).\n\n"
                + format_rows(rows, markdown=True))
        write_benchmarks(args.setting + (f"-k{args.k}" if args.k is not None else ""), title, body)
        print("\nwrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
