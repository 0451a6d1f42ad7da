"""Training and embedding in several processes with ``torchrun``: the ordinary PyTorch way.

``torchrun --nproc-per-node N -m lra_diffusion.cli fit ...`` starts N processes; each reads RANK,
WORLD_SIZE and MASTER_ADDR/PORT from its environment, joins one process group (gloo on the CPU, NCCL
on GPUs) and trains one DistributedDataParallel replica. What each rank does is in docs/scale.md:

- every rank holds the same generator, so every rank draws the same epoch order, the same retrieved
  labels and the same timesteps and noise *for the whole global batch*; rank r trains on its own
  contiguous slice of that batch (:func:`shard_bounds`), so the slices never overlap and their union is
  the batch a 1-process run would train on;
- DDP averages the gradients; each rank scales its loss by ``world * (its weight sum / the batch's)``
  so that the average is the 1-process loss (BatchNorm statistics stay per rank, as in plain DDP);
- retrieval runs once, on rank 0, and its neighbours are broadcast (:func:`broadcast_from_main`);
- rank 0 alone evaluates, writes checkpoints and the run directory; every rank reads the checkpoint
  on resume.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op of one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank r of ``world`` processes (rank 0 is the main one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True inside a torchrun job of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device | None = None, *, timeout_s: float = 3600) -> Context:
    """Join the torchrun process group (once) and return this process's :class:`Context`.

    Backend: NCCL when ``device`` is CUDA, else gloo. The long timeout covers rank 0 building the
    retrieval index while the others wait for its broadcast.
    """
    if not launched():
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return context()


def context() -> Context:
    """The current :class:`Context` (one process unless a process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, ctx: Context) -> torch.device:
    """The device of this rank: in a torchrun job a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per
    process, the layout NCCL needs); the CPU, and any device of a 1-process run, are kept."""
    if ctx.active and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard_bounds(size: int, world: int, rank: int) -> slice:
    """Rank ``rank``'s contiguous part of ``size`` items split as evenly as possible into ``world``."""
    return slice(rank * size // world, (rank + 1) * size // world)


def _comm_device() -> torch.device:
    """Where collective tensors must live: the local GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_from_main(compute: Callable[[], np.ndarray], ctx: Context) -> np.ndarray:
    """``compute()`` on rank 0 only; every rank returns its result (an int64 / float32 array)."""
    if not ctx.active:
        return compute()
    dev = _comm_device()
    if ctx.is_main:
        value = np.ascontiguousarray(compute())
        header = torch.tensor([value.ndim, *value.shape, *[0] * (4 - value.ndim),
                               0 if value.dtype == np.int64 else 1], dtype=torch.int64, device=dev)
    else:
        header = torch.zeros(6, dtype=torch.int64, device=dev)
    dist.broadcast(header, 0)
    ndim, shape, kind = int(header[0]), tuple(int(s) for s in header[1 : 1 + int(header[0])]), int(header[5])
    dtype = torch.int64 if kind == 0 else torch.float32
    buf = torch.from_numpy(value).to(dev) if ctx.is_main else torch.empty(shape, dtype=dtype, device=dev)
    dist.broadcast(buf, 0)
    del ndim
    return buf.cpu().numpy()


def mean_over_ranks(value: float, ctx: Context) -> float:
    """The mean of a per-rank number over all ranks (the number itself in one process)."""
    if not ctx.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item()) / ctx.world


def barrier(ctx: Context) -> None:
    """Wait for every rank (nothing in a single-process job)."""
    if ctx.active:
        dist.barrier()


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when the job has several ranks (else ``model`` itself)."""
    if not ctx.active:
        return model
    ids = [device.index or 0] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shutdown() -> None:
    """Close the process group, if one was started (safe to call in any job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_argv(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command that reruns ``lra <argv>`` (without ``--nproc``) in ``nproc`` processes."""
    import sys

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "lra_diffusion.cli", *args]
