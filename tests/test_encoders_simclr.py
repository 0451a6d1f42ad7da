"""SimCLR: official checkpoint layout, our safetensors, augmentations, NT-Xent, pretraining + resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion.encoders import SimCLREncoder, get_encoder, load_encoder, pretrain_simclr
from lra_diffusion.encoders.simclr import (
    SimCLRNet,
    nt_xent,
    official_to_ours,
    ours_to_official,
    simclr_augment,
)
from lra_diffusion.errors import InputError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """48 tiny images from 4 colour/texture families, so views have something in common."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(4, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(48, 16, 16, 3))
    return np.clip(base[np.arange(48) % 4] + noise, 0, 255).astype(np.uint8)


def _trained(arch: str = "resnet18", seed: int = 1) -> SimCLREncoder:
    enc = SimCLREncoder(arch=arch, width=8, random_state=seed)
    enc._trained = True  # random weights stand in for a checkpoint
    return enc


@pytest.mark.floats
@pytest.mark.parametrize("arch,dim", [("resnet18", 64), ("resnet50", 256)])
def test_official_layout_loads_strictly_and_gives_identical_features(tmp_path, images, arch, dim):
    ours = _trained(arch)
    official = ours_to_official(ours.net_.state_dict())
    # the official layout: trunk in an nn.Sequential `f` (0 conv1, 1 bn1, 3..6 layers), head in `g`
    assert "f.0.weight" in official and "f.3.0.conv1.weight" in official
    assert "f.6.1.bn1.running_var" in official and "g.3.bias" in official
    assert not any(k.startswith(("conv1", "layer", "head")) for k in official)
    path = tmp_path / "SimCLR_128_cifar10.pt"
    torch.save({f"module.{k}": v for k, v in official.items()}, path)  # DataParallel prefix too
    loaded = SimCLREncoder(arch=arch, width=8, weights=path, random_state=99)
    a, b = ours.encode(images[:6]), loaded.encode(images[:6])
    assert a.shape == (6, dim) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)  # L2-normalised


def test_wrong_layout_names_missing_and_unexpected_keys(tmp_path):
    state = ours_to_official(_trained("resnet18").net_.state_dict())
    state.pop("f.1.weight")
    state["f.9.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"1 missing keys \[bn1.weight\].*1 unexpected keys \[f.9"):
        SimCLREncoder(arch="resnet18", width=8, weights=path)
    # a ResNet-50 checkpoint given to a ResNet-18 encoder
    torch.save(ours_to_official(_trained("resnet50").net_.state_dict()), path)
    with pytest.raises(InputError, match="missing keys"):
        SimCLREncoder(arch="resnet18", width=8, weights=path)


def test_renaming_round_trips():
    state = SimCLRNet("resnet18", width=8).state_dict()
    assert official_to_ours(ours_to_official(state)).keys() == state.keys()


@pytest.mark.floats
def test_safetensors_and_save_load_round_trip(tmp_path, images):
    from safetensors.torch import save_file

    enc = _trained()
    save_file(enc.net_.state_dict(), str(tmp_path / "w.safetensors"))
    same = get_encoder("simclr", arch="resnet18", width=8, weights=tmp_path / "w.safetensors")
    np.testing.assert_array_equal(enc.encode(images[:4]), same.encode(images[:4]))
    enc.save(tmp_path / "saved")
    again = load_encoder(tmp_path / "saved")
    np.testing.assert_array_equal(enc.encode(images[:4]), again.encode(images[:4]))
    assert again.fingerprint() == enc.fingerprint() != _trained(seed=2).fingerprint()


def test_unfitted_encoder_explains_how_to_get_weights(images):
    with pytest.raises(InputError, match="lra pretrain simclr"):
        SimCLREncoder(arch="resnet18", width=8).encode(images[:2])
    with pytest.raises(InputError, match="does not exist"):
        SimCLREncoder(weights="/no/such/SimCLR_128_cifar10.pt")
    with pytest.raises(InputError, match="unknown arch"):
        SimCLREncoder(arch="resnet34")


@pytest.mark.floats
def test_augment_is_seeded_and_keeps_range(images):
    x = torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float() / 255
    a = simclr_augment(x, torch.Generator().manual_seed(0))
    b = simclr_augment(x, torch.Generator().manual_seed(0))
    c = simclr_augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # with all randomness switched off the view is the image itself (identity crop, no jitter)
    same = simclr_augment(x, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1),
                          p_jitter=0.0, p_gray=0.0)
    flipped = torch.where((same - x).abs().amax((1, 2, 3), keepdim=True) < 1e-5, x, x.flip(3))
    torch.testing.assert_close(same, flipped, atol=1e-5, rtol=0)


def test_nt_xent_prefers_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(16, 8, generator=g))
    shuffled = nt_xent(z, z[torch.randperm(16, generator=g)])
    assert aligned < shuffled
    # with orthogonal-ish random pairs the loss is about log(2B - 1)
    rand = nt_xent(torch.randn(256, 64, generator=g), torch.randn(256, 64, generator=g), 1.0)
    assert abs(float(rand) - np.log(511)) < 0.1


@pytest.mark.floats
def test_pretrain_loss_decreases_and_resume_is_exact(tmp_path, images):
    common = dict(arch="resnet18", width=8, batch_size=16, lr=3e-3, seed=0, log=lambda m: None)
    full = pretrain_simclr(images, epochs=4, checkpoint_dir=tmp_path / "full", **common)
    losses = [h["loss"] for h in full.history_]
    assert losses[-1] < losses[0]
    # stop after 2 epochs, then ask for 4: the run continues from the checkpoint
    pretrain_simclr(images, epochs=2, checkpoint_dir=tmp_path / "split", **common)
    resumed = pretrain_simclr(images, epochs=4, checkpoint_dir=tmp_path / "split", **common)
    assert [h["loss"] for h in resumed.history_] == losses
    for k, v in full.net_.state_dict().items():
        assert torch.equal(v, resumed.net_.state_dict()[k]), k
    # the trained encoder is saved next to the checkpoint and reloads to the same features
    again = load_encoder(tmp_path / "full" / "encoder")
    np.testing.assert_array_equal(again.encode(images[:4]), full.encode(images[:4]))


def test_pretrain_reports_knn_monitor(images):
    labels = np.arange(len(images)) % 4
    enc = pretrain_simclr(images, arch="resnet18", width=8, batch_size=16, epochs=1,
                          monitor=(labels, images[:8], labels[:8]), log=lambda m: None)
    assert 0.0 <= enc.history_[0]["knn_acc"] <= 1.0


def test_checkpoint_with_other_settings_is_refused(tmp_path, images):
    kw = dict(arch="resnet18", width=8, batch_size=16, epochs=1, log=lambda m: None)
    pretrain_simclr(images, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(InputError, match="other settings"):
        pretrain_simclr(images, checkpoint_dir=tmp_path, **{**kw, "lr": 0.1})
