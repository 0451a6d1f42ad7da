"""Inference with a trained denoiser: DDIM label vectors, class read-out, probabilities, accuracy."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .config import DiffusionConfig
from .device import autocast_context, batches_to_device
from .diffusion import alpha_bars, ddim_sample, ddim_timesteps, eps_from_y0, get_betas
from .features import float_tensor
from .models import LabelDenoiser


def schedule_alpha_bar(config: DiffusionConfig) -> torch.Tensor:
    """alpha-bar (T,) float64 of the configured schedule."""
    return alpha_bars(get_betas(config.schedule, config.timesteps))


@torch.no_grad()
def predict_y0(
    model: LabelDenoiser,
    features: np.ndarray | torch.Tensor,
    config: DiffusionConfig,
    *,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
    device: torch.device | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """DDIM label vectors y0 (N, C) for ``features`` (N, D), float32, on the CPU.

    Deterministic (default): eta = 0 from y_T = 0, as the paper (from y_T = f_q(x) with CARD's prior). ``stochastic=True``: y_T ~ N(0, I) and
    eta = ``config.stochastic_eta``, one independent run per call; the noise comes from ``generator``
    (a CPU generator gives the same draws on every device).

    ``device``: where the denoiser runs (None = where its weights are; a model elsewhere is copied
    there, never moved). Features travel batch by batch (pinned, non-blocking on CUDA). ``amp``:
    autocast the denoiser's calls on CUDA (see :func:`lra_diffusion.device.autocast_context`).
    """
    model_device = next(model.parameters()).device
    dev = model_device if device is None else device
    net = model if dev == model_device else copy.deepcopy(model).to(dev)
    was_training = net.training
    net.eval()
    x = float_tensor(features)
    alpha_bar = schedule_alpha_bar(config).float().to(dev)
    ts = ddim_timesteps(config.timesteps, config.ddim_steps, config.ddim_spacing)
    out = []
    # wide features: fewer rows per batch, so one batch's (B, D) temporaries stay near 4 MB
    batch_size = max(1, min(batch_size, max(64, (1 << 20) // max(1, x.shape[1]))))
    for xb in batches_to_device(x, batch_size, dev):
        shape = (len(xb), model.num_classes)
        y_T = (torch.randn(shape, generator=generator) if stochastic else torch.zeros(shape)).to(dev)
        prior = net.prior_mean(xb)  # CARD: y_T = f_q(x) (+ noise), None = the paper's zero prior
        if prior is not None:
            y_T = y_T + prior
        eta = config.stochastic_eta if stochastic else 0.0

        def eps_fn(y: torch.Tensor, t: torch.Tensor, xb: torch.Tensor = xb, prior=prior) -> torch.Tensor:
            with autocast_context(dev, amp):
                out = net(xb, y, t, prior).float()
            return out if config.prediction == "eps" else eps_from_y0(y, out, alpha_bar[t], prior)

        out.append(ddim_sample(eps_fn, y_T, alpha_bar, ts, eta=eta, generator=generator, prior=prior).cpu())
    net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)


def readout(y0: torch.Tensor, mode: str = "closest") -> torch.Tensor:
    """Class indices (N,) from label vectors (N, C): the coordinate closest to 1 (paper) or the argmax."""
    if mode == "closest":
        return torch.argmax(-(y0 - 1) ** 2, dim=1)
    return torch.argmax(y0, dim=1)


def closeness_proba(y0: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Probabilities (N, C) from the closeness of each coordinate to 1: softmax(-(y0 - 1)^2 / temperature)."""
    return torch.softmax(-((y0 - 1) ** 2) / temperature, dim=1)


def predict_proba(
    model: LabelDenoiser,
    features: np.ndarray | torch.Tensor,
    config: DiffusionConfig,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, C).

    ``n_samples == 1``: normalised closeness of the deterministic run. ``n_samples > 1``: frequency of each
    predicted class over that many stochastic DDIM runs. ``device``, ``amp``: as :func:`predict_y0`.
    """
    if n_samples <= 1:
        return closeness_proba(predict_y0(model, features, config, device=device, amp=amp), config.proba_temperature)
    counts = torch.zeros(len(features), model.num_classes)
    for _ in range(n_samples):
        y0 = predict_y0(model, features, config, stochastic=True, generator=generator, device=device, amp=amp)
        counts[torch.arange(len(features)), readout(y0, config.readout)] += 1
    return counts / n_samples


def accuracy(pred: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if len(labels) else float("nan")
