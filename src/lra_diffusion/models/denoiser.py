"""The CARD-style conditional label denoiser of LRA-diffusion (Chen et al. 2023, Han et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def guarded_std(std: torch.Tensor) -> torch.Tensor:
    """A feature's std as the divisor of its standardisation: infinite where the feature is constant on the
    training data, so it maps to 0 for any (finite) value it takes later (it carries nothing, and its
    weights never trained; dividing by ~0 blew other values up into inf / NaN)."""
    return torch.where(std > 1e-6, std, torch.full_like(std, float("inf")))


def standardise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                proj: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D) -> (B, D) or (B, d): centred, projected onto ``proj`` (D, d) where given, divided by ``std``
    (a :func:`guarded_std`)."""
    centred = features - mean
    return (centred if proj is None else centred @ proj) / std


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

    Both conditioning inputs come from one cached feature vector ``f`` of the sample (and, with
    ``prior=True``, CARD's prior mean ``f_q``, a third one):

    - ``f_p(x)`` = the standardised feature, concatenated with ``y_t`` (the paper's retrieval space);
    - the encoding of x, ``x_e = BN(E(f))`` with E a linear projection to F, trainable by default
      (the paper intends a trainable image encoder; ``x_encoder="frozen"`` keeps it a fixed random
      projection, the ablation closest to the official CIFAR script).

    - ``f_q(x) = softmax(h W_q + b_q)``, CARD's prior mean (Han et al. 2022): a frozen classifier fitted
      on the noisy labels before the denoiser trains (:mod:`lra_diffusion.models.prior`), linear
      (``h = f``) or with one ReLU hidden layer (``h = relu(f W_h + b_h)``), stored as buffers
      ``prior_weight`` (D or H, C), ``prior_bias`` (C) and, for the MLP, ``prior_hidden_weight`` (D, H)
      and ``prior_hidden_bias`` (H); it centres the diffusion (:func:`lra_diffusion.diffusion.q_sample`)
      and is concatenated to ``y_t`` as in CARD.

    ``h1 = softplus(BN(g1[t] W1 [y_t; f_q; f]))`` (``[y_t; f]`` without a prior), ``h = x_e * h1``,
    ``h2 = softplus(BN(g2[t] W2 h))``, ``h3 = softplus(BN(g3[t] W3 h2))``, output ``W4 h3`` (C values);
    predicting y0 with a prior, the output is ``softmax(log f_q + W4 h3)`` with W4 starting at zero (a
    residual on the prior classifier's logits).

    Parameters
    ----------
    num_classes : C.
    input_dim : D, the feature width.
    input_rank : d, where the features are projected onto their top d principal components before the
        standardisation (buffer ``feat_proj`` (D, d), set by :meth:`set_feature_stats`); 0 = no projection.
    feature_dim : F, the hidden width (512 as the paper's CIFAR model).
    timesteps : T.
    x_encoder : "trainable" or "frozen".
    prior : condition on (and centre the diffusion at) a prior mean f_q(x); its weights start at zero
        (f_q = uniform) until :meth:`set_prior` is called.
    prior_hidden : H, the prior's hidden width (0: a linear prior); :meth:`set_prior` may change it.
    prediction : ``"eps"`` or ``"y0"``, what the output estimates (only the residual form depends on it).
    """

    def __init__(
        self,
        num_classes: int,
        input_dim: int,
        *,
        feature_dim: int = 512,
        timesteps: int = 1000,
        x_encoder: str = "trainable",
        input_rank: int = 0,
        prior: bool = False,
        prior_hidden: int = 0,
        prediction: str = "eps",
    ):
        super().__init__()
        self.num_classes, self.input_dim, self.has_prior = num_classes, input_dim, prior
        # fixed input standardisation (after the optional projection), set from the training features
        self.register_buffer("feat_mean", torch.zeros(input_dim))
        if input_rank:
            self.register_buffer("feat_proj", torch.zeros(input_dim, input_rank))
            input_dim = input_rank  # the width every later layer sees
        self.register_buffer("feat_std", torch.ones(input_dim))
        self.encoder_x = nn.Linear(input_dim, feature_dim)
        self.norm_x = nn.BatchNorm1d(feature_dim)
        if x_encoder == "frozen":
            self.encoder_x.requires_grad_(False)
        if prior:
            self.register_buffer("prior_weight", torch.zeros(prior_hidden or input_dim, num_classes))
            self.register_buffer("prior_bias", torch.zeros(num_classes))
            if prior_hidden:
                self.register_buffer("prior_hidden_weight", torch.zeros(input_dim, prior_hidden))
                self.register_buffer("prior_hidden_bias", torch.zeros(prior_hidden))
        self.lin1 = ConditionalLinear(num_classes * (2 if prior else 1) + input_dim, feature_dim, timesteps)
        self.norm1 = nn.BatchNorm1d(feature_dim)
        self.lin2 = ConditionalLinear(feature_dim, feature_dim, timesteps)
        self.norm2 = nn.BatchNorm1d(feature_dim)
        self.lin3 = ConditionalLinear(feature_dim, feature_dim, timesteps)
        self.norm3 = nn.BatchNorm1d(feature_dim)
        self.lin4 = nn.Linear(feature_dim, num_classes)
        # predicting y0 with a prior, the output is softmax(log f_q + W4 h3): a correction of the prior
        # classifier in logit space, zero at the start, so the untrained denoiser already predicts f_q;
        # a softmax keeps the estimate on the simplex where one-hot labels live, so a small correction
        # cannot scramble the order of many near-equal classes
        self.residual = prior and prediction == "y0"
        if self.residual:
            nn.init.zeros_(self.lin4.weight)
            nn.init.zeros_(self.lin4.bias)

    @classmethod
    def from_config(cls, num_classes: int, input_dim: int, config, *, prior_hidden: int = 0,
                    input_rank: int = 0) -> LabelDenoiser:
        """The denoiser a :class:`~lra_diffusion.config.Config` describes (weights from torch's RNG);
        ``prior_hidden``: the fitted prior's hidden width, where it has one, and ``input_rank``: the
        projection's width, where there is one (:attr:`input_rank`; a saved run's tensors say both)."""
        return cls(num_classes, input_dim, feature_dim=config.model.feature_dim,
                   timesteps=config.diffusion.timesteps, x_encoder=config.model.x_encoder, input_rank=input_rank,
                   prior=config.diffusion.prior != "zero", prior_hidden=prior_hidden,
                   prediction=config.diffusion.prediction)

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor, proj: torch.Tensor | None = None) -> None:
        """The training features' mean (D,) and, after the projection ``proj`` (D, d) where the denoiser has
        one, the std (D,) or (d,) of the (projected) features."""
        self.feat_mean.copy_(mean)
        if (proj is None) != (self.input_rank == 0):
            raise ValueError(f"this denoiser projects to {self.input_rank} dimensions, got proj {proj is not None}")
        if proj is not None:
            self.feat_proj.copy_(proj)
        self.feat_std.copy_(guarded_std(std))  # (std 1 for a constant feature fed later values into untrained weights)

    def set_prior(self, weight: torch.Tensor, bias: torch.Tensor,
                  hidden: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Set the prior classifier over the *standardised* features: weight (D, C) and bias (C), or with
        ``hidden = (W_h (D, H), b_h (H,))`` weight (H, C) after a ReLU layer."""
        if not self.has_prior:
            raise ValueError("this denoiser was built without a prior (prior=False)")
        dev = self.prior_bias.device
        self.prior_weight = weight.detach().clone().float().to(dev)  # replaces the buffer (its shape may change)
        self.prior_bias = bias.detach().clone().float().to(dev)
        for name, value in zip(("prior_hidden_weight", "prior_hidden_bias"), hidden or (None, None)):
            if value is None:
                self._buffers.pop(name, None)
            else:
                self.register_buffer(name, value.detach().clone().float().to(dev))

    @property
    def input_rank(self) -> int:
        """d, the width of the features' projection (0: none)."""
        p = self._buffers.get("feat_proj")
        return 0 if p is None else p.shape[1]

    @property
    def prior_hidden(self) -> int:
        """H, the prior's hidden width (0: linear or no prior)."""
        w = self._buffers.get("prior_hidden_weight")
        return 0 if w is None else w.shape[1]

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D) or (B, d): the fixed input projection and standardisation of the training features."""
        return standardise(features, self.feat_mean, self.feat_std, self.feat_proj if self.input_rank else None)

    def prior_mean(self, features: torch.Tensor) -> torch.Tensor | None:
        """CARD's prior mean f_q(x), (B, C) class probabilities; None when built without a prior."""
        if not self.has_prior:
            return None
        h = self.standardise(features)
        if self.prior_hidden:
            h = torch.relu(h @ self.prior_hidden_weight + self.prior_hidden_bias)
        return torch.softmax(h @ self.prior_weight + self.prior_bias, dim=1)

    def forward(self, features: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, D), y_t (B, C), t (B,) int64 -> eps_pred (B, C).

        ``prior``: f_q(x) (B, C) if the caller computed it already (else it is computed here).
        """
        f = self.standardise(features)
        x_e = self.norm_x(self.encoder_x(f))
        if self.has_prior:
            prior = self.prior_mean(features) if prior is None else prior
            h = torch.cat([y_t, prior, f], dim=1)
        else:
            h = torch.cat([y_t, f], dim=1)
        h = F.softplus(self.norm1(self.lin1(h, t)))
        h = x_e * h
        h = F.softplus(self.norm2(self.lin2(h, t)))
        h = F.softplus(self.norm3(self.lin3(h, t)))
        if self.residual:
            return torch.softmax(self.lin4(h) + torch.log(prior.clamp_min(1e-12)), dim=1)
        return self.lin4(h)
