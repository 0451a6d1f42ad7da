"""`lra run` on the shared CIFAR-10 as a user would run it, checked against the benchmark path.

1. prepare: extract the shared archive into ``--tree`` (default /tmp/cifar10-tree, never the repo) and
   write the CIFAR-10N ``worse`` and ``clean`` columns as list files (``relative/path label`` rows in the
   canonical CIFAR-10 order, paths relative to TREE/train);
2. the journey, in this process: ``lra_diffusion.run(...)``, i.e.::

       lra run --images TREE/train --labels TREE/worse.txt --true-labels TREE/clean.txt \\
               --test-images TREE/test --config configs/cifar10-benchmark.toml \\
               --holdout 5000 --seed 0 --out runs/cifar10n-worse

   with the default encoder (EfficientNet-Lite2; ``--encoder kmeans`` for the earlier k-means journey);

3. the benchmark path: ``cifar10_features`` (the shared copy decoded in memory), ``cifar10_split("c10n-worse")``
   and the ``LRAClassifier`` fit of ``run_lra``, then ``find_label_issues`` with the run's settings on all
   50,000 labels;
4. compare features, model weights, test accuracy and label-issue F1; print and write a JSON record.

``--pca 512`` adds the PCA of the benchmark table (``cifar10_main``'s ``reduce_features``) to both paths
(``lra run --pca 512``). Both paths run in one process, so they use the same code. Never run as a unit
test: on 2 CPU cores it takes tens of minutes (most of it the two LRA fits and the k-NN searches).

    OMP_NUM_THREADS=1 nice python benchmarks/pipeline_cifar10.py [--encoder kmeans] [--pca 512]
"""

from __future__ import annotations

import argparse
import csv
import json
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def prepare(tree: Path, shared: Path) -> None:
    """Extract the archive into ``tree`` and write worse.txt / clean.txt there (once)."""
    if not (tree / "train").is_dir() or not (tree / "test").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(shared / "cifar10-jpeg.tar.gz") as tar:
            tar.extractall(tree, filter="data")
    with open(shared / "train.csv", newline="") as f:
        paths = {int(r["index"]): r["path"].removeprefix("train/") for r in csv.DictReader(f)}
    with open(shared / "noisy_labels" / "cifar10n.csv", newline="") as f:
        cifar10n = {int(r["index"]): r for r in csv.DictReader(f)}
    for column in ("worse", "clean"):
        target = tree / f"{column}.txt"
        if not target.exists():
            target.write_text("".join(f"{paths[i]} {cifar10n[i][column]}\n" for i in sorted(paths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=Path("/tmp/cifar10-tree"))
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=None, help="default runs/cifar10n-worse[-<encoder>][-pca<P>]")
    ap.add_argument("--cache", type=Path, default=REPO / "cache" / "features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default=None, help="default: lra run's default (efficientnet-lite2)")
    ap.add_argument("--pca", type=int, default=None, help="PCA dims (the benchmark table uses 512)")
    ap.add_argument("--result", type=Path, default=None,
                    help="default results/pipeline/cifar10n-worse[-<encoder>][-pca<P>]-seed<S>.json "
                         "(no -<encoder> for kmeans)")
    ap.add_argument("--skip-benchmark", action="store_true", help="only the journey")
    a = ap.parse_args()
    from lra_diffusion.pipeline import DEFAULT_ENCODER

    encoder = a.encoder or DEFAULT_ENCODER
    # the k-means journey keeps its earlier names (results/pipeline/cifar10n-worse[-pca512]-seed0.json)
    tag = f"cifar10n-worse{'' if encoder == 'kmeans' else f'-{encoder}'}{f'-pca{a.pca}' if a.pca else ''}"
    a.result = a.result or REPO / "results" / "pipeline" / f"{tag}-seed{a.seed}.json"
    a.out = a.out or REPO / "runs" / tag

    from lra_diffusion import run
    from lra_diffusion.benchmark import (CIFAR10_LRA_CONFIG, cifar10_features, cifar10_split, environment,
                                         reduce_features)
    from lra_diffusion.config import Config
    from lra_diffusion.data import load_cifar_n
    from lra_diffusion.estimator import LRAClassifier
    from lra_diffusion.io import load_tensors, sha256_array
    from lra_diffusion.issues import find_label_issues

    t0 = time.perf_counter()
    prepare(a.tree, a.shared)
    print(f"prepared {a.tree} in {time.perf_counter() - t0:.0f} s", flush=True)
    config_file = REPO / "configs" / "cifar10-benchmark.toml"
    assert Config.from_toml(config_file) == Config.from_dict(CIFAR10_LRA_CONFIG)

    t0 = time.perf_counter()
    result = run(a.tree / "train", labels=a.tree / "worse.txt", true_labels=a.tree / "clean.txt",
                 test_images=a.tree / "test", encoder=encoder, config=config_file, holdout=5000, seed=a.seed,
                 out=a.out, cache_dir=a.cache, progress=True, pca=a.pca)
    journey_seconds = time.perf_counter() - t0
    print(result.summary(), flush=True)
    record = {
        "command": (f"lra run --images {a.tree}/train --labels {a.tree}/worse.txt --true-labels {a.tree}/clean.txt "
                    f"--test-images {a.tree}/test {'' if encoder == DEFAULT_ENCODER else f'--encoder {encoder} '}"
                    "--config configs/cifar10-benchmark.toml "
                    f"--holdout 5000 --seed {a.seed}{f' --pca {a.pca}' if a.pca else ''} --out {a.out}"),
        "encoder": encoder,
        "journey": {"seconds": journey_seconds, "stage_seconds": result.timings, "test_accuracy": result.test_accuracy,
                    "val_accuracy": result.val_accuracy, "issue_metrics": result.issue_metrics,
                    "reused_fit": result.reused_fit, "encoded": result.encoded},
    }
    if not a.skip_benchmark:
        t0 = time.perf_counter()
        X, X_test = reduce_features(*cifar10_features(encoder, a.shared, a.cache), a.pca)  # as cifar10_main
        split = cifar10_split("c10n-worse", X, X_test, a.shared, seed=a.seed)
        t_feat = time.perf_counter() - t0
        # the fit of lra_diffusion.benchmark.run_lra, kept here to score the labels with the same model
        est = LRAClassifier(config=Config.from_dict(CIFAR10_LRA_CONFIG), random_state=a.seed)
        est.fit(split.X_train, split.y_train, X_val=split.X_val, y_val=split.y_val)
        test_acc = float(est.score(split.X_test, split.y_test))
        t_fit = time.perf_counter() - t0 - t_feat
        noisy = load_cifar_n(a.shared / "noisy_labels" / "cifar10n.csv", "worse")
        clean = load_cifar_n(a.shared / "noisy_labels" / "cifar10n.csv", "clean")
        issues = find_label_issues(X, noisy, estimator=est, score=result.issues.score, n_samples=1,
                                   true_labels=clean, random_state=a.seed)
        t_issues = time.perf_counter() - t0 - t_feat - t_fit
        m = issues.metrics()
        run_weights, _ = load_tensors(a.out / "model.safetensors")
        same_weights = all(np.array_equal(v.numpy(), est.model_.state_dict()[k].numpy()) for k, v in run_weights.items())
        info = json.loads((a.out / "config.json").read_text())["pipeline"]["inputs"]
        record["benchmark_path"] = {
            "seconds": {"features": t_feat, "fit": t_fit, "issues": t_issues}, "test_accuracy": test_acc,
            "val_accuracy": est.fit_info_["best_val_accuracy"], "issue_metrics": m,
        }
        record["equal"] = {
            "train_features": info["features_sha256"] == sha256_array(np.ascontiguousarray(split.X_train)),
            "val_features": info["val_features_sha256"] == sha256_array(np.ascontiguousarray(split.X_val)),
            "train_labels": info["labels_sha256"] == sha256_array(split.y_train),
            "model_weights": same_weights,
            "test_accuracy": test_acc == result.test_accuracy,
            "issue_f1": m["f1"] == result.issue_metrics["f1"],
            "issue_flags": bool(np.array_equal(issues.is_label_issue, result.issues.is_label_issue)),
        }
        print(f"benchmark path: test accuracy {test_acc:.4f}, issue F1 {m['f1']:.4f} "
              f"(features {t_feat:.0f} s, fit {t_fit:.0f} s, issues {t_issues:.0f} s)")
        print("equal:", json.dumps(record["equal"]), flush=True)
    record["environment"] = environment()
    record["date"] = time.strftime("%Y-%m-%d %H:%M")
    a.result.parent.mkdir(parents=True, exist_ok=True)
    a.result.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {a.result}")


if __name__ == "__main__":
    main()
