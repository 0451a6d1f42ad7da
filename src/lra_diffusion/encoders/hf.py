"""CLIP and DINOv2 image encoders through ``transformers``, from local weights only.

* ``clip``: ``CLIPVisionModelWithProjection(...).image_embeds``, the image embedding OpenAI CLIP's
  ``encode_image`` returns (768-d for ViT-L/14, not normalised, as the paper uses it).
* ``dinov2``: ``Dinov2Model(...).pooler_output``, the CLS token after the final layer norm.

Weights come from a local directory (``save_pretrained`` / ``huggingface-cli download --local-dir``)
or from the local Hugging Face cache; the hub is never contacted (``HF_HUB_OFFLINE=1`` and
``local_files_only=True``). Whether the weights exist is checked before ``transformers`` is even
imported, so a missing model fails at once with instructions.

Preprocessing follows the Hugging Face image processors without torchvision: PIL bicubic resize of
the shorter side, centre crop, normalise, with the sizes and statistics of the model's
``preprocessor_config.json`` when present, else the defaults of each family.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from lra_diffusion.encoders.base import Encoder
from lra_diffusion.errors import InputError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/...``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def resolve_local_model(model: str | os.PathLike[str], family: str) -> Path:
    """Directory holding ``config.json`` and weights for ``model`` (a path or a hub id), offline.

    Raises :class:`InputError` (without importing ``transformers``) when nothing is found, saying
    how to provide the weights.
    """
    p = Path(model).expanduser()
    candidates = [p] if p.is_dir() else []
    if not p.is_dir() and "/" in str(model) and not str(model).startswith((".", "/", "~")):
        repo = hf_cache_dir() / f"models--{str(model).replace('/', '--')}" / "snapshots"
        if repo.is_dir():
            candidates += sorted(repo.iterdir(), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in candidates:
        if (d / "config.json").is_file() and any((d / f).is_file() for f in WEIGHT_FILES):
            return d
    where = f"directory {p}" if p.is_dir() else f"{model!r} (no such directory, not in {hf_cache_dir()})"
    raise InputError(
        f"{family}: no weights found for {where}. Offline, provide them as a local directory: on a "
        f"machine with internet run `huggingface-cli download {_default(family, model)} --local-dir "
        f"DIR` (or from_pretrained(...).save_pretrained(DIR)), copy DIR here and pass it as the model "
        "(--model DIR), or fill the Hugging Face cache (HF_HOME) with that model"
    )


def _default(family: str, model: Any) -> str:
    if "/" in str(model) and not Path(str(model)).is_absolute():
        return str(model)
    return HFEncoder.registry_defaults.get(family, "ORG/NAME")


class HFEncoder(Encoder):
    """Base of the ``transformers`` image encoders: offline loading and torch preprocessing."""

    ragged_input = True  # images of any size: each is resized and cropped
    model_class: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    default_mean: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    default_std: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    resize_ratio: ClassVar[float] = 1.0  # shorter side = crop * ratio without a preprocessor config
    registry_defaults: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        amp: bool = True,
    ):
        self.model = str(model or self.default_model)
        self.batch_size = batch_size
        self.device = device
        self.amp = amp
        self.model_dir_ = resolve_local_model(self.model, self.name)
        os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: never reach the hub
        import transformers

        cls = getattr(transformers, self.model_class)
        self.net_ = cls.from_pretrained(str(self.model_dir_), local_files_only=True)
        self.net_.requires_grad_(False).eval()
        self._read_preprocessing()
        self._fingerprint: str | None = None

    def _read_preprocessing(self) -> None:
        cfg = self.net_.config
        crop = int(getattr(cfg, "image_size", 224))
        self.crop_size = crop
        self.resize_to = int(round(crop * self.resize_ratio))
        self.mean, self.std = self.default_mean, self.default_std
        pp = self.model_dir_ / "preprocessor_config.json"
        if pp.is_file():
            meta = json.loads(pp.read_text())
            size = meta.get("size", {})
            crop_size = meta.get("crop_size", {})
            if isinstance(size, dict) and "shortest_edge" in size:
                self.resize_to = int(size["shortest_edge"])
            elif isinstance(size, int):
                self.resize_to = size
            if isinstance(crop_size, dict) and "height" in crop_size:
                self.crop_size = int(crop_size["height"])
            elif isinstance(crop_size, int):
                self.crop_size = crop_size
            self.mean = tuple(meta.get("image_mean", self.mean))
            self.std = tuple(meta.get("image_std", self.std))

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "batch_size": self.batch_size, "device": self.device,
                "amp": self.amp}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.net_.state_dict()

    def fingerprint(self) -> str:
        """Hash of the family, the preprocessing and every weight (computed once per encoder)."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            h.update(repr((self.resize_to, self.crop_size, self.mean, self.std)).encode())
            for key, t in sorted(self.net_.state_dict().items()):
                h.update(key.encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``save_pretrained`` weights plus our ``encoder.json`` into ``directory``."""
        d = Path(directory)
        self.net_.save_pretrained(str(d))
        pp = self.model_dir_ / "preprocessor_config.json"
        if pp.is_file():
            (d / pp.name).write_text(pp.read_text())
        meta = {"name": self.name, "config": {**self.config(), "model": str(d.resolve())},
                "fingerprint": self.fingerprint()}
        (d / "encoder.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return d

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> HFEncoder:
        return cls(**config)

    def preprocess(self, batch: np.ndarray | list[np.ndarray], device: torch.device) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` (or a list of differently sized images) -> ``(B, 3, crop, crop)``.

        The steps and rounding of the Hugging Face image processors (and of OpenAI CLIP's
        ``preprocess``): PIL bicubic resize of the shorter side, centre crop, rescale, normalise.
        """
        batch = np.stack([self._resize_crop(np.asarray(im)) for im in batch])
        x = torch.from_numpy(batch).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize_crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.resize_to * long / short)
        size = (self.resize_to, new_long) if h <= w else (new_long, self.resize_to)  # (h, w)
        if size != (h, w):
            image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC))
        top = (size[0] - self.crop_size) // 2
        left = (size[1] - self.crop_size) // 2
        if top < 0 or left < 0:
            raise InputError(f"{self.name}: resized image {size} is smaller than the crop")
        return image[top : top + self.crop_size, left : left + self.crop_size]

    def _encode_batch(self, batch: np.ndarray) -> torch.Tensor:
        dev = torch.device(self.device)
        self.net_.to(dev)
        x = self.preprocess(batch, dev)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp and dev.type == "cuda"):
            out = self._forward(x)
        return out.float()

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CLIPEncoder(HFEncoder):
    """CLIP image embeddings (``CLIPVisionModelWithProjection.image_embeds``), ``(N, projection_dim)``."""

    name = "clip"
    model_class = "CLIPVisionModelWithProjection"
    default_model = "openai/clip-vit-large-patch14"
    default_mean = (0.48145466, 0.4578275, 0.40821073)
    default_std = (0.26862954, 0.26130258, 0.27577711)

    @property
    def dim(self) -> int:
        return int(self.net_.config.projection_dim)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net_(pixel_values=pixel_values).image_embeds


class DINOv2Encoder(HFEncoder):
    """DINOv2 CLS token (``Dinov2Model.pooler_output``), ``(N, hidden_size)``."""

    name = "dinov2"
    model_class = "Dinov2Model"
    default_model = "facebook/dinov2-base"
    default_mean = (0.485, 0.456, 0.406)
    default_std = (0.229, 0.224, 0.225)
    resize_ratio = 256 / 224  # resize 256, crop 224, as the DINOv2 evaluation transform

    @property
    def dim(self) -> int:
        return int(self.net_.config.hidden_size)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net_(pixel_values=pixel_values).pooler_output


HFEncoder.registry_defaults = {c.name: c.default_model for c in (CLIPEncoder, DINOv2Encoder)}
