"""The conditional label denoiser: shapes, gates, conditioning, trainable state, parameter budget."""

from __future__ import annotations

import pytest
import torch

from lra_diffusion.models import LabelDenoiser


def make(**kw) -> LabelDenoiser:
    torch.manual_seed(0)
    return LabelDenoiser(num_classes=4, input_dim=6, **{"feature_dim": 16, "timesteps": 50, **kw})


def inputs(batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 6, generator=g), torch.randn(batch, 4, generator=g), torch.randint(0, 50, (batch,), generator=g)


def test_output_shape_and_gates():
    model = make()
    assert model(*inputs()).shape == (8, 4)
    for lin in (model.lin1, model.lin2, model.lin3):
        w = lin.embed.weight
        assert w.shape == (51, 16)  # T + 1 rows, as the reference code
        assert (w >= 0).all() and (w < 1).all()


def test_output_depends_on_every_input():
    model = make().eval()
    f, y, t = inputs()
    out = model(f, y, t)
    assert not torch.allclose(model(f + 1, y, t), out)
    assert not torch.allclose(model(f, y + 1, t), out)
    assert not torch.allclose(model(f, y, (t + 1) % 50), out)


@pytest.mark.floats
def test_eval_mode_is_per_sample():
    # BatchNorm uses running statistics in eval mode, so a sample's output does not depend on its batch
    model = make().eval()
    f, y, t = inputs()
    torch.testing.assert_close(model(f[:1], y[:1], t[:1]), model(f, y, t)[:1], rtol=1e-5, atol=1e-6)


def test_feature_standardisation():
    model = make().eval()
    f, y, t = inputs()
    mean, std = torch.full((6,), 3.0), torch.full((6,), 2.0)
    model.set_feature_stats(mean, std)
    ref = make().eval()
    torch.testing.assert_close(model(f * 2 + 3, y, t), ref(f, y, t), rtol=1e-5, atol=1e-5)
    model.set_feature_stats(mean, torch.zeros(6))  # a constant feature must not divide by zero
    assert torch.isfinite(model(f, y, t)).all()


def test_feature_projection():
    """With input_rank d the features are centred, projected on feat_proj (D, d), then standardised."""
    model = make(input_rank=2).eval()
    f, y, t = inputs()
    proj = torch.zeros(6, 2)
    proj[1, 0] = proj[4, 1] = 1.0
    model.set_feature_stats(torch.full((6,), 1.0), torch.full((2,), 2.0), proj)
    torch.testing.assert_close(model.standardise(f), (f[:, [1, 4]] - 1.0) / 2.0)
    assert model(f, y, t).shape == (len(f), 4) and model.input_rank == 2
    with pytest.raises(ValueError, match="projects"):
        model.set_feature_stats(torch.zeros(6), torch.ones(2))  # no projection given
    with pytest.raises(ValueError, match="projects"):
        make().set_feature_stats(torch.zeros(6), torch.ones(6), proj)


@pytest.mark.parametrize("x_encoder", ["trainable", "frozen"])
def test_trainable_state_is_explicit(x_encoder):
    model = make(x_encoder=x_encoder)
    model(*inputs()).pow(2).sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert ("encoder_x.weight" in trainable) == (x_encoder == "trainable")
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_parameter_budget_matches_the_paper():
    # CIFAR model: C = 10, 2048-d SimCLR feature, F = 512, T = 1000: about 2.5-3.2 M parameters
    # besides the encoder of x, about half of them in the three gate tables
    model = LabelDenoiser(10, 2048, feature_dim=512, timesteps=1000)
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder_x"))
    gates = sum(lin.embed.weight.numel() for lin in (model.lin1, model.lin2, model.lin3))
    assert 2.5e6 <= total <= 3.2e6
    assert 0.45 < gates / total < 0.55
