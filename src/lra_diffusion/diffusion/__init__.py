"""Pure diffusion math over label vectors: schedules, forward noising, loss, DDIM sampling.

Notation (Song et al. 2021, "Denoising Diffusion Implicit Models"; Han et al. 2022, CARD):

=============  ==============================================================
code           paper
=============  ==============================================================
``y0``         y_0, the clean (one-hot) label vector, shape (B, C)
``y_t``        y_t, the noised label vector at timestep t
``alpha_bar``  alpha-bar_t = prod_{s<=t} (1 - beta_s), indexed t = 0..T-1
``eps``        epsilon ~ N(0, I), the noise mixed into y_t
``eps_pred``   epsilon_theta(y_t, x, t), the network's estimate of eps
=============  ==============================================================

Nothing here sees a network, a device string or a file: the model is passed in as a function.
"""

from .ddim import ddim_sample, ddim_step, ddim_timesteps, eps_from_y0
from .losses import antithetic_timesteps, q_sample, weighted_eps_loss
from .schedule import alpha_bars, cosine_betas, get_betas, linear_betas

__all__ = [
    "alpha_bars",
    "antithetic_timesteps",
    "cosine_betas",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "eps_from_y0",
    "get_betas",
    "linear_betas",
    "q_sample",
    "weighted_eps_loss",
]
