"""k-means features (Coates et al. 2011): the convolutional encoding equals the textbook pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lra_diffusion.encoders import KMeansEncoder, get_encoder, load_encoder
from lra_diffusion.encoders.kmeans import normalize_patches, pooling_matrix, spherical_init_kmeans
from lra_diffusion.errors import InputError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(60, 12, 12, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted(images) -> KMeansEncoder:
    return KMeansEncoder(n_centroids=16, n_patches=3000, kmeans_iters=5, n_stats=60).fit(images)


def reference_features(enc: KMeansEncoder, images: np.ndarray) -> np.ndarray:
    """Unfold every patch, normalise, whiten, triangle-activate, sum the quadrants (float64)."""
    w = enc.patch_size
    c = enc.centroids_.double().numpy()
    p_mat = enc.whiten_.double().numpy()
    m = enc.patch_mean_.double().numpy()
    out = []
    for im in images.astype(np.float64):
        rows = im.shape[0] - w + 1
        cols = im.shape[1] - w + 1
        patches = np.array(
            [im[r : r + w, q : q + w].transpose(2, 0, 1).ravel() for r in range(rows)
             for q in range(cols)]
        )
        white = (normalize_patches(patches, enc.norm_eps) - m) @ p_mat
        z = np.sqrt(((white[:, None, :] - c[None]) ** 2).sum(-1))
        act = np.maximum(0.0, z.mean(1, keepdims=True) - z).reshape(rows, cols, -1)
        hr, hc = (rows + 1) // 2, (cols + 1) // 2  # MATLAB round(7/2) = 4
        quads = [act[:hr, :hc], act[:hr, hc:], act[hr:, :hc], act[hr:, hc:]]
        out.append(np.concatenate([q.sum((0, 1)) for q in quads]))
    return np.sqrt(out) if enc.sqrt_pool else np.array(out)


@pytest.mark.floats
def test_convolutional_encoding_matches_reference(fitted, images):
    ref = reference_features(fitted, images[:5])
    got = fitted._pooled(images[:5]).double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_whitening_decorrelates_patches(fitted, images):
    patches = fitted._random_patches(images, np.random.default_rng(1))
    white = (normalize_patches(patches, fitted.norm_eps) - fitted.patch_mean_.numpy()) @ (
        fitted.whiten_.double().numpy()
    )
    cov = np.cov(white, rowvar=False)
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 0.1 * np.diag(cov).max()


@pytest.mark.floats
def test_encode_shapes_standardisation_and_pca(fitted, images):
    feats = fitted.encode(images)
    assert feats.shape == (60, 4 * 16) and feats.dtype == np.float32
    # standardised with statistics of the fit images (here: all of them)
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-3)
    pca = KMeansEncoder(n_centroids=16, n_patches=3000, kmeans_iters=2, pca_dim=5, n_stats=60)
    out = pca.fit(images).encode(images)
    assert out.shape == (60, 5) and pca.dim == 5
    assert np.all(np.diff(out.var(0)) <= 1e-4)  # components ordered by variance
    grid3 = KMeansEncoder(n_centroids=8, n_patches=1000, kmeans_iters=1, pool_grid=3,
                          sqrt_pool=True, standardize=False).fit(images)
    assert grid3.encode(images[:2]).shape == (2, 9 * 8)
    assert (grid3.encode(images[:2]) >= 0).all()


@pytest.mark.floats
def test_fit_is_deterministic_and_seeded(images):
    kw = dict(n_centroids=8, n_patches=2000, kmeans_iters=3, n_stats=30)
    a = KMeansEncoder(random_state=3, **kw).fit(images)
    b = KMeansEncoder(random_state=3, **kw).fit(images)
    c = KMeansEncoder(random_state=4, **kw).fit(images)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    np.testing.assert_array_equal(a.encode(images), b.encode(images))


@pytest.mark.floats
def test_save_load_round_trip(tmp_path, fitted, images):
    fitted.save(tmp_path)
    again = load_encoder(tmp_path)
    np.testing.assert_array_equal(again.encode(images), fitted.encode(images))  # same batches: same bits
    assert again.fingerprint() == fitted.fingerprint()
    other = load_encoder(tmp_path, batch_size=7)
    assert isinstance(other, KMeansEncoder) and other.batch_size == 7
    assert other.fingerprint() == fitted.fingerprint()
    # other batches may round differently in the last bits (docs/reliability.md)
    np.testing.assert_allclose(other.encode(images), fitted.encode(images), rtol=1e-5, atol=1e-5)


def test_features_separate_textures():
    """Stripes vs. checkerboards with random colours and phases: k-NN on features separates them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    imgs, labels = [], []
    for i in range(80):
        phase, period = rng.integers(0, 4), rng.integers(3, 5)
        pattern = ((xx + phase) // period) % 2 if i % 2 else (((xx + phase) // period
                                                              + (yy // period)) % 2)
        colour = rng.integers(60, 200, 3)
        img = 128 + (pattern[..., None] - 0.5) * colour + rng.normal(0, 8, (16, 16, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(i % 2)
    imgs, labels = np.stack(imgs), np.array(labels)
    enc = KMeansEncoder(n_centroids=32, n_patches=5000, kmeans_iters=10).fit(imgs[:40])
    f = torch.from_numpy(enc.encode(imgs))
    nearest = torch.cdist(f[40:], f[:40]).argmin(1).numpy()
    assert (labels[:40][nearest] == labels[40:]).mean() >= 0.9


def test_pooling_matrix_rounds_like_matlab():
    r = pooling_matrix(27, 27, 2, "cpu").reshape(27, 27, 4)
    assert r[:14, :14, 0].all() and r[14:, 14:, 3].all() and r.sum() == 27 * 27
    assert r[13, 13, 0] == 1 and r[14, 14, 3] == 1


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres.repeat(200, 1) + 0.1 * torch.randn(600, 2, generator=g)
    found = spherical_init_kmeans(x, 3, 10, torch.Generator().manual_seed(1))
    assert torch.cdist(found, centres).min(0).values.max() < 0.1


def test_bad_options_and_inputs(images):
    with pytest.raises(InputError, match="n_centroids"):
        get_encoder("kmeans", n_centroids=0)
    with pytest.raises(InputError, match="must be fitted"):
        KMeansEncoder().encode(images)
    with pytest.raises(InputError, match="smaller than patch_size"):
        KMeansEncoder(n_patches=100, n_centroids=4).fit(images[:, :4, :4])
    with pytest.raises(InputError, match="uint8"):
        KMeansEncoder(n_patches=100, n_centroids=4).fit(images.astype(np.float32))
