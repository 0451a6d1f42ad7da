"""`lra run` / `lra_diffusion.run` and `lra predict --images` on tiny generated image trees: every output,
reuse of cached features and of a finished fit, prediction on new images, and bad input (one line, exit 2,
before any encoder is fitted or any image encoded)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import lra_diffusion
from lra_diffusion import issues as issues_module
from lra_diffusion.cli import app
from lra_diffusion.config import Config
from lra_diffusion.encoders import PixelEncoder
from lra_diffusion.estimator import LRAClassifier
from lra_diffusion.issues import LabelIssues
from lra_diffusion.pipeline import apply_pca, fit_pca_cached, holdout_rows, predict_images
from lra_diffusion.sources import is_path_list, open_image_set, read_path_list

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/data/cifar10")
CLASSES = ("cat", "dog", "fox")
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
TINY = {
    "diffusion": {"timesteps": 50, "ddim_steps": 5},
    "model": {"feature_dim": 32},
    "retrieval": {"k": 3},
    "train": {"epochs": 4, "batch_size": 16},
}
TOML = "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kv.items()) for s, kv in TINY.items()) + "\n"


def write_tree(root: Path, per_class: int, *, seed: int, size: int = 8) -> list[tuple[str, int]]:
    """Class folders of small PNGs whose colour gives the class; returns (relative path, class id)."""
    rng = np.random.default_rng(seed)
    items = []
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(COLOURS[c] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
            items.append((f"{name}/{i:02d}.png", c))
    return items


@pytest.fixture()
def data(tmp_path) -> Path:
    """train/ (3 x 12 images), test/ (3 x 4), noisy.txt (every 4th label shifted), clean.txt, tiny.toml."""
    items = write_tree(tmp_path / "train", 12, seed=0)
    write_tree(tmp_path / "test", 4, seed=1)
    (tmp_path / "clean.txt").write_text("".join(f"{p} {c}\n" for p, c in items))
    noisy = [(p, (c + 1) % 3 if i % 4 == 0 else c) for i, (p, c) in enumerate(items)]
    (tmp_path / "noisy.txt").write_text("".join(f"{p} {c}\n" for p, c in noisy))
    (tmp_path / "tiny.toml").write_text(TOML)
    return tmp_path


def lra(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def run_cli(data: Path, out: Path, *extra):
    return lra("run", "--images", data / "train", "--labels", data / "noisy.txt", "--encoder", "pixels",
               "--out", out, "--config", data / "tiny.toml", "--cache-dir", data / "cache", "--quiet", *extra)


def forbid_long_work(monkeypatch) -> None:
    """Make fitting or running the encoder, and training, fail loudly (exit 1, not 2)."""
    def boom(*a, **k):
        raise AssertionError("long work started")

    monkeypatch.setattr(PixelEncoder, "fit", boom)
    monkeypatch.setattr(PixelEncoder, "_encode_batch", boom)
    monkeypatch.setattr(LRAClassifier, "fit", boom)


# ---- the Python call -------------------------------------------------------------------------------
def test_python_run_writes_every_output(data):
    out = data / "run"
    result = lra_diffusion.run(data / "train", labels=data / "noisy.txt", encoder="pixels", out=out,
                               test_images=data / "test", config=TINY, cache_dir=data / "cache", progress=False,
                               true_labels=data / "clean.txt")
    assert isinstance(result, lra_diffusion.RunResult)
    for name, path in result.paths.items():
        assert path.exists(), name
    assert not (out / "checkpoints").exists()  # removed once the fit is finished and recorded
    assert set(result.timings) == {"check", "decode", "encoder", "embed", "train", "evaluate", "issues", "report"}
    assert result.encoded and result.fitted_encoder and not result.reused_fit
    assert result.class_names == list(CLASSES) and result.feature_dim == 8 * 8 * 3
    assert 0 <= result.test_accuracy <= 1 and result.n_test == 12
    assert result.issue_metrics is not None and result.issue_metrics["errors"] == 9  # every 4th of 36
    # issues.csv: cleanlab's columns (LabelIssues reads it back) plus paths and class names
    rows = list(csv.DictReader((out / "issues.csv").open()))
    assert len(rows) == 36 and rows[0]["path"] == str(data / "train" / "cat" / "00.png")
    assert rows[0]["given_class"] == "dog" and rows[0]["true_label"] == "0"  # row 0 is a shifted label
    back = LabelIssues.from_csv(out / "issues.csv")
    np.testing.assert_array_equal(back.is_label_issue, result.issues.is_label_issue)
    html = (out / "report.html").read_text()
    assert 'id="fig-suspicious-images"' in html and "dog" in html
    # the run folder loads as an ordinary run and records the pipeline block
    info = json.loads((out / "config.json").read_text())
    assert info["pipeline"]["encoder"]["name"] == "pixels" and info["pipeline"]["class_names"] == list(CLASSES)
    clf = LRAClassifier.load(out)
    np.testing.assert_array_equal(clf.classes_, result.classifier.classes_)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.test_accuracy and metrics["label_issue_f1"] == result.issue_metrics["f1"]
    assert metrics["reused_fit"] is False and set(result.timings) - {"report"} == {k[8:] for k in metrics if k.startswith("seconds_")}
    assert "test accuracy" in result.summary() and str(out / "report.html") in result.summary()


# ---- acceptance 2: a second identical run does no encoding and no training -------------------------
def test_second_identical_run_reuses_features_and_fit(data, monkeypatch):
    out = data / "run"
    first = run_cli(data, out, "--test-images", data / "test")
    assert first.exit_code == 0, first.output
    issues_before = (out / "issues.csv").read_bytes()
    model_before = (out / "model.safetensors").read_bytes()
    forbid_long_work(monkeypatch)
    second = run_cli(data, out, "--test-images", data / "test")
    assert second.exit_code == 0, second.output
    assert "reused the finished fit" in second.stdout and "from the cache" in second.stdout
    assert (out / "issues.csv").read_bytes() == issues_before
    assert (out / "model.safetensors").read_bytes() == model_before


def test_python_rerun_reports_reuse(data, monkeypatch):
    kw = dict(labels=data / "noisy.txt", encoder="pixels", out=data / "run", config=TINY,
              cache_dir=data / "cache", progress=False)
    first = lra_diffusion.run(data / "train", **kw)
    forbid_long_work(monkeypatch)
    monkeypatch.setattr(issues_module, "find_label_issues", lambda *a, **k: 1 / 0)  # issues.csv is reused
    again = lra_diffusion.run(data / "train", **kw)
    assert again.reused_fit and not again.encoded and not again.fitted_encoder
    np.testing.assert_allclose(again.issues.label_quality, first.issues.label_quality, rtol=1e-5)
    np.testing.assert_array_equal(again.issues.is_label_issue, first.issues.is_label_issue)
    # other flag settings score again
    monkeypatch.undo()
    third = lra_diffusion.run(data / "train", **kw, noise_rate=0.25)
    assert third.reused_fit and third.issues.is_label_issue.sum() == 9


def test_changed_labels_need_overwrite_and_then_retrain(data):
    out = data / "run"
    assert run_cli(data, out).exit_code == 0
    text = (data / "noisy.txt").read_text().replace("cat/01.png 0", "cat/01.png 2")
    (data / "noisy.txt").write_text(text)
    res = run_cli(data, out)
    assert res.exit_code == 2 and "--overwrite" in res.stderr
    res = run_cli(data, out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert "trained on 36 images" in res.stdout


def test_unfinished_run_resumes_from_its_checkpoints(data, monkeypatch):
    out = data / "run"
    kw = dict(labels=data / "noisy.txt", encoder="pixels", out=out, config=TINY, cache_dir=data / "cache",
              progress=False)
    import lra_diffusion.pipeline as pipeline

    # as if killed after the last checkpoint, before the run was saved
    with monkeypatch.context() as m:
        m.setattr(pipeline, "save_encoder", lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            lra_diffusion.run(data / "train", **kw)
    for name in ("config.json", "model.safetensors", "metrics.json"):
        (out / name).unlink()
    assert any((out / "checkpoints").iterdir())
    again = lra_diffusion.run(data / "train", **kw)
    assert not again.reused_fit and again.classifier.fit_info_["resumed_from_step"] is not None


def test_holdout_and_list_file_images(data):
    # images given as a list file (paths relative to its folder), 6 noisy labels held out for selection
    (data / "train" / "list.txt").write_text((data / "noisy.txt").read_text())
    result = lra_diffusion.run(data / "train" / "list.txt", encoder="pixels", out=data / "run", config=TINY,
                               cache_dir=data / "cache", progress=False, holdout=6, holdout_seed=3)
    assert result.n_train == 30 and result.n_val == 6
    assert result.class_names == ["0", "1", "2"]
    info = json.loads((data / "run" / "config.json").read_text())
    assert info["pipeline"]["sources"]["holdout"] == 6


def test_mixed_sizes_need_image_size(data):
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(data / "train" / "cat" / "00.png")
    res = run_cli(data, data / "run")
    assert res.exit_code == 2 and "--image-size" in res.stderr
    res = run_cli(data, data / "run", "--image-size", "8")
    assert res.exit_code == 0, res.output


def test_streaming_when_images_do_not_fit_in_memory(data, monkeypatch):
    import lra_diffusion.pipeline as pipeline

    monkeypatch.setattr(pipeline, "IN_MEMORY_BYTES", 1)
    result = lra_diffusion.run(data / "train", labels=data / "noisy.txt", encoder="pixels", out=data / "run",
                               config=TINY, cache_dir=data / "cache", progress=False)
    assert result.encoded and len(result.issues) == 36


def test_pca_is_saved_reused_and_applied_by_predict(data, monkeypatch):
    kw = dict(labels=data / "noisy.txt", encoder="pixels", out=data / "run", config=TINY,
              cache_dir=data / "cache", progress=False, pca=6)
    first = lra_diffusion.run(data / "train", **kw)
    assert first.classifier.n_features_in_ == 6 and (data / "run" / "pca.safetensors").exists()
    forbid_long_work(monkeypatch)
    again = lra_diffusion.run(data / "train", **kw)
    assert again.reused_fit and not again.encoded
    monkeypatch.undo()
    pred = predict_images(data / "run", data / "train", progress=False)
    np.testing.assert_array_equal(pred.labels, first.issues.predicted_label)


def test_pca_is_the_benchmark_reduction(tmp_path):
    from lra_diffusion.benchmark import reduce_features

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 40)).astype(np.float32), rng.normal(size=(50, 40)).astype(np.float32)
    want_train, want_test = reduce_features(train, test, 8)
    mean, components = fit_pca_cached(train, 8, cache_dir=tmp_path)
    np.testing.assert_array_equal(apply_pca(train, mean, components), want_train)
    np.testing.assert_array_equal(apply_pca(test, mean, components), want_test)
    cached = fit_pca_cached(train, 8, cache_dir=tmp_path)  # from the cache file: the same numbers
    np.testing.assert_array_equal(apply_pca(test, *cached), want_test)


# ---- acceptance 3: lra predict --images ------------------------------------------------------------
def test_predict_images_end_to_end(data):
    out = data / "run"
    assert run_cli(data, out).exit_code == 0
    res = lra("predict", "--model", out, "--images", data / "test", "--out", data / "pred.csv", "--quiet")
    assert res.exit_code == 0, res.output
    assert "classified 12 images" in res.stdout and "accuracy" in res.stdout
    rows = list(csv.DictReader((data / "pred.csv").open()))
    assert len(rows) == 12 and {r["predicted_class"] for r in rows} <= set(CLASSES)
    assert rows[0]["path"] == str(data / "test" / "cat" / "00.png")
    # a plain folder of new images (no class folders), probabilities as .npy
    new = data / "new"
    new.mkdir()
    for p in sorted((data / "test").rglob("*.png"))[:5]:
        shutil.copy(p, new / f"{p.parent.name}-{p.name}")
    res = lra("predict", "--model", out, "--images", new, "--out", data / "p.npy", "--proba", "--quiet")
    assert res.exit_code == 0, res.output
    proba = np.load(data / "p.npy")
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    # the same images give the same predictions as the run's classifier on their features
    from lra_diffusion.encoders import load_encoder

    enc = load_encoder(out / "encoder")
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(new.iterdir())])
    clf = LRAClassifier.load(out)
    np.testing.assert_allclose(clf.predict_proba(enc.encode(images)), proba, atol=1e-6)


def test_predict_bad_input(data):
    out = data / "run"
    assert run_cli(data, out).exit_code == 0
    res = lra("predict", "--model", out, "--images", data / "test", "--features", data / "x.npy", "--out",
              data / "p.csv")
    assert res.exit_code == 2 and "one of them" in res.stderr
    # a run of `lra fit` (features) has no encoder to classify images with
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    np.save(data / "X.npy", X)
    np.save(data / "y.npy", np.arange(40) % 2)
    assert lra("fit", "--features", data / "X.npy", "--labels", data / "y.npy", "--out", data / "fitrun",
               "--config", data / "tiny.toml", "--quiet").exit_code == 0
    res = lra("predict", "--model", data / "fitrun", "--images", data / "test", "--out", data / "p.csv")
    assert res.exit_code == 2 and "give --features" in res.stderr


# ---- acceptance 4: bad input, one line, before any long work ---------------------------------------
def _corrupt(data: Path) -> str:
    (data / "train" / "dog" / "03.png").write_bytes(b"not an image at all")
    return "dog/03.png"


def _truncated(data: Path) -> str:
    p = data / "train" / "fox" / "05.png"
    p.write_bytes(p.read_bytes()[:60])
    return "fox/05.png"


def _missing_row(data: Path) -> str:
    with (data / "noisy.txt").open("a") as f:
        f.write("cat/99.png 0\n")
    return "line 37"


def _unknown_class_id(data: Path) -> str:
    (data / "noisy.txt").write_text((data / "noisy.txt").read_text().replace("dog/02.png 1", "dog/02.png 7"))
    return "label '7' is not one of the classes that have images (0 cat, 1 dog, 2 fox)"


def _unknown_class_name(data: Path) -> str:
    (data / "noisy.txt").write_text((data / "noisy.txt").read_text().replace("dog/02.png 1", "dog/02.png wolf"))
    return "label 'wolf' is not one of the classes that have images"


def _encoder_path_text_file(data: Path) -> str:
    (data / "weights.txt").write_text("hello")
    return "not a saved pixels encoder"


def _encoder_path_bad_json(data: Path) -> str:
    (data / "enc").mkdir()
    (data / "enc" / "encoder.json").write_text("{ not json")
    return "not a loadable saved encoder"


def _encoder_path_missing(data: Path) -> str:
    return "encoder path not found"


@pytest.mark.parametrize("make_bad, extra", [
    (_corrupt, []),
    (_truncated, []),
    (_missing_row, []),
    (_unknown_class_id, []),
    (_unknown_class_name, []),
    (_encoder_path_text_file, ["--encoder-path", "{d}/weights.txt"]),
    (_encoder_path_bad_json, ["--encoder-path", "{d}/enc"]),
    (_encoder_path_missing, ["--encoder-path", "{d}/nowhere"]),
    (lambda d: "does not embed images", ["--encoder", "minilm"]),
    (lambda d: "not a folder, a list file or a known dataset", ["--images", "{d}/nothing"]),
    (lambda d: "label file not found", ["--labels", "{d}/nothing.txt"]),
    (lambda d: "bad.txt line 1: label '5' is not one of the classes", ["--test-images", "{d}/test", "--test-labels", "{d}/bad.txt"]),
], ids=["corrupt-image", "truncated-image", "row-names-missing-image", "class-id-without-images",
        "class-name-without-images", "encoder-path-text-file", "encoder-path-bad-json", "encoder-path-missing",
        "text-encoder", "no-such-images", "no-such-labels", "test-label-unknown-class"])
def test_bad_input_is_one_line_before_long_work(data, monkeypatch, make_bad, extra):
    (data / "bad.txt").write_text("cat/00.png 5\n")
    expected = make_bad(data)
    forbid_long_work(monkeypatch)
    res = run_cli(data, data / "run", *[e.format(d=data) for e in extra])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not (data / "run" / "model.safetensors").exists()


def test_saved_encoder_of_another_kind_is_refused(data):
    assert run_cli(data, data / "run").exit_code == 0
    res = lra("run", "--images", data / "train", "--labels", data / "noisy.txt", "--encoder", "kmeans",
              "--encoder-path", data / "run" / "encoder", "--out", data / "run2", "--quiet")
    assert res.exit_code == 2 and "holds a 'pixels' encoder, not 'kmeans'" in res.stderr


def test_saved_encoder_is_reused_by_path(data):
    assert run_cli(data, data / "run").exit_code == 0
    res = run_cli(data, data / "run2", "--encoder-path", data / "run" / "encoder")
    assert res.exit_code == 0, res.output
    assert "from the cache" in res.stdout  # same encoder, same images: the features are cached


# ---- sources ---------------------------------------------------------------------------------------
def test_path_lists_csv_names_and_spaces(tmp_path):
    (tmp_path / "a b").mkdir()
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a b" / name)
    (tmp_path / "l.csv").write_text("path,label\na b/x.png,cat\na b/y.png,dog\n")
    (tmp_path / "l.txt").write_text("# comment\na b/x.png cat\n\na b/y.png dog\n")
    (tmp_path / "paths.txt").write_text("a b/x.png\na b/y.png\n")
    (tmp_path / "aligned.txt").write_text("0\n1\n")
    for f in ("l.csv", "l.txt"):
        rows = read_path_list(tmp_path / f)
        assert rows.paths == ["a b/x.png", "a b/y.png"] and rows.labels == ["cat", "dog"]
        s = open_image_set(tmp_path / f)
        assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [0, 1]
    assert read_path_list(tmp_path / "paths.txt", require_labels=False).labels is None
    assert is_path_list(tmp_path / "l.csv") and is_path_list(tmp_path / "paths.txt")
    assert not is_path_list(tmp_path / "aligned.txt")
    s = open_image_set(tmp_path / "paths.txt", labels=tmp_path / "aligned.txt")
    assert s.labels.tolist() == [0, 1] and s.class_names == ["0", "1"]


def test_tree_with_aligned_labels_and_duplicates(data):
    np.save(data / "y.npy", (np.arange(36) % 3)[::-1].copy())
    s = open_image_set(data / "train", labels=data / "y.npy")
    assert s.labels.tolist() == ((np.arange(36) % 3)[::-1]).tolist() and s.class_names == list(CLASSES)
    (data / "dup.txt").write_text("cat/00.png 0\ncat/00.png 1\n")
    with pytest.raises(lra_diffusion.InputError, match="already listed on line 1"):
        open_image_set(data / "train", labels=data / "dup.txt")


def test_holdout_is_the_benchmark_split():
    rows, val = holdout_rows(1000, 100, 7)
    perm = np.random.default_rng(7).permutation(1000)
    np.testing.assert_array_equal(val, np.sort(perm[:100]))
    np.testing.assert_array_equal(rows, np.sort(perm[100:]))
    if (SHARED / "noisy_labels" / "cifar10n.csv").exists():
        from lra_diffusion.benchmark import cifar10_split

        feats = np.arange(50_000, dtype=np.float32)[:, None]
        split = cifar10_split("c10n-worse", feats, feats[:10], SHARED, seed=0)
        rows, val = holdout_rows(50_000, 5000, 0)
        np.testing.assert_array_equal(split.X_train[:, 0], rows)
        np.testing.assert_array_equal(split.X_val[:, 0], val)


def test_cifar10_config_file_is_the_benchmark_config():
    from lra_diffusion.benchmark import CIFAR10_LRA_CONFIG

    assert Config.from_toml(REPO / "configs" / "cifar10-benchmark.toml") == Config.from_dict(CIFAR10_LRA_CONFIG)


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg.tar.gz").exists(), reason="shared CIFAR-10 not present")
def test_known_dataset_with_a_path_list(tmp_path):
    (tmp_path / "few.txt").write_text("test/cat/0000.jpg 5\ntest/ship/0003.jpg ship\n")
    s = open_image_set("cifar10:test", root=SHARED, labels=tmp_path / "few.txt")
    assert len(s) == 2 and s.labels.tolist() == [5, 8] and s.dataset.image(0).shape == (32, 32, 3)
    with pytest.raises(lra_diffusion.InputError, match="needs its root"):
        open_image_set("cifar10")


# ---- the default encoder: EfficientNet-Lite0, photos of mixed sizes without options -----------------
def write_photos(root: Path, per_class: int, *, seed: int) -> None:
    """Class folders of JPEG 'photos' of mixed sizes and aspect ratios (colour gives the class)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 64), (90, 60), (200, 150), (40, 40), (120, 300)]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = sizes[(i + c) % len(sizes)]
            img = np.clip(COLOURS[c] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:02d}.jpg", quality=90)


def test_run_defaults_to_efficientnet_and_takes_photos_of_mixed_sizes(tmp_path):
    write_photos(tmp_path / "train", 8, seed=0)
    write_photos(tmp_path / "test", 2, seed=1)
    (tmp_path / "tiny.toml").write_text(TOML)
    res = lra("run", "--images", tmp_path / "train", "--test-images", tmp_path / "test", "--out", tmp_path / "run",
              "--config", tmp_path / "tiny.toml", "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert "efficientnet-lite2 features (1280-d)" in res.stdout
    info = json.loads((tmp_path / "run" / "config.json").read_text())["pipeline"]["encoder"]
    assert info["name"] == "efficientnet-lite2" and info["image_size"] == 160  # resized once, at decode
    res = lra("predict", "--model", tmp_path / "run", "--images", tmp_path / "test", "--out", tmp_path / "p.csv",
              "--quiet")
    assert res.exit_code == 0 and "classified 6 images" in res.stdout, res.output


def test_stages_run_alone(data):
    """check -> decode -> encoder -> embed, called one by one, give what the journey gives."""
    from lra_diffusion import pipeline as p

    job = p.check_inputs(data / "train", labels=data / "noisy.txt", labels_column=None, root=None,
                         true_labels=data / "clean.txt", test_images=data / "test", test_labels=None,
                         test_root=None, config=TINY, holdout=6, holdout_seed=0, encoder="pixels",
                         encoder_path=None, encoder_options=None, out=data / "run")
    assert len(job.rows) == 30 and len(job.val_rows) == 6 and job.truth is not None
    assert job.describe().endswith("12 images") and not (data / "run").exists()  # nothing written yet
    pixels = p.decode_inputs(job, image_size=None, progress=False)
    assert pixels.train.shape == (36, 8, 8, 3) and pixels.test.shape == (12, 8, 8, 3) and pixels.transform == "none"
    assert p.fit_encoder(job, pixels.train, cache_dir=data / "cache", progress=False)
    feats = p.embed_inputs(job.encoder, pixels, cache_dir=data / "cache", progress=False)
    assert feats.X.shape == (36, 192) and feats.X_test.shape == (12, 192) and feats.encoded
    assert feats.X.flags.writeable and feats.X.dtype == np.float32
    again = p.embed_inputs(job.encoder, pixels, cache_dir=data / "cache", progress=False)
    assert not again.encoded and np.array_equal(again.X, feats.X)
    inputs = p.fit_inputs(job, feats.X, seed=0, pca=None)
    assert inputs["val_features_sha256"] is not None and inputs["seed"] == 0
    reduced = p.reduce_features(feats, 4, cache_dir=data / "cache")
    assert reduced.X.shape == (36, 4) and reduced.pca[1].shape == (4, 192)
