"""`lra embed` and `lra pretrain simclr` through the CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.encoders import KMeansEncoder
from lra_diffusion.encoders.commands import parse_options

runner = CliRunner()
KMEANS = ["-o", "n_centroids=8", "-o", "n_patches=800", "-o", "kmeans_iters=2", "-o", "n_stats=20"]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.integers(0, 256, (40, 10, 10, 3), dtype=np.uint8))
    np.save(tmp_path / "test.npy", rng.integers(0, 256, (12, 10, 10, 3), dtype=np.uint8))
    return tmp_path


def _embed(data, *extra):
    return runner.invoke(app, ["embed", "--dataset", "npy", "--root", str(data), "--cache-dir",
                               str(data / "cache"), "--quiet", *extra])


@pytest.mark.floats
def test_embed_writes_features_and_second_call_does_no_encoding(data, monkeypatch):
    res = _embed(data, "--encoder", "kmeans", *KMEANS, "--split", "test", "--out",
                 str(data / "f.npy"))
    assert res.exit_code == 0, res.output
    first = np.load(data / "f.npy")
    assert first.shape == (12, 32) and "12 x 32" in res.output

    def no_encoding(self, batch):
        raise AssertionError("encoded again")

    def no_fit(self, images):
        raise AssertionError("fitted again")

    monkeypatch.setattr(KMeansEncoder, "_encode_batch", no_encoding)
    monkeypatch.setattr(KMeansEncoder, "fit", no_fit)
    res = _embed(data, "--encoder", "kmeans", *KMEANS, "--split", "test", "--out",
                 str(data / "g.npy"))
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(data / "g.npy"), first)
    # a changed input (here the test images) must be encoded again
    imgs = np.load(data / "test.npy")
    imgs[0, 0, 0, 0] ^= 1
    np.save(data / "test.npy", imgs)
    res = _embed(data, "--encoder", "kmeans", *KMEANS, "--split", "test", "--out",
                 str(data / "h.npy"))
    assert res.exit_code != 0 and "encoded again" in repr(res.exception)


def test_embed_float16_and_saved_encoder(data):
    res = _embed(data, "--encoder", "pixels", "--split", "train", "--out", str(data / "p.npy"),
                 "--float16")
    assert res.exit_code == 0, res.output
    assert np.load(data / "p.npy").dtype == np.float16
    [saved] = (data / "cache" / "pixels").glob("fitted-*")
    res = _embed(data, "--encoder", "pixels", "--encoder-dir", str(saved), "--split", "test",
                 "--out", str(data / "q.npy"))
    assert res.exit_code == 0, res.output
    assert np.load(data / "q.npy").shape == (12, 300)


def test_embed_bad_input_exits_2_with_one_line(data, tmp_path):
    res = _embed(data, "--encoder", "resnet", "--out", str(data / "x.npy"))
    assert res.exit_code == 2 and "unknown encoder 'resnet'" in res.output
    res = _embed(data, "--encoder", "kmeans", "-o", "n_centroids", "--out", str(data / "x.npy"))
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    t0 = time.perf_counter()
    res = _embed(data, "--encoder", "clip", "-o", f"model={tmp_path / 'no-clip'}", "--out",
                 str(data / "x.npy"))
    assert res.exit_code == 2 and "--local-dir DIR" in res.output
    assert time.perf_counter() - t0 < 1.0
    assert not (data / "x.npy").exists()


@pytest.mark.floats
def test_pretrain_simclr_runs_and_resumes(data):
    args = ["pretrain", "simclr", "--dataset", "npy", "--root", str(data), "--out",
            str(data / "run"), "--arch", "resnet18", "--width", "8", "--batch-size", "16",
            "--quiet"]
    res = runner.invoke(app, [*args, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert (data / "run" / "checkpoint.pt").is_file()
    res = runner.invoke(app, [*args, "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "resumed from" in res.output and "epoch 2/2" in res.output
    res = _embed(data, "--encoder", "simclr", "--encoder-dir", str(data / "run" / "encoder"),
                 "--split", "test", "--out", str(data / "s.npy"))
    assert res.exit_code == 0, res.output
    feats = np.load(data / "s.npy")
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_parse_options():
    assert parse_options(["a=3", "b=0.5", "c=true", "d=None", "e=x/y.pt", "pca-dim=4"]) == {
        "a": 3, "b": 0.5, "c": True, "d": None, "e": "x/y.pt", "pca_dim": 4}
