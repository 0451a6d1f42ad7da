"""The feature cache: every embedding pass is computed once, written in chunks, read memory-mapped.

Layout under ``cache_dir``::

    <encoder name>/<dataset>-<split>-<key>/manifest.json   what the key was made of, progress
    <encoder name>/<dataset>-<split>-<key>/features.npy    (N, D) float32 or float16, when complete
    <encoder name>/<dataset>-<split>-<key>/features.partial.npy   while being written
    <encoder name>/fitted-<key>/                           a fitted encoder (encoder.save)
    <encoder name>/<...>-<key>/.lock                       held while one process writes the entry

The key hashes the dataset fingerprint (image content, or paths + sizes + mtimes for files on disk),
the encoder's fingerprint (name, config and weights / learned state), the split, the transform and
the storage dtype. A run writes ``chunk_size`` rows at a time into a memory-mapped ``.npy`` file and
records the rows done in the manifest (written atomically) after each chunk, so an interrupted run
resumes from the last finished chunk; the finished file is moved into place with ``os.replace``.

Two processes asking for the same key at once (two jobs on one machine) do not write it twice: the first
holds a file lock (``.lock`` in the entry's folder, `filelock`) while it computes the features or fits the
encoder, the second waits, then reads what the first wrote. The ranks of one ``torchrun`` job share the
work by barriers instead (below).

A cache hit returns the bytes that were written. A resumed run writes what an uninterrupted one would,
bit for bit, when ``chunk_size`` and the encoder's batch size are unchanged (each chunk starts a new
batch); the key leaves them out because other batches change only the rounding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock, Timeout

from lra_diffusion import distributed
from lra_diffusion.encoders.base import (
    Encoder,
    ImageSource,
    atomic_path,
    num_images,
    progress_bar,
)
from lra_diffusion.errors import InputError

FEATURES_FILE = "features.npy"
PARTIAL_FILE = "features.partial.npy"
MANIFEST_FILE = "manifest.json"
CACHE_VERSION = 1
DTYPES = ("float32", "float16")


def dataset_fingerprint(images: ImageSource) -> str:
    """Hex digest identifying the images an encoder would see, in order.

    Arrays, and datasets backed by one (``dataset.array``), hash the array's bytes. Other datasets
    of :mod:`lra_diffusion.data` hash their in-memory encoded bytes, or (files on disk) their root,
    relative paths, file sizes and mtimes, plus the canonical indices. Any other dataset has every image read and hashed. A dataset may
    also provide its own ``fingerprint()`` method (text datasets hash their texts); a plain list of
    strings hashes the strings.
    """
    h = hashlib.sha256()
    array = getattr(images, "array", None)
    if isinstance(images, np.ndarray) or isinstance(array, np.ndarray):
        # an array-backed dataset shows the encoder exactly its array: same key as the array
        _hash_array(h, images if isinstance(images, np.ndarray) else array)
        return h.hexdigest()[:16]
    if isinstance(images, (list, tuple)) and all(isinstance(t, str) for t in images):
        from lra_diffusion.encoders.text import texts_fingerprint  # a list of texts

        h.update(texts_fingerprint(list(images)).encode())
        return h.hexdigest()[:16]
    own = getattr(images, "fingerprint", None)
    if callable(own):
        h.update(str(own()).encode())
        return h.hexdigest()[:16]
    h.update(f"{type(images).__name__}:{num_images(images)}".encode())
    indices = getattr(images, "indices", None)
    if isinstance(indices, np.ndarray):
        _hash_array(h, indices)
    blobs, paths = getattr(images, "blobs", None), getattr(images, "paths", None)
    if blobs is not None:
        for b in blobs:
            h.update(hashlib.sha256(b).digest())
    elif paths is not None and getattr(images, "root", None) is not None:
        root = Path(images.root)
        h.update(str(root.resolve()).encode())
        for p in paths:
            st = (root / p).stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        for i in range(num_images(images)):
            _hash_array(h, np.asarray(images[i][0]))
    return h.hexdigest()[:16]


def _hash_array(h: Any, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))


def cache_key(
    encoder: Encoder, images: ImageSource, *, split: str, transform: str, dtype: str
) -> dict[str, Any]:
    """The parts the cache is keyed on, and their hash under ``"key"``."""
    parts = {
        "version": CACHE_VERSION,
        "dataset_fingerprint": dataset_fingerprint(images),
        "n": num_images(images),
        "encoder": encoder.name,
        "encoder_fingerprint": encoder.fingerprint(),
        "dim": encoder.dim,
        "split": split,
        "transform": transform,
        "dtype": dtype,
    }
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return parts


def embed(
    encoder: Encoder,
    images: ImageSource,
    *,
    cache_dir: str | os.PathLike[str],
    split: str = "all",
    dataset: str = "data",
    transform: str = "none",
    dtype: Literal["float32", "float16"] = "float32",
    chunk_size: int = 4096,
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Encode ``images`` once and return the cached ``(N, D)`` features, memory-mapped (read-only).

    Parameters
    ----------
    encoder
        A fitted (or stateless / loaded) encoder.
    images
        uint8 ``(N, H, W, 3)`` array or a dataset of ``(image, label, index)`` items.
    cache_dir
        Root of the cache.
    split, dataset
        Names for the cache folder (``dataset`` is only a label; the key uses the fingerprint).
    transform
        Describes any preprocessing applied to the images before the encoder sees them (resizing,
        cropping); part of the key.
    dtype
        Storage type; ``"float16"`` halves disk and memory, the returned array has that dtype.
    chunk_size
        Rows written (and made resumable) at a time.

    In a ``torchrun`` job (a process group initialised, :mod:`lra_diffusion.distributed`) every rank calls
    this with the same arguments: the chunks are dealt out in rounds of ``world`` chunks, rank r computing
    chunk r of each round into the same partial file, and rank 0 records each finished round in the
    manifest and moves the file into place. Each chunk starts a new batch, so the features are those of a
    1-process run (bit for bit where the encoder is deterministic), and a resumed job may use another
    number of processes.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = cache_key(encoder, images, split=split, transform=transform, dtype=dtype)
    folder = Path(cache_dir) / encoder.name / f"{_slug(dataset)}-{_slug(split)}-{parts['key']}"
    hit = _complete_entry(folder, parts["key"])
    if hit is not None:
        return hit
    ctx = distributed.context()
    with key_lock(folder, active=not ctx.active):
        hit = _complete_entry(folder, parts["key"])  # written by the process this one waited for
        if hit is not None:
            return hit
        final, partial = folder / FEATURES_FILE, folder / PARTIAL_FILE
        if ctx.is_main:  # rank 0 creates (or reopens) the partial file; the others open it after the barrier
            _open_partial(folder, parts, dtype)
        distributed.barrier(ctx)
        done = int(_read_manifest(folder)["done"])
        out = np.load(partial, mmap_mode="r+")
        n = parts["n"]
        bar = progress_bar(n, progress and ctx.is_main, f"embed {encoder.name} {split}", initial=done)
        try:
            while done < n:
                # a round of `world` chunks from `done`: chunk r of the round is rank r's (one chunk in one process)
                lo = min(done + ctx.rank * chunk_size, n)
                hi = min(lo + chunk_size, n)
                if lo < hi:
                    out[lo:hi] = encoder.encode_slice(images, lo, hi, batch_size=batch_size,
                                                      bar=bar if ctx.is_main else None)
                    out.flush()  # rows reach the disk before the manifest says they are done
                round_end = min(done + ctx.world * chunk_size, n)
                distributed.barrier(ctx)
                if ctx.is_main:
                    bar.update(round_end - done - (hi - lo))  # the other ranks' rows
                    _write_manifest(folder, {**parts, "done": round_end, "complete": False})
                done = round_end
        finally:
            bar.close()
        del out
        if ctx.is_main:
            os.replace(partial, final)
            _write_manifest(folder, {**parts, "done": n, "complete": True, "config": encoder.config(),
                                     "processes": ctx.world})
        distributed.barrier(ctx)
        return np.load(final, mmap_mode="r")


def _complete_entry(folder: Path, key: str) -> np.ndarray | None:
    """The finished features of ``key`` (memory-mapped, read-only): in ``folder``, or written under another
    dataset label beside it (the key, not the label, decides); None where there are none."""
    for candidate in [folder, *sorted(folder.parent.glob(f"*-{key}"))]:
        m = _read_manifest(candidate)
        if m.get("complete") and m.get("key") == key and (candidate / FEATURES_FILE).is_file():
            return np.load(candidate / FEATURES_FILE, mmap_mode="r")
    return None


def _open_partial(folder: Path, parts: dict[str, Any], dtype: str) -> None:
    """Keep the partial features file of ``parts`` (its rows done: the manifest's count) or create it
    (none done); the manifest then says how many rows are done."""
    n, dim = parts["n"], parts["dim"]
    partial = folder / PARTIAL_FILE
    manifest = _read_manifest(folder)
    done = 0
    if partial.is_file() and manifest.get("key") == parts["key"]:
        out = np.load(partial, mmap_mode="r")
        if out.shape == (n, dim) and out.dtype == np.dtype(dtype):
            done = int(manifest.get("done", 0))
        del out
    if done == 0:
        folder.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(n, dim)).flush()
    _write_manifest(folder, {**parts, "done": done, "complete": False})


def fit_cached(
    encoder: Encoder,
    fit_images: ImageSource,
    *,
    cache_dir: str | os.PathLike[str],
    progress: bool = False,
) -> Encoder:
    """Fit ``encoder`` on unlabelled ``fit_images`` once; later calls load the saved state.

    Encoders that do not learn (``needs_fit`` false) or are already fitted come back unchanged.
    """
    from lra_diffusion.encoders import load_encoder

    if not encoder.needs_fit or encoder.is_fitted:
        return encoder
    cfg = {k: v for k, v in encoder.config().items() if k not in ("batch_size", "device")}
    blob = json.dumps(
        {"encoder": encoder.name, "config": cfg, "data": dataset_fingerprint(fit_images)},
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = Path(cache_dir) / encoder.name / f"fitted-{key}"

    def saved() -> Encoder | None:
        if not (folder / "encoder.json").is_file():
            return None
        loaded = load_encoder(folder)
        loaded.batch_size, loaded.device = encoder.batch_size, encoder.device
        return loaded

    if (hit := saved()) is not None:
        return hit
    with key_lock(folder, active=not distributed.context().active):
        if (hit := saved()) is not None:  # fitted by the process this one waited for
            return hit
        if progress:
            print(f"fitting {encoder.name} on {num_images(fit_images)} unlabelled images", flush=True)
        encoder.fit(fit_images)
        encoder.save(folder)
    return encoder


@contextmanager
def key_lock(folder: Path, *, active: bool = True) -> Iterator[None]:
    """Hold the file lock ``folder/.lock`` (blocking; says on stderr that it waits where another process
    holds it), so that one process at a time writes the cache entry ``folder`` and a second one then
    finds it complete. ``active=False`` (the ranks of one torchrun job, which coordinate by barriers)
    takes no lock."""
    if not active:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process writing the same cache entry ({folder})", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def export_features(features: np.ndarray, out: str | os.PathLike[str]) -> Path:
    """Write ``features`` to ``out`` (``.npy``) atomically, in chunks (works on a memmap)."""
    out = Path(out)
    if out.suffix != ".npy":
        raise InputError(f"output {out} must end in .npy")
    with atomic_path(out) as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=features.dtype, shape=features.shape)
        for lo in range(0, len(features), 65_536):
            dst[lo : lo + 65_536] = features[lo : lo + 65_536]
        dst.flush()
        del dst
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_") or "data"


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(folder: Path, content: dict[str, Any]) -> None:
    with atomic_path(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
