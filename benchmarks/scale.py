"""Scale benchmark: approximate retrieval, out-of-core features and distributed training.

Synthetic clustered features (below) are written chunk by chunk into a ``.npy`` memmap, so N = 1M x
D = 512 (2 GB) never sits in memory. Every measurement runs in its own child process and reports that
process's peak resident size (``ru_maxrss``), so the figures do not mix.

    python benchmarks/scale.py data --n 100000                # write cache/scale/n100000/*.npy
    python benchmarks/scale.py retrieval --n 100000 --queries 100000 --index exact ivf ivf-sq8 hnsw
    python benchmarks/scale.py fit --n 1000000 --epochs 2      # lra fit on the memmap, peak memory
    python benchmarks/scale.py throughput --n 100000           # steps/s with 1 and 2 torchrun processes
    python benchmarks/scale.py accuracy --n 100000             # test accuracy, exact vs approximate
    python benchmarks/scale.py fit-time --sizes 10000 50000 200000   # default fit time against N
    python benchmarks/scale.py row-recall --row c10-effnet-worse      # recall@10 on a defaults-suite row

Results are appended as JSON lines to results/scale/results.jsonl; BENCHMARKS.md "Scale" quotes them.

The features: C classes, each a mixture of ``sub`` Gaussian sub-clusters that lie on random
``latent``-dimensional subspaces of R^D, plus small isotropic noise. Real encoder features have such a
low intrinsic dimension; isotropic 512-d Gaussians do not (their nearest neighbours are barely nearer
than random points, which no index, nor label retrieval, can use). Labels are flipped uniformly to
another class with probability ``noise``. Row i depends only on (seed, i // CHUNK), so any chunk can
be regenerated alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 65_536


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def data_dir(n: int, d: int) -> Path:
    return ROOT / "cache" / "scale" / f"n{n}-d{d}"


def make_dataset(n: int, d: int = 512, *, classes: int = 10, sub: int = 8, latent: int = 16, noise: float = 0.3,
                 n_test: int = 10_000, seed: int = 0) -> Path:
    """Write features.npy (float32 memmap), labels.npy (noisy), clean.npy, test_*.npy; return the folder."""
    out = data_dir(n, d)
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    centres = g.normal(size=(classes, d)).astype(np.float32) * 1.0
    sub_centres = centres[:, None, :] + g.normal(size=(classes, sub, d)).astype(np.float32) * 0.6
    bases = g.normal(size=(classes, sub, latent, d)).astype(np.float32) * (0.5 / np.sqrt(latent))

    def rows(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, count)
        s = rng.integers(0, sub, count)
        z = rng.normal(size=(count, latent)).astype(np.float32)
        x = sub_centres[y, s]
        group = y * sub + s
        for gi in np.unique(group):  # one (count_g, latent) @ (latent, D) product per sub-cluster
            m = group == gi
            x[m] += z[m] @ bases[gi // sub, gi % sub]
        x += rng.normal(size=(count, d)).astype(np.float32) * 0.05
        return x.astype(np.float32), y

    feats = np.lib.format.open_memmap(out / "features.npy", mode="w+", dtype=np.float32, shape=(n, d))
    clean = np.empty(n, dtype=np.int64)
    for start in range(0, n, CHUNK):
        x, y = rows(min(CHUNK, n - start), np.random.default_rng([seed, 1, start // CHUNK]))
        feats[start : start + len(x)] = x
        clean[start : start + len(x)] = y
    feats.flush()
    del feats
    g2 = np.random.default_rng([seed, 2])
    flip = g2.random(n) < noise
    noisy = np.where(flip, (clean + g2.integers(1, classes, n)) % classes, clean)
    np.save(out / "clean.npy", clean)
    np.save(out / "labels.npy", noisy)
    xt, yt = rows(n_test, np.random.default_rng([seed, 3]))
    np.save(out / "test_features.npy", xt)
    np.save(out / "test_labels.npy", yt)
    (out / "done").write_text(json.dumps({"n": n, "d": d, "classes": classes, "noise_rate": float(flip.mean())}))
    return out


def record(result: dict) -> None:
    path = ROOT / "results" / "scale" / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {**result, "load": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M")}
    with open(path, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


# ---- retrieval ---------------------------------------------------------------------------------


def ground_truth(folder: Path, queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k neighbours (self excluded) of the first ``queries`` rows among all rows, cached."""
    from lra_diffusion.retrieval import AnnParams, _drop_self, build_index, search_index

    path = folder / f"exact-q{queries}-k{k}.npy"
    if path.exists():
        return np.arange(queries), np.load(path)
    feats = np.load(folder / "features.npy", mmap_mode="r")
    t0 = time.perf_counter()
    params = AnnParams(index="exact", query_chunk=4096)
    index = build_index(feats, params)
    idx, dist = search_index(index, feats[:queries], k + 1, params, progress=True)
    # the queries are rows 0..Q-1, so the self-match is row i for query i
    idx, _ = _drop_self(idx, dist, k)
    np.save(path, idx)
    record({"what": "exact-ground-truth", "n": len(feats), "queries": queries, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": peak_rss_mb()})
    return np.arange(queries), idx


def retrieval_one(folder: Path, index: str, k: int, queries: int, overrides: dict, sweep_values=()) -> dict:
    """Build the index on all rows, search every row, compare the first ``queries`` with exact search."""
    import torch

    from lra_diffusion.retrieval import AnnParams, ann_params, knn_ann, recall_at_k

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    feats = np.load(folder / "features.npy", mmap_mode="r")
    n, d = feats.shape
    kind, _, store = index.partition("-")
    if kind == "exact":
        params = AnnParams(index="exact")
    else:
        params = ann_params(n, kind, dim=d, store=store or "flat", **overrides)
    timings: dict = {}
    idx, _ = knn_ann(feats, k, params, timings=timings, progress=False)
    _, exact = ground_truth(folder, queries, k) if kind != "exact" else (None, idx[:queries])
    sweep = {}
    if sweep_values and kind in ("ivf", "hnsw"):
        # recall of other nprobe / efSearch values on the recall queries (a second, small index search)
        from lra_diffusion.retrieval import _drop_self, build_index

        ix = build_index(feats, params)
        q = np.ascontiguousarray(feats[:queries])
        for v in sweep_values:
            if kind == "ivf":
                ix.nprobe = v
            else:
                ix.hnsw.efSearch = v
            t = time.perf_counter()
            dist, found = ix.search(q, k + 1)
            found, _ = _drop_self(found.astype(np.int64), dist, k)
            sweep[v] = {"recall": round(recall_at_k(found, exact), 4), "s_per_1k": round((time.perf_counter() - t) / queries * 1000, 3)}
    return {"what": "retrieval", "index": index, "n": n, "d": d, "k": k,
            "params": {f: getattr(params, f) for f in ("nlist", "nprobe", "store", "train_size", "m", "ef_search")},
            **{key: round(v, 1) for key, v in timings.items()}, "total_s": round(sum(timings.values()), 1),
            "recall_at_k": round(recall_at_k(idx[:queries], exact), 4), "recall_queries": queries,
            "peak_rss_mb": round(peak_rss_mb()), "threads": torch.get_num_threads(), "sweep": sweep}


def child(args: list[str]) -> dict:
    """Run this script with ``args`` in a fresh process; return its last JSON line."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- training ------------------------------------------------------------------------------------


def lra_fit(folder: Path, out: Path, *, epochs: int | None, config: str, nproc: int = 1, extra: tuple = (),
            mmap: bool = True) -> dict:
    """``lra fit`` on the features (memory-mapped unless ``mmap=False``) in a child process: wall time,
    its reported training time, and the peak resident size of the largest child (ru_maxrss of
    RUSAGE_CHILDREN). ``epochs=None``: the default training length."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.with_suffix(".toml")
    cfg.write_text(config)
    cmd = [sys.executable, "-m", "lra_diffusion.cli", "fit", "--features", str(folder / "features.npy"),
           "--labels", str(folder / "labels.npy"), "--out", str(out), "--config", str(cfg),
           "--quiet", "--nproc", str(nproc), *(["--epochs", str(epochs)] if epochs else []),
           *(["--mmap"] if mmap else []), *extra]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(time.perf_counter() - t0, 1), "train_s": round(metrics["seconds"], 1),
            "steps": metrics["steps"], "epochs_run": metrics["epochs"], "steps_per_s": round(metrics["steps"] / metrics["seconds"], 2),
            "best_val_accuracy": metrics["best_val_accuracy"], "peak_rss_mb_children": round(peak_rss_mb(resource.RUSAGE_CHILDREN))}


def test_accuracy(folder: Path, run: Path) -> float:
    from lra_diffusion.estimator import LRAClassifier

    est = LRAClassifier.load(run)
    return float((est.predict(np.load(folder / "test_features.npy")) == np.load(folder / "test_labels.npy")).mean())


# ---- the command line ----------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["data", "retrieval", "retrieval-one", "ground-truth", "fit", "throughput",
                                    "accuracy", "fit-time", "row-recall"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=10_000, help="rows compared with exact search")
    p.add_argument("--index", nargs="+", default=["ivf", "ivf-sq8", "hnsw"])
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--sweep", type=int, nargs="*", default=[], help="nprobe (IVF) / efSearch (HNSW) values "
                   "whose recall is also measured (after the timed run; builds the index again)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="fit-time: the N")
    p.add_argument("--row", default="c10-effnet-worse", help="row-recall: a row of benchmarks/defaults.py")
    a = p.parse_args()
    if a.what == "row-recall":  # the training features of a defaults-suite row (seed 0): approximate vs exact
        from lra_diffusion.retrieval import ann_params, knn, recall_at_k

        sys.path.insert(0, str(ROOT / "benchmarks"))
        import defaults

        x = defaults.ROWS[a.row](0).X_train
        exact, _ = knn(x, a.k, index="exact")
        for index in ("ivf", "hnsw"):
            t0 = time.perf_counter()
            found, _ = knn(x, a.k, index=index)
            record({"what": "row-recall", "row": a.row, "n": len(x), "d": x.shape[1], "index": index,
                    "params": ann_params(len(x), index, dim=x.shape[1]).__dict__, "seconds": round(time.perf_counter() - t0, 1),
                    "recall_at_k": round(recall_at_k(found, exact), 4)})
        return
    overrides = {"nprobe": a.nprobe, "nlist": a.nlist, "ef_search": a.ef_search}
    if a.what == "fit-time":  # `lra fit` with every default (in memory, no options), wall time against N
        for n in a.sizes:
            folder = make_dataset(n, a.d)
            out = ROOT / "runs" / "scale" / f"fit-time-n{n}"
            res = lra_fit(folder, out, epochs=None, config="", mmap=False)
            record({"what": "fit-time", "n": n, "d": a.d, **res, "wall_s_per_1k_rows": round(res["wall_s"] / n * 1e3, 3),
                    "test_accuracy": test_accuracy(folder, out)})
        return
    folder = make_dataset(a.n, a.d)
    if a.what == "data":
        print(folder)
    elif a.what == "ground-truth":
        ground_truth(folder, a.queries, a.k)
    elif a.what == "retrieval-one":
        print(json.dumps(retrieval_one(folder, a.index[0], a.k, a.queries, overrides, a.sweep)))
    elif a.what == "fit":  # a short fit on the whole memory-mapped set, IVF retrieval, peak memory
        out = ROOT / "runs" / "scale" / f"fit-n{a.n}"
        res = lra_fit(folder, out, epochs=a.epochs, config='[retrieval]\nindex = "ivf"\n')
        record({"what": "fit", "n": a.n, "d": a.d, "epochs": a.epochs, **res, "test_accuracy": test_accuracy(folder, out)})
    elif a.what == "throughput":  # training steps/s in 1 and 2 processes, same global batch, no retrieval
        for nproc in (1, 2):
            out = ROOT / "runs" / "scale" / f"throughput-n{a.n}-p{nproc}"
            res = lra_fit(folder, out, epochs=a.epochs, config="[retrieval]\nk = 0\n", nproc=nproc)
            record({"what": "throughput", "n": a.n, "nproc": nproc, "epochs": a.epochs, **res})
    elif a.what == "accuracy":  # the same fit with exact and approximate neighbours
        for name, cfg in [("exact", 'index = "exact"'), ("ivf", 'index = "ivf"'),
                          ("ivf-nprobe4", 'index = "ivf"\nnprobe = 4'), ("hnsw", 'index = "hnsw"')]:
            out = ROOT / "runs" / "scale" / f"accuracy-n{a.n}-{name}"
            res = lra_fit(folder, out, epochs=a.epochs, config=f"[retrieval]\n{cfg}\n")
            record({"what": "accuracy", "n": a.n, "index": name, "epochs": a.epochs, **res,
                    "test_accuracy": test_accuracy(folder, out)})
    elif a.what == "retrieval":
        ground_truth(folder, a.queries, a.k)  # once, before the timed children
        extra = [f"--{key.replace('_', '-')}={v}" for key, v in overrides.items() if v is not None]
        extra += ["--sweep", *map(str, a.sweep)] if a.sweep else []
        for index in a.index:
            record(child(["retrieval-one", f"--n={a.n}", f"--d={a.d}", f"--k={a.k}", f"--queries={a.queries}",
                          "--index", index, *extra]))


if __name__ == "__main__":
    main()
