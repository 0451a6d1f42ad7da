"""LRA-diffusion: learning from noisy labels with label-retrieval-augmented diffusion."""

__version__ = "0.1.0"
