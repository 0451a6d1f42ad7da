"""Before training: the run's prior f_q and the k check.

:func:`settle_prior` fits CARD's prior mean f_q to the noisy labels, then (the k check) lets the majority
vote of each held-out row's k nearest training rows and the prior predict the same held-out labels, and
acts on the counts, in this order:

1. the labels flip in pairs (``[diffusion] prior_drop_concentration``) and the vote is not clearly worse:
   train without the prior (a classifier fitted to such labels learns the flips);
2. the vote is clearly better (``prior_targets = "auto"``): fit the prior again, to the retrieval targets;
3. ``auto_k = "rule"``: k = 0 where the vote is clearly worse (the default ``"screen"`` leaves that second
   fit to the estimator, which reads ``k_rule["k"]``).

BENCHMARKS "Defaults suite" has the ablation behind each of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import distributed
from .config import Config
from .features import FeatureRows, float_tensor
from .models import PRIOR_MAX_ROWS, LabelDenoiser, choose_prior, clearly_better
from .retrieval import NeighbourLabelSampler, flip_concentration, knn_streaming, neighbour_vote
from .rows import TrainingRows

K_RULE_ROWS = 5000  # held-out rows the k rule scores at most (evenly spaced over the slice)
# the prior is dropped (prior_drop_concentration) up to this many classes: without it the denoiser beat the
# 10-NN vote at 77 classes (Banking77 pair flips) but reached 0.54 against 0.78 at 200 (BENCHMARKS)
PRIOR_DROP_MAX_CLASSES = 100
CROSSFIT_FOLDS = 5  # [retrieval] crossfit_below_rows: the training rows' out-of-fold prior predictions


def settle_prior(
    build: Callable[[Config], LabelDenoiser], rows: TrainingRows, config: Config, *, seed: int,
    generator: torch.Generator, device: torch.device, ctx,
) -> tuple[LabelDenoiser, dict | None, dict | None, np.ndarray]:
    """The denoiser to train, on ``device``, with its prior fitted and the k check acted on.

    ``build(config)`` returns the seeded initial denoiser of a config. Returns the model, the record of its
    prior (None without one; ``{"kind": "zero", "dropped": <record>}`` where it was dropped), the k check's
    record (None where it did not run) and the neighbours the draws use ((n, 0) after the rule's k = 0).
    """
    rc, dc = config.retrieval, config.diffusion
    model = build(config)
    neighbours = rows.neighbours
    if not model.has_prior:
        return model.to(device), None, None, neighbours
    how = {"kind": dc.prior, "hidden": config.model.feature_dim, "seed": seed}
    prior_info = fit_prior_to(model, rows, "retrieval" if dc.prior_targets == "retrieval" else "labels",
                              config, how, generator)
    model.to(device)
    if not ((rc.auto_k != "off" or dc.prior_targets == "auto" or dc.prior_drop_concentration < 1) and rc.k > 0
            and rows.val_features is not None):
        return model, prior_info, None, neighbours
    k_rule = k_check(model, rows, config, how, device, ctx)
    vote_worse = k_rule["k"] == 0
    if ((k_rule["flip_concentration"] or 0) > dc.prior_drop_concentration
            and model.num_classes <= PRIOR_DROP_MAX_CLASSES and not vote_worse):
        # the labels flip in pairs, which a classifier fitted to them learns (and the noisy held-out
        # labels reward): train without the prior, as prior "zero" (the same initial weights)
        prior_info = {"kind": "zero", "dropped": prior_info}
        model = build(config.replace(diffusion={"prior": "zero"})).to(device)
    elif dc.prior_targets == "auto" and vote_clearly_worse(k_rule["prior_only"], k_rule["vote_only"], k_rule["rows"]):
        # the vote clearly beats the prior fitted to the labels: fit it to the denoiser's own targets
        model.cpu()
        prior_info = fit_prior_to(model, rows, "retrieval", config, how, generator)
        model.to(device)
    if rc.auto_k == "rule":
        neighbours = neighbours[:, : k_rule["k"]]
    return model, prior_info, k_rule, neighbours


def fit_prior_to(model: LabelDenoiser, rows: TrainingRows, what: str, config: Config, how: dict,
                 generator: torch.Generator) -> dict:
    """Fit ``model``'s prior (on the CPU) to the noisy ``"labels"`` or to the draws' expected targets
    (``"retrieval"``); returns the record of the choice. A mapped file: the prior is fitted on seeded
    subsamples of one chunk (docs/scale.md)."""
    n, x, y = len(rows), rows.x, rows.labels
    fit_rows = rows.x_rows.subsample(how["seed"]) if x is None else None
    if what == "labels":
        y_fit = y if fit_rows is None else y[fit_rows]
    else:
        if x is not None and n > PRIOR_MAX_ROWS:  # (rows, C) soft targets: only the prior's rows,
            fit_rows = torch.randperm(n, generator=generator)[:PRIOR_MAX_ROWS].numpy()  # drawn as fit_prior would
        y_fit = NeighbourLabelSampler(y, rows.neighbours, weighting=config.retrieval.weighting).target_distribution(
            model.num_classes, fit_rows).numpy()
    vx, vy = rows.val_features, rows.val_labels
    if x is None:
        if isinstance(vx, FeatureRows):
            va = vx.subsample(how["seed"])
            vx, vy = vx[va], vy[va]
        fx = torch.from_numpy(rows.x_rows[fit_rows])
    else:
        fx = x if fit_rows is None else x[torch.from_numpy(fit_rows)]
    record = fit_model_prior(model, fx, y_fit, vx, vy, generator, **how)
    return {**record, "targets": what}


def k_check(model: LabelDenoiser, rows: TrainingRows, config: Config, how: dict, device: torch.device,
            ctx) -> dict:
    """The k check's record: the vote's and the prior's accuracy on the held-out labels, the rows only one
    of them gets right, the k it suggests (0 where the vote is clearly worse, :func:`vote_clearly_worse`)
    and the labels' flip concentration (:func:`~lra_diffusion.retrieval.flip_concentration`). Below
    ``crossfit_below_rows`` held-out rows the training rows are counted too, out of fold."""
    rc = config.retrieval
    counts = distributed.broadcast_from_main(
        lambda: k_rule_counts(model, rows.x_rows, rows.labels, rows.val_features, rows.val_labels, rc, device), ctx)
    crossfit = bool(rows.x is not None and counts[4] < rc.crossfit_below_rows and len(rows) >= CROSSFIT_FOLDS)
    if crossfit:  # too few held-out rows to tell: the training rows too, out of fold (same on every rank)
        counts = counts + crossfit_counts(model, rows.x, rows.labels, rows.neighbours, rows.val_features,
                                          rows.val_labels, how)
    vote, prior, vote_only, prior_only, n_rows = counts.tolist()
    # "k": what the check suggests; only "rule" acts on it in train ("screen" is the estimator's second fit)
    return {"vote_accuracy": vote / n_rows, "prior_accuracy": prior / n_rows, "rows": n_rows,
            "vote_only": vote_only, "prior_only": prior_only, "crossfit": crossfit,
            "k": 0 if vote_clearly_worse(vote_only, prior_only, n_rows) else rc.k,
            "flip_concentration": flip_concentration(rows.labels, rows.neighbours, model.num_classes)}


def k_rule_counts(model: LabelDenoiser, x_rows: FeatureRows, labels: np.ndarray, val_features, val_labels,
                  rc, dev: torch.device) -> np.ndarray:
    """The k check's counts on (at most :data:`K_RULE_ROWS` of) the validation rows, int64 (5,): how many
    the majority vote of the ``rc.k`` nearest training rows' labels predicts right, how many the prior
    f_q (argmax) does, how many only the vote and only the prior get right, and the number of rows scored.

    Label-free: both predict the same (usually noisy) validation labels. The idea: retrieval trains the
    denoiser towards its neighbours' labels, so a vote worse than the prior suggests worse targets than the
    given labels. Not always so: BENCHMARKS "Defaults suite" has a data set where acting on it alone costs
    8.5 points, which is why the default ("screen") only uses it to decide whether to fit k = 0 as well.
    """
    n_val = len(val_labels)
    pick = np.unique(np.linspace(0, n_val - 1, min(n_val, K_RULE_ROWS)).round().astype(np.int64))
    q, yq = np.asarray(val_features[pick], dtype=np.float32), val_labels[pick]
    nb, _ = knn_streaming(x_rows, rc.k, queries=q, metric=rc.metric, device=dev)
    vote = neighbour_vote(labels[nb]) == yq
    with torch.no_grad():
        prior = model.prior_mean(torch.from_numpy(q).to(dev)).argmax(1).cpu().numpy() == yq
    return check_counts(vote, prior)


def check_counts(vote: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(5,) int64 from the rows the vote / the prior gets right (bool arrays): both totals, the rows only the
    vote and only the prior gets right, and the number of rows."""
    return np.array([vote.sum(), prior.sum(), (vote & ~prior).sum(), (prior & ~vote).sum(), len(vote)], dtype=np.int64)


def crossfit_counts(model: LabelDenoiser, x: torch.Tensor, labels: np.ndarray, neighbours: np.ndarray,
                    val_features, val_labels: np.ndarray, how: dict) -> np.ndarray:
    """The k check's counts (as :func:`k_rule_counts`) on the *training* rows, for a held-out slice too
    small to tell the vote and the prior apart: each row's vote is that of its own ``k`` neighbours (itself
    excluded, as the draws), its prior prediction that of a prior of the same ``kind`` fitted on the other
    :data:`CROSSFIT_FOLDS` - 1 folds (chosen on the held-out labels as the prior). Both predict the row's
    noisy label. Seeded by ``how["seed"]`` alone: the run's generator draws nothing here."""
    g = torch.Generator().manual_seed(how["seed"])
    folds = torch.randperm(len(labels), generator=g).numpy() % CROSSFIT_FOLDS
    with torch.no_grad():
        f = model.standardise(x.to(model.feat_mean.device)).cpu()
        f_val = model.standardise(float_tensor(val_features).to(model.feat_mean.device)).cpu()
    y, y_val = torch.from_numpy(labels), torch.from_numpy(val_labels)
    prior = np.empty(len(labels), dtype=np.int64)
    for j in range(CROSSFIT_FOLDS):
        out = torch.from_numpy(folds == j)
        fitted, _ = choose_prior(f[~out], y[~out], model.num_classes, kind=how["kind"], f_val=f_val, y_val=y_val,
                                 hidden=how["hidden"], seed=how["seed"], generator=g)
        with torch.no_grad():
            prior[out.numpy()] = fitted.logits(f[out]).argmax(1).numpy()
    return check_counts(neighbour_vote(labels[neighbours]) == labels, prior == labels)


def vote_clearly_worse(vote_only: int, prior_only: int, rows: int, *, z: float = 2.0, gap: float = 0.01) -> bool:
    """Is the k-NN vote clearly below the prior on the ``rows`` scored? Both: at least ``gap`` (1 point)
    below, and McNemar's sign test on the rows where exactly one of the two is right says the prior wins
    more of them than chance allows (:func:`~lra_diffusion.models.clearly_better`: exact, one-sided, at
    the level of ``z`` standard deviations). A near tie keeps k: where the two differ by less, a second
    fit (``auto_k = "screen"``) changed nothing measured (BENCHMARKS "Defaults suite") and would double
    the fit time. With the arguments swapped: is the vote clearly *above* the prior (``prior_targets =
    "auto"`` then fits the prior to the retrieval targets)?"""
    return prior_only - vote_only >= gap * rows and clearly_better(prior_only, vote_only, z=z)


def fit_model_prior(model: LabelDenoiser, x: torch.Tensor, y: np.ndarray, val_features: np.ndarray | None,
                    val_labels: np.ndarray | None, generator: torch.Generator, *, kind: str = "linear",
                    hidden: int = 512, seed: int = 0) -> dict:
    """Fit CARD's prior f_q of ``kind`` (:func:`lra_diffusion.models.choose_prior`) on the standardised
    training features and (noisy) labels ``y`` (N,) int, or soft targets (N, C) float, chosen on the
    validation data, and store it in ``model``; returns the record of the choice."""
    with torch.no_grad():
        f = model.standardise(x)
        f_val = None if val_features is None else model.standardise(torch.from_numpy(val_features))
    y_val = None if val_labels is None else torch.from_numpy(val_labels)
    prior, record = choose_prior(f, torch.from_numpy(y), model.num_classes, kind=kind, f_val=f_val, y_val=y_val,
                                 hidden=hidden, seed=seed, generator=generator)
    hidden_layer = None if prior.hidden_weight is None else (prior.hidden_weight, prior.hidden_bias)
    model.set_prior(prior.weight, prior.bias, hidden_layer)
    return record
