"""Networks: the conditional label denoiser and CARD's linear prior mean."""

from .denoiser import ConditionalLinear, LabelDenoiser
from .prior import Prior, fit_prior, fit_softmax_regression

__all__ = ["ConditionalLinear", "LabelDenoiser", "Prior", "fit_prior", "fit_softmax_regression"]
