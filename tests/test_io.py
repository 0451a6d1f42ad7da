"""Atomic writes (no partial files, even on a full disk), safetensors files, canonical tensor layout,
validated array loading."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from lra_diffusion.errors import InputError
from lra_diffusion.io import (
    atomic_write,
    canonical,
    finite_or_none,
    is_canonical,
    load_array,
    load_tensors,
    read_json,
    save_tensors,
    sha256_array,
    write_json,
)


def full_disk(monkeypatch) -> None:
    """Make every fsync fail as on a full disk."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lra_diffusion.io.os.fsync", fsync)


def test_atomic_write_bytes_and_callable(tmp_path):
    atomic_write(tmp_path / "a.bin", b"hello")
    atomic_write(tmp_path / "b.npy", lambda f: np.save(f, np.arange(3)))
    assert (tmp_path / "a.bin").read_bytes() == b"hello"
    assert np.load(tmp_path / "b.npy").tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.npy"]


def test_disk_full_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    (tmp_path / "old.bin").write_bytes(b"old")
    full_disk(monkeypatch)
    with pytest.raises(InputError, match=r"cannot write .*new.bin: No space left on device"):
        atomic_write(tmp_path / "new.bin", b"data")
    with pytest.raises(InputError, match="No space left on device"):
        atomic_write(tmp_path / "old.bin", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]
    assert (tmp_path / "old.bin").read_bytes() == b"old"


def test_a_failing_writer_leaves_nothing(tmp_path):
    def writer(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", writer)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,message", [
    (lambda tmp: tmp / "missing" / "x.bin", "folder .*missing does not exist"),
    (lambda tmp: tmp, "exists and is not a regular file"),
    (lambda tmp: "/dev/full", "/dev/full: it exists and is not a regular file"),
])
def test_unwritable_targets(tmp_path, target, message):
    with pytest.raises(InputError, match=message):
        atomic_write(target(tmp_path), b"data")
    assert list(tmp_path.iterdir()) == []
    assert not os.path.isfile("/dev/full")  # still the device


def fresh_strides(t: torch.Tensor) -> tuple[int, ...]:
    return torch.empty(t.shape).stride()


def test_canonical_is_row_major_aligned_and_keeps_dtype_and_values():
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    cases = {
        "column-major (an SVD's Vh)": base.T,
        "column-major slice with a size-1 dim": base.T[:1],
        "size-1 dim that contiguous() keeps": base.reshape(-1)[:6].as_strided((1, 6), (1, 1)),
        "unaligned view (as safetensors returns)": base.reshape(-1)[1:7],
        "float16": base.T.half(),
        "int64": torch.arange(12).reshape(3, 4).T,
        "empty": base[:0],
        "scalar": base[0, 0],
    }
    for what, t in cases.items():
        c = canonical(t)
        assert is_canonical(c), what
        assert (c.dtype, c.shape, c.stride()) == (t.dtype, t.shape, fresh_strides(t)), what
        assert torch.equal(c, t), what
    # why not .contiguous(): it keeps these layouts
    assert cases["size-1 dim that contiguous() keeps"].contiguous().stride() == (1, 1)
    assert not is_canonical(cases["unaligned view (as safetensors returns)"].contiguous())
    already = torch.randn(3, 4)
    assert canonical(already).data_ptr() == already.data_ptr()  # no copy when there is nothing to fix
    assert not canonical(torch.nn.Parameter(torch.randn(2, 3))).requires_grad


@pytest.mark.floats
def test_save_load_tensors_round_trip_and_truncation(tmp_path):
    tensors = {"w": torch.randn(3, 4), "i": torch.arange(5), "vh": torch.randn(5, 2).T, "row": torch.randn(4, 1).T}
    save_tensors(tmp_path / "t.safetensors", tensors, {"step": 7, "name": "x"})
    loaded, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta == {"step": 7, "name": "x"}
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    # what comes back owns aligned row-major memory (safetensors alone gives 8-byte aligned views)
    for k, v in loaded.items():
        assert is_canonical(v) and (v.dtype, v.stride()) == (tensors[k].dtype, fresh_strides(v)), k
    raw = (tmp_path / "t.safetensors").read_bytes()
    for cut in (0, 5, 40, len(raw) - 1):
        (tmp_path / "cut.safetensors").write_bytes(raw[:cut])
        with pytest.raises(InputError, match="not a valid safetensors file"):
            load_tensors(tmp_path / "cut.safetensors")
    with pytest.raises(InputError, match="file not found"):
        load_tensors(tmp_path / "none.safetensors")


def test_sha256_array_sees_dtype_shape_and_values():
    a = np.arange(6, dtype=np.int64)
    h = sha256_array(a)
    assert h == sha256_array(a.copy()) and len(h) == 64
    assert h != sha256_array(a.reshape(2, 3))
    assert h != sha256_array(a.astype(np.int32))
    assert h != sha256_array(np.r_[a[:5], 7])
    assert sha256_array(a[::2]) == sha256_array(np.ascontiguousarray(a[::2]))


def _npy(path, array):
    np.save(path, array, allow_pickle=True)
    return path


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


def _dir(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "none.npy", "features file not found"),
    (lambda d: _dir(d / "dir.npy"), "is a directory"),
    (lambda d: _npy(d / "x.npy", np.zeros(3)).rename(d / "x.csv"), r"must be a .npy file \(got .csv\)"),
    (lambda d: _file(d / "e.npy", b""), r"not a .npy file \(no NumPy header; empty file\)"),
    (lambda d: _file(d / "t.npy", b"1,2,3\n"), r"not a .npy file \(no NumPy header\)"),
    (lambda d: _npy(d / "o.npy", np.array([{"a": 1}, None], dtype=object)), "holds Python objects"),
])
def test_load_array_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        load_array(make(tmp_path), what="features")


def test_load_array_truncated(tmp_path):
    path = _npy(tmp_path / "x.npy", np.arange(1000.0))
    raw = path.read_bytes()
    for cut in (10, 100, len(raw) - 8):
        path.write_bytes(raw[:cut])
        with pytest.raises(InputError, match=r"features file .*x.npy (is not a valid|cannot be read as) .npy"):
            load_array(path, what="features")


def test_write_json_is_strict_json(tmp_path):
    assert finite_or_none(float("nan")) is None and finite_or_none(2.5) == 2.5 and finite_or_none("x") == "x"
    path = tmp_path / "m.json"
    write_json(path, {"auroc": float("nan"), "nested": [1.5, float("inf"), {"x": -float("inf")}], "n": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(path) == {"auroc": None, "nested": [1.5, None, {"x": None}], "n": 3}
