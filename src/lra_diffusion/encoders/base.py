"""The encoder protocol: frozen feature extractors ``f_p`` that map images to ``float32 (N, D)``.

Every encoder has a ``name``, a feature width ``dim``, an optional ``fit(images)`` for encoders that
learn without labels (pixel statistics, the k-means dictionary), and ``encode(images)``, which is
batched, runs under ``torch.no_grad`` and is deterministic. Encoders with learned or loaded state can
``save(directory)`` it (a JSON config plus a ``safetensors`` file) and :func:`load_encoder` restores
them; :meth:`Encoder.fingerprint` hashes that state so the feature cache can key on it. Learned
tensors are kept in one canonical layout (:func:`lra_diffusion.io.canonical`) whether ``fit`` set them
or ``from_saved`` loaded them, so a reloaded encoder encodes bit for bit like the fitted one.

Images reach encoders as ``uint8`` arrays ``(N, H, W, 3)`` or as a dataset object whose items are
``(uint8 (H, W, 3), label, index)`` (the datasets of :mod:`lra_diffusion.data`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from lra_diffusion.errors import InputError
from lra_diffusion.io import canonical

CONFIG_FILE = "encoder.json"
STATE_FILE = "state.safetensors"


@runtime_checkable
class DatasetLike(Protocol):
    """A dataset whose items are ``(uint8 (H, W, 3), label, index)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...


ImageSource = np.ndarray | DatasetLike


def num_images(images: ImageSource) -> int:
    """Number of images in an array ``(N, H, W, 3)`` or a dataset."""
    if isinstance(images, np.ndarray):
        check_image_array(images)
        return int(images.shape[0])
    if isinstance(images, DatasetLike):
        return len(images)
    raise InputError(
        f"images must be a uint8 array (N, H, W, 3) or a dataset, got {type(images).__name__}"
    )


def check_image_array(images: np.ndarray) -> None:
    """Raise :class:`InputError` unless ``images`` is ``uint8 (N, H, W, 3)``."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must have shape (N, H, W, 3), got {tuple(images.shape)}")
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8 (0-255), got dtype {images.dtype}")


def image_batches(
    images: ImageSource,
    batch_size: int,
    *,
    start: int = 0,
    stop: int | None = None,
    ragged: bool = False,
) -> Iterator[np.ndarray | list[np.ndarray]]:
    """Yield ``uint8 (B, H, W, 3)`` batches of ``images[start:stop]``.

    A dataset's items must all have the same ``(H, W)`` unless ``ragged``, when a batch of
    different sizes comes as a list of ``(H_i, W_i, 3)`` arrays (for encoders that resize).
    """
    n = num_images(images)
    stop = n if stop is None else min(stop, n)
    images = _as_array(images)
    for lo in range(start, stop, batch_size):
        hi = min(lo + batch_size, stop)
        if isinstance(images, np.ndarray):
            yield images[lo:hi]
            continue
        batch = [np.asarray(images[i][0]) for i in range(lo, hi)]
        shapes = {b.shape for b in batch}
        if len(shapes) != 1 and ragged:
            for b in batch:
                check_image_array(b[None])
            yield batch
            continue
        if len(shapes) != 1:
            raise InputError(
                f"dataset images {lo}..{hi - 1} have different shapes {sorted(shapes)}; "
                "resize them to one size in the dataset transform"
            )
        out = np.stack(batch)
        check_image_array(out)
        yield out


def take_images(images: ImageSource, indices: np.ndarray) -> np.ndarray:
    """Gather ``uint8 (len(indices), H, W, 3)`` images, in the order of ``indices``."""
    images = _as_array(images)
    if isinstance(images, np.ndarray):
        check_image_array(images)
        return images[indices]
    out = np.stack([np.asarray(images[int(i)][0]) for i in indices])
    check_image_array(out)
    return out


def _as_array(images: ImageSource) -> ImageSource:
    """The decoded array behind an array-backed dataset (``dataset.array``), else ``images``."""
    array = getattr(images, "array", None)
    if not isinstance(images, np.ndarray) and isinstance(array, np.ndarray):
        check_image_array(array)
        return array
    return images


def to_float_nchw(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> ``float32 (B, 3, H, W)`` in 0..255 on ``device``."""
    return torch.from_numpy(_writable(batch)).to(device).permute(0, 3, 1, 2).float()


def _writable(a: np.ndarray) -> np.ndarray:
    """A contiguous array torch may wrap (memory-mapped read-only input is copied)."""
    return np.ascontiguousarray(a) if a.flags.writeable else np.array(a, order="C")


class Encoder:
    """Base class of all encoders.

    Subclasses set ``name`` and implement ``dim`` and ``_encode_batch``; those that learn without
    labels override ``fit`` (and set ``needs_fit = True``); those with state override ``config`` /
    ``state_tensors`` / ``from_saved``. ``__init__`` only stores parameters (scikit-learn style);
    learned state ends in ``_``, and a tensor assigned to such an attribute is stored
    :func:`~lra_diffusion.io.canonical` (row-major, aligned, detached).
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    ragged_input: ClassVar[bool] = False  # accepts batches of differently sized images (a list)
    batch_size: int = 256
    device: str = "cpu"

    def __setattr__(self, name: str, value: Any) -> None:
        # One layout for learned state, set by fit or loaded by from_saved: BLAS chooses its kernel
        # from the operands' strides, and two kernels may round a product differently in the last
        # bit. An SVD's Vh, for one, comes out column-major while a loaded copy is row-major.
        if name.endswith("_") and isinstance(value, torch.Tensor):
            value = canonical(value)
        super().__setattr__(name, value)

    @property
    def dim(self) -> int:
        """Width D of the features returned by :meth:`encode`."""
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, images: ImageSource) -> Encoder:
        """Learn the encoder's state from unlabelled images; returns ``self``."""
        return self

    def check_is_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError(
                f"encoder {self.name!r} must be fitted (encoder.fit(train_images)) or loaded "
                "before encode"
            )

    def _encode_batch(self, batch: np.ndarray) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` (a list of ``(H_i, W_i, 3)`` if ``ragged_input``) -> ``(B, D)``."""
        raise NotImplementedError

    def encode(
        self, images: ImageSource, *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Encode images into ``float32 (N, D)`` features, in batches, without gradients."""
        n = num_images(images)
        bar = progress_bar(n, progress, f"encode {self.name}")
        try:
            return self.encode_slice(images, 0, n, batch_size=batch_size, bar=bar)
        finally:
            bar.close()

    @torch.no_grad()
    def encode_slice(
        self,
        images: ImageSource,
        start: int,
        stop: int,
        *,
        batch_size: int | None = None,
        bar: Any = None,
    ) -> np.ndarray:
        """Encode ``images[start:stop]`` into ``float32 (stop - start, D)``.

        The feature cache calls this chunk by chunk; ``bar`` (a tqdm-like object) is advanced by
        the number of images encoded.
        """
        self.check_is_fitted()
        out = np.empty((max(stop - start, 0), self.dim), dtype=np.float32)
        done = 0
        bs = batch_size or self.batch_size
        for batch in image_batches(images, bs, start=start, stop=stop, ragged=self.ragged_input):
            out[done : done + len(batch)] = self._encode_batch(batch).float().cpu().numpy()
            done += len(batch)
            if bar is not None:
                bar.update(len(batch))
        return out

    # -- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments that define the encoder."""
        return {}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned or loaded tensors (empty for stateless encoders)."""
        return {}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Encoder:
        """Rebuild an encoder from :meth:`config` and :meth:`state_tensors`."""
        return cls(**config)

    def fingerprint(self) -> str:
        """Hex digest of name, config and state: equal fingerprints give equal features.

        Equal to the bit with the same batch size and device on the same machine; the runtime options
        (batch size, device) are left out because they change only the rounding (docs/reliability.md).
        """
        self.check_is_fitted()
        h = hashlib.sha256()
        cfg = {k: v for k, v in self.config().items() if k not in _RUNTIME_OPTIONS}
        h.update(json.dumps({"name": self.name, "config": cfg}, sort_keys=True).encode())
        for key, t in sorted(self.state_tensors().items()):
            h.update(key.encode())
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``encoder.json`` and ``state.safetensors`` into ``directory``; returns it."""
        from safetensors.torch import save_file

        self.check_is_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: canonical(v.cpu()) for k, v in self.state_tensors().items()}
        meta = {"name": self.name, "config": self.config(), "fingerprint": self.fingerprint()}
        with atomic_path(d / STATE_FILE) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(d / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return d

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


# Options that change where or how fast features are computed, or where weights were read from
# (the weights themselves are hashed), not the features' values.
_RUNTIME_OPTIONS = frozenset({"batch_size", "device", "channels_last", "weights"})


class atomic_path:
    """Context manager giving a temporary path next to ``target``, moved onto it on success."""

    def __init__(self, target: str | os.PathLike[str]):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
        )
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def progress_bar(total: int, enabled: bool, desc: str, initial: int = 0):
    """A tqdm bar over the samples being encoded, images or texts (silent when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="sample", disable=not enabled, mininterval=0.5
    )
