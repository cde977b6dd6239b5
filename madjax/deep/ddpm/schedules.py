"""The DDPM's noise schedule: discrete β_t, α_t, ᾱ_t and the continuous view the ODE sampler uses.

**Forward process** (Ho et al., 2020). A linear schedule
β_t = β_1 + (β_T − β_1)(t − 1)/(T − 1), t = 1 … T (paper: T = 500,
β_1 = 10⁻⁴, β_T = 0.02), α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, and

.. math::

    q(x_t \\mid x_0) = \\mathcal N\\big(\\sqrt{\\bar\\alpha_t}\\,x_0,\\;(1-\\bar\\alpha_t) I\\big),
    \\qquad x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon .

Images live in [0, 1] outside the model and are mapped to x₀ = 2x − 1 ∈ [−1, 1]
inside it; samples are mapped back and clipped to [0, 1].

The continuous view (:func:`continuous_alpha_bar`) is the one of the
probability-flow ODE (:mod:`madjax.deep.ddpm.samplers`): log ᾱ(s) is the
piecewise-linear interpolation of log ᾱ_t at s = t/T (log ᾱ(0) = 0), and
β(s) = −d log ᾱ/ds = −T log α_t on ((t−1)/T, t/T].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from madjax.deep.ddpm.config import DDPMConfig

Array = jax.Array

# The sampler starts from N(0, I), so the forward process must have destroyed
# (almost) all the signal by t = T: ᾱ_T ≤ this (√ᾱ_T ≤ 0.14). The paper's
# schedule (T = 500, 10⁻⁴…0.02) has ᾱ_T = 0.0066.
_MAX_ALPHA_BAR_T = 0.02


class Schedule(NamedTuple):
    """The discrete noise schedule; entry t − 1 belongs to the paper's step t = 1 … T.

    Attributes:
      betas: ``(T,)`` float32 β_t.
      alphas: ``(T,)`` float32 α_t = 1 − β_t.
      alpha_bars: ``(T,)`` float32 ᾱ_t = ∏_{s≤t} α_s (accumulated in float64).
    """

    betas: Array
    alphas: Array
    alpha_bars: Array


def _schedule_f64(timesteps: int, beta_start: float, beta_end: float):
    betas = np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)
    alphas = 1.0 - betas
    return betas, alphas, np.cumprod(alphas)


def schedule(config: DDPMConfig) -> Schedule:
    """The linear β schedule of ``config`` (β_t, α_t, ᾱ_t), each ``(T,)`` float32."""
    return Schedule(*(jnp.asarray(a, jnp.float32)
                      for a in _schedule_f64(config.timesteps, config.beta_start, config.beta_end)))


def one_minus_alpha_bars(sched: Schedule) -> Array:
    """``(T,)`` 1 − ᾱ_t as −expm1(Σ log α_s): keeps its digits where ᾱ_t ≈ 1 (1 − ᾱ_1 = β_1 = 10⁻⁴)."""
    return -jnp.expm1(jnp.cumsum(jnp.log1p(-sched.betas)))


def q_sample(sched: Schedule, x0: Array, t: Array, eps: Array) -> Array:
    """x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, a draw of q(x_t | x₀).

    Args:
      sched: the schedule.
      x0: ``(n, H, W)`` clean images (model space, [−1, 1]).
      t: ``(n,)`` int steps in 1 … T.
      eps: ``(n, H, W)`` standard normal noise.
    """
    alpha_bar = sched.alpha_bars[t - 1][:, None, None]
    one_minus = one_minus_alpha_bars(sched)[t - 1][:, None, None]
    return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(one_minus) * eps


def continuous_alpha_bar(sched: Schedule, s: Array) -> tuple[Array, Array]:
    """log ᾱ(s) and β(s) of the continuous view, s ∈ [0, 1] (see the module docstring).

    log ᾱ is piecewise linear through (t/T, log ᾱ_t), t = 0 … T with ᾱ_0 = 1;
    β(s) = −d log ᾱ/ds = −T log α_t on ((t−1)/T, t/T]. The log is returned so
    that 1 − ᾱ = −expm1(log ᾱ) keeps its digits near s = 0 (1 − ᾱ_1 = β_1).
    """
    T = sched.betas.shape[0]
    log_alphas = jnp.log1p(-sched.betas)
    grid = jnp.arange(T + 1, dtype=jnp.float32) / T
    log_alpha_bar = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(log_alphas)])
    index = jnp.clip(jnp.ceil(s * T).astype(jnp.int32) - 1, 0, T - 1)
    return jnp.interp(s, grid, log_alpha_bar), -T * log_alphas[index]
