"""Forward noising of label vectors and the weighted epsilon-prediction objective."""

from __future__ import annotations

import torch


def q_sample(
    y0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Forward process with CARD's prior mean (Han et al. 2022, eq. 2; DDPM eq. 4 when ``prior`` is None):

    y_t = sqrt(alpha_bar_t) y0 + (1 - sqrt(alpha_bar_t)) f_q(x) + sqrt(1 - alpha_bar_t) eps.

    The reference code of LRA-diffusion keeps f_q(x) = 0 (``prior=None``).

    Parameters
    ----------
    y0 : (B, C) clean label vectors.
    t : (B,) int64 timesteps in 0..T-1.
    eps : (B, C) standard normal noise.
    alpha_bar : (T,) cumulative alphas.
    prior : (B, C) prior mean f_q(x), or None for zero.
    """
    ab = alpha_bar.to(y0.dtype)[t].unsqueeze(-1)
    y_t = ab.sqrt() * y0 + (1 - ab).sqrt() * eps
    return y_t if prior is None else y_t + (1 - ab.sqrt()) * prior


def antithetic_timesteps(
    batch_size: int, timesteps: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Antithetic timestep draws: t ~ U{0..T-1} for the first half, T-1-t for the second half.

    Returns int64, shape (batch_size,). For odd sizes the first half holds the extra draw.
    """
    half = (batch_size + 1) // 2
    t = torch.randint(0, timesteps, (half,), generator=generator, device=device)
    return torch.cat([t, timesteps - 1 - t])[:batch_size]


def weighted_eps_loss(eps_pred: torch.Tensor, eps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * mean_c (eps_pred[i, c] - eps[i, c])^2, the weights summing to 1 over the batch.

    The same weighted MSE serves the y0 parameterisation: pass the y0 estimate and the clean y0.

    Parameters
    ----------
    eps_pred, eps : (B, C).
    weights : (B,) non-negative; normalised here so callers can pass raw counts.
    """
    per_sample = (eps_pred - eps).pow(2).mean(dim=1)
    w = weights.to(per_sample.dtype)
    return (w / w.sum()) @ per_sample
