"""Devices: resolve_device, CPU no-ops, the [runtime] config section, the device through training and
prediction (CPU results unchanged), the shipped `simclr-cifar10` weights and their export, gpu.py."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.config import Config
from lra_diffusion.device import (
    amp_dtype,
    autocast_context,
    batches_to_device,
    needs_grad_scaler,
    resolve_device,
    to_device,
)
from lra_diffusion.encoders import SimCLREncoder, get_encoder, load_encoder, pretrain_simclr
from lra_diffusion.encoders.simclr import (
    MAX_SHIPPED_BYTES,
    WEIGHTS_ENV,
    SimCLRCIFAR10Encoder,
    SimCLRNet,
    export_weights,
    shipped_weights_path,
)
from lra_diffusion.errors import InputError
from lra_diffusion.estimator import LRAClassifier
from lra_diffusion.evaluate import predict_y0
from lra_diffusion.retrieval import knn
from lra_diffusion.train import train

from conftest import TINY, make_blobs

CPU = torch.device("cpu")
runner = CliRunner()
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ---- resolve_device and the CPU no-ops --------------------------------------------------------------


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == resolve_device(None) == resolve_device(CPU) == CPU
    assert resolve_device(" CPU ") == CPU
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == CPU
    with pytest.raises(InputError, match=r"'cuda' asked for but CUDA is not available .*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda:1")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match=r"'cuda:2': no such GPU; this machine has 2 \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    for bad in ("gpu", "cpu:1", "cuda:", "cuda:x", "auto:0", ""):
        with pytest.raises(InputError, match=r"unknown device .*auto \| cpu \| cuda \| cuda:<index>"):
            resolve_device(bad)


@no_cuda
def test_cuda_request_without_cuda_names_the_reason():
    with pytest.raises(InputError, match="CUDA is not available") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)


def test_autocast_and_copies_are_no_ops_on_cpu():
    assert amp_dtype(CPU) is None and not needs_grad_scaler(CPU, True)
    for enabled in (True, False):
        ctx = autocast_context(CPU, enabled)
        assert isinstance(ctx, contextlib.nullcontext)
        with ctx:
            a = torch.randn(4, 4)
            assert (a @ a).dtype == torch.float32
    t = torch.arange(6.0)
    assert to_device(t, CPU) is t and to_device(t, None) is t
    assert torch.equal(to_device(np.arange(3), CPU), torch.arange(3))
    parts = list(batches_to_device(torch.arange(10), 4, CPU))
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(batches_to_device(torch.zeros(0, 3), 4, CPU)) == []


# ---- the [runtime] section ----------------------------------------------------------------------------


def test_runtime_section(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[runtime]\ndevice = "cuda:1"\namp = true\n')
    cfg = Config.from_toml(path)  # a GPU config loads on any machine: only its spelling is checked
    assert cfg.runtime.device == "cuda:1" and cfg.runtime.amp and not cfg.runtime.compile
    assert Config().runtime.device == "cpu" and not Config().runtime.amp
    assert "runtime" in cfg.to_dict() and "runtime" not in cfg.experiment_dict()
    assert cfg.experiment_dict() == Config().experiment_dict()
    with pytest.raises(InputError, match=r"runtime.device must be auto \| cpu"):
        Config().replace(runtime={"device": "tpu"})
    with pytest.raises(InputError, match=r"unknown config key\(s\) \['dev'\] in \[runtime\]"):
        Config.from_dict({"runtime": {"dev": "cpu"}})


# ---- the device through training and prediction: CPU unchanged -----------------------------------------


def _fit(config: Config, **kw):
    X, y = make_blobs()
    return train(X, y, num_classes=3, config=config, seed=0, progress=False, **kw)


def _same_model(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cpu_runtime_is_bit_identical_and_amp_is_a_no_op_on_cpu():
    base = Config.from_dict(TINY)
    ref = _fit(base)
    for runtime in ({"device": "cpu"}, {"device": "cpu", "amp": True}):
        other = _fit(base.replace(runtime=runtime))
        _same_model(ref.model, other.model)
        assert other.history == ref.history
    assert next(ref.model.parameters()).device == CPU
    X, _ = make_blobs()
    torch.testing.assert_close(predict_y0(ref.model, X, base.diffusion, device=CPU),
                               predict_y0(ref.model, X, base.diffusion), rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(predict_y0(ref.model, X, base.diffusion, stochastic=True, generator=g1, device=CPU),
                               predict_y0(ref.model, X, base.diffusion, stochastic=True, generator=g2),
                               rtol=0, atol=0)
    for metric in ("euclidean", "cosine"):
        a, b = knn(X, 5, metric=metric, backend="torch"), knn(X, 5, metric=metric, backend="torch", device=CPU)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_resume_ignores_runtime_settings(tmp_path):
    cfg = Config.from_dict(TINY).replace(train={"checkpoint_every": 4})
    full = _fit(cfg)
    _fit(cfg, checkpoint_dir=tmp_path)
    sorted(tmp_path.glob("ckpt-*.safetensors"))[-1].unlink()  # as if killed before the last checkpoint
    resumed = _fit(cfg.replace(runtime={"amp": True, "device": "cpu"}), checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from is not None
    _same_model(full.model, resumed.model)


@no_cuda
def test_gpu_runtime_without_cuda_fails_before_training():
    with pytest.raises(InputError, match="CUDA is not available"):
        _fit(Config.from_dict(TINY).replace(runtime={"device": "cuda"}))
    X, y = make_blobs()
    with pytest.raises(InputError, match="CUDA is not available"):
        LRAClassifier(config=TINY, device="cuda").fit(X, y)


def test_estimator_device_is_a_runtime_choice(tmp_path):
    X, y = make_blobs()
    ref = LRAClassifier(config=TINY, random_state=0).fit(X, y)
    est = LRAClassifier(config=TINY, random_state=0, device="cpu").fit(X, y, run_dir=tmp_path / "run")
    assert est.config_.runtime.device == "cpu"
    np.testing.assert_array_equal(est.predict_proba(X), ref.predict_proba(X))
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "device" not in info["params"]
    # a run whose config names a GPU loads onto the CPU unless told otherwise
    info["config"]["runtime"]["device"] = "cuda:3"
    (tmp_path / "run" / "config.json").write_text(json.dumps(info))
    loaded = LRAClassifier.load(tmp_path / "run")
    assert loaded.device is None and loaded.config_.runtime.device == "cpu"
    np.testing.assert_array_equal(loaded.predict(X), ref.predict(X))
    assert LRAClassifier.load(tmp_path / "run", device="cpu").device == "cpu"


TOML = '[diffusion]\ntimesteps = 50\nddim_steps = 5\n[model]\nfeature_dim = 16\n[retrieval]\nk = 5\n[train]\nepochs = 2\nbatch_size = 32\n'


def test_cli_fit_and_predict_device(tmp_path):
    X, y = make_blobs()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "c.toml").write_text(TOML)
    common = ["fit", "--features", tmp_path / "X.npy", "--labels", tmp_path / "y.npy", "--config",
              tmp_path / "c.toml", "--quiet"]
    res = runner.invoke(app, [str(a) for a in [*common, "--out", tmp_path / "run", "--device", "cpu"]])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "run"), "--features", str(tmp_path / "X.npy"),
                              "--out", str(tmp_path / "p.npy"), "--device", "auto" if not torch.cuda.is_available() else "cpu"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "p.npy").shape == (len(X),)
    if not torch.cuda.is_available():
        res = runner.invoke(app, [str(a) for a in [*common, "--out", tmp_path / "gpu", "--device", "cuda"]])
        assert res.exit_code == 2 and "CUDA is not available" in res.output
        assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "gpu").exists()
    res = runner.invoke(app, [str(a) for a in [*common, "--out", tmp_path / "bad", "--device", "gpu"]])
    assert res.exit_code == 2 and "unknown device 'gpu'" in res.output


# ---- simclr-cifar10: the shipped weights ------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(4, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(32, 16, 16, 3))
    return np.clip(base[np.arange(32) % 4] + noise, 0, 255).astype(np.uint8)


def _small_trained(seed: int = 1) -> SimCLREncoder:
    enc = SimCLREncoder(arch="resnet18", width=8, random_state=seed)
    enc._trained = True  # random weights stand in for pretrained ones
    return enc


def test_missing_shipped_weights_fail_fast_with_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nothing.safetensors"))
    assert shipped_weights_path() == tmp_path / "nothing.safetensors"
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        get_encoder("simclr-cifar10")
    assert time.perf_counter() - t0 < 1.0
    message = str(e.value)
    assert "\n" not in message and "not shipped yet" in message and "nothing.safetensors" in message
    assert "lra pretrain simclr" in message and "--device cuda" in message and "--export" in message
    res = runner.invoke(app, ["embed", "--encoder", "simclr-cifar10", "--dataset", "npy", "--root", str(tmp_path),
                              "--out", str(tmp_path / "f.npy")])
    assert res.exit_code == 2 and "not shipped yet" in res.output and len(res.output.strip().splitlines()) == 1
    from lra_diffusion.pipeline import make_encoder  # `lra run --encoder simclr-cifar10` too

    with pytest.raises(InputError, match="not shipped yet"):
        make_encoder("simclr-cifar10")
    monkeypatch.delenv(WEIGHTS_ENV)
    assert shipped_weights_path().parts[-2:] == ("models", "simclr-cifar10.safetensors")
    assert shipped_weights_path().parent.parent == Path(__file__).resolve().parents[1]  # the repository


@pytest.mark.floats
def test_export_round_trip_float16(tmp_path, images, monkeypatch):
    enc = _small_trained()
    info = export_weights(enc, tmp_path / "w.safetensors", metadata={"epochs": 3, "note": "test"})
    raw = (tmp_path / "w.safetensors").read_bytes()
    assert info["sha256"] == hashlib.sha256(raw).hexdigest() and info["bytes"] == len(raw)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert meta["arch"] == "resnet18" and meta["width"] == "8" and meta["epochs"] == "3" and meta["note"] == "test"
    assert dtypes == {torch.float16, torch.int64}  # num_batches_tracked stays an integer
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w.safetensors"))
    shipped = get_encoder("simclr-cifar10")  # architecture from the file's metadata
    assert isinstance(shipped, SimCLRCIFAR10Encoder) and shipped.dim == 64 and shipped.width == 8
    a, b = enc.encode(images), shipped.encode(images)
    assert b.shape == a.shape and b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=5e-3)  # float16 weights, float32 arithmetic
    assert (a * b).sum(1).min() > 0.9999  # cosine similarity of the unit features
    # saved with a run and reloaded without the shipped file
    shipped.save(tmp_path / "saved")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "gone.safetensors"))
    again = load_encoder(tmp_path / "saved")
    assert isinstance(again, SimCLRCIFAR10Encoder) and again.fingerprint() == shipped.fingerprint()
    np.testing.assert_array_equal(again.encode(images), b)  # same batch as b: same bits after a reload


def test_full_size_export_fits_the_25_mb_budget(tmp_path):
    enc = SimCLREncoder(arch="resnet18")  # CIFAR ResNet-18, width 64, with its projection head
    enc._trained = True
    info = export_weights(enc, tmp_path / "simclr-cifar10.safetensors")
    assert 20e6 < info["bytes"] <= MAX_SHIPPED_BYTES


def test_unreadable_weights_file_is_one_clear_line(tmp_path):
    lfs = tmp_path / "simclr-cifar10.safetensors"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 23000000\n")
    with pytest.raises(InputError, match="not a readable safetensors file.*git lfs pull") as e:
        get_encoder("simclr-cifar10", weights=lfs)
    assert "\n" not in str(e.value)


def test_pretrain_time_limit_stops_on_a_checkpoint_and_continues(tmp_path, images):
    kw = dict(arch="resnet18", width=8, batch_size=16, epochs=3, checkpoint_dir=tmp_path, log=lambda m: None)
    first = pretrain_simclr(images, time_limit=0.0, **kw)  # one epoch always runs, then the limit stops it
    assert len(first.history_) == 1
    done = pretrain_simclr(images, **kw)
    assert [h["epoch"] for h in done.history_] == [1, 2, 3]


def test_cli_pretrain_export_then_embed(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.integers(0, 256, (32, 10, 10, 3), dtype=np.uint8))
    out = tmp_path / "models" / "simclr-cifar10.safetensors"
    res = runner.invoke(app, ["pretrain", "simclr", "--dataset", "npy", "--root", str(tmp_path), "--out",
                              str(tmp_path / "run"), "--width", "8", "--batch-size", "16", "--epochs", "1",
                              "--device", "auto" if not torch.cuda.is_available() else "cpu", "--quiet",
                              "--export", str(out)])
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in res.output and "after epoch 1/1" in res.output
    res = runner.invoke(app, ["embed", "--encoder", "simclr-cifar10", "-o", f"weights={out}", "--dataset", "npy",
                              "--root", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--quiet",
                              "--out", str(tmp_path / "f.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "f.npy").shape == (32, 64)
    res = runner.invoke(app, ["pretrain", "simclr", "--dataset", "npy", "--root", str(tmp_path), "--out",
                              str(tmp_path / "run"), "--export", str(tmp_path / "w.pt")])
    assert res.exit_code == 2 and "must end in .safetensors" in res.output


def test_simclr_net_keys_are_what_export_writes():
    enc = _small_trained()
    assert set(SimCLRNet("resnet18", width=8).state_dict()) == set(enc.state_tensors())


# ---- benchmarks/gpu.py -----------------------------------------------------------------------------------


def test_gpu_benchmark_quick_cpu_run(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_benchmark", path)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    result = gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "gpu.json")])
    for key in ("pretrain_images_per_s", "train_samples_per_s", "ddim_samples_per_s", "knn_seconds", "fit_seconds"):
        assert result[key] > 0, key
    assert result["device"].startswith("CPU") and result["quick"]
    assert json.loads((tmp_path / "gpu.json").read_text())["train_step_ms"] > 0
    assert "| LRA training" in gpu.markdown(result)
