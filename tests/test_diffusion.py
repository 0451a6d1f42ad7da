"""The pure diffusion math: schedules, forward noising, antithetic timesteps, loss, DDIM.

DDIM is pinned two ways: an oracle noise predictor must recover y0 exactly, and every step must agree
with diffusers' ``DDIMScheduler`` configured as the paper's sampler.
"""

from __future__ import annotations

import math

import pytest
import torch

from lra_diffusion.diffusion import (
    alpha_bars,
    antithetic_timesteps,
    cosine_betas,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    get_betas,
    linear_betas,
    q_sample,
    weighted_eps_loss,
)
from lra_diffusion.errors import InputError

T = 1000


def oracle(y0: torch.Tensor, alpha_bar: torch.Tensor):
    """The true noise of y_t given y0: eps = (y_t - sqrt(ab_t) y0) / sqrt(1 - ab_t)."""

    def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = alpha_bar[t].unsqueeze(-1)
        return (y_t - ab.sqrt() * y0) / (1 - ab).sqrt()

    return eps_fn


@pytest.fixture()
def y0() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.one_hot(torch.randint(0, 5, (16,), generator=g), 5).double()


# ---- DDIM with an oracle ------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["zeros", "gaussian"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.floats
def test_ddim_with_oracle_recovers_y0(y0, start, schedule):
    ab = alpha_bars(get_betas(schedule, T))
    g = torch.Generator().manual_seed(1)
    y_T = torch.zeros_like(y0) if start == "zeros" else torch.randn(y0.shape, generator=g, dtype=torch.float64)
    out = ddim_sample(oracle(y0, ab), y_T, ab, ddim_timesteps(T, 10))
    torch.testing.assert_close(out, y0, rtol=0, atol=1e-12)


def test_ddim_with_oracle_recovers_y0_also_with_eta(y0):
    ab = alpha_bars(cosine_betas(T))
    y_T = torch.randn(y0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = ddim_sample(oracle(y0, ab), y_T, ab, ddim_timesteps(T, 10), eta=1.0,
                      generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, y0, rtol=0, atol=1e-12)


def test_ddim_with_a_wrong_predictor_does_not_recover_y0(y0):
    # the oracle test above could pass vacuously if the loop ignored eps_fn
    ab = alpha_bars(cosine_betas(T))
    out = ddim_sample(lambda y, t: torch.zeros_like(y), torch.zeros_like(y0), ab, ddim_timesteps(T, 10))
    assert (out - y0).abs().max() > 0.5


def test_ddim_step_needs_noise_when_eta_positive(y0):
    with pytest.raises(InputError, match="needs noise"):
        ddim_step(y0, y0, 0.5, 0.6, eta=0.5)


# ---- equivalence with diffusers -----------------------------------------------------------------


@pytest.fixture()
def scheduler():
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", steps_offset=1, set_alpha_to_one=False,
        timestep_spacing="leading", clip_sample=False, prediction_type="epsilon",
    )
    s.set_timesteps(10)
    return s


def linear_predictor(dim: int):
    """A fixed, non-trivial noise predictor: eps = y W + (t / T) b."""
    g = torch.Generator().manual_seed(7)
    W = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    return lambda y, t: y @ W + (torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1) / T) * b


def test_diffusers_timesteps_and_betas_match(scheduler):
    assert ddim_timesteps(T, 10).tolist() == scheduler.timesteps.tolist() == list(range(901, 0, -100))
    torch.testing.assert_close(cosine_betas(T).float(), scheduler.betas, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(alpha_bars(cosine_betas(T)).float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.floats
def test_ddim_loop_matches_diffusers_step_by_step(scheduler, eta):
    # the same float64 alpha-bar table for both, so only the update rule is compared
    ab = alpha_bars(cosine_betas(T))
    scheduler.alphas_cumprod, scheduler.final_alpha_cumprod = ab, ab[0]
    eps_fn = linear_predictor(4)
    y_T = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise_gen = torch.Generator().manual_seed(5)

    ours = theirs = y_T
    ts = ddim_timesteps(T, 10).tolist()
    for i, t in enumerate(ts):
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else ab[0]
        noise = torch.randn(y_T.shape, generator=noise_gen, dtype=torch.float64) if eta > 0 else None
        ours, ours_y0 = ddim_step(ours, eps_fn(ours, t), ab[t], a_prev, eta=eta, noise=noise)
        out = scheduler.step(eps_fn(theirs, t), t, theirs, eta=eta, variance_noise=noise)
        theirs = out.prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours_y0, out.pred_original_sample, rtol=1e-10, atol=1e-12)

    # the loop itself draws its step noise from the generator in the same order
    looped = ddim_sample(eps_fn, y_T, ab, torch.tensor(ts), eta=eta, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(looped, out.pred_original_sample, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_other_spacings_match_diffusers(spacing):
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=0)
    for steps in (1, 7, 10, 50):
        s.set_timesteps(steps)
        assert ddim_timesteps(T, steps, spacing).tolist() == s.timesteps.tolist(), steps


# ---- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("timesteps", [50, 1000])
def test_schedule_is_bounded_and_monotone(name, timesteps):
    betas = get_betas(name, timesteps)
    assert betas.shape == (timesteps,) and betas.dtype == torch.float64
    assert (betas > 0).all() and (betas <= 0.999).all()
    ab = alpha_bars(betas)
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()


def test_cosine_schedule_closed_form():
    ab = alpha_bars(cosine_betas(T))

    def f(t: float) -> float:
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    assert ab[0] > 0.9999
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T - 1)], dtype=torch.float64)
    torch.testing.assert_close(ab[:-1], expected, rtol=1e-10, atol=1e-14)  # the last beta is capped
    assert cosine_betas(T)[-1] == 0.999
    assert 0.02 < ab[901] < 0.03  # DDIM's first step starts where alpha-bar is about 0.023


def test_linear_schedule_endpoints():
    assert linear_betas(1000)[0].item() == pytest.approx(1e-4)
    assert linear_betas(1000)[-1].item() == pytest.approx(0.02)
    assert linear_betas(100)[-1].item() == pytest.approx(0.2)  # rescaled for shorter chains


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(InputError, match=r"unknown beta schedule 'quadratic'.*cosine.*linear"):
        get_betas("quadratic", 10)


def test_ddim_timesteps_spacings():
    assert ddim_timesteps(1000, 10, "leading").tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert ddim_timesteps(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    ts = ddim_timesteps(1000, 10, "linspace").tolist()
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert ddim_timesteps(10, 10, "leading").tolist() == list(range(9, -1, -1))  # no room for the +1 offset
    assert ddim_timesteps(50, 5).tolist() == [41, 31, 21, 11, 1]
    for spacing in ("leading", "linspace", "trailing"):
        ts = ddim_timesteps(100, 7, spacing)
        assert ts.dtype == torch.int64 and len(ts) == 7 and len(set(ts.tolist())) == 7
        assert ((ts >= 0) & (ts < 100)).all() and (ts[1:] < ts[:-1]).all()


@pytest.mark.parametrize("steps,spacing,message", [
    (0, "leading", "DDIM steps must be in 1..100"),
    (101, "leading", "DDIM steps must be in 1..100"),
    (10, "quadratic", r"unknown DDIM spacing 'quadratic'; valid: \['leading', 'linspace', 'trailing'\]"),
])
def test_ddim_timesteps_bad_arguments(steps, spacing, message):
    with pytest.raises(InputError, match=message):
        ddim_timesteps(100, steps, spacing)


# ---- forward process, timesteps and loss --------------------------------------------------------


def test_q_sample_formula_per_row():
    ab = alpha_bars(cosine_betas(100))
    y0 = torch.eye(4, dtype=torch.float64)
    eps = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 99])
    out = q_sample(y0, t, eps, ab)
    for i in range(4):
        expected = ab[t[i]].sqrt() * y0[i] + (1 - ab[t[i]]).sqrt() * eps[i]
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-15)


def test_q_sample_moments():
    ab = alpha_bars(cosine_betas(100))
    n = 200_000
    y0 = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    t = torch.full((n,), 60)
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    y_t = q_sample(y0, t, eps, ab)
    a = ab[60].item()
    torch.testing.assert_close(y_t.mean(0), torch.tensor([math.sqrt(a), 0.0]), rtol=0, atol=0.01)
    torch.testing.assert_close(y_t.var(0), torch.tensor([1 - a, 1 - a]), rtol=0, atol=0.01)


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_antithetic_timesteps(batch):
    t = antithetic_timesteps(batch, 50, generator=torch.Generator().manual_seed(0))
    assert t.shape == (batch,) and t.dtype == torch.int64
    assert ((t >= 0) & (t <= 49)).all()
    half = (batch + 1) // 2
    torch.testing.assert_close(t[half:], 49 - t[: batch - half])
    again = antithetic_timesteps(batch, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_antithetic_timesteps_cover_the_range():
    t = antithetic_timesteps(4000, 50, generator=torch.Generator().manual_seed(0))
    assert t.min() == 0 and t.max() == 49
    assert t.float().mean().item() == pytest.approx(24.5, abs=1e-6)  # pairs t, T-1-t average to (T-1)/2


def test_weighted_loss_normalises_the_weights():
    g = torch.Generator().manual_seed(0)
    eps_pred, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    w = torch.tensor([1.0, 2.0, 3.0, 1.0, 0.0])
    per_sample = ((eps_pred - eps) ** 2).mean(1)
    expected = (w * per_sample).sum() / w.sum()
    torch.testing.assert_close(weighted_eps_loss(eps_pred, eps, w), expected)
    torch.testing.assert_close(weighted_eps_loss(eps_pred, eps, 10 * w), expected)  # scale-free
    torch.testing.assert_close(weighted_eps_loss(eps_pred, eps, torch.ones(5)), ((eps_pred - eps) ** 2).mean())
    # a zero-weight sample does not count
    changed = eps_pred.clone()
    changed[4] += 100
    torch.testing.assert_close(weighted_eps_loss(changed, eps, w), expected)
