"""Label-quality scores, flag rules, metrics, the CSV, find_label_issues and `lra issues`."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import make_blobs
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.errors import InputError
from lra_diffusion.estimator import LRAClassifier
from lra_diffusion.issues import (
    CSV_COLUMNS,
    DEFAULT_SCORE,
    DEFAULT_THRESHOLD,
    SCORES,
    LabelIssues,
    agreement_scores,
    cleanlab_issues,
    find_label_issues,
    flag_issues,
    issue_metrics,
    transition_counts,
    transition_from_flags,
)

runner = CliRunner()
# small but trained long enough that the model beats the noise (a few seconds on one thread)
LEARN = {"diffusion": {"timesteps": 100}, "model": {"feature_dim": 64}, "retrieval": {"k": 10},
         "train": {"auto_steps": 1500, "batch_size": 64}}
NOISE = 0.3


def flip(y: np.ndarray, rate: float, classes: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    noisy[idx] = (y[idx] + rng.integers(1, classes, len(idx))) % classes
    return noisy


@pytest.fixture(scope="module")
def noisy_blobs():
    X, clean = make_blobs(n=300, d=8, classes=3, seed=0)
    return X, flip(clean, NOISE, 3), clean


@pytest.fixture(scope="module")
def fitted(noisy_blobs):
    X, y, _ = noisy_blobs
    return LRAClassifier(config=LEARN, random_state=0).fit(X, y)


# ---- flag rule and metrics -------------------------------------------------------------------------
def test_flag_threshold_and_default():
    s = np.array([0.1, 0.49, 0.5, 0.9])
    assert flag_issues(s).tolist() == [True, True, False, False]  # default threshold 0.5, strict
    assert DEFAULT_THRESHOLD == 0.5
    assert flag_issues(s, threshold=0.2).tolist() == [True, False, False, False]


def test_flag_noise_rate_takes_exactly_the_lowest():
    s = np.array([0.9, 0.1, 0.5, 0.3, 0.3, 0.8])
    flags = flag_issues(s, noise_rate=0.5)  # 3 of 6: 0.1 and the two 0.3s
    assert flags.tolist() == [False, True, False, True, True, False]
    assert flag_issues(s, noise_rate=1 / 3).tolist() == [False, True, False, True, False, False]  # tie: lower row
    assert not flag_issues(s, noise_rate=0).any()


@pytest.mark.parametrize("kw", [{"threshold": 0.5, "noise_rate": 0.1}, {"noise_rate": 1.5}, {"noise_rate": -0.1}])
def test_flag_bad_rules(kw):
    with pytest.raises(InputError):
        flag_issues(np.zeros(3), **kw)


def test_metrics_by_hand():
    is_error = np.array([True, True, False, False, False])
    flags = np.array([True, False, True, False, False])
    scores = np.array([0.1, 0.3, 0.2, 0.8, 0.9])  # errors ranked 1st and 3rd lowest
    m = issue_metrics(is_error, scores, flags)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(5 / 6)  # 5 of the 6 (error, clean) pairs ordered right
    assert issue_metrics(is_error, -scores, flags)["auroc"] == pytest.approx(1 / 6)  # lower = more suspicious
    assert np.isnan(issue_metrics(np.zeros(5, bool), scores, flags)["auroc"])


def test_agreement_by_hand():
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 1, 1])
    a = agreement_scores(X, y, k=2)
    # candidates = own label + 2 nearest: row 2 sees labels 0, 0 -> 1/3; row 0 sees 0, 1 -> 2/3
    assert a.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1, 1, 1])
    with pytest.raises(InputError, match="k >= 1"):
        agreement_scores(X, y, k=0)


def test_transition_matrices():
    true = np.array([0, 0, 0, 0, 1, 1])
    given = np.array([0, 0, 0, 1, 1, 0])
    assert transition_counts(true, given, 3).tolist() == [[0.75, 0.25, 0], [0.5, 0.5, 0], [0, 0, 0]]
    # no flags: the given label is taken as true, so the estimate is the identity on seen classes
    assert np.array_equal(transition_from_flags(given, true, np.zeros(6, bool), 2), np.eye(2))
    # every flag right (predicted = true): the estimate is the true matrix
    assert np.allclose(transition_from_flags(given, true, given != true, 2), transition_counts(true, given, 2))


# ---- scores from a model ---------------------------------------------------------------------------
def test_in_sample_scores_find_the_flipped_labels(fitted, noisy_blobs):
    X, y, clean = noisy_blobs
    res = fitted.find_label_issues(X, y, true_labels=clean, extra_scores=SCORES)
    # "auto" is the closeness score for a model trained with retrieval (k = 10 here)
    assert DEFAULT_SCORE == "auto" and res.score == "closeness" and len(res) == len(y)
    assert np.array_equal(res.index, np.arange(len(y))) and np.array_equal(res.given_label, y)
    assert np.array_equal(res.label_quality, res.scores["closeness"])
    assert np.array_equal(res.is_label_issue, res.label_quality < DEFAULT_THRESHOLD)
    assert np.array_equal(res.predicted_label, fitted.predict(X))
    assert set(res.scores) == set(SCORES)
    for s in res.scores.values():
        assert s.shape == (len(y),) and np.all((s >= 0) & (s <= 1))
    m = res.metrics()
    assert m["errors"] == round(NOISE * len(y))
    assert m["auroc"] > 0.9 and m["f1"] > 0.8, m
    # scoring the given label matters: scoring the *clean* labels instead makes them all look right
    assert fitted.find_label_issues(X, clean).label_quality.mean() > res.label_quality.mean() + 0.2
    # the ranking puts wrong labels first
    top = res.ranked()[: m["errors"] // 2]
    assert (y[top] != clean[top]).mean() > 0.9


def test_prior_score_is_the_prior_probability_of_the_given_label(fitted, noisy_blobs, monkeypatch):
    X, y, clean = noisy_blobs
    res = fitted.find_label_issues(X, y, score="prior", true_labels=clean)
    f_q = fitted.model_.prior_mean(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    assert res.score == "prior" and np.allclose(res.label_quality, f_q[np.arange(len(y)), y])
    import lra_diffusion.issues as issues

    monkeypatch.setattr(issues, "PRIOR_BLOCK", 7)  # row blocks give the same numbers (up to the GEMM's rounding)
    assert np.allclose(fitted.find_label_issues(X, y, score="prior").label_quality, res.label_quality, atol=1e-6)
    assert res.metrics()["auroc"] > 0.9  # the prior is a classifier fitted on the noisy labels
    both = fitted.find_label_issues(X, y, score="closeness_prior")
    assert set(both.scores) == {"closeness", "prior", "closeness_prior"}
    assert np.allclose(both.label_quality, (both.scores["closeness"] + both.scores["prior"]) / 2)
    zero = LRAClassifier(config={**LEARN, "diffusion": {"timesteps": 100, "prior": "zero", "prediction": "eps"},
                                 "train": {"auto_steps": 20, "auto_epochs": 1, "batch_size": 64}}, random_state=0)
    zero.fit(X, y)
    assert zero.find_label_issues(X, y).score == "closeness"  # "auto" without a prior
    with pytest.raises(InputError, match="the prior score needs a model with a prior"):
        zero.find_label_issues(X, y, score="prior")


def test_auto_score_adds_the_prior_where_the_model_trained_on_the_given_labels_alone(noisy_blobs):
    """k = 0 in-sample: the denoiser has seen the labels it judges, the linear prior hardly fits them."""
    X, y, clean = noisy_blobs
    no_retrieval = {**LEARN, "retrieval": {"k": 0}}
    est = LRAClassifier(config=no_retrieval, random_state=0).fit(X, y)
    res = est.find_label_issues(X, y, true_labels=clean)
    assert res.score == "closeness_prior" and set(res.scores) == {"closeness", "prior", "closeness_prior"}
    assert np.array_equal(res.label_quality, (res.scores["closeness"] + res.scores["prior"]) / 2)
    assert np.array_equal(res.is_label_issue, res.label_quality < DEFAULT_THRESHOLD)
    assert res.metrics()["auroc"] > 0.9
    # out-of-sample folds score labels no fold model saw: "auto" is the closeness score there
    assert find_label_issues(X, y, estimator=LRAClassifier(config=no_retrieval, random_state=0), cv=2).score == "closeness"
    # an MLP prior (its weight decay chosen on the held-out labels) is blended in as well
    mlp = LRAClassifier(config={**no_retrieval, "diffusion": {"timesteps": 100, "prior": "mlp"}}, random_state=0)
    assert mlp.fit(X, y).model_.prior_hidden > 0
    assert mlp.find_label_issues(X, y).score == "closeness_prior"


def test_stochastic_score_is_a_frequency_and_seeded(fitted, noisy_blobs):
    X, y, clean = noisy_blobs
    a = find_label_issues(X, y, estimator=fitted, score="stochastic", n_samples=4, random_state=3)
    b = fitted.find_label_issues(X, y, score="stochastic", n_samples=4, random_state=3)
    assert np.array_equal(a.label_quality, b.label_quality)
    assert np.allclose(a.label_quality * 4, np.round(a.label_quality * 4))
    # another seed, other draws: seen on rows halfway between two blobs, where the sampler is unsure (on the
    # blobs themselves a confident model draws the same class every time, whatever the seed)
    mid = np.concatenate([(X[clean == i][:40] + X[clean == j][:40]) / 2 for i, j in [(0, 1), (1, 2), (0, 2)]])
    ym = np.zeros(len(mid), dtype=y.dtype)
    a, c = (fitted.find_label_issues(mid, ym, score="stochastic", n_samples=8, random_state=r) for r in (3, 4))
    assert not np.array_equal(a.label_quality, c.label_quality)


def test_out_of_sample_folds_never_score_with_a_model_that_saw_the_sample(noisy_blobs, monkeypatch):
    X, y, clean = noisy_blobs
    est = LRAClassifier(config=LEARN, random_state=0)
    seen: list[tuple[set, set]] = []
    real = find_label_issues.__globals__["model_scores"]

    def spy(e, Xh, y_idx, **kw):
        seen.append(({r.tobytes() for r in e._fit_X}, {r.tobytes() for r in Xh}))
        return real(e, Xh, y_idx, **kw)

    orig_fit = LRAClassifier.fit

    def fit(self, X_, y_, **kw):
        self._fit_X = np.asarray(X_)
        return orig_fit(self, X_, y_, **kw)

    monkeypatch.setattr(LRAClassifier, "fit", fit)
    monkeypatch.setitem(find_label_issues.__globals__, "model_scores", spy)
    res = find_label_issues(X, y, estimator=est, cv=2, true_labels=clean)
    assert len(seen) == 2
    for train_rows, held_rows in seen:
        assert not train_rows & held_rows and len(held_rows) == len(X) // 2
    assert not hasattr(est, "model_")  # the given estimator is a template, left unfitted
    assert np.isfinite(res.label_quality).all()
    assert res.metrics()["auroc"] > 0.8


def test_held_out_rows_with_a_feature_constant_in_training_stay_finite(noisy_blobs):
    X, y, _ = noisy_blobs
    X = np.concatenate([X, np.zeros((len(X), 1), np.float32)], axis=1)
    est = LRAClassifier(config=LEARN, random_state=0).fit(X[:200], y[:200])
    X_new = X[200:].copy()
    X_new[:, -1] = 5.0  # was constant (0) in training
    vectors = est.predict_label_vectors(X_new)
    assert np.isfinite(vectors).all()
    assert np.array_equal(est.predict(X_new), est.predict(X[200:]))


def test_string_labels_and_an_unfitted_estimator(noisy_blobs):
    X, y, _ = noisy_blobs
    names = np.array(["cat", "dog", "emu"])
    est = LRAClassifier(config={**LEARN, "train": {"auto_steps": 100, "batch_size": 64}}, random_state=0)
    res = find_label_issues(X, names[y], estimator=est)  # fits it first
    assert hasattr(est, "model_") and res.given_label.dtype.kind == "U"
    assert set(res.predicted_label) <= set(names)


def test_bad_input(fitted, noisy_blobs):
    X, y, _ = noisy_blobs
    with pytest.raises(InputError, match="300 rows but labels have 299"):
        fitted.find_label_issues(X, y[:-1])
    with pytest.raises(InputError, match=r"labels \[7\] are not among the model's classes"):
        fitted.find_label_issues(X, np.where(y == 0, 7, y))
    with pytest.raises(InputError, match="unknown score 'best'"):
        fitted.find_label_issues(X, y, score="best")
    with pytest.raises(InputError, match="cv must be None"):
        fitted.find_label_issues(X, y, cv=1)
    with pytest.raises(InputError, match="true labels have 3 entries"):
        fitted.find_label_issues(X, y, true_labels=y[:3])
    with pytest.raises(InputError, match="true labels have 3 entries but 4 samples"):
        fitted.find_label_issues(X[:4], y[:4]).metrics(y[:3])
    with pytest.raises(InputError, match="need at least 2 samples of every class"):
        find_label_issues(X[:5], np.array([0, 0, 0, 0, 1]), cv=2)


# ---- CSV -------------------------------------------------------------------------------------------
def test_csv_round_trip_with_cleanlab_columns(tmp_path):
    res = LabelIssues(index=np.arange(3), given_label=np.array(["a", "b", "a"]),
                      predicted_label=np.array(["a", "a", "a"]), label_quality=np.array([0.9, 0.125, 0.5]),
                      is_label_issue=np.array([False, True, False]), true_label=np.array(["a", "a", "a"]))
    path = tmp_path / "issues.csv"
    res.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) + ",true_label"
    assert lines[2] == "1,True,0.125,b,a,a"
    back = LabelIssues.from_csv(path)
    for name in ("index", "given_label", "predicted_label", "label_quality", "is_label_issue", "true_label"):
        assert np.array_equal(getattr(back, name), getattr(res, name)), name
    assert back.metrics()["f1"] == 1.0
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(path, index_col=0)
    assert list(frame.columns[:4]) == ["is_label_issue", "label_quality", "given_label", "predicted_label"]
    assert frame["is_label_issue"].dtype == bool


def test_csv_not_ours(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not an issues CSV"):
        LabelIssues.from_csv(bad)
    with pytest.raises(InputError, match="not found"):
        LabelIssues.from_csv(tmp_path / "missing.csv")


def test_cleanlab_baseline(noisy_blobs):
    pytest.importorskip("cleanlab")
    X, y, clean = noisy_blobs
    res = cleanlab_issues(X, y, true_labels=clean)
    m = res.metrics()
    assert m["auroc"] > 0.8 and 0 < m["flagged"] < len(y)


# ---- CLI -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, fitted, noisy_blobs):
    X, y, clean = noisy_blobs
    d = tmp_path_factory.mktemp("issues")
    fitted.save(d / "run")
    for name, a in {"X": X, "y": y, "t": clean, "y_short": y[:-1], "y_bad": np.where(y == 2, 9, y)}.items():
        np.save(d / f"{name}.npy", a)
    return d


def test_cli_issues_prints_the_metrics(cli_files):
    d = cli_files
    out = d / "issues.csv"
    r = runner.invoke(app, ["issues", "--model", str(d / "run"), "--features", str(d / "X.npy"), "--labels",
                            str(d / "y.npy"), "--out", str(out), "--true-labels", str(d / "t.npy")])
    assert r.exit_code == 0, r.output
    assert "precision" in r.output and "recall" in r.output and "F1" in r.output and "AUROC" in r.output
    res = LabelIssues.from_csv(out)
    assert len(res) == 300 and res.true_label is not None
    assert f"flagged {res.is_label_issue.sum()}" in r.output
    auroc = float(r.output.split("flags")[-1].split()[3])
    assert auroc == pytest.approx(res.metrics()["auroc"], abs=1e-4) and auroc > 0.9


@pytest.mark.parametrize("labels,model,match", [
    ("y_short.npy", "run", "has 300 rows but .*y_short.npy has 299 labels"),
    ("y_bad.npy", "run", r"labels \[9\] are not among the model's classes"),
    ("y.npy", ".", "is not a run directory"),
    ("y.npy", "nowhere", "run directory not found"),
])
def test_cli_issues_bad_input(cli_files, labels, model, match):
    d = cli_files
    out = d / "bad.csv"
    r = runner.invoke(app, ["issues", "--model", str(d / model), "--features", str(d / "X.npy"),
                            "--labels", str(d / labels), "--out", str(out)])
    assert r.exit_code == 2
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    assert re.search(match, r.output), r.output
    assert not out.exists()


def test_demo_writes_issues_and_report(tmp_path, capsys):
    from lra_diffusion.demo import demo_data, demo_label_issues

    d = demo_data(0)
    est = LRAClassifier(config={**LEARN, "train": {"auto_steps": 100}}, random_state=0).fit(d.X_train, d.y_train_noisy)
    est.save(tmp_path)
    demo_label_issues(est, d, tmp_path, 0, verbose=True)
    res = LabelIssues.from_csv(tmp_path / "issues.csv")
    assert np.array_equal(res.given_label, d.y_train_noisy) and np.array_equal(res.true_label, d.y_train_clean)
    assert np.load(tmp_path / "images.npy").shape == (len(d.y_train_noisy), 8, 8)
    html = (tmp_path / "report.html").read_text()
    assert 'id="fig-suspicious-images"' in html and 'id="fig-transition"' in html
    out = capsys.readouterr().out
    assert "finding the wrong training labels" in out and "AUROC" in out


def test_only_the_needed_scores_are_computed(fitted, noisy_blobs, monkeypatch):
    X, y, _ = noisy_blobs
    import lra_diffusion.issues as issues

    calls = {"stochastic": 0, "knn": 0}
    real_predict, real_agreement = issues.predict_y0, issues.agreement_scores

    def predict(*a, stochastic=False, **kw):
        calls["stochastic"] += stochastic
        return real_predict(*a, stochastic=stochastic, **kw)

    def agreement(*a, **kw):
        calls["knn"] += 1
        return real_agreement(*a, **kw)

    monkeypatch.setattr(issues, "predict_y0", predict)
    monkeypatch.setattr(issues, "agreement_scores", agreement)
    assert set(fitted.find_label_issues(X, y).scores) == {"closeness"} and calls == {"stochastic": 0, "knn": 0}
    assert set(fitted.find_label_issues(X, y, score="prior").scores) == {"closeness", "prior"}
    assert set(fitted.find_label_issues(X, y, score="agreement").scores) == {"closeness", "agreement"}
    assert calls == {"stochastic": 0, "knn": 1}
    res = fitted.find_label_issues(X, y, score="mean", n_samples=3)
    assert set(res.scores) == {"closeness", "stochastic", "agreement", "mean"} and calls == {"stochastic": 3, "knn": 2}
    assert np.allclose(res.label_quality, (res.scores["closeness"] + res.scores["stochastic"]
                                           + res.scores["agreement"]) / 3)
    with pytest.raises(InputError, match="unknown score 'nope'"):
        fitted.find_label_issues(X, y, extra_scores=["nope"])


def test_cli_score_help_lists_every_score():
    from lra_diffusion.cli import SCORE_HELP
    from lra_diffusion.issues import SCORES

    assert set(SCORE_HELP.split(" (")[0].split(" | ")) == {"auto", *SCORES}
