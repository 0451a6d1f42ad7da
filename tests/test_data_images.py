"""ImageDataset, decode_image, load_images and drop_unreadable on tiny generated images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lra_diffusion.data import ImageDataset, decode_image, drop_unreadable, load_images
from lra_diffusion.errors import InputError


def _write_images(root, n, size=(8, 6), fmt="PNG"):
    """n lossless images whose top-left pixel encodes their position."""
    paths = []
    for i in range(n):
        arr = np.full((size[1], size[0], 3), 10 * i, dtype=np.uint8)
        arr[0, 0] = (i, 255 - i, 7)
        name = f"img{i:03d}.png"
        Image.fromarray(arr).save(root / name, format=fmt)
        paths.append(name)
    return paths


def test_file_backed_dataset_yields_image_label_index(tmp_path):
    paths = _write_images(tmp_path, 5)
    ds = ImageDataset(root=tmp_path, labels=[0, 1, 2, 0, 1], classes=["a", "b", "c"], paths=paths)
    img, label, index = ds[3]
    assert img.dtype == np.uint8 and img.shape == (6, 8, 3)
    assert tuple(img[0, 0]) == (3, 252, 7)
    assert (label, index) == (0, 3)
    assert len(ds) == 5 and ds.num_classes == 3 and ds.labels.dtype == np.int64
    with pytest.raises(IndexError):
        ds[5]


def test_load_images_keeps_order_with_threads_and_without(tmp_path):
    paths = _write_images(tmp_path, 23)
    ds = ImageDataset(root=tmp_path, labels=np.zeros(23, int), classes=["x"], paths=paths)
    serial = load_images(ds, progress=False, num_workers=0, chunk_size=4)
    threaded = load_images(ds, progress=False, num_workers=3, chunk_size=4)
    assert serial.shape == (23, 6, 8, 3) and serial.dtype == np.uint8
    np.testing.assert_array_equal(serial, threaded)
    np.testing.assert_array_equal(serial[:, 0, 0, 0], np.arange(23))


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.new("L", (4, 4), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "g.png").shape == (4, 4, 3)
    assert tuple(decode_image(tmp_path / "a.png")[0, 0]) == (1, 2, 3)


def test_exif_orientation_is_applied(tmp_path):
    # a 4 x 2 landscape photo stored with Orientation 6 (camera turned): shown as a 2 x 4 portrait
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[0, 0, 0] = 255  # red; the stored top-left pixel ends at the top-right after a 90-degree clockwise turn
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "turned.png", exif=exif)
    img = decode_image(tmp_path / "turned.png")
    assert img.shape == (4, 2, 3)
    assert tuple(img[0, 1]) == (255, 0, 0) and img.sum() == 255


def test_subset_keeps_canonical_indices_and_with_labels_validates(tmp_path):
    paths = _write_images(tmp_path, 6)
    ds = ImageDataset(root=tmp_path, labels=[0, 1, 0, 1, 0, 1], classes=["a", "b"], paths=paths)
    sub = ds.subset([4, 1])
    assert [sub[k][2] for k in range(2)] == [4, 1]
    assert tuple(sub[0][0][0, 0])[:1] == (4,)
    relabelled = sub.with_labels([1, 0])
    assert relabelled.labels.tolist() == [1, 0] and sub.labels.tolist() == [0, 1]
    with pytest.raises(InputError, match="2 labels given for a dataset of 6"):
        ds.with_labels([0, 1])
    with pytest.raises(InputError, match=r"0\.\.1"):
        ds.with_labels([0, 1, 2, 0, 0, 0])


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    paths = _write_images(tmp_path, 3)
    (tmp_path / "img001.png").write_bytes(b"definitely not an image")
    Image.new("RGB", (8, 6)).save(tmp_path / "trunc.jpg", quality=90)
    data = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    ds = ImageDataset(root=tmp_path, labels=[0] * 5, classes=["a"],
                      paths=[*paths, "gone.png", "trunc.jpg"])
    with pytest.raises(InputError, match="img001.png"):
        ds[1]
    with pytest.raises(InputError, match="image file not found: .*gone.png"):
        ds[3]
    with pytest.raises(InputError, match="trunc.jpg"):
        ds[4]
    with pytest.raises(InputError, match="img001.png"):
        load_images(ds, progress=False, num_workers=0)
    with pytest.warns(UserWarning, match="skipped 3 image"):
        ok = drop_unreadable(ds)
    assert ok.indices.tolist() == [0, 2]
    assert load_images(ok, progress=False).shape == (2, 6, 8, 3)


def test_load_images_rejects_mixed_sizes(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "b.png")
    ds = ImageDataset(root=tmp_path, labels=[0, 0], classes=["a"], paths=["a.png", "b.png"])
    with pytest.raises(InputError, match="b.png has shape"):
        load_images(ds, progress=False)


def test_array_backed_dataset_and_constructor_checks(tmp_path):
    arr = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    ds = ImageDataset(root=tmp_path, labels=[1, 0], classes=["a", "b"], array=arr)
    assert ds.paths is None
    np.testing.assert_array_equal(ds[1][0], arr[1])
    assert load_images(ds, progress=False) is not None
    with pytest.raises(InputError, match="outside 0..1"):
        ImageDataset(root=tmp_path, labels=[2, 0], classes=["a", "b"], array=arr)
    with pytest.raises(InputError, match="3 entries but there are 2 labels"):
        ImageDataset(root=tmp_path, labels=[0, 0], classes=["a"], paths=["x", "y", "z"])
    with pytest.raises(InputError, match="uint8"):
        ImageDataset(root=tmp_path, labels=[0, 0], classes=["a"], array=arr.astype(np.float32))
