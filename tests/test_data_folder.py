"""ImageFolder trees and list files (whitespace and CSV), with their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra_diffusion.data import ImageFolder, ListFileDataset, load_images, read_list_file
from lra_diffusion.errors import InputError


def _img(path: Path, value: int, size=(5, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    _img(root / "dog" / "b.png", 11)
    _img(root / "dog" / "a.png", 10)
    _img(root / "cat" / "z.png", 1)
    _img(root / "cat" / "nested" / "y.png", 2)
    _img(root / "bird" / "x.PNG", 30)
    (root / "bird" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_image_folder_sorted_classes_and_stable_order(tree):
    ds = ImageFolder(tree)
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.paths == ["bird/x.PNG", "cat/nested/y.png", "cat/z.png", "dog/a.png", "dog/b.png"]
    assert ds.labels.tolist() == [0, 1, 1, 2, 2]
    images = load_images(ds, progress=False)
    assert images[:, 0, 0, 0].tolist() == [30, 2, 1, 10, 11]
    img, label, index = ds[3]
    assert img.shape == (4, 5, 3) and (label, index) == (2, 3)


def test_image_folder_explicit_classes(tree):
    ds = ImageFolder(tree, classes=["dog", "cat"])
    assert ds.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(InputError, match="class folder .*horse not found"):
        ImageFolder(tree, classes=["dog", "horse"])


def test_image_folder_format_errors(tmp_path, tree):
    with pytest.raises(InputError, match="image folder not found"):
        ImageFolder(tmp_path / "missing")
    flat = tmp_path / "flat"
    _img(flat / "a.png", 1)
    with pytest.raises(InputError, match=r"not an ImageFolder tree: expected one sub-folder per class"):
        ImageFolder(flat)
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match="class folder .*empty has no images"):
        ImageFolder(tree)


def test_image_folder_corrupt_file_raises_or_is_skipped(tree):
    (tree / "cat" / "z.png").write_bytes(b"junk")
    ds = ImageFolder(tree)
    with pytest.raises(InputError, match=r"cat/z.png"):
        load_images(ds, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 image\(s\): unreadable image .*z.png"):
        ok = ImageFolder(tree, on_error="skip")
    assert len(ok) == 4 and ok.indices.tolist() == [0, 1, 3, 4]
    assert load_images(ok, progress=False).shape == (4, 4, 5, 3)
    with pytest.raises(InputError, match="on_error='ignore' is not one of raise, skip"):
        ImageFolder(tree, on_error="ignore")


def test_whitespace_list_file_with_spaces_in_paths(tmp_path):
    _img(tmp_path / "imgs" / "a b.png", 5)
    _img(tmp_path / "imgs" / "c.png", 6)
    lst = tmp_path / "train.txt"
    lst.write_text("# path label\nimgs/a b.png 2\n\nimgs/c.png\t0\n")
    ds = ListFileDataset(lst, num_classes=3)
    assert ds.paths == ["imgs/a b.png", "imgs/c.png"] and ds.labels.tolist() == [2, 0]
    assert ds.classes == ["0", "1", "2"] and ds.root == tmp_path
    assert ds[0][0][0, 0, 0] == 5


def test_csv_list_files_with_and_without_header(tmp_path):
    _img(tmp_path / "data" / "x.png", 1)
    _img(tmp_path / "data" / "y.png", 2)
    with_header = tmp_path / "lists" / "l.csv"
    with_header.parent.mkdir()
    with_header.write_text("index,label,path\n0,1,x.png\n1,0,y.png\n")
    ds = ListFileDataset(with_header, root=tmp_path / "data", classes=["neg", "pos"])
    assert ds.paths == ["x.png", "y.png"] and ds.labels.tolist() == [1, 0]
    assert ds.classes == ["neg", "pos"]
    no_header = tmp_path / "data" / "l.csv"
    no_header.write_text("x.png,0\ny.png,1\n")
    assert read_list_file(no_header)[1].tolist() == [0, 1]
    semi = tmp_path / "data" / "l.lst"
    semi.write_text("x.png;1\n")
    assert read_list_file(semi, delimiter=";")[0] == ["x.png"]


def test_list_file_errors_name_file_and_line(tmp_path):
    _img(tmp_path / "x.png", 1)
    lst = tmp_path / "l.txt"
    lst.write_text("x.png 0\nx.png cat\n")
    with pytest.raises(InputError, match=r"l.txt line 2: label 'cat' is not an integer"):
        ListFileDataset(lst)
    lst.write_text("x.png 0\nonlyonefield\n")
    with pytest.raises(InputError, match=r"l.txt line 2: expected 'relative/path label'"):
        ListFileDataset(lst)
    lst.write_text("x.png 0\nx.png 5\n")
    with pytest.raises(InputError, match=r"label 5 of x.png is outside 0..2"):
        ListFileDataset(lst, num_classes=3)
    lst.write_text("x.png 0\nmissing.png 1\nalso.png 1\n")
    with pytest.raises(InputError, match=r"missing image .*missing.png \(listed in .*l.txt\) \(and 1 more"):
        ListFileDataset(lst)
    with pytest.warns(UserWarning, match="skipped 2 image"):
        ds = ListFileDataset(lst, on_error="skip")
    assert ds.indices.tolist() == [0] and ds.labels.tolist() == [0]
    assert len(ListFileDataset(lst, check_exists=False)) == 3
    csvf = tmp_path / "l.csv"
    csvf.write_text("file,class\nx.png,0\n")
    with pytest.raises(InputError, match="header must name 'path' and 'label'"):
        ListFileDataset(csvf)
    with pytest.raises(InputError, match="list file not found"):
        ListFileDataset(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="no entries"):
        ListFileDataset(tmp_path / "empty.txt")
