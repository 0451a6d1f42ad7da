"""The one trainer: retrieval, weighted epsilon-prediction, Adam with warm-up + half-cosine, EMA,
model selection, and exact checkpoint/resume.

All randomness of a run (validation split, data order, label draws, timesteps, noise) comes from one
``torch.Generator`` seeded by ``seed``; a checkpoint stores its state together with the epoch's data
order and position, so a resumed run continues bit for bit (on CPU).

On a GPU (``config.runtime.device``) the same CPU generator still draws every random number, which is
then copied to the device, so a seed means the same draws everywhere; the training features are held
on the device (N x D float32), the neighbours are found there, and checkpoints and the returned model
are CPU tensors.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, distributed
from .config import Config
from .device import autocast_context, resolve_device, to_device
from .diffusion import antithetic_timesteps, q_sample, weighted_eps_loss
from .errors import InputError
from .evaluate import predict_y0, readout, schedule_alpha_bar
from .features import FeatureRows, map_chunks
from .io import load_tensors, save_tensors
from .k_check import settle_prior
from .models import LabelDenoiser, clearly_better
from .retrieval import NeighbourLabelSampler, knn_streaming
from .rows import feature_stats, training_rows


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` holds the selected weights (EMA when ``use_ema``), in eval mode.
    """

    model: LabelDenoiser
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    train_index: np.ndarray | None = None  # rows of the given features used for training
    val_index: np.ndarray | None = None  # rows held out for model selection (None: external or none)
    # (n_train, k) neighbour indices into train_index order: those the draws used, (n_train, 0) when the k
    # rule turned retrieval off
    neighbours: np.ndarray | None = None
    k_rule: dict | None = None  # the rule's held-out accuracies and choice (None when it did not apply)
    prior: dict | None = None  # which prior f_q was fitted and its held-out accuracies (None: no prior)
    # [model] input_rows_per_dim: the projection's rank, both logistic regressions' held-out accuracies and
    # whether it was kept (None: not a candidate)
    projection: dict | None = None
    resumed_from: int | None = None  # the step of the checkpoint this run continued from, if any
    # selection "prefer_last": the best candidate's epoch, the rows only it / only the last epoch gets right,
    # and which was kept; "average": the averaged candidates' epochs, the rows only the best candidate /
    # only the average gets right, and which was kept (None: selection "best", or nothing to choose)
    selection: dict | None = None
    # the untrained start's (the prior's) held-out accuracy where it was a selection candidate (None: it was not)
    start_accuracy: float | None = None


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then half-cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


PAPER_EPOCHS = 200  # the paper's training length: the per-class rule never asks for more


def auto_epochs(tc, steps_per_epoch: int, *, n: int, num_classes: int) -> int:
    """The automatic training length: enough epochs for ``auto_steps`` optimiser steps (at most
    ``auto_steps_max_epochs`` of them, 0 = no cap: on a small set more passes only fit its noise), at least
    ``auto_epochs`` passes over the ``n`` training samples and at least ``auto_class_visits`` sample visits
    per class (``auto_class_visits * num_classes / n`` passes, at most :data:`PAPER_EPOCHS` and at most
    ``auto_class_max_steps`` optimiser steps), so small sets get enough updates, large ones enough passes
    and sets with many classes of few samples each enough visits per class."""
    per_class = min(math.ceil(tc.auto_class_visits * num_classes / n), PAPER_EPOCHS,
                    max(1, tc.auto_class_max_steps // steps_per_epoch))
    step_floor = math.ceil(tc.auto_steps / steps_per_epoch)
    if tc.auto_steps_max_epochs:
        step_floor = min(step_floor, tc.auto_steps_max_epochs)
    return max(1, step_floor, math.ceil(tc.auto_epochs), per_class)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for the parameters (one fused pass); buffers copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)  # one fused pass
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def training_step(
    model: LabelDenoiser,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    alpha_bar: torch.Tensor,
    generator: torch.Generator,
    grad_clip: float,
    amp: bool = False,
    forward: Callable[..., torch.Tensor] | None = None,
    prediction: str = "eps",
    part: slice | None = None,
    global_batch: int | None = None,
    loss_scale: float = 1.0,
) -> float:
    """One optimiser step of the weighted epsilon-prediction loss on a batch; returns the loss.

    x (B, D) features, labels (B,) retrieved labels, weights (B,) agreement counts, all on the model's
    device. t and eps are drawn from ``generator`` (a CPU generator) and copied to that device.
    ``amp``: autocast the forward pass on CUDA. ``forward``: what to call instead of ``model`` (e.g. its
    ``torch.compile`` wrapper, which shares its parameters). ``prediction``: the network's target,
    ``"eps"`` (the noise) or ``"y0"`` (the clean label vector).
    ``part``, ``global_batch``, ``loss_scale`` (distributed training): the batch is rows ``part`` of a
    global batch of ``global_batch`` rows; t and eps are drawn for the global batch and sliced, so the
    ranks together draw what a 1-process run would; the loss is multiplied by ``loss_scale``.
    """
    dev = x.device
    y0 = torch.nn.functional.one_hot(labels, model.num_classes).float()
    size, rows = (len(x), slice(None)) if part is None else (global_batch, part)
    t = to_device(antithetic_timesteps(size, len(alpha_bar), generator=generator)[rows], dev)
    eps = to_device(torch.randn((size, y0.shape[1]), generator=generator)[rows], dev)
    prior = model.prior_mean(x)  # CARD's f_q(x), None for the zero prior
    with autocast_context(dev, amp):
        pred = (model if forward is None else forward)(x, q_sample(y0, t, eps, alpha_bar, prior), t, prior)
    loss = weighted_eps_loss(pred.float(), eps if prediction == "eps" else y0, weights) * loss_scale
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def train(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    config: Config | None = None,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train an LRA-diffusion label denoiser on feature vectors with noisy labels.

    Parameters
    ----------
    features : (N, D) float array, the frozen encoder's features f_p(x).
    labels : (N,) int array of noisy labels in 0..num_classes-1.
    num_classes : C.
    config : the experiment config (defaults if None).
    val_features, val_labels : optional validation set for model selection (e.g. clean labels); without
        it, ``config.train.val_fraction`` of the noisy training data is held out for selection.
    seed : seeds the run's one generator.
    checkpoint_dir : where to write checkpoints (none if None).
    resume : continue from the newest valid checkpoint in ``checkpoint_dir``.
    progress : show a tqdm bar with the loss.
    """
    config = config or Config()
    tc, rc, dc, rt = config.train, config.retrieval, config.diffusion, config.runtime
    dev = resolve_device(rt.device)
    ctx = distributed.init(dev)  # one process unless launched by torchrun (docs/scale.md)
    dev = distributed.rank_device(dev, ctx)
    gen = torch.Generator().manual_seed(seed)
    rows = training_rows(features, labels, num_classes, config, val_features, val_labels, gen, dev, ctx)
    x_rows, y_np, x, n = rows.x_rows, rows.labels, rows.x, len(rows)
    val_features, val_labels = rows.val_features, rows.val_labels
    mean, std, proj, projection = feature_stats(rows, config, num_classes=num_classes, seed=seed)

    def build(cfg: Config) -> LabelDenoiser:
        """The initial denoiser of ``cfg``. Its weights come from the seed too: nn.Linear draws from torch's
        global CPU generator, so seed it inside a fork that restores the caller's state afterwards."""
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            built = LabelDenoiser.from_config(num_classes, x_rows.shape[1], cfg,
                                              input_rank=0 if proj is None else proj.shape[1])
        built.set_feature_stats(mean, std, proj)
        return built

    # the prior f_q fitted to the labels, and the k check acted on (k_check.py)
    model, prior_info, k_rule, neighbours = settle_prior(build, rows, config, seed=seed, generator=gen, device=dev,
                                                         ctx=ctx)
    if x is not None:
        x = to_device(x, dev)
    sampler = NeighbourLabelSampler(y_np, neighbours, weighting=rc.weighting)
    target_score = None  # select_targets "retrieval": scores predictions against the held-out rows' draws
    if tc.select_targets == "retrieval" and val_features is not None and neighbours.shape[1] and ctx.is_main:
        target_score = heldout_target_score(x_rows, y_np, val_features, val_labels, neighbours.shape[1], rc, dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    ddp = distributed.wrap(model, ctx, dev)  # DistributedDataParallel under torchrun, else model itself
    forward = torch.compile(ddp) if rt.compile else (ddp if ctx.active else None)  # shares model's parameters
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=tc.lr, betas=(0.9, 0.999), fused=True
    )
    alpha_bar = schedule_alpha_bar(dc).float().to(dev)

    batch, steps_per_epoch, epochs, total, warmup, eval_epochs = run_length(tc, n, num_classes)
    state = {"step": 0, "epoch": 0, "best_acc": None, "best_epoch": None, "history": []}
    perm = None
    best_weights: dict[str, torch.Tensor] | None = None
    fingerprint = {**rows.digests, "seed": seed, "num_classes": num_classes, "world": ctx.world,
                   "config": config.experiment_dict()}  # [runtime] may change on resume
    ckpt = Checkpointer(checkpoint_dir, keep=tc.keep_checkpoints) if checkpoint_dir is not None else None
    if not resume and ckpt is not None and (ckpt.paths() or any(ckpt.folder.glob("cand-*.safetensors"))):
        # a fresh run would mix its checkpoints with the old ones (and prune its own by step number)
        raise InputError(f"{checkpoint_dir} already holds checkpoints of an earlier run; resume it or write elsewhere")
    if resume and ckpt is not None:
        restored = ckpt.restore(fingerprint, model, ema, optimizer, gen)
        if restored is not None:
            state, perm, best_weights = restored
    resumed_from = state["step"] if state["step"] > 0 else None

    eval_model = ema if tc.use_ema else model
    selection = Selection(val_features, val_labels, dc, state, best_weights, target_score=target_score, amp=rt.amp,
                          keep_all=tc.selection == "average")
    if ckpt is not None and state["step"] > 0:
        selection.candidates = ckpt.load_candidates(state)
    if tc.select_start and model.residual and val_features is not None and state["step"] == 0 and ctx.is_main:
        # the untrained residual denoiser predicts its prior f_q exactly: a candidate as well, so a run whose
        # training never beats its prior on the held-out labels keeps the prior (best_epoch 0, and the
        # accuracy of that start is state["start"]; the history holds the epochs only)
        state["start"] = {}
        selection.consider(eval_model, 0, state["start"])
    started = time.perf_counter() - state.get("seconds", 0.0)
    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not progress or not ctx.is_main, leave=False)
    model.train()
    while state["step"] < total:
        epoch, pos = divmod(state["step"], steps_per_epoch)
        if pos == 0 or perm is None:
            perm = torch.randperm(n, generator=gen)
        idx = perm[pos * batch : (pos + 1) * batch]
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(state["step"], total, warmup)
        drawn, weights = sampler.sample(idx, gen)  # for the global batch, on every rank alike
        part, scale = slice(None), 1.0
        if ctx.active:  # this rank's slice; its loss weighted so that the ranks' mean is the batch's loss
            part = distributed.shard_bounds(len(idx), ctx.world, ctx.rank)
            scale = ctx.world * float(weights[part].sum() / weights.sum())
        xb = x[to_device(idx[part], dev)] if x is not None else to_device(x_rows.gather(idx[part]), dev)
        loss = training_step(model, optimizer, xb, to_device(drawn[part], dev), to_device(weights[part], dev),
                             alpha_bar=alpha_bar, generator=gen, grad_clip=tc.grad_clip, amp=rt.amp,
                             forward=forward, prediction=dc.prediction, part=part if ctx.active else None,
                             global_batch=len(idx), loss_scale=scale)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {state['step']}")
        ema_update(ema, model, min(tc.ema_decay, (1 + state["step"]) / (10 + state["step"])))
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch + 1, refresh=False)
        state.setdefault("losses", []).append(loss)

        epoch_end = state["step"] % steps_per_epoch == 0
        if epoch_end:
            record = {"epoch": epoch + 1, "step": state["step"],
                      "loss": distributed.mean_over_ranks(float(np.mean(state.pop("losses"))), ctx)}
            if val_features is not None and epoch + 1 in eval_epochs and ctx.is_main:
                selection.consider(eval_model, epoch + 1, record)
            state["history"].append(record)
        if ckpt is not None and ctx.is_main and (epoch_end or (tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0)):
            state["seconds"] = time.perf_counter() - started
            ckpt.save_candidates(selection.candidates)  # first: the checkpoint's state names them
            ckpt.save(state["step"], model, ema, optimizer, gen, perm, selection.best_weights, state, fingerprint)
    bar.close()

    chosen = selection.keep(eval_model, epochs, rule=tc.selection if ctx.is_main else "best")
    eval_model.cpu().eval()
    return TrainResult(
        model=eval_model, history=state["history"], best_epoch=state["best_epoch"],
        best_val_accuracy=state["best_acc"], epochs=epochs, steps=total,
        seconds=time.perf_counter() - started, train_index=rows.index, val_index=rows.val_index, neighbours=neighbours,
        resumed_from=resumed_from, k_rule=k_rule, prior=prior_info, selection=chosen, projection=projection,
        start_accuracy=state.get("start", {}).get("val_accuracy"),
    )


class RunLength(NamedTuple):
    """The run's length in optimiser steps and its selection epochs (:func:`run_length`)."""

    batch: int
    steps_per_epoch: int
    epochs: int
    total: int  # optimiser steps
    warmup: int  # of them, the learning rate's linear warm-up
    eval_epochs: set[int]  # the epochs after which the model is a selection candidate


def run_length(tc, n: int, num_classes: int) -> RunLength:
    """Batch, steps per epoch (the ragged last batch dropped: the order changes every epoch), epochs
    (``tc.epochs`` or :func:`auto_epochs`), steps, warm-up steps, and the ``evals`` selection epochs spread
    over the part of the run after ``select_after`` (from the end: a single evaluation is the last epoch's)."""
    batch = min(tc.batch_size, n)
    steps_per_epoch = n // batch
    epochs = tc.epochs or auto_epochs(tc, steps_per_epoch, n=n, num_classes=num_classes)
    total = epochs * steps_per_epoch
    first = min(epochs, int(tc.select_after * epochs) + 1)
    eval_epochs = set(np.linspace(epochs, first, min(tc.evals, epochs - first + 1)).round().astype(int).tolist())
    return RunLength(batch, steps_per_epoch, epochs, total, int(round(tc.warmup_fraction * total)), eval_epochs)


class Selection:
    """Model selection on the validation rows: each candidate's accuracy on their labels goes into its
    record, and the best candidate's weights are kept (ties: the later, longer-trained ones). With
    ``target_score`` (``select_targets = "retrieval"``) candidates are ranked by that score instead.

    ``state`` is the training loop's state, which checkpoints keep: the best candidate's epoch and
    accuracy (and score) live there, its weights in :attr:`best_weights` (restored with the state).
    With ``keep_all`` (``selection = "average"``) every candidate's epoch, held-out accuracy and weights
    are kept in :attr:`candidates` as well."""

    def __init__(self, val_features, val_labels: np.ndarray | None, dc, state: dict,
                 best_weights: dict[str, torch.Tensor] | None = None, *, target_score=None, amp: bool = False,
                 keep_all: bool = False):
        self.val_features, self.val_labels, self.dc, self.amp = val_features, val_labels, dc, amp
        self.state, self.best_weights, self.target_score = state, best_weights, target_score
        self.keep_all = keep_all
        self.candidates: list[Candidate] = []

    def predicted(self, m: LabelDenoiser) -> np.ndarray:
        """The model ``m``'s labels of the validation rows, (n_val,)."""
        y0 = map_chunks(lambda c: predict_y0(m, c, self.dc, amp=self.amp), self.val_features)
        return readout(y0, self.dc.readout).numpy()

    def right(self, m: LabelDenoiser) -> np.ndarray:
        """Which validation rows the model ``m`` labels correctly, (n_val,) bool."""
        return self.predicted(m) == self.val_labels

    def consider(self, m: LabelDenoiser, epoch: int, record: dict) -> None:
        """Score the model ``m`` after ``epoch`` epochs into ``record``; keep a copy of its weights if it is
        the best so far."""
        pred = self.predicted(m)
        record["val_accuracy"] = acc = float((pred == self.val_labels).mean())
        score = acc if self.target_score is None else float(self.target_score(pred).mean())
        if self.target_score is not None:
            record["val_target_score"] = score
        if self.keep_all:
            self.candidates.append(Candidate(epoch, acc, {k: v.clone() for k, v in m.state_dict().items()}))
            self.state.setdefault("candidates", []).append([epoch, acc])
        best = self.state.get("best_score", self.state["best_acc"])
        if best is None or score >= best:
            self.state["best_acc"], self.state["best_epoch"] = acc, epoch
            if self.target_score is not None:
                self.state["best_score"] = score
            self.best_weights = {k: v.clone() for k, v in m.state_dict().items()}

    def keep(self, last: LabelDenoiser, epochs: int, *, rule: str = "best") -> dict | None:
        """Load the kept candidate's weights into ``last`` (the model as trained, ``epochs`` epochs). Under
        the ``rule`` ``"prefer_last"`` the last epoch's weights stay unless the best candidate is clearly
        better (:func:`prefer_last`, whose record is returned; None otherwise)."""
        record = None
        if rule == "prefer_last" and self.best_weights is not None and self.state["best_epoch"] != epochs:
            record = prefer_last(last, self.best_weights, self.right, self.state, epochs)
            if record["kept"] == "last":
                self.best_weights = None
        if rule == "average" and self.best_weights is not None:
            record, averaged = average_candidates(last, self.candidates, self.best_weights, self.right, self.state)
            if averaged is not None:
                self.best_weights = averaged
        if self.best_weights is not None:
            last.load_state_dict(self.best_weights)
        return record


class Candidate(NamedTuple):
    """A model-selection candidate of ``selection = "average"``: its epoch, held-out accuracy and weights."""

    epoch: int
    accuracy: float
    weights: dict[str, torch.Tensor]


AVERAGE_WITHIN_SE = 1.0  # selection "average": candidates within this many standard errors of the best


def average_candidates(last: LabelDenoiser, candidates: list[Candidate], best_weights: dict[str, torch.Tensor],
                       right, state: dict) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """``selection = "average"``: the uniform average of the weights of every trained candidate (epoch >= 1)
    whose held-out accuracy is within :data:`AVERAGE_WITHIN_SE` standard errors of the best candidate's
    (sqrt(a (1 - a) / n_val) at the best accuracy a), kept unless the best candidate is clearly more
    accurate on the held-out labels (:func:`~lra_diffusion.models.clearly_better`, z = 2, on the rows only
    one of the two gets right). A noisy hold-out of hundreds or thousands of rows cannot tell the epochs of a plateau
    apart, so the argmax is a draw among them; their average is one model, as cheap to run, that keeps
    what they share (as stochastic weight averaging, here over the EMA weights the run evaluated).

    A trained best with no other trained candidate within reach (one lone epoch) is held to the same test
    against the untrained start (epoch 0, the prior, where it is a candidate): the start is kept
    (``"kept": "start"``) unless the lone epoch is clearly more accurate, as a lone win by a few held-out
    rows is the draw the average is there to avoid (since 2026-12-07; BENCHMARKS "Defaults suite").

    ``right(model)`` says which held-out rows a model gets right. Returns the record of the choice and the
    weights to keep instead of the best candidate's (the average or the start; None: the best candidate
    stays), and updates ``state``'s best epoch (the last averaged one, or 0) and accuracy."""
    best, other = copy.deepcopy(last), copy.deepcopy(last)
    best.load_state_dict(best_weights)
    right_best = right(best)
    best_acc = max(c.accuracy for c in candidates)
    within = best_acc - AVERAGE_WITHIN_SE * math.sqrt(best_acc * (1 - best_acc) / len(right_best))
    members = [c for c in candidates if c.epoch >= 1 and c.accuracy >= within]
    record = {"best_epoch": state["best_epoch"], "averaged_epochs": [c.epoch for c in members]}
    start = next((c for c in candidates if c.epoch == 0), None)
    if len(members) >= 2:
        name, epoch = "average", members[-1].epoch
        weights = {k: sum(c.weights[k] for c in members) / len(members) if v.is_floating_point() else v
                   for k, v in members[-1].weights.items()}
    elif members and state["best_epoch"] >= 1 and start is not None:
        name, epoch, weights = "start", 0, start.weights
    else:
        return {**record, "kept": "best"}, None
    other.load_state_dict(weights)
    right_other = right(other)
    best_only, other_only = int((right_best & ~right_other).sum()), int((right_other & ~right_best).sum())
    record |= {"best_only": best_only, f"{name}_only": other_only,
               "kept": "best" if clearly_better(best_only, other_only) else name}
    if record["kept"] == "best":
        return record, None
    state["best_epoch"], state["best_acc"] = epoch, float(right_other.mean())
    return record, weights


def prefer_last(last: LabelDenoiser, best_weights: dict[str, torch.Tensor], right, state: dict, epochs: int) -> dict:
    """``selection = "prefer_last"``: keep the last epoch's weights (``last``, as trained) unless the best
    candidate (``best_weights``, at ``state["best_epoch"]``) is clearly more accurate on the held-out labels
    (:func:`~lra_diffusion.models.clearly_better`, z = 2, on the rows only one of the two gets right).
    ``right(model)`` says which held-out rows a model gets right. Updates ``state``'s best epoch and
    accuracy to the kept candidate's; returns the record of the choice."""
    best = copy.deepcopy(last)
    best.load_state_dict(best_weights)
    right_last, right_best = right(last), right(best)
    best_only, last_only = int((right_best & ~right_last).sum()), int((right_last & ~right_best).sum())
    record = {"best_epoch": state["best_epoch"], "best_only": best_only, "last_only": last_only,
              "kept": "best" if clearly_better(best_only, last_only) else "last"}
    if record["kept"] == "last":
        state["best_epoch"], state["best_acc"] = epochs, float(right_last.mean())
    return record


def heldout_target_score(x_rows: FeatureRows, labels: np.ndarray, val_features, val_labels: np.ndarray, k: int,
                         rc, dev: torch.device):
    """``select_targets = "retrieval"``: a function scoring predicted labels of the validation rows (n_val,)
    against their neighbour-label targets, (n_val,) floats in [0, 1]. A row's candidates are its own label
    and the labels of its ``k`` nearest training rows; a prediction held by n_p of them scores
    n_p^2 / sum_c n_c^2 with agreement weights (n_p / (k + 1) without), its probability under the expected
    training target of the draws (:meth:`NeighbourLabelSampler.target_distribution`)."""
    nb, _ = knn_streaming(x_rows, k, queries=val_features, metric=rc.metric, device=dev)
    cand = np.concatenate([val_labels[:, None], labels[nb]], 1)

    def held(pred: np.ndarray) -> np.ndarray:
        return (cand == pred[:, None]).sum(1)

    if not rc.weighting:
        return lambda pred: held(pred) / cand.shape[1]
    norm = (cand[:, :, None] == cand[:, None, :]).sum((1, 2))  # sum_c n_c^2
    return lambda pred: held(pred) ** 2 / norm


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optim_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _sub(tensors, "optim.").items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    return {"state": state, "param_groups": groups}


class Checkpointer:
    """Atomic ``ckpt-<step>.safetensors`` files in one folder, the newest ``keep`` kept.

    A checkpoint holds the model, EMA and best weights, Adam's moments, the generator state, the epoch's
    data order, and (in its metadata) the loop state and the fingerprint of the run's inputs.
    """

    def __init__(self, folder: str | Path, *, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def paths(self) -> list[Path]:
        return sorted(self.folder.glob("ckpt-*.safetensors"))

    def save(self, step, model, ema, optimizer, gen, perm, best_weights, state, fingerprint) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        opt = optimizer.state_dict()
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
        tensors |= {f"best.{k}": v for k, v in (best_weights or {}).items()}
        for i, s in opt["state"].items():
            tensors |= {f"optim.{i}.{name}": torch.as_tensor(v) for name, v in s.items()}
        tensors = {k: v.cpu() for k, v in tensors.items()}  # files hold CPU tensors, whatever the device
        tensors["rng.generator"] = gen.get_state()
        if perm is not None:
            tensors["rng.perm"] = perm
        meta = {
            "state": state, "fingerprint": fingerprint, "optimizer_groups": opt["param_groups"],
            "version": __version__, "torch": torch.__version__,
        }
        save_tensors(self.folder / f"ckpt-{step:09d}.safetensors", tensors, meta)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)

    def save_candidates(self, candidates: list[Candidate]) -> None:
        """Write each model-selection candidate of ``selection = "average"`` once, as
        ``cand-<epoch>.safetensors`` beside the checkpoints (not inside each: twenty copies of the model)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for c in candidates:
            path = self.folder / f"cand-{c.epoch:06d}.safetensors"
            if not path.exists():
                save_tensors(path, {k: v.cpu() for k, v in c.weights.items()}, {"accuracy": c.accuracy})

    def load_candidates(self, state: dict) -> list[Candidate]:
        """The candidates a resumed run had considered (their epochs and accuracies in ``state``)."""
        return [Candidate(epoch, acc, load_tensors(self.folder / f"cand-{epoch:06d}.safetensors")[0])
                for epoch, acc in state.get("candidates", [])]

    def load_latest(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The newest checkpoint that loads; broken ones are skipped with a warning. None if none."""
        for tmp in self.folder.glob(".ckpt-*.tmp"):  # left by a writer that was killed mid-write
            tmp.unlink(missing_ok=True)
        for path in reversed(self.paths()):
            try:
                return load_tensors(path)
            except InputError as e:
                warnings.warn(f"skipping unreadable checkpoint {path.name}: {e}", stacklevel=2)
        return None

    def restore(self, fingerprint: dict, model, ema, optimizer, gen: torch.Generator):
        """Load the newest checkpoint into ``model``, ``ema``, ``optimizer`` and ``gen``; returns the loop
        state, the epoch's data order and the best weights so far (None where there is no checkpoint).
        Raises InputError where the checkpoint belongs to another run (``fingerprint``)."""
        loaded = self.load_latest()
        if loaded is None:
            return None
        tensors, meta = loaded
        if meta.get("fingerprint") != fingerprint:
            raise InputError(f"cannot resume from {self.folder}: its checkpoints belong to other inputs, config or seed")
        model.load_state_dict(_sub(tensors, "model."))
        ema.load_state_dict(_sub(tensors, "ema."))
        optimizer.load_state_dict(_optim_state(tensors, meta["optimizer_groups"]))
        gen.set_state(tensors["rng.generator"])
        return meta["state"], tensors.get("rng.perm"), _sub(tensors, "best.") or None
