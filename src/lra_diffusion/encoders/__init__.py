"""Frozen image encoders ``f_p`` behind one protocol, and the feature cache.

>>> enc = get_encoder("kmeans", n_centroids=1600).fit(train_images)   # doctest: +SKIP
>>> feats = embed(enc, train_images, cache_dir="cache/features", split="train")  # doctest: +SKIP

Encoders (``ENCODERS``): ``efficientnet-lite0`` / ``-lite1`` / ``-lite2`` (ImageNet weights that install
with the package; lite2 is the default image encoder of ``lra run``), ``pixels``, ``kmeans``, ``simclr``, ``simclr-cifar10`` (our shipped SimCLR
weights), ``clip``, ``dinov2``, ``precomputed``; for text (the ``text`` extra): ``minilm``,
``sentence-transformer``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lra_diffusion.encoders.base import CONFIG_FILE, STATE_FILE, Encoder
from lra_diffusion.encoders.cache import (
    cache_key,
    dataset_fingerprint,
    embed,
    export_features,
    fit_cached,
)
from lra_diffusion.encoders.efficientnet import (
    EFFICIENTNET_ENCODERS,
    EfficientNetLite0Encoder,
    EfficientNetLite1Encoder,
    EfficientNetLite2Encoder,
    EfficientNetLiteEncoder,
)
from lra_diffusion.encoders.hf import CLIPEncoder, DINOv2Encoder
from lra_diffusion.encoders.kmeans import KMeansEncoder
from lra_diffusion.encoders.pixels import PixelEncoder
from lra_diffusion.encoders.precomputed import PrecomputedEncoder, load_feature_file
from lra_diffusion.encoders.simclr import SimCLRCIFAR10Encoder, SimCLREncoder, pretrain_simclr
from lra_diffusion.encoders.text import MiniLMEncoder, SentenceTransformerEncoder
from lra_diffusion.errors import InputError

ENCODERS: dict[str, type[Encoder]] = {
    cls.name: cls
    for cls in (
        *EFFICIENTNET_ENCODERS,
        PixelEncoder,
        KMeansEncoder,
        SimCLREncoder,
        SimCLRCIFAR10Encoder,
        CLIPEncoder,
        DINOv2Encoder,
        PrecomputedEncoder,
        MiniLMEncoder,
        SentenceTransformerEncoder,
    )
}


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder registered as ``name`` with keyword ``options``."""
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; choose one of {', '.join(sorted(ENCODERS))}")
    try:
        return ENCODERS[name](**options)
    except TypeError as e:  # an option the encoder does not take
        raise InputError(f"encoder {name!r}: {e}") from None


def load_encoder(directory: str | os.PathLike[str], **runtime: Any) -> Encoder:
    """Load an encoder written by :meth:`Encoder.save` (``encoder.json`` + ``state.safetensors``).

    ``runtime`` overrides options that do not change the features (``device``, ``batch_size``).
    """
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise InputError(f"{d} holds no saved encoder ({CONFIG_FILE} is missing)")
    meta = json.loads((d / CONFIG_FILE).read_text())
    name = meta.get("name")
    if name not in ENCODERS:
        raise InputError(f"{d / CONFIG_FILE}: unknown encoder {name!r}")
    tensors = load_file(str(d / STATE_FILE)) if (d / STATE_FILE).is_file() else {}
    return ENCODERS[name].from_saved({**meta["config"], **runtime}, tensors)


__all__ = [
    "CLIPEncoder",
    "DINOv2Encoder",
    "ENCODERS",
    "EfficientNetLite0Encoder",
    "EfficientNetLite1Encoder",
    "EfficientNetLite2Encoder",
    "EfficientNetLiteEncoder",
    "Encoder",
    "KMeansEncoder",
    "MiniLMEncoder",
    "PixelEncoder",
    "PrecomputedEncoder",
    "SentenceTransformerEncoder",
    "SimCLRCIFAR10Encoder",
    "SimCLREncoder",
    "cache_key",
    "dataset_fingerprint",
    "embed",
    "export_features",
    "fit_cached",
    "get_encoder",
    "load_encoder",
    "load_feature_file",
    "pretrain_simclr",
]
