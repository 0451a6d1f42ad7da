"""SimCLR encoder: a CIFAR-style ResNet in plain torch, official-checkpoint loading and pretraining.

The network is the one of the LRA-diffusion reference code (itself from the leftthomas/SimCLR
repository): a torchvision-style ResNet whose first convolution is 3x3 / stride 1 and which has no
max-pool, followed by global average pooling. ``encode`` returns the **L2-normalised pooled trunk
feature** (512-d for ResNet-18, 2048-d for ResNet-50); the projection head ``g`` is used only by the
NT-Xent loss during pretraining (Chen et al., ICML 2020).

Official checkpoints (``SimCLR_128_cifar10.pt``) keep the trunk in an ``nn.Sequential`` named ``f``
(``f.0`` conv1, ``f.1`` bn1, ``f.3``..``f.6`` layer1..layer4) and the head in ``g``
(``g.0`` linear, ``g.1`` batch norm, ``g.3`` linear); :func:`official_to_ours` renames those keys.
Inputs are normalised with the CIFAR-10 mean / std of the reference code.

``simclr-cifar10`` (:class:`SimCLRCIFAR10Encoder`) is our own ResNet-18 pretrained with
:func:`pretrain_simclr` on the CIFAR-10 training images without labels and shipped as
``models/simclr-cifar10.safetensors`` (float16, written by :func:`export_weights`; see
``models/README.md``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lra_diffusion.device import autocast_context, needs_grad_scaler, resolve_device, to_device
from lra_diffusion.encoders.base import (
    Encoder,
    ImageSource,
    _as_array,
    atomic_path,
    num_images,
    progress_bar,
    take_images,
)
from lra_diffusion.errors import InputError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
ARCHS = ("resnet18", "resnet50")


# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


_LAYOUT: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class SimCLRNet(nn.Module):
    """CIFAR-style ResNet trunk plus the SimCLR projection head.

    ``features(x)``: ``(B, 3, H, W)`` normalised images -> ``(B, trunk_dim)`` pooled trunk output.
    ``project(h)``: ``(B, trunk_dim)`` -> ``(B, feature_dim)`` head output (for NT-Xent).
    """

    def __init__(self, arch: str = "resnet50", feature_dim: int = 128, width: int = 64):
        super().__init__()
        if arch not in _LAYOUT:
            raise InputError(f"simclr: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        block, counts = _LAYOUT[arch]
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)  # CIFAR stem: 3x3, no max-pool
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, n in enumerate(counts):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.trunk_dim = inplanes
        self.head = nn.Sequential(
            nn.Linear(inplanes, 512, bias=False),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, feature_dim, bias=True),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)


# official name -> our name, applied to key prefixes (torchvision block internals are identical)
_OFFICIAL_PREFIXES = {
    "f.0.": "conv1.",
    "f.1.": "bn1.",
    "f.3.": "layer1.",
    "f.4.": "layer2.",
    "f.5.": "layer3.",
    "f.6.": "layer4.",
    "g.0.": "head.0.",
    "g.1.": "head.1.",
    "g.3.": "head.3.",
}


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official LRA-diffusion / leftthomas SimCLR state dict (``f.*``, ``g.*``).

    A ``module.`` prefix (``nn.DataParallel``) is dropped; keys that match no official prefix are
    kept as they are, so the strict load that follows names them.
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for old, new in _OFFICIAL_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`official_to_ours` (to export, and to test the loader)."""
    out = {}
    for key, value in state.items():
        for old, new in _OFFICIAL_PREFIXES.items():
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return out


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a SimCLR state dict from ``.safetensors`` or a torch ``.pt`` / ``.pth`` file.

    ``.pt`` files are loaded with ``weights_only=True``; a dict holding ``state_dict`` or ``model``
    is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"simclr: weights file {p} does not exist (give the official SimCLR_128_cifar10.pt, "
            "our .safetensors, or train one with `lra pretrain simclr`)"
        )
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # truncated, or a Git LFS pointer in place of the file
            raise InputError(f"simclr: {p} is not a readable safetensors file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); a Git LFS pointer needs `git lfs pull`") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"simclr: cannot read {p} as a torch state dict: {e}") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"simclr: {p} does not hold a state dict of tensors")
    return obj


def load_weights(net: SimCLRNet, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Strictly load ``state`` (official or our layout) into ``net``, or explain the mismatch."""
    if any(k.removeprefix("module.").startswith(("f.", "g.")) for k in state):
        state = official_to_ours(state)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"simclr: {source} do not match arch resnet with trunk {net.trunk_dim}-d: "
            f"{len(missing)} missing keys {_few(missing)}, {len(unexpected)} unexpected keys "
            f"{_few(unexpected)} (expected the official f.*/g.* layout or ours)"
        )
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise InputError(
            f"simclr: {source}: {len(bad)} tensors have the wrong shape, e.g. {k} is "
            f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)} (wrong arch?)"
        )
    net.load_state_dict(state, strict=True)


def _few(keys: list[str], n: int = 4) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


# ------------------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------------------
class SimCLREncoder(Encoder):
    """L2-normalised pooled SimCLR trunk features, ``(N, 512)`` (ResNet-18) or ``(N, 2048)`` (50).

    Parameters
    ----------
    arch
        ``"resnet18"`` or ``"resnet50"``.
    weights
        Official ``.pt`` (``f.*`` / ``g.*`` keys) or our ``.safetensors`` state dict. Without it the
        encoder is unfitted: train it with :func:`pretrain_simclr`.
    device, amp, channels_last
        Where to run (``auto | cpu | cuda | cuda:i``); on CUDA, autocast (bfloat16 where supported,
        else float16) and ``channels_last`` speed encoding up.
    """

    name = "simclr"

    def __init__(
        self,
        *,
        arch: Literal["resnet18", "resnet50"] = "resnet50",
        feature_dim: int = 128,
        width: int = 64,
        weights: str | os.PathLike[str] | None = None,
        mean: tuple[float, float, float] = CIFAR_MEAN,
        std: tuple[float, float, float] = CIFAR_STD,
        batch_size: int = 256,
        device: str = "cpu",
        amp: bool = True,
        channels_last: bool = True,
        random_state: int = 0,
    ):
        if arch not in ARCHS:
            raise InputError(f"simclr: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        self.arch = arch
        self.feature_dim = feature_dim
        self.width = width
        self.weights = None if weights is None else str(weights)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.batch_size = batch_size
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.random_state = random_state
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(random_state)
            self.net_ = SimCLRNet(arch, feature_dim, width)
        self.net_.requires_grad_(False).eval()
        self._trained = False
        if weights is not None:
            load_weights(self.net_, read_state_dict(weights), source=str(weights))
            self._trained = True

    @property
    def dim(self) -> int:
        return self.net_.trunk_dim

    @property
    def is_fitted(self) -> bool:
        return self._trained

    def check_is_fitted(self) -> None:
        if not self._trained:
            raise InputError(
                "simclr: no weights; pass weights=PATH (the official SimCLR_128_cifar10.pt or our "
                ".safetensors) or pretrain one with `lra pretrain simclr`"
            )

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "feature_dim": self.feature_dim,
            "width": self.width,
            "weights": self.weights,
            "mean": list(self.mean),
            "std": list(self.std),
            "batch_size": self.batch_size,
            "device": self.device,
            "amp": self.amp,
            "channels_last": self.channels_last,
            "random_state": self.random_state,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.net_.state_dict()

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SimCLREncoder:
        enc = cls(**{**config, "weights": None})
        enc.weights = config.get("weights")
        load_weights(enc.net_, tensors, source="saved encoder")
        enc._trained = True
        return enc

    def fit(self, images: ImageSource, **options: Any) -> SimCLREncoder:
        """Pretrain on unlabelled ``images`` with :func:`pretrain_simclr` (``options`` go there)."""
        trained = pretrain_simclr(
            images, arch=self.arch, feature_dim=self.feature_dim, width=self.width,
            device=self.device, **options
        )
        self.net_ = trained.net_
        self._trained = True
        return self

    def normalize(self, batch: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, H, W)`` on ``device``."""
        x = to_device(torch.from_numpy(np.array(batch, order="C")), torch.device(device))
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return normalize_tensor(x, self.mean, self.std)

    def _encode_batch(self, batch: np.ndarray) -> torch.Tensor:
        dev = resolve_device(self.device)
        self.net_.to(dev)
        x = self.normalize(batch, dev)
        if dev.type == "cuda" and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            self.net_.to(memory_format=torch.channels_last)
        with autocast_context(dev, self.amp):
            h = self.net_.features(x)
        return F.normalize(h.float(), dim=1)


def normalize_tensor(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` of ``(B, 3, H, W)`` images in ``[0, 1]``."""
    m = _constant(tuple(mean), x.device, x.dtype).view(1, 3, 1, 1)
    s = _constant(tuple(std), x.device, x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


@functools.lru_cache(maxsize=32)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device and dtype: building it from Python numbers on
    every batch would be a host-to-device copy that waits for the GPU each time."""
    return torch.tensor(values, dtype=dtype).to(device)


# ------------------------------------------------------------------------------------------------
# Augmentations (torch only, batched, driven by an explicit generator)
# ------------------------------------------------------------------------------------------------
def simclr_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    p_jitter: float = 0.8,
    p_gray: float = 0.2,
) -> torch.Tensor:
    """One random SimCLR view of each image in ``x (B, 3, H, W)`` (floats in ``[0, 1]``).

    Random resized crop (area ``scale``, aspect ``ratio``) with horizontal flip (p = 0.5), colour
    jitter (brightness, contrast, saturation, hue; applied with probability ``p_jitter`` in that fixed
    order) and random grayscale (``p_gray``), as in the SimCLR CIFAR recipe. Random numbers come from
    ``generator`` (a CPU generator), so a seeded run is reproducible on any device; they are drawn at
    once and copied to ``x``'s device in one transfer (no per-draw host-device synchronisation).
    """
    b, _, h, w = x.shape
    draws = iter(to_device(torch.rand(11, b, generator=generator), x.device))  # 11 uniforms per image

    def rand(_: int) -> torch.Tensor:
        return next(draws)

    # 1. random resized crop + flip as one affine sampling grid (normalised coordinates)
    area = scale[0] + (scale[1] - scale[0]) * rand(b)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(b)
    aspect = log_r.exp()
    cw = (area * aspect).sqrt().clamp(max=1.0)  # crop width / image width
    ch = (area / aspect).sqrt().clamp(max=1.0)
    cx = (1 - cw) * (2 * rand(b) - 1)  # crop centre, keeps the crop inside the image
    cy = (1 - ch) * (2 * rand(b) - 1)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # 2. colour jitter, with probability p_jitter per image
    bri, con, sat, hue = jitter
    apply = (rand(b) < p_jitter).view(b, 1, 1, 1)
    y = x * (1 + bri * (2 * rand(b) - 1)).view(b, 1, 1, 1)
    gray = _gray(y)
    y = (y - gray.mean((2, 3), keepdim=True)) * (1 + con * (2 * rand(b) - 1)).view(b, 1, 1, 1)
    y = y + gray.mean((2, 3), keepdim=True)
    gray = _gray(y)
    y = gray + (y - gray) * (1 + sat * (2 * rand(b) - 1)).view(b, 1, 1, 1)
    y = _rotate_hue(y.clamp(0, 1), hue * (2 * rand(b) - 1))
    x = torch.where(apply, y.clamp(0, 1), x)

    # 3. random grayscale
    to_gray = (rand(b) < p_gray).view(b, 1, 1, 1)
    return torch.where(to_gray, _gray(x).expand_as(x), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = _constant((0.299, 0.587, 0.114), x.device, x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@functools.lru_cache(maxsize=8)
def _yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB -> YIQ and its inverse (inverted on the CPU: a GPU inverse checks for errors and waits)."""
    to_yiq = torch.tensor(_TO_YIQ, dtype=dtype)
    return to_yiq.to(device), torch.linalg.inv(to_yiq).to(device)


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns (in ``[-0.5, 0.5]``) as a rotation in YIQ chroma space."""
    to_yiq, from_yiq = _yiq_matrices(x.device, x.dtype)
    angle = 2 * math.pi * shift
    cos, sin = angle.cos(), angle.sin()
    rot = torch.zeros(len(x), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    m = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of two views ``(B, d)``: cross-entropy of each view against its partner."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # view i's partner; made on the device
    return F.cross_entropy(sim, target)


# ------------------------------------------------------------------------------------------------
# Pretraining
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainConfig:
    """Settings of :func:`pretrain_simclr` (saved inside every checkpoint)."""

    arch: str = "resnet18"
    feature_dim: int = 128
    width: int = 64
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-3  # Adam, as the leftthomas/SimCLR code behind the official checkpoint
    weight_decay: float = 1e-6
    temperature: float = 0.5
    seed: int = 0
    knn_k: int = 10


CHECKPOINT_FILE = "checkpoint.pt"


def pretrain_simclr(
    images: ImageSource,
    *,
    arch: str = "resnet18",
    feature_dim: int = 128,
    width: int = 64,
    epochs: int = 100,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    temperature: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
    amp: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    monitor: tuple[np.ndarray, ImageSource, np.ndarray] | None = None,
    monitor_size: int = 5000,
    knn_k: int = 10,
    time_limit: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SimCLREncoder:
    """Train a SimCLR encoder on unlabelled ``images`` with the NT-Xent loss.

    Parameters
    ----------
    images
        uint8 ``(N, H, W, 3)`` or a dataset; labels are never read.
    checkpoint_dir
        If set, ``checkpoint.pt`` (model, optimiser, scaler, generators, history) is written there
        after every epoch, and with ``resume`` a run continues from it; the trained encoder is saved
        to ``checkpoint_dir/encoder`` at the end.
    monitor
        ``(train_labels, test_images, test_labels)``: after each epoch, report the k-NN accuracy
        (cosine, ``knn_k`` neighbours) of test images among up to ``monitor_size`` train images.
        The labels only measure progress; they never reach the loss.
    device
        ``auto | cpu | cuda | cuda:i``. On CUDA an image array is copied to the GPU once and batches
        are gathered and augmented there.
    amp, channels_last, compile
        Mixed precision (bfloat16 where the GPU supports it, else float16 with a gradient scaler),
        NHWC memory layout, and ``torch.compile`` of the network, on CUDA only.
    time_limit
        Seconds this call may run: it stops after the last epoch that fits (judged by the epochs of
        this call), so a run of limited length ends on a checkpoint; call again to continue.

    Returns
    -------
    SimCLREncoder
        The trained encoder (eval mode, frozen); ``encoder.history_`` lists per-epoch loss, k-NN
        accuracy and seconds.
    """
    cfg = PretrainConfig(arch, feature_dim, width, epochs, batch_size, lr, weight_decay,
                         temperature, seed, knn_k)
    if arch not in ARCHS:
        raise InputError(f"simclr: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    n = num_images(images)
    if batch_size < 2 or n < batch_size:
        raise InputError(f"simclr: need 2 <= batch_size <= number of images ({n}), got {batch_size}")
    if epochs < 1:
        raise InputError(f"simclr: epochs must be >= 1, got {epochs}")
    say = log or (lambda msg: print(msg, flush=True))
    started = time.perf_counter()
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    use_amp = amp and cuda
    mem = torch.channels_last if (cuda and channels_last) else torch.contiguous_format

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SimCLRNet(arch, feature_dim, width)
    net.to(dev).to(memory_format=mem)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True if cuda else None)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(dev, use_amp))  # bf16 needs none
    embed_views = _compiled_embedding(net) if (compile and cuda) else (lambda v: net.project(net.features(v)))
    source = _as_array(images)
    on_device = None  # the whole uint8 array on the GPU (50,000 CIFAR images are 150 MB)
    if cuda and isinstance(source, np.ndarray):
        on_device = to_device(torch.from_numpy(np.array(source, order="C")), dev)  # a copy: may be a memmap
    aug_gen = torch.Generator().manual_seed(seed + 1)  # augmentations
    order_gen = np.random.default_rng(seed + 2)  # batch order
    history: list[dict[str, float]] = []
    start_epoch = 0

    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
    if ckpt_path is not None and resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != asdict(cfg):
            changed = sorted(k for k in ckpt["config"] if ckpt["config"][k] != asdict(cfg).get(k))
            if changed != ["epochs"]:  # more epochs may be asked of a finished run
                raise InputError(
                    f"simclr: checkpoint {ckpt_path} was written with other settings ({changed}); "
                    "use another --checkpoint-dir or pass the same settings"
                )
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and scaler.is_enabled():  # empty when written without float16 AMP
            scaler.load_state_dict(ckpt["scaler"])
        aug_gen.set_state(ckpt["aug_generator"])
        order_gen.bit_generator.state = ckpt["order_generator"]
        history = ckpt["history"]
        start_epoch = ckpt["epoch"]
        say(f"resumed from {ckpt_path} after epoch {start_epoch}")

    steps = n // batch_size
    epoch_walls: list[float] = []  # whole epochs of this call: training, monitor and checkpoint
    for epoch in range(start_epoch, epochs):
        if time_limit is not None and epoch_walls:
            elapsed = time.perf_counter() - started
            if elapsed + 1.1 * max(epoch_walls) > time_limit:
                say(f"stopping after epoch {epoch}/{epochs} to stay within {time_limit:.0f} s; "
                    "run the same command again to continue from the checkpoint")
                break
        net.train()
        t0 = time.perf_counter()
        perm = order_gen.permutation(n)
        total = torch.zeros((), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
        bar = progress_bar(steps * batch_size, progress, f"simclr epoch {epoch + 1}/{epochs}")
        for s in range(steps):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            if on_device is not None:
                x = on_device[to_device(torch.from_numpy(idx), dev)]
            else:
                x = to_device(torch.from_numpy(take_images(images, idx)), dev)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            v1 = normalize_tensor(simclr_augment(x, aug_gen), CIFAR_MEAN, CIFAR_STD)
            v2 = normalize_tensor(simclr_augment(x, aug_gen), CIFAR_MEAN, CIFAR_STD)
            views = torch.cat([v1, v2]).contiguous(memory_format=mem)
            with autocast_context(dev, use_amp):
                z = embed_views(views)
            loss = nt_xent(z[:batch_size], z[batch_size:], temperature)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += loss.detach()
            bar.update(batch_size)
        bar.close()
        record = {"epoch": epoch + 1, "loss": float(total) / steps, "seconds": time.perf_counter() - t0}
        if monitor is not None:
            encoder = _as_encoder(net, cfg, device, amp, channels_last)
            record["knn_acc"] = knn_monitor(encoder, images, *monitor, size=monitor_size, k=knn_k)
        history.append(record)
        msg = f"epoch {epoch + 1}/{epochs}: nt-xent {record['loss']:.4f}"
        if "knn_acc" in record:
            msg += f", k-NN({knn_k}) {100 * record['knn_acc']:.2f}%"
        say(msg + f" ({record['seconds']:.0f} s)")
        if ckpt_path is not None:
            state = {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "aug_generator": aug_gen.get_state(),
                "order_generator": order_gen.bit_generator.state,
                "history": history,
            }
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)
        epoch_walls.append(time.perf_counter() - t0)

    encoder = _as_encoder(net, cfg, device, amp, channels_last)
    encoder.history_ = history
    if checkpoint_dir is not None:
        encoder.save(Path(checkpoint_dir) / "encoder")
    return encoder


def _compiled_embedding(net: SimCLRNet) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of views -> projections (the network's parameters are shared, not copied)."""

    def embed_views(v: torch.Tensor) -> torch.Tensor:
        return net.project(net.features(v))

    return torch.compile(embed_views)


def _as_encoder(
    net: SimCLRNet, cfg: PretrainConfig, device: str, amp: bool, channels_last: bool
) -> SimCLREncoder:
    """A frozen :class:`SimCLREncoder` holding a copy of ``net``'s current weights."""
    enc = SimCLREncoder(arch=cfg.arch, feature_dim=cfg.feature_dim, width=cfg.width, device=device,
                        amp=amp, channels_last=channels_last, random_state=cfg.seed)
    state = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
    enc.net_.load_state_dict(state)
    enc._trained = True
    return enc


# ------------------------------------------------------------------------------------------------
# Shipped weights: export, and the `simclr-cifar10` encoder
# ------------------------------------------------------------------------------------------------
WEIGHTS_FORMAT = "lra-diffusion-simclr/1"
SHIPPED_FILE = "simclr-cifar10.safetensors"
WEIGHTS_ENV = "LRA_SIMCLR_CIFAR10_WEIGHTS"  # overrides where `simclr-cifar10` looks for its weights
MAX_SHIPPED_BYTES = 25_000_000


def export_weights(
    encoder: SimCLREncoder,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a trained encoder's weights (trunk and head) as one ``safetensors`` file in ``dtype``.

    Floating tensors are cast (integer buffers such as ``num_batches_tracked`` are kept); the file's
    metadata records the format, ``arch``, ``width``, ``feature_dim`` and the given ``metadata``
    (JSON-encoded values). Returns ``{"path", "bytes", "sha256", "dtype"}`` for the model card.
    """
    from safetensors.torch import save as st_save

    from lra_diffusion.io import atomic_write

    encoder.check_is_fitted()
    tensors = {}
    for key, value in encoder.net_.state_dict().items():
        value = value.detach().cpu().contiguous()
        if value.is_floating_point():
            cast = value.to(dtype)
            if not torch.isfinite(cast).all():
                raise InputError(f"simclr: {key} does not fit in {dtype} (values up to {value.abs().max():.3g})")
            value = cast
        tensors[key] = value
    meta = {"format": WEIGHTS_FORMAT, "arch": encoder.arch, "width": str(encoder.width),
            "feature_dim": str(encoder.feature_dim), "dtype": str(dtype).removeprefix("torch.")}
    meta |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = st_save(tensors, metadata=meta)
    atomic_write(path, data)
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "dtype": meta["dtype"]}


def shipped_weights_path() -> Path:
    """Where ``simclr-cifar10`` finds its weights: ``$LRA_SIMCLR_CIFAR10_WEIGHTS`` if set, else
    ``models/simclr-cifar10.safetensors`` of the repository this package is run from."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models" / SHIPPED_FILE  # src/lra_diffusion/encoders/


NOT_SHIPPED = (
    "simclr-cifar10: weights not shipped yet ({path} is missing; training them needs a CUDA GPU): run "
    "`lra pretrain simclr --out runs/simclr-cifar10 --device cuda --epochs 200 --monitor-split test "
    "--time-limit 540 --export models/simclr-cifar10.safetensors` until it reports the last epoch "
    "(see models/README.md), or pass -o weights=FILE"
)


class SimCLRCIFAR10Encoder(SimCLREncoder):
    """Our SimCLR encoder for CIFAR-10: a CIFAR-style ResNet-18 pretrained without labels on the 50,000
    CIFAR-10 training images; L2-normalised 512-d trunk features. Runs on CPU too.

    Parameters
    ----------
    weights
        The exported file (:func:`export_weights`); default :func:`shipped_weights_path`. Its
        metadata names the architecture. A missing file fails at once, saying how to make it.
    batch_size, device, amp, channels_last
        As :class:`SimCLREncoder`.
    """

    name = "simclr-cifar10"

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        device: str = "cpu",
        amp: bool = True,
        channels_last: bool = True,
    ):
        path = Path(weights) if weights is not None else shipped_weights_path()
        if not path.is_file():
            raise InputError(NOT_SHIPPED.format(path=path))
        arch = read_weights_metadata(path)
        super().__init__(arch=arch["arch"], width=arch["width"], feature_dim=arch["feature_dim"], weights=path,
                         batch_size=batch_size, device=device, amp=amp, channels_last=channels_last)

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SimCLRCIFAR10Encoder:
        enc = cls.__new__(cls)  # the saved tensors are the weights: the shipped file is not needed
        SimCLREncoder.__init__(enc, **{**config, "weights": None})
        enc.weights = config.get("weights")
        load_weights(enc.net_, tensors, source="saved encoder")
        enc._trained = True
        return enc


def read_weights_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"arch", "width", "feature_dim"}`` of an exported weights file (ResNet-18 defaults for a file
    without our metadata)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # truncated, or a Git LFS pointer in place of the file
        raise InputError(f"simclr: {path} is not a readable safetensors file ({type(e).__name__}); "
                         "a Git LFS pointer needs `git lfs pull`") from None
    try:
        return {"arch": meta.get("arch", "resnet18"), "width": int(meta.get("width", 64)),
                "feature_dim": int(meta.get("feature_dim", 128))}
    except ValueError:
        raise InputError(f"simclr: {path} has malformed metadata {meta}") from None


def knn_monitor(
    encoder: Encoder,
    train_images: ImageSource,
    train_labels: np.ndarray,
    test_images: ImageSource,
    test_labels: np.ndarray,
    *,
    size: int = 5000,
    k: int = 10,
) -> float:
    """k-NN (cosine, majority vote) accuracy of test images among the first ``size`` train images."""
    m = min(size, num_images(train_images))
    bank = torch.from_numpy(encoder.encode_slice(train_images, 0, m))
    query = torch.from_numpy(encoder.encode(test_images))
    bank = F.normalize(bank, dim=1)
    query = F.normalize(query, dim=1)
    labels = torch.as_tensor(np.asarray(train_labels)[:m])
    idx = (query @ bank.T).topk(min(k, m), dim=1).indices
    votes = F.one_hot(labels[idx], int(labels.max()) + 1).sum(1)
    return float((votes.argmax(1).numpy() == np.asarray(test_labels)).mean())


__all__ = [
    "SimCLRCIFAR10Encoder",
    "SimCLREncoder",
    "SimCLRNet",
    "PretrainConfig",
    "knn_monitor",
    "load_weights",
    "nt_xent",
    "official_to_ours",
    "ours_to_official",
    "pretrain_simclr",
    "read_state_dict",
    "simclr_augment",
    "export_weights",
    "shipped_weights_path",
]
