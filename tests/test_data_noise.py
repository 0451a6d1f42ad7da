"""Noise generators: requested rates at N = 50,000, the documented transition structure, seeds,
composition (checked against the paper's own _U_ / _A_ files when the shared data is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lra_diffusion.data import (
    CIFAR100_COARSE,
    asymmetric_map,
    asymmetric_noise,
    compose_noise,
    instance_noise,
    make_noisy_labels,
    noise_rate,
    pairflip_noise,
    parse_noise_steps,
    pmd_noise,
    symmetric_noise,
    transition_matrix,
)
from lra_diffusion.errors import InputError

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
needs_shared = pytest.mark.skipif(
    not (SHARED_CIFAR / "noisy_labels" / "pmd").is_dir(),
    reason=f"shared data not found at {SHARED_CIFAR} (clone the repo with shared/ beside it)")

N = 50_000
CLEAN10 = np.random.default_rng(123).permutation(np.arange(N) % 10)
CLEAN100 = np.random.default_rng(321).permutation(np.arange(N) % 100)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_rate_and_uniform_off_diagonal(rate):
    noisy, T = symmetric_noise(CLEAN10, rate=rate, rng=0, num_classes=10)
    assert abs(noise_rate(CLEAN10, noisy) - rate) < 0.01
    np.testing.assert_allclose(np.diag(T), 1 - rate, atol=1e-3)
    off = T[~np.eye(10, dtype=bool)]
    np.testing.assert_allclose(off, rate / 9, atol=0.012)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    np.testing.assert_array_equal(T, transition_matrix(CLEAN10, noisy, num_classes=10))


def test_same_seed_same_labels_and_generators_work():
    a, _ = symmetric_noise(CLEAN10, rate=0.4, rng=7, num_classes=10)
    b, _ = symmetric_noise(CLEAN10, rate=0.4, rng=np.random.default_rng(7), num_classes=10)
    c, _ = symmetric_noise(CLEAN10, rate=0.4, rng=8, num_classes=10)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    eta = np.random.default_rng(0).dirichlet(np.ones(10), size=N)
    x = np.random.default_rng(1).standard_normal((N, 8))
    for fn, kw in ((asymmetric_noise, {}), (pairflip_noise, {}), (instance_noise, {"features": x}),
                   (pmd_noise, {"posteriors": eta})):
        p, _ = fn(CLEAN10, rate=0.3, rng=5, num_classes=10, **kw)
        q, _ = fn(CLEAN10, rate=0.3, rng=5, num_classes=10, **kw)
        np.testing.assert_array_equal(p, q)
    with pytest.raises(InputError, match="rng must be a numpy Generator or an integer seed"):
        symmetric_noise(CLEAN10, rate=0.4, rng=None, num_classes=10)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_asymmetric_cifar10_map(rate):
    target = asymmetric_map(10)
    assert {int(s): int(t) for s, t in enumerate(target) if s != t} == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    noisy, T = asymmetric_noise(CLEAN10, rate=rate, rng=1, num_classes=10)
    expected = np.eye(10)
    for s, t in {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}.items():
        expected[s, s], expected[s, t] = 1 - rate, rate
    np.testing.assert_allclose(T, expected, atol=1e-3)
    # rate is per source class; half the classes are sources, so the overall rate is rate / 2
    assert abs(noise_rate(CLEAN10, noisy) - rate / 2) < 0.01


def test_asymmetric_cifar100_next_class_in_superclass():
    assert np.bincount(CIFAR100_COARSE).tolist() == [5] * 20
    target = asymmetric_map(100)
    assert (CIFAR100_COARSE[target] == CIFAR100_COARSE).all() and (target != np.arange(100)).all()
    for g in range(20):  # a 5-cycle through the members, in increasing fine id
        members = np.flatnonzero(CIFAR100_COARSE == g)
        assert target[members].tolist() == np.roll(members, -1).tolist()
    noisy, T = asymmetric_noise(CLEAN100, rate=0.4, rng=2, num_classes=100)
    assert abs(noise_rate(CLEAN100, noisy) - 0.4) < 0.01
    np.testing.assert_allclose(T[np.arange(100), target], 0.4, atol=0.002)
    blocks = asymmetric_map(100, groups=np.arange(100) // 5)  # the common codebases' variant
    assert blocks[:6].tolist() == [1, 2, 3, 4, 0, 6]
    with pytest.raises(InputError, match="no standard asymmetric map for 7 classes"):
        asymmetric_map(7)
    mapped, _ = asymmetric_noise(np.arange(7).repeat(100), rate=1.0, rng=0, mapping={6: 0})
    assert (mapped[600:] == 0).all() and (mapped[:600] == np.arange(6).repeat(100)).all()


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_pairflip_structure(rate):
    noisy, T = pairflip_noise(CLEAN10, rate=rate, rng=3, num_classes=10)
    assert abs(noise_rate(CLEAN10, noisy) - rate) < 0.01
    expected = (1 - rate) * np.eye(10) + rate * np.roll(np.eye(10), 1, axis=1)
    np.testing.assert_allclose(T, expected, atol=1e-3)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.4])
def test_instance_dependent_rate_and_feature_dependence(rate):
    rng = np.random.default_rng(4)
    protos = rng.standard_normal((500, 16)) * 50  # large scale: each x has one preferred target
    groups = np.repeat(np.arange(500), 100)
    x = protos[groups]
    clean = np.repeat(np.arange(500) % 10, 100)
    noisy, T = instance_noise(clean, rate=rate, features=x, rng=5, num_classes=10)
    assert abs(noise_rate(clean, noisy) - rate) < 0.01
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    assert (np.diag(T) > 1 - rate - 0.1).all() and (np.diag(T) < 1 - rate + 0.1).all()
    flipped = noisy != clean
    # identical (features, label) -> the same flip distribution; at this feature scale it is nearly
    # one-hot, so almost every group of identical samples flips to a single class
    n_targets = np.array([len(set(noisy[(groups == g) & flipped].tolist())) for g in range(500)])
    assert np.mean(n_targets <= 1) > 0.95
    # and the targets differ between instances of one class: not a class-level map
    class0 = [next(iter(set(noisy[(groups == g) & flipped].tolist())), None) for g in range(0, 500, 10)]
    assert len({t for t in class0 if t is not None}) > 3


def _posteriors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, 10)) * rng.uniform(0.5, 4, size=(n, 1))
    logits[np.arange(n), CLEAN10[:n]] += 2.0
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("noise_type", [1, 2, 3])
@pytest.mark.parametrize("rate", [0.35, 0.5])
def test_pmd_rate_targets_and_margin_dependence(noise_type, rate):
    eta = _posteriors(N, 6)
    noisy, T = pmd_noise(CLEAN10, rate=rate, posteriors=eta, rng=7, noise_type=noise_type)
    assert abs(noise_rate(CLEAN10, noisy) - rate) < 0.01
    flipped = noisy != CLEAN10
    others = eta.copy()
    others[np.arange(N), CLEAN10] = -1
    s = others.argmax(axis=1)
    np.testing.assert_array_equal(noisy[flipped], s[flipped])  # only to the runner-up class
    margin = eta[np.arange(N), CLEAN10] - eta[np.arange(N), s]
    small, large = margin < np.quantile(margin, 0.25), margin > np.quantile(margin, 0.75)
    assert flipped[small].mean() > flipped[large].mean() + 0.05  # margin diminishing


def test_pmd_input_checks():
    eta = np.eye(10)[CLEAN10[:100]]
    with pytest.raises(InputError, match="cannot reach rate 0.300"):
        pmd_noise(CLEAN10[:100], rate=0.3, posteriors=eta, rng=0, noise_type=2)
    with pytest.raises(InputError, match="noise_type=4 is not one of 1, 2, 3"):
        pmd_noise(CLEAN10[:100], rate=0.3, posteriors=eta, rng=0, noise_type=4)
    with pytest.raises(InputError, match=r"posteriors have shape \(100, 10\), expected \(99, 10\)"):
        pmd_noise(CLEAN10[:99], rate=0.3, posteriors=eta, rng=0)
    with pytest.raises(InputError, match="not logits"):
        pmd_noise(CLEAN10[:100], rate=0.3, posteriors=eta - 0.5, rng=0)


def test_composition_and_make_noisy_labels():
    eta = _posteriors(N, 8)
    a, Ta = make_noisy_labels(CLEAN10, model="pmd", rate=0.35, rng=9, posteriors=eta,
                              then=[("symmetric", 0.6)])
    b, Tb = compose_noise(CLEAN10, [("pmd", {"rate": 0.35, "posteriors": eta}),
                                    ("symmetric", {"rate": 0.6})], rng=9, num_classes=10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(Ta, Tb)
    # 0.35 * 0.4 kept noisy + 0.65 * 0.6 newly noisy + 0.35 * 0.6 * 8/9 still noisy
    assert abs(noise_rate(CLEAN10, a) - (0.14 + 0.39 + 0.35 * 0.6 * 8 / 9)) < 0.01
    assert parse_noise_steps("pmd:0.35+U:0.6") == [("pmd", 0.35), ("symmetric", 0.6)]
    with pytest.raises(InputError, match="unknown noise model 'gauss'; choose one of symmetric, "
                                         "asymmetric, pairflip, instance, pmd"):
        make_noisy_labels(CLEAN10, model="gauss", rate=0.1, rng=0)
    with pytest.raises(InputError, match="needs per-sample features"):
        make_noisy_labels(CLEAN10, model="instance", rate=0.1, rng=0)
    with pytest.raises(InputError, match=r"rate must be a number in \[0, 1\], got 1.5"):
        make_noisy_labels(CLEAN10, model="symmetric", rate=1.5, rng=0)
    with pytest.raises(InputError, match="'symmetric' is not 'model:rate'"):
        parse_noise_steps("symmetric")
    with pytest.raises(InputError, match="outside 0..9"):
        symmetric_noise(np.array([0, 12]), rate=0.1, rng=0, num_classes=10)


@needs_shared
def test_composition_reproduces_the_papers_U_and_A_files():
    clean = np.loadtxt(SHARED_CIFAR / "train.csv", delimiter=",", skiprows=1, usecols=2,
                       dtype=np.int64)[:45_000]
    pmd_dir = SHARED_CIFAR / "noisy_labels" / "pmd"
    pmd = np.load(pmd_dir / "cifar10-1-0.35.npy")
    u_file = np.load(pmd_dir / "cifar10-1-0.35_U_0.6.npy")
    a_file = np.load(pmd_dir / "cifar10-1-0.35_A_0.3.npy")
    ours_u, _ = symmetric_noise(pmd, rate=0.6, rng=0, num_classes=10)
    ours_a, _ = asymmetric_noise(pmd, rate=0.3, rng=0, num_classes=10)
    assert abs(noise_rate(clean, ours_u) - noise_rate(clean, u_file)) < 0.01  # 71.8 %
    assert abs(noise_rate(clean, ours_a) - noise_rate(clean, a_file)) < 0.01  # 41.2 %
    # The paper's _A_ file moves PMD labels only along our asymmetric map, ~30 % per source class.
    T = transition_matrix(pmd, a_file, num_classes=10)
    target = asymmetric_map(10)
    allowed = np.eye(10, dtype=bool)
    allowed[np.arange(10), target] = True
    assert T[~allowed].sum() == 0
    sources = np.flatnonzero(target != np.arange(10))
    np.testing.assert_allclose(T[sources, target[sources]], 0.3, atol=0.02)
    # and its _U_ file changes ~60 % of the PMD labels, never to the same label
    assert abs(np.mean(u_file != pmd) - 0.6) < 0.01
