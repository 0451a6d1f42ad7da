"""Beta schedules (Ho et al. 2020; Nichol & Dhariwal 2021) and the cumulative alpha-bar."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import InputError


def cosine_betas(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha-bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2).

    beta_t = min(1 - alpha-bar(t+1) / alpha-bar(t), max_beta). Returns float64, shape (T,).
    """

    def f(t: float) -> float:
        return math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(timesteps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Linear schedule of Ho et al. (2020), rescaled so any T keeps the same endpoints' meaning.

    Returns float64, shape (T,).
    """
    scale = 1000 / timesteps
    return torch.linspace(start * scale, end * scale, timesteps, dtype=torch.float64)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"cosine": cosine_betas, "linear": linear_betas}


def get_betas(name: str, timesteps: int) -> torch.Tensor:
    """The named schedule's betas, float64 shape (T,); an unknown name lists the valid ones."""
    if name not in SCHEDULES:
        raise InputError(f"unknown beta schedule {name!r}; valid: {sorted(SCHEDULES)}")
    return SCHEDULES[name](timesteps)


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s), same shape and dtype as ``betas``."""
    return torch.cumprod(1.0 - betas, dim=0)
