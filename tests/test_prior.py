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


def xor_problem(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes by the sign of x1 * x2 (plus 4 noise features): no linear classifier beats chance."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def _standardised(X, y, n_train):
    f = torch.from_numpy(X)
    f = (f - f[:n_train].mean(0)) / f[:n_train].std(0)
    y = torch.from_numpy(y)
    return f[:n_train], y[:n_train], f[n_train:], y[n_train:]


def test_auto_prior_is_the_mlp_where_no_line_separates_and_linear_elsewhere():
    from lra_diffusion.models import choose_prior

    f, y, fv, yv = _standardised(*xor_problem(), 1000)
    prior, rec = choose_prior(f, y, 2, kind="auto", f_val=fv, y_val=yv, hidden=32, seed=0)
    assert rec["kind"] == prior.kind == "mlp" and prior.hidden_weight.shape == (6, 32)
    assert rec["mlp_val_accuracy"] > 0.85 and rec["linear_val_accuracy"] < 0.65
    assert rec["mlp_only"] > rec["linear_only"]
    # separable blobs: the MLP is not clearly better, so the linear prior stays
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 4, generator=g) * 4
    labels = torch.randint(0, 3, (600,), generator=g)
    feats = centres[labels] + torch.randn(600, 4, generator=g)
    prior, rec = choose_prior(feats[:500], labels[:500], 3, kind="auto", f_val=feats[500:], y_val=labels[500:], hidden=32)
    assert rec["kind"] == prior.kind == "linear" and prior.hidden_weight is None
    # without validation data "auto" is the linear prior, and "mlp" says what it needs
    assert choose_prior(feats, labels, 3, kind="auto")[1]["kind"] == "linear"
    from lra_diffusion.errors import InputError

    with pytest.raises(InputError, match="validation"):
        choose_prior(feats, labels, 3, kind="mlp")


def test_mlp_prior_is_seeded_by_its_own_seed_and_draws_nothing_from_the_callers_generator():
    from lra_diffusion.models import fit_mlp_prior

    f, y, fv, yv = _standardised(*xor_problem(), 1000)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    a = fit_mlp_prior(f, y, 2, f_val=fv, y_val=yv, hidden=16, seed=3)
    assert torch.equal(g.get_state(), state)
    b = fit_mlp_prior(f, y, 2, f_val=fv, y_val=yv, hidden=16, seed=3)
    torch.testing.assert_close(a.logits(fv), b.logits(fv), rtol=0, atol=0)
    assert a.epoch >= 1 and a.val_accuracy == float((a.logits(fv).argmax(1) == yv).float().mean())


@pytest.mark.parametrize("a_only,b_only,clear", [
    (5, 0, False),    # p = 1/32 = 0.031 > 0.0228: the normal approximation (5 > 2 sqrt 5) passed it
    (6, 0, True),     # p = 0.016
    (20, 9, False),   # p = 0.031; normal approximation: 11 > 10.77, passed
    (21, 7, True),    # p = 0.006
    (130, 100, False),  # 2.0 standard deviations, not more
    (264, 188, True),
    (0, 0, False),
])
def test_clearly_better_is_an_exact_sign_test_at_two_standard_deviations(a_only, b_only, clear):
    from lra_diffusion.models import clearly_better

    assert clearly_better(a_only, b_only) is clear
    assert clearly_better(b_only, a_only) is False


def test_mlp_prior_weight_decay_is_chosen_on_the_held_out_labels():
    from lra_diffusion.models import choose_prior, fit_mlp_prior

    f, y, fv, yv = _standardised(*xor_problem(), 1000)
    kw = dict(f_val=fv, y_val=yv, hidden=16, seed=3)
    strong, weak = (fit_mlp_prior(f, y, 2, weight_decays=(wd,), **kw) for wd in (1e-2, 1e-4))
    both = fit_mlp_prior(f, y, 2, weight_decays=(1e-2, 1e-4), **kw)
    kept = strong if strong.val_accuracy >= weak.val_accuracy else weak  # ties: the stronger decay
    assert both.l2 == kept.l2 and both.val_accuracy == kept.val_accuracy
    torch.testing.assert_close(both.logits(fv), kept.logits(fv), rtol=0, atol=0)
    # a decay that flattens the network loses to one that does not, whichever comes first
    for grid in ((10.0, 1e-4), (1e-4, 10.0)):
        assert fit_mlp_prior(f, y, 2, weight_decays=grid, **kw).l2 == 1e-4
    rec = choose_prior(f, y, 2, kind="mlp", **kw)[1]
    assert rec["mlp_weight_decay"] == both.l2


def test_denoiser_switches_between_linear_and_mlp_priors():
    model = LabelDenoiser(2, 6, feature_dim=16, timesteps=50, prior=True).eval()
    f = torch.randn(8, 6)
    w_h, b_h, w, b = torch.randn(6, 5), torch.randn(5), torch.randn(5, 2), torch.randn(2)
    model.set_prior(w, b, (w_h, b_h))
    assert model.prior_hidden == 5
    torch.testing.assert_close(model.prior_mean(f), torch.softmax(torch.relu(f @ w_h + b_h) @ w + b, dim=1))
    model.set_prior(torch.randn(6, 2), torch.zeros(2))
    assert model.prior_hidden == 0 and "prior_hidden_weight" not in model.state_dict()


@pytest.mark.floats
def test_estimator_with_mlp_prior_fits_saves_and_reloads(tmp_path):
    X, y = xor_problem(800)
    cfg = {"diffusion": {"prior": "auto"}, "train": {"auto_steps": 200, "batch_size": 64, "evals": 2},
           "model": {"feature_dim": 32}}
    clf = LRAClassifier(config=cfg, k=5, random_state=0).fit(X, y, run_dir=tmp_path / "run")
    assert clf.fit_info_["prior"]["kind"] == "mlp" and clf.model_.prior_hidden == 32
    Xt, yt = xor_problem(400, seed=1)
    assert clf.score(Xt, yt) > 0.8  # a linear prior is at chance here
    again = LRAClassifier.load(tmp_path / "run")
    assert again.model_.prior_hidden == 32
    np.testing.assert_array_equal(again.predict_label_vectors(Xt), clf.predict_label_vectors(Xt))


@pytest.mark.floats
def test_auto_prior_that_keeps_the_linear_one_trains_as_the_linear_prior(blobs):
    X, y = blobs
    cfg = {"train": {"auto_steps": 100, "batch_size": 32, "evals": 2}, "model": {"feature_dim": 16}}
    runs = {p: LRAClassifier(config={**cfg, "diffusion": {"prior": p}}, k=5, random_state=0).fit(X, y)
            for p in ("linear", "auto")}
    assert runs["auto"].fit_info_["prior"]["kind"] == "linear"
    np.testing.assert_array_equal(runs["auto"].predict_label_vectors(X), runs["linear"].predict_label_vectors(X))
