"""LRAClassifier: scikit-learn's estimator checks, run directories, determinism, input validation."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from lra_diffusion import __version__
from lra_diffusion.errors import InputError
from lra_diffusion.config import Config
from lra_diffusion.estimator import LRAClassifier, kept_fit
from lra_diffusion.io import sha256_array
from lra_diffusion.train import TrainResult

from conftest import TINY, make_blobs, weak_neighbours


def small(**kw) -> LRAClassifier:
    return LRAClassifier(**{"config": TINY, "random_state": 0, **kw})


# ---- scikit-learn's own checks ------------------------------------------------------------------

# Small enough to run all checks in about 20 s, large enough that check_classifiers_train's blobs
# (300 samples, 3 classes) reach its required training accuracy of 0.83.
CHECKED = LRAClassifier(epochs=30, k=2, feature_dim=16, batch_size=32, lr=3e-2,
                        config={"diffusion": {"timesteps": 20, "ddim_steps": 2}})

# Checks we do not pass, with the reason. Empty: LRAClassifier passes every check of scikit-learn 1.9
# (check_array_api_input skips itself unless SCIPY_ARRAY_API is set).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([CHECKED], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


# ---- run directories, determinism ---------------------------------------------------------------


@pytest.mark.parametrize("labels", ["ints", "strings", "sparse_ints"])
@pytest.mark.floats
def test_save_load_gives_identical_predictions(tmp_path, labels):
    X, y = make_blobs()
    y = {"ints": y, "strings": np.array(["cat", "dog", "eel"])[y], "sparse_ints": np.array([3, 7, 10])[y]}[labels]
    est = small(n_samples=3).fit(X, y)
    est.save(tmp_path / "run")
    loaded = LRAClassifier.load(tmp_path / "run")
    assert loaded.classes_.tolist() == est.classes_.tolist() and loaded.classes_.dtype == est.classes_.dtype
    assert set(est.predict(X)) <= set(y)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict_label_vectors(X), est.predict_label_vectors(X))
    assert loaded.get_params() == {**est.get_params(), "config": loaded.config_, "random_state": None}


def test_non_contiguous_labels_are_mapped():
    X, y = make_blobs()
    est = small().fit(X, np.array([-5, 2, 40])[y])
    assert est.classes_.tolist() == [-5, 2, 40]
    assert est.model_.num_classes == 3
    assert set(est.predict(X)) <= {-5, 2, 40}


@pytest.mark.floats
def test_same_seed_same_predictions_other_seed_other_weights():
    X, y = make_blobs()
    a, b, c = small().fit(X, y), small().fit(X, y), small(random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.predict_label_vectors(X), b.predict_label_vectors(X))
    assert not torch.equal(a.model_.lin4.weight, c.model_.lin4.weight)


@pytest.mark.floats
def test_predict_proba_rows_are_distributions():
    X, y = make_blobs()
    for n_samples in (1, 4):
        est = small(n_samples=n_samples).fit(X, y)
        p = est.predict_proba(X[:20])
        assert p.shape == (20, 3) and (p >= 0).all()
        np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
        np.testing.assert_array_equal(p, est.predict_proba(X[:20]))  # stochastic runs are seeded too


def test_run_directory_records_versions_config_seed_and_input_hashes(tmp_path):
    X, y = make_blobs()
    est = small().fit(X, y, run_dir=tmp_path / "run")
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["versions"]["lra_diffusion"] == __version__
    assert info["versions"]["torch"] == torch.__version__
    assert info["config"] == est.config_.to_dict() and info["config"]["diffusion"]["timesteps"] == 50
    assert info["seed"] == est.seed_
    assert info["inputs"]["features_sha256"] == sha256_array(X)
    assert info["inputs"]["labels_sha256"] == sha256_array(y)  # labels 0..2 map to themselves
    assert info["n_features_in"] == 8 and info["classes"] == [0, 1, 2]
    assert (tmp_path / "run" / "checkpoints").is_dir() and (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.floats
def test_fit_resume_from_run_dir_is_identical(tmp_path):
    X, y = make_blobs()
    full = small().fit(X, y)
    small().fit(X, y, run_dir=tmp_path)
    ckpts = sorted((tmp_path / "checkpoints").glob("ckpt-*.safetensors"))
    ckpts[-1].unlink()  # as if killed before the last checkpoint
    resumed = small().fit(X, y, run_dir=tmp_path, resume=True)
    assert resumed.fit_info_["resumed_from_step"] > 0 and full.fit_info_["resumed_from_step"] is None
    np.testing.assert_array_equal(resumed.predict_label_vectors(X), full.predict_label_vectors(X))


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # model.safetensors, metrics.json, config.json
def test_a_failed_save_leaves_no_run_files(tmp_path, monkeypatch, fail_at):
    X, y = make_blobs(60)
    est = small().fit(X, y)
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lra_diffusion.io.os.fsync", fsync)
    with pytest.raises(InputError, match=r"cannot write .*: No space left on device"):
        est.save(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []


# ---- bad input ----------------------------------------------------------------------------------


def _bad_inputs():
    X, y = make_blobs(60)
    nan_X = X.copy()
    nan_X[7, 2] = np.nan
    inf_X = X.copy()
    inf_X[11, 0] = -np.inf
    return [
        ("nan", nan_X, y, {}, r"features contain NaN or inf \(first bad row: 7\)"),
        ("inf", inf_X, y, {}, r"first bad row: 11"),
        ("counts", X, y[:-1], {}, "features have 60 rows but labels have 59"),
        ("one class", X, np.zeros(60, int), {}, "need at least 2 classes to train, got 1 class"),
        ("k", X, y, {"k": 60}, "k=60 neighbours need more than 60 training samples"),
        ("config key", X, y, {"config": {"train": {"epoch": 3}}},
         r"unknown config key\(s\) \['epoch'\] in \[train\]; valid keys: \[.*'epochs'"),
        ("config section", X, y, {"config": {"optim": {}}}, r"unknown config section\(s\) \['optim'\]"),
        ("1-D features", X[:, 0], y, {}, "Expected 2D array, got 1D array instead: Reshape your data"),
        ("empty", X[:0], y[:0], {}, "0 sample"),
        ("strings", X.astype(str).astype(object) + "x", y, {}, "could not convert string to float"),
        ("2-D labels", X, np.stack([y, y], 1), {}, r"labels: y should be a 1d array"),
        ("continuous labels", X, y + 0.5, {}, "Unknown label type"),
        ("no labels", X, None, {}, "requires y to be passed"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_bad_input_raises_clear_error_and_writes_nothing(tmp_path, case):
    _, X, y, params, message = case
    with pytest.raises(InputError, match=message) as info:
        LRAClassifier(**{"config": TINY, **params}).fit(X, y, run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_validation_labels_outside_the_class_set(tmp_path):
    X, y = make_blobs(60)
    with pytest.raises(InputError, match=r"validation labels \[7\] are not among the training classes"):
        small().fit(X, y, X_val=X[:10], y_val=np.r_[y[:9], 7], run_dir=tmp_path / "run")
    with pytest.raises(InputError, match=r"validation features contain NaN or inf \(first bad row: 0\)"):
        small().fit(X, y, X_val=np.full((2, 8), np.nan), y_val=y[:2])
    with pytest.raises(InputError, match="validation features: X has 3 features, but LRAClassifier is expecting 8"):
        small().fit(X, y, X_val=X[:5, :3], y_val=y[:5])
    for half in ({"X_val": X[:10]}, {"y_val": y[:10]}):  # one without the other
        with pytest.raises(InputError, match="give X_val and y_val together"):
            small().fit(X, y, **half)
    assert not (tmp_path / "run").exists()


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        small().predict(np.zeros((2, 8)))


def test_predict_checks_the_feature_dimension_and_values():
    X, y = make_blobs(60)
    est = small().fit(X, y)
    with pytest.raises(InputError, match="X has 5 features, but LRAClassifier is expecting 8 features"):
        est.predict(X[:, :5])
    with pytest.raises(InputError, match=r"first bad row: 1"):
        est.predict(np.r_[X[:1], np.full((1, 8), np.inf)])


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "run directory not found"),
    (lambda p: p.mkdir(), "is not a run directory (missing config.json, model.safetensors)"),
])
def test_load_bad_run_directory(tmp_path, setup, message):
    setup(tmp_path / "run")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LRAClassifier.load(tmp_path / "run")


def test_load_truncated_model_file(tmp_path):
    X, y = make_blobs(60)
    small().fit(X, y).save(tmp_path)
    model = tmp_path / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(InputError, match="not a valid safetensors file"):
        LRAClassifier.load(tmp_path)


# ---- property: fit and predict, or a clear ValueError -------------------------------------------


@st.composite
def problems(draw):
    n = draw(st.integers(0, 30))
    d = draw(st.sampled_from([1, 2, 3, 1, 2, 3, 0]))  # rarely no feature at all
    elements = draw(st.sampled_from([
        st.floats(-1e3, 1e3, width=32),  # ordinary values
        st.floats(width=32),  # anything a float32 holds, huge values, NaN and inf included
        st.sampled_from([0.0, 1.0]),  # many duplicate rows
    ]))
    X = draw(hnp.arrays(np.float32, (n, d), elements=elements))
    n_labels = draw(st.sampled_from([n, n, n, max(n - 1, 0), n + 1]))
    y = draw(hnp.arrays(np.int64, n_labels, elements=st.integers(-2, 3)))
    params = {"k": draw(st.integers(0, 4)), "val_fraction": draw(st.sampled_from([0.0, 0.1, 0.5]))}
    return X, y, params


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_predicts_training_labels_or_raises_value_error(problem):
    X, y, params = problem
    est = LRAClassifier(epochs=1, batch_size=8, feature_dim=4, config={"diffusion": {"timesteps": 10, "ddim_steps": 2}},
                        random_state=0, **params)
    try:
        est.fit(X, y)
    except ValueError as e:
        event(f"{type(e).__name__}: {str(e)[:30]}".translate(str.maketrans("", "", "0123456789")))
        assert str(e) and "\n" not in str(e)
        return
    event("fitted")
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    assert set(pred.tolist()) <= set(y.tolist())


def test_k_auto_keeps_the_fit_with_the_better_validation_accuracy():
    X, y = make_blobs(300)
    noisy = y.copy()
    noisy[::3] = (noisy[::3] + 1) % 3  # a third of the labels wrong
    auto = LRAClassifier(k="auto", config=TINY, epochs=6, random_state=0).fit(X, noisy)
    selection = {int(k): acc for k, acc in auto.fit_info_["k_selection"].items()}
    assert set(selection) == {5, 0}  # the config's k and no retrieval
    chosen = auto.config_.retrieval.k
    assert selection[chosen] == max(selection.values()) and auto.fit_info_["best_val_accuracy"] == selection[chosen]
    direct = LRAClassifier(k=chosen, config=TINY, epochs=6, random_state=0).fit(X, noisy)
    assert np.array_equal(auto.predict_label_vectors(X), direct.predict_label_vectors(X))


def test_the_default_screen_fits_k0_too_only_where_the_vote_is_below_the_prior():
    """k=None: the config's k, checked (auto_k "screen", the default); a second fit with k = 0 only where
    the k-NN vote predicts the held-out labels worse than the prior, and the better fit kept."""
    X, y = make_blobs(300)
    kept = LRAClassifier(config=TINY, epochs=1, random_state=0).fit(X, y)
    rule = kept.fit_info_["k_rule"]
    assert rule["vote_accuracy"] >= rule["prior_accuracy"] and rule["k"] == 5
    assert "k_selection" not in kept.fit_info_ and kept.fit_info_["retrieval_k"] == 5
    X, y = weak_neighbours()
    screened = LRAClassifier(config=TINY, epochs=2, random_state=0).fit(X, y)
    rule = screened.fit_info_["k_rule"]
    assert rule["vote_accuracy"] < rule["prior_accuracy"] and rule["k"] == 0
    selection = {int(k): acc for k, acc in screened.fit_info_["k_selection"].items()}
    assert set(selection) == {5, 0}
    chosen = screened.fit_info_["retrieval_k"]
    rivals = [acc for k, acc in selection.items() if k not in screened.fit_info_.get("k_at_start", [])]
    assert chosen == screened.config_.retrieval.k and selection[chosen] == max(rivals)
    if selection[0] == selection[5]:
        assert chosen == 5  # the config's k wins ties
    # the same as k="auto" would have done (both fit the config's k, then k = 0)
    auto = LRAClassifier(k="auto", config=TINY, epochs=2, random_state=0).fit(X, y)
    assert {int(k): a for k, a in auto.fit_info_["k_selection"].items()} == selection


PRIOR = {"kind": "linear", "linear_val_accuracy": 0.89}


def k_fits(*results: TrainResult) -> list[tuple[Config, TrainResult]]:
    return [(Config.from_dict({"retrieval": {"k": k}}), r) for k, r in zip((10, 0), results)]


@pytest.mark.parametrize("first, second, kept, at_start", [
    # the k = 0 fit ended at the start the k = 10 fit had weighed and passed over: k = 10 stays
    (TrainResult(None, best_epoch=4, best_val_accuracy=0.891, prior=PRIOR, start_accuracy=0.894),
     TrainResult(None, best_epoch=0, best_val_accuracy=0.894, prior=PRIOR, start_accuracy=0.894), 10, [0]),
    # a trained k = 0 model, more accurate: kept
    (TrainResult(None, best_epoch=4, best_val_accuracy=0.891, prior=PRIOR, start_accuracy=0.894),
     TrainResult(None, best_epoch=3, best_val_accuracy=0.894, prior=PRIOR, start_accuracy=0.894), 0, []),
    # another start (the k = 10 fit dropped its prior), or none weighed by the k = 10 fit: a rival
    (TrainResult(None, best_epoch=4, best_val_accuracy=0.891, prior={"kind": "zero", "dropped": PRIOR},
                 start_accuracy=0.5), TrainResult(None, best_epoch=0, best_val_accuracy=0.894, prior=PRIOR), 0, []),
    (TrainResult(None, best_epoch=4, best_val_accuracy=0.891, prior=PRIOR),
     TrainResult(None, best_epoch=0, best_val_accuracy=0.894, prior=PRIOR), 0, []),
    # ties: the config's k (both at the same start: nothing passed over)
    (TrainResult(None, best_epoch=4, best_val_accuracy=0.894, prior=PRIOR),
     TrainResult(None, best_epoch=2, best_val_accuracy=0.894, prior=PRIOR), 10, []),
    (TrainResult(None, best_epoch=0, best_val_accuracy=0.894, prior=PRIOR, start_accuracy=0.894),
     TrainResult(None, best_epoch=0, best_val_accuracy=0.894, prior=PRIOR, start_accuracy=0.894), 10, []),
])
def test_the_k_check_passes_over_a_fit_that_ended_at_the_start_the_other_weighed(first, second, kept, at_start):
    (config, result), passed = kept_fit(k_fits(first, second))
    assert config.retrieval.k == kept and result is (first if kept == 10 else second) and passed == at_start


def test_the_k_check_applies_to_the_config_k_only():
    """auto_k "rule" switches k inside the one fit; an explicit k and k="auto" bypass the k check (its
    counts are still taken for prior_targets "auto", which only chooses the prior's targets)."""
    X, y = make_blobs(300)
    on = {**TINY, "retrieval": {**TINY["retrieval"], "auto_k": "rule"}}
    default = LRAClassifier(config=on, epochs=1, random_state=0).fit(X, y)
    rule = default.fit_info_["k_rule"]
    assert default.fit_info_["retrieval_k"] == rule["k"] in (0, 5) and "k_selection" not in default.fit_info_
    for k in (5, "auto"):
        est = LRAClassifier(k=k, config=on, epochs=1, random_state=0).fit(X, y)
        assert est.config_.retrieval.auto_k == "off"
        assert est.fit_info_["retrieval_k"] == est.config_.retrieval.k


@pytest.mark.parametrize("kw, message", [({"k": "auto", "val_fraction": 0.0}, "validation data"),
                                         ({"k": "five"}, "integer")])
def test_bad_k(kw, message):
    X, y = make_blobs()
    with pytest.raises(InputError, match=message):
        LRAClassifier(config=TINY, **kw).fit(X, y)


@pytest.mark.floats
def test_a_dropped_prior_is_saved_as_prior_zero(tmp_path):
    """Pair-flipped labels: the fit drops the prior; config_ says so and the run loads and predicts the same."""
    X, y = make_blobs(600, classes=4)
    y = np.where(np.random.default_rng(0).random(len(y)) < 0.4, (y + 1) % 4, y)
    est = small().fit(X, y)
    assert est.fit_info_["prior"]["kind"] == "zero" and est.config_.diffusion.prior == "zero"
    assert not est.model_.has_prior
    est.save(tmp_path / "run")
    loaded = LRAClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.predict_label_vectors(X), est.predict_label_vectors(X))


@pytest.mark.floats
def test_wide_features_train_on_a_projection_that_is_saved(tmp_path):
    """Features wider than the rows support ([model] input_rows_per_dim): the denoiser sees the top
    principal components; the run saves the projection and loads and predicts the same."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    X = rng.normal(size=(1000, 800)).astype(np.float32)
    X[:, :3] += 2.0 * np.eye(3, dtype=np.float32)[y]  # the classes on three of 800 dimensions, ...
    X[:, :3] *= 3.0  # ... of large variance
    config = {**TINY, "model": {**TINY["model"], "input_rows_per_dim": 20.0, "input_min_rank": 4}}
    est = small(config=config).fit(X, y)
    record = est.fit_info_["projection"]  # measured: 27 held-out rows only the projection gets right, 2 the whole
    assert record["kept"] and record["rank"] == 45 and record["projected_only"] > 3 * record["whole_only"]
    assert est.model_.input_rank == 45 and est.model_.feat_proj.shape == (800, 45) and est.n_features_in_ == 800
    est.save(tmp_path / "run")
    loaded = LRAClassifier.load(tmp_path / "run")
    assert loaded.model_.input_rank == 45
    np.testing.assert_array_equal(loaded.predict_label_vectors(X), est.predict_label_vectors(X))
    never = small(config={**TINY, "model": {**TINY["model"], "input_rows_per_dim": 0.0}}).fit(X, y)
    assert never.model_.input_rank == 0 and "projection" not in never.fit_info_
    assert small().fit(X, y).fit_info_["projection"]["rank"] == 90  # the default: 900 rows / 10


READ_ONLY_SCRIPT = """
import numpy as np
from lra_diffusion import LRAClassifier
from lra_diffusion.issues import find_label_issues
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 6)).astype(np.float32)
y = (X[:, 0] > 0).astype(int)
X.setflags(write=False)  # as a memory map opened with mmap_mode="r"
clf = LRAClassifier(epochs=1, random_state=0).fit(X, y)
clf.predict(X)
find_label_issues(X, y, estimator=clf, cv=None)
"""


def test_read_only_features_raise_no_torch_warning():
    # a fresh process: torch warns about a non-writable array only once per process
    run = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", READ_ONLY_SCRIPT],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_rows_per_neighbour_caps_k_unless_k_is_given():
    X, y = make_blobs(120, classes=8)  # 15 rows a class: at most 120 / (8 x 3) = 5 neighbours
    cap = TINY | {"retrieval": {"k": 10, "rows_per_neighbour": 3.0}}
    capped = LRAClassifier(config=cap, random_state=0).fit(X, y)
    assert capped.config_.retrieval.k == capped.fit_info_["retrieval_k"] == 5
    given = LRAClassifier(k=10, config=cap, random_state=0).fit(X, y)  # an explicit k is used as given
    assert given.config_.retrieval.k == given.fit_info_["retrieval_k"] == 10
    off = LRAClassifier(config=TINY | {"retrieval": {"k": 10}}, random_state=0).fit(X, y)  # the default: no cap
    assert off.fit_info_["retrieval_k"] == 10
