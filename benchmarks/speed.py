"""Speed of the core on a CIFAR-sized problem, measured in one run.

    python benchmarks/speed.py [--quick] [--compile] [--profile] [--out results/speed.json]

Measures: training throughput (samples/s) for 45,000 x 512 features, 10 classes, batch 256,
feature_dim 512, through the trainer's own `training_step` + EMA update; the machine's float32 GEMM rate
(2048^3 matmul) and the rate at the model's own GEMM shape; the ratio of the model's achieved FLOP/s to
the GEMM rate; DDIM inference samples/s (10 steps); exact kNN build time for 45,000 and 200,000 points.
Times are medians of repeated blocks.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lra_diffusion.config import DiffusionConfig
from lra_diffusion.evaluate import predict_y0, schedule_alpha_bar
from lra_diffusion.models import LabelDenoiser
from lra_diffusion.retrieval import NeighbourLabelSampler, faiss_available, knn
from lra_diffusion.train import ema_update, training_step


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_rate(n: int, m: int, k: int, repeats: int) -> float:
    """float32 FLOP/s of an (n x k) @ (k x m) matmul, median of blocks of 10."""
    a, b = torch.randn(n, k), torch.randn(k, m)
    a @ b
    return 2 * n * m * k * 10 / median_time(lambda: [a @ b for _ in range(10)], repeats)


def model_macs(model: LabelDenoiser) -> int:
    """Multiply-accumulates per sample of one forward pass (the linear layers; elementwise ops excluded)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and no 200,000-point kNN")
    ap.add_argument("--out", type=Path, default=Path("results/speed.json"))
    ap.add_argument("--compile", action="store_true", help="train through torch.compile(model) ([runtime] compile)")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's table of 10 training steps")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    torch.manual_seed(0)
    n, d, c, batch = 45_000, 512, 10, 256
    X = torch.randn(n, d)
    y = torch.randint(0, c, (n,))

    # training throughput through the trainer's own step
    model = LabelDenoiser(c, d, feature_dim=512)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    alpha_bar = schedule_alpha_bar(DiffusionConfig()).float()
    nb, _ = knn(X.numpy()[:5000], 10)
    sampler = NeighbourLabelSampler(y.numpy()[:5000], nb)
    gen = torch.Generator().manual_seed(0)

    forward = torch.compile(model) if args.compile else None

    def steps(k: int = 20) -> None:
        for _ in range(k):
            idx = torch.randint(0, 5000, (batch,), generator=gen)
            training_step(model, opt, X[idx], *sampler.sample(idx, gen), alpha_bar=alpha_bar, generator=gen,
                          grad_clip=1.0, forward=forward)
            ema_update(ema, model, 0.999)

    steps(5)
    # interleave the model and GEMM measurements so machine noise hits both alike
    step_times, gemm_rates, shape_rates = [], [], []
    for _ in range(reps):
        step_times.append(median_time(lambda: steps(20), 1) / 20)
        gemm_rates.append(gemm_rate(2048, 2048, 2048, 1))
        shape_rates.append(gemm_rate(batch, 512, 512, 1))
    step_time, gemm = statistics.median(step_times), statistics.median(gemm_rates)
    gemm_model_shape = statistics.median(shape_rates)
    macs = model_macs(model)
    flops_per_step = 6 * macs * batch  # forward 2*MACs, backward 4*MACs
    achieved = flops_per_step / step_time
    train_sps = batch / step_time

    # inference: 10 deterministic DDIM steps on all 45,000
    infer = median_time(lambda: predict_y0(ema, X, DiffusionConfig()), max(1, reps // 2))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps(10)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)

    knn_times: dict[str, float] = {}
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "compiled": args.compile,
        "train_samples_per_s": train_sps, "train_step_ms": step_time * 1e3,
        "model_macs_per_sample": macs, "params": sum(p.numel() for p in model.parameters()),
        "gemm_gflops_2048": gemm / 1e9, "gemm_gflops_model_shape": gemm_model_shape / 1e9,
        "model_gflops": achieved / 1e9, "ratio_to_gemm": achieved / gemm,
        "ratio_to_gemm_model_shape": achieved / gemm_model_shape,
        "ddim_inference_samples_per_s": n / infer, "knn_seconds": knn_times,
    }
    print(json.dumps(result, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    # kNN build, last: the 200,000-point search is the longest part
    for points in [45_000] + ([] if args.quick else [200_000]):
        feats = np.random.default_rng(0).standard_normal((points, d), dtype=np.float32)
        for backend in (["torch", "faiss"] if faiss_available() else ["torch"]):
            if points > 45_000 and backend == "torch":
                continue  # same FLOPs as faiss; one backend is enough at this size
            start = time.perf_counter()
            knn(feats, 10, backend=backend)
            knn_times[f"{backend}_{points}"] = time.perf_counter() - start
            print(f"kNN k=10, {points:,} x {d}, {backend}: {knn_times[f'{backend}_{points}']:.1f} s", flush=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")  # kNN figures as they come


if __name__ == "__main__":
    main()
