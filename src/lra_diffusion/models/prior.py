"""CARD's prior mean f_q(x): a multinomial logistic regression fitted on the noisy labels.

CARD (Han et al. 2022) centres the label diffusion at the output of a pretrained classifier, so the
denoiser learns a correction of that classifier instead of the whole label distribution from y_T = 0.
LRA-diffusion's reference code sets the prior to zero; ``[diffusion] prior = "linear"`` uses this one.
It is fitted once, before the denoiser trains, on the standardised training features and the *noisy*
labels, by full-batch L-BFGS; the L2 strength is chosen on the held-out (noisy) validation labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)  # strong to weak: each fit starts from the previous solution


@dataclass
class Prior:
    """A fitted prior classifier over standardised features: ``softmax(f @ weight + bias)``."""

    weight: torch.Tensor  # (D, C)
    bias: torch.Tensor  # (C,)
    l2: float
    val_accuracy: float | None  # on the validation labels (noisy unless the caller's are clean)


def fit_softmax_regression(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float, max_iter: int = 100,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + 0.5 * l2 * ||W||^2 by L-BFGS; f (N, D) float32, y (N,) int64.

    Returns ``(W (D, C), b (C,))``. Deterministic for fixed inputs and thread count.
    """
    W0, b0 = init if init is not None else (torch.zeros(f.shape[1], num_classes), torch.zeros(num_classes))
    W = W0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9, history_size=20)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(f @ W + b, y) + 0.5 * l2 * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def fit_prior(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, *, f_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None, max_rows: int = 50_000, generator: torch.Generator | None = None,
    max_iter: int = 100,
) -> Prior:
    """Fit the prior on standardised features f (N, D) with labels y (N,).

    With validation data, every L2 of :data:`L2_GRID` is tried (strong to weak, warm-started) and the
    most accurate on ``(f_val, y_val)`` is kept (ties: the stronger L2); without, L2 = 1e-3. At most
    ``max_rows`` rows (a random subset drawn from ``generator``) are used, so the cost stays bounded.
    """
    if len(f) > max_rows:
        rows = torch.randperm(len(f), generator=generator)[:max_rows]
        f, y = f[rows], y[rows]
    grid = L2_GRID if f_val is not None else (1e-3,)
    best: Prior | None = None
    init = None
    for l2 in grid:
        init = fit_softmax_regression(f, y, num_classes, l2=l2, max_iter=max_iter, init=init)
        acc = None
        if f_val is not None:
            with torch.no_grad():
                acc = float(((f_val @ init[0] + init[1]).argmax(1) == y_val).float().mean())
        if best is None or (acc is not None and acc > best.val_accuracy):
            best = Prior(init[0], init[1], l2, acc)
    return best
