"""The figures of the model card models/README.md for a SimCLR weights file, on the shared CIFAR-10.

    python benchmarks/simclr_card.py [--weights models/simclr-cifar10.safetensors] [--device cpu]

Reports, for the ``simclr-cifar10`` encoder loaded from ``--weights``:

* the file's size and SHA-256, and the training metadata :func:`export_weights` stored in it;
* the time to embed the 50,000 training and 10,000 test images on ``--device``;
* k-NN test accuracy with the clean labels: k = 200, cosine similarity, over all 50,000 training
  images; majority vote (the card's figure), and the similarity-weighted vote exp(s / 0.07) of
  Wu et al. (2018) for comparison with SimCLR papers;
* linear-probe test accuracy: softmax regression on standardised features, L2 chosen on train images
  45,000..49,999, refitted on all 50,000 (``linear_probe`` of benchmarks/encoders.py).

Never run as a unit test; on 2 CPU cores embedding alone takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def knn_cosine(
    bank: np.ndarray, bank_y: np.ndarray, query: np.ndarray, query_y: np.ndarray, *, k: int = 200,
    temperature: float = 0.07, chunk: int = 1024,
) -> dict[str, float]:
    """k-NN accuracy with cosine similarity: majority vote and exp(s / temperature)-weighted vote."""
    b = F.normalize(torch.from_numpy(np.asarray(bank, dtype=np.float32)), dim=1)
    labels = torch.from_numpy(np.asarray(bank_y, dtype=np.int64))
    c = int(labels.max()) + 1
    hits = {"majority": 0, "weighted": 0}
    for lo in range(0, len(query), chunk):
        q = F.normalize(torch.from_numpy(np.asarray(query[lo : lo + chunk], dtype=np.float32)), dim=1)
        sim, idx = (q @ b.T).topk(k, dim=1)
        onehot = F.one_hot(labels[idx], c).float()  # (B, k, C)
        truth = torch.from_numpy(np.asarray(query_y[lo : lo + chunk], dtype=np.int64))
        hits["majority"] += int((onehot.sum(1).argmax(1) == truth).sum())
        hits["weighted"] += int(((onehot * (sim / temperature).exp()[..., None]).sum(1).argmax(1) == truth).sum())
    return {name: h / len(query) for name, h in hits.items()}


def main() -> None:
    from encoders import linear_probe  # benchmarks/encoders.py, beside this script
    from safetensors import safe_open

    from lra_diffusion.data import load_shared_cifar10
    from lra_diffusion.device import describe, resolve_device
    from lra_diffusion.encoders import get_encoder
    from lra_diffusion.encoders.simclr import shipped_weights_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=shipped_weights_path())
    ap.add_argument("--root", default="../shared/data/cifar10")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    ap.add_argument("--out", type=Path, default=Path("results/simclr_card.json"))
    args = ap.parse_args()

    raw = args.weights.read_bytes()
    with safe_open(str(args.weights), framework="pt") as f:
        meta = f.metadata() or {}
    enc = get_encoder("simclr-cifar10", weights=args.weights, device=args.device, batch_size=args.batch_size)
    x_train, y_train = load_shared_cifar10(args.root, "train")
    x_test, y_test = load_shared_cifar10(args.root, "test")
    t0 = time.perf_counter()
    f_train = enc.encode(x_train, progress=True)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    f_test = enc.encode(x_test, progress=True)
    t_test = time.perf_counter() - t0
    card = {
        "weights": str(args.weights), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
        "metadata": meta, "device": describe(resolve_device(args.device)), "torch": torch.__version__,
        "embed_seconds": {"train_50000": round(t_train, 1), "test_10000": round(t_test, 1)},
        "encoder_fingerprint": enc.fingerprint(),
    }
    acc = knn_cosine(f_train, y_train, f_test, y_test, k=args.k)
    card[f"knn{args.k}_cosine_majority"] = acc["majority"]
    card[f"knn{args.k}_cosine_weighted"] = acc["weighted"]
    print(f"k-NN (k={args.k}, cosine, clean labels): majority {acc['majority']:.4f}, weighted {acc['weighted']:.4f}",
          flush=True)
    if not args.no_probe:
        card["linear_probe"] = linear_probe(f_train, y_train, f_test, y_test)
        print(f"linear probe: test {card['linear_probe']['test']:.4f}", flush=True)
    print(json.dumps(card, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
