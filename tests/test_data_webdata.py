"""Food-101N / Food-101, Clothing1M, mini-WebVision and the ILSVRC2012 val subset, each on a tiny
fixture laid out exactly like the official release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra_diffusion.data import (
    CLOTHING1M_CLASSES,
    Clothing1M,
    Food101,
    Food101N,
    ILSVRC12Val,
    MiniWebVision,
    load_images,
    read_webvision_synsets,
)
from lra_diffusion.errors import InputError


def _img(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 7, 3), value, np.uint8)).save(path, format="JPEG", quality=95)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------------------------------
# Food-101N and Food-101
# ------------------------------------------------------------------------------------------------
FOOD = ["apple_pie", "baby_back_ribs", "baklava"]


@pytest.fixture()
def food(tmp_path):
    n = tmp_path / "Food-101N_release"
    _write(n / "meta" / "classes.txt", "class_name\n" + "\n".join(FOOD) + "\n")
    keys = ["apple_pie/0a1.jpg", "baklava/ff2.jpg", "baby_back_ribs/c3.jpg", "apple_pie/d4.jpg"]
    _write(n / "meta" / "imagelist.tsv", "class_name/key\n" + "\n".join(keys) + "\n")
    _write(n / "meta" / "verified_train.tsv",
           "class_name/key\tverification_label\napple_pie/0a1.jpg\t1\nbaklava/ff2.jpg\t0\n")
    _write(n / "meta" / "verified_val.tsv", "class_name/key\tverification_label\napple_pie/d4.jpg\t1\n")
    for v, k in enumerate(keys):
        _img(n / "images" / k, 40 * v)
    f = tmp_path / "food-101"
    _write(f / "meta" / "classes.txt", "\n".join(FOOD) + "\n")
    _write(f / "meta" / "labels.txt", "Apple pie\nBaby back ribs\nBaklava\n")
    _write(f / "meta" / "test.txt", "baklava/101\napple_pie/102\n")
    _write(f / "meta" / "train.txt", "baby_back_ribs/103\n")
    for v, k in enumerate(["baklava/101", "apple_pie/102", "baby_back_ribs/103"]):
        _img(f / "images" / f"{k}.jpg", 200 - 50 * v)
    return tmp_path


def test_food101n_train_and_verified_splits(food):
    ds = Food101N(food)  # the parent folder works; so does Food-101N_release itself
    assert ds.classes == FOOD and len(ds) == 4
    assert ds.labels.tolist() == [0, 2, 1, 0]
    assert ds.paths[1] == "images/baklava/ff2.jpg"
    np.testing.assert_allclose(load_images(ds, progress=False)[:, 3, 3, 0], [0, 40, 80, 120], atol=3)
    vt = Food101N(food / "Food-101N_release", split="verified_train")
    assert vt.verified.tolist() == [True, False] and vt.labels.tolist() == [0, 2]
    assert Food101N(food, split="verified_val").verified.tolist() == [True]


def test_food101_test_split_shares_class_ids(food):
    train = Food101N(food)
    test = Food101(food, split="test", classes=train.classes)
    assert test.labels.tolist() == [2, 0] and test.paths == ["images/baklava/101.jpg",
                                                            "images/apple_pie/102.jpg"]
    assert Food101(food / "food-101", split="train").labels.tolist() == [1]
    with pytest.raises(InputError, match="names different classes"):
        Food101(food, classes=["apple_pie", "pizza", "baklava"])


def test_food_errors(food, tmp_path):
    (food / "Food-101N_release" / "images" / "baklava" / "ff2.jpg").unlink()
    with pytest.raises(InputError, match=r"missing image .*baklava/ff2.jpg \(listed in .*imagelist.tsv"):
        Food101N(food)
    with pytest.warns(UserWarning, match="ff2.jpg"):
        ds = Food101N(food, on_error="skip")
    assert ds.indices.tolist() == [0, 2, 3]
    _write(food / "Food-101N_release" / "meta" / "imagelist.tsv", "class_name/key\npizza/1.jpg\n")
    with pytest.raises(InputError, match=r"imagelist.tsv line 2: 'pizza/1.jpg'"):
        Food101N(food)
    with pytest.raises(InputError, match="not in the Food-101N format: meta/classes.txt not found"):
        Food101N(tmp_path / "food-101" / "images")
    with pytest.raises(InputError, match="split='val'"):
        Food101N(food, split="val")


# ------------------------------------------------------------------------------------------------
# Clothing1M
# ------------------------------------------------------------------------------------------------
@pytest.fixture(params=["", "annotations"])
def clothing(tmp_path, request):
    root = tmp_path / "clothing1m"
    ann = root / request.param
    noisy = {"images/0/00/a.jpg": 3, "images/0/01/b.jpg": 13, "images/1/00/c.jpg": 0,
             "images/1/02/d.jpg": 5}
    clean = {"images/0/01/b.jpg": 12, "images/2/00/e.jpg": 7, "images/2/00/f.jpg": 1,
             "images/2/01/g.jpg": 9}
    _write(ann / "noisy_label_kv.txt", "".join(f"{k} {v}\n" for k, v in noisy.items()))
    _write(ann / "clean_label_kv.txt", "".join(f"{k} {v}\n" for k, v in clean.items()))
    _write(ann / "noisy_train_key_list.txt", "images/1/00/c.jpg\nimages/0/01/b.jpg\nimages/0/00/a.jpg\n")
    _write(ann / "clean_train_key_list.txt", "images/0/01/b.jpg\n")
    _write(ann / "clean_val_key_list.txt", "images/2/00/f.jpg\nimages/2/00/e.jpg\n")
    _write(ann / "clean_test_key_list.txt", "images/2/01/g.jpg\n")
    _write(ann / "category_names_eng.txt", "\n".join(CLOTHING1M_CLASSES) + "\n")
    for v, k in enumerate(sorted({*noisy, *clean})):
        _img(root / k, 30 * v)
    return root, ann


def test_clothing1m_splits(clothing):
    root, ann = clothing
    tr = Clothing1M(root)
    assert tr.classes == list(CLOTHING1M_CLASSES) and tr.num_classes == 14
    assert tr.paths == ["images/1/00/c.jpg", "images/0/01/b.jpg", "images/0/00/a.jpg"]
    assert tr.labels.tolist() == [0, 13, 3] and tr.clean_labels.tolist() == [-1, 12, -1]
    assert tr[1][0].shape == (6, 7, 3)
    val = Clothing1M(root, split="clean_val")
    assert val.labels.tolist() == [1, 7]
    assert Clothing1M(root, split="clean_test").labels.tolist() == [9]
    assert Clothing1M(root, split="clean_train").labels.tolist() == [12]
    (ann / "noisy_train_key_list.txt").unlink()  # then every key of noisy_label_kv.txt, in order
    assert Clothing1M(root).labels.tolist() == [3, 13, 0, 5]
    sub = root / "subset.txt"
    sub.write_text("images/1/02/d.jpg\n")
    assert Clothing1M(root, key_list=sub).labels.tolist() == [5]


def test_clothing1m_errors(clothing, tmp_path):
    root, ann = clothing
    (ann / "clean_test_key_list.txt").write_text("images/9/99/zzz.jpg\n")
    with pytest.raises(InputError, match=r"clean_test_key_list.txt line 1: key images/9/99/zzz.jpg has no "
                                         r"label in .*clean_label_kv.txt"):
        Clothing1M(root, split="clean_test")
    (ann / "noisy_label_kv.txt").write_text("images/0/00/a.jpg 14\n")
    with pytest.raises(InputError, match=r"noisy_label_kv.txt line 1: label 14 is outside 0..13"):
        Clothing1M(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not in the Clothing1M format: noisy_label_kv.txt not found"):
        Clothing1M(tmp_path / "empty")
    with pytest.raises(InputError, match="Clothing1M directory not found"):
        Clothing1M(tmp_path / "nothing_here")


# ------------------------------------------------------------------------------------------------
# mini-WebVision and ILSVRC2012 val
# ------------------------------------------------------------------------------------------------
SYNSETS = ["n01440764 tench, Tinca tinca", "n01443537 goldfish, Carassius auratus",
           "n01484850 great white shark"]


@pytest.fixture()
def webvision(tmp_path):
    root = tmp_path / "webvision"
    _write(root / "info" / "synsets.txt", "\n".join(SYNSETS) + "\n")
    train = [("google/q0001/00000001.jpg", 0), ("google/q0002/00000003.jpg", 1),
             ("google/q0003/00000002.jpg", 2), ("google/q0001/00000007.jpg", 0)]
    _write(root / "info" / "train_filelist_google.txt", "".join(f"{p} {y}\n" for p, y in train))
    _write(root / "info" / "train_filelist_flickr.txt", "flickr/q0001/1.jpg 0\n")
    val = [("val000001.jpg", 2), ("val000002.jpg", 1), ("val000003.jpg", 0)]
    _write(root / "info" / "val_filelist.txt", "".join(f"{p} {y}\n" for p, y in val))
    for v, (p, _) in enumerate(train):
        _img(root / p, 20 * v)
    for v, (p, _) in enumerate(val):
        _img(root / "val_images_256" / p, 20 * v)
    return root


def test_mini_webvision_keeps_first_classes(webvision):
    tr = MiniWebVision(webvision, num_classes=2)
    assert tr.paths == ["google/q0001/00000001.jpg", "google/q0002/00000003.jpg",
                        "google/q0001/00000007.jpg"]
    assert tr.labels.tolist() == [0, 1, 0] and tr.indices.tolist() == [0, 1, 2]
    assert tr.classes == ["n01440764", "n01443537"] == tr.synsets
    va = MiniWebVision(webvision, split="val", num_classes=2)
    assert va.paths == ["val_images_256/val000002.jpg", "val_images_256/val000003.jpg"]
    assert va.labels.tolist() == [1, 0]
    assert len(MiniWebVision(webvision)) == 4  # default 50 classes keeps all three here
    assert read_webvision_synsets(webvision)[1][1] == "goldfish, Carassius auratus"


def test_mini_webvision_errors(webvision, tmp_path):
    (webvision / "info" / "val_filelist.txt").write_text("val000001.jpg x\n")
    with pytest.raises(InputError, match=r"val_filelist.txt line 1: label 'x' is not an integer"):
        MiniWebVision(webvision, split="val")
    (webvision / "google" / "q0002" / "00000003.jpg").unlink()
    with pytest.raises(InputError, match=r"00000003.jpg \(listed in .*train_filelist_google.txt\)"):
        MiniWebVision(webvision)
    with pytest.raises(InputError, match="not in the WebVision format"):
        MiniWebVision(tmp_path)


def test_ilsvrc12_val_folder_and_loc_csv_layouts_agree(webvision, tmp_path):
    # 1) one folder per synset
    folders = tmp_path / "imagenet_val"
    files = {"n01443537": ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000001.JPEG"],
             "n01440764": ["ILSVRC2012_val_00000003.JPEG"],
             "n01484850": ["ILSVRC2012_val_00000002.JPEG"],
             "n09999999": ["ILSVRC2012_val_00000005.JPEG"]}
    for s, names in files.items():
        for name in names:
            _img(folders / s / name, 10)
    a = ILSVRC12Val(folders, synsets=webvision / "info" / "synsets.txt", num_classes=2)
    assert [p.split("/")[-1][-10:] for p in a.paths] == ["00001.JPEG", "00003.JPEG", "00004.JPEG"]
    assert a.labels.tolist() == [1, 0, 1] and a.classes == ["n01440764", "n01443537"]
    # 2) a flat folder with LOC_val_solution.csv in its parent
    flat = tmp_path / "ilsvrc" / "val"
    rows = []
    for s, names in files.items():
        for name in names:
            _img(flat / name, 10)
            rows.append(f"{name[:-5]},{s} 1 2 3 4 {s} 5 6 7 8")
    _write(tmp_path / "ilsvrc" / "LOC_val_solution.csv", "ImageId,PredictionString\n" + "\n".join(rows))
    b = ILSVRC12Val(flat, synsets=[s.split()[0] for s in SYNSETS], num_classes=2)
    assert [p[-10:] for p in b.paths] == ["00001.JPEG", "00003.JPEG", "00004.JPEG"]
    assert b.labels.tolist() == a.labels.tolist()
    (flat / "ILSVRC2012_val_00000003.JPEG").unlink()
    with pytest.raises(InputError, match=r"missing image .*00000003.JPEG \(listed in .*LOC_val_solution"):
        ILSVRC12Val(flat, synsets=[s.split()[0] for s in SYNSETS], num_classes=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected synset sub-folders"):
        ILSVRC12Val(tmp_path / "empty", synsets=["n01440764"], num_classes=1)
    with pytest.raises(InputError, match="fewer than num_classes=50"):
        ILSVRC12Val(flat, synsets=["n01440764"])
