"""CIFAR-10 accuracy benchmark: LRA-diffusion against baselines on the same features and noisy labels.

    python benchmarks/cifar10.py --encoder kmeans --seeds 0 1 2        (same as `lra bench cifar10`)

Embeds the shared CIFAR-10 once through the feature cache, runs every label setting (the paper's PMD
files with its protocol; CIFAR-10N aggre / random1 / worse with a held-out noisy slice), writes
results/<encoder>/<setting>-seed<k>.json and regenerates the main table in BENCHMARKS.md.
"""

import argparse
from pathlib import Path

from lra_diffusion.benchmark import CIFAR10_LRA_CONFIG, CIFAR10_SETTINGS, cifar10_main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="kmeans")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--settings", nargs="+", default=list(CIFAR10_SETTINGS))
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "cifar10")
    ap.add_argument("--cache", type=Path, default=REPO / "cache" / "features")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--pca", type=int, default=512, help="PCA dimension of the features (0 = none)")
    ap.add_argument("--l2", action="store_true", help="scale the (reduced) features to unit length")
    ap.add_argument("--ablations", action="store_true", help="run the ablation table instead of the main one")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="retrained ablation variants (k0 k5 k20 k50 uniform no-ema frozen-x clean-k0; default all)")
    ap.add_argument("--table-only", action="store_true", help="only regenerate the main table from results/")
    ap.add_argument("--epochs", type=int, default=None, help="LRA training epochs (default: the benchmark config's)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes (one torch thread each) running settings side by side")
    a = ap.parse_args()
    config = CIFAR10_LRA_CONFIG if a.epochs is None else {
        **CIFAR10_LRA_CONFIG, "train": {**CIFAR10_LRA_CONFIG["train"], "epochs": a.epochs}}
    cifar10_main(encoder=a.encoder, seeds=a.seeds, settings=a.settings, shared_root=a.shared,
                 cache_dir=a.cache, results_dir=a.results, markdown=a.markdown, pca=a.pca or None,
                 ablations=a.ablations, variants=a.variants, table_only=a.table_only, config=config, jobs=a.jobs,
                 l2=a.l2)
