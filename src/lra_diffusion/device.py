"""Where tensors run: device strings, mixed precision, and host-to-device copies.

The rest of the package takes a ``torch.device`` (or ``None`` = CPU) and never guesses; this module is
the one place that turns ``"auto" | "cpu" | "cuda" | "cuda:i"`` into a device and says why a request
cannot be met. The CPU path is the default everywhere, and on CPU every helper here is a no-op, so CPU
results are bit for bit the same as code that never heard of devices.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import numpy as np
import torch

from .errors import InputError

DEVICE_HELP = "auto | cpu | cuda | cuda:<index>"
_PATTERN = re.compile(r"^(auto|cpu|cuda)(:(\d+))?$")


def is_device_string(device: str) -> bool:
    """Whether ``device`` is spelled ``auto``, ``cpu``, ``cuda`` or ``cuda:i`` (availability is not
    checked, so a config naming ``cuda`` can be read on a machine without one)."""
    m = _PATTERN.match(str(device).strip().lower())
    return m is not None and (m.group(3) is None or m.group(1) == "cuda")


def check_device_string(device: str) -> None:
    """Raise :class:`InputError` unless :func:`is_device_string`."""
    if not is_device_string(device):
        raise InputError(f"unknown device {device!r}; valid: {DEVICE_HELP}")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``"auto" | "cpu" | "cuda" | "cuda:i"`` (``None`` = CPU).

    ``auto`` is the first CUDA GPU when one is usable, else the CPU. Asking for CUDA on a machine without
    it, or for a GPU index that does not exist, raises :class:`InputError` saying what is there.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        device = str(device)
    check_device_string(device)
    name = device.strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise InputError(f"device {device!r} asked for but CUDA is not available ({why}); use --device cpu or auto")
    index = int(name.split(":")[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(f"device {device!r}: no such GPU; this machine has {count} (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device``: bfloat16 on CUDA GPUs that support it, else float16; None
    on CPU (no autocast there: the CPU path stays float32 and bit-reproducible)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bfloat16 (float16 on GPUs without bf16) on CUDA when ``enabled``; a no-op
    context on CPU or when disabled."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, enabled: bool) -> bool:
    """Whether AMP on ``device`` runs in float16 and so needs a ``GradScaler`` (bfloat16 does not)."""
    return enabled and amp_dtype(device) == torch.float16


def to_device(x: torch.Tensor | np.ndarray, device: torch.device | None) -> torch.Tensor:
    """Move ``x`` to ``device``; to a CUDA device through pinned memory with a non-blocking copy.

    On CPU (or ``device=None``) a tensor comes back as it is (a NumPy array is wrapped, not copied).
    """
    t = torch.as_tensor(x)
    if device is None or device.type == "cpu":
        return t.cpu()
    if t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def batches_to_device(
    x: torch.Tensor | np.ndarray, batch_size: int, device: torch.device | None
) -> Iterator[torch.Tensor]:
    """Rows of ``x`` (N, ...) in consecutive batches, each moved with :func:`to_device`.

    On CUDA the next batch's copy is issued before the current one is used, so copies overlap compute.
    """
    x = torch.as_tensor(x)
    starts = range(0, len(x), batch_size)
    pending = None
    for start in starts:
        current = to_device(x[start : start + batch_size], device)
        if pending is not None:
            yield pending
        pending = current
    if pending is not None:
        yield pending


def describe(device: torch.device) -> str:
    """A human name for benchmark tables: the GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


__all__ = [
    "DEVICE_HELP",
    "amp_dtype",
    "autocast_context",
    "batches_to_device",
    "check_device_string",
    "describe",
    "is_device_string",
    "needs_grad_scaler",
    "resolve_device",
    "to_device",
]
