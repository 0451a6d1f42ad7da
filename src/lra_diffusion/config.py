"""Experiment configuration: small frozen dataclasses per stage, composed into one :class:`Config`.

The config is saved inside every run directory (``config.json``) and can be read from a TOML file
whose tables mirror the stages::

    [retrieval]
    k = 10
    [train]
    epochs = 50
    [runtime]
    device = "cuda"

Unknown keys fail loudly and list the valid ones.

``[runtime]`` says where and how fast a run computes, not what it computes: it is left out of
:meth:`Config.experiment_dict` and so of the resume fingerprint (a run checkpointed on a GPU can be
resumed on a CPU and back; bit-for-bit equality holds only on the same device, see
``docs/reliability.md``), and a saved run is loaded onto the CPU unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .device import DEVICE_HELP, is_device_string
from .errors import InputError


@dataclass(frozen=True)
class DiffusionConfig:
    """The label diffusion process and its sampler."""

    timesteps: int = 1000  # T
    schedule: Literal["cosine", "linear"] = "cosine"
    ddim_steps: int = 10
    ddim_spacing: Literal["leading", "linspace", "trailing"] = "leading"  # leading = 901, 801, ..., 1
    readout: Literal["closest", "argmax"] = "closest"  # closest-to-1 as the paper, or plain argmax
    proba_temperature: float = 0.1  # predict_proba = softmax(-(y0 - 1)^2 / temperature)
    stochastic_eta: float = 1.0  # eta of the stochastic runs (n_samples > 1), which start from N(f_q, I)
    # CARD's prior mean f_q(x): "zero" as the reference code, "linear" = a logistic regression fitted on the
    # noisy labels, "mlp" = a one-hidden-layer network (weight decay chosen on the held-out labels),
    # "auto" (default) = the MLP where it is clearly more accurate on the held-out labels, else the linear
    # one (models/prior.py); the diffusion is centred at it and starts from it
    prior: Literal["zero", "linear", "mlp", "auto"] = "auto"
    # what the prior is fitted to: the noisy "labels"; "retrieval" = each row's expected training target
    # under the neighbour-label draws, the target the denoiser itself learns (NeighbourLabelSampler.
    # target_distribution, built for the prior's row subsample only); "auto" (default) = the labels, refitted
    # to the retrieval targets where the k-NN vote is clearly more accurate than that prior on the held-out
    # labels (the k check's counts, the other way round)
    prior_targets: Literal["labels", "retrieval", "auto"] = "auto"
    # drop the prior (train as prior "zero") where the noisy labels flip in pairs: the disagreements between
    # the labels and the k-NN vote concentrate on one other class above this (retrieval.flip_concentration:
    # 0 = uniform, 1 = pair flips) and the vote is not clearly worse than the prior; 1 = never; only up to
    # 100 classes (k_check.PRIOR_DROP_MAX_CLASSES: without a prior many classes train too slowly)
    prior_drop_concentration: float = 0.25
    # what the network predicts: the noise eps (DDPM, CARD and the paper) or the clean label vector y0
    # (Ho et al. 2020's "x0" parameterisation; its MSE is the eps loss weighted by the SNR)
    prediction: Literal["eps", "y0"] = "y0"


@dataclass(frozen=True)
class ModelConfig:
    """The conditional label denoiser."""

    feature_dim: int = 512  # F, the hidden width
    x_encoder: Literal["trainable", "frozen"] = "trainable"  # frozen = random projection (ablation)
    # wide features at few rows: where D > d = max(input_min_rank, n / input_rows_per_dim) < n (n the training
    # rows, in memory) and a logistic regression on the features' top d principal components is clearly
    # more accurate on the held-out labels than one on all D (rows.feature_stats), the denoiser and the
    # prior see that projection (stored in the model); retrieval stays in the full feature space; 0 = never
    # (the package before 2026-12-06, configs/paper.toml)
    input_rows_per_dim: float = 10.0
    input_min_rank: int = 64


@dataclass(frozen=True)
class RetrievalConfig:
    """Label retrieval from nearest neighbours in f_p space."""

    k: int = 10
    # k at most N / (C x this) (at least 1; N the rows given to fit, hold-out included): with few rows a
    # class more of the nearest rows are other classes' (0 = no cap, the default; an ablation option, BENCHMARKS
    # "Defaults suite": 3 gains on few-row Banking77 probes, loses single runs elsewhere; an explicit
    # LRAClassifier(k=...) is never capped). Applied by LRAClassifier.fit (so by lra fit / lra run), which
    # stores the capped k in config_; train.train() takes retrieval.k as given
    rows_per_neighbour: float = 0.0
    # a label-free check of k (BENCHMARKS "Defaults suite"): does the k-NN vote of the training labels
    # predict the held-out labels at least as well as the prior f_q? If not, a weak encoder's neighbours may
    # make the draws noisier than the labels. "screen": the estimator then also fits k = 0 and keeps the
    # fit with the better held-out accuracy (k wins ties; a k = 0 fit that ended at its untrained start, the
    # prior the k fit weighed too, is no rival: estimator.kept_fit); "rule": train with k = 0 at once (no second
    # fit; it costs 8.5 points on one data set); "off": k as given
    auto_k: Literal["off", "screen", "rule"] = "screen"
    # the check on fewer held-out rows than this also counts the training rows, out of fold (0: never; an
    # ablation option, BENCHMARKS "Defaults suite": 500 gains on 300-row sets, costs the demo)
    crossfit_below_rows: int = 0
    metric: Literal["euclidean", "cosine"] = "euclidean"
    backend: Literal["auto", "torch", "faiss"] = "auto"
    exclude_self: bool = True
    weighting: bool = True  # weight = agreement count of the draw; False = uniform weights
    # exact | ivf | hnsw | auto (exact up to 100k rows, IVF above); the approximate index's parameters,
    # 0 / "auto" = the rule of retrieval.ann_params (docs/scale.md)
    index: Literal["auto", "exact", "ivf", "hnsw"] = "auto"
    nlist: int = 0
    nprobe: int = 0
    store: Literal["auto", "flat", "sq8"] = "auto"
    ef_search: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, model selection and checkpointing."""

    # None = auto: at least `auto_steps` optimiser steps (but at most `auto_steps_max_epochs` epochs for
    # them: a small set fits its noise in more passes), `auto_epochs` epochs and `auto_class_visits` sample
    # visits per class (epochs >= auto_class_visits * C / N, at most the paper's 200 and at most
    # `auto_class_max_steps` optimiser steps: many classes with few samples each)
    epochs: int | None = None
    auto_steps: int = 2000
    auto_steps_max_epochs: int = 200  # the paper's length; 0 = no cap (the package before 2026-12-06)
    auto_epochs: float = 30.0
    auto_class_visits: float = 20_000.0
    auto_class_max_steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_fraction: float = 0.025  # linear warm-up over this fraction of all steps, then half-cosine
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # with the usual warm-up min(decay, (1 + n) / (10 + n))
    use_ema: bool = True  # evaluate and save the EMA weights
    val_fraction: float = 0.1  # held-out slice of the *noisy* training data when no validation set
    evals: int = 20  # validation evaluations (model-selection candidates), spread evenly over ...
    select_after: float = 0.0  # ... the epochs after this fraction of the run (0 = all epochs)
    # with the residual y0 denoiser (prior "linear", prediction "y0") the untrained model, which predicts
    # the prior exactly, is a selection candidate too ("epoch 0")
    select_start: bool = True
    # which weights are kept: "average" (default since 2026-12-07) = the mean of the weights of the trained
    # candidates within one standard error of the best held-out accuracy, unless the best candidate is
    # clearly more accurate (train.average_candidates): a noisy hold-out of a few hundred or thousand rows
    # cannot tell the epochs of a plateau apart, and their average is better than any one of them; a lone
    # trained best epoch is kept only if clearly more accurate than the untrained start (since 2026-12-07);
    # "best" = the candidate with the highest held-out accuracy (ties: the later; the default before);
    # "prefer_last" = the last epoch's weights unless the best candidate is clearly more accurate on the
    # held-out labels (McNemar's sign test, z = 2, on the rows only one of the two gets right)
    selection: Literal["best", "prefer_last", "average"] = "average"
    # what the candidates are scored against: the held-out "labels", or "retrieval" = each held-out row's
    # neighbour-label targets (its label and its k nearest training rows' labels, agreement-weighted as the
    # training draws; an ablation option). The estimator's k = 0 / k comparison stays on the labels.
    select_targets: Literal["labels", "retrieval"] = "labels"
    checkpoint_every: int = 0  # optimiser steps between checkpoints (0 = only at epoch ends)
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class RuntimeConfig:
    """Where the label denoiser trains and predicts; not part of the experiment (see the module doc)."""

    device: str = "cpu"  # auto | cpu | cuda | cuda:<i>; auto = the first GPU if there is one
    amp: bool = False  # autocast (bfloat16 where the GPU supports it) on CUDA; never on CPU
    compile: bool = False  # torch.compile the denoiser's forward pass for training


RUNTIME_SECTION = "runtime"


@dataclass(frozen=True)
class Config:
    """One experiment: every stage's settings."""

    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{section: {key: value}}``, the form ``Config.from_dict`` and the TOML files take."""
        return dataclasses.asdict(self)

    def experiment_dict(self) -> dict[str, dict[str, Any]]:
        """:meth:`to_dict` without the ``[runtime]`` section: what decides the results (up to the
        device's arithmetic), e.g. for fingerprints that must survive a change of machine."""
        return {k: v for k, v in self.to_dict().items() if k != RUNTIME_SECTION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build a config from nested dicts; unknown sections or keys raise :class:`InputError`."""
        sections = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[misc]
        unknown = set(data) - set(sections)
        if unknown:
            raise InputError(
                f"unknown config section(s) {sorted(unknown)}; valid sections: {sorted(sections)}"
            )
        parts = {}
        for name, factory in sections.items():
            section_cls = type(factory())
            values = data.get(name, {}) or {}
            if not isinstance(values, dict):
                raise InputError(f"config section [{name}] must be a table of keys, got {values!r}")
            valid = {f.name for f in dataclasses.fields(section_cls)}
            bad = set(values) - valid
            if bad:
                raise InputError(
                    f"unknown config key(s) {sorted(bad)} in [{name}]; valid keys: {sorted(valid)}"
                )
            if name == "retrieval" and isinstance(values.get("auto_k"), bool):  # runs saved before 2026-12-02
                values = {**values, "auto_k": "rule" if values["auto_k"] else "off"}
            parts[name] = section_cls(**values)
        config = cls(**parts)
        config.validate()
        return config

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """A validated config from a TOML file with sections ``[diffusion]``, ``[model]``, ``[retrieval]``,
        ``[train]`` (:meth:`from_dict`); a missing or malformed file raises :class:`InputError`."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is not a valid TOML file: {e}") from None
        return cls.from_dict(data)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys of some sections changed: ``cfg.replace(train={"epochs": 5})``."""
        data = self.to_dict()
        for name, values in sections.items():
            if name not in data:
                raise InputError(f"unknown config section {name!r}; valid sections: {sorted(data)}")
            data[name] = {**data[name], **values}
        return Config.from_dict(data)

    def validate(self) -> None:
        """Check value ranges; raise :class:`InputError` naming the first bad key."""
        d, m, r, t = self.diffusion, self.model, self.retrieval, self.train
        checks = [
            (d.timesteps >= 2, "diffusion.timesteps must be >= 2"),
            (1 <= d.ddim_steps <= d.timesteps, "diffusion.ddim_steps must be in 1..timesteps"),
            (d.schedule in ("cosine", "linear"), "diffusion.schedule must be 'cosine' or 'linear'"),
            (
                d.ddim_spacing in ("leading", "linspace", "trailing"),
                "diffusion.ddim_spacing must be 'leading', 'linspace' or 'trailing'",
            ),
            (d.readout in ("closest", "argmax"), "diffusion.readout must be 'closest' or 'argmax'"),
            (d.proba_temperature > 0, "diffusion.proba_temperature must be > 0"),
            (d.stochastic_eta >= 0, "diffusion.stochastic_eta must be >= 0"),
            (d.prior in ("zero", "linear", "mlp", "auto"), "diffusion.prior must be 'zero', 'linear', 'mlp' or 'auto'"),
            (d.prediction in ("eps", "y0"), "diffusion.prediction must be 'eps' or 'y0'"),
            (d.prior_targets in ("labels", "retrieval", "auto"),
             "diffusion.prior_targets must be 'labels', 'retrieval' or 'auto'"),
            (m.feature_dim >= 1, "model.feature_dim must be >= 1"),
            (m.x_encoder in ("trainable", "frozen"), "model.x_encoder must be 'trainable' or 'frozen'"),
            (m.input_rows_per_dim >= 0 and m.input_min_rank >= 1,
             "model.input_rows_per_dim must be >= 0 (0 = never project) and model.input_min_rank >= 1"),
            (r.k >= 0, "retrieval.k must be >= 0"),
            (r.rows_per_neighbour >= 0, "retrieval.rows_per_neighbour must be >= 0 (0 = no cap)"),
            (r.auto_k in ("off", "screen", "rule"), "retrieval.auto_k must be 'off', 'screen' or 'rule'"),
            (r.metric in ("euclidean", "cosine"), "retrieval.metric must be 'euclidean' or 'cosine'"),
            (r.backend in ("auto", "torch", "faiss"), "retrieval.backend must be 'auto', 'torch' or 'faiss'"),
            (r.index in ("auto", "exact", "ivf", "hnsw") and r.store in ("auto", "flat", "sq8")
             and min(r.nlist, r.nprobe, r.ef_search) >= 0,
             "retrieval.index must be 'auto', 'exact', 'ivf' or 'hnsw', retrieval.store 'auto', 'flat' or 'sq8', "
             "and retrieval.nlist / nprobe / ef_search >= 0"),
            (0 <= d.prior_drop_concentration <= 1, "diffusion.prior_drop_concentration must be in [0, 1]"),
            (r.crossfit_below_rows >= 0, "retrieval.crossfit_below_rows must be >= 0"),
            (t.epochs is None or t.epochs >= 1, "train.epochs must be >= 1"),
            (t.auto_steps >= 1, "train.auto_steps must be >= 1"),
            (t.auto_steps_max_epochs >= 0, "train.auto_steps_max_epochs must be >= 0 (0 = no cap)"),
            (t.auto_epochs >= 0, "train.auto_epochs must be >= 0"),
            (t.auto_class_visits >= 0, "train.auto_class_visits must be >= 0"),
            (t.auto_class_max_steps >= 1, "train.auto_class_max_steps must be >= 1"),
            (t.batch_size >= 2, "train.batch_size must be >= 2"),
            (t.lr > 0, "train.lr must be > 0"),
            (0 <= t.warmup_fraction < 1, "train.warmup_fraction must be in [0, 1)"),
            (t.grad_clip > 0, "train.grad_clip must be > 0"),
            (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
            (0 <= t.val_fraction < 1, "train.val_fraction must be in [0, 1)"),
            (t.evals >= 1, "train.evals must be >= 1"),
            (0 <= t.select_after < 1, "train.select_after must be in [0, 1)"),
            (t.select_targets in ("labels", "retrieval"), "train.select_targets must be 'labels' or 'retrieval'"),
            (t.selection in ("best", "prefer_last", "average"),
             "train.selection must be 'best', 'prefer_last' or 'average'"),
            (t.checkpoint_every >= 0, "train.checkpoint_every must be >= 0"),
            (t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
            # the spelling only: a config naming a GPU must still load on a machine without one
            (is_device_string(self.runtime.device), f"runtime.device must be {DEVICE_HELP}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
