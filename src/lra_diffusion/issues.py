"""Finding wrong training labels: per-sample label-quality scores, flag rules and their metrics.

A trained LRA-diffusion model gives a distribution over labels for every sample. These scores turn it
into "how likely is the given label correct" (higher = more likely correct), each in [0, 1]:

* ``stochastic``: the fraction of ``n_samples`` stochastic DDIM runs (y_T ~ N(0, I)) whose read-out
  equals the given label, i.e. ``predict_proba(n_samples > 1)[i, given_i]``.
* ``closeness``: the deterministic run's closeness probability of the given label,
  ``softmax(-(y0 - 1)^2 / temperature)[i, given_i]`` (``predict_proba(n_samples=1)``).
* ``agreement``: the retrieval step's neighbour agreement, the fraction of the k+1 candidates (own label
  and the k neighbours' labels in f_p space) equal to the given label. It needs no trained model.
* ``prior``: CARD's prior mean f_q(x)'s probability of the given label (the model's untrained start, a
  classifier fitted on the noisy labels before the denoiser trains); only for models with a prior.
* ``closeness_prior``: the mean of ``closeness`` and ``prior``.
* ``mean``: the mean of ``closeness``, ``stochastic`` and ``agreement``.

``DEFAULT_SCORE`` is ``"auto"``: ``closeness_prior`` for a model that trained on the given labels alone
(k = 0) with a prior and is scored in-sample, else ``closeness`` (see docs/label-issues.md for the
measurements behind it: a k = 0 denoiser partly memorises the labels it is then asked to judge, the
regularised prior, chosen on the held-out labels, less).
A flag rule turns scores into a boolean mask: ``score < threshold`` (default :data:`DEFAULT_THRESHOLD`),
or the ``round(noise_rate * N)`` lowest scores when an expected noise rate is given.

Out-of-sample (``cv=K``) fits K models on K-1 folds each and scores every sample with the model that
did not see it; in-sample (``cv=None``) scores the training data with the model trained on it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from .device import batches_to_device
from .errors import InputError
from .evaluate import closeness_proba, predict_y0, readout
from .io import atomic_write
from .retrieval import NeighbourLabelSampler, knn

if TYPE_CHECKING:
    from .estimator import LRAClassifier

Score = Literal["auto", "stochastic", "closeness", "agreement", "prior", "closeness_prior", "mean"]
SCORES: tuple[str, ...] = ("stochastic", "closeness", "agreement", "prior", "closeness_prior", "mean")
DEFAULT_SCORE: Score = "auto"
DEFAULT_THRESHOLD = 0.5
DEFAULT_CV: int | None = None
DEFAULT_N_SAMPLES = 20
PRIOR_BLOCK = 65536  # rows per block of the prior score
CSV_COLUMNS = ("index", "is_label_issue", "label_quality", "given_label", "predicted_label")


@dataclass
class LabelIssues:
    """Per-sample label-quality result; every field is a NumPy array of length N in input order.

    ``label_quality`` is the chosen score (higher = more likely correct); ``is_label_issue`` the flags;
    ``true_label`` is filled only when clean labels were given (benchmarks, the report).
    """

    index: np.ndarray  # (N,) int64 row of the input
    given_label: np.ndarray  # (N,) the labels that were scored, in the user's label values
    predicted_label: np.ndarray  # (N,) the model's deterministic read-out, same values
    label_quality: np.ndarray  # (N,) float64 score in [0, 1]
    is_label_issue: np.ndarray  # (N,) bool flags
    score: str = DEFAULT_SCORE
    true_label: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # every score computed, by name

    def __len__(self) -> int:
        return len(self.index)

    def ranked(self) -> np.ndarray:
        """Row indices ordered from most to least suspicious (lowest score first; ties by row)."""
        return self.index[np.lexsort((self.index, self.label_quality))]

    def metrics(self, true_labels: np.ndarray | None = None) -> dict[str, float]:
        """Precision, recall, F1 of the flags and AUROC of the scores against the real label errors."""
        true_labels = self.true_label if true_labels is None else np.asarray(true_labels)
        if true_labels is None:
            raise InputError("metrics need the true (clean) labels")
        if len(true_labels) != len(self):
            raise InputError(f"true labels have {len(true_labels)} entries but {len(self)} samples were scored")
        return issue_metrics(self.given_label != true_labels, self.label_quality, self.is_label_issue)

    def to_csv(self, path: str | Path) -> None:
        """Write ``index,is_label_issue,label_quality,given_label,predicted_label[,true_label]`` atomically.

        The columns after ``index`` are cleanlab's ``CleanLearning.find_label_issues`` columns, so
        ``pandas.read_csv(path, index_col=0)`` gives the frame cleanlab users know.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        columns = list(CSV_COLUMNS) + (["true_label"] if self.true_label is not None else [])
        writer.writerow(columns)
        for row in range(len(self)):
            values = [int(self.index[row]), bool(self.is_label_issue[row]), f"{self.label_quality[row]:.6g}",
                      _plain(self.given_label[row]), _plain(self.predicted_label[row])]
            if self.true_label is not None:
                values.append(_plain(self.true_label[row]))
            writer.writerow(values)
        atomic_write(path, buf.getvalue().encode())

    @classmethod
    def from_csv(cls, path: str | Path) -> LabelIssues:
        """Read a file written by :meth:`to_csv` (labels come back as int when they all are)."""
        path = Path(path)
        try:
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
        except FileNotFoundError:
            raise InputError(f"issues file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read issues file {path}: {e}") from None
        if not rows or tuple(rows[0][: len(CSV_COLUMNS)]) != CSV_COLUMNS:
            raise InputError(f"{path} is not an issues CSV (expected columns {', '.join(CSV_COLUMNS)})")
        header, body = rows[0], rows[1:]
        if any(len(r) != len(header) for r in body):
            raise InputError(f"{path} has rows with a different number of columns than its header")
        cols = {name: [r[j] for r in body] for j, name in enumerate(header)}
        try:
            return cls(
                index=np.asarray(cols["index"], dtype=np.int64),
                is_label_issue=np.asarray([v == "True" for v in cols["is_label_issue"]], dtype=bool),
                label_quality=np.asarray(cols["label_quality"], dtype=np.float64),
                given_label=_parse_labels(cols["given_label"]),
                predicted_label=_parse_labels(cols["predicted_label"]),
                true_label=_parse_labels(cols["true_label"]) if "true_label" in cols else None,
            )
        except ValueError as e:
            raise InputError(f"{path} holds a value that is not a number where one is expected: {e}") from None


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _parse_labels(values: list[str]) -> np.ndarray:
    try:
        return np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.asarray(values)


# ---- metrics ---------------------------------------------------------------------------------------
def issue_metrics(is_error: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of ``flags`` and AUROC of ``-scores`` for the real errors, all (N,).

    AUROC is NaN when the labels hold no error or only errors.
    """
    is_error, flags = np.asarray(is_error, dtype=bool), np.asarray(flags, dtype=bool)
    both = len(np.unique(is_error)) == 2
    return {
        "precision": float(precision_score(is_error, flags, zero_division=0)),
        "recall": float(recall_score(is_error, flags, zero_division=0)),
        "f1": float(f1_score(is_error, flags, zero_division=0)),
        "auroc": float(roc_auc_score(is_error, -np.asarray(scores, dtype=np.float64))) if both else float("nan"),
        "flagged": int(flags.sum()),
        "errors": int(is_error.sum()),
    }


# ---- flag rule -------------------------------------------------------------------------------------
def flag_issues(scores: np.ndarray, *, threshold: float | None = None, noise_rate: float | None = None) -> np.ndarray:
    """Boolean flags (N,): ``scores < threshold``, or the ``round(noise_rate * N)`` lowest scores.

    Give at most one of the two; with neither, ``threshold = DEFAULT_THRESHOLD``. Ties at the cut of the
    noise-rate rule go to the lower row index, so the count is exact.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if threshold is not None and noise_rate is not None:
        raise InputError("give a threshold or an expected noise rate, not both")
    if noise_rate is not None:
        if not 0 <= noise_rate <= 1:
            raise InputError(f"noise rate must be in [0, 1], got {noise_rate}")
        flags = np.zeros(len(scores), dtype=bool)
        flags[np.argsort(scores, kind="stable")[: int(round(noise_rate * len(scores)))]] = True
        return flags
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    return scores < threshold


# ---- scores ----------------------------------------------------------------------------------------
def agreement_scores(features: np.ndarray, labels: np.ndarray, *, k: int, metric: str = "euclidean",
                     backend: str = "auto") -> np.ndarray:
    """Neighbour agreement (N,): the fraction of the k+1 candidates (own label + k neighbours') equal to
    the own label, neighbours by exact k-NN among ``features`` (N, D) excluding the sample itself."""
    if k < 1:
        raise InputError("the agreement score needs retrieval (k >= 1)")
    k = min(k, len(features) - 1)
    neighbours, _ = knn(features, k, metric=metric, backend=backend, exclude_self=True)
    return NeighbourLabelSampler(labels, neighbours).agreement().numpy().astype(np.float64)


def model_scores(est: LRAClassifier, X: np.ndarray, y_idx: np.ndarray, *, n_samples: int = DEFAULT_N_SAMPLES,
                 prior: bool = False, generator: torch.Generator | None = None,
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model's scores of the given labels ``y_idx`` (N,) (indices into ``est.classes_``) for X (N, D).

    Returns ``({"closeness": (N,)[, "stochastic": (N,)][, "prior": (N,)]}, predicted class indices (N,))``;
    the stochastic score only when ``n_samples >= 1`` (it costs ``n_samples`` more DDIM runs), the prior's
    probability of the given label only with ``prior=True``.
    """
    dc = est.config_.diffusion
    rows = np.arange(len(X))
    y0 = predict_y0(est.model_, X, dc)
    pred = readout(y0, dc.readout).numpy()
    # float64: in float32 every label farther than ~10 closeness units underflows to exactly 0, and the
    # most suspicious samples would tie instead of being ranked
    closeness = closeness_proba(y0.double(), dc.proba_temperature).numpy()[rows, y_idx]
    scores = {"closeness": closeness.astype(np.float64)}
    if n_samples >= 1:
        hits = np.zeros(len(X))
        for _ in range(n_samples):
            y0_s = predict_y0(est.model_, X, dc, stochastic=True, generator=generator)
            hits += readout(y0_s, dc.readout).numpy() == y_idx
        scores["stochastic"] = hits / n_samples
    if prior:
        if not est.model_.has_prior:
            raise InputError('the prior score needs a model with a prior (diffusion.prior other than "zero")')
        x = np.asarray(X, dtype=np.float32)
        dev = est.model_.prior_bias.device  # where the model's weights are (a GPU after a GPU fit)
        with torch.no_grad():  # in row blocks: standardising a (1M, D) copy at once would double the memory
            f_q = torch.cat([est.model_.prior_mean(xb).cpu() for xb in batches_to_device(x, PRIOR_BLOCK, dev)])
        scores["prior"] = f_q.double().numpy()[rows, y_idx]
    return scores, pred


def resolve_score(score: str, est: LRAClassifier | None) -> str:
    """The score ``"auto"`` stands for with the fitted ``est`` scored in-sample (None: out-of-sample folds).

    ``closeness_prior`` where the model trained on the given labels alone (k = 0) with a prior: its
    denoiser partly memorises the labels it is then asked to judge (measured on CIFAR-10N aggre, k-means
    features: 87% of the noisy training labels reproduced against 64% of held-out ones), while the
    regularised prior, chosen on the held-out labels, does less (linear: 67% against 63%; the MLP at weight
    decay 1e-2: 73%). Else ``closeness``; any other name as given.
    """
    if score != "auto":
        return score
    if est is not None and est.config_.retrieval.k == 0 and est.model_.has_prior:
        return "closeness_prior"
    return "closeness"


def _check_inputs(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D (N,), got shape {y.shape}")
    if X.ndim != 2:
        raise InputError(f"features must be 2-D (N, D), got shape {X.shape}")
    if len(X) != len(y):
        raise InputError(f"features have {len(X)} rows but labels have {len(y)}")
    if len(y) == 0:
        raise InputError("no samples to score")
    return X, y


def find_label_issues(
    X,
    y,
    *,
    estimator: LRAClassifier | None = None,
    cv: int | None = DEFAULT_CV,
    score: Score = DEFAULT_SCORE,
    threshold: float | None = None,
    noise_rate: float | None = None,
    n_samples: int = DEFAULT_N_SAMPLES,
    extra_scores: tuple[str, ...] | list[str] = (),
    true_labels=None,
    random_state: int = 0,
) -> LabelIssues:
    """Score every label of ``y`` (N,) for features ``X`` (N, D) and flag the likely wrong ones.

    Parameters
    ----------
    X, y : the training features and their (noisy) labels.
    estimator : an :class:`~lra_diffusion.estimator.LRAClassifier`. With ``cv=None`` it is used as
        trained (fitted on X, y first if it is not fitted yet); with ``cv=K`` unfitted clones of it are
        fitted on the folds. None: ``LRAClassifier(random_state=random_state)``.
    cv : None = in-sample scores from one model; K >= 2 = out-of-sample scores from K stratified folds.
    score : ``auto`` (default, see :func:`resolve_score`) | ``closeness`` | ``stochastic`` | ``agreement`` |
        ``prior`` | ``closeness_prior`` | ``mean``; it becomes ``label_quality`` and the result's ``score``
        says which one ``auto`` stood for.
    threshold, noise_rate : the flag rule (see :func:`flag_issues`).
    n_samples : stochastic DDIM runs for the ``stochastic`` score.
    extra_scores : other scores to compute too (e.g. ``SCORES`` for all); every computed score is kept in
        ``result.scores``. Only what is needed is computed: ``stochastic`` costs ``n_samples`` DDIM runs
        and ``agreement`` a k-NN search over X.
    true_labels : optional clean labels (N,), stored on the result for :meth:`LabelIssues.metrics`.
    random_state : seeds the folds and the stochastic runs.

    Returns
    -------
    LabelIssues with labels in the user's label values.
    """
    from .estimator import LRAClassifier

    bad = [score] * (score not in ("auto", *SCORES)) + sorted(set(extra_scores) - set(SCORES))
    if bad:
        raise InputError(f"unknown score {bad[0]!r}; valid: {['auto', *SCORES]}")
    if cv is not None and (not isinstance(cv, (int, np.integer)) or cv < 2):
        raise InputError(f"cv must be None (in-sample) or an integer >= 2, got {cv!r}")
    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    X, y = _check_inputs(X, y)
    if true_labels is not None:
        true_labels = np.asarray(true_labels).ravel()
        if len(true_labels) != len(y):
            raise InputError(f"true labels have {len(true_labels)} entries but labels have {len(y)}")
    est = estimator if estimator is not None else LRAClassifier(random_state=random_state)
    gen = torch.Generator().manual_seed(random_state)
    if cv is None:
        try:
            check_is_fitted(est)
        except NotFittedError:  # fit on the data to score
            est.fit(X, y)
    score = resolve_score(score, est if cv is None else None)
    wanted = {score, *extra_scores}
    if "mean" in wanted:
        wanted |= {"closeness", "stochastic", "agreement"}
    if "closeness_prior" in wanted:
        wanted |= {"prior"}
    n_runs = n_samples if "stochastic" in wanted else 0
    want_prior = "prior" in wanted

    if cv is None:
        classes = est.classes_
        unknown = np.setdiff1d(y, classes)
        if len(unknown):
            raise InputError(f"labels {unknown[:5].tolist()} are not among the model's classes {classes[:10].tolist()}")
        Xc = est._check_X(X, reset=False)
        y_idx = np.searchsorted(classes, y)
        scores, pred_idx = model_scores(est, Xc, y_idx, n_samples=n_runs, prior=want_prior, generator=gen)
        predicted = classes[pred_idx]
        k = est.config_.retrieval.k
        rc = est.config_.retrieval
    else:
        classes = np.unique(y)
        counts = np.bincount(np.searchsorted(classes, y))
        if counts.min() < cv:
            raise InputError(f"cv={cv} folds need at least {cv} samples of every class; "
                             f"class {classes[np.argmin(counts)]!r} has {counts.min()}")
        names = ["closeness"] + ["stochastic"] * bool(n_runs) + ["prior"] * want_prior
        scores = {name: np.zeros(len(y)) for name in names}
        predicted = np.empty(len(y), dtype=classes.dtype)
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
        fold_est = None
        for fit_rows, held_rows in folds.split(np.zeros(len(y)), y):
            fold_est = clone(est).fit(X[fit_rows], y[fit_rows])
            known = np.isin(y[held_rows], fold_est.classes_)  # stratified folds keep every class; be safe
            y_idx = np.searchsorted(fold_est.classes_, y[held_rows]).clip(0, len(fold_est.classes_) - 1)
            Xh = fold_est._check_X(X[held_rows], reset=False)
            s, pred_idx = model_scores(fold_est, Xh, y_idx, n_samples=n_runs, prior=want_prior, generator=gen)
            for name in scores:
                scores[name][held_rows] = np.where(known, s[name], 0.0)
            predicted[held_rows] = fold_est.classes_[pred_idx]
        rc = fold_est.config_.retrieval
        k = rc.k
    if "agreement" in wanted:
        if k < 1:
            raise InputError("the agreement and mean scores need retrieval, but the model was trained with k=0")
        scores["agreement"] = agreement_scores(np.asarray(X, dtype=np.float32), np.searchsorted(classes, y),
                                               k=k, metric=rc.metric, backend=rc.backend)
    if "mean" in wanted:
        scores["mean"] = (scores["closeness"] + scores["stochastic"] + scores["agreement"]) / 3
    if "closeness_prior" in wanted:
        scores["closeness_prior"] = (scores["closeness"] + scores["prior"]) / 2
    quality = scores[score]
    return LabelIssues(
        index=np.arange(len(y), dtype=np.int64), given_label=y, predicted_label=predicted,
        label_quality=quality, is_label_issue=flag_issues(quality, threshold=threshold, noise_rate=noise_rate),
        score=score, true_label=true_labels, scores=scores,
    )


def cleanlab_issues(X, y, *, cv: int = 5, C: float = 1.0, true_labels=None, random_state: int = 0) -> LabelIssues:
    """The usual cleanlab baseline on the same features: out-of-sample ``pred_probs`` from a logistic
    regression on standardised X (``cross_val_predict``, ``cv`` stratified folds), then cleanlab's
    ``find_label_issues`` (flags, confident learning's ``prune_by_noise_rate``) and
    ``get_label_quality_scores`` (self-confidence, the scores). Needs ``pip install cleanlab``."""
    try:
        from cleanlab.filter import find_label_issues as cl_find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise InputError("the cleanlab baseline needs cleanlab: pip install 'lra-diffusion[bench]'") from None
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _check_inputs(X, y)
    classes, y_idx = np.unique(y, return_inverse=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    pred_probs = cross_val_predict(model, X, y_idx, cv=folds, method="predict_proba")
    flags = cl_find_label_issues(y_idx, pred_probs, n_jobs=1)
    quality = get_label_quality_scores(y_idx, pred_probs)
    return LabelIssues(
        index=np.arange(len(y), dtype=np.int64), given_label=y, predicted_label=classes[pred_probs.argmax(1)],
        label_quality=quality.astype(np.float64), is_label_issue=np.asarray(flags, dtype=bool),
        score="cleanlab self_confidence", true_label=None if true_labels is None else np.asarray(true_labels),
    )


# ---- transition matrices ---------------------------------------------------------------------------
def transition_from_flags(given: np.ndarray, predicted: np.ndarray, flags: np.ndarray, num_classes: int) -> np.ndarray:
    """Estimated noise transition matrix (C, C): row i = P(given label = j | true label = i), where the
    true label is taken to be the prediction for flagged samples and the given label otherwise.
    Inputs are class indices (N,); empty rows stay zero."""
    est_true = np.where(flags, predicted, given)
    return transition_counts(est_true, given, num_classes)


def transition_counts(true: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised (C, C) matrix of P(given = j | true = i) from class indices (N,)."""
    m = np.zeros((num_classes, num_classes))
    np.add.at(m, (np.asarray(true), np.asarray(given)), 1)
    rows = m.sum(1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
