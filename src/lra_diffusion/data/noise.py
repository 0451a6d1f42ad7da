"""Synthetic label noise: symmetric, asymmetric, pair-flip, instance-dependent and PMD.

Every generator is a plain function over arrays::

    noisy, T = symmetric_noise(labels, rate=0.4, num_classes=10, rng=0)

It takes the clean labels ``(N,)``, a ``rate``, an explicit ``rng`` (a ``np.random.Generator`` or an
integer seed; nothing touches the global RNG) and returns the noisy labels ``(N,)`` together with
the *realised* transition matrix ``T`` ``(C, C)``, ``T[i, j] = #(clean = i, noisy = j) / #(clean = i)``
(rows of classes absent from ``labels`` are zero).

What ``rate`` means, per model:

* ``symmetric``: the fraction of labels changed, each to a different class chosen uniformly;
  exactly ``round(rate * n_c)`` labels of each class ``c`` change.
* ``asymmetric``: the fraction of each *source* class flipped to its target (CIFAR-10: truck ->
  automobile, bird -> airplane, deer -> horse, cat <-> dog; CIFAR-100: the next class in the same
  superclass); exact counts per class. On CIFAR-10 only half the classes have a target, so the
  overall noise rate is about ``rate / 2``; :func:`asymmetric_map` gives the map.
* ``pairflip``: class ``c`` -> ``c + 1`` (mod C), exact counts per class.
* ``instance``: Xia et al. (NeurIPS 2020, "Part-dependent label noise"): per-sample flip
  probabilities from a truncated normal around ``rate``, flip targets from ``softmax(x W_y)`` with
  a random projection ``W_y`` per class. Flips are Bernoulli draws; the probabilities are rescaled to
  average exactly ``rate`` (the original truncated normal is biased upwards for small rates).
* ``pmd``: Poly-Margin Diminishing noise (Zhang et al., ICLR 2021), types I-III, from per-sample
  class posteriors ``eta`` ``(N, C)``: a label ``y`` flips to the most likely other class ``s`` with a
  probability proportional to ``tau(eta_y - eta_s)``, largest where the margin is small. The
  constant factor is solved so the expected rate is ``rate``; flips are Bernoulli draws.

:func:`compose_noise` applies several models in turn to the *current* labels, as the paper's
``cifar10-1-0.35_U_0.6`` files do (PMD 35 % first, then symmetric 60 % on top: 71.8 % overall).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lra_diffusion.data.labels import check_labels
from lra_diffusion.errors import InputError

RNGLike = np.random.Generator | int

__all__ = [
    "CIFAR100_COARSE",
    "NOISE_MODELS",
    "as_generator",
    "asymmetric_map",
    "asymmetric_noise",
    "compose_noise",
    "instance_noise",
    "make_noisy_labels",
    "noise_rate",
    "pairflip_noise",
    "parse_noise_steps",
    "pmd_noise",
    "symmetric_noise",
    "transition_matrix",
]

# Superclass (coarse label) of each CIFAR-100 fine label, from the official release's meta data.
CIFAR100_COARSE: np.ndarray = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)
CIFAR100_COARSE.setflags(write=False)

# The standard CIFAR-10 asymmetric map (Patrini et al., CVPR 2017): source -> target.
_CIFAR10_ASYM = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def as_generator(rng: RNGLike) -> np.random.Generator:
    """Return ``rng`` if it is a ``np.random.Generator``, else a new one seeded with the integer."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise InputError(f"seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise InputError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Realised transition matrix between two label arrays.

    Parameters
    ----------
    clean, noisy
        int ``(N,)`` labels in ``0..num_classes-1``.
    num_classes
        C.

    Returns
    -------
    np.ndarray
        float64 ``(C, C)``; ``T[i, j]`` = fraction of items with clean label ``i`` whose noisy label
        is ``j``. Rows of classes absent from ``clean`` are zero.
    """
    clean = check_labels(clean, num_classes=num_classes, name="clean labels")
    noisy = check_labels(noisy, num_samples=len(clean), num_classes=num_classes, name="noisy labels")
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


def noise_rate(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of items whose noisy label differs from the clean one (``clean``, ``noisy``: ``(N,)``)."""
    clean = check_labels(clean, name="clean labels")
    noisy = check_labels(noisy, num_samples=len(clean), name="noisy labels")
    return float(np.mean(clean != noisy)) if len(clean) else 0.0


def _prepare(labels: Any, num_classes: int | None, rate: float) -> tuple[np.ndarray, int]:
    labels = check_labels(labels, num_classes=num_classes, name="labels")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if num_classes < 2:
        raise InputError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if not (isinstance(rate, (int, float, np.floating)) and 0.0 <= float(rate) <= 1.0):
        raise InputError(f"rate must be a number in [0, 1], got {rate!r}")
    return labels, int(num_classes)


def _exact_flips(labels: np.ndarray, sources: np.ndarray, rate: float, rng: np.random.Generator):
    """For each source class, pick exactly ``round(rate * n_c)`` of its items (index arrays)."""
    for c in sources:
        idx = np.flatnonzero(labels == c)
        k = int(round(rate * len(idx)))
        if k:
            yield c, rng.choice(idx, size=k, replace=False)


def _scale_to_mean(weights: np.ndarray, rate: float, *, what: str) -> np.ndarray:
    """Find ``lam`` with ``mean(clip(lam * weights, 0, 1)) == rate``; return the probabilities."""
    if rate == 0:
        return np.zeros_like(weights)
    reachable = float(np.mean(weights > 0))
    if rate > reachable + 1e-12:
        raise InputError(f"{what} cannot reach rate {rate:.3f}: at most {reachable:.3f} of the items "
                         "can change label")
    lo, hi = 0.0, 1.0
    while np.mean(np.clip(hi * weights, 0, 1)) < rate:
        hi *= 2.0
        if hi > 1e12:  # pragma: no cover - guarded by the reachability check
            break
    for _ in range(100):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if np.mean(np.clip(mid * weights, 0, 1)) < rate:
            lo = mid
        else:
            hi = mid
    return np.clip(hi * weights, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Class-conditional models
# ---------------------------------------------------------------------------------------------
def symmetric_noise(
    labels: np.ndarray,
    *,
    rate: float,
    rng: RNGLike,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric (uniform) noise: change ``rate`` of each class to a uniformly chosen other class.

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    rate
        Fraction of labels changed, in ``[0, 1]`` (exactly ``round(rate * n_c)`` per class ``c``).
    rng
        ``np.random.Generator`` or integer seed.
    num_classes
        C; defaults to ``labels.max() + 1``.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)``.
    T : np.ndarray
        float64 ``(C, C)`` realised transition matrix, about ``1 - rate`` on the diagonal and
        ``rate / (C - 1)`` elsewhere.
    """
    labels, C = _prepare(labels, num_classes, rate)
    gen = as_generator(rng)
    noisy = labels.copy()
    for c, chosen in _exact_flips(labels, np.arange(C), float(rate), gen):
        noisy[chosen] = (c + gen.integers(1, C, size=len(chosen))) % C
    return noisy, transition_matrix(labels, noisy, num_classes=C)


def asymmetric_map(num_classes: int, *, groups: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The class map of asymmetric noise: ``target[c]`` (``target[c] == c`` means no flip).

    Parameters
    ----------
    num_classes
        C. For C = 10 the CIFAR-10 map (truck -> automobile, bird -> airplane, deer -> horse,
        cat <-> dog); for C = 100 the next class within each CIFAR-100 superclass (cyclic, fine ids
        in increasing order). Other C need ``groups``.
    groups
        Group id of each class ``(C,)``; each class maps to the next class of its group (cyclic).
        Note: many codebases (Patrini et al. 2017 and its copies) use blocks of 5 consecutive ids
        for CIFAR-100, which are *not* the real superclasses; pass ``np.arange(100) // 5`` for that.

    Returns
    -------
    np.ndarray
        int64 ``(C,)``.
    """
    if groups is None:
        if num_classes == 10:
            target = np.arange(10, dtype=np.int64)
            for s, t in _CIFAR10_ASYM.items():
                target[s] = t
            return target
        if num_classes == 100:
            groups = CIFAR100_COARSE
        else:
            raise InputError(f"no standard asymmetric map for {num_classes} classes; pass groups= "
                             "(the group of each class) or a mapping")
    g = np.asarray(groups).reshape(-1)
    if len(g) != num_classes:
        raise InputError(f"groups has {len(g)} entries, expected num_classes={num_classes}")
    target = np.arange(num_classes, dtype=np.int64)
    for gid in np.unique(g):
        members = np.flatnonzero(g == gid)
        target[members] = np.roll(members, -1)
    return target


def asymmetric_noise(
    labels: np.ndarray,
    *,
    rate: float,
    rng: RNGLike,
    num_classes: int | None = None,
    mapping: Sequence[int] | np.ndarray | dict[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric (class-dependent) noise: flip ``rate`` of each source class to its target.

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    rate
        Fraction of each source class flipped (exactly ``round(rate * n_c)``).
    rng
        ``np.random.Generator`` or integer seed.
    num_classes
        C; defaults to ``labels.max() + 1`` (give it explicitly for the standard maps).
    mapping
        ``target[c]`` per class ``(C,)`` or a ``{source: target}`` dict; default
        :func:`asymmetric_map` ``(C)``.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)``.
    T : np.ndarray
        float64 ``(C, C)``: ``1 - rate`` on the diagonal and ``rate`` at ``[c, target[c]]`` for
        source classes, identity rows elsewhere.
    """
    labels, C = _prepare(labels, num_classes, rate)
    if mapping is None:
        target = asymmetric_map(C)
    elif isinstance(mapping, dict):
        target = np.arange(C, dtype=np.int64)
        for s, t in mapping.items():
            if not (0 <= int(s) < C and 0 <= int(t) < C):
                raise InputError(f"mapping {s} -> {t} is outside classes 0..{C - 1}")
            target[int(s)] = int(t)
    else:
        target = check_labels(mapping, num_samples=C, num_classes=C, name="mapping")
    gen = as_generator(rng)
    noisy = labels.copy()
    sources = np.flatnonzero(target != np.arange(C))
    for c, chosen in _exact_flips(labels, sources, float(rate), gen):
        noisy[chosen] = target[c]
    return noisy, transition_matrix(labels, noisy, num_classes=C)


def pairflip_noise(
    labels: np.ndarray,
    *,
    rate: float,
    rng: RNGLike,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair-flip noise: flip ``rate`` of each class ``c`` to ``(c + 1) mod C`` (Han et al., 2018).

    Returns ``(noisy (N,), T (C, C))`` with ``1 - rate`` on the diagonal and ``rate`` just right of it.
    """
    labels, C = _prepare(labels, num_classes, rate)
    return asymmetric_noise(labels, rate=rate, rng=rng, num_classes=C,
                            mapping=(np.arange(C) + 1) % C)


# ---------------------------------------------------------------------------------------------
# Instance-dependent models
# ---------------------------------------------------------------------------------------------
def instance_noise(
    labels: np.ndarray,
    *,
    rate: float,
    features: np.ndarray,
    rng: RNGLike,
    num_classes: int | None = None,
    std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance-dependent noise of Xia et al. (NeurIPS 2020).

    1. Per-sample flip probabilities ``q_i`` from ``N(rate, std^2)`` truncated to ``[0, 1]``, then
       rescaled so that they average ``rate`` (an explicit deviation: the truncation alone biases
       the mean upwards, e.g. 0.129 for rate 0.1).
    2. A random projection ``W`` ``(C, D, C)`` with standard normal entries; sample ``i`` with label
       ``y`` flips to class ``j != y`` with probability ``softmax_{j != y}(x_i W_y)_j``.
    3. ``noisy_i = j`` with probability ``q_i * p_ij``, else ``y``.

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    rate
        Expected fraction of labels changed.
    features
        float ``(N, D)`` per-sample features (Xia et al. use the flattened, normalised image; their
        scale sets how peaked the flip targets are).
    rng
        ``np.random.Generator`` or integer seed.
    num_classes
        C; defaults to ``labels.max() + 1``.
    std
        Standard deviation of the flip probabilities.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)``.
    T : np.ndarray
        float64 ``(C, C)`` realised transition matrix (diagonal about ``1 - rate``, off-diagonals
        uneven and feature-dependent).
    """
    from scipy.stats import truncnorm

    labels, C = _prepare(labels, num_classes, rate)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise InputError(f"features must have shape (N, D) with N={len(labels)}, got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("features contain NaN or infinite values")
    if not std > 0:
        raise InputError(f"std must be > 0, got {std}")
    gen = as_generator(rng)
    n = len(labels)
    rate = float(rate)
    a, b = (0.0 - rate) / std, (1.0 - rate) / std
    q = truncnorm.rvs(a, b, loc=rate, scale=std, size=n, random_state=gen)
    q = _scale_to_mean(np.asarray(q, dtype=np.float64), rate, what="instance noise")
    W = gen.standard_normal((C, x.shape[1], C))
    noisy = labels.copy()
    flip = gen.random(n) < q
    u = gen.random(n)
    for c in range(C):
        idx = np.flatnonzero((labels == c) & flip)
        if not idx.size:
            continue
        logits = x[idx] @ W[c]  # (n_c, C)
        logits[:, c] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        cdf = np.cumsum(p, axis=1)
        choice = (cdf < u[idx, None]).sum(axis=1)
        choice = np.minimum(choice, C - 1)
        choice[choice == c] = (c + 1) % C if C > 1 else c  # only reachable through rounding
        noisy[idx] = choice
    return noisy, transition_matrix(labels, noisy, num_classes=C)


_PMD_TAU: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    # tau(delta), delta = eta_y - eta_s in [0, 1]: the flip propensity, diminishing with the margin.
    1: lambda d: 0.5 - 0.5 * d**2,
    2: lambda d: 1.0 - d**3,
    3: lambda d: 1.0 - (d**3 + d**2 + d) / 3.0,
}


def pmd_noise(
    labels: np.ndarray,
    *,
    rate: float,
    posteriors: np.ndarray,
    rng: RNGLike,
    noise_type: int = 1,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Poly-Margin Diminishing noise (Zhang et al., ICLR 2021, "Learning with feature-dependent
    label noise: a progressive approach"), types I-III.

    With ``eta = posteriors[i]``, ``y`` the clean label and ``s = argmax_{c != y} eta_c`` the most
    likely other class, the margin is ``delta = max(eta_y - eta_s, 0)`` and the flip propensity

    * type I:   ``tau = 1/2 - delta^2 / 2``
    * type II:  ``tau = 1 - delta^3``
    * type III: ``tau = 1 - (delta^3 + delta^2 + delta) / 3``.

    Item ``i`` flips to ``s`` with probability ``min(1, lam * tau_i)``, with the constant ``lam``
    solved so the expected noise rate is ``rate``. (The authors' script scales ``1 - tau`` by a
    fixed factor and reads the resulting rate off afterwards; solving for the rate makes the
    request exact. A negative margin, where the posterior prefers another class to the label,
    counts as zero margin.)

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    rate
        Expected fraction of labels changed.
    posteriors
        float ``(N, C)`` class probabilities per sample (e.g. softmax of a classifier trained on
        the clean labels); rows are renormalised.
    rng
        ``np.random.Generator`` or integer seed.
    noise_type
        1, 2 or 3.
    num_classes
        C; defaults to ``posteriors.shape[1]``.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)``; each label is either kept or moved to its ``s``.
    T : np.ndarray
        float64 ``(C, C)`` realised transition matrix.
    """
    if noise_type not in _PMD_TAU:
        raise InputError(f"noise_type={noise_type!r} is not one of 1, 2, 3")
    eta = np.asarray(posteriors, dtype=np.float64)
    if eta.ndim != 2:
        raise InputError(f"posteriors must have shape (N, C), got {eta.shape}")
    labels, C = _prepare(labels, num_classes if num_classes is not None else eta.shape[1], rate)
    if eta.shape != (len(labels), C):
        raise InputError(f"posteriors have shape {eta.shape}, expected ({len(labels)}, {C})")
    if not np.isfinite(eta).all() or (eta < 0).any():
        raise InputError("posteriors must be finite and non-negative (class probabilities, not logits)")
    sums = eta.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise InputError(f"posterior row {int(np.flatnonzero(sums[:, 0] <= 0)[0])} sums to zero")
    eta = eta / sums
    rows = np.arange(len(labels))
    others = eta.copy()
    others[rows, labels] = -np.inf
    s = others.argmax(axis=1)
    delta = np.clip(eta[rows, labels] - eta[rows, s], 0.0, 1.0)
    tau = np.clip(_PMD_TAU[noise_type](delta), 0.0, 1.0)
    p = _scale_to_mean(tau, float(rate), what=f"PMD type {noise_type} noise")
    gen = as_generator(rng)
    flip = gen.random(len(labels)) < p
    noisy = np.where(flip, s, labels).astype(np.int64)
    return noisy, transition_matrix(labels, noisy, num_classes=C)


# ---------------------------------------------------------------------------------------------
# Registry, composition and the one entry point the CLI uses
# ---------------------------------------------------------------------------------------------
NOISE_MODELS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "symmetric": symmetric_noise,
    "asymmetric": asymmetric_noise,
    "pairflip": pairflip_noise,
    "instance": instance_noise,
    "pmd": pmd_noise,
}
_ALIASES = {"uniform": "symmetric", "sym": "symmetric", "U": "symmetric", "asym": "asymmetric",
            "A": "asymmetric", "pair": "pairflip", "idn": "instance"}


def _model(name: str) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    key = _ALIASES.get(name, name)
    if key not in NOISE_MODELS:
        raise InputError(f"unknown noise model {name!r}; choose one of {', '.join(NOISE_MODELS)}")
    return NOISE_MODELS[key]


def compose_noise(
    labels: np.ndarray,
    steps: Sequence[tuple[str, dict[str, Any]]],
    *,
    rng: RNGLike,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply several noise models in turn, each to the labels the previous one produced.

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    steps
        ``[(model_name, kwargs), ...]``, e.g. ``[("pmd", {"rate": 0.35, "posteriors": eta}),
        ("symmetric", {"rate": 0.6})]``; ``kwargs`` are passed to the model (not ``rng`` or
        ``num_classes``).
    rng
        One generator (or seed) shared by all steps, in order.
    num_classes
        C; defaults to ``labels.max() + 1``.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)`` after the last step.
    T : np.ndarray
        float64 ``(C, C)`` realised transition matrix from ``labels`` to the final labels.
    """
    clean, C = _prepare(labels, num_classes, 0.0)
    if not steps:
        raise InputError("compose_noise needs at least one step")
    gen = as_generator(rng)
    current = clean
    for name, kwargs in steps:
        fn = _model(name)
        kwargs = dict(kwargs)
        if "rng" in kwargs or "num_classes" in kwargs:
            raise InputError("pass rng and num_classes to compose_noise, not to a step")
        current, _ = fn(current, rng=gen, num_classes=C, **kwargs)
    return current, transition_matrix(clean, current, num_classes=C)


def parse_noise_steps(spec: str) -> list[tuple[str, float]]:
    """Parse ``"pmd:0.35+symmetric:0.6"`` into ``[("pmd", 0.35), ("symmetric", 0.6)]``."""
    steps: list[tuple[str, float]] = []
    for part in spec.split("+"):
        name, sep, r = part.strip().partition(":")
        if not sep or not name:
            raise InputError(f"noise step {part.strip()!r} is not 'model:rate' (e.g. symmetric:0.4)")
        _model(name.strip())
        try:
            steps.append((_ALIASES.get(name.strip(), name.strip()), float(r)))
        except ValueError:
            raise InputError(f"noise step {part.strip()!r}: rate {r!r} is not a number") from None
    return steps


def make_noisy_labels(
    labels: np.ndarray,
    *,
    model: str,
    rate: float,
    rng: RNGLike,
    num_classes: int | None = None,
    then: Sequence[tuple[str, float]] = (),
    features: np.ndarray | None = None,
    posteriors: np.ndarray | None = None,
    pmd_type: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Make noisy labels from clean ones with a named model (and optional models on top).

    Parameters
    ----------
    labels
        int ``(N,)`` clean labels.
    model
        One of :data:`NOISE_MODELS` (``symmetric``, ``asymmetric``, ``pairflip``, ``instance``,
        ``pmd``).
    rate
        The model's rate (see the module docstring).
    rng
        ``np.random.Generator`` or integer seed.
    num_classes
        C; defaults to ``labels.max() + 1`` (or the posteriors' width for PMD).
    then
        Further ``(model, rate)`` steps applied on top, e.g. ``[("symmetric", 0.6)]`` for the
        paper's ``_U_0.6`` files.
    features
        ``(N, D)``, needed by ``instance``.
    posteriors
        ``(N, C)``, needed by ``pmd``.
    pmd_type
        PMD type 1-3.

    Returns
    -------
    noisy : np.ndarray
        int64 ``(N,)``.
    T : np.ndarray
        float64 ``(C, C)`` realised transition matrix from ``labels`` to ``noisy``.
    """
    steps: list[tuple[str, dict[str, Any]]] = []
    for name, r in [(model, rate), *then]:
        key = _ALIASES.get(name, name)
        _model(key)
        kw: dict[str, Any] = {"rate": r}
        if key == "instance":
            if features is None:
                raise InputError("the instance noise model needs per-sample features (N, D)")
            kw["features"] = features
        elif key == "pmd":
            if posteriors is None:
                raise InputError("the pmd noise model needs per-sample class posteriors (N, C)")
            kw["posteriors"] = posteriors
            kw["noise_type"] = pmd_type
        steps.append((key, kw))
    if num_classes is None and posteriors is not None:
        num_classes = int(np.asarray(posteriors).shape[-1])
    return compose_noise(labels, steps, rng=rng, num_classes=num_classes)
