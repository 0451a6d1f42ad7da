"""The benchmark harness: protocol splits, baselines, tables (no long runs here)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lra_diffusion.benchmark import (
    SoftmaxRegression,
    Split,
    _run_tasks,
    ceiling_key,
    cifar10_split,
    cifar10_table,
    replace_section,
    run_baselines,
    run_lra,
)
from lra_diffusion.cli import app

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def blobs(n=300, d=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return (rng.standard_normal((n, d)) + 4 * np.eye(c, d)[y]).astype(np.float32), y


def test_softmax_regression_fits_separable_data_and_gives_probabilities():
    X, y = blobs()
    m = SoftmaxRegression(l2=1e-3).fit(X, y)
    p = m.predict_proba(X)
    assert p.shape == (300, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert m.score(X, y) > 0.95


def test_baselines_run_on_a_small_split():
    X, y = blobs(400)
    noisy = y.copy()
    noisy[:80] = (noisy[:80] + 1) % 3
    split = Split(X[:300], noisy[:300], y[:300], X[300:350], y[300:350], X[350:], y[350:], val_is_clean=True)
    out = run_baselines(split, methods=("linear", "knn", "ceiling"))
    assert set(out) == {"linear", "knn", "ceiling_linear", "ceiling_mlp"}
    assert all(0.5 < r["test_accuracy"] <= 1 for r in out.values())


def test_lra_record_says_which_k_and_prior_the_defaults_kept():
    X, y = blobs(500)
    noisy = y.copy()
    noisy[:100] = (noisy[:100] + 1) % 3
    split = Split(X[:350], noisy[:350], y[:350], X[350:420], noisy[350:420], X[420:], y[420:], val_is_clean=False)
    record = run_lra(split, config={"train": {"epochs": 2}}, seed=0)
    info = json.loads(json.dumps(record))["fit_info"]  # JSON-ready, as the benchmark writes it
    assert info["retrieval_k"] in (0, 10)
    prior = info["prior"]  # pair flips: the prior may be dropped (prior_drop_concentration), and the record says so
    assert prior["kind"] in ("linear", "mlp") or prior["kind"] == "zero" and prior["dropped"]["kind"] in ("linear", "mlp")
    assert info["k_rule"]["flip_concentration"] is not None
    assert info["k_rule"]["k"] in (0, 10)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/cifar10 is not beside the repo")
def test_cifar10_protocols():
    feats = (np.zeros((50_000, 2), np.float32), np.zeros((10_000, 2), np.float32))
    pmd = cifar10_split("pmd-0.35", *feats, SHARED)
    assert len(pmd.y_train) == 45_000 and len(pmd.y_val) == 5_000 and pmd.val_is_clean
    assert abs((pmd.y_train != pmd.y_train_clean).mean() - 0.350) < 0.001
    worse = cifar10_split("c10n-worse", *feats, SHARED, seed=0)
    assert len(worse.y_train) == 45_000 and len(worse.y_val) == 5_000 and not worse.val_is_clean
    assert abs((worse.y_train != worse.y_train_clean).mean() - 0.4021) < 0.01
    again = cifar10_split("c10n-worse", *feats, SHARED, seed=0)
    assert np.array_equal(again.y_val, worse.y_val)


def record(setting, seed, lra, base):
    names = ("linear", "mlp", "knn", "cleanlab", "ceiling_linear", "ceiling_mlp")
    return {"setting": setting, "seed": seed, "noise_rate": 0.35, "encoder": "x",
            "lra": {"test_accuracy": lra, "retrieval_clean_draw_fraction": 0.6},
            "baselines": {n: {"test_accuracy": b} for n, b in zip(names, base)}}


def test_table_reports_medians_and_the_ratio_to_the_ceiling(tmp_path):
    rows = [record("pmd-0.35", s, a, (0.5, 0.6, 0.55, 0.58, 0.7, 0.8)) for s, a in [(0, 0.7), (1, 0.72), (2, 0.6)]]
    table = cifar10_table(rows, "x")
    line = next(l for l in table.splitlines() if l.startswith("| pmd-0.35"))
    assert "**70.00%**" in line and "80.00%" in line and "0.875" in line and "| 3 |" in line
    md = tmp_path / "B.md"
    md.write_text("# B\n\nkeep me\n")
    replace_section(md, "t", table)
    replace_section(md, "t", "new")
    text = md.read_text()
    assert "keep me" in text and "new" in text and "pmd-0.35" not in text


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/cifar10 is not beside the repo")
def test_cli_bench_table_only(tmp_path):
    folder = tmp_path / "results" / "kmeans"
    folder.mkdir(parents=True)
    rec = {**record("pmd-0.35", 0, 0.9, (0.5, 0.6, 0.55, 0.58, 0.7, 0.8)), "encoder": "kmeans"}
    (folder / "pmd-0.35-seed0.json").write_text(json.dumps(rec))
    md = tmp_path / "B.md"
    res = CliRunner().invoke(app, ["bench", "cifar10", "--table-only", "--results", str(tmp_path / "results"),
                                   "--markdown", str(md), "--shared", str(SHARED)])
    assert res.exit_code == 0, res.output
    assert "cifar10-main-kmeans" in md.read_text() and "90.00%" in md.read_text()


def test_ceiling_is_shared_only_by_settings_with_the_same_computation():
    assert ceiling_key("pmd-0.35", 0) == ceiling_key("pmd-0.70", 0) != ceiling_key("pmd-0.35", 1)
    assert ceiling_key("c10n-worse", 0) != ceiling_key("c10n-aggre", 0)  # different noisy validation labels


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/cifar10 is not beside the repo")
def test_worker_processes_reproduce_the_in_process_run():
    import torch

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((50_000, 4)).astype(np.float32), rng.standard_normal((10_000, 4)).astype(np.float32)
    config = {"train": {"epochs": 1, "batch_size": 1024, "evals": 1}, "model": {"feature_dim": 8},
              "retrieval": {"k": 2}}
    # a "noisy" task runs every noisy-label baseline too (cleanlab's own process pool once failed in workers)
    tasks = [("lra", "pmd-0.35", 0, config), ("noisy", "c10n-worse", 1, config)]
    results = {1: {}, 2: {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count
    try:
        for jobs in (1, 2):
            _run_tasks(tasks, feats, SHARED, jobs, lambda task, r, jobs=jobs: results[jobs].update({task[1]: r}))
    finally:
        torch.set_num_threads(threads)
    for setting in ("pmd-0.35", "c10n-worse"):
        a, b = results[1][setting], results[2][setting]
        for r in (a, b):
            for part in [r["lra"], *r.get("baselines", {}).values()]:
                part.pop("seconds")
        assert a == b and a["setting"] == setting
    assert set(results[2]["c10n-worse"]["baselines"]) == {"linear", "mlp", "knn", "cleanlab"}
