"""From images with noisy labels to a trained run, a list of labels to fix and a report: ``lra run``.

:func:`run` is the journey in one screen: a short sequence of stage functions, each timed and announced
on stderr, each taking and returning only what it needs (so a stage can be called and tested alone):

1. ``check`` (:func:`check_inputs` -> :class:`RunJob`): open the images and label files (:mod:`.sources`),
   the test set and the encoder; every cheap check (missing files, unknown classes, an encoder path that
   is not a model, the run folder) happens here, before any long work;
2. ``decode`` (:func:`decode_inputs` -> :class:`Pixels`): decode every image once (a corrupt file fails
   here, naming it) into one uint8 array when it fits in memory (``IN_MEMORY_BYTES``), so the feature
   cache is keyed on the pixels; photos of mixed sizes are resized to the encoder's input size here;
3. ``encoder`` (:func:`fit_encoder`): fit the encoder on the unlabelled training images (pixels, kmeans),
   cached;
4. ``embed`` (:func:`embed_inputs` -> :class:`Features`): features of the training and test images
   through the feature cache; ``pca`` (:func:`reduce_features`) with ``--pca``;
5. ``train`` (:func:`train`): fit :class:`~.estimator.LRAClassifier`, or reuse the finished fit in the run
   folder when its recorded inputs (:func:`fit_inputs`: feature and label hashes, validation rows,
   config, seed) are the same;
6. ``evaluate`` (:func:`evaluate`): test accuracy; ``issues`` (:func:`score_issues`): score every training
   label (``issues.csv``); ``report`` (:func:`write_run_report`): ``metrics.json`` and ``report.html``
   with thumbnails of the most suspicious images.

The run folder is the one of ``lra fit`` (``config.json``, ``model.safetensors``, ``metrics.json``; its
``checkpoints/`` only until the fit is finished, so a killed run resumes) plus ``encoder/`` (the fitted encoder, so :func:`predict_images` can classify new
images), ``issues.csv`` and ``report.html``; ``config.json`` gains a ``pipeline`` block (encoder, class
names, inputs), which :meth:`LRAClassifier.load` ignores.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import Config
from .errors import InputError
from .estimator import LRAClassifier
from .io import atomic_write, finite_or_none, load_tensors, read_json, save_tensors, sha256_array, write_json
from .issues import CSV_COLUMNS, DEFAULT_N_SAMPLES, DEFAULT_SCORE, LabelIssues
from .sources import ImageSet, open_image_set

IMAGE_ENCODERS: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "pixels", "kmeans",
                                   "simclr", "simclr-cifar10", "clip", "dinov2")
# ImageNet weights that install with the package: the most accurate variant on CIFAR-10 within the 12-minute
# embedding budget (lite2 at 160 px: 79.8% 10-NN / 82.2% probe, 470 s; lite0: 78.6% / 81.3%, 330 s), BENCHMARKS.md
DEFAULT_ENCODER = "efficientnet-lite2"
DEFAULT_CACHE_DIR = Path("cache/features")  # relative to the working directory, as `lra embed`
IN_MEMORY_BYTES = 4 * 2**30  # decoded training images up to this size are held as one array
THUMBNAIL = 64  # report thumbnails: images larger than this (or of mixed sizes) are resized to it
RUN_FORMAT = "lra-run/1"
ENCODER_DIR = "encoder"
PCA_FILE = "pca.safetensors"  # with --pca: the mean (D,) and components (P, D) the features are projected on
PCA_SEED = 0  # random_state of the randomized PCA, as lra_diffusion.benchmark.reduce_features
# what `overwrite=True` removes from a run folder (and nothing else)
# metrics.json keys written by the pipeline (replaced on every run)
PIPELINE_METRICS = ("test_accuracy", "n_test", "label_issue", "reused_fit", "seconds_")
RUN_OUTPUTS = ("config.json", "model.safetensors", "metrics.json", "issues.csv", "report.html",
               ENCODER_DIR, PCA_FILE, "checkpoints")


@dataclass
class RunResult:
    """What :func:`run` returns: the output paths, the fitted model, the label issues and timings."""

    out: Path
    classifier: LRAClassifier
    issues: LabelIssues
    class_names: list[str]  # names of the class ids 0..C-1
    image_names: list[str]  # training image i (row i of issues.csv)
    encoder: str
    feature_dim: int
    n_train: int  # rows the model was trained on
    n_val: int  # rows held out for model selection (0: the classifier's own split)
    val_accuracy: float | None
    test_accuracy: float | None
    n_test: int
    issue_metrics: dict[str, float] | None  # precision / recall / F1 / AUROC, with true labels only
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    reused_fit: bool = False
    encoded: bool = True  # whether any image was encoded (False: all features came from the cache)
    fitted_encoder: bool = False

    @property
    def paths(self) -> dict[str, Path]:
        names = ("model.safetensors", "config.json", "metrics.json", "issues.csv", "report.html", ENCODER_DIR)
        return {n: self.out / n for n in names}

    def summary(self) -> str:
        """A few lines for the terminal: data, stages, accuracies, issues, paths."""
        flagged = int(self.issues.is_label_issue.sum())
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        lines = [
            f"{len(self.issues)} training images, {len(self.class_names)} classes, {self.encoder} features "
            f"({self.feature_dim}-d{', from the cache' if not self.encoded else ''})",
            f"stages: {stages} (total {sum(self.timings.values()):.1f} s)",
        ]
        fit = "reused the finished fit in the run folder" if self.reused_fit else f"trained on {self.n_train} images"
        val = f"; validation accuracy {self.val_accuracy:.4f}" if self.val_accuracy is not None else ""
        held = f" ({self.n_val} held-out noisy labels)" if self.n_val else ""
        lines.append(f"{fit}{val}{held}")
        if self.test_accuracy is not None:
            lines.append(f"test accuracy {self.test_accuracy:.4f} on {self.n_test} images")
        issue = f"label issues: {flagged} of {len(self.issues)} flagged ({flagged / max(len(self.issues), 1):.2%})"
        if self.issue_metrics:
            m = self.issue_metrics
            issue += (f"; against the true labels precision {m['precision']:.4f}, recall {m['recall']:.4f}, "
                      f"F1 {m['f1']:.4f}, AUROC {m['auroc']:.4f}")
        lines.append(issue)
        lines.append("wrote " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


# ---- stages ----------------------------------------------------------------------------------------
class Stages:
    """Times named stages and announces them through ``log``."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, message: str) -> Iterator[None]:
        self.log(f"[{name}] {message}")
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.log(f"[{name}] done in {seconds:.1f} s")


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    images: str | Path,
    *,
    labels: str | Path | None = None,
    encoder: str = DEFAULT_ENCODER,
    encoder_path: str | Path | None = None,
    out: str | Path,
    test_images: str | Path | None = None,
    test_labels: str | Path | None = None,
    config: Config | dict | str | Path | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    root: str | Path | None = None,
    test_root: str | Path | None = None,
    labels_column: str | None = None,
    true_labels: str | Path | None = None,
    encoder_options: dict[str, Any] | None = None,
    image_size: int | None = None,
    pca: int | None = None,
    holdout: int | None = None,
    holdout_seed: int | None = None,
    score: str = DEFAULT_SCORE,
    threshold: float | None = None,
    noise_rate: float | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Images with noisy labels -> trained run folder, ``issues.csv`` and ``report.html``.

    Parameters
    ----------
    images : an ImageFolder tree, a list file (``path label`` rows) or a known dataset (``cifar10``,
        with ``root``); see :mod:`lra_diffusion.sources`.
    labels : a label file replacing the images' labels: a path list (rows name the images; for a tree
        the rows define the training set and its order) or a file aligned with the image order.
    encoder : ``efficientnet-lite2`` (default) | ``-lite0`` | ``-lite1`` | ``pixels`` | ``kmeans`` | ``simclr`` |
        ``clip`` | ``dinov2``.
    encoder_path : a saved encoder folder (``encoder.json``), SimCLR or EfficientNet-Lite weights, or a CLIP /
        DINOv2 model folder.
    out : the run folder.
    test_images, test_labels : an optional labelled test set (same kinds as ``images``).
    config : a :class:`Config`, a nested dict, or a TOML file.
    seed : seeds the fit (``random_state``), the held-out split (unless ``holdout_seed``) and the scores.
    cache_dir : the feature cache (default ``cache/features``).
    progress : announce stages on stderr and show progress bars.
    root, test_root : folder the list files' paths are relative to, or a known dataset's root.
    labels_column : the label column of an aligned CSV / ``.pt`` label file.
    true_labels : clean labels (same kinds as ``labels``, matched to the training images by path when
        a path list), to measure the label-issue flags (precision, recall, F1, AUROC).
    encoder_options : keyword options of the encoder (e.g. ``{"device": "cuda"}``).
    image_size : resize (shorter side) and centre-crop every image to this square size first; needed by
        the pixels / kmeans / simclr encoders when the images differ in size (EfficientNet-Lite resizes
        images of mixed sizes to its own input size).
    pca : reduce the features to this many principal components first (PCA fitted on the unlabelled
        training features, as the CIFAR-10 benchmark's ``reduce_features``); saved in the run folder and
        applied by :func:`predict_images`.
    holdout, holdout_seed : hold out this many training images (a permutation seeded by
        ``holdout_seed``, default ``seed``) as the noisy validation set for model selection; this is the
        split of :func:`lra_diffusion.benchmark.cifar10_split`. None: the classifier's own
        ``train.val_fraction`` split.
    score, threshold, noise_rate : the label-issue score and flag rule (see :mod:`lra_diffusion.issues`).
    overwrite : replace a run folder that holds a run of other inputs.
    log : where stage messages go (default: stderr when ``progress``).

    Returns
    -------
    RunResult
    """
    log = log or (stderr_log if progress else (lambda message: None))
    stages = Stages(log)
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR

    with stages("check", f"checking {images}" + (f" and {labels}" if labels else "")):
        job = check_inputs(images, labels=labels, labels_column=labels_column, root=root, true_labels=true_labels,
                           test_images=test_images, test_labels=test_labels, test_root=test_root, config=config,
                           holdout=holdout, holdout_seed=seed if holdout_seed is None else holdout_seed,
                           encoder=encoder, encoder_path=encoder_path, encoder_options=encoder_options, out=out)
        log(f"[check] {job.describe()}")
    with stages("decode", f"decoding {len(job.train_set)} training images"
                + (f" and {len(job.test_set)} test images" if job.test_set is not None else "")):
        pixels = decode_inputs(job, image_size=image_size, progress=progress)
    fitted = False
    if job.encoder.needs_fit and not job.encoder.is_fitted:
        with stages("encoder", f"fitting the {encoder} encoder on the unlabelled training images (cached)"):
            fitted = fit_encoder(job, pixels.train, cache_dir=cache_dir, progress=progress)
    with stages("embed", f"{encoder} features through the cache {cache_dir}"):
        feats = embed_inputs(job.encoder, pixels, cache_dir=cache_dir, progress=progress)
        log(f"[embed] train {feats.X.shape}" + (f", test {feats.X_test.shape}" if feats.X_test is not None else "")
            + ("" if feats.encoded else " (all from the cache)"))
    del pixels
    if pca is not None:
        with stages("pca", f"PCA of the {feats.X.shape[1]}-d features to {pca} components"):
            feats = reduce_features(feats, pca, cache_dir=cache_dir / job.encoder.name)

    inputs = fit_inputs(job, feats.X, seed=seed, pca=pca)
    est = finished_fit(out, inputs)
    reused = est is not None
    with stages("train", "reusing the finished fit in " + str(out) if reused else
                f"training LRA-diffusion on {len(job.rows)} images"
                + (f", {len(job.val_rows)} held out" if job.val_rows is not None else "")):
        if not reused:
            sources = {"images": str(images), "labels": _str(labels), "true_labels": _str(true_labels),
                       "test_images": _str(test_images), "test_labels": _str(test_labels),
                       "holdout": holdout, "holdout_seed": holdout_seed}
            est = train(job, feats, inputs, out=out, seed=seed, image_size=feats.size, sources=sources,
                        overwrite=overwrite, progress=progress)
    test_acc = None
    if feats.X_test is not None:
        with stages("evaluate", f"classifying {len(feats.X_test)} test images"):
            test_acc = evaluate(est, feats.X_test, job.test_set.labels)
            log(f"[evaluate] test accuracy {test_acc:.4f}")
    scoring = IssueScoring(score=score, threshold=threshold, noise_rate=noise_rate, seed=seed, truth=job.truth)
    issues = finished_issues(out, scoring.key, job.y) if reused else None
    with stages("issues", f"reusing {out / 'issues.csv'}" if issues is not None else
                f"scoring {len(job.y)} training labels ({score})"):
        issues = issues if issues is not None else score_issues(job, feats.X, est, scoring, out=out)
        issue_metrics = issues.metrics() if job.truth is not None else None
    with stages("report", "writing report.html"):
        write_run_report(out, job, est, issues, test_acc=test_acc, issue_metrics=issue_metrics, scoring=scoring,
                         reused=reused, seconds=stages.seconds)

    return RunResult(
        out=out, classifier=est, issues=issues, class_names=job.train_set.class_names,
        image_names=job.train_set.names(), encoder=job.encoder.name, feature_dim=int(feats.X.shape[1]),
        n_train=len(job.rows), n_val=0 if job.val_rows is None else len(job.val_rows),
        val_accuracy=est.fit_info_.get("best_val_accuracy"), test_accuracy=test_acc,
        n_test=len(job.test_set) if job.test_set is not None else 0, issue_metrics=issue_metrics,
        timings=dict(stages.seconds), reused_fit=reused, encoded=feats.encoded, fitted_encoder=fitted,
    )


# ---- the stages, one function each -----------------------------------------------------------------
@dataclass
class RunJob:
    """What the ``check`` stage establishes: config, image sets, labels, held-out rows, the encoder."""

    cfg: Config
    train_set: ImageSet
    test_set: ImageSet | None
    truth: np.ndarray | None  # clean labels of the training images, to measure the flags
    rows: np.ndarray  # training rows the model is fitted on
    val_rows: np.ndarray | None  # held-out noisy labels for model selection
    encoder: Any
    encoder_name: str

    @property
    def y(self) -> np.ndarray:
        return self.train_set.labels

    def describe(self) -> str:
        text = f"{self.train_set.description}: {len(self.y)} images, {len(self.train_set.class_names)} classes"
        if self.test_set is not None:
            text += f"; {self.test_set.description}: {len(self.test_set)} images"
        return text


def check_inputs(images, *, labels, labels_column, root, true_labels, test_images, test_labels, test_root,
                 config, holdout, holdout_seed, encoder, encoder_path, encoder_options, out: Path) -> RunJob:
    """Open and check every input (cheap: listings, label files, the encoder's weights, the run folder)."""
    cfg = as_config(config)
    train_set = open_image_set(images, root=root, labels=labels, labels_column=labels_column)
    y = train_set.labels
    if len(np.unique(y)) < 2:
        raise InputError(f"need at least 2 classes to train; the labels of {images} hold only "
                         f"{train_set.class_names[int(y[0])]!r}")
    truth = match_true_labels(train_set, true_labels) if true_labels else None
    test_set = None
    if test_images is not None:
        test_set = open_image_set(test_images, root=test_root, labels=test_labels, classes=train_set.class_names,
                                  what="test images")
    elif test_labels is not None:
        raise InputError("--test-labels needs --test-images")
    rows, val_rows = holdout_rows(len(y), holdout, holdout_seed)
    if val_rows is not None and len(rows) <= cfg.retrieval.k:
        raise InputError(f"holdout {holdout} leaves {len(rows)} training images; need more than k="
                         f"{cfg.retrieval.k}")
    enc = make_encoder(encoder, encoder_path, encoder_options)
    check_run_folder(out)
    return RunJob(cfg, train_set, test_set, truth, rows, val_rows, enc, encoder)


@dataclass
class Pixels:
    """Decoded images (arrays, or datasets read again while embedding) and the cache transform."""

    train: Any
    test: Any
    size: int | None  # the square size images were resized to at decode (None: as they are)

    @property
    def transform(self) -> str:
        return "none" if self.size is None else f"resize-crop-{self.size}"


def decode_inputs(job: RunJob, *, image_size: int | None, progress: bool) -> Pixels:
    """Decode the training and test images once (see :func:`decode_images`).

    Without ``image_size``, an encoder with its own input size (``input_size``: EfficientNet-Lite) gets
    images of mixed sizes, or larger than that size, resized and cropped to it here, once, so they are
    held in memory small; images of one small size (CIFAR's 32 px) are kept as they are and resized
    batch by batch while encoding.
    """
    enc, name = job.encoder, job.encoder_name
    size = image_size
    target = getattr(enc, "input_size", None)
    if size is None and target is not None and min(job.train_set.dataset.image(0).shape[:2]) > target:
        size = target
    try:
        train = decode_images(job.train_set, size=size, ragged_ok=enc.ragged_input and target is None,
                              progress=progress, encoder=name)
    except MixedSizes:
        if target is None:
            raise
        size = target
        train = decode_images(job.train_set, size=size, ragged_ok=True, progress=progress, encoder=name)
    test = (decode_images(job.test_set, size=size, ragged_ok=enc.ragged_input, progress=progress, encoder=name)
            if job.test_set is not None else None)
    return Pixels(train, test, size)


def fit_encoder(job: RunJob, train_pixels, *, cache_dir: Path, progress: bool) -> bool:
    """Fit the encoder on the unlabelled training images (cached); returns whether it was fitted now."""
    from .encoders import fit_cached

    before = job.encoder
    job.encoder = fit_cached(before, train_pixels, cache_dir=cache_dir, progress=progress)
    return job.encoder is before


@dataclass
class Features:
    """Training and test features (writable float32), and whether any image was encoded for them."""

    X: np.ndarray  # (N, D)
    X_test: np.ndarray | None  # (N_test, D)
    encoded: bool
    size: int | None = None  # Pixels.size, recorded in the run
    pca: tuple[np.ndarray, np.ndarray] | None = None  # (mean (D,), components (P, D)) when reduced


def embed_inputs(enc, pixels: Pixels, *, cache_dir: Path, progress: bool) -> Features:
    """Features of the training and test images through the feature cache."""
    X, new_train = embed_cached(enc, pixels.train, cache_dir=cache_dir, split="train", transform=pixels.transform,
                                progress=progress)
    X_test, new_test = (embed_cached(enc, pixels.test, cache_dir=cache_dir, split="test",
                                     transform=pixels.transform, progress=progress)
                        if pixels.test is not None else (None, False))
    # writable float32 copies of the read-only cache memmaps (torch refuses to wrap read-only arrays)
    return Features(np.array(X, dtype=np.float32), None if X_test is None else np.array(X_test, dtype=np.float32),
                    bool(new_train or new_test), pixels.size)


def reduce_features(feats: Features, dim: int, *, cache_dir: Path) -> Features:
    """Project the features on the first ``dim`` principal components of the training features."""
    components = fit_pca_cached(feats.X, dim, cache_dir=cache_dir)
    X_test = apply_pca(feats.X_test, *components) if feats.X_test is not None else None
    return Features(apply_pca(feats.X, *components), X_test, feats.encoded, feats.size, components)


def fit_inputs(job: RunJob, X: np.ndarray, *, seed: int, pca: int | None) -> dict:
    """What a finished fit in the run folder must have been trained on to be reused (hashes, config)."""
    X_val = X[job.val_rows] if job.val_rows is not None else None
    y_val = job.y[job.val_rows] if job.val_rows is not None else None
    return {
        "features_sha256": sha256_array(X[job.rows]), "labels_sha256": sha256_array(job.y[job.rows]),
        "val_features_sha256": sha256_array(X_val) if X_val is not None else None,
        "val_labels_sha256": sha256_array(y_val) if y_val is not None else None,
        "config": job.cfg.to_dict(), "seed": int(seed), "pca": pca,
    }


def train(job: RunJob, feats: Features, inputs: dict, *, out: Path, seed: int, image_size: int | None,
          sources: dict, overwrite: bool, progress: bool) -> LRAClassifier:
    """Fit LRA-diffusion into the run folder (resuming its checkpoints), then save the encoder, the PCA and
    the ``pipeline`` block of ``config.json``."""
    X, y = feats.X, job.y
    resume = prepare_run_folder(out, overwrite=overwrite)
    est = LRAClassifier(config=job.cfg, random_state=seed, verbose=progress)
    val = job.val_rows
    try:
        est.fit(X[job.rows], y[job.rows], X_val=X[val] if val is not None else None,
                y_val=y[val] if val is not None else None, run_dir=out, resume=resume)
    except InputError as e:
        if resume and "cannot resume" in str(e):
            raise InputError(f"{e}; pass --overwrite to start over") from None
        raise
    enc = job.encoder
    save_encoder(enc, out / ENCODER_DIR)
    if feats.pca is not None:
        save_tensors(out / PCA_FILE, dict(zip(("mean", "components"), map(torch.from_numpy, feats.pca))))
    info = read_json(out / "config.json")
    info["pipeline"] = {
        "format": RUN_FORMAT,
        "encoder": {"name": enc.name, "dir": ENCODER_DIR, "fingerprint": enc.fingerprint(),
                    "image_size": image_size, "pca": PCA_FILE if feats.pca is not None else None},
        "class_names": job.train_set.class_names,
        "inputs": inputs,
        "sources": sources,
    }
    write_json(out / "config.json", info)
    # the fit is finished and recorded: its resume checkpoints (model, EMA, best weights and Adam moments,
    # two of them) would only take disk space
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return est


def evaluate(est: LRAClassifier, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy."""
    return float((est.predict(X_test) == y_test).mean())


@dataclass
class IssueScoring:
    """The label-issue settings; ``key`` identifies an ``issues.csv`` scored with them."""

    score: str
    threshold: float | None
    noise_rate: float | None
    seed: int
    truth: np.ndarray | None

    @property
    def n_samples(self) -> int:
        return DEFAULT_N_SAMPLES if self.score in ("stochastic", "mean") else 1

    @property
    def key(self) -> str:
        return sha256_json({"score": self.score, "threshold": self.threshold, "noise_rate": self.noise_rate,
                            "n_samples": self.n_samples, "seed": self.seed,
                            "true_labels": sha256_array(self.truth) if self.truth is not None else None})


def score_issues(job: RunJob, X: np.ndarray, est: LRAClassifier, scoring: IssueScoring, *, out: Path) -> LabelIssues:
    """Score every training label and write ``issues.csv``."""
    from .issues import find_label_issues

    issues = find_label_issues(X, job.y, estimator=est, score=scoring.score, threshold=scoring.threshold,
                               noise_rate=scoring.noise_rate, n_samples=scoring.n_samples, true_labels=scoring.truth,
                               random_state=scoring.seed)
    write_issues_csv(out / "issues.csv", issues, job.train_set.names(), job.train_set.class_names)
    return issues


def write_run_report(out: Path, job: RunJob, est: LRAClassifier, issues: LabelIssues, *, test_acc: float | None,
                     issue_metrics: dict | None, scoring: IssueScoring, reused: bool, seconds: dict) -> None:
    """Add the pipeline's numbers to ``metrics.json`` and write ``report.html``."""
    from .report import write_report

    metrics = {k: v for k, v in read_json(out / "metrics.json").items() if not k.startswith(PIPELINE_METRICS)}
    # flat keys, so the report's run summary lists them one per row
    ours = {"test_accuracy": test_acc, "n_test": len(job.test_set) if job.test_set is not None else None,
            "label_issue_score": issues.score, "label_issues_flagged": int(issues.is_label_issue.sum()),
            **{f"label_issue_{k}": finite_or_none(v) for k, v in (issue_metrics or {}).items()
               if k in ("precision", "recall", "f1", "auroc")},
            "label_issues_sha256": scoring.key,  # what issues.csv was scored with (hidden in the report)
            "reused_fit": reused, **{f"seconds_{k}": round(v, 2) for k, v in seconds.items()}}
    metrics |= {k: v for k, v in ours.items() if v is not None}
    write_json(out / "metrics.json", metrics)
    top = np.lexsort((issues.index, issues.label_quality))[: min(32, len(issues))]
    write_report(out, out / "report.html", issues=issues, images=thumbnails(job.train_set, top),
                 class_names=[job.train_set.class_names[int(c)] for c in est.classes_])


def _str(value) -> str | None:
    return None if value is None else str(value)


def as_config(config: Config | dict | str | Path | None) -> Config:
    """A :class:`Config` from a Config, a nested dict, a TOML file path or None (defaults)."""
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    if isinstance(config, (str, Path)):
        return Config.from_toml(config)
    raise InputError(f"config must be a Config, a dict or a TOML file, got {type(config).__name__}")


def holdout_rows(n: int, holdout: int | None, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, held-out rows or None), both sorted: the held-out rows are the first ``holdout``
    of ``np.random.default_rng(seed).permutation(n)``, as :func:`lra_diffusion.benchmark.cifar10_split`."""
    if holdout is None or holdout == 0:
        return np.arange(n), None
    if not 0 < holdout < n - 1:
        raise InputError(f"holdout must be between 1 and {n - 2} for {n} training images, got {holdout}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def match_true_labels(train_set: ImageSet, true_labels: str | Path) -> np.ndarray:
    """Clean labels (N,) of the training images, from a path list (matched by path) or an aligned file."""
    from .sources import is_path_list, read_path_list, label_ids

    if is_path_list(true_labels):
        rows = read_path_list(true_labels)
        names, ids = label_ids(rows.labels, rows.linenos, true_labels, train_set.class_names)
        by_path = dict(zip(rows.paths, ids))
        paths = train_set.dataset.paths or []
        missing = [p for p in paths if p not in by_path]
        if missing or not paths:
            raise InputError(f"{true_labels} has no label for {len(missing) or len(train_set)} training image(s)"
                             + (f" (first: {missing[0]})" if missing else ""))
        return np.asarray([by_path[p] for p in paths], dtype=np.int64)
    from .data import load_label_file

    truth = load_label_file(true_labels, num_samples=len(train_set))
    if truth.max() >= len(train_set.class_names):
        raise InputError(f"{true_labels}: label {truth.max()} is not a class of the training images")
    return truth


# ---- encoders --------------------------------------------------------------------------------------
def make_encoder(name: str, path: str | Path | None = None, options: dict[str, Any] | None = None):
    """The image encoder ``name``: built, or loaded from ``path`` (a saved encoder folder with
    ``encoder.json``, SimCLR weights, or a CLIP / DINOv2 model folder). Weights load here, so a path
    that is not a model fails at once."""
    from .encoders import ENCODERS, get_encoder, load_encoder

    options = dict(options or {})
    if name not in ENCODERS:
        get_encoder(name)  # the registry's message lists the valid names
    if name not in IMAGE_ENCODERS:
        raise InputError(f"encoder {name!r} does not embed images; choose one of {', '.join(IMAGE_ENCODERS)}")
    if path is None:
        return get_encoder(name, **options)
    path = Path(path)
    if not path.exists():
        raise InputError(f"encoder path not found: {path}")
    if path.is_dir() and (path / "encoder.json").is_file():
        try:
            enc = load_encoder(path, **options)
        except InputError:
            raise
        except Exception as e:  # a damaged encoder.json / state file: one line, not a traceback
            raise InputError(f"{path} is not a loadable saved encoder ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if enc.name != name:
            raise InputError(f"{path} holds a {enc.name!r} encoder, not {name!r}")
        return enc
    if name in ("clip", "dinov2"):
        return get_encoder(name, model=str(path), **options)
    if name in ("simclr", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2") and path.is_file():
        return get_encoder(name, weights=str(path), **options)
    raise InputError(f"encoder path {path} is not a saved {name} encoder (a folder with encoder.json, as written "
                     f"into every run folder){'; SimCLR weights are a .pt / .safetensors file' if name == 'simclr' else ''}")


def save_encoder(encoder, directory: Path) -> None:
    """Save the encoder into the run folder; CLIP / DINOv2 keep a reference to their model folder
    (``encoder.json`` only; the weights stay where they are and are checked by fingerprint on load)."""
    from .encoders.hf import HFEncoder

    if directory.exists():
        shutil.rmtree(directory)
    if isinstance(encoder, HFEncoder):
        directory.mkdir(parents=True)
        meta = {"name": encoder.name, "config": encoder.config(), "fingerprint": encoder.fingerprint(),
                "weights": "not copied; config.model is the model folder"}
        atomic_write(directory / "encoder.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    else:
        encoder.save(directory)


def load_run_encoder(run_dir: Path, pipeline: dict, **runtime: Any):
    """The encoder a run was trained with, checked against its recorded fingerprint."""
    from .encoders import load_encoder

    enc_info = pipeline["encoder"]
    directory = run_dir / enc_info.get("dir", ENCODER_DIR)
    if not (directory / "encoder.json").is_file():
        raise InputError(f"{run_dir} has no saved encoder ({directory / 'encoder.json'} is missing)")
    enc = load_encoder(directory, **runtime)
    if enc.fingerprint() != enc_info["fingerprint"]:
        raise InputError(f"the encoder in {directory} is not the one {run_dir} was trained with (fingerprint "
                         f"{enc.fingerprint()} != {enc_info['fingerprint']}); were its weights changed?")
    return enc


def embed_cached(encoder, images, *, cache_dir: Path, split: str, transform: str, progress: bool
                 ) -> tuple[np.ndarray, bool]:
    """(features (N, D), whether anything was encoded): a complete cache entry with the same key under
    any dataset name is reused (e.g. one written by the benchmarks), else :func:`encoders.embed`."""
    from .encoders import cache_key, embed

    key = cache_key(encoder, images, split=split, transform=transform, dtype="float32")["key"]
    for folder in sorted((cache_dir / encoder.name).glob(f"*-{split}-{key}")):
        try:
            manifest = read_json(folder / "manifest.json")
        except InputError:
            continue
        if manifest.get("complete") and manifest.get("key") == key and (folder / "features.npy").is_file():
            return np.load(folder / "features.npy", mmap_mode="r"), False
    return embed(encoder, images, cache_dir=cache_dir, split=split, dataset="images", transform=transform,
                 progress=progress), True


# ---- PCA -------------------------------------------------------------------------------------------
def fit_pca_cached(X: np.ndarray, dim: int, *, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), components (dim, D)) of a randomized PCA of the training features X (N, D), computed
    once per (features, dim): the result is kept under ``cache_dir`` keyed by the features' hash."""
    from sklearn.decomposition import PCA

    if not 1 <= dim <= min(X.shape):
        raise InputError(f"pca must be between 1 and {min(X.shape)} for {X.shape[0]} x {X.shape[1]} features, got {dim}")
    path = cache_dir / f"pca-{dim}-{sha256_array(X)[:16]}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_tensors(path)
            return tensors["mean"].numpy(), tensors["components"].numpy()
        except (InputError, KeyError):
            pass
    fitted = PCA(n_components=dim, svd_solver="randomized", random_state=PCA_SEED).fit(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, {"mean": torch.from_numpy(fitted.mean_), "components": torch.from_numpy(fitted.components_)})
    return fitted.mean_, fitted.components_


def apply_pca(X: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """float32 (N, P) projections of X (N, D): scikit-learn's ``PCA.transform`` with the given mean and
    components (so the numbers are those of the benchmark's ``reduce_features``)."""
    from sklearn.decomposition import PCA

    projector = PCA(n_components=len(components))
    # scikit-learn's randomized PCA leaves components_ as a column-major slice; a row-major copy (what a
    # saved file gives back) makes BLAS take another kernel and round differently in the last bit
    projector.mean_, projector.components_ = mean, np.asfortranarray(components)
    projector.n_features_in_ = components.shape[1]
    projector.n_components_ = len(components)
    return projector.transform(X).astype(np.float32)


# ---- images ----------------------------------------------------------------------------------------
def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): bicubic resize of the shorter side to ``size``, centre crop."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


class ResizedImages:
    """A dataset view whose images are resized and centre-cropped to ``size`` (for the feature cache:
    its fingerprint is the underlying dataset's plus the size)."""

    def __init__(self, dataset, size: int):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label, index = self.dataset[i]
        return resize_crop(image, self.size), label, index

    def fingerprint(self) -> str:
        from .encoders import dataset_fingerprint

        return f"{dataset_fingerprint(self.dataset)}-resize-crop-{self.size}"


class MixedSizes(InputError):
    """Images of different sizes for an encoder that needs one size."""


def decode_images(images: ImageSet, *, size: int | None, ragged_ok: bool, progress: bool, encoder: str):
    """Decode every image once (a file that does not decode fails here, naming it).

    Returns uint8 (N, H, W, 3) when it fits in ``IN_MEMORY_BYTES``; otherwise (or for images of mixed
    sizes and an encoder that resizes them itself) the dataset, read again while embedding.
    """
    from tqdm.auto import tqdm

    ds = images.dataset
    first = ds.image(0) if size is None else resize_crop(ds.image(0), size)
    n = len(ds)
    streaming = n * first.nbytes > IN_MEMORY_BYTES
    out = None if streaming else np.empty((n, *first.shape), dtype=np.uint8)
    what = "checking" if streaming else "decoding"
    for i in tqdm(range(n), desc=f"{what} images", unit="img", disable=not progress, mininterval=0.5):
        image = ds.image(i)
        if size is not None:
            image = resize_crop(image, size)
        elif image.shape != first.shape:
            if not ragged_ok:
                raise MixedSizes(f"{images.name(i)} is {image.shape[1]}x{image.shape[0]} but {images.name(0)} is "
                                 f"{first.shape[1]}x{first.shape[0]}; the {encoder} encoder needs images of one "
                                 "size: pass --image-size S to resize them")
            streaming, out = True, None
        if out is not None:
            out[i] = image
    if out is not None:
        return out
    return ResizedImages(ds, size) if size is not None else ds


def thumbnails(images: ImageSet, rows: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, 3) with the given rows filled (the report shows only those); the other rows stay
    zero pages that are never touched, so this costs memory only for the rows shown."""
    shown = [images.dataset.image(int(r)) for r in rows]
    shapes = {im.shape for im in shown}
    if len(shapes) != 1 or max(max(s[:2]) for s in shapes) > 96:
        shown = [resize_crop(im, THUMBNAIL) for im in shown]
    h, w, _ = shown[0].shape if shown else (THUMBNAIL, THUMBNAIL, 3)
    out = np.zeros((len(images), h, w, 3), dtype=np.uint8)
    for r, im in zip(rows, shown):
        out[int(r)] = im
    return out


# ---- the run folder --------------------------------------------------------------------------------
def check_run_folder(out: Path) -> None:
    """Fail early when ``out`` cannot be a run folder (a file, or not writable)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output path {out} is not writable")


def finished_fit(out: Path, inputs: dict) -> LRAClassifier | None:
    """The classifier of a complete run in ``out`` whose recorded inputs equal ``inputs``, else None."""
    try:
        info = read_json(out / "config.json")
    except InputError:
        return None
    pipeline = info.get("pipeline") if isinstance(info, dict) else None
    if not isinstance(pipeline, dict) or pipeline.get("inputs") != inputs:
        return None
    if not (out / ENCODER_DIR / "encoder.json").is_file():
        return None
    try:
        return LRAClassifier.load(out)
    except InputError:
        return None


def finished_issues(out: Path, key: str, y: np.ndarray) -> LabelIssues | None:
    """The ``issues.csv`` of a reused fit when it was scored with the same settings (``key``), else None."""
    try:
        metrics = read_json(out / "metrics.json")
        if metrics.get("label_issues_sha256") != key or not (out / "issues.csv").is_file():
            return None
        issues = LabelIssues.from_csv(out / "issues.csv")
        issues.score = metrics.get("label_issue_score", issues.score)  # the CSV does not say which score it holds
    except (InputError, AttributeError):
        return None
    if len(issues) != len(y) or not np.array_equal(issues.given_label, y):
        return None
    return issues


def sha256_json(obj: Any) -> str:
    """The SHA-256 of ``obj`` as canonical JSON (sorted keys): a fingerprint of settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def prepare_run_folder(out: Path, *, overwrite: bool) -> bool:
    """Make ``out`` ready for a fit; returns whether to resume from its checkpoints.

    A folder holding a finished run of other inputs is refused unless ``overwrite`` (which removes
    only the run's own files); checkpoints without a finished run are resumed (the trainer checks they
    belong to the same inputs).
    """
    if overwrite:
        for name in RUN_OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return False
    if (out / "config.json").exists():
        raise InputError(f"{out} holds a run of other images, labels, config or seed; pass --overwrite to "
                         "replace it or choose another --out")
    return any((out / "checkpoints").glob("ckpt-*.safetensors"))


def write_issues_csv(path: Path, issues: LabelIssues, image_names: list[str], class_names: list[str]) -> None:
    """``issues.csv``: the columns of :meth:`LabelIssues.to_csv` (so ``LabelIssues.from_csv`` reads it) plus
    ``path``, ``given_class`` and ``predicted_class``; rows in training-image order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    has_true = issues.true_label is not None
    writer.writerow([*CSV_COLUMNS, *(["true_label"] if has_true else []), "path", "given_class", "predicted_class"])
    for r in range(len(issues)):
        given, pred = int(issues.given_label[r]), int(issues.predicted_label[r])
        writer.writerow([int(issues.index[r]), bool(issues.is_label_issue[r]), f"{issues.label_quality[r]:.6g}",
                         given, pred, *([int(issues.true_label[r])] if has_true else []),
                         image_names[r], class_names[given], class_names[pred]])
    atomic_write(path, buf.getvalue().encode())


# ---- prediction on images --------------------------------------------------------------------------
@dataclass
class ImagePredictions:
    """Predicted class ids (N,) of new images, their names, and accuracy when they were labelled."""

    image_names: list[str]
    labels: np.ndarray
    class_names: list[str]
    proba: np.ndarray | None = None  # (N, C') in the order of ``classes`` when asked for
    classes: np.ndarray | None = None  # the run's class ids (columns of proba)
    true_labels: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return None if self.true_labels is None else float((self.labels == self.true_labels).mean())

    def write(self, path: str | Path) -> None:
        """``.csv``: path, predicted label and class (and one probability column per class);
        ``.npy``: the labels (N,), or the probabilities (N, C') when computed."""
        path = Path(path)
        if path.suffix == ".npy":
            data = self.proba if self.proba is not None else self.labels
            atomic_write(path, lambda f: np.save(f, data, allow_pickle=False))
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = [f"p_{self.class_names[int(c)]}" for c in self.classes] if self.proba is not None else []
        writer.writerow(["path", "predicted_label", "predicted_class", *cols])
        for i, name in enumerate(self.image_names):
            extra = [f"{p:.6g}" for p in self.proba[i]] if self.proba is not None else []
            writer.writerow([name, int(self.labels[i]), self.class_names[int(self.labels[i])], *extra])
        atomic_write(path, buf.getvalue().encode())


def run_info(run_dir: str | Path) -> dict:
    """The ``pipeline`` block of a run folder's config.json (InputError for runs of `lra fit`)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    if not isinstance(info, dict) or "pipeline" not in info:
        raise InputError(f"{run_dir} was not trained from images (`lra run`), so it has no encoder: "
                         "give --features instead of --images")
    return info["pipeline"]


def predict_images(
    run_dir: str | Path,
    images: str | Path,
    *,
    root: str | Path | None = None,
    proba: bool = False,
    encoder_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> ImagePredictions:
    """Classify new images with a run of :func:`run`, re-encoding them with the run's saved encoder.

    ``images``: a folder (class folders named like the run's classes give an accuracy; any other folder
    is read recursively), a list file (labels optional) or a known dataset.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    est = LRAClassifier.load(run_dir)
    pipeline = run_info(run_dir)
    names = list(pipeline["class_names"])
    image_set = open_image_set(images, root=root, classes=names, require_labels=False, what="images")
    enc = load_run_encoder(run_dir, pipeline, **(encoder_options or {}))
    size = pipeline["encoder"].get("image_size")
    pixels = decode_images(image_set, size=size, ragged_ok=enc.ragged_input, progress=progress, encoder=enc.name)
    X = enc.encode(pixels, progress=progress)
    if pipeline["encoder"].get("pca"):
        tensors, _ = load_tensors(run_dir / pipeline["encoder"]["pca"])
        X = apply_pca(X, tensors["mean"].numpy(), tensors["components"].numpy())
    labels = est.predict(X)
    return ImagePredictions(
        image_names=image_set.names(), labels=np.asarray(labels), class_names=names,
        proba=est.predict_proba(X) if proba else None, classes=est.classes_,
        true_labels=image_set.labels, seconds=time.perf_counter() - start,
    )
