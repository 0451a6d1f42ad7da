"""Networks: the conditional label denoiser and CARD's prior mean (linear or a small MLP)."""

from .denoiser import ConditionalLinear, LabelDenoiser
from .prior import (PRIOR_MAX_ROWS, Prior, choose_prior, clearly_better, fit_mlp_prior, fit_prior,
                    fit_softmax_regression)

__all__ = ["PRIOR_MAX_ROWS", "ConditionalLinear", "LabelDenoiser", "Prior", "choose_prior", "clearly_better",
           "fit_mlp_prior", "fit_prior", "fit_softmax_regression"]
