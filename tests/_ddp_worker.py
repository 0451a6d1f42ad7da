"""Run under torchrun by tests/test_distributed.py: a small fit, its per-rank rows, and a resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import lra_diffusion.train as train_mod
from lra_diffusion import distributed
from lra_diffusion.config import Config
from lra_diffusion.evaluate import predict_y0, readout

out = Path(sys.argv[1])
data = np.load(out / "data.npz")
X, y, Xt, yt = data["X"], data["y"], data["Xt"], data["yt"]
config = Config.from_dict(json.loads((out / "config.json").read_text()))

seen: list[list[int]] = []
real_step = train_mod.training_step
row_of = {row.tobytes(): i for i, row in enumerate(X)}  # a batch row is a bitwise copy of its feature row


def recording_step(model, optimizer, x, *args, **kwargs):
    seen.append([row_of[r.tobytes()] for r in x.numpy()])
    return real_step(model, optimizer, x, *args, **kwargs)


train_mod.training_step = recording_step
ctx = distributed.init()
result = train_mod.train(X, y, num_classes=4, config=config, seed=0, checkpoint_dir=out / "ckpt", progress=False)
acc = float((readout(predict_y0(result.model, Xt, config.diffusion)).numpy() == yt).mean())
(out / f"rows-{ctx.rank}.json").write_text(json.dumps(seen))
distributed.barrier(ctx)

# resume: drop the checkpoints after the first epoch, continue, compare with the uninterrupted weights
full = {k: v.clone() for k, v in result.model.state_dict().items()}
if ctx.is_main:
    paths = sorted((out / "ckpt").glob("ckpt-*.safetensors"))
    for p in paths[1:]:
        p.unlink()
distributed.barrier(ctx)
again = train_mod.train(X, y, num_classes=4, config=config, seed=0, checkpoint_dir=out / "ckpt", resume=True,
                        progress=False)
same = all(torch.equal(full[k], v) for k, v in again.model.state_dict().items())
if ctx.is_main:
    (out / "result.json").write_text(json.dumps({"accuracy": acc, "world": ctx.world, "resumed_from": again.resumed_from,
                                                 "resume_identical": same, "steps": result.steps}))
distributed.shutdown()
