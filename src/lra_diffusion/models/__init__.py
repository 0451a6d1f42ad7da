"""Networks: the conditional label denoiser and CARD's prior mean (linear or a small MLP)."""

from .denoiser import ConditionalLinear, LabelDenoiser
from .prior import Prior, choose_prior, clearly_better, fit_mlp_prior, fit_prior, fit_softmax_regression

__all__ = ["ConditionalLinear", "LabelDenoiser", "Prior", "choose_prior", "clearly_better", "fit_mlp_prior",
           "fit_prior", "fit_softmax_regression"]
