"""Before training: the rows a run trains and selects on.

:func:`training_rows` checks the inputs (:func:`check_inputs`), holds out the validation slice of the
*noisy* rows where no validation data is given (:func:`split_holdout`) and finds every training row's
nearest training rows once; :class:`TrainingRows` carries what the later stages read (the prior and the
k check in :mod:`.k_check`, the trainer in :mod:`.train`). :func:`feature_stats` gives the denoiser's fixed
input transform: the training rows' mean and std, and for features wider than the rows support a projection
onto their top principal components where the held-out labels clearly prefer it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA

from . import distributed
from .config import Config
from .errors import InputError
from .features import FeatureRows, is_mapped
from .io import sha256_array
from .models.denoiser import guarded_std, standardise
from .models.prior import clearly_better, fit_prior
from .retrieval import ann_params, knn


@dataclass
class TrainingRows:
    """What the stages of a run read: its training rows, their labels and neighbours, the held-out rows.

    ``x`` is the in-memory (n, D) float32 matrix of ``x_rows`` (None for a memory-mapped file, read in
    chunks); ``neighbours`` (n, k) indexes the training rows; ``val_features`` / ``val_labels`` are the
    held-out slice or the caller's validation data (None: no model selection). ``index`` / ``val_index``:
    which of the given rows train and which are held out (None: external validation data or none);
    ``digests``: the SHA-256 of the inputs, for the checkpoints' fingerprint.
    """

    x_rows: FeatureRows
    labels: np.ndarray
    x: torch.Tensor | None
    neighbours: np.ndarray
    val_features: np.ndarray | FeatureRows | None
    val_labels: np.ndarray | None
    index: np.ndarray
    val_index: np.ndarray | None
    digests: dict

    def __len__(self) -> int:
        return len(self.x_rows)


def check_inputs(features: np.ndarray, labels: np.ndarray, num_classes: int, *, what: str = "") -> None:
    """Raise InputError unless features (N, D) are finite and labels (N,) lie in 0..num_classes-1."""
    if features.ndim != 2 or features.shape[1] == 0:
        raise InputError(f"{what}features must be 2-D (N, D) with D >= 1, got shape {features.shape}")
    if labels.shape != (len(features),):
        raise InputError(f"{what}labels must have shape ({len(features)},) to match the features, got {labels.shape}")
    bad = FeatureRows(features).first_nonfinite_row()  # chunk by chunk: a mapped file is never read whole
    if bad is not None:
        raise InputError(f"{what}features contain NaN or inf (first bad row: {bad})")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"{what}labels must be class indices in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")


def split_holdout(n: int, fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Random (train, held-out) row indices; no hold-out when ``fraction`` is 0 or too few rows."""
    n_val = int(round(n * fraction))
    if n_val < 1 or n - n_val < 2:
        return np.arange(n), None
    perm = torch.randperm(n, generator=generator).numpy()
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def training_rows(features: np.ndarray, labels: np.ndarray, num_classes: int, config: Config,
                  val_features: np.ndarray | None, val_labels: np.ndarray | None, generator: torch.Generator,
                  dev: torch.device, ctx) -> TrainingRows:
    """Check the inputs, hold out ``config.train.val_fraction`` of the rows (without validation data) and
    find every training row's ``config.retrieval.k`` nearest training rows (once, on rank 0)."""
    rc = config.retrieval
    mapped = is_mapped(features)  # a memory-mapped file stays on disk: read in chunks and batches
    features = features if mapped else np.ascontiguousarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    check_inputs(features, labels, num_classes)
    if (val_features is None) != (val_labels is None):
        raise InputError("give both val_features and val_labels, or neither")
    if val_features is not None:
        val_features = np.ascontiguousarray(val_features, dtype=np.float32)
        val_labels = np.asarray(val_labels, dtype=np.int64)
        check_inputs(val_features, val_labels, num_classes, what="validation ")
        train_idx, val_idx = np.arange(len(features)), None
    else:
        train_idx, val_idx = split_holdout(len(features), config.train.val_fraction, generator)
        if val_idx is not None:
            val_features = FeatureRows(features, val_idx) if mapped else features[val_idx]
            val_labels = labels[val_idx]
    x_rows = FeatureRows(features, train_idx)
    n = len(x_rows)
    if rc.k >= n:
        raise InputError(f"k={rc.k} neighbours need more than {rc.k} training samples, got {n} (after the "
                         f"held-out slice); give more rows or a smaller k")
    ann = ann_params(n, "ivf" if rc.index == "auto" else rc.index, dim=x_rows.shape[1], store=rc.store,
                     nlist=rc.nlist or None, nprobe=rc.nprobe or None, ef_search=rc.ef_search or None)
    neighbours = distributed.broadcast_from_main(  # computed once, on rank 0
        lambda: knn(x_rows if mapped else x_rows.to_numpy(), rc.k, metric=rc.metric, backend=rc.backend,
                    index=rc.index, ann=ann, exclude_self=rc.exclude_self, device=dev)[0], ctx)
    # in memory: the whole (n, D) matrix (moved to the device for training); mapped: gathered per batch
    x = None if mapped else torch.from_numpy(x_rows.to_numpy())
    digests = {"features": FeatureRows(features).sha256(), "labels": sha256_array(labels),
               "val": FeatureRows(val_features).sha256() if val_features is not None else None}
    return TrainingRows(x_rows, labels[train_idx], x, neighbours, val_features, val_labels, train_idx, val_idx,
                        digests)


def feature_stats(rows: TrainingRows, config: Config, *, num_classes: int,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict | None]:
    """The denoiser's fixed input transform from the training rows, ``(mean, std, proj, record)``: their
    mean (D,), the std of the (projected) features ((D,) or (d,)), the projection onto their top d principal
    components (D, d) or None, and the record of the projection check (None where it did not apply).

    The projection is a candidate where ``[model] input_rows_per_dim`` asks for one and the (in-memory)
    features are wider than d = max(input_min_rank, n / input_rows_per_dim) and there are more than d rows;
    it is kept where a logistic regression on the projected features is *clearly* more accurate on the
    held-out labels than one on all features (:func:`projection_check`), else the features stay whole.
    """
    mc, x = config.model, rows.x
    if x is None:  # mapped: two chunked passes, float64 sums
        return (*rows.x_rows.mean_std(), None, None)
    n, dim = x.shape
    whole = (x.mean(0), x.std(0) if n > 1 else torch.ones(dim), None)
    rank = max(mc.input_min_rank, int(n / mc.input_rows_per_dim)) if mc.input_rows_per_dim > 0 else dim
    if rank >= min(dim, n) or rows.val_features is None:  # narrow enough, or fewer rows than the rank
        return (*whole, None)
    projected = principal_projection(x, rank)
    record = projection_check(rows, whole, projected, num_classes, seed)
    return (*(projected if record["kept"] else whole), record)


def principal_projection(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean (D,) of x (n, D), its top ``rank`` principal directions (D, rank), orthonormal, in order of
    variance (scikit-learn's PCA: a full SVD, or a randomized one with a fixed seed where the matrix is large
    and the rank small, so wide inputs cost about n x D x rank), and the std (rank,) of the rows along them."""
    pca = PCA(rank, random_state=0).fit(x.numpy())
    mean = torch.from_numpy(pca.mean_).float()
    proj = torch.from_numpy(pca.components_.T).float().contiguous()
    return mean, ((x - mean) @ proj).std(0), proj


def projection_check(rows: TrainingRows, whole: tuple, projected: tuple, num_classes: int, seed: int) -> dict:
    """Logistic regressions (:func:`~lra_diffusion.models.prior.fit_prior`) on the in-memory training rows,
    standardised whole and projected (each a (mean, std, proj) of :func:`feature_stats`), scored on the
    held-out labels: is the projection clearly better (:func:`~lra_diffusion.models.prior.clearly_better`)?"""
    x = rows.x
    x_val = torch.from_numpy(np.asarray(rows.val_features, dtype=np.float32))
    y, y_val = torch.from_numpy(rows.labels), torch.from_numpy(np.asarray(rows.val_labels))
    right = []
    for mean, std, proj in (whole, projected):
        gen = torch.Generator().manual_seed(seed)  # its own: the run's generator draws nothing here
        f, f_val = (standardise(a, mean, guarded_std(std), proj) for a in (x, x_val))
        prior = fit_prior(f, y, num_classes, f_val=f_val, y_val=y_val, generator=gen)
        with torch.no_grad():
            right.append(prior.logits(f_val).argmax(1) == y_val)
    only_projected, only_whole = int((right[1] & ~right[0]).sum()), int((right[0] & ~right[1]).sum())
    return {"rank": projected[2].shape[1], "whole_val_accuracy": float(right[0].float().mean()),
            "projected_val_accuracy": float(right[1].float().mean()), "projected_only": only_projected,
            "whole_only": only_whole, "kept": clearly_better(only_projected, only_whole)}
