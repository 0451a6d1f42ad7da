"""CARD's prior mean f_q(x): a fast classifier fitted on the noisy labels before the denoiser trains.

CARD (Han et al. 2022) centres the label diffusion at the output of a pretrained classifier, so the
denoiser learns a correction of that classifier instead of the whole label distribution from y_T = 0.
LRA-diffusion's reference code sets the prior to zero. Two priors are fitted here, on the standardised
training features and the *noisy* labels:

- ``"linear"``: a multinomial logistic regression, full-batch L-BFGS, the L2 strength chosen on the
  held-out (noisy) validation labels (:func:`fit_prior`);
- ``"mlp"``: a one-hidden-layer ReLU network trained with cross-entropy by Adam, the epoch with the best
  held-out accuracy kept and Adam's weight decay chosen on the held-out labels from
  :data:`MLP_WEIGHT_DECAYS` (:func:`fit_mlp_prior`); CARD's own f_q is a nonlinear classifier too.

``"auto"`` fits both and keeps the MLP only where it is clearly more accurate on the held-out labels
(:func:`choose_prior`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import binomtest, norm

from ..errors import InputError

L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)  # strong to weak: each fit starts from the previous solution
PRIOR_MAX_ROWS = 50_000  # rows a prior is fitted on (a seeded random subset beyond), bounding its cost


@dataclass
class Prior:
    """A fitted prior classifier over standardised features: ``softmax(h @ weight + bias)`` with
    ``h = f`` (linear) or ``h = relu(f @ hidden_weight + hidden_bias)`` (MLP)."""

    weight: torch.Tensor  # (D, C), or (H, C) with a hidden layer
    bias: torch.Tensor  # (C,)
    l2: float  # the L2 strength (linear) or Adam's weight decay (MLP)
    val_accuracy: float | None  # on the validation labels (noisy unless the caller's are clean)
    hidden_weight: torch.Tensor | None = None  # (D, H)
    hidden_bias: torch.Tensor | None = None  # (H,)
    epoch: int | None = None  # the MLP's selected epoch

    @property
    def kind(self) -> str:
        return "linear" if self.hidden_weight is None else "mlp"

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """(N, D) standardised features -> (N, C) logits."""
        if self.hidden_weight is not None:
            f = torch.relu(f @ self.hidden_weight + self.hidden_bias)
        return f @ self.weight + self.bias


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
    y_val: torch.Tensor | None = None, max_rows: int = PRIOR_MAX_ROWS, generator: torch.Generator | None = None,
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


MLP_WEIGHT_DECAYS = (1e-2, 1e-4)  # strong to weak; the held-out labels choose (ties: the stronger)
MLP_MIN_STEPS = 2000  # small sets get more epochs, as the denoiser's own auto_steps
MLP_PATIENCE = 10  # epochs (or a quarter of the run, if more) without a better held-out accuracy: stop


def fit_mlp_prior(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, *, f_val: torch.Tensor, y_val: torch.Tensor,
    hidden: int = 512, seed: int = 0, epochs: int = 30, max_epochs: int = 200, batch_size: int = 256,
    lr: float = 1e-3, max_rows: int = PRIOR_MAX_ROWS, weight_decays: tuple[float, ...] | None = None,
) -> Prior:
    """A one-hidden-layer ReLU classifier on standardised features f (N, D), labels y (N,): cross-entropy,
    Adam, at least ``epochs`` passes and 2,000 steps (at most ``max_epochs``), stopped after 10 epochs (or
    a quarter of the run, if more) without a better accuracy on ``(f_val, y_val)``; the best epoch is kept.
    One network is fitted per Adam weight decay of ``weight_decays`` (None: :data:`MLP_WEIGHT_DECAYS`)
    and the most accurate on the held-out labels kept (ties: the first, the stronger decay): with noisy
    labels a weak decay lets the network memorise them (it then reproduces every noisy training label), a
    strong one can underfit many classes.

    Its own generators are seeded by ``seed`` (initial weights, row subset, batch order), so fitting it
    draws nothing from a caller's generator. At most ``max_rows`` rows are used.
    """
    fits = [_fit_mlp(f, y, num_classes, f_val=f_val, y_val=y_val, hidden=hidden, seed=seed, epochs=epochs,
                     max_epochs=max_epochs, batch_size=batch_size, lr=lr, max_rows=max_rows, weight_decay=wd)
            for wd in (MLP_WEIGHT_DECAYS if weight_decays is None else weight_decays)]
    return max(fits, key=lambda p: p.val_accuracy)  # max keeps the first of equals


def _fit_mlp(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, *, f_val: torch.Tensor, y_val: torch.Tensor,
    hidden: int, seed: int, epochs: int, max_epochs: int, batch_size: int, lr: float, max_rows: int,
    weight_decay: float,
) -> Prior:
    """One MLP prior fit of :func:`fit_mlp_prior` at one weight decay."""
    g = torch.Generator().manual_seed(seed)
    if len(f) > max_rows:
        rows = torch.randperm(len(f), generator=g)[:max_rows]
        f, y = f[rows], y[rows]
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(f.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    batch = min(batch_size, len(f))
    steps = max(1, len(f) // batch)
    epochs = min(max_epochs, max(epochs, math.ceil(MLP_MIN_STEPS / steps)))
    patience = max(MLP_PATIENCE, epochs // 4)
    best, best_acc, best_epoch, since = None, -1.0, 0, 0
    with torch.enable_grad():
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(len(f), generator=g)
            for i in range(steps):
                idx = perm[i * batch : (i + 1) * batch]
                loss = torch.nn.functional.cross_entropy(net(f[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = float((net(f_val).argmax(1) == y_val).float().mean())
            if acc > best_acc:
                best_acc, best_epoch, since = acc, epoch, 0
                best = [p.detach().clone() for p in net.parameters()]
            else:
                since += 1
                if since >= patience:
                    break
    w1, b1, w2, b2 = best
    return Prior(w2.T.contiguous(), b2, weight_decay, best_acc, hidden_weight=w1.T.contiguous(),
                 hidden_bias=b1, epoch=best_epoch)


def clearly_better(a_only: int, b_only: int, *, z: float = 2.0) -> bool:
    """McNemar's sign test on the rows where exactly one of two classifiers is right: does ``a`` win more
    of them than chance allows? Exact (binomial, one-sided) at the level of ``z`` standard deviations
    (z = 2: p <= 0.0228). The normal approximation used before 2026-12-06 is too eager on few rows: it
    passed 5 of 5 (p = 0.031), which the exact test does not."""
    n = a_only + b_only
    return n > 0 and bool(binomtest(a_only, n, 0.5, alternative="greater").pvalue <= norm.sf(z))


def choose_prior(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, *, kind: str, f_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None, hidden: int = 512, seed: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Prior, dict]:
    """The prior of ``kind`` ("linear", "mlp" or "auto") and a record of the choice.

    "auto": the linear prior, unless validation data is given and the MLP prior is clearly more accurate
    on it (:func:`clearly_better`, z = 2, on the rows only one of them gets right). The linear fit draws
    from ``generator`` (its row subset, as before the MLP existed); the MLP from its own ``seed``.
    """
    if kind in ("mlp", "auto") and f_val is None:
        if kind == "mlp":
            raise InputError('prior "mlp" selects its epoch on validation data: give validation data or val_fraction > 0')
        kind = "linear"
    linear = fit_prior(f, y, num_classes, f_val=f_val, y_val=y_val, generator=generator) if kind != "mlp" else None
    if kind == "linear":
        return linear, {"kind": "linear", "linear_val_accuracy": linear.val_accuracy}
    mlp = fit_mlp_prior(f, y, num_classes, f_val=f_val, y_val=y_val, hidden=hidden, seed=seed)
    record = {"mlp_val_accuracy": mlp.val_accuracy, "mlp_epoch": mlp.epoch, "mlp_weight_decay": mlp.l2}
    if kind == "mlp":
        return mlp, {"kind": "mlp", **record}
    with torch.no_grad():
        right_linear = linear.logits(f_val).argmax(1) == y_val
        right_mlp = mlp.logits(f_val).argmax(1) == y_val
    mlp_only, linear_only = int((right_mlp & ~right_linear).sum()), int((right_linear & ~right_mlp).sum())
    pick = mlp if clearly_better(mlp_only, linear_only) else linear
    return pick, {"kind": pick.kind, "linear_val_accuracy": linear.val_accuracy, **record,
                  "mlp_only": mlp_only, "linear_only": linear_only}
