"""The ``lra`` command line: the only place that reads argv, picks paths and seeds.

Every command exits 0 on success and 2 with a one-line ``error: ...`` message on bad input or usage,
having written no output file.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from .errors import InputError

# issues.SCORES with "auto", spelled out so that `lra --help` does not import torch
SCORE_HELP = "auto | closeness | stochastic | agreement | prior | closeness_prior | mean (docs/label-issues.md)."

app = typer.Typer(
    help="LRA-diffusion: learn from noisy labels with label-retrieval-augmented diffusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(*args, group: typer.Typer | None = None, **kwargs):
    """``app.command`` (or ``group.command``) that turns :class:`InputError` into ``error: <message>``
    and exit code 2."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            with warnings.catch_warnings():
                warnings.showwarning = show_warning
                try:
                    return fn(*a, **kw)
                except InputError as e:
                    typer.echo(f"error: {e}", err=True)
                    raise typer.Exit(2) from None

        return (group or app).command(*args, **kwargs)(wrapper)

    return decorate


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, ``warning: <message>`` (e.g. a skipped broken checkpoint)."""
    typer.echo(f"warning: {message}", err=True)


def first_missing(path: Path) -> Path | None:
    """The top-most folder of ``path`` that does not exist yet (what a command would create), or None."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def load_checked(path: Path, what: str, *, kinds: str, ndim: int, expected: str) -> np.ndarray:
    """A ``.npy`` array of dtype kind in ``kinds`` and ``ndim`` dimensions, non-empty, else InputError."""
    from .io import load_array

    a = load_array(path, what=what)
    if a.dtype.kind not in kinds:
        raise InputError(f"{what} file {path} holds {a.dtype} values; expected {expected}")
    if a.ndim != ndim:
        shape = "2-D (N, D)" if ndim == 2 else "1-D (N,)"
        raise InputError(f"{what} in {path} must be {shape}, got shape {a.shape}")
    if len(a) == 0:
        raise InputError(f"{what} file {path} is empty")
    return a


def load_features(path: Path, what: str = "features") -> np.ndarray:
    """A 2-D numeric feature array from ``.npy``, validated."""
    return load_checked(path, what, kinds="biuf", ndim=2, expected="numbers")


MMAP_BYTES = 512 * 2**20


def load_train_features(path: Path, mmap: bool | None = None) -> np.ndarray:
    """Training features: memory-mapped when ``mmap`` (None: when the file is over 512 MB), else loaded."""
    if mmap is None:
        mmap = path.is_file() and path.stat().st_size > MMAP_BYTES
    if not mmap:
        return load_features(path)
    from .features import open_features

    return open_features(path)


def load_labels(path: Path, what: str = "labels") -> np.ndarray:
    """A 1-D label array (numbers or strings) from ``.npy``, validated."""
    return load_checked(path, what, kinds="biuUS", ndim=1, expected="integers or strings")


def check_writable(path: Path, *, is_dir: bool = False) -> None:
    """Fail early if ``path`` (a file, or a folder to create) cannot be written."""
    if is_dir and path.exists() and not path.is_dir():
        raise InputError(f"output path {path} exists and is not a directory")
    if not is_dir and path.exists() and not path.is_file():  # a folder, or a device such as /dev/full
        raise InputError(f"output path {path} exists and is not a regular file")
    parent = path if is_dir and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output path {path} is not writable")


@command()
def fit(
    features: Annotated[Path, typer.Option(help="Training features, .npy (N, D).")],
    labels: Annotated[Path, typer.Option(help="Noisy training labels, .npy (N,).")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    val_features: Annotated[Optional[Path], typer.Option(help="Validation features .npy.")] = None,
    val_labels: Annotated[Optional[Path], typer.Option(help="Validation labels .npy (e.g. clean).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML config file.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default: auto).")] = None,
    k: Annotated[Optional[str], typer.Option(help="Neighbours for label retrieval, used as given (without it: the config's k, 10, checked against k = 0 as README 'How the defaults are chosen' says), or 'auto': fit with the config's k and with 0, keep the better on the validation data.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --out.")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        help="Also checkpoint every N optimiser steps (default: the config's train.checkpoint_every; "
             "0 = at epoch ends only).")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="Where to train: auto | cpu | cuda | cuda:I (default: the config's runtime.device, cpu).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    mmap: Annotated[Optional[bool], typer.Option(
        help="Memory-map --features and read it in chunks (default: for files over 512 MB; docs/scale.md).")] = None,
    nproc: Annotated[int, typer.Option(min=1, help="Train in N processes with DistributedDataParallel: runs "
                                                    "torchrun --nproc-per-node N (gloo on CPU, NCCL on GPUs).")] = 1,
) -> None:
    """Train LRA-diffusion on feature vectors with noisy labels; write a run directory."""
    from .config import Config
    from .device import resolve_device
    from .estimator import LRAClassifier

    if nproc > 1:
        from .distributed import torchrun_argv

        raise typer.Exit(subprocess.call(torchrun_argv(nproc, sys.argv[1:])))

    if k is not None and k != "auto":
        if not k.isdigit():
            raise InputError(f"--k must be an integer >= 0 or 'auto', got {k!r}")
        k = int(k)
    cfg = Config.from_toml(config) if config else Config()
    resolve_device(device or cfg.runtime.device)  # a GPU that is not there fails before any work
    if checkpoint_every is not None:
        cfg = cfg.replace(train={"checkpoint_every": checkpoint_every})
    X, y = load_train_features(features, mmap), load_labels(labels)
    if len(X) != len(y):
        raise InputError(f"{features} has {len(X)} rows but {labels} has {len(y)} labels")
    if (val_features is None) != (val_labels is None):
        raise InputError("give both --val-features and --val-labels, or neither")
    X_val = load_features(val_features, "validation features") if val_features else None
    y_val = load_labels(val_labels, "validation labels") if val_labels else None
    check_writable(out, is_dir=True)
    est = LRAClassifier(epochs=epochs, k=k, config=cfg, random_state=seed, device=device, verbose=not quiet)
    created = first_missing(out)
    try:
        est.fit(X, y, X_val=X_val, y_val=y_val, run_dir=out, resume=resume)
    except InputError:
        # bad input found late, or a full disk: leave no partial run behind (a folder that existed, e.g.
        # one being resumed, keeps its checkpoints)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    info = est.fit_info_
    best = f", validation accuracy of the kept weights {info['best_val_accuracy']:.4f}" if info["best_val_accuracy"] is not None else ""
    resumed = f" (resumed from step {info['resumed_from_step']})" if info["resumed_from_step"] else ""
    if "mlp_val_accuracy" in info.get("prior", {}):
        prior = info["prior"]
        linear = f", linear {prior['linear_val_accuracy']:.4f}" if "linear_val_accuracy" in prior else ""
        decay = f" at weight decay {prior['mlp_weight_decay']:g}" if "mlp_weight_decay" in prior else ""
        typer.echo(f"prior f_q: {prior['kind']} (validation accuracy: MLP {prior['mlp_val_accuracy']:.4f}{decay}{linear})")
    if info.get("prior", {}).get("targets") == "retrieval":
        typer.echo("prior f_q: fitted to the retrieval targets (the neighbour-label draws), not the labels")
    if info.get("prior", {}).get("kind") == "zero":
        typer.echo(f"prior f_q: none (the labels flip in pairs: flip concentration "
                   f"{info['k_rule']['flip_concentration']:.2f}; a classifier fitted to them would learn the flips)")
    if "projection" in info:
        proj = info["projection"]
        kept = "kept" if proj["kept"] else "not kept (the features stay whole)"
        typer.echo(f"wide features: the top {proj['rank']} principal components {kept}; a logistic regression on "
                   f"them predicts {proj['projected_val_accuracy']:.4f} of the validation labels, on all features "
                   f"{proj['whole_val_accuracy']:.4f}")
    if "k_rule" in info:
        rule = info["k_rule"]
        typer.echo(f"k check: the nearest neighbours' vote predicts {rule['vote_accuracy']:.4f} of the "
                   f"validation labels, the prior {rule['prior_accuracy']:.4f}")
    if info.get("selection", {}).get("kept") == "average":
        epochs_avg = info["selection"]["averaged_epochs"]
        typer.echo(f"model selection: the weights of {len(epochs_avg)} epochs averaged ({', '.join(map(str, epochs_avg))}: "
                   f"within one standard error of the best validation accuracy, epoch {info['selection']['best_epoch']})")
    if info.get("selection", {}).get("kept") == "start":
        sel = info["selection"]
        typer.echo(f"model selection: the untrained start (the prior) kept; the one trained epoch near the best, "
                   f"epoch {sel['best_epoch']}, is not clearly more accurate (validation rows only it gets right: "
                   f"{sel['best_only']}, only the start: {sel['start_only']})")
    if "k_selection" in info:
        accs = ", ".join(f"k={kk}: {acc:.4f}" for kk, acc in info["k_selection"].items())
        typer.echo(f"k chosen on the validation labels: {accs}; kept k={info['retrieval_k']}")
    for k in info.get("k_at_start", []):
        typer.echo(f"  the k={k} fit ended at its untrained start (the prior), which the kept fit had weighed as a "
                   f"candidate and passed over: not a rival")
    from .distributed import context, shutdown

    if context().is_main:
        typer.echo(f"trained {info['epochs']} epochs in {info['seconds']:.1f} s{resumed}{best}; run written to {out}")
    shutdown()


@command()
def predict(
    model: Annotated[Path, typer.Option(help="Run directory written by `lra fit` or `lra run`.")],
    out: Annotated[Path, typer.Option(help="Output: .npy labels (N,) or probabilities (N, C); with --images "
                                           "also .csv (path, predicted label and class).")],
    features: Annotated[Optional[Path], typer.Option(help="Features to classify, .npy (N, D).")] = None,
    images: Annotated[Optional[str], typer.Option(help="Images to classify (a run of `lra run`): a folder (read "
                                                       "recursively), a list file, or cifar10[:split].")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Folder a list file's paths are relative to; a known "
                                                      "dataset's root.")] = None,
    proba: Annotated[bool, typer.Option(help="Write class probabilities instead of labels.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Where to run the denoiser (--features) or the encoder "
                                                       "(--images): auto | cpu | cuda | cuda:I (default cpu).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Classify feature vectors, or images with the encoder saved in the run, with a trained run."""
    from .device import resolve_device
    from .estimator import LRAClassifier
    from .io import atomic_write

    if (features is None) == (images is None):
        raise InputError("give --features or --images (one of them)")
    if device is not None:
        device = str(resolve_device(device))  # "auto" becomes what it means here; a missing GPU fails now
    if images is not None:
        from .pipeline import predict_images

        if out.suffix not in (".csv", ".npy"):
            raise InputError(f"output {out} must end in .csv or .npy")
        check_writable(out)
        pred = predict_images(model, images, root=root, proba=proba, progress=not quiet,
                              encoder_options={"device": device} if device else None)
        pred.write(out)
        acc = f"; accuracy {pred.accuracy:.4f} against their class folders / labels" if pred.accuracy is not None else ""
        typer.echo(f"classified {len(pred.labels)} images in {pred.seconds:.1f} s{acc}; wrote {out}")
        return
    est = LRAClassifier.load(model, device=device)
    X = load_features(features)
    if X.shape[1] != est.n_features_in_:
        raise InputError(f"{features} has {X.shape[1]} features per row but the model was trained on {est.n_features_in_}")
    if out.suffix != ".npy":
        raise InputError(f"output {out} must end in .npy")
    check_writable(out)
    result = est.predict_proba(X) if proba else est.predict(X)
    atomic_write(out, lambda f: np.save(f, result, allow_pickle=False))
    typer.echo(f"wrote {out} ({'probabilities' if proba else 'labels'}, shape {result.shape})")


@command("run")
def run_images(
    images: Annotated[str, typer.Option(help="Training images: an ImageFolder tree DIR/<class>/<image>, a list "
                                             "file ('relative/path label' rows), or cifar10[:split] with --root.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    encoder: Annotated[str, typer.Option(help="efficientnet-lite2 (ImageNet, installed with the package) | "
                                              "efficientnet-lite0 | efficientnet-lite1 | pixels | kmeans | simclr "
                                              "| clip | dinov2.")] = "efficientnet-lite2",
    labels: Annotated[Optional[Path], typer.Option(help="Labels you do not fully trust: a list file naming the "
                                                        "images ('path label', labels are class ids or names), or a "
                                                        "label file aligned with the images (.npy, index CSV).")] = None,
    encoder_path: Annotated[Optional[Path], typer.Option(help="A saved encoder folder (encoder.json), SimCLR or "
                                                              "EfficientNet-Lite weights, or a CLIP / DINOv2 model "
                                                              "folder.")] = None,
    test_images: Annotated[Optional[str], typer.Option(help="Test images (same kinds as --images) for the test "
                                                            "accuracy.")] = None,
    test_labels: Annotated[Optional[Path], typer.Option(help="Labels of the test images (default: their class "
                                                             "folders / list file).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML config file.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (fit, held-out split, scores).")] = 0,
    holdout: Annotated[Optional[int], typer.Option(help="Hold out this many noisy training labels for model "
                                                        "selection (default: the config's train.val_fraction).")] = None,
    holdout_seed: Annotated[Optional[int], typer.Option(help="Seed of the held-out permutation (default --seed).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Folder a list file's paths are relative to (default: its "
                                                      "folder); a known dataset's root.")] = None,
    test_root: Annotated[Optional[Path], typer.Option(help="As --root, for --test-images.")] = None,
    labels_column: Annotated[Optional[str], typer.Option(help="Label column of an aligned CSV / .pt label file "
                                                              "(e.g. worse for cifar10n.csv).")] = None,
    true_labels: Annotated[Optional[Path], typer.Option(help="Clean labels (as --labels), to measure the label-issue "
                                                             "flags: precision, recall, F1, AUROC.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Encoder option KEY=VALUE "
                                                                             "(repeatable), e.g. -o n_centroids=400.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize (shorter side) and centre-crop every image to "
                                                           "SxS first (images of mixed sizes; EfficientNet-Lite "
                                                           "does this itself, at its input size).")] = None,
    pca: Annotated[Optional[int], typer.Option(help="Reduce the features to this many principal components "
                                                    "(fitted on the unlabelled training features) before training.")] = None,
    device: Annotated[str, typer.Option(help="Encoder device: auto | cpu | cuda | cuda:I.")] = "cpu",
    cache_dir: Annotated[Path, typer.Option(help="Feature cache directory.")] = Path("cache/features"),
    score: Annotated[str, typer.Option(help=f"Label-issue score: {SCORE_HELP}")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(help="Flag label scores below this (default 0.5).")] = None,
    noise_rate: Annotated[Optional[float], typer.Option(help="Instead of a threshold: flag this fraction.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run of other inputs in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No stage messages or progress bars.")] = False,
) -> None:
    """Images + noisy labels -> trained model, issues.csv (labels to fix) and report.html, in one go.

    Re-running with the same inputs reuses the cached features and the finished fit.
    """
    from .device import resolve_device
    from .encoders.commands import parse_options
    from .pipeline import run

    check_writable(out, is_dir=True)
    options = parse_options(option)
    options.setdefault("device", str(resolve_device(device)))
    result = run(images, labels=labels, encoder=encoder, encoder_path=encoder_path, out=out,
                 test_images=test_images, test_labels=test_labels, config=config, seed=seed,
                 cache_dir=cache_dir, progress=not quiet, root=root, test_root=test_root,
                 labels_column=labels_column, true_labels=true_labels, encoder_options=options,
                 image_size=image_size, pca=pca, holdout=holdout, holdout_seed=holdout_seed, score=score,
                 threshold=threshold, noise_rate=noise_rate, overwrite=overwrite)
    typer.echo(result.summary())


@command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Random seed (noise, split and training).")] = 0,
) -> None:
    """Noisy-label demo on scikit-learn's bundled digits: LRA-diffusion against baselines."""
    from .demo import run_demo

    check_writable(out, is_dir=True)
    run_demo(out=out, seed=seed)


@command()
def noise(
    clean: Annotated[Path, typer.Option(help="Clean labels: .npy, .csv (index column), .txt or CIFAR-N .pt.")],
    out: Annotated[Path, typer.Option(help="Noisy labels to write: .npy, .csv or .txt.")],
    model: Annotated[str, typer.Option(help="symmetric | asymmetric | pairflip | instance | pmd.")],
    rate: Annotated[float, typer.Option(help="The model's noise rate in [0, 1].")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    then: Annotated[Optional[str], typer.Option(help="Models applied on top, e.g. 'symmetric:0.6'.")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Number of classes (default: max label + 1).")] = None,
    column: Annotated[Optional[str], typer.Option(help="Label column of a CSV / key of a .pt file.")] = None,
    first: Annotated[Optional[int], typer.Option(help="Use only the first N labels (45000 for CIFAR).")] = None,
    features: Annotated[Optional[Path], typer.Option(help="Per-sample features .npy (N, D) for 'instance'.")] = None,
    posteriors: Annotated[Optional[Path], typer.Option(help="Class posteriors .npy (N, C) for 'pmd'.")] = None,
    pmd_type: Annotated[int, typer.Option(help="PMD noise type 1, 2 or 3.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Make a noisy label file from a clean one; print the realised rate and transition matrix."""
    from .data.make_noise import format_report, make_noisy_label_file
    from .data.noise import parse_noise_steps

    steps = parse_noise_steps(then) if then else []
    check_writable(out)
    report = make_noisy_label_file(clean, out, model=model, rate=rate, seed=seed, then=steps,
                                   num_classes=num_classes, column=column, first=first,
                                   features=features, posteriors=posteriors, pmd_type=pmd_type,
                                   overwrite=overwrite)
    typer.echo(format_report(report))

@command()
def embed(
    encoder: Annotated[str, typer.Option(help="efficientnet-lite0 | efficientnet-lite1 | efficientnet-lite2 (-o image_size=160) | pixels | kmeans | simclr | clip | dinov2 | precomputed; text: minilm | sentence-transformer (-o model=DIR).")],
    out: Annotated[Path, typer.Option(help="Features to write, .npy (N, D).")],
    dataset: Annotated[str, typer.Option(help="cifar10 (shared JPEG copy) | folder (ROOT/SPLIT/<class>/...) | npy (ROOT/SPLIT.npy, uint8 N,H,W,3); text: noisy-ag-news | banking77 (shared copies) | text (column 'text' of ROOT/SPLIT.csv or .jsonl, or of the file ROOT).")] = "cifar10",
    root: Annotated[Path, typer.Option(help="Dataset root.")] = Path("../shared/data/cifar10"),
    split: Annotated[str, typer.Option(help="Split to embed.")] = "train",
    fit_split: Annotated[str, typer.Option(help="Unlabelled split pixels/kmeans are fitted on.")] = "train",
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Encoder option KEY=VALUE (repeatable), e.g. -o weights=SimCLR_128_cifar10.pt, -o model=DIR, -o path=feats.npy.")] = None,
    encoder_dir: Annotated[Optional[Path], typer.Option(help="A saved encoder (encoder.json) to use instead of fitting.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache directory.")] = Path("cache/features"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:I.")] = "cpu",
    float16: Annotated[bool, typer.Option(help="Store the features as float16.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows written (and resumable) at a time; the unit of "
                                                         "work each process takes.")] = 4096,
    nproc: Annotated[int, typer.Option(min=1, help="Embed in N processes (torchrun --nproc-per-node N), each "
                                                    "writing its share of the chunks into the one cache.")] = 1,
) -> None:
    """Embed a dataset split once (cached by data, encoder weights, split and dtype) and write .npy.

    Under ``torchrun`` (or with ``--nproc``) the ranks split the images chunk by chunk (docs/scale.md)."""
    from . import distributed
    from .device import resolve_device
    from .encoders.commands import embed_dataset, parse_options

    if nproc > 1:
        raise typer.Exit(subprocess.call(distributed.torchrun_argv(nproc, sys.argv[1:])))
    dev = resolve_device(device)  # "auto" becomes what it means here; a missing GPU fails now
    ctx = distributed.init(dev)
    device = str(distributed.rank_device(dev, ctx))  # cuda: one GPU per rank
    check_writable(out)
    options = parse_options(option)
    if encoder != "precomputed":
        options.setdefault("device", device)
    res = embed_dataset(encoder, dataset=dataset, root=root, split=split, cache_dir=cache_dir,
                        out=out, encoder_dir=encoder_dir, options=options, fit_split=fit_split,
                        dtype="float16" if float16 else "float32", progress=not quiet, chunk_size=chunk_size)
    n, d = res.features.shape
    if ctx.is_main:
        ranks = f", {ctx.world} processes" if ctx.active else ""
        typer.echo(f"{encoder} features {n} x {d} ({res.features.dtype}) -> {out} "
                   f"[{res.seconds:.1f} s{ranks}, encoder {res.encoder.fingerprint()}]")
    distributed.shutdown()


pretrain_app = typer.Typer(help="Train an encoder without labels.", no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")


@command("simclr", group=pretrain_app)
def pretrain_simclr(
    out: Annotated[Path, typer.Option(help="Directory for checkpoint.pt and the trained encoder/.")],
    dataset: Annotated[str, typer.Option(help="cifar10 | folder | npy (as in `lra embed`).")] = "cifar10",
    root: Annotated[Path, typer.Option(help="Dataset root.")] = Path("../shared/data/cifar10"),
    split: Annotated[str, typer.Option(help="Unlabelled split to train on.")] = "train",
    subset: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    arch: Annotated[str, typer.Option(help="resnet18 | resnet50.")] = "resnet18",
    width: Annotated[int, typer.Option(help="Base channel width (64 = the standard ResNet).")] = 64,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Images per batch (two views each).")] = 512,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    temperature: Annotated[float, typer.Option(help="NT-Xent temperature.")] = 0.5,
    monitor_split: Annotated[Optional[str], typer.Option(help="Labelled split for a k-NN monitor (labels never reach the loss), e.g. test.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:I.")] = "cpu",
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA (bfloat16 where supported).")] = True,
    compile: Annotated[bool, typer.Option(help="torch.compile the network (CUDA only).")] = False,
    time_limit: Annotated[Optional[float], typer.Option(
        help="Stop after the last epoch that fits in this many seconds; run again to continue.")] = None,
    export: Annotated[Optional[Path], typer.Option(
        help="Then write the weights as float16 safetensors here (e.g. models/simclr-cifar10.safetensors) "
             "and print its size and SHA-256 for the model card.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt if present.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """SimCLR (NT-Xent) pretraining of a CIFAR-style ResNet; checkpoints every epoch, resumable."""
    from .device import resolve_device
    from .encoders.commands import pretrain_simclr_on

    if resolve_device(device).type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time and keep its fastest kernels
    device = str(resolve_device(device))
    check_writable(out, is_dir=True)
    if export is not None:
        if export.suffix != ".safetensors":
            raise InputError(f"export file {export} must end in .safetensors")
        check_writable(export)
    enc = pretrain_simclr_on(dataset=dataset, root=root, split=split, out=out, subset=subset,
                             monitor_split=monitor_split, seed=seed, arch=arch, width=width,
                             epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature,
                             device=device, amp=amp, compile=compile, time_limit=time_limit,
                             resume=resume, progress=not quiet, log=typer.echo)
    done = len(enc.history_)
    typer.echo(f"saved encoder after epoch {done}/{epochs} to {out / 'encoder'} (use: lra embed --encoder simclr "
               f"--encoder-dir {out / 'encoder'} ...); final nt-xent {enc.history_[-1]['loss']:.4f}")
    if export is not None:
        from .encoders.simclr import export_weights

        last = enc.history_[-1]
        info = export_weights(enc, export, metadata={
            "epochs": done, "epochs_planned": epochs, "batch_size": batch_size, "lr": lr,
            "temperature": temperature, "seed": seed, "dataset": f"{dataset}:{split}", "subset": subset,
            "train_seconds": round(sum(h["seconds"] for h in enc.history_), 1),
            "final_loss": last["loss"], "monitor_knn_acc": last.get("knn_acc"),
        })
        typer.echo(f"exported {info['dtype']} weights after epoch {done}/{epochs} to {export}: "
                   f"{info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256']}")


@command()
def issues(
    model: Annotated[Path, typer.Option(help="Run directory written by `lra fit`.")],
    features: Annotated[Path, typer.Option(help="The training features, .npy (N, D).")],
    labels: Annotated[Path, typer.Option(help="Their given (noisy) labels, .npy (N,).")],
    out: Annotated[Path, typer.Option(help="Output CSV: index,is_label_issue,label_quality,given_label,predicted_label.")],
    true_labels: Annotated[Optional[Path], typer.Option(help="Clean labels .npy (N,): also print precision, recall, F1, AUROC.")] = None,
    score: Annotated[str, typer.Option(help=SCORE_HELP)] = "auto",
    threshold: Annotated[Optional[float], typer.Option(help="Flag scores below this (default 0.5).")] = None,
    noise_rate: Annotated[Optional[float], typer.Option(help="Instead of a threshold: flag this fraction, lowest scores first.")] = None,
    cv: Annotated[Optional[int], typer.Option(help="Out-of-sample scores from K fresh fits (default: the run's model, in-sample).")] = None,
    n_samples: Annotated[int, typer.Option(help="Stochastic DDIM runs for the 'stochastic' score.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (stochastic runs, folds).")] = 0,
) -> None:
    """Rank training labels by label quality and flag the likely wrong ones."""
    from .estimator import LRAClassifier
    from .issues import find_label_issues

    est = LRAClassifier.load(model)
    X = load_features(features)
    y = load_labels(labels)
    if X.shape[1] != est.n_features_in_:
        raise InputError(f"{features} has {X.shape[1]} features per row but the model was trained on {est.n_features_in_}")
    if len(y) != len(X):
        raise InputError(f"{features} has {len(X)} rows but {labels} has {len(y)} labels")
    t = load_labels(true_labels, "true labels") if true_labels is not None else None
    if t is not None and len(t) != len(y):
        raise InputError(f"{true_labels} has {len(t)} labels but {labels} has {len(y)}")
    if out.suffix != ".csv":
        raise InputError(f"output {out} must end in .csv")
    check_writable(out)
    if cv is not None:
        est = LRAClassifier(**{**est.get_params(), "config": est.config_, "random_state": seed})
    result = find_label_issues(X, y, estimator=est, cv=cv, score=score, threshold=threshold, noise_rate=noise_rate,
                               n_samples=n_samples, true_labels=t, random_state=seed)
    result.to_csv(out)
    flagged = int(result.is_label_issue.sum())
    how = "in-sample" if cv is None else f"out-of-sample, {cv} folds"
    typer.echo(f"scored {len(result)} labels ({result.score}, {how}); flagged {flagged} ({flagged / len(result):.2%}); wrote {out}")
    if t is not None:
        m = result.metrics()
        typer.echo(f"{'':>10}  precision  recall      F1   AUROC")
        typer.echo(f"{'flags':>10}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['auroc']:6.4f}"
                   f"   ({m['errors']} wrong labels among {len(result)})")


@command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `lra fit` or `lra demo`.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default RUN_DIR/report.html).")] = None,
    issues_csv: Annotated[Optional[Path], typer.Option("--issues", help="Issues CSV (default RUN_DIR/issues.csv if present).")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Training images .npy, uint8 (N, H, W, 3) (default RUN_DIR/images.npy).")] = None,
    texts: Annotated[Optional[Path], typer.Option(help="Training texts: the 'text' column of a .csv / .jsonl / .tsv, in training order (default RUN_DIR/texts.jsonl).")] = None,
) -> None:
    """Write one self-contained HTML report of a run (plots embedded)."""
    from .io import load_array
    from .issues import LabelIssues
    from .report import write_report

    found = LabelIssues.from_csv(issues_csv) if issues_csv is not None else None
    imgs = load_array(images, what="images") if images is not None else None
    target = out if out is not None else run_dir / "report.html"
    if out is not None:
        if out.suffix != ".html":
            raise InputError(f"output {out} must end in .html")
        check_writable(out)
    if texts is not None:
        from .data.text import read_texts

        texts = read_texts(texts)
    path = write_report(run_dir, target, issues=found, images=imgs, texts=texts)
    typer.echo(f"wrote {path}")


bench_app = typer.Typer(help="Accuracy benchmarks (the scripts in benchmarks/).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@command("cifar10", group=bench_app)
def bench_cifar10(
    encoder: Annotated[str, typer.Option(help="Encoder whose features every method uses.")] = "kmeans",
    seeds: Annotated[Optional[list[int]], typer.Option("--seed", help="Seed (repeatable); default 0.")] = None,
    setting: Annotated[Optional[list[str]], typer.Option("--setting", help="Label setting (repeatable); default all.")] = None,
    shared: Annotated[Path, typer.Option(help="The shared CIFAR-10 folder (train.csv, test.csv, noisy_labels/).")] = Path("../shared/data/cifar10"),
    cache_dir: Annotated[Path, typer.Option(help="Feature cache directory.")] = Path("cache/features"),
    results: Annotated[Path, typer.Option(help="Where results/<encoder>/<setting>-seed<k>.json go.")] = Path("results"),
    markdown: Annotated[Path, typer.Option(help="Markdown file whose tables are regenerated.")] = Path("BENCHMARKS.md"),
    pca: Annotated[int, typer.Option(help="PCA dimension of the features (0 = none).")] = 512,
    ablations: Annotated[bool, typer.Option(help="Run the ablation table instead of the main one.")] = False,
    table_only: Annotated[bool, typer.Option(help="Only regenerate the main table from the results.")] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes (one torch thread each) running settings side by side.")] = 1,
) -> None:
    """LRA-diffusion against baselines on the shared CIFAR-10 (same as benchmarks/cifar10.py)."""
    from .benchmark import CIFAR10_SETTINGS, cifar10_main

    if not (shared / "train.csv").is_file():
        raise InputError(f"{shared} is not the shared CIFAR-10 folder (no train.csv); pass --shared")
    cifar10_main(encoder=encoder, seeds=seeds or [0], settings=setting or list(CIFAR10_SETTINGS),
                 shared_root=shared, cache_dir=cache_dir, results_dir=results, markdown=markdown,
                 pca=pca or None, ablations=ablations, table_only=table_only, jobs=jobs)


def main() -> None:
    """The ``lra`` command (``lra --help`` lists its subcommands)."""
    app()


if __name__ == "__main__":
    sys.exit(main())
