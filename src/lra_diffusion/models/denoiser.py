"""The CARD-style conditional label denoiser of LRA-diffusion (Chen et al. 2023, Han et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConditionalLinear(nn.Module):
    """A linear map gated elementwise by a learned per-timestep embedding: g[t] * (W x + b).

    The gate table has T+1 rows (as the reference code) initialised uniform on [0, 1).
    """

    def __init__(self, in_features: int, out_features: int, timesteps: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)
        self.embed = nn.Embedding(timesteps + 1, out_features)
        nn.init.uniform_(self.embed.weight, 0.0, 1.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, in), t (B,) int64 -> (B, out)."""
        return self.embed(t) * self.lin(x)


class LabelDenoiser(nn.Module):
    """eps_theta(y_t, x, t): predicts the noise in a noised label vector, conditioned on features.

    Both conditioning inputs come from one cached feature vector ``f`` of the sample:

    - ``f_p(x)`` = the standardised feature, concatenated with ``y_t`` (the paper's retrieval space);
    - the encoding of x, ``x_e = BN(E(f))`` with E a linear projection to F, trainable by default
      (the paper intends a trainable image encoder; ``x_encoder="frozen"`` keeps it a fixed random
      projection, the ablation closest to the official CIFAR script).

    ``h1 = softplus(BN(g1[t] W1 [y_t; f]))``, ``h = x_e * h1``, ``h2 = softplus(BN(g2[t] W2 h))``,
    ``h3 = softplus(BN(g3[t] W3 h2))``, output ``W4 h3`` (C values).

    Parameters
    ----------
    num_classes : C.
    input_dim : D, the feature width.
    feature_dim : F, the hidden width (512 as the paper's CIFAR model).
    timesteps : T.
    x_encoder : "trainable" or "frozen".
    """

    def __init__(
        self,
        num_classes: int,
        input_dim: int,
        *,
        feature_dim: int = 512,
        timesteps: int = 1000,
        x_encoder: str = "trainable",
    ):
        super().__init__()
        self.num_classes, self.input_dim = num_classes, input_dim
        # fixed input standardisation, set from the training features by the trainer
        self.register_buffer("feat_mean", torch.zeros(input_dim))
        self.register_buffer("feat_std", torch.ones(input_dim))
        self.encoder_x = nn.Linear(input_dim, feature_dim)
        self.norm_x = nn.BatchNorm1d(feature_dim)
        if x_encoder == "frozen":
            self.encoder_x.requires_grad_(False)
        self.lin1 = ConditionalLinear(num_classes + input_dim, feature_dim, timesteps)
        self.norm1 = nn.BatchNorm1d(feature_dim)
        self.lin2 = ConditionalLinear(feature_dim, feature_dim, timesteps)
        self.norm2 = nn.BatchNorm1d(feature_dim)
        self.lin3 = ConditionalLinear(feature_dim, feature_dim, timesteps)
        self.norm3 = nn.BatchNorm1d(feature_dim)
        self.lin4 = nn.Linear(feature_dim, num_classes)

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        # a feature constant on the training data carries nothing and its weights never trained: an
        # infinite std maps it to 0 for any (finite) value it takes at prediction time, where dividing
        # by ~0 blew other values up into inf / NaN and std 1 fed them into untrained weights
        self.feat_std.copy_(torch.where(std > 1e-6, std, torch.full_like(std, float("inf"))))

    def forward(self, features: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """features (B, D), y_t (B, C), t (B,) int64 -> eps_pred (B, C)."""
        f = (features - self.feat_mean) / self.feat_std
        x_e = self.norm_x(self.encoder_x(f))
        h = F.softplus(self.norm1(self.lin1(torch.cat([y_t, f], dim=1), t)))
        h = x_e * h
        h = F.softplus(self.norm2(self.lin2(h, t)))
        h = F.softplus(self.norm3(self.lin3(h, t)))
        return self.lin4(h)
