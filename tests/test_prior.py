"""CARD's prior mean f_q(x): the shifted forward process, DDIM from the prior, the linear prior fit, and
its place in the denoiser, the trainer and a saved run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion import LRAClassifier
from lra_diffusion.diffusion import alpha_bars, cosine_betas, ddim_sample, ddim_timesteps, q_sample
from lra_diffusion.models import LabelDenoiser, fit_prior

T = 1000


@pytest.fixture()
def y0_prior():
    g = torch.Generator().manual_seed(0)
    y0 = torch.nn.functional.one_hot(torch.randint(0, 5, (16,), generator=g), 5).double()
    prior = torch.softmax(torch.randn(16, 5, generator=g, dtype=torch.float64), dim=1)
    return y0, prior


def test_q_sample_with_prior_is_centred_at_the_prior(y0_prior):
    y0, prior = y0_prior
    ab = alpha_bars(cosine_betas(T))
    eps = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.arange(16) * 60
    got = q_sample(y0, t, eps, ab, prior)
    a = ab[t].unsqueeze(-1)
    torch.testing.assert_close(got, a.sqrt() * y0 + (1 - a.sqrt()) * prior + (1 - a).sqrt() * eps)
    # no prior: the paper's process, unchanged
    torch.testing.assert_close(q_sample(y0, t, eps, ab), a.sqrt() * y0 + (1 - a).sqrt() * eps)
    # the noiseless mean at the last step is (almost) the prior
    last = torch.full((16,), T - 1)
    assert (q_sample(y0, last, torch.zeros_like(eps), ab, prior) - prior).abs().max() < 0.03


def test_ddim_from_the_prior_with_an_oracle_recovers_y0(y0_prior):
    y0, prior = y0_prior
    ab = alpha_bars(cosine_betas(T))

    def oracle(y_t, t):  # the true noise of the prior-centred process
        a = ab[t].unsqueeze(-1)
        return (y_t - a.sqrt() * y0 - (1 - a.sqrt()) * prior) / (1 - a).sqrt()

    out = ddim_sample(oracle, prior.clone(), ab, ddim_timesteps(T, 10), prior=prior)
    torch.testing.assert_close(out, y0, rtol=0, atol=1e-12)
    # a predictor of zero noise leaves the prior-centred chain at its start: the prior comes back exactly,
    # while the zero-prior chain from the same start rescales it (so the prior argument is used)
    zero = lambda y, t: torch.zeros_like(y)  # noqa: E731
    torch.testing.assert_close(ddim_sample(zero, prior.clone(), ab, ddim_timesteps(T, 10), prior=prior), prior)
    assert (ddim_sample(zero, prior.clone(), ab, ddim_timesteps(T, 10)) - prior).abs().max() > 0.1


def test_fit_prior_learns_a_separable_problem_and_picks_l2_on_validation():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 4, generator=g) * 4
    y = torch.randint(0, 3, (600,), generator=g)
    f = centres[y] + torch.randn(600, 4, generator=g)
    prior = fit_prior(f[:500], y[:500], 3, f_val=f[500:], y_val=y[500:])
    assert prior.weight.shape == (4, 3) and prior.bias.shape == (3,)
    assert prior.val_accuracy > 0.9
    assert prior.l2 in (1e-1, 1e-2, 1e-3, 1e-4)
    # without validation data: one fit at L2 = 1e-3
    assert fit_prior(f, y, 3).l2 == 1e-3


def test_denoiser_with_prior_conditions_on_it():
    torch.manual_seed(0)
    model = LabelDenoiser(4, 6, feature_dim=16, timesteps=50, prior=True).eval()
    f, y_t, t = torch.randn(8, 6), torch.randn(8, 4), torch.randint(0, 50, (8,))
    torch.testing.assert_close(model.prior_mean(f), torch.full((8, 4), 0.25))  # zero weights: uniform
    before = model(f, y_t, t)
    model.set_prior(torch.randn(6, 4), torch.zeros(4))
    assert not torch.allclose(model(f, y_t, t), before)
    assert LabelDenoiser(4, 6, feature_dim=16, timesteps=50).prior_mean(f) is None
    with pytest.raises(ValueError, match="without a prior"):
        LabelDenoiser(4, 6, feature_dim=16, timesteps=50).set_prior(torch.zeros(6, 4), torch.zeros(4))


@pytest.mark.floats
def test_estimator_with_linear_prior_fits_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 3
    y = rng.integers(0, 3, 300)
    X = (centres[y] + rng.normal(size=(300, 5))).astype(np.float32)
    cfg = {"diffusion": {"prior": "linear"}, "train": {"auto_steps": 300, "batch_size": 64, "evals": 2}, "model": {"feature_dim": 32}}
    clf = LRAClassifier(config=cfg, k=5, random_state=0).fit(X, y, run_dir=tmp_path / "run")
    assert clf.model_.has_prior and clf.model_.prior_weight.abs().sum() > 0
    assert clf.score(X, y) > 0.8
    again = LRAClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(again.predict_label_vectors(X), clf.predict_label_vectors(X))


def test_eps_from_y0_drives_ddim_to_the_predicted_y0(y0_prior):
    # a network that predicts y0 (here: the oracle y0) runs through the eps sampler via eps_from_y0
    from lra_diffusion.diffusion import eps_from_y0

    y0, prior = y0_prior
    ab = alpha_bars(cosine_betas(T))
    for p in (None, prior):
        start = torch.zeros_like(y0) if p is None else p.clone()
        out = ddim_sample(lambda y, t, p=p: eps_from_y0(y, y0, ab[t], p), start, ab, ddim_timesteps(T, 10), prior=p)
        torch.testing.assert_close(out, y0, rtol=0, atol=1e-10)
