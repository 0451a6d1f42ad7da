"""Networks: the conditional label denoiser."""

from .denoiser import ConditionalLinear, LabelDenoiser

__all__ = ["ConditionalLinear", "LabelDenoiser"]
