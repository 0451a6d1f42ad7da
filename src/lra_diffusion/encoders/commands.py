"""Library side of ``lra embed`` and ``lra pretrain simclr``: open a dataset, fit/load, embed, save."""

from __future__ import annotations

import ast
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lra_diffusion import distributed
from lra_diffusion.encoders.base import Encoder, ImageSource, num_images
from lra_diffusion.encoders.cache import embed, export_features, fit_cached
from lra_diffusion.errors import InputError

DATASET_KINDS = ("cifar10", "folder", "npy", "noisy-ag-news", "banking77", "text")
TEXT_KINDS = ("noisy-ag-news", "banking77", "text")


def open_images(dataset: str, root: str | os.PathLike[str], split: str) -> ImageSource:
    """The images (or texts) of one split.

    ``cifar10``: the shared JPEG copy (``root`` holds ``train.csv`` / ``test.csv`` and the
    archive); ``folder``: an ImageFolder tree ``root/<split>/<class>/<file>``; ``npy``: a uint8
    ``(N, H, W, 3)`` array in the file ``root/<split>.npy``. Text (for the text encoders):
    ``noisy-ag-news`` / ``banking77`` (the shared copies), ``text``: the ``text`` column of
    ``root/<split>.csv`` / ``.jsonl`` / ``.tsv`` (or of the file ``root``).
    """
    if dataset in TEXT_KINDS:
        from lra_diffusion.data.text import find_text_file, open_texts, read_texts

        if dataset == "text":
            return read_texts(find_text_file(root, split))  # type: ignore[return-value]
        return open_texts(dataset, root, split)  # type: ignore[return-value]
    root = Path(root)
    if dataset == "cifar10":
        from lra_diffusion.data import SharedCIFAR10

        return SharedCIFAR10(root, split=split)  # type: ignore[arg-type]
    if dataset == "folder":
        from lra_diffusion.data import ImageFolder

        return ImageFolder(root / split)
    if dataset == "npy":
        path = root / f"{split}.npy"
        if not path.is_file():
            raise InputError(f"image array {path} does not exist")
        return np.load(path, mmap_mode="r")
    raise InputError(f"unknown dataset kind {dataset!r}; choose one of {', '.join(DATASET_KINDS)}")


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["n_centroids=400", "sqrt_pool=true"]`` -> ``{"n_centroids": 400, "sqrt_pool": True}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"encoder option {item!r} must look like KEY=VALUE")
        low = raw.strip().lower()
        if low in ("true", "false", "none"):
            value: Any = {"true": True, "false": False, "none": None}[low]
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        out[key.strip().replace("-", "_")] = value
    return out


@dataclass
class EmbedResult:
    features: np.ndarray
    encoder: Encoder
    seconds: float
    out: Path | None


def embed_dataset(
    encoder_name: str,
    *,
    dataset: str,
    root: str | os.PathLike[str],
    split: str,
    cache_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    encoder_dir: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    fit_split: str = "train",
    dtype: str = "float32",
    progress: bool = True,
    chunk_size: int = 4096,
) -> EmbedResult:
    """Fit (once, cached) or load an encoder, embed one split through the cache, export to ``out``.

    Encoders that learn without labels (pixels, kmeans) are fitted on the unlabelled images of
    ``fit_split``, or loaded from ``encoder_dir`` (written by ``encoder.save``).
    """
    from lra_diffusion.encoders import get_encoder, load_encoder

    t0 = time.perf_counter()
    options = dict(options or {})
    if encoder_dir is not None:
        encoder = load_encoder(encoder_dir, **options)
        if encoder.name != encoder_name:
            raise InputError(f"{encoder_dir} holds a {encoder.name!r} encoder, not {encoder_name!r}")
    else:
        encoder = get_encoder(encoder_name, **options)
    images = _decoded(open_images(dataset, root, split))
    ctx = distributed.context()
    if encoder.needs_fit and not encoder.is_fitted:
        fit_images = images if fit_split == split else _decoded(open_images(dataset, root, fit_split))
        if ctx.is_main:  # in a torchrun job rank 0 fits and saves; the others then load what it saved
            encoder = fit_cached(encoder, fit_images, cache_dir=cache_dir, progress=progress)
        distributed.barrier(ctx)
        if not ctx.is_main:
            encoder = fit_cached(encoder, fit_images, cache_dir=cache_dir)
    feats = embed(encoder, images, cache_dir=cache_dir, split=split, dataset=dataset,
                  dtype=dtype, progress=progress, chunk_size=chunk_size)  # type: ignore[arg-type]
    written = None if out is None or not ctx.is_main else export_features(feats, out)
    return EmbedResult(feats, encoder, time.perf_counter() - t0, written)


def _decoded(images: ImageSource) -> ImageSource:
    """Decode a dataset of in-memory encoded images (the shared CIFAR-10 copy) into one array.

    Encoding then skips per-item JPEG decoding, and the cache key is that of the pixel array, so
    ``lra embed`` and library code holding :func:`~lra_diffusion.data.load_shared_cifar10` arrays
    share cached features.
    """
    if getattr(images, "blobs", None) is None or getattr(images, "array", None) is not None:
        return images
    from lra_diffusion.data import load_images

    try:
        return load_images(images, progress=False)  # type: ignore[arg-type]
    except InputError:  # images of different sizes: keep the dataset (ragged encoders cope)
        return images


def pretrain_simclr_on(
    *,
    dataset: str,
    root: str | os.PathLike[str],
    split: str = "train",
    out: str | os.PathLike[str],
    subset: int | None = None,
    monitor_split: str | None = None,
    seed: int = 0,
    **options: Any,
) -> Encoder:
    """:func:`pretrain_simclr` on a dataset split (optionally its first ``subset`` images).

    With ``monitor_split`` (e.g. ``"test"``), the dataset's labels are used for a k-NN monitor
    only; the NT-Xent loss never sees them.
    """
    from lra_diffusion.encoders.simclr import pretrain_simclr

    images = open_images(dataset, root, split)
    n = num_images(images)
    which = np.arange(n if subset is None else min(subset, n))
    images = _take(images, which)
    monitor = None
    if monitor_split is not None:
        labels = getattr(open_images(dataset, root, split), "labels", None)
        test = open_images(dataset, root, monitor_split)
        test_labels = getattr(test, "labels", None)
        if labels is None or test_labels is None:
            raise InputError(f"dataset kind {dataset!r} has no labels for the k-NN monitor")
        m = np.arange(min(len(test_labels), 2000))
        monitor = (np.asarray(labels)[which], _take(test, m), np.asarray(test_labels)[m])
    return pretrain_simclr(images, checkpoint_dir=out, monitor=monitor, seed=seed, **options)


def _take(images: ImageSource, which: np.ndarray) -> np.ndarray:
    from lra_diffusion.encoders.base import take_images

    return take_images(images, which)
