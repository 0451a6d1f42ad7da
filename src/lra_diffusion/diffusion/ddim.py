"""DDIM sampling (Song et al. 2021) over label vectors.

The sampler never sees the model: ``eps_fn(y_t, t) -> eps_pred`` is passed in, so the same loop serves
the network, an oracle in tests, and any conditioning the caller closes over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_timesteps(timesteps: int, steps: int, spacing: str = "leading") -> torch.Tensor:
    """The descending timesteps DDIM visits, int64 shape (steps,).

    ``leading`` is the paper's uniform stride with a +1 offset (901, 801, ..., 1 for T=1000, 10 steps;
    diffusers' ``timestep_spacing="leading", steps_offset=1``); ``linspace`` spreads them evenly over
    0..T-1; ``trailing`` ends at T-1 (Lin et al. 2024).
    """
    if not 1 <= steps <= timesteps:
        raise InputError(f"DDIM steps must be in 1..{timesteps}, got {steps}")
    if spacing == "leading":
        ratio = timesteps // steps
        ts = torch.arange(steps, dtype=torch.int64) * ratio
        if ts[-1] + 1 <= timesteps - 1:  # the +1 offset, when it stays inside 0..T-1
            ts = ts + 1
    elif spacing == "linspace":
        ts = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().to(torch.int64)
    elif spacing == "trailing":
        ts = (torch.arange(timesteps, 0, -timesteps / steps, dtype=torch.float64).round() - 1).to(torch.int64)
        ts = ts.flip(0)
    else:
        raise InputError(f"unknown DDIM spacing {spacing!r}; valid: ['leading', 'linspace', 'trailing']")
    return ts.flip(0)


def eps_from_y0(
    y_t: torch.Tensor, y0_pred: torch.Tensor, alpha_bar_t: torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """The noise implied by a y0 estimate (inverting :func:`~lra_diffusion.diffusion.q_sample`), (B, C):

    eps = (y_t - sqrt(a_t) y0_pred - (1 - sqrt(a_t)) f_q) / sqrt(1 - a_t), with a_t = alpha-bar_t (B,) or
    a scalar, and f_q = 0 when ``prior`` is None. Lets a network that predicts y0 drive the eps sampler.
    """
    a = torch.as_tensor(alpha_bar_t, dtype=y_t.dtype, device=y_t.device)
    a = a.unsqueeze(-1) if a.ndim == 1 else a
    mean = a.sqrt() * y0_pred if prior is None else a.sqrt() * y0_pred + (1 - a.sqrt()) * prior
    return (y_t - mean) / (1 - a).sqrt()


def ddim_step(
    y_t: torch.Tensor,
    eps_pred: torch.Tensor,
    alpha_bar_t: float | torch.Tensor,
    alpha_bar_prev: float | torch.Tensor,
    *,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update y_t -> y_{t_prev}. Returns ``(y_prev, y0_pred)``, each shaped like ``y_t`` (B, C).

    1. y0_pred = (y_t - sqrt(1 - a_t) eps_pred) / sqrt(a_t)                      (DDIM eq. 12, "predicted x0")
    2. sigma   = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)       (DDIM eq. 16)
    3. dir     = sqrt(1 - a_prev - sigma^2) eps_pred                             ("direction pointing to x_t")
    4. y_prev  = sqrt(a_prev) y0_pred + dir + sigma noise                        (DDIM eq. 12)

    Here a_t = alpha-bar_t. With eta = 0 the step is deterministic and ``noise`` is unused.
    """
    a_t = torch.as_tensor(alpha_bar_t, dtype=y_t.dtype)
    a_prev = torch.as_tensor(alpha_bar_prev, dtype=y_t.dtype)
    y0_pred = (y_t - (1 - a_t).sqrt() * eps_pred) / a_t.sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    direction = (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps_pred
    y_prev = a_prev.sqrt() * y0_pred + direction
    if eta > 0:
        if noise is None:
            raise InputError("ddim_step with eta > 0 needs noise")
        y_prev = y_prev + sigma * noise
    return y_prev, y0_pred


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    y_T: torch.Tensor,
    alpha_bar: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    final_alpha_bar: float | None = None,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM from ``y_T`` over descending ``timesteps``; return the last step's y0 estimate (B, C).

    Parameters
    ----------
    eps_fn : ``eps_fn(y_t (B, C), t (B,) int64) -> eps_pred (B, C)``.
    y_T : (B, C) starting point: zeros (the prior mean, deterministic inference as the paper) or N(0, I).
    alpha_bar : (T,) cumulative alphas.
    timesteps : descending int64 timesteps, e.g. :func:`ddim_timesteps`.
    eta : 0 = deterministic DDIM; 1 = DDPM-like ancestral noise.
    generator : source of the step noise when ``eta > 0``.
    final_alpha_bar : alpha-bar used after the last timestep; default ``alpha_bar[0]`` (diffusers'
        ``set_alpha_to_one=False``).
    prior : (B, C) CARD's prior mean f_q(x), or None for zero. With a prior the forward process is
        ``y_t - f_q = sqrt(a_t) (y0 - f_q) + sqrt(1 - a_t) eps``, so DDIM runs unchanged on the shifted
        vectors ``y - f_q`` (CARD's reverse step, Han et al. 2022, eq. 9 with eta = 0); ``y_T`` is given
        in unshifted coordinates (``y_T = f_q`` is the deterministic start of CARD) and ``eps_fn`` sees
        unshifted ``y_t``.
    """
    alpha_bar = alpha_bar.to(y_T.device)
    final = alpha_bar[0] if final_alpha_bar is None else torch.as_tensor(final_alpha_bar, dtype=alpha_bar.dtype)
    shift = torch.zeros_like(y_T) if prior is None else prior.to(y_T)
    y = y_T - shift
    y0_pred = y
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(ts):
        a_prev = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else final
        t_batch = torch.full((y.shape[0],), t, dtype=torch.int64, device=y.device)
        eps_pred = eps_fn(y + shift, t_batch)
        noise = None
        if eta > 0:
            # drawn where the generator lives (a CPU generator gives the same noise on every device)
            where = y.device if generator is None else generator.device
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=where).to(y.device)
        y, y0_pred = ddim_step(y, eps_pred, alpha_bar[t], a_prev, eta=eta, noise=noise)
    return y0_pred + shift
