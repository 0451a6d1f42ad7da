"""Registry, pixels, bring-your-own features, and the shared encoder behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from lra_diffusion.encoders import ENCODERS, PixelEncoder, get_encoder, load_encoder
from lra_diffusion.errors import InputError


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)


def test_registry_lists_every_encoder_and_rejects_unknown_names():
    assert {"pixels", "kmeans", "simclr", "clip", "dinov2", "precomputed"} <= set(ENCODERS)
    with pytest.raises(InputError, match="unknown encoder 'resnet'; choose one of .*clip, dinov2, .*kmeans"):
        get_encoder("resnet")
    with pytest.raises(InputError, match="pixels"):
        get_encoder("pixels", n_centroids=3)


@pytest.mark.floats
def test_pixels_standardise_and_pca(images):
    enc = get_encoder("pixels").fit(images)
    feats = enc.encode(images)
    assert feats.shape == (40, 108) and enc.dim == 108
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(feats.std(0, ddof=1), 1, atol=1e-4)
    pca = get_encoder("pixels", pca_dim=4).fit(images)
    z = pca.encode(images)
    assert z.shape == (40, 4)
    # PCA of standardised pixels: orthogonal directions, decreasing variance
    assert np.all(np.diff(z.var(0)) <= 1e-5)
    np.testing.assert_allclose(np.corrcoef(z.T) - np.eye(4), 0, atol=1e-4)


@pytest.mark.floats
def test_pixels_reject_other_image_sizes_and_save_load(tmp_path, images):
    enc = PixelEncoder(pca_dim=3).fit(images)
    with pytest.raises(InputError, match="fitted on 108 values"):
        enc.encode(images[:, :4, :4].copy())
    again = load_encoder(enc.save(tmp_path))
    np.testing.assert_array_equal(again.encode(images), enc.encode(images))
    assert again.fingerprint() == enc.fingerprint() != PixelEncoder(pca_dim=2).fit(
        images).fingerprint()


@pytest.mark.floats
def test_encode_accepts_a_dataset_and_batches_do_not_matter(tmp_path, images):
    from lra_diffusion.data import ImageDataset

    enc = PixelEncoder().fit(images)
    ds = ImageDataset(root=tmp_path, labels=np.zeros(40, int), classes=["a"], array=images)
    np.testing.assert_array_equal(enc.encode(ds), enc.encode(images))
    np.testing.assert_allclose(enc.encode(images, batch_size=7), enc.encode(images), rtol=1e-6)


def test_bad_images_are_input_errors(images):
    enc = PixelEncoder().fit(images)
    with pytest.raises(InputError, match="uint8"):
        enc.encode(images.astype(np.float32))
    with pytest.raises(InputError, match=r"shape \(N, H, W, 3\)"):
        enc.encode(images[..., :1])
    with pytest.raises(InputError, match="must be fitted"):
        PixelEncoder().encode(images)
    with pytest.raises(InputError, match="no saved encoder"):
        load_encoder("/nonexistent/dir")


@pytest.mark.floats
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
def test_precomputed_features_load_and_check_length(tmp_path, images, suffix):
    feats = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    path = tmp_path / f"f{suffix}"
    if suffix == ".npy":
        np.save(path, feats)
    elif suffix == ".npz":
        np.savez(path, feats=feats)
    else:
        from safetensors.numpy import save_file

        save_file({"feats": feats}, str(path))
    enc = get_encoder("precomputed", path=path)
    assert enc.dim == 5
    np.testing.assert_array_equal(enc.encode(images), feats)
    with pytest.raises(InputError, match="has 40 rows but the dataset has 39 images"):
        enc.encode(images[:39])


def test_precomputed_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        get_encoder("precomputed", path=tmp_path / "none.npy")
    np.save(tmp_path / "a.npy", np.zeros(5, np.float32))
    with pytest.raises(InputError, match="2-D"):
        get_encoder("precomputed", path=tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.zeros((5, 2), np.int64))
    with pytest.raises(InputError, match="floating point"):
        get_encoder("precomputed", path=tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.full((5, 2), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        get_encoder("precomputed", path=tmp_path / "c.npy")
    np.savez(tmp_path / "d.npz", a=np.zeros((5, 2)), b=np.zeros((5, 2)))
    with pytest.raises(InputError, match=r"2 arrays \['a', 'b'\]; choose one with key"):
        get_encoder("precomputed", path=tmp_path / "d.npz")
    assert get_encoder("precomputed", path=tmp_path / "d.npz", key="b").dim == 2
    (tmp_path / "e.txt").write_text("1 2")
    with pytest.raises(InputError, match="must end in one of"):
        get_encoder("precomputed", path=tmp_path / "e.txt")
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        get_encoder("precomputed", path=tmp_path / "f.npz")


@pytest.mark.floats
def test_precomputed_through_lra_embed(tmp_path):
    from typer.testing import CliRunner

    from lra_diffusion.cli import app

    rng = np.random.default_rng(0)
    np.save(tmp_path / "test.npy", rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8))
    feats = rng.normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "mine.npy", feats)
    args = ["embed", "--encoder", "precomputed", "-o", f"path={tmp_path / 'mine.npy'}",
            "--dataset", "npy", "--root", str(tmp_path), "--split", "test", "--cache-dir",
            str(tmp_path / "cache"), "--quiet", "--out", str(tmp_path / "out.npy")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), feats)
    res = CliRunner().invoke(app, [*args[:-2], "--out", str(tmp_path / "o2.npy"), "-o", "dev=1"])
    assert res.exit_code == 2 and "dev" in res.output
