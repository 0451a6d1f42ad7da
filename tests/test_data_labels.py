"""Label files: user .npy/.csv/.txt, PMD files, CIFAR-N (.csv and the official .pt layout), and the
measured noise rates of the shared files (acceptance 2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lra_diffusion.data import (
    check_labels,
    load_cifar_n,
    load_label_file,
    load_pmd_labels,
    parse_pmd_name,
    save_label_file,
)
from lra_diffusion.data.noise_rates import main as noise_rates_main
from lra_diffusion.data.noise_rates import shared_noise_rates
from lra_diffusion.errors import InputError

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
needs_shared = pytest.mark.skipif(
    not (SHARED_CIFAR / "noisy_labels").is_dir(),
    reason=f"shared data not found at {SHARED_CIFAR} (clone the repo with shared/ beside it)")


def test_npy_labels_and_validation(tmp_path):
    p = tmp_path / "y.npy"
    np.save(p, np.array([3, 0, 9], dtype=np.int32))
    y = load_label_file(p, num_samples=3, num_classes=10)
    assert y.dtype == np.int64 and y.tolist() == [3, 0, 9]
    np.save(p, np.array([1.0, 2.0]))
    assert load_label_file(p).tolist() == [1, 2]  # integral floats are fine
    np.save(p, np.array([1.0, 2.5]))
    with pytest.raises(InputError, match=r"y.npy: label 2.5 at index 1 is not an integer"):
        load_label_file(p)
    np.save(p, np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"expected a 1-D array of labels, got shape \(3, 4\)"):
        load_label_file(p)
    np.save(p, np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="not a plain numeric .npy array"):
        load_label_file(p)
    np.save(p, np.array([0, 1, 10]))
    with pytest.raises(InputError, match=r"label 10 at index 2 is outside 0..9"):
        load_label_file(p, num_classes=10)
    with pytest.raises(InputError, match="has 3 labels but the dataset has 5 items"):
        load_label_file(p, num_samples=5)
    np.save(p, np.array([0, -1]))
    with pytest.raises(InputError, match=r"label -1 at index 1"):
        load_label_file(p)
    with pytest.raises(InputError, match="label file not found"):
        load_label_file(tmp_path / "nope.npy")
    (tmp_path / "y.json").write_text("[]")
    with pytest.raises(InputError, match="unknown label file type '.json'"):
        load_label_file(tmp_path / "y.json")


def test_csv_with_index_column_in_any_order(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("index,label\n2,7\n0,5\n1,6\n")
    assert load_label_file(p).tolist() == [5, 6, 7]
    p.write_text("index,clean,noisy\n0,1,2\n1,3,3\n")
    with pytest.raises(InputError, match="several label columns .*clean, noisy.*column="):
        load_label_file(p)
    assert load_label_file(p, column="noisy").tolist() == [2, 3]
    with pytest.raises(InputError, match="no column 'other'; columns are index, clean, noisy"):
        load_label_file(p, column="other")
    p.write_text("index,label\n0,1\n0,2\n")
    with pytest.raises(InputError, match="index 0 appears 2 times"):
        load_label_file(p)
    p.write_text("index,label\n0,1\n5,2\n")
    with pytest.raises(InputError, match=r"index 5 \(row 2\) is outside 0..1"):
        load_label_file(p)
    p.write_text("index,label\n0,1\n1,cat\n")
    with pytest.raises(InputError, match=r"labels.csv line 3: index and 'label' must be integers"):
        load_label_file(p)
    p.write_text("label\n1\n")
    with pytest.raises(InputError, match="need a header with an 'index' column"):
        load_label_file(p)


def test_txt_labels(tmp_path):
    p = tmp_path / "y.txt"
    p.write_text("4\n2\n\n1\n")
    assert load_label_file(p).tolist() == [4, 2, 1]
    p.write_text("1 8\n0 9\n")
    assert load_label_file(p).tolist() == [9, 8]
    p.write_text("1\n2 3\n")
    with pytest.raises(InputError, match="y.txt line 2: expected 1 fields"):
        load_label_file(p)


def test_save_round_trips(tmp_path):
    y = np.array([3, 1, 4, 1, 5])
    for suffix in (".npy", ".csv", ".txt"):
        path = save_label_file(tmp_path / f"out{suffix}", y)
        np.testing.assert_array_equal(load_label_file(path), y)
    with pytest.raises(InputError, match="cannot write labels as '.json'"):
        save_label_file(tmp_path / "out.json", y)


def test_pmd_name_and_length(tmp_path):
    assert parse_pmd_name("cifar10-1-0.35_U_0.6.npy") == {
        "dataset": "cifar10", "pmd_type": 1, "pmd_rate": 0.35, "extra": "symmetric", "extra_rate": 0.6}
    assert parse_pmd_name("x/cifar100-3-0.70.npy")["extra"] is None
    with pytest.raises(InputError, match="not a PMD label file name"):
        parse_pmd_name("labels.npy")
    p = tmp_path / "cifar10-1-0.35.npy"
    np.save(p, np.zeros(45_000, np.int64))
    assert load_pmd_labels(p).shape == (45_000,)
    np.save(p, np.zeros(50_000, np.int64))
    with pytest.raises(InputError, match="has 50000 labels but the dataset has 45000 items"):
        load_pmd_labels(p)


def _official_cifar_n_pt(path: Path, n: int, hundred: bool = False) -> dict:
    rng = np.random.default_rng(1)
    if hundred:
        d = {"clean_label": rng.integers(0, 100, n), "noisy_label": rng.integers(0, 100, n),
             "clean_coarse_label": rng.integers(0, 20, n), "noisy_coarse_label": rng.integers(0, 20, n)}
    else:
        d = {k: rng.integers(0, 10, n) for k in ("clean_label", "worse_label", "aggre_label",
                                                 "random_label1", "random_label2", "random_label3")}
    torch.save(d, path)  # the release stores a dict of NumPy arrays
    return d


def test_cifar_n_official_pt_layout(tmp_path):
    p10 = tmp_path / "CIFAR-10_human.pt"
    d = _official_cifar_n_pt(p10, 12)
    for short, key in (("worse", "worse_label"), ("aggre", "aggre_label"), ("random3", "random_label3")):
        np.testing.assert_array_equal(load_cifar_n(p10, short, num_samples=12), d[key])
    with pytest.raises(InputError, match="column='noisy' is not one of clean, aggre"):
        load_cifar_n(p10, "noisy", num_samples=12)
    with pytest.raises(InputError, match="has 12 labels but the dataset has 50000"):
        load_cifar_n(p10, "worse")
    p100 = tmp_path / "CIFAR-100_human.pt"
    d = _official_cifar_n_pt(p100, 8, hundred=True)
    np.testing.assert_array_equal(load_cifar_n(p100, "noisy", num_samples=8), d["noisy_label"])
    np.testing.assert_array_equal(load_cifar_n(p100, "noisy_coarse", num_samples=8),
                                  d["noisy_coarse_label"])
    with pytest.raises(InputError, match="holds several label arrays"):
        load_label_file(p100)


def test_pt_file_with_foreign_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    p = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": Evil()}, p)
    with pytest.raises(InputError, match="holds objects other than label arrays"):
        load_cifar_n(p, "worse", num_samples=1)
    p.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot load as a CIFAR-N .pt label file"):
        load_cifar_n(p, "worse", num_samples=1)


def test_check_labels_rejects_booleans_and_strings():
    with pytest.raises(InputError, match="must be integers"):
        check_labels(np.array([True, False]))
    with pytest.raises(InputError, match="must be integers"):
        check_labels(np.array(["a", "b"]))


# ------------------------------------------------------------------------------------------------
# Acceptance 2: measured noise rates of the shared files
# ------------------------------------------------------------------------------------------------
@needs_shared
def test_shared_noise_rates_match_the_readme(capsys):
    rates = {name: (n, r) for name, n, r in shared_noise_rates(SHARED_CIFAR)}
    expected = {  # from ../shared/data/README.md, rounded as printed there
        "pmd/cifar10-1-0.35.npy": 35.0, "pmd/cifar10-1-0.70.npy": 70.5,
        "pmd/cifar10-1-0.35_U_0.6.npy": 71.8, "pmd/cifar10-1-0.35_U_0.3.npy": 53.3,
        "pmd/cifar10-1-0.35_A_0.3.npy": 41.2,
    }
    for name, pct in expected.items():
        assert rates[name][0] == 45_000
        assert round(100 * rates[name][1], 1) == pct, name
    assert round(100 * rates["cifar10n.csv:worse"][1], 2) == 40.21
    assert round(100 * rates["cifar10n.csv:aggre"][1], 2) == 9.01
    assert round(100 * rates["cifar10n.csv:random1"][1], 2) == 17.23
    assert rates["cifar10n.csv:clean"][1] == 0.0
    assert noise_rates_main([str(SHARED_CIFAR)]) == 0
    out = capsys.readouterr().out
    assert "pmd/cifar10-1-0.35_U_0.6.npy" in out and "71.77%" in out and "40.21%" in out


def test_noise_rates_command_reports_bad_folder(tmp_path, capsys):
    assert noise_rates_main([str(tmp_path)]) == 2
    assert "train.csv" in capsys.readouterr().err
