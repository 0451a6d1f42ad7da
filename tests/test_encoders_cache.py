"""The feature cache: computed once, invalidated by any change of input, resumable, memory-mapped."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lra_diffusion.encoders import dataset_fingerprint, embed, fit_cached, get_encoder
from lra_diffusion.encoders.base import Encoder
from lra_diffusion.errors import InputError


class CountingEncoder(Encoder):
    """Per-channel means and a scaled max; counts the images it encodes; can fail on demand."""

    name = "counting"

    def __init__(self, scale: float = 1.0, fail_after: int | None = None):
        self.scale = scale
        self.fail_after = fail_after
        self.encoded = 0
        self.batch_size = 5

    @property
    def dim(self) -> int:
        return 4

    def config(self):
        return {"scale": self.scale}

    def _encode_batch(self, batch):
        if self.fail_after is not None and self.encoded >= self.fail_after:
            raise KeyboardInterrupt  # an interrupted run
        self.encoded += len(batch)
        x = torch.from_numpy(batch).float()
        return torch.cat([x.mean((1, 2)), self.scale * x.amax((1, 2, 3))[:, None]], 1)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(23, 8, 8, 3), dtype=np.uint8)


@pytest.mark.floats
def test_second_call_does_no_encoding(tmp_path, images):
    enc = CountingEncoder()
    first = embed(enc, images, cache_dir=tmp_path, split="train", chunk_size=7)
    assert enc.encoded == 23
    again = CountingEncoder()
    second = embed(again, images, cache_dir=tmp_path, split="train", chunk_size=7)
    assert again.encoded == 0
    assert isinstance(second, np.memmap) and not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, CountingEncoder().encode(images), rtol=1e-6)


@pytest.mark.floats
@pytest.mark.parametrize(
    "change",
    ["pixel", "order", "encoder_state", "split", "transform", "dtype"],
)
def test_any_changed_input_invalidates(tmp_path, images, change):
    embed(CountingEncoder(), images, cache_dir=tmp_path, split="train")
    enc, imgs, kw = CountingEncoder(), images.copy(), {"split": "train"}
    if change == "pixel":
        imgs[5, 3, 3, 1] ^= 1
    elif change == "order":
        imgs = imgs[::-1].copy()
    elif change == "encoder_state":
        enc = CountingEncoder(scale=2.0)
    elif change == "split":
        kw["split"] = "test"
    elif change == "transform":
        kw["transform"] = "resize64"
    elif change == "dtype":
        kw["dtype"] = "float16"
    out = embed(enc, imgs, cache_dir=tmp_path, **kw)
    assert enc.encoded == 23
    np.testing.assert_allclose(out, enc.encode(imgs), rtol=1e-3)


@pytest.mark.floats
def test_interrupted_run_resumes_from_last_chunk(tmp_path, images):
    with pytest.raises(KeyboardInterrupt):
        embed(CountingEncoder(fail_after=15), images, cache_dir=tmp_path, chunk_size=5)
    [folder] = [p for p in (tmp_path / "counting").iterdir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["done"] == 15 and not manifest["complete"]
    assert not (folder / "features.npy").exists()
    enc = CountingEncoder()
    out = embed(enc, images, cache_dir=tmp_path, chunk_size=5)
    assert enc.encoded == 23 - 15  # only the missing chunks
    np.testing.assert_allclose(out, CountingEncoder().encode(images), rtol=1e-6)
    assert json.loads((folder / "manifest.json").read_text())["complete"]


@pytest.mark.floats
def test_float16_storage(tmp_path, images):
    out = embed(CountingEncoder(), images, cache_dir=tmp_path, dtype="float16")
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, CountingEncoder().encode(images), rtol=1e-3)
    with pytest.raises(InputError, match="dtype"):
        embed(CountingEncoder(), images, cache_dir=tmp_path, dtype="int8")


@pytest.mark.floats
def test_dataset_input_matches_array_and_fingerprints_content(tmp_path, images):
    from lra_diffusion.data import ImageDataset

    ds = ImageDataset(root=tmp_path, labels=np.zeros(23, int), classes=["a"], array=images)
    a = embed(CountingEncoder(), ds, cache_dir=tmp_path / "a")
    b = embed(CountingEncoder(), images, cache_dir=tmp_path / "b")
    np.testing.assert_array_equal(a, b)
    assert dataset_fingerprint(ds) != dataset_fingerprint(ds.subset(np.arange(1, 23)))

    class Plain:  # any (image, label, index) sequence works too
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i], 0, i

    np.testing.assert_array_equal(embed(CountingEncoder(), Plain(), cache_dir=tmp_path / "c"), b)
    assert dataset_fingerprint(Plain()) != dataset_fingerprint(images[::-1].copy())


@pytest.mark.floats
def test_two_processes_asking_for_the_same_features_compute_them_once(tmp_path, images, capfd):
    """Two jobs embedding the same images into one cache at once (here two threads, each with its own
    file lock handle, as two processes): the second waits for the first and reads its features; without
    the lock both wrote the one partial file and the second's move into place failed."""
    started = threading.Event()

    class Slow(CountingEncoder):
        def _encode_batch(self, batch):
            started.set()
            time.sleep(0.05)
            return super()._encode_batch(batch)

    encoders = [Slow(), Slow()]

    def run(i):
        if i:
            started.wait(10)  # the second asks while the first is computing
        return embed(encoders[i], images, cache_dir=tmp_path, split="train", chunk_size=7)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, [0, 1])
    assert [e.encoded for e in encoders] == [23, 0]
    np.testing.assert_array_equal(first, second)
    assert "waiting for another process writing the same cache entry" in capfd.readouterr().err


def test_fit_cached_fits_once(tmp_path, images):
    first = fit_cached(get_encoder("pixels", pca_dim=3), images, cache_dir=tmp_path)
    calls = []
    enc = get_encoder("pixels", pca_dim=3)
    enc.fit = lambda imgs: calls.append(1)  # would be called if the cache missed
    second = fit_cached(enc, images, cache_dir=tmp_path)
    assert calls == []
    np.testing.assert_array_equal(first.encode(images), second.encode(images))
    assert second.fingerprint() == first.fingerprint()


def test_key_not_label_decides_and_array_backed_dataset_shares_the_key(tmp_path, images):
    from lra_diffusion.data import ImageDataset

    embed(CountingEncoder(), images, cache_dir=tmp_path, dataset="a", split="train")
    ds = ImageDataset(root=tmp_path, labels=np.zeros(23, int), classes=["a"], array=images)
    assert dataset_fingerprint(ds) == dataset_fingerprint(images)
    enc = CountingEncoder()
    embed(enc, ds, cache_dir=tmp_path, dataset="b", split="train")
    assert enc.encoded == 0
