"""Conditional DDPM with classifier-free guidance, in Flax NNX.

The package splits the model by job:

* :mod:`~madjax.deep.ddpm.config` -- :class:`DDPMConfig` and the presets
  :data:`DDPM_CONFIGS`;
* :mod:`~madjax.deep.ddpm.schedules` -- the linear β schedule, the forward
  process q(x_t | x₀) and its continuous view;
* :mod:`~madjax.deep.ddpm.network` -- the U-Net ε_θ(x_t, t, c);
* :mod:`~madjax.deep.ddpm.training` -- the ε-prediction loss with label
  dropout, the clipped Adam, the EMA and the compiled training epoch;
* :mod:`~madjax.deep.ddpm.samplers` -- classifier-free guidance, the
  ancestral sampler and the probability-flow ODE sampler;
* :mod:`~madjax.deep.ddpm.model` -- :func:`ddpm`, the record of the loop
  interface.

Each module's docstring carries its maths (Ho et al., 2020; Ho & Salimans,
2021; Song et al., 2021). Images live in [0, 1] outside the model and in
[−1, 1] inside it; λ = 1/(1 + w) is the guidance weight of sampling.

The functional record (:func:`ddpm`) follows ``madjax.base.GenerativeModel``;
``Params`` is a :class:`DDPMParams`. Named presets are in
:data:`DDPM_CONFIGS`.
"""

from madjax.deep.ddpm.config import DDPM_CONFIGS, DDPMConfig
from madjax.deep.ddpm.model import ddpm
from madjax.deep.ddpm.network import Conv3x3, EpsFn, GroupNorm, ResBlock, UNet, conv3x3, ddpm_eps, timestep_embedding
from madjax.deep.ddpm.samplers import (
    ODESolution,
    ancestral_sample,
    balanced_labels,
    ddpm_ode_sample,
    guided_eps,
    ode_sample,
    sample_keys,
)
from madjax.deep.ddpm.schedules import Schedule, continuous_alpha_bar, one_minus_alpha_bars, q_sample, schedule
from madjax.deep.ddpm.training import DDPMInfo, DDPMParams, loss

__all__ = [
    "DDPM_CONFIGS", "DDPMConfig", "DDPMInfo", "DDPMParams", "Conv3x3", "EpsFn", "GroupNorm", "ODESolution",
    "ResBlock", "Schedule", "UNet", "ancestral_sample", "balanced_labels", "continuous_alpha_bar", "conv3x3",
    "ddpm", "ddpm_eps", "ddpm_ode_sample", "guided_eps", "loss", "ode_sample", "one_minus_alpha_bars", "q_sample",
    "sample_keys", "schedule", "timestep_embedding",
]
