"""Clean-label ceilings of the CPU encoders on the shared CIFAR-10: k-NN (k=10) and linear probe.

For each encoder the script fits it on the unlabelled training images, embeds train + test through the
feature cache (so a second run reuses the features), then reports

* k-NN: majority vote of the 10 nearest training images (Euclidean), test accuracy;
* linear probe: softmax regression (L-BFGS, full batch) on standardised features, its L2 strength
  picked on a held-out slice of train (images 45,000..49,999, the paper's validation split), then
  refitted on all 50,000 training images and scored once on test.

Usage::

    python benchmarks/encoders.py --encoders kmeans,pixels --cache-dir cache/features
    python benchmarks/encoders.py --encoders efficientnet-lite0:image_size=160
    python benchmarks/encoders.py --compare efficientnet-lite0@128,efficientnet-lite0@160 --subset 5000,1000
    python benchmarks/encoders.py --speed efficientnet-lite0@160,efficientnet-lite0@224 --speed-n 300

An encoder may carry options, ``NAME:key=value;key=value`` (e.g. ``efficientnet-lite0:image_size=224``).
``--compare`` embeds a subset (the first N train and M test images, canonical order) once per
``MODEL@SIZE`` with the pooled head and last block, unnormalised, and scores the feature variants
(head / head+last, raw / L2-normalised) by 10-NN and linear probe, with the wall and CPU time of the
pass. ``--speed`` times the forward pass per model, size and memory layout on a few hundred images.

The features are also written to ``<cache-dir>/<encoder>/{train,test}.npy`` (float32) for reuse.

Never run as a unit test; it takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VAL_START = 45_000  # images 45,000..49,999 of train: held out to choose the probe's L2


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    k: int = 10,
    chunk: int = 1024,
) -> float:
    """Accuracy of a k-NN majority vote (Euclidean; ties go to the lower class id)."""
    bank = torch.from_numpy(np.array(train_x, dtype=np.float32))
    bank_sq = (bank * bank).sum(1)
    labels = torch.from_numpy(train_y)
    n_classes = int(train_y.max()) + 1
    correct = 0
    for lo in range(0, len(test_x), chunk):
        q = torch.from_numpy(np.array(test_x[lo : lo + chunk], dtype=np.float32))
        d = bank_sq[None, :] - 2.0 * q @ bank.T  # ||q||^2 is constant per row
        idx = d.topk(k, dim=1, largest=False).indices
        votes = F.one_hot(labels[idx], n_classes).sum(1)
        pred = votes.argmax(1).numpy()
        correct += int((pred == test_y[lo : lo + chunk]).sum())
    return correct / len(test_x)


def standardize(train_x: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    """Per-feature standardisation with train statistics (float32 tensors)."""
    t = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    mean = t.mean(0)
    scale = t.std(0).clamp_min(1e-6)
    out = [(t - mean) / scale]
    for o in others:
        out.append((torch.from_numpy(np.ascontiguousarray(o, dtype=np.float32)) - mean) / scale)
    return out


def fit_softmax(
    x: torch.Tensor,
    y: np.ndarray,
    *,
    l2: float,
    max_iter: int = 300,
    loss: str = "softmax",
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic (or one-vs-rest squared-hinge) regression with L-BFGS, full batch.

    Objective: ``mean_i loss_i + l2 * ||W||^2`` (convex: ``init`` only speeds convergence up).
    Returns ``(W (D, C), b (C,))``.
    """
    n_classes = int(y.max()) + 1
    target = torch.from_numpy(y)
    if init is None:
        init = (torch.zeros(x.shape[1], n_classes), torch.zeros(n_classes))
    w = init[0].clone().requires_grad_(True)
    b = init[1].clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9,
    )
    sign = 2.0 * F.one_hot(target, n_classes).float() - 1.0

    def closure():
        opt.zero_grad()
        logits = x @ w + b
        if loss == "softmax":
            data = F.cross_entropy(logits, target)
        else:  # squared hinge, one-vs-rest (the L2-SVM of Coates et al.)
            data = F.relu(1.0 - sign * logits).pow(2).sum(1).mean()
        obj = data + l2 * (w * w).sum()
        obj.backward()
        return obj

    opt.step(closure)
    return w.detach(), b.detach()


def probe_accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: np.ndarray) -> float:
    with torch.no_grad():
        return float(((x @ w + b).argmax(1).numpy() == y).mean())


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    l2_grid: tuple[float, ...] = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    loss: str = "softmax",
    val_start: int = VAL_START,
) -> dict[str, float]:
    """Choose L2 on train[val_start:], refit on all train, return val and test accuracy.

    The grid runs from strong to weak regularisation, each fit warm-started from the previous one.
    """
    tr, va = slice(0, val_start), slice(val_start, None)
    xtr, xva = standardize(train_x[tr], train_x[va])
    val_acc, solutions, init = {}, {}, None
    for l2 in sorted(l2_grid, reverse=True):
        t0 = time.perf_counter()
        init = solutions[l2] = fit_softmax(xtr, train_y[tr], l2=l2, loss=loss, init=init)
        val_acc[l2] = probe_accuracy(*init, xva, train_y[va])
        print(f"    {loss} l2={l2:g}: val {val_acc[l2]:.4f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    best = max(val_acc, key=val_acc.get)
    del xtr, xva
    xall, xte = standardize(train_x, test_x)
    w, b = fit_softmax(xall, train_y, l2=best, loss=loss, init=solutions[best])
    return {"l2": best, "val": val_acc[best], "test": probe_accuracy(w, b, xte, test_y)}


def parse_encoder_spec(spec: str) -> tuple[str, dict]:
    """``"name:key=value;key=value"`` -> ``(name, options)``."""
    from lra_diffusion.encoders.commands import parse_options

    name, _, opts = spec.partition(":")
    return name, parse_options([o for o in opts.split(";") if o])


def timed_encode(enc, images: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(features, wall s, CPU s of this process) of one encode pass."""
    t0, c0 = time.perf_counter(), time.process_time()
    feats = enc.encode(images)
    return feats, time.perf_counter() - t0, time.process_time() - c0


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def compare(specs: list[str], subset: tuple[int, int], root: str, out_dir: Path) -> list[dict]:
    """Score EfficientNet-Lite variants (``MODEL@SIZE``) on a subset of the shared CIFAR-10."""
    from lra_diffusion.data import load_shared_cifar10
    from lra_diffusion.encoders import get_encoder

    n_tr, n_te = subset
    x_train, y_train = load_shared_cifar10(root, "train", progress=False)
    x_test, y_test = load_shared_cifar10(root, "test", progress=False)
    images = np.concatenate([x_train[:n_tr], x_test[:n_te]])
    y_tr, y_te = y_train[:n_tr], y_test[:n_te]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        model, _, size = spec.partition("@")
        enc = get_encoder(model, image_size=int(size), features="head+last", normalize=False,
                          channels_last=True)
        tag = "" if enc.precision == "float32" else f"-{enc.precision}"  # float32 names as before the option
        path = out_dir / f"{model}-{size}-{n_tr}-{n_te}{tag}.npy"
        wall = cpu = float("nan")
        if path.is_file():
            feats = np.load(path)
            meta = json.loads(path.with_suffix(".json").read_text())
            wall, cpu = meta["wall_s"], meta["cpu_s"]
        else:
            feats, wall, cpu = timed_encode(enc, images)
            np.save(path, feats)
            path.with_suffix(".json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu}) + "\n")
        for variant in ("head", "head+last"):
            f = feats[:, :1280] if variant == "head" else feats
            for norm in (False, True):
                g = l2n(f) if norm else f
                knn = knn_accuracy(g[:n_tr], y_tr, g[n_tr:], y_te, k=10)
                probe = linear_probe(g[:n_tr], y_tr, g[n_tr:], y_te, val_start=int(0.9 * n_tr),
                                     l2_grid=(1e-3, 3e-3, 1e-2, 3e-2))
                row = {"model": model, "size": int(size), "precision": enc.precision, "features": variant, "normalize": norm,
                       "dim": g.shape[1], "knn10": knn, "probe": probe["test"], "probe_l2": probe["l2"],
                       "img_per_s_wall": len(images) / wall, "img_per_cpu_s": len(images) / cpu}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| model | px | features | L2-norm | dim | 10-NN | linear probe | img/s wall | img/CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['features']} | {'yes' if r['normalize'] else 'no'} | {r['dim']} "
              f"| {100 * r['knn10']:.1f}% | {100 * r['probe']:.1f}% | {r['img_per_s_wall']:.1f} "
              f"| {r['img_per_cpu_s']:.1f} |")
    return rows


def speed(specs: list[str], n: int, root: str, layouts: tuple[bool, ...] = (False, True)) -> list[dict]:
    """Images/s of the forward pass per ``MODEL@SIZE`` and memory layout (after one warm-up batch), wall
    and per CPU-second of this process (on a machine shared with other jobs the second is the steadier:
    run it with one thread, ``OMP_NUM_THREADS=1``)."""
    from lra_diffusion.data import load_shared_cifar10
    from lra_diffusion.encoders import get_encoder

    x, _ = load_shared_cifar10(root, "test", progress=False)
    rows = []
    for spec in specs:
        model, _, size = spec.partition("@")
        for channels_last in layouts:
            enc = get_encoder(model, image_size=int(size), channels_last=channels_last)
            enc.encode(x[:100])
            _, wall, cpu = timed_encode(enc, x[100 : 100 + n])
            row = {"model": model, "size": int(size), "channels_last": channels_last,
                   "img_per_s_wall": n / wall, "img_per_cpu_s": n / cpu}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    from lra_diffusion.data import load_shared_cifar10
    from lra_diffusion.encoders import embed, fit_cached, get_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--encoders", default="kmeans,pixels")
    parser.add_argument("--cache-dir", default="cache/features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="softmax", choices=["softmax", "sqhinge"])
    parser.add_argument("--l2-grid", default="1e-4,3e-4,1e-3,3e-3")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--compare", default=None, help="MODEL@SIZE,...: score variants on --subset")
    parser.add_argument("--subset", default="5000,1000", help="train,test images for --compare")
    parser.add_argument("--compare-dir", default="results/tmp/effnet-compare")
    parser.add_argument("--speed", default=None, help="MODEL@SIZE,...: time the forward pass")
    parser.add_argument("--speed-n", type=int, default=300)
    parser.add_argument("--layouts", default="nchw,cl", help="memory layouts for --speed: nchw, cl")
    parser.add_argument("--embed-only", action="store_true",
                        help="fit + embed (timed) and stop; point --cache-dir at an empty folder for a cold run")
    args = parser.parse_args()
    layouts = tuple(v == "cl" for v in args.layouts.split(","))
    if args.compare or args.speed:
        rows = (compare(args.compare.split(","), tuple(int(v) for v in args.subset.split(",")), args.root,
                        Path(args.compare_dir)) if args.compare else speed(args.speed.split(","), args.speed_n,
                                                                             args.root, layouts))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        return

    torch.manual_seed(args.seed)
    x_train, y_train = load_shared_cifar10(args.root, "train")
    x_test, y_test = load_shared_cifar10(args.root, "test")
    feats = {}
    rows = []
    # 1. fit + embed every encoder first (the features are what other benchmarks reuse) ...
    for spec in args.encoders.split(","):
        name, options = parse_encoder_spec(spec)
        if name in ("pixels", "kmeans"):
            options.setdefault("random_state", args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        enc = fit_cached(get_encoder(name, **options), x_train,
                         cache_dir=args.cache_dir, progress=True)
        t_fit = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        common = dict(cache_dir=args.cache_dir, dataset="shared-cifar10", progress=True)
        f_train = embed(enc, x_train, split="train", **common)
        f_test = embed(enc, x_test, split="test", **common)
        t_embed, c_embed = time.perf_counter() - t0, time.process_time() - c0
        # plain copies at a fixed place: cache/features/<encoder>/{train,test}.npy
        for split, f in (("train", f_train), ("test", f_test)):
            np.save(Path(args.cache_dir) / name / f"{split}.npy", np.asarray(f, dtype=np.float32))
        print(f"{name}: dim {enc.dim}, fit {t_fit:.0f} s, embed 60k {t_embed:.0f} s wall "
              f"({c_embed:.0f} s CPU), fingerprint {enc.fingerprint()}", flush=True)
        feats[spec] = (f_train, f_test)
        rows.append({"encoder": spec, "dim": enc.dim, "fit_s": round(t_fit),
                     "embed_s": round(t_embed), "embed_cpu_s": round(c_embed),
                     "config": enc.config()})
    if args.embed_only:
        rows = [{k: r[k] for k in ("encoder", "dim", "fit_s", "embed_s", "embed_cpu_s")} for r in rows]
        print(json.dumps(rows))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        return
    # 2. ... then measure the clean-label ceilings
    l2_grid = tuple(float(v) for v in args.l2_grid.split(","))
    for row in rows:
        f_train, f_test = feats[row["encoder"]]
        row["knn10"] = knn_accuracy(f_train, y_train, f_test, y_test, k=10)
        print(f"{row['encoder']}: k-NN(10) test {row['knn10']:.4f}", flush=True)
        probe = linear_probe(f_train, y_train, f_test, y_test, loss=args.loss, l2_grid=l2_grid)
        row.update(probe_l2=probe["l2"], probe_val=probe["val"], probe_test=probe["test"])
        print(f"{row['encoder']}: linear probe ({args.loss}, l2={probe['l2']:g}) "
              f"val {probe['val']:.4f} test {probe['test']:.4f}", flush=True)
    print()
    print("| encoder | dim | k-NN (k=10) | linear probe | probe L2 | fit s | embed 60k s (CPU s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['dim']} | {100 * r['knn10']:.1f}% | "
            f"{100 * r['probe_test']:.1f}% | {r['probe_l2']:g} | {r['fit_s']} | "
            f"{r['embed_s']} ({r['embed_cpu_s']}) |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
