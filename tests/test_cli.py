"""`lra fit` and `lra predict`: round trip, bad input (exit 2, one line, no output), disk full, and
resume after SIGKILL or a truncated checkpoint, bit for bit."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.estimator import LRAClassifier
from lra_diffusion.io import load_tensors

from conftest import make_blobs

runner = CliRunner()

TOML = """
[diffusion]
timesteps = 50
ddim_steps = 5
[model]
feature_dim = 16
[retrieval]
k = 5
[train]
epochs = 3
batch_size = 32
"""


def lra(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture()
def inputs(tmp_path) -> Path:
    """A folder with good inputs: features.npy (240, 8), labels.npy (3 classes), tiny.toml."""
    d = tmp_path / "in"
    d.mkdir()
    X, y = make_blobs()
    np.save(d / "features.npy", X)
    np.save(d / "labels.npy", y)
    (d / "tiny.toml").write_text(TOML)
    return d


def fit_args(d: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["fit", "--features", d / "features.npy", "--labels", d / "labels.npy", "--config", d / "tiny.toml",
            "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory trained by `lra fit` on 8-d blobs with labels 0..2."""
    d = tmp_path_factory.mktemp("trained")
    X, y = make_blobs()
    np.save(d / "features.npy", X)
    np.save(d / "labels.npy", y)
    (d / "tiny.toml").write_text(TOML)
    res = lra(*fit_args(d, d / "run"))
    assert res.exit_code == 0, res.output
    return d / "run"


# ---- the happy path -----------------------------------------------------------------------------


@pytest.mark.floats
def test_fit_then_predict(inputs, tmp_path):
    res = lra(*fit_args(inputs, tmp_path / "run", "--seed", "4"))
    assert res.exit_code == 0, res.output
    assert "trained 3 epochs" in res.stdout and "resumed" not in res.stdout
    assert {"config.json", "model.safetensors", "metrics.json", "checkpoints"} <= files_under(tmp_path / "run")
    res = lra("predict", "--model", tmp_path / "run", "--features", inputs / "features.npy", "--out", tmp_path / "p.npy")
    assert res.exit_code == 0, res.output
    X = np.load(inputs / "features.npy")
    est = LRAClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), est.predict(X))
    res = lra("predict", "--model", tmp_path / "run", "--features", inputs / "features.npy", "--out",
              tmp_path / "q.npy", "--proba")
    assert res.exit_code == 0 and np.load(tmp_path / "q.npy").shape == (240, 3)


def test_fit_k_auto_reports_the_choice_and_saves_the_chosen_k(inputs, tmp_path):
    res = lra(*fit_args(inputs, tmp_path / "run", "--k", "auto"))
    assert res.exit_code == 0, res.output
    kept = LRAClassifier.load(tmp_path / "run").config_.retrieval.k
    assert "k chosen on the validation labels: k=5: " in res.stdout and f"kept k={kept}" in res.stdout


def test_fit_says_when_the_untrained_start_is_kept(inputs, tmp_path, monkeypatch):
    def start_kept(last, candidates, best_weights, right, state):  # the record of a lone epoch that lost
        state["best_epoch"], state["best_acc"] = 0, candidates[0].accuracy
        return {"best_epoch": 3, "averaged_epochs": [3], "best_only": 7, "start_only": 5, "kept": "start"}, \
            candidates[0].weights

    monkeypatch.setattr("lra_diffusion.train.average_candidates", start_kept)
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert ("model selection: the untrained start (the prior) kept; the one trained epoch near the best, epoch 3, "
            "is not clearly more accurate (validation rows only it gets right: 7, only the start: 5)") in res.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["selection"]["kept"] == "start"


def test_fit_says_when_the_k_check_passes_over_a_fit_at_its_start(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr("lra_diffusion.estimator.kept_fit", lambda fits: (fits[0], [0]))
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert "the k=0 fit ended at its untrained start (the prior), which the kept fit had weighed" in res.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["k_at_start"] == [0]
    monkeypatch.undo()
    res = lra(*fit_args(inputs, tmp_path / "plain"))
    assert res.exit_code == 0 and "untrained start" not in res.stdout


def test_fit_says_when_the_prior_is_fitted_to_the_retrieval_targets(inputs, tmp_path):
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0 and "retrieval targets" not in res.stdout  # blobs: the vote is not ahead
    (inputs / "tiny.toml").write_text(TOML.replace("ddim_steps = 5", 'ddim_steps = 5\nprior_targets = "retrieval"'))
    res = lra(*fit_args(inputs, tmp_path / "soft"))
    assert res.exit_code == 0, res.output
    assert "prior f_q: fitted to the retrieval targets" in res.stdout


def test_fit_names_the_averaged_epochs(inputs, tmp_path):
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["selection"]
    line = f"model selection: the weights of {len(record['averaged_epochs'])} epochs averaged ("
    assert (line in res.stdout) == (record["kept"] == "average")
    (inputs / "tiny.toml").write_text(TOML.replace("[train]", '[train]\nselection = "best"'))
    res = lra(*fit_args(inputs, tmp_path / "best"))
    assert res.exit_code == 0 and "model selection:" not in res.stdout
    assert "selection" not in json.loads((tmp_path / "best" / "metrics.json").read_text())


def test_fit_says_when_the_prior_is_dropped(inputs, tmp_path):
    X, y = make_blobs(600, classes=4)
    np.save(inputs / "features.npy", X)
    np.save(inputs / "labels.npy", np.where(np.random.default_rng(0).random(600) < 0.4, (y + 1) % 4, y))
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert "prior f_q: none (the labels flip in pairs: flip concentration 0." in res.stdout
    assert LRAClassifier.load(tmp_path / "run").config_.diffusion.prior == "zero"


def test_fit_says_whether_wide_features_are_projected(inputs, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    X = rng.normal(size=(1000, 800)).astype(np.float32)  # the classes on three of 800 dimensions
    X[:, :3] = 3.0 * (X[:, :3] + 2.0 * np.eye(3, dtype=np.float32)[y])
    np.save(inputs / "features.npy", X)
    np.save(inputs / "labels.npy", y)
    res = lra(*fit_args(inputs, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert "wide features: the top 90 principal components kept; a logistic regression" in res.stdout
    assert LRAClassifier.load(tmp_path / "run").model_.input_rank == 90


@pytest.mark.parametrize("classes", [np.array([2, 5, 9]), np.array(["ant", "bee", "cat"])])
def test_non_contiguous_and_string_labels_are_mapped(inputs, tmp_path, classes):
    np.save(inputs / "labels.npy", classes[np.load(inputs / "labels.npy")])
    assert lra(*fit_args(inputs, tmp_path / "run")).exit_code == 0
    res = lra("predict", "--model", tmp_path / "run", "--features", inputs / "features.npy", "--out", tmp_path / "p.npy")
    assert res.exit_code == 0, res.output
    pred = np.load(tmp_path / "p.npy")
    assert pred.dtype.kind == classes.dtype.kind and set(pred.tolist()) <= set(classes.tolist())


# ---- bad input: exit code 2, one line naming the problem, no output -----------------------------


def _write(d: Path, name: str, value) -> Path:
    """Write a bad input file into ``d``: an array as .npy, bytes/str verbatim."""
    path = d / name
    if isinstance(value, bytes):
        path.write_bytes(value)
    elif isinstance(value, str):
        path.write_text(value)
    else:
        np.save(path, value, allow_pickle=True)
    return path


def _truncated(d: Path) -> bytes:
    return (d / "features.npy").read_bytes()[:500]


def _with(X: np.ndarray, row: int, value: float) -> np.ndarray:
    X = X.copy()
    X[row, 1] = value
    return X


X_, Y_ = make_blobs()

# (id, {option: (file name, content) | value}, expected message). Options not given use the good inputs.
FIT_CASES = [
    ("csv features", {"--features": ("f.csv", "1,2\n3,4\n")}, "must be a .npy file (got .csv)"),
    ("missing features", {"--features": "none.npy"}, "features file not found"),
    ("text named npy", {"--features": ("f.npy", b"1,2,3\n")}, "is not a .npy file (no NumPy header)"),
    ("truncated npy", {"--features": ("f.npy", _truncated)}, "is not a valid .npy file (truncated?)"),
    ("object features", {"--features": ("f.npy", np.array([[{}], [None]], dtype=object))}, "holds Python objects"),
    ("string features", {"--features": ("f.npy", X_.astype(str))}, "expected numbers"),
    ("nan features", {"--features": ("f.npy", _with(X_, 17, np.nan))}, "features contain NaN or inf (first bad row: 17)"),
    ("inf features", {"--features": ("f.npy", _with(X_, 3, np.inf))}, "features contain NaN or inf (first bad row: 3)"),
    ("empty features", {"--features": ("f.npy", np.zeros((0, 8), np.float32))}, "is empty"),
    ("no feature columns", {"--features": ("f.npy", np.zeros((240, 0), np.float32))}, "0 feature(s)"),
    ("1-D features", {"--features": ("f.npy", X_[:, 0])}, "must be 2-D (N, D), got shape (240,)"),
    ("3-D features", {"--features": ("f.npy", X_[:, :, None])}, "must be 2-D (N, D), got shape (240, 8, 1)"),
    ("float labels", {"--labels": ("l.npy", Y_ + 0.5)}, "holds float64 values; expected integers or strings"),
    ("object labels", {"--labels": ("l.npy", Y_.astype(object))}, "holds Python objects"),
    ("2-D labels", {"--labels": ("l.npy", Y_[:, None])}, "must be 1-D (N,), got shape (240, 1)"),
    ("empty labels", {"--labels": ("l.npy", Y_[:0])}, "is empty"),
    ("count mismatch", {"--labels": ("l.npy", Y_[:-1])}, "has 240 rows but"),
    ("one class", {"--labels": ("l.npy", np.zeros(240, np.int64))}, "need at least 2 classes to train, got 1 class"),
    ("k too large", {"--k": "300"}, "k=300 neighbours need more than 300 training samples"),
    ("k not a number", {"--k": "ten"}, "--k must be an integer >= 0 or 'auto', got 'ten'"),
    ("k auto without validation data", {"--k": "auto", "--config": ("c.toml", "[train]\nval_fraction = 0.0\n")},
     'k="auto" chooses k on validation data'),
    ("unknown config key", {"--config": ("c.toml", "[train]\nepoch = 3\n")},
     "unknown config key(s) ['epoch'] in [train]; valid keys: "
     "['auto_class_max_steps', 'auto_class_visits', 'auto_epochs'"),
    ("unknown config section", {"--config": ("c.toml", "[optim]\nlr = 1\n")}, "unknown config section(s) ['optim']"),
    ("bad toml", {"--config": ("c.toml", "[train\n")}, "is not a valid TOML file"),
    ("bad config value", {"--config": ("c.toml", "[train]\nbatch_size = 1\n")}, "train.batch_size must be >= 2"),
    ("negative checkpoint-every", {"--checkpoint-every": "-1"}, "train.checkpoint_every must be >= 0"),
    ("val labels only", {"--val-labels": ("vl.npy", Y_[:10])}, "give both --val-features and --val-labels"),
    ("val labels outside the classes", {"--val-features": ("vf.npy", X_[:10]), "--val-labels": ("vl.npy", np.r_[Y_[:9], 7])},
     "validation labels [7] are not among the training classes"),
    ("val features wrong width", {"--val-features": ("vf.npy", X_[:10, :5]), "--val-labels": ("vl.npy", Y_[:10])},
     "validation features: X has 5 features, but LRAClassifier is expecting 8 features"),
    ("val nan", {"--val-features": ("vf.npy", _with(X_[:10], 4, np.nan)), "--val-labels": ("vl.npy", Y_[:10])},
     "validation features contain NaN or inf (first bad row: 4)"),
    ("out under a file", {"--out": "tiny.toml/run"}, "is not writable"),
    ("out is a file", {"--out": "tiny.toml"}, "exists and is not a directory"),
]


def _materialise(inputs: Path, options: dict) -> dict[str, str]:
    args = {"--features": str(inputs / "features.npy"), "--labels": str(inputs / "labels.npy"),
            "--config": str(inputs / "tiny.toml"), "--out": str(inputs.parent / "out")}
    for option, value in options.items():
        if isinstance(value, tuple):
            name, content = value
            args[option] = str(_write(inputs, name, content(inputs) if callable(content) else content))
        elif option in ("--features", "--labels", "--config", "--out"):
            args[option] = str(inputs / value)
        else:
            args[option] = value
    return args


def assert_clean_failure(res, message: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.output


@pytest.mark.parametrize("options,message", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_fit_bad_input(inputs, options, message):
    args = _materialise(inputs, options)
    before = files_under(inputs.parent)
    res = lra("fit", "--quiet", *[x for kv in args.items() for x in kv])
    assert_clean_failure(res, message)
    assert files_under(inputs.parent) == before  # no output, no temporary file


PREDICT_CASES = [
    ("no run dir", {"--model": "none"}, "run directory not found"),
    ("not a run dir", {"--model": "."}, "is not a run directory (missing config.json, model.safetensors)"),
    ("wrong width", {"--features": ("f.npy", X_[:, :5])}, "has 5 features per row but the model was trained on 8"),
    ("nan", {"--features": ("f.npy", _with(X_, 9, np.nan))}, "features contain NaN or inf (first bad row: 9)"),
    ("1-D", {"--features": ("f.npy", X_[0])}, "must be 2-D (N, D), got shape (8,)"),
    ("strings", {"--features": ("f.npy", np.array([["a", "b"]]))}, "expected numbers"),
    ("truncated", {"--features": ("f.npy", _truncated)}, "not a valid .npy file (truncated?)"),
    ("out not .npy", {"--out": "p.csv"}, "must end in .npy"),
    ("out not writable", {"--out": "features.npy/p.npy"}, "is not writable"),
]


@pytest.mark.parametrize("options,message", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_predict_bad_input(inputs, trained, options, message):
    np.save(inputs / "features.npy", X_)
    args = {"--model": str(trained), "--features": str(inputs / "features.npy"), "--out": str(inputs / "p.npy")}
    for option, value in options.items():
        if isinstance(value, tuple):
            args[option] = str(_write(inputs, value[0], value[1](inputs) if callable(value[1]) else value[1]))
        else:
            args[option] = str(inputs / value)
    before, run_before = files_under(inputs), files_under(trained)
    res = lra("predict", *[x for kv in args.items() for x in kv])
    assert_clean_failure(res, message)
    assert files_under(inputs) == before and files_under(trained) == run_before


def test_predict_truncated_model(inputs, trained, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in trained.glob("*.json"):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes()[:300])
    res = lra("predict", "--model", run, "--features", inputs / "features.npy", "--out", tmp_path / "p.npy")
    assert_clean_failure(res, "is not a valid safetensors file")
    assert not (tmp_path / "p.npy").exists()


def full_disk_after(monkeypatch, ok_calls: int) -> None:
    """fsync succeeds ``ok_calls`` times, then fails as on a full disk."""
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > ok_calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lra_diffusion.io.os.fsync", fsync)


@pytest.mark.parametrize("ok_calls", [0, 2, 6, 8])  # checkpoints 1 and 3; the model, config.json at the end
def test_fit_disk_full_leaves_nothing(inputs, tmp_path, monkeypatch, ok_calls):
    full_disk_after(monkeypatch, ok_calls)
    res = lra(*fit_args(inputs, tmp_path / "runs" / "run", "--checkpoint-every", "4"))
    assert_clean_failure(res, "No space left on device")
    assert not (tmp_path / "runs").exists()


def test_predict_disk_full_leaves_nothing(inputs, trained, monkeypatch):
    full_disk_after(monkeypatch, 0)
    res = lra("predict", "--model", trained, "--features", inputs / "features.npy", "--out", inputs / "p.npy")
    assert_clean_failure(res, "No space left on device")
    assert files_under(inputs) == {"features.npy", "labels.npy", "tiny.toml"}


def test_fit_refuses_an_earlier_run_without_resume(inputs, tmp_path):
    assert lra(*fit_args(inputs, tmp_path / "run")).exit_code == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    res = lra(*fit_args(inputs, tmp_path / "run", "--seed", "1"))
    assert_clean_failure(res, "already holds checkpoints of an earlier run")
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


# ---- resume -------------------------------------------------------------------------------------


def assert_same_run(a: Path, b: Path, X: np.ndarray) -> None:
    ta, tb = load_tensors(a / "model.safetensors")[0], load_tensors(b / "model.safetensors")[0]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ea, eb = LRAClassifier.load(a), LRAClassifier.load(b)
    np.testing.assert_array_equal(ea.predict(X), eb.predict(X))
    np.testing.assert_array_equal(ea.predict_proba(X), eb.predict_proba(X))


@pytest.mark.floats
def test_resume_skips_a_truncated_checkpoint_with_a_warning(inputs, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert lra(*fit_args(inputs, ref, "--checkpoint-every", "4")).exit_code == 0
    assert lra(*fit_args(inputs, run, "--checkpoint-every", "4")).exit_code == 0
    for name in ("config.json", "model.safetensors", "metrics.json"):  # as if killed before the end
        (run / name).unlink()
    newest, previous = sorted((run / "checkpoints").glob("ckpt-*.safetensors"))[::-1][:2]
    newest.write_bytes(newest.read_bytes()[:1000])

    res = lra(*fit_args(inputs, run, "--checkpoint-every", "4", "--resume"))
    assert res.exit_code == 0, res.output
    assert f"warning: skipping unreadable checkpoint {newest.name}" in res.stderr
    assert f"resumed from step {int(previous.stem.split('-')[1])}" in res.stdout
    assert_same_run(run, ref, X_)


@pytest.mark.floats
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """Acceptance: `lra fit` killed with SIGKILL mid-run, resumed, equals an uninterrupted run bit for bit."""
    d = tmp_path / "in"
    d.mkdir()
    X, y = make_blobs(600, d=16)
    np.save(d / "features.npy", X)
    np.save(d / "labels.npy", y)
    # 540 training rows, batch 32: 16 steps per epoch, 128 steps; a checkpoint every 3 steps
    (d / "tiny.toml").write_text(TOML.replace("epochs = 3", "epochs = 8"))
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    base = [str(a) for a in fit_args(d, killed, "--checkpoint-every", "3", "--seed", "5")]
    # the same number of threads as this process, so float reductions happen in the same order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "lra_diffusion.cli", *base]

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    # wait until it is well into training (past step 20, i.e. in its second epoch), then kill it
    while not any(int(p.stem.split("-")[1]) >= 20 for p in (killed / "checkpoints").glob("ckpt-*.safetensors")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()  # it did not finish
    steps = [int(p.stem.split("-")[1]) for p in (killed / "checkpoints").glob("ckpt-*.safetensors")]
    assert 20 <= max(steps) < 128

    resumed = lra(*base, "--resume")  # in this process: all state comes from the checkpoint file
    assert resumed.exit_code == 0, resumed.output
    assert int(resumed.stdout.split("resumed from step ")[1].split(")")[0]) >= 20

    res = lra(*[a if a != str(killed) else str(ref) for a in base])  # uninterrupted, in this process
    assert res.exit_code == 0, res.output
    assert_same_run(killed, ref, X)


def test_predict_out_is_a_folder(inputs, trained):
    (inputs / "p.npy").mkdir()
    res = lra("predict", "--model", trained, "--features", inputs / "features.npy", "--out", inputs / "p.npy")
    assert_clean_failure(res, "exists and is not a regular file")
    assert (inputs / "p.npy").is_dir() and not list((inputs / "p.npy").iterdir())
