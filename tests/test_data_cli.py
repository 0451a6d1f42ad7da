"""`lra noise`: make a noisy label file from a clean one and print the realised rate and T."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.data import load_label_file

runner = CliRunner()


@pytest.fixture()
def clean(tmp_path):
    y = np.arange(3000) % 10
    np.save(tmp_path / "clean.npy", y)
    return tmp_path / "clean.npy", y


def _run(*args: str):
    return runner.invoke(app, ["noise", *args])


def test_noise_command_writes_file_and_prints_rate_and_matrix(tmp_path, clean):
    path, y = clean
    out = tmp_path / "noisy.npy"
    res = _run("--clean", str(path), "--out", str(out), "--model", "symmetric", "--rate", "0.4",
               "--seed", "3")
    assert res.exit_code == 0, res.output
    noisy = load_label_file(out)
    assert abs(np.mean(noisy != y) - 0.4) < 0.005
    assert "realised noise rate: 40.00%" in res.output
    assert "transition matrix T[clean, noisy]" in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip().startswith(("0 ", "9 "))]) >= 2
    res2 = _run("--clean", str(path), "--out", str(tmp_path / "again.npy"), "--model", "symmetric",
                "--rate", "0.4", "--seed", "3")
    assert res2.exit_code == 0
    np.testing.assert_array_equal(load_label_file(tmp_path / "again.npy"), noisy)


def test_noise_command_chain_first_and_csv(tmp_path, clean):
    path, y = clean
    out = tmp_path / "noisy.csv"
    res = _run("--clean", str(path), "--out", str(out), "--model", "asymmetric", "--rate", "0.3",
               "--then", "symmetric:0.2", "--first", "2000", "--seed", "0")
    assert res.exit_code == 0, res.output
    assert "model asymmetric:0.3+symmetric:0.2" in res.output
    assert load_label_file(out).shape == (2000,)


@pytest.mark.parametrize("extra,message", [
    (["--model", "gauss", "--rate", "0.2"], "unknown noise model 'gauss'; choose one of"),
    (["--model", "symmetric", "--rate", "1.2"], "rate must be a number in [0, 1]"),
    (["--model", "pmd", "--rate", "0.2"], "needs per-sample class posteriors"),
    (["--model", "symmetric", "--rate", "0.2", "--then", "symmetric"], "is not 'model:rate'"),
])
def test_noise_command_bad_input_is_one_line_exit_2(tmp_path, clean, extra, message):
    path, _ = clean
    res = _run("--clean", str(path), "--out", str(tmp_path / "n.npy"), *extra)
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "n.npy").exists()


def test_noise_command_missing_clean_file(tmp_path):
    res = _run("--clean", str(tmp_path / "none.npy"), "--out", str(tmp_path / "n.npy"),
               "--model", "symmetric", "--rate", "0.2")
    assert res.exit_code == 2 and "label file not found" in res.output
