"""scikit-learn style :class:`LRAClassifier` and its run directory.

A run directory holds ``config.json`` (config, classes, seed, versions, input hashes),
``model.safetensors`` (the selected denoiser weights) and ``metrics.json`` (history, timings).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import __version__
from .config import Config
from . import distributed
from .device import resolve_device
from .errors import InputError
from .evaluate import predict_proba, predict_y0, readout
from .features import FeatureRows, is_mapped, map_chunks
from .io import load_tensors, read_json, save_tensors, sha256_array, write_json
from .models import LabelDenoiser
from .retrieval import class_capped_k
from .train import TrainResult, train

RUN_FILES = ("config.json", "model.safetensors", "metrics.json")


def kept_fit(fits: list[tuple[Config, TrainResult]]) -> tuple[tuple[Config, TrainResult], list[int]]:
    """The k check's choice among its fits (the config's k first, then k = 0): the higher held-out accuracy,
    the first fit winning ties. A later fit that ended at its untrained start (the prior) is no rival where
    the first fit had that very start (the same prior, the same held-out accuracy) as a selection candidate
    and kept a trained model instead: the first fit's selection has already weighed the start against what
    it kept and found it not clearly more accurate, and a lead of a few held-out rows is the draw that
    selection "average" is there to avoid (since 2026-12-07; BENCHMARKS "Defaults suite"). Returns the kept
    fit and the k of the fits passed over so."""
    first = fits[0][1]

    def at_start(r: TrainResult) -> bool:
        return (first.best_epoch != 0 and r.best_epoch == 0 and r.prior == first.prior
                and r.best_val_accuracy == first.start_accuracy)

    rivals = fits[:1] + [f for f in fits[1:] if not at_start(f[1])]
    kept = max(rivals, key=lambda f: f[1].best_val_accuracy)
    return kept, [c.retrieval.k for c, r in fits[1:] if at_start(r)]


def check_finite(X: np.ndarray, what: str = "features") -> None:
    """Raise InputError naming the first row holding NaN or inf."""
    if X.ndim == 2:  # chunk by chunk: a memory-mapped file is never read whole
        row = FeatureRows(X).first_nonfinite_row()
        if row is not None:
            raise InputError(f"{what} contain NaN or inf (first bad row: {row})")
        return
    bad = ~np.isfinite(X)
    if bad.any():
        row = int(np.argmax(bad.reshape(len(X), -1).any(axis=1)))
        raise InputError(f"{what} contain NaN or inf (first bad row: {row})")


class LRAClassifier(ClassifierMixin, BaseEstimator):
    """LRA-diffusion classifier over precomputed feature vectors, robust to noisy labels.

    Parameters
    ----------
    k : neighbours for label retrieval (None: the config's k, 10, capped where ``retrieval.rows_per_neighbour``
        is set; checked by ``retrieval.auto_k``: by
        default, where the k-NN vote of the training labels predicts the held-out labels worse than the
        prior f_q does, a second fit with k = 0 is made and the one with the higher held-out accuracy kept
        (a k = 0 fit that ended at its untrained start, the prior the first fit weighed too, is no rival:
        :func:`kept_fit`, ``fit_info_["k_at_start"]``);
        ``fit_info_["k_rule"]``, ``["k_selection"]`` and ``["retrieval_k"]`` say what was measured and kept).
        An integer is used as given; 0 disables retrieval. ``"auto"``
        fits twice, with the config's k and with k = 0, and keeps the fit with the higher accuracy on the
        validation data (the held-out *noisy* labels unless ``X_val, y_val`` are given), so no clean
        labels are needed; for weak encoders whose neighbours carry noisier labels than the samples
        themselves (see docs/label-issues.md). ``fit_info_["k_selection"]`` records both accuracies.
    epochs : training epochs (None: config default, auto from ``train.auto_steps``, ``auto_epochs`` and
        ``auto_class_visits``).
    batch_size, feature_dim, lr, ddim_steps, val_fraction : shortcuts for the config keys of those
        names (None: keep the config's value).
    n_samples : 1 = ``predict_proba`` from the deterministic run's closeness scores; > 1 = class
        frequencies over that many stochastic DDIM runs.
    config : a :class:`~lra_diffusion.config.Config` or a nested dict of its sections, for every other
        setting; the shortcuts above override it. E.g. ``{"diffusion": {"prior": "linear"}}``: CARD's
        prior mean f_q is always the logistic regression; by default (``"auto"``) it is a one-hidden-layer
        network where that is clearly more accurate on the held-out labels (``fit_info_["prior"]`` says
        which and why; README, "How the defaults are chosen").
    random_state : int, ``np.random.RandomState`` or None; fixes every draw of the fit.
    device : where to train and predict: ``"auto" | "cpu" | "cuda" | "cuda:i"`` (None: the config's
        ``runtime.device``, CPU by default). A runtime choice: it is not saved with the run, and
        ``load`` puts a run on the CPU unless given a device.
    verbose : show progress bars.

    Attributes
    ----------
    classes_ : (C,) the label values seen in ``fit``.
    n_features_in_ : D.
    model_ : the trained :class:`~lra_diffusion.models.LabelDenoiser` (eval mode).
    config_ : the effective :class:`~lra_diffusion.config.Config`.
    history_ : per-epoch training loss and validation accuracy.
    fit_info_ : what the fit measured and chose: epochs, steps, seconds, the selected epoch; ``"prior"``,
        ``"k_rule"``, ``"k_selection"`` (above) and, for features wider than the rows support,
        ``"projection"`` (``[model] input_rows_per_dim``: the rank, both logistic regressions' validation
        accuracies and whether the denoiser sees the projection; README, "How the defaults are chosen"),
        and ``"selection"`` (``[train] selection = "average"``, the default: the averaged epochs, the
        held-out rows only the best candidate / only the average gets right, and which was kept; where one
        lone trained epoch is best, the rows only it / only the untrained start gets right, and ``"kept":
        "start"`` where it is not clearly more accurate).
    """

    def __init__(
        self,
        *,
        k: int | str | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        feature_dim: int | None = None,
        lr: float | None = None,
        ddim_steps: int | None = None,
        val_fraction: float | None = None,
        n_samples: int = 1,
        config: Config | dict | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str | None = None,
        verbose: bool = False,
    ):
        self.k = k
        self.epochs = epochs
        self.batch_size = batch_size
        self.feature_dim = feature_dim
        self.lr = lr
        self.ddim_steps = ddim_steps
        self.val_fraction = val_fraction
        self.n_samples = n_samples
        self.config = config
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _effective_config(self) -> Config:
        if not (self.k is None or self.k == "auto" or isinstance(self.k, (int, np.integer))):
            raise InputError(f'k must be an integer >= 0, "auto" or None, got {self.k!r}')
        if self.config is None:
            base = Config()
        elif isinstance(self.config, Config):
            base = self.config
        elif isinstance(self.config, dict):
            base = Config.from_dict(self.config)
        else:
            raise InputError(f"config must be a Config, a dict or None, got {type(self.config).__name__}")
        shortcuts = {
            # an explicit k is used as given, and k="auto" fits k and 0 both (no check in either case)
            "retrieval": {"k": None if self.k == "auto" else self.k, "auto_k": None if self.k is None else "off",
                          "rows_per_neighbour": None if self.k is None else 0},
            "train": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                      "val_fraction": self.val_fraction},
            "model": {"feature_dim": self.feature_dim},
            "diffusion": {"ddim_steps": self.ddim_steps},
            "runtime": {"device": self.device},
        }
        changes = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in shortcuts.items()}
        return base.replace(**{s: kv for s, kv in changes.items() if kv})

    def _check_X(self, X, *, reset: bool, what: str = "features") -> np.ndarray:
        if is_mapped(X) and X.ndim == 2:  # a memory-mapped file stays mapped (any float dtype), see docs/scale.md
            if reset:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise InputError(f"{what}: X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            check_finite(X, what)
            return X
        try:
            X = validate_data(self, X, reset=reset, dtype=np.float32, ensure_all_finite=False)
        except ValueError as e:
            # one line that keeps scikit-learn's advice ("Reshape your data ...") but not its array dump
            message = " ".join(re.sub(r"array=\[.*?\]\.?", "", str(e), flags=re.S).split())
            raise InputError(f"{what}: {message}") from None
        check_finite(X, what)
        return X

    def fit(self, X, y, *, X_val=None, y_val=None, run_dir: str | Path | None = None, resume: bool = False):
        """Fit on features X (N, D) with noisy labels y (N,); returns self.

        ``X_val, y_val``: optional validation data (e.g. a small clean set) for model selection.
        ``run_dir``: also checkpoint there during training and save the run there at the end.
        ``resume``: continue from the newest valid checkpoint in ``run_dir``.
        """
        config = self._effective_config()
        X = self._check_X(X, reset=True)
        if y is None:
            raise InputError("LRAClassifier requires y to be passed, but the target y is None")
        try:
            y = column_or_1d(y, warn=True)  # an (N, 1) column is accepted with a DataConversionWarning
            check_classification_targets(y)
        except ValueError as e:
            raise InputError(f"labels: {str(e).splitlines()[0]}") from None
        if len(y) != len(X):
            raise InputError(f"features have {len(X)} rows but labels have {len(y)}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InputError(f"need at least 2 classes to train, got 1 class ({self.classes_[0]!r})")
        if (X_val is None) != (y_val is None):
            raise InputError("give X_val and y_val together (validation features and their labels), or neither")
        if X_val is not None:
            X_val = self._check_X(X_val, reset=False, what="validation features")
            y_val = np.asarray(y_val).ravel()
            if len(y_val) != len(X_val):
                raise InputError(f"validation features have {len(X_val)} rows but labels have {len(y_val)}")
            unknown = np.setdiff1d(y_val, self.classes_)
            if len(unknown):
                raise InputError(f"validation labels {unknown[:5].tolist()} are not among the training classes")
            y_val = np.searchsorted(self.classes_, y_val)
        rc = config.retrieval  # with rows_per_neighbour: fewer neighbours where classes have few rows
        config = config.replace(retrieval={"k": class_capped_k(rc.k, len(X), len(self.classes_), rc.rows_per_neighbour)})
        self.seed_ = int(check_random_state(self.random_state).randint(2**31 - 1))
        if self.k == "auto" and X_val is None and config.train.val_fraction <= 0:
            raise InputError('k="auto" chooses k on validation data: give X_val, y_val or val_fraction > 0')
        ckpt = Path(run_dir) / "checkpoints" if run_dir is not None else None

        def fit_one(cand: Config, subfolder: bool):
            return train(
                X, y_idx, num_classes=len(self.classes_), config=cand, val_features=X_val, val_labels=y_val,
                seed=self.seed_, checkpoint_dir=ckpt / f"k{cand.retrieval.k}" if ckpt and subfolder else ckpt,
                resume=resume, progress=self.verbose,
            )

        fits = [(config, fit_one(config, subfolder=self.k == "auto"))]
        k_rule = fits[0][1].k_rule
        # k="auto" always fits k = 0 as well; the default screen only where the k-NN vote is below the prior
        if self.k == "auto" or (config.retrieval.auto_k == "screen" and k_rule is not None and k_rule["k"] == 0):
            no_retrieval = config.replace(retrieval={"k": 0, "auto_k": "off"})
            fits.append((no_retrieval, fit_one(no_retrieval, subfolder=True)))
        selection = {c.retrieval.k: r.best_val_accuracy for c, r in fits}
        (config, result), at_start = kept_fit(fits)
        if result.prior is not None and result.prior["kind"] == "zero":  # dropped (the labels flip in pairs)
            config = config.replace(diffusion={"prior": "zero"})
        self.config_ = config
        self.model_ = result.model
        self.history_ = result.history
        self.train_result_ = result
        self.fit_info_ = {
            "n_samples": len(X), "epochs": result.epochs, "steps": result.steps,
            "seconds": sum(r.seconds for _, r in fits),  # both fits where k = 0 was fitted too
            "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "features_sha256": sha256_array(X), "labels_sha256": sha256_array(y_idx),
            "resumed_from_step": result.resumed_from, "retrieval_k": result.neighbours.shape[1],
        }
        if result.prior is not None:
            self.fit_info_["prior"] = result.prior
        if result.selection is not None:
            self.fit_info_["selection"] = result.selection
        if result.projection is not None:
            self.fit_info_["projection"] = result.projection
        if k_rule is not None:
            self.fit_info_["k_rule"] = k_rule
        if len(selection) > 1:
            self.fit_info_["k_selection"] = {str(k): acc for k, acc in selection.items()}
        if at_start:
            self.fit_info_["k_at_start"] = at_start  # ended at the start the kept fit weighed (kept_fit)
        if run_dir is not None and distributed.context().is_main:  # under torchrun, rank 0 writes the run
            self.save(run_dir)
        return self

    def _runtime(self) -> dict:
        """``device`` and ``amp`` keywords for prediction: the ``device`` parameter wins over the config."""
        rt = self.config_.runtime
        return {"device": resolve_device(self.device if self.device is not None else rt.device), "amp": rt.amp}

    def predict_label_vectors(self, X) -> np.ndarray:
        """Deterministic DDIM label vectors y0 (N, C), one column per class in ``classes_``."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        rows = FeatureRows(X) if is_mapped(X) else X  # a mapped file is predicted in chunks
        return map_chunks(lambda c: predict_y0(self.model_, c, self.config_.diffusion, **self._runtime()), rows).numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,): the coordinate of the DDIM output closest to 1."""
        y0 = torch.from_numpy(self.predict_label_vectors(X))
        return self.classes_[readout(y0, self.config_.diffusion.readout).numpy()]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C) in the order of ``classes_`` (see ``n_samples``)."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        gen = torch.Generator().manual_seed(self.seed_)
        return predict_proba(self.model_, X, self.config_.diffusion, n_samples=self.n_samples, generator=gen,
                             **self._runtime()).numpy()

    def find_label_issues(self, X, y, **kwargs):
        """Score and flag the labels y (N,) of X (N, D); see :func:`lra_diffusion.issues.find_label_issues`.

        In-sample by default (this fitted model; fitted on X, y first if it is not fitted yet); ``cv=K``
        fits K clones of this estimator for out-of-sample scores. Returns a ``LabelIssues``.
        """
        from .issues import find_label_issues

        return find_label_issues(X, y, estimator=self, **kwargs)

    # ---- run directory -------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``metrics.json`` into ``run_dir``."""
        check_is_fitted(self)
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
        info = {
            "format": "lra-diffusion-run/1",
            "config": self.config_.to_dict(),
            "params": {k: v for k, v in self.get_params().items() if k not in ("config", "random_state", "device")},
            "classes": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str,
            "n_features_in": int(self.n_features_in_),
            "seed": self.seed_,
            "inputs": {"features_sha256": self.fit_info_["features_sha256"],
                       "labels_sha256": self.fit_info_["labels_sha256"]},
            "versions": {"lra_diffusion": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        # config.json marks a complete run, so it is written last; a failed save (disk full) removes the
        # files it wrote, so it never leaves a half-written run that loads
        written: list[Path] = []
        try:
            for name, write in (
                ("model.safetensors", lambda path: save_tensors(path, self.model_.state_dict())),
                ("metrics.json", lambda path: write_json(path, {**self.fit_info_, "history": self.history_})),
                ("config.json", lambda path: write_json(path, info)),
            ):
                write(run_dir / name)
                written.append(run_dir / name)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | None = None) -> LRAClassifier:
        """Load a fitted classifier from a run directory written by :meth:`save`.

        ``device``: where it predicts (None: the CPU, wherever the run was trained).
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise InputError(f"run directory not found: {run_dir}")
        missing = [f for f in RUN_FILES[:2] if not (run_dir / f).exists()]
        if missing:
            raise InputError(f"{run_dir} is not a run directory (missing {', '.join(missing)})")
        info = read_json(run_dir / "config.json")
        if not isinstance(info, dict) or info.get("format") != "lra-diffusion-run/1":
            raise InputError(f"{run_dir / 'config.json'} is not an lra-diffusion run config")
        # the device a run was trained on says nothing about this machine: runtime.device starts over
        config = Config.from_dict(info["config"]).replace(runtime={"device": "cpu"})
        est = cls(**info["params"], config=config, device=device)
        est.config_ = config
        est.classes_ = np.asarray(info["classes"], dtype=np.dtype(info["classes_dtype"]))
        est.n_features_in_ = info["n_features_in"]
        est.seed_ = info["seed"]
        tensors, _ = load_tensors(run_dir / "model.safetensors")
        hidden = tensors.get("prior_hidden_weight")  # an MLP prior ("mlp", or chosen by "auto")
        proj = tensors.get("feat_proj")  # wide features at few rows ([model] input_rows_per_dim)
        model = LabelDenoiser.from_config(len(est.classes_), est.n_features_in_, config,
                                          prior_hidden=0 if hidden is None else hidden.shape[1],
                                          input_rank=0 if proj is None else proj.shape[1])
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise InputError(f"{run_dir / 'model.safetensors'} does not match its config: {str(e).splitlines()[0]}") from None
        est.model_ = model.eval()
        metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
        est.history_ = metrics.get("history", [])
        est.fit_info_ = {k: v for k, v in metrics.items() if k != "history"}
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

