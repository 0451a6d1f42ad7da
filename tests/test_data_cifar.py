"""CIFAR: the official python release (folder, .tar.gz, MD5, download), the shared JPEG copy, the
paper's protocol split; plus acceptance checks over the real shared data when it is present."""

from __future__ import annotations

import csv
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lra_diffusion.data.cifar as cifar_mod
from lra_diffusion.data import (
    CIFAR,
    CIFAR10_CLASSES,
    ImageDataset,
    SharedCIFAR10,
    check_md5,
    cifar_protocol_split,
    download_cifar,
    file_md5,
    load_images,
    load_shared_cifar10,
)
from lra_diffusion.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_CIFAR = SHARED / "cifar10"
needs_shared = pytest.mark.skipif(
    not (SHARED_CIFAR / "train.csv").is_file(),
    reason=f"shared data not found at {SHARED_CIFAR} (clone the repo with shared/ beside it)")


# ------------------------------------------------------------------------------------------------
# Official python release fixtures, written exactly as the release lays them out
# ------------------------------------------------------------------------------------------------
def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the release's (N, 3072) rows: all red, then green, then blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _dump(obj, path: Path, protocol: int) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cifar10_release(root: Path, *, per_batch: int = 3, protocol: int = 3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = _images(5 * per_batch, 1)
    test = _images(per_batch, 2)
    ytrain = (np.arange(5 * per_batch) * 7 + 3) % 10
    ytest = (np.arange(per_batch) * 3 + 1) % 10
    for k in range(5):
        sl = slice(k * per_batch, (k + 1) * per_batch)
        _dump({b"batch_label": f"training batch {k + 1} of 5".encode(), b"labels": ytrain[sl].tolist(),
               b"data": _rows(train[sl]), b"filenames": [b"x.png"] * per_batch},
              folder / f"data_batch_{k + 1}", protocol)
    _dump({b"batch_label": b"testing batch 1 of 1", b"labels": ytest.tolist(), b"data": _rows(test),
           b"filenames": [b"x.png"] * per_batch}, folder / "test_batch", protocol)
    _dump({b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
           b"num_vis": 3072}, folder / "batches.meta", protocol)
    return folder, train, ytrain, test, ytest


def make_cifar100_release(root: Path, *, n: int = 6):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = _images(n, 3), _images(n // 2, 4)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    coarse = [f"super{i:02d}".encode() for i in range(20)]
    ytrain = np.arange(n) * 17 % 100
    for name, x, y in (("train", train, ytrain), ("test", test, ytrain[: n // 2])):
        _dump({b"filenames": [b"f"] * len(x), b"batch_label": name.encode(), b"fine_labels": y.tolist(),
               b"coarse_labels": (y // 5).tolist(), b"data": _rows(x)}, folder / name, 3)
    _dump({b"fine_label_names": fine, b"coarse_label_names": coarse}, folder / "meta", 3)
    return folder, train, ytrain


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return archive


def test_cifar10_release_folder_gives_images_labels_in_batch_order(tmp_path):
    _, train, ytrain, test, ytest = make_cifar10_release(tmp_path)
    ds = CIFAR(tmp_path, split="train")
    assert len(ds) == 15 and ds.classes == list(CIFAR10_CLASSES) and ds.paths is None
    np.testing.assert_array_equal(load_images(ds, progress=False), train)
    np.testing.assert_array_equal(ds.labels, ytrain)
    img, label, index = ds[7]
    np.testing.assert_array_equal(img, train[7])
    assert (label, index) == (ytrain[7], 7)
    te = CIFAR(tmp_path / "cifar-10-batches-py", split="test")  # the extracted folder itself works
    np.testing.assert_array_equal(te.array, test)
    np.testing.assert_array_equal(te.labels, ytest)


def test_cifar10_release_tar_gz_reads_without_extracting(tmp_path):
    folder, train, ytrain, *_ = make_cifar10_release(tmp_path / "src")
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    ds = CIFAR(tmp_path, split="train")
    np.testing.assert_array_equal(ds.array, train)
    np.testing.assert_array_equal(ds.labels, ytrain)
    np.testing.assert_array_equal(CIFAR(archive).labels, ytrain)


def test_numpy1_protocol2_pickles_load(tmp_path):
    """The official files were pickled by Python 2 / NumPy 1 (numpy.core, protocol 2)."""
    folder, train, ytrain, *_ = make_cifar10_release(tmp_path, protocol=2)
    for f in folder.iterdir():
        f.write_bytes(f.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(CIFAR(tmp_path).array, train)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    _, train, ytrain = make_cifar100_release(tmp_path)
    ds = CIFAR(tmp_path, num_classes=100)
    assert ds.num_classes == 100 and ds.classes[3] == "class03"
    np.testing.assert_array_equal(ds.array, train)
    np.testing.assert_array_equal(ds.labels, ytrain)
    np.testing.assert_array_equal(ds.coarse_labels, ytrain // 5)
    assert ds.coarse_classes[1] == "super01"


def test_release_errors_are_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        CIFAR(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="does not hold the CIFAR-10 python release"):
        CIFAR(tmp_path / "empty")
    folder, *_ = make_cifar10_release(tmp_path / "bad")
    (folder / "data_batch_3").write_bytes(b"\x80\x03garbage")
    with pytest.raises(InputError, match="data_batch_3 is not a readable CIFAR batch"):
        CIFAR(tmp_path / "bad")
    with pytest.raises(InputError, match="split='val'"):
        CIFAR(tmp_path / "bad", split="val")
    with pytest.raises(InputError, match="num_classes=20"):
        CIFAR(tmp_path / "bad", num_classes=20)


def test_release_unpickler_refuses_arbitrary_objects(tmp_path):
    folder, *_ = make_cifar10_release(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(InputError, match="data_batch_1 .*unexpected object builtins.print"):
        CIFAR(tmp_path)


def test_md5_checks_on_local_files(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"hello cifar")
    import hashlib

    good = hashlib.md5(b"hello cifar").hexdigest()
    assert file_md5(f) == good
    check_md5(f, good.upper())
    with pytest.raises(InputError, match=r"checksum mismatch for .*blob.bin"):
        check_md5(f, "0" * 32)
    folder, *_ = make_cifar10_release(tmp_path / "src")
    _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(InputError, match="checksum mismatch"):
        CIFAR(tmp_path, check_integrity=True)  # our fixture is not the official archive


def test_download_fetches_verifies_and_never_refetches(tmp_path, monkeypatch):
    folder, train, *_ = make_cifar10_release(tmp_path / "src")
    payload = _tar(folder, tmp_path / "src" / "a.tar.gz").read_bytes()
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(cifar_mod.urllib.request, "urlopen", fake_urlopen)
    import hashlib

    patched = dict(cifar_mod._RELEASES[10], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(cifar_mod._RELEASES, 10, patched)
    ds = CIFAR(tmp_path / "dl", download=True)
    np.testing.assert_array_equal(ds.array, train)
    assert calls == [patched["url"]]
    CIFAR(tmp_path / "dl", download=True)  # already there: no second fetch
    assert len(calls) == 1
    # a corrupt archive on disk is detected, not silently used
    (tmp_path / "dl" / "cifar-10-python.tar.gz").write_bytes(payload[:-100])
    with pytest.raises(InputError, match="checksum mismatch"):
        download_cifar(tmp_path / "dl")


# ------------------------------------------------------------------------------------------------
# The shared JPEG copy: a tiny fixture in the same format
# ------------------------------------------------------------------------------------------------
def make_shared_copy(root: Path, *, n_train: int = 12, n_test: int = 5):
    """cifar10-jpeg.tar.gz + train.csv/test.csv, with a canonical order unlike the tar order."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expected = {}
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for split, n in (("train", n_train), ("test", n_test)):
            labels = rng.integers(0, 10, size=n)
            rows = []
            counters: dict[int, int] = {}
            for i, y in enumerate(labels):
                k = counters.setdefault(int(y), 0)
                counters[int(y)] += 1
                path = f"{split}/{CIFAR10_CLASSES[y]}/{k:04d}.jpg"
                img = np.full((32, 32, 3), 0, np.uint8)
                img[..., 0] = 20 * i
                img[..., 1] = int(y) * 25
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                rows.append((i, path, int(y), buf.getvalue()))
            for _, path, _, data in sorted(rows, key=lambda r: r[1]):  # archive in path order
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            with open(root / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["index", "path", "label"])
                w.writerows((i, p, y) for i, p, y, _ in rows)
            expected[split] = (labels, [r[1] for r in rows])
    return expected


def test_shared_copy_reads_in_csv_order(tmp_path):
    expected = make_shared_copy(tmp_path / "cifar10")
    images, labels = load_shared_cifar10(tmp_path / "cifar10", "train", progress=False)
    np.testing.assert_array_equal(labels, expected["train"][0])
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    # red channel encodes the canonical position (JPEG is lossy: allow a little)
    np.testing.assert_allclose(images[:, 16, 16, 0].astype(int), 20 * np.arange(12), atol=3)
    ds = SharedCIFAR10(tmp_path, split="test")  # the parent folder works too
    assert ds.paths == expected["test"][1] and ds[2][2] == 2


def test_shared_copy_from_extracted_folder(tmp_path):
    make_shared_copy(tmp_path)
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz") as tf:
        tf.extractall(tmp_path, filter="data")
    a = load_images(SharedCIFAR10(tmp_path), progress=False)
    (tmp_path / "cifar10-jpeg.tar.gz").unlink()
    b = load_images(SharedCIFAR10(tmp_path), progress=False)
    np.testing.assert_array_equal(a, b)


def test_shared_copy_bad_input(tmp_path):
    make_shared_copy(tmp_path)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    # a row whose path is missing from the archive names that path
    bad = lines.copy()
    bad[3] = "2,train/cat/9999.jpg,3"
    (tmp_path / "train.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(InputError, match=r"missing: train/cat/9999.jpg"):
        SharedCIFAR10(tmp_path)
    with pytest.warns(UserWarning, match="9999.jpg"):
        ds = SharedCIFAR10(tmp_path, on_error="skip")
    assert len(ds) == 11 and 2 not in ds.indices.tolist()
    # a label that disagrees with the class folder
    bad = lines.copy()
    i, p, y = bad[1].split(",")
    bad[1] = f"{i},{p},{(int(y) + 1) % 10}"
    (tmp_path / "train.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(InputError, match=r"train.csv line 2: path .* is not in the folder of its label"):
        SharedCIFAR10(tmp_path)
    (tmp_path / "train.csv").write_text("idx,file,y\n")
    with pytest.raises(InputError, match="header 'index,path,label'"):
        SharedCIFAR10(tmp_path)
    (tmp_path / "train.csv").write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(InputError, match="index 1, expected 0"):
        SharedCIFAR10(tmp_path)
    with pytest.raises(InputError, match="not the shared CIFAR-10 folder"):
        SharedCIFAR10(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# Protocol split
# ------------------------------------------------------------------------------------------------
def test_protocol_split_sizes_indices_and_noisy_labels(tmp_path):
    n = 50
    arr = np.zeros((n, 2, 2, 3), np.uint8)
    train = ImageDataset(root=tmp_path, labels=np.arange(n) % 10, classes=CIFAR10_CLASSES, array=arr)
    test = ImageDataset(root=tmp_path, labels=np.arange(7) % 10, classes=CIFAR10_CLASSES, array=arr[:7])
    noisy = (np.arange(45) + 1) % 10
    split = cifar_protocol_split(train, test, noisy_labels=noisy, num_train=45)
    assert (len(split.train), len(split.val), len(split.test)) == (45, 5, 7)
    np.testing.assert_array_equal(split.train.labels, noisy)
    np.testing.assert_array_equal(split.val.labels, np.arange(45, 50) % 10)  # clean
    assert split.val[0][2] == 45
    other = cifar_protocol_split(train, test, num_train=40, num_val=3)
    assert other.val.indices.tolist() == [40, 41, 42]
    with pytest.raises(InputError, match="noisy labels have length 44, expected 45"):
        cifar_protocol_split(train, test, noisy_labels=noisy[:44], num_train=45)
    with pytest.raises(InputError, match="num_val=9"):
        cifar_protocol_split(train, test, num_train=45, num_val=9)


# ------------------------------------------------------------------------------------------------
# The real shared data (acceptance 1 and the 60,000-image decode)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_train():
    images, labels = load_shared_cifar10(SHARED_CIFAR, "train", progress=False)
    test_images, test_labels = load_shared_cifar10(SHARED_CIFAR, "test", progress=False)
    return images, labels, test_images, test_labels


@needs_shared
def test_shared_train_labels_equal_cifar10n_clean_and_images_follow_train_csv(shared_train):
    images, labels, test_images, test_labels = shared_train
    assert images.shape == (50_000, 32, 32, 3) and test_images.shape == (10_000, 32, 32, 3)
    cn = np.loadtxt(SHARED_CIFAR / "noisy_labels" / "cifar10n.csv", delimiter=",", skiprows=1,
                    dtype=np.int64)
    np.testing.assert_array_equal(cn[:, 0], np.arange(50_000))
    np.testing.assert_array_equal(labels, cn[:, 1])
    assert np.bincount(test_labels).tolist() == [1000] * 10
    # Independent reference: every archive member, decoded in train.csv order.
    with open(SHARED_CIFAR / "train.csv", newline="") as f:
        order = [row["path"] for row in csv.DictReader(f)]
    with tarfile.open(SHARED_CIFAR / "cifar10-jpeg.tar.gz") as tf:
        blobs = {m.name: tf.extractfile(m).read() for m in tf if m.name.startswith("train/")}
    reference = np.stack([np.asarray(Image.open(io.BytesIO(blobs[p])).convert("RGB")) for p in order])
    np.testing.assert_array_equal(images, reference)


@needs_shared
def test_shared_protocol_split_lines_up_with_pmd_file(shared_train):
    images, labels, *_ = shared_train
    train = ImageDataset(root=SHARED_CIFAR, labels=labels, classes=CIFAR10_CLASSES, array=images)
    test = SharedCIFAR10(SHARED_CIFAR, split="test")
    pmd = np.load(SHARED_CIFAR / "noisy_labels" / "pmd" / "cifar10-1-0.35.npy")
    split = cifar_protocol_split(train, test, noisy_labels=pmd)
    assert (len(split.train), len(split.val), len(split.test)) == (45_000, 5_000, 10_000)
    assert split.val.indices[0] == 45_000 and split.train.indices[-1] == 44_999
    # PMD noise on aligned labels is 35.0 %; misaligned labels would be ~90 % different.
    assert abs(np.mean(split.train.labels != labels[:45_000]) - 0.350) < 0.001
