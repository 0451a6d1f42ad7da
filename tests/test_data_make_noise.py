"""make_noisy_label_file / format_report: the library side of `lra noise`."""

from __future__ import annotations

import numpy as np
import pytest

from lra_diffusion.data import format_report, load_label_file, make_noisy_label_file, noise_rate
from lra_diffusion.errors import InputError


@pytest.fixture()
def clean_csv(tmp_path):
    y = np.arange(2000) % 10
    p = tmp_path / "train.csv"
    p.write_text("index,path,label\n" + "".join(f"{i},train/x/{i}.jpg,{v}\n" for i, v in enumerate(y)))
    return p, y


def test_file_round_trip_rate_and_report(tmp_path, clean_csv):
    path, y = clean_csv
    rep = make_noisy_label_file(path, tmp_path / "out" / "noisy.npy", model="symmetric", rate=0.3,
                                seed=4, first=1500)
    noisy = load_label_file(rep.output)
    assert noisy.shape == (1500,) and rep.num_samples == 1500 and rep.num_classes == 10
    assert rep.rate == noise_rate(y[:1500], noisy) and abs(rep.rate - 0.3) < 0.005
    text = format_report(rep)
    assert "realised noise rate: 30.00%" in text and "model symmetric:0.3, seed 4" in text
    assert len(text.splitlines()) == 4 + 1 + 10
    again = make_noisy_label_file(path, tmp_path / "again.csv", model="symmetric", rate=0.3, seed=4,
                                  first=1500)
    np.testing.assert_array_equal(load_label_file(again.output), noisy)


def test_chain_and_model_inputs(tmp_path, clean_csv):
    path, y = clean_csv
    eta = np.random.default_rng(0).dirichlet(np.ones(10), size=2000)
    np.save(tmp_path / "eta.npy", eta)
    rep = make_noisy_label_file(path, tmp_path / "n.npy", model="pmd", rate=0.35, seed=1,
                                then=[("asymmetric", 0.3)], posteriors=tmp_path / "eta.npy")
    assert rep.model == "pmd:0.35+asymmetric:0.3" and rep.rate > 0.3
    with pytest.raises(InputError, match="needs per-sample features"):
        make_noisy_label_file(path, tmp_path / "m.npy", model="instance", rate=0.2, seed=1)
    with pytest.raises(InputError, match=r"features must have shape \(N, D\) with N >= 2000"):
        np.save(tmp_path / "f.npy", np.zeros((10, 3)))
        make_noisy_label_file(path, tmp_path / "m.npy", model="instance", rate=0.2, seed=1,
                              features=tmp_path / "f.npy")


def test_bad_input(tmp_path, clean_csv):
    path, _ = clean_csv
    (tmp_path / "exists.npy").write_bytes(b"")
    with pytest.raises(InputError, match="exists; pass overwrite=True"):
        make_noisy_label_file(path, tmp_path / "exists.npy", model="symmetric", rate=0.1, seed=0)
    with pytest.raises(InputError, match="write noisy labels as .npy, .csv or .txt"):
        make_noisy_label_file(path, tmp_path / "x.json", model="symmetric", rate=0.1, seed=0)
    with pytest.raises(InputError, match="first=5000 must lie in 1..2000"):
        make_noisy_label_file(path, tmp_path / "x.npy", model="symmetric", rate=0.1, seed=0, first=5000)
    with pytest.raises(InputError, match="label 10 at index 0 is outside 0..9"):
        np.save(tmp_path / "bad.npy", np.array([10, 1]))
        make_noisy_label_file(tmp_path / "bad.npy", tmp_path / "y.npy", model="symmetric", rate=0.1,
                              seed=0, num_classes=10)
