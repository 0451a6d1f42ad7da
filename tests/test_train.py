"""The trainer: learning-rate schedule, EMA, determinism, checkpoints and exact resume."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

from lra_diffusion.config import Config, RetrievalConfig, TrainConfig
from lra_diffusion.errors import InputError
from lra_diffusion.evaluate import predict_y0, readout
from lra_diffusion.features import FeatureRows
from lra_diffusion.io import load_tensors
from lra_diffusion.models import LabelDenoiser
from lra_diffusion.retrieval import NeighbourLabelSampler
from lra_diffusion.train import (Candidate, Checkpointer, auto_epochs, average_candidates, ema_update,
                                 heldout_target_score, lr_factor, prefer_last, run_length, train)

from conftest import TINY, make_blobs

# 216 training rows after the 10% hold-out, batch 32: 6 steps per epoch, 18 steps in all
CKPT = Config.from_dict(TINY).replace(train={"checkpoint_every": 4, "keep_checkpoints": 100})
STEPS_PER_EPOCH, TOTAL = 6, 18


def run(config: Config = CKPT, seed: int = 0, **kw):
    X, y = make_blobs()
    return train(X, y, num_classes=3, config=config, seed=seed, progress=False, **kw)


def test_run_length_spreads_the_selection_epochs_from_the_end():
    # 1,000 rows at batch 256: 3 full batches an epoch (the ragged one dropped), warm-up 2.5% of 30 steps
    assert run_length(TrainConfig(epochs=10, evals=1), 1_000, 10) == (256, 3, 10, 30, 1, {10})
    assert run_length(TrainConfig(epochs=10, evals=20), 1_000, 10).eval_epochs == set(range(1, 11))
    assert run_length(TrainConfig(epochs=10, evals=3, select_after=0.5), 1_000, 10).eval_epochs == {6, 8, 10}
    # fewer rows than a batch: one batch of all of them an epoch
    assert run_length(TrainConfig(epochs=5), 100, 2)[:4] == (100, 1, 5, 5)


def test_auto_length_takes_the_largest_of_its_three_floors():
    tc = TrainConfig(auto_steps=2000, auto_epochs=30, auto_class_visits=10_000)
    # 2,000 steps at 100 steps per epoch = 20 epochs; 10 classes of 4,000 samples need 2.5: 30 epochs win
    assert auto_epochs(tc, 100, n=40_000, num_classes=10) == 30
    # 200 classes of 162 samples: 10,000 visits per class take ceil(10,000 * 200 / 32,400) = 62 epochs
    assert auto_epochs(tc, 126, n=32_400, num_classes=200) == 62
    # a mid-sized set: the 2,000-step floor (20 steps per epoch) decides
    assert auto_epochs(tc, 20, n=5_120, num_classes=10) == 100
    # a small set (3 steps per epoch) would need 667 epochs for 2,000 steps: capped at the paper's 200
    assert auto_epochs(tc, 3, n=1_018, num_classes=10) == 200
    assert auto_epochs(TrainConfig(auto_epochs=30, auto_class_visits=0, auto_steps_max_epochs=0), 3, n=1_018,
                       num_classes=10) == 667  # 0 = no cap (configs/paper.toml)
    assert auto_epochs(TrainConfig(auto_steps=0, auto_epochs=0, auto_class_visits=0), 5, n=10, num_classes=2) == 1
    # 1,000 classes of 10 samples would ask for 2,000 epochs: capped at the paper's 200
    assert auto_epochs(tc, 39, n=10_000, num_classes=1000) == 200
    # ... and at 20,000 optimiser steps (auto_class_max_steps): 45 samples a class, 175 steps an epoch
    assert auto_epochs(TrainConfig(), 175, n=45_000, num_classes=1000) == 114
    # the cap is the per-class rule's only: the 30 passes of a large set still hold
    assert auto_epochs(TrainConfig(), 3906, n=1_000_000, num_classes=1000) == 30


def assert_same_result(a, b) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert a.history == b.history


def step_of(path) -> int:
    return int(path.stem.split("-")[1])


# ---- pieces -------------------------------------------------------------------------------------


def test_lr_factor_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[55] == pytest.approx(0.5) and f[100] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 10, 0) == 1.0  # no warm-up


def test_ema_update():
    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema_update(ema, model, 0.75)
    torch.testing.assert_close(ema.weight, torch.full((3,), 1.25))  # 0.75 * 1 + 0.25 * 2
    torch.testing.assert_close(ema.running_mean, torch.full((3,), 5.0))  # buffers are copied
    ema_update(ema, model, 0.0)
    torch.testing.assert_close(ema.weight, model.weight)


# ---- training -----------------------------------------------------------------------------------


def test_learns_separable_blobs():
    config = Config.from_dict(TINY).replace(train={"epochs": 50, "lr": 1e-2}, model={"feature_dim": 32})
    result = run(config)
    X, y = make_blobs(seed=0)
    pred = readout(predict_y0(result.model, X, config.diffusion)).numpy()
    assert (pred == y).mean() > 0.9
    assert result.best_val_accuracy is not None and result.best_val_accuracy > 0.9
    assert len(result.history) == 50 and result.steps == 50 * STEPS_PER_EPOCH
    assert not result.model.training


def test_compiled_forward_trains_like_the_eager_one():
    """``[runtime] compile = true`` on the CPU: the torch.compile wrapper shares the model's parameters."""
    config = Config.from_dict(TINY).replace(train={"epochs": 50, "lr": 1e-2}, model={"feature_dim": 32})
    assert run(config.replace(runtime={"compile": True})).best_val_accuracy > 0.9
    short = config.replace(train={"epochs": 1})
    eager, compiled = run(short), run(short.replace(runtime={"compile": True}))
    X, _ = make_blobs()
    # the same steps up to float rounding (not parameter by parameter: a bias followed by BatchNorm has a
    # zero gradient in exact arithmetic, so Adam moves it by rounding noise)
    a, b = (predict_y0(r.model, X, short.diffusion) for r in (eager, compiled))
    assert torch.allclose(a, b, atol=1e-3)


@pytest.mark.floats
def test_same_seed_is_bit_identical_and_another_seed_is_not():
    a, b, c = run(), run(), run(seed=1)
    assert_same_result(a, b)
    assert not torch.equal(a.model.lin4.weight, c.model.lin4.weight)


def test_training_leaves_global_random_state_alone():
    # all randomness flows from the run's own generator: no global torch, NumPy or Python RNG is used
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    run()
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_external_validation_set_is_used_for_selection():
    X, y = make_blobs()
    Xv, yv = make_blobs(60, seed=0)
    result = train(X, y, num_classes=3, config=CKPT, val_features=Xv, val_labels=yv, progress=False)
    assert result.val_index is None and len(result.train_index) == 240
    evaluated = [h["epoch"] for h in result.history if "val_accuracy" in h]
    # selection candidates: the tail of the run (after train.select_after), always the last epoch
    assert evaluated and evaluated[-1] == result.epochs
    assert min(evaluated) >= CKPT.train.select_after * result.epochs
    assert result.best_epoch in evaluated


@pytest.mark.parametrize("weighting", [True, False])
def test_heldout_target_score_is_the_probability_under_the_draws_target(weighting):
    rng = np.random.default_rng(0)
    x, xv = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    y, yv = rng.integers(0, 3, 40), rng.integers(0, 3, 7)
    rc = RetrievalConfig(k=4, weighting=weighting)
    score = heldout_target_score(FeatureRows(x), y, xv, yv, 4, rc, torch.device("cpu"))
    # the same rows as samples of one sampler: held-out rows first, their neighbours among the training rows
    nb = np.argsort(((xv[:, None] - x[None]) ** 2).sum(-1), 1)[:, :4]
    sampler = NeighbourLabelSampler(np.r_[yv, y], np.r_[nb + 7, np.zeros((40, 4), np.int64)], weighting=weighting)
    target = sampler.target_distribution(3, np.arange(7)).numpy()
    for pred in (np.zeros(7, np.int64), yv, rng.integers(0, 3, 7)):
        np.testing.assert_allclose(score(pred), target[np.arange(7), pred], rtol=1e-6)


def test_selection_on_the_retrieval_targets_reports_label_accuracy():
    X, y = make_blobs(300, seed=3)
    y = np.where(np.random.default_rng(0).random(len(y)) < 0.4, (y + 1) % 3, y)
    config = Config.from_dict(TINY).replace(train={"epochs": 3, "select_targets": "retrieval"})
    result = train(X, y, num_classes=3, config=config, seed=1, progress=False)
    scored = {h["epoch"]: h for h in result.history if "val_target_score" in h}
    assert scored and all(0 <= h["val_target_score"] <= 1 for h in scored.values())
    if result.best_epoch:  # the kept epoch's accuracy on the labels, not its target score
        assert result.best_val_accuracy == scored[result.best_epoch]["val_accuracy"]
        assert scored[result.best_epoch]["val_target_score"] == max(h["val_target_score"] for h in scored.values())


@pytest.mark.parametrize(("best_only", "last_only", "kept"), [(20, 4, "best"), (12, 8, "last"), (3, 0, "last")])
def test_prefer_last_keeps_the_last_epoch_unless_the_best_is_clearly_better(best_only, last_only, kept):
    last = LabelDenoiser(3, 4, feature_dim=8, timesteps=10)
    best_weights = {k: v.clone() for k, v in last.state_dict().items()}
    best_weights["lin4.bias"] += 1.0  # tells the two candidates apart
    common = 50  # rows both get right; 30 rows neither does
    pattern = {"best": np.r_[np.ones(common + best_only), np.zeros(last_only + 30)].astype(bool),
               "last": np.r_[np.ones(common), np.zeros(best_only), np.ones(last_only), np.zeros(30)].astype(bool)}

    def right(m):
        return pattern["best" if torch.equal(m.lin4.bias, best_weights["lin4.bias"]) else "last"]

    state = {"best_epoch": 2, "best_acc": float(pattern["best"].mean())}
    record = prefer_last(last, best_weights, right, state, epochs=9)
    assert record == {"best_epoch": 2, "best_only": best_only, "last_only": last_only, "kept": kept}
    # the state names the kept candidate: the best one untouched, or the last epoch and its accuracy
    expected = (2, pattern["best"].mean()) if kept == "best" else (9, pattern["last"].mean())
    assert (state["best_epoch"], state["best_acc"]) == pytest.approx(expected)


def test_prefer_last_returns_the_weights_it_names():
    X, y = make_blobs(300, seed=3)
    y = np.where(np.random.default_rng(0).random(len(y)) < 0.4, (y + 1) % 3, y)  # noisy: candidates differ
    base = Config.from_dict(TINY).replace(train={"epochs": 8, "evals": 8, "selection": "best"},
                                          diffusion={"prior_drop_concentration": 1.0})
    best = train(X, y, num_classes=3, config=base, seed=1, progress=False)
    pref = train(X, y, num_classes=3, config=base.replace(train={"selection": "prefer_last"}), seed=1, progress=False)
    # the last epoch's weights alone: one candidate, no untrained start
    last = train(X, y, num_classes=3, config=base.replace(train={"evals": 1, "select_start": False}), seed=1,
                 progress=False)
    assert best.best_epoch != best.epochs and last.best_epoch == last.epochs  # a choice to make here
    assert pref.selection["best_epoch"] == best.best_epoch
    kept = best if pref.selection["kept"] == "best" else last
    assert pref.best_epoch == kept.best_epoch
    for k, v in pref.model.state_dict().items():
        assert torch.equal(v, kept.model.state_dict()[k]), k


@pytest.mark.parametrize(("average_only", "best_only", "kept"), [(10, 2, "average"), (4, 6, "average"), (2, 20, "best")])
def test_average_candidates_averages_those_within_one_standard_error(average_only, best_only, kept):
    last = LabelDenoiser(3, 4, feature_dim=8, timesteps=10)
    base = {k: v.clone() for k, v in last.state_dict().items()}

    def weights(bias: float) -> dict[str, torch.Tensor]:
        return {**base, "lin4.bias": torch.full((3,), bias)}

    # 100 held-out rows: at the best accuracy 0.7 one standard error is sqrt(0.7 * 0.3 / 100) = 0.046
    candidates = [Candidate(0, 0.70, weights(9.0)),  # the untrained start: never averaged
                  Candidate(3, 0.62, weights(5.0)),  # more than one standard error below the best
                  Candidate(6, 0.66, weights(1.0)), Candidate(9, 0.70, weights(2.0)), Candidate(12, 0.68, weights(6.0))]
    best_weights = candidates[3].weights
    pattern = {"best": np.r_[np.ones(60 + best_only), np.zeros(average_only + 40 - best_only)].astype(bool),
               "average": np.r_[np.ones(60), np.zeros(best_only), np.ones(average_only),
                                np.zeros(40 - best_only)].astype(bool)}
    assert len(pattern["best"]) == len(pattern["average"]) == 100 + average_only

    def right(m):
        return pattern["best" if m.lin4.bias[0] == 2.0 else "average"]

    state = {"best_epoch": 9, "best_acc": 0.70}
    record, averaged = average_candidates(last, candidates, best_weights, right, state)
    assert record == {"best_epoch": 9, "averaged_epochs": [6, 9, 12], "best_only": best_only,
                      "average_only": average_only, "kept": kept}
    if kept == "best":
        assert averaged is None and state == {"best_epoch": 9, "best_acc": 0.70}
    else:  # the mean of epochs 6, 9 and 12, named by the last of them
        assert torch.allclose(averaged["lin4.bias"], torch.full((3,), 3.0))
        assert torch.allclose(averaged["lin1.lin.weight"], base["lin1.lin.weight"])
        assert state == {"best_epoch": 12, "best_acc": pytest.approx(pattern["average"].mean())}


@pytest.mark.parametrize(("best_only", "start_only", "kept"), [(20, 2, "best"), (6, 4, "start"), (0, 0, "start")])
def test_average_candidates_holds_a_lone_trained_best_to_the_start(best_only, start_only, kept):
    last = LabelDenoiser(3, 4, feature_dim=8, timesteps=10)
    base = {k: v.clone() for k, v in last.state_dict().items()}
    start, lone = {**base, "lin4.bias": torch.full((3,), 1.0)}, {**base, "lin4.bias": torch.full((3,), 2.0)}
    # 1,000 held-out rows: one standard error at 0.9 is 0.0095, so epoch 9 (0.5) is far and epoch 5 alone
    right_rows = {2.0: np.r_[np.ones(900), np.zeros(100)].astype(bool)}
    right_rows[1.0] = right_rows[2.0].copy()
    right_rows[1.0][:best_only] = False  # rows only the lone epoch gets right ...
    right_rows[1.0][900:900 + start_only] = True  # ... and rows only the start gets right
    state = {"best_epoch": 5, "best_acc": 0.9}
    record, weights = average_candidates(last, [Candidate(0, 0.89, start), Candidate(5, 0.9, lone),
                                                Candidate(9, 0.5, base)], lone,
                                         lambda m: right_rows[m.lin4.bias[0].item()], state)
    assert record == {"best_epoch": 5, "averaged_epochs": [5], "best_only": best_only, "start_only": start_only,
                      "kept": kept}
    if kept == "best":
        assert weights is None and state == {"best_epoch": 5, "best_acc": 0.9}
    else:
        assert weights is start and state == {"best_epoch": 0, "best_acc": pytest.approx(right_rows[1.0].mean())}


@pytest.mark.parametrize("best_epoch", [0, 5])
def test_average_candidates_keeps_the_best_where_it_has_nothing_to_face(best_epoch):
    # the start is the best (a lone trained epoch beside it is not averaged with it), or there is no start
    last = LabelDenoiser(3, 4, feature_dim=8, timesteps=10)
    w = {k: v.clone() for k, v in last.state_dict().items()}
    candidates = [Candidate(0, 0.9, w), Candidate(5, 0.9, w), Candidate(9, 0.5, w)]
    if best_epoch:
        candidates = candidates[1:]
    state = {"best_epoch": best_epoch, "best_acc": 0.9}
    record, averaged = average_candidates(last, candidates, w, lambda m: np.ones(1000, bool), state)
    assert averaged is None and record == {"best_epoch": best_epoch, "averaged_epochs": [5], "kept": "best"}


def test_selection_average_returns_the_weights_it_names_and_resumes_exactly(tmp_path):
    X, y = make_blobs(300, seed=3)
    y = np.where(np.random.default_rng(0).random(len(y)) < 0.4, (y + 1) % 3, y)
    config = Config.from_dict(TINY).replace(train={"epochs": 8, "evals": 8, "selection": "average"},
                                            diffusion={"prior_drop_concentration": 1.0})
    full = train(X, y, num_classes=3, config=config, seed=1, progress=False, checkpoint_dir=tmp_path / "full")
    record = full.selection
    assert record["kept"] == "average" and len(record["averaged_epochs"]) >= 2
    assert full.best_epoch == record["averaged_epochs"][-1]
    # the kept weights are the mean of the named candidates, as written beside the checkpoints
    cands = [load_tensors(tmp_path / "full" / f"cand-{e:06d}.safetensors")[0] for e in record["averaged_epochs"]]
    kept = full.model.state_dict()
    for k, v in kept.items():
        if v.is_floating_point():
            assert torch.allclose(v, sum(c[k] for c in cands) / len(cands), atol=1e-6), k
    # a run killed after its fourth epoch (270 training rows, batch 32: 8 steps an epoch) resumes to the
    # same weights, its earlier candidates read back from their files
    cut = tmp_path / "cut"
    train(X, y, num_classes=3, config=config.replace(train={"keep_checkpoints": 100}), seed=1, progress=False,
          checkpoint_dir=cut)
    for path in [*Checkpointer(cut).paths(), *cut.glob("cand-*.safetensors")]:
        if (step_of(path) > 4 * 8) if path.stem.startswith("ckpt") else (step_of(path) > 4):
            path.unlink()
    resumed = train(X, y, num_classes=3, config=config.replace(train={"keep_checkpoints": 100}), seed=1,
                    progress=False, checkpoint_dir=cut, resume=True)
    assert resumed.resumed_from == 4 * 8 and resumed.selection == record
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, kept[k]), k


def test_k_too_large_raises_and_writes_nothing(tmp_path):
    X, y = make_blobs(12)
    config = CKPT.replace(retrieval={"k": 11})
    with pytest.raises(InputError, match="k=11 neighbours need more than 11 training samples, .*a smaller k"):
        train(X, y, num_classes=3, config=config, checkpoint_dir=tmp_path / "ck", progress=False)
    assert not (tmp_path / "ck").exists()


# ---- checkpoints and resume ---------------------------------------------------------------------


def test_checkpoints_every_n_steps_and_at_epoch_ends(tmp_path):
    run(checkpoint_dir=tmp_path)
    steps = [step_of(p) for p in Checkpointer(tmp_path).paths()]
    assert steps == [4, 6, 8, 12, 16, 18]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left


def test_only_the_last_k_checkpoints_are_kept(tmp_path):
    run(CKPT.replace(train={"keep_checkpoints": 2}), checkpoint_dir=tmp_path)
    assert [step_of(p) for p in Checkpointer(tmp_path).paths()] == [16, 18]


def test_checkpoint_holds_the_whole_training_state(tmp_path):
    run(checkpoint_dir=tmp_path)
    tensors, meta = load_tensors(tmp_path / "ckpt-000000008.safetensors")
    prefixes = {k.split(".")[0] for k in tensors}
    assert {"model", "ema", "optim", "rng"} <= prefixes
    assert "rng.generator" in tensors and tensors["rng.perm"].shape == (216,)
    assert meta["state"]["step"] == 8
    assert meta["fingerprint"]["seed"] == 0 and len(meta["fingerprint"]["features"]) == 64
    assert {"version", "torch", "optimizer_groups"} <= set(meta)
    assert any(k.endswith(".exp_avg_sq") for k in tensors)  # Adam's moments


@pytest.mark.parametrize("stop", [4, 6, 8, 12])  # mid-epoch and epoch-end checkpoints
@pytest.mark.floats
def test_resume_is_bit_identical(tmp_path, stop):
    full = run(checkpoint_dir=tmp_path / "full")
    ck = tmp_path / "cut"
    run(checkpoint_dir=ck)
    for path in Checkpointer(ck).paths():  # simulate a run killed right after checkpoint `stop`
        if step_of(path) > stop:
            path.unlink()
    (ck / ".ckpt-000000099.safetensors.abc.tmp").write_bytes(b"half a checkpoint")  # a killed writer's
    resumed = run(checkpoint_dir=ck, resume=True)
    assert resumed.resumed_from == stop and full.resumed_from is None
    assert_same_result(resumed, full)
    assert not list(ck.glob(".*tmp"))


@pytest.mark.floats
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    full = run(checkpoint_dir=tmp_path)
    for path in Checkpointer(tmp_path).paths():
        if step_of(path) > 12:
            path.unlink()
    newest = tmp_path / "ckpt-000000012.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    with pytest.warns(UserWarning, match="skipping unreadable checkpoint ckpt-000000012"):
        _, meta = Checkpointer(tmp_path).load_latest()
    assert meta["state"]["step"] == 8
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint ckpt-000000012"):
        resumed = run(checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 8
    assert_same_result(resumed, full)


def test_no_readable_checkpoint_starts_afresh(tmp_path):
    full = run()
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ckpt-000000004.safetensors").write_bytes(b"")
    (tmp_path / "ckpt-000000008.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        resumed = run(checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from is None
    assert_same_result(resumed, full)


def test_resume_without_checkpoints_is_a_fresh_run(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_result(run(checkpoint_dir=tmp_path / "a", resume=True), run())


def test_resume_refuses_checkpoints_of_another_run(tmp_path):
    run(checkpoint_dir=tmp_path)
    with pytest.raises(InputError, match="belong to other inputs, config or seed"):
        run(seed=1, checkpoint_dir=tmp_path, resume=True)


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    run(checkpoint_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="already holds checkpoints of an earlier run; resume it or write elsewhere"):
        run(seed=1, checkpoint_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("change,message", [
    (lambda X, y: (X[:, 0], y), r"features must be 2-D \(N, D\) with D >= 1, got shape \(240,\)"),
    (lambda X, y: (X[:, :0], y), r"got shape \(240, 0\)"),
    (lambda X, y: (X, y[:-1]), r"labels must have shape \(240,\) to match the features, got \(239,\)"),
    (lambda X, y: (np.where(np.arange(240)[:, None] == 5, np.nan, X), y), r"features contain NaN or inf \(first bad row: 5\)"),
    (lambda X, y: (X, y + 1), r"labels must be class indices in 0..2, got 1..3"),
    (lambda X, y: (X, y - 1), r"labels must be class indices in 0..2, got -1..1"),
])
def test_train_validates_its_inputs(tmp_path, change, message):
    X, y = change(*make_blobs())
    with pytest.raises(InputError, match=message):
        train(X, y, num_classes=3, config=CKPT, checkpoint_dir=tmp_path / "ck", progress=False)
    assert not (tmp_path / "ck").exists()


def test_train_validates_the_validation_set():
    X, y = make_blobs()
    Xv, yv = make_blobs(30)
    cases = [
        (Xv, yv + 3, r"validation labels must be class indices in 0..2, got 3..5"),
        (np.r_[Xv[:2], np.full((1, 8), np.inf)], yv[:3], r"validation features contain NaN or inf \(first bad row: 2\)"),
        (Xv, yv[:5], r"validation labels must have shape \(30,\)"),
        (Xv, None, "give both val_features and val_labels"),
    ]
    for Xv_, yv_, message in cases:
        with pytest.raises(InputError, match=message):
            train(X, y, num_classes=3, config=CKPT, val_features=Xv_, val_labels=yv_, progress=False)


def test_auto_k_reads_the_modes_and_the_boolean_of_earlier_runs():
    assert Config().retrieval.auto_k == "screen"
    for old, mode in ((True, "rule"), (False, "off")):  # config.json of runs saved before the modes
        assert Config.from_dict({"retrieval": {"auto_k": old}}).retrieval.auto_k == mode
    with pytest.raises(InputError, match="retrieval.auto_k must be 'off', 'screen' or 'rule'"):
        Config.from_dict({"retrieval": {"auto_k": "always"}})
