"""Throughput on one device, in one command: SimCLR pretraining, LRA training, DDIM inference, kNN.

    python benchmarks/gpu.py --device cuda [--amp] [--compile] [--out results/gpu.json]
    python benchmarks/gpu.py --device cpu --quick          # a seconds-long smoke run, also a test

Every figure comes from the package's own code paths on ``--device``:

* pretraining images/s: :func:`pretrain_simclr` (CIFAR-style ResNet-18, two views per image, batch
  512) on 32x32 random images; the rate of its last epoch (the first one pays for warm-up);
* LRA training samples/s: the trainer's own :func:`training_step` + EMA update on 45,000 x 512
  features, 10 classes, batch 256, F = 512, timed over steady-state steps after a synchronisation;
  plus the wall time of a whole short :func:`train` call (kNN, epochs, evaluations);
* DDIM inference samples/s: :func:`predict_y0` (10 steps) over the 45,000 rows;
* exact kNN (k = 10) over the 45,000 x 512 features with the chunked torch path.

The numbers depend on the data only through its shapes, so random data is used. ``--quick`` shrinks
every size so the script runs in seconds on a CPU (the figures are then meaningless).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from lra_diffusion.config import Config, DiffusionConfig
from lra_diffusion.device import describe, resolve_device
from lra_diffusion.encoders.simclr import pretrain_simclr
from lra_diffusion.evaluate import predict_y0, schedule_alpha_bar
from lra_diffusion.models import LabelDenoiser
from lra_diffusion.retrieval import NeighbourLabelSampler, knn
from lra_diffusion.train import ema_update, train, training_step

FULL = {"images": 10_240, "image_size": 32, "width": 64, "pretrain_batch": 512, "pretrain_epochs": 2,
        "n": 45_000, "d": 512, "classes": 10, "batch": 256, "feature_dim": 512, "steps": 200, "fit_epochs": 2}
QUICK = {"images": 64, "image_size": 16, "width": 8, "pretrain_batch": 16, "pretrain_epochs": 2,
         "n": 600, "d": 16, "classes": 4, "batch": 32, "feature_dim": 16, "steps": 5, "fit_epochs": 1}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pretrain_rate(device: torch.device, s: dict, *, amp: bool, compile: bool) -> dict:
    """Images per second of SimCLR pretraining (last epoch of a short run)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(s["images"], s["image_size"], s["image_size"], 3), dtype=np.uint8)
    enc = pretrain_simclr(images, arch="resnet18", width=s["width"], batch_size=s["pretrain_batch"],
                          epochs=s["pretrain_epochs"], device=str(device), amp=amp, compile=compile,
                          log=lambda m: None)
    last = enc.history_[-1]
    seen = (s["images"] // s["pretrain_batch"]) * s["pretrain_batch"]
    return {"pretrain_images_per_s": seen / last["seconds"], "pretrain_epoch_seconds": last["seconds"],
            "pretrain_images": s["images"], "pretrain_batch": s["pretrain_batch"]}


def lra_rates(device: torch.device, s: dict, *, amp: bool, compile: bool) -> dict:
    """LRA training steps/s (trainer's step + EMA), a whole short fit, DDIM inference and kNN."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(s["n"], s["d"], generator=gen)
    y = torch.randint(0, s["classes"], (s["n"],), generator=gen)
    out: dict = {}

    sync(device)
    start = time.perf_counter()
    nb, _ = knn(X.numpy(), 10, backend="torch", device=device)
    sync(device)
    out["knn_seconds"] = time.perf_counter() - start

    model = LabelDenoiser(s["classes"], s["d"], feature_dim=s["feature_dim"]).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    forward = torch.compile(model) if compile else None
    alpha_bar = schedule_alpha_bar(DiffusionConfig()).float().to(device)
    sampler = NeighbourLabelSampler(y.numpy(), nb)
    x_dev = X.to(device)

    def steps(k: int) -> None:
        for _ in range(k):
            idx = torch.randint(0, s["n"], (s["batch"],), generator=gen)
            drawn, weights = (v.to(device) for v in sampler.sample(idx, gen))
            training_step(model, opt, x_dev[idx.to(device)], drawn, weights, alpha_bar=alpha_bar, generator=gen,
                          grad_clip=1.0, amp=amp, forward=forward)
            ema_update(ema, model, 0.999)

    steps(max(3, s["steps"] // 10))  # warm-up (and compilation)
    sync(device)
    start = time.perf_counter()
    steps(s["steps"])
    sync(device)
    seconds = time.perf_counter() - start
    out["train_samples_per_s"] = s["steps"] * s["batch"] / seconds
    out["train_step_ms"] = 1e3 * seconds / s["steps"]

    predict_y0(ema, X[: s["batch"]], DiffusionConfig(), device=device, amp=amp)  # warm-up
    sync(device)
    start = time.perf_counter()
    predict_y0(ema, X, DiffusionConfig(), device=device, amp=amp)
    out["ddim_samples_per_s"] = s["n"] / (time.perf_counter() - start)  # the result is back on the CPU

    cfg = Config().replace(train={"epochs": s["fit_epochs"], "batch_size": s["batch"], "evals": 1},
                           model={"feature_dim": s["feature_dim"]},
                           runtime={"device": str(device), "amp": amp, "compile": compile})
    start = time.perf_counter()
    result = train(X.numpy(), y.numpy(), num_classes=s["classes"], config=cfg, seed=0, progress=False)
    out["fit_seconds"] = time.perf_counter() - start
    out["fit_steps"] = result.steps
    return out


def measure(device: str = "auto", *, quick: bool = False, amp: bool = False, compile: bool = False,
            skip_pretrain: bool = False) -> dict:
    """All figures for ``device`` as one JSON-able dict."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as `lra pretrain simclr` does
    s = QUICK if quick else FULL
    result = {"date": time.strftime("%Y-%m-%d"), "device": describe(dev), "torch": torch.__version__,
              "amp": amp, "compile": compile, "quick": quick, "sizes": s}
    if not skip_pretrain:
        result |= pretrain_rate(dev, s, amp=True, compile=compile)  # the pretraining command's default AMP
    result |= lra_rates(dev, s, amp=amp, compile=compile)
    return result


def markdown(r: dict) -> str:
    """The figures as a BENCHMARKS.md table."""
    rows = [("SimCLR pretraining (ResNet-18, batch 512, 2 views)", "pretrain_images_per_s", "images/s"),
            ("LRA training (45,000 x 512, batch 256, F = 512)", "train_samples_per_s", "samples/s"),
            ("DDIM inference (10 steps)", "ddim_samples_per_s", "samples/s")]
    lines = [f"Device: {r['device']}; torch {r['torch']}; LRA amp={r['amp']}, compile={r['compile']}"
             + (" (QUICK sizes: not a measurement)" if r["quick"] else ""), "",
             "| what | rate | unit |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {r[key]:,.0f} | {unit} |" for name, key, unit in rows if key in r]
    lines += [f"| exact kNN k=10, 45,000 x 512 (torch) | {r['knn_seconds']:.2f} | s |",
              f"| whole `train()` of {r['fit_steps']} steps (kNN, epochs, evaluation) | {r['fit_seconds']:.1f} | s |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    ap.add_argument("--amp", action="store_true", help="autocast the LRA denoiser (bf16 on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks")
    ap.add_argument("--skip-pretrain", action="store_true", help="only the LRA figures")
    ap.add_argument("--out", type=Path, default=Path("results/gpu.json"))
    args = ap.parse_args(argv)
    result = measure(args.device, quick=args.quick, amp=args.amp, compile=args.compile,
                     skip_pretrain=args.skip_pretrain)
    print(json.dumps(result, indent=2))
    print(markdown(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
