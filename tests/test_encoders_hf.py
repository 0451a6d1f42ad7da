"""CLIP and DINOv2 from local weights only: tiny random configs saved the way real checkpoints are."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lra_diffusion.encoders import CLIPEncoder, DINOv2Encoder, get_encoder, load_encoder  # noqa: E402
from lra_diffusion.encoders import hf as hf_module  # noqa: E402
from lra_diffusion.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 20, 24, 3), dtype=np.uint8)


def _tiny_clip(directory):
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=12,
    )
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(directory)
    return directory


def _tiny_dinov2(directory):
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        image_size=16, patch_size=8,
    )
    transformers.Dinov2Model(cfg).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    return _tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.mark.floats
def test_clip_gives_the_image_embeds_of_the_model(clip_dir, images):
    enc = get_encoder("clip", model=clip_dir)
    feats = enc.encode(images, batch_size=2)
    assert feats.shape == (5, 12) and enc.dim == 12 and feats.dtype == np.float32
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        want = model(pixel_values=enc.preprocess(images, torch.device("cpu"))).image_embeds
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.floats
def test_dinov2_gives_the_cls_token(dino_dir, images):
    enc = get_encoder("dinov2", model=dino_dir)
    feats = enc.encode(images)
    assert feats.shape == (5, 32)
    model = transformers.Dinov2Model.from_pretrained(dino_dir).eval()
    with torch.no_grad():
        out = model(pixel_values=enc.preprocess(images, torch.device("cpu")))
    np.testing.assert_allclose(feats, out.last_hidden_state[:, 0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.floats
def test_preprocessing_resizes_crops_and_normalises(clip_dir, dino_dir, images):
    clip = CLIPEncoder(model=clip_dir)
    x = clip.preprocess(images, torch.device("cpu"))
    assert x.shape == (5, 3, 16, 16)  # shorter side -> 16, centre crop 16x16
    flat = np.full((1, 20, 24, 3), 255, np.uint8)
    np.testing.assert_allclose(
        clip.preprocess(flat, torch.device("cpu"))[0, :, 0, 0].numpy(),
        (1 - np.array(CLIPEncoder.default_mean)) / np.array(CLIPEncoder.default_std), rtol=1e-5,
    )
    dino = DINOv2Encoder(model=dino_dir)
    assert dino.resize_to == 18 and dino.preprocess(images, torch.device("cpu")).shape[-1] == 16


def test_preprocessing_is_close_to_the_hf_pil_processor(images):
    """Our preprocessing against transformers' PIL processor at real CLIP sizes (224)."""
    proc = transformers.CLIPImageProcessorPil()
    want = proc(images=list(images), return_tensors="pt")["pixel_values"]
    enc = object.__new__(CLIPEncoder)
    enc.resize_to, enc.crop_size = 224, 224
    enc.mean, enc.std = CLIPEncoder.default_mean, CLIPEncoder.default_std
    got = enc.preprocess(images, torch.device("cpu"))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_loading_is_offline(clip_dir, monkeypatch):
    seen = {}
    original = transformers.CLIPVisionModelWithProjection.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.CLIPVisionModelWithProjection, "from_pretrained", spy)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    CLIPEncoder(model=clip_dir)
    assert seen.get("local_files_only") is True
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.floats
def test_hub_id_resolves_in_the_local_cache(clip_dir, tmp_path, monkeypatch, images):
    snapshot = tmp_path / "hub" / "models--acme--tiny-clip" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for f in clip_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = CLIPEncoder(model="acme/tiny-clip")
    assert enc.model_dir_ == snapshot
    np.testing.assert_array_equal(enc.encode(images), CLIPEncoder(model=clip_dir).encode(images))


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_missing_weights_fail_fast_with_instructions(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="huggingface-cli download .* --local-dir DIR") as err:
        get_encoder(name)  # the default hub id, not in the (empty) cache
    assert time.perf_counter() - t0 < 1.0
    assert "\n" not in str(err.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # config without weights
    with pytest.raises(InputError, match="no weights found"):
        get_encoder(name, model=tmp_path / "half")


@pytest.mark.floats
def test_fingerprint_follows_the_weights(clip_dir, tmp_path, images):
    a = CLIPEncoder(model=clip_dir)
    b = CLIPEncoder(model=_tiny_clip(tmp_path / "same"))
    assert a.fingerprint() == b.fingerprint()
    other = tmp_path / "other"
    torch.manual_seed(1)
    transformers.CLIPVisionModelWithProjection(a.net_.config).save_pretrained(other)
    assert CLIPEncoder(model=other).fingerprint() != a.fingerprint()
    a.save(tmp_path / "saved")
    np.testing.assert_array_equal(load_encoder(tmp_path / "saved").encode(images), a.encode(images))


def test_no_torchvision_import():
    import sys

    assert "torchvision" not in sys.modules
    assert hf_module.WEIGHT_FILES[0] == "model.safetensors"


@pytest.mark.floats
def test_images_of_different_sizes_are_resized_each(clip_dir):
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (40, 18, 3), dtype=np.uint8)

    class Mixed:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return [small, tall, small][i], 0, i

    enc = CLIPEncoder(model=clip_dir)
    feats = enc.encode(Mixed(), batch_size=3)
    np.testing.assert_allclose(feats[0], enc.encode(small[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[1], enc.encode(tall[None])[0], rtol=1e-5, atol=1e-6)
