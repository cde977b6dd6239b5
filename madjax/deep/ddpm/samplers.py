"""Sampling the DDPM: classifier-free guidance, the ancestral sampler and the probability-flow ODE.

**Guidance** (Ho & Salimans, 2021, Eq. 6; paper §3, DESIGN §1)

.. math::

    \\tilde\\varepsilon = (1 + w)\\,\\varepsilon(x, t, c) - w\\,\\varepsilon(x, t, \\varnothing),
    \\qquad \\lambda = \\frac{1}{1 + w} \\iff w = \\frac1\\lambda - 1,

so λ = 1 (w = 0) is the plain conditional model and λ < 1 sharpens each class.

**Ancestral sampler** (Ho et al., 2020, Alg. 2): x_T ~ N(0, I), then for
t = T … 1

.. math::

    x_{t-1} = \\frac{1}{\\sqrt{\\alpha_t}}\\Big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}\\,
              \\tilde\\varepsilon(x_t, t, c)\\Big) + \\sigma_t z,
    \\qquad z \\sim \\mathcal N(0, I).

We take σ_t² = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), the variance of the true
posterior q(x_{t−1} | x_t, x_0) (Ho et al. report the same quality for
σ_t² = β_t). With it the last step is noise-free by itself (β̃_1 = 0, ᾱ_0 = 1),
and for a point mass and an exact ε the sampler returns x₀ exactly.
Each sample i draws its initial noise and every z_t from its own key
``fold_in(key, i)``, so its noise does not depend on how the n samples are
split into chunks (``sample_chunk`` bounds memory).

**Probability-flow ODE** (:func:`ddpm_ode_sample`; Song et al., 2021). The
discrete chain is read as a VP-SDE in continuous time s ∈ [0, 1] with
network time t = sT: log ᾱ(s) is the piecewise-linear interpolation of
log ᾱ_t at s = t/T (log ᾱ(0) = 0), so ᾱ(t/T) = ᾱ_t exactly at the trained
noise levels, and β(s) = −d log ᾱ/ds = −T log α_t on ((t−1)/T, t/T] is
piecewise constant. The deterministic flow with the same marginals as
q(x_s) is

.. math::

    \\frac{dx}{ds} = -\\tfrac12\\beta(s)\\big(x + \\nabla_x\\log p_s(x)\\big)
                 = -\\tfrac12\\beta(s)\\Big(x - \\frac{\\tilde\\varepsilon(x, sT, c)}
                   {\\sqrt{1-\\bar\\alpha(s)}}\\Big),

solved by diffrax from s = 1 (x ~ N(0, I)) down to s = 1/T, the smallest
trained noise level, followed by the same noise-free denoising step the
ancestral sampler ends with: x̂₀ = (x − √(1−ᾱ_1) ε̃)/√ᾱ_1.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from madjax._progress import progress_bar
from madjax.deep.ddpm.config import DDPMConfig, _canonical
from madjax.deep.ddpm.network import EpsFn, ddpm_eps
from madjax.deep.ddpm.schedules import Schedule, continuous_alpha_bar, one_minus_alpha_bars, schedule
from madjax.validation import ParameterError, check_float, check_int, check_lam

if TYPE_CHECKING:
    from madjax.deep.ddpm.training import DDPMParams

Array = jax.Array


def guided_eps(eps_fn: EpsFn, x: Array, t: Array, y: Array, w: Array, *, null_label: int) -> Array:
    """Classifier-free guidance ε̃ = (1 + w) ε(x, t, c) − w ε(x, t, ∅).

    At w = 0 (λ = 1) only the conditional network runs (``lax.cond``): the
    result is ε(x, t, c) itself, not (1 + 0)·ε_c − 0·ε_∅ (which would turn a
    non-finite ε_∅ into NaN), at half the cost. Otherwise the conditional and
    unconditional passes share one batch of 2n.

    Args:
      eps_fn: the network.
      x: ``(n, H, W)``; t: ``(n,)`` float; y: ``(n,)`` int labels.
      w: scalar guidance weight w = 1/λ − 1 ≥ 0 (traced).
      null_label: the index of ∅.
    """
    def conditional(_):
        return eps_fn(x, t, y)

    def guided(_):
        both = eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                      jnp.concatenate([y, jnp.full_like(y, null_label)]))
        cond, uncond = jnp.split(both, 2)
        return (1.0 + w) * cond - w * uncond

    return jax.lax.cond(w == 0, conditional, guided, None)


def balanced_labels(key: Array, n: int, num_classes: int) -> Array:
    """``(n,)`` int32 labels: n//C of each class, the remainder to distinct random classes, shuffled."""
    k_extra, k_perm = jax.random.split(key)
    base = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), n // num_classes)
    extra = jax.random.permutation(k_extra, num_classes)[: n % num_classes].astype(jnp.int32)
    return jax.random.permutation(k_perm, jnp.concatenate([base, extra]))


def sample_keys(key: Array, n: int) -> Array:
    """Per-sample keys ``fold_in(key, i)``, i = 0 … n − 1: a sample's noise never depends on chunking."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(n))


def ancestral_sample(keys: Array, eps_fn: Callable[[Array, Array], Array], sched: Schedule,
                     image_shape: tuple[int, int]) -> Array:
    """Ho et al.'s Algorithm 2 with σ_t² = β̃_t, as a ``lax.scan`` over t = T … 1.

    Args:
      keys: ``(n,)`` per-sample keys (initial noise and every z_t of sample i
        come from ``keys[i]``).
      eps_fn: ``eps_fn(x_t, t)`` -> ε̃ ``(n, H, W)`` (labels and guidance
        closed over); t is the ``(n,)`` float network time.
      sched: the schedule.
      image_shape: (H, W).

    Returns:
      ``(n, H, W)`` float32 x₀ in model space (not clipped).
    """
    n = keys.shape[0]
    T = sched.betas.shape[0]
    draw = jax.vmap(lambda k: jax.random.normal(k, image_shape, jnp.float32))
    x_T = draw(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 0))
    one_minus = one_minus_alpha_bars(sched)
    one_minus_prev = jnp.concatenate([jnp.zeros((1,), jnp.float32), one_minus[:-1]])
    # β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t); exactly 0 at t = 1.
    sigmas = jnp.sqrt(sched.betas * one_minus_prev / one_minus)
    eps_coef = sched.betas / jnp.sqrt(one_minus)

    def step(x, t):
        i = t - 1
        eps = eps_fn(x, jnp.full((n,), t, jnp.float32))
        mean = (x - eps_coef[i] * eps) / jnp.sqrt(sched.alphas[i])
        z = draw(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t))
        return mean + sigmas[i] * z, None

    x0, _ = jax.lax.scan(step, x_T, jnp.arange(T, 0, -1))
    return x0


def _to_images(x0: Array) -> Array:
    """Model space [−1, 1] -> data space, clipped to [0, 1]."""
    return jnp.clip((x0 + 1.0) / 2.0, 0.0, 1.0)


def _lam(lam):
    """Validate λ when it is a concrete number (a traced λ is the caller's business)."""
    if isinstance(lam, numbers.Real) or (isinstance(lam, (np.ndarray, np.generic)) and np.ndim(lam) == 0):
        return check_lam(float(lam))
    return lam


@functools.lru_cache(maxsize=16)
def _compiled_sampler(config: DDPMConfig):
    """The jitted ``sample_chunk`` of a (canonical) configuration: the guided ancestral sampler on
    ``keys`` ``(n,)``, EMA ``weights``, labels ``y`` ``(n,)`` and λ -> images ``(n, H, W)`` in [0, 1]."""
    sched = schedule(config)
    null = config.num_classes

    @jax.jit
    def sample_chunk(keys: Array, weights: nnx.State, y: Array, lam: Array) -> Array:
        w = 1.0 / jnp.asarray(lam, jnp.float32) - 1.0
        net = ddpm_eps(config, weights)

        def eps_fn(x, t):
            return guided_eps(net, x, t, y, w, null_label=null)

        return _to_images(ancestral_sample(keys, eps_fn, sched, config.image_shape))

    return sample_chunk


def _chunked(fn, chunk: int, keys: Array, y: Array, weights, lam, progress: bool) -> Array:
    """Run ``fn(keys, weights, y, lam)`` over chunks of at most ``chunk`` samples.

    Full chunks share one compilation; the last one is padded up to a multiple
    of min(128, chunk) (the padding's samples are dropped), so the number of
    compiled shapes stays small whatever n the loop asks for.
    """
    n = keys.shape[0]
    granule = min(128, chunk)
    parts = []
    with progress_bar(total=-(-n // chunk), desc="sample", enabled=progress, unit="chunk", nested=True) as bar:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            padded = min(chunk, -(-size // granule) * granule)
            idx = jnp.arange(start, start + padded) % n  # padding repeats early samples; dropped below
            parts.append(fn(keys[idx], weights, y[idx], lam)[:size])
            bar.update(1)
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- probability-flow ODE


class ODESolution(NamedTuple):
    """Result of :func:`ode_sample`.

    Attributes:
      x: ``(n, H, W)`` float32 end point in model space (not clipped).
      steps: ``()`` int32 accepted solver steps.
    """

    x: Array
    steps: Array


def ode_sample(x_T: Array, eps_fn: Callable[[Array, Array], Array], sched: Schedule, *,
               rtol: float = 1e-3, atol: float = 1e-3, steps: int | None = None,
               max_steps: int = 4096, denoise: bool = True) -> ODESolution:
    """Solve the probability-flow ODE from s = 1 to s = 1/T, then denoise once.

    Args:
      x_T: ``(n, H, W)`` initial points (N(0, I) draws for sampling).
      eps_fn: ``eps_fn(x, t)`` -> ε̃ ``(n, H, W)`` with float network time t
        ``(n,)`` (labels and guidance closed over).
      sched: the discrete schedule the continuous one interpolates.
      rtol, atol: tolerances of the adaptive Tsit5 solve (PID step control,
        stepping onto each of the schedule's T − 1 kinks, so at least T steps).
      steps: if given, a fixed-step Heun solve with this many steps instead.
      max_steps: cap on the adaptive solver's steps.
      denoise: finish with x̂₀ = (x − √(1−ᾱ_1) ε̃)/√ᾱ_1 (True), or return
        x at s = 1/T.

    Returns:
      :class:`ODESolution` with x̂₀ (or x_{1/T}) in model space.
    """
    T = sched.betas.shape[0]
    n = x_T.shape[0]
    s_end = 1.0 / T

    def eps_at(s, x):
        return eps_fn(x, jnp.full((n,), s * T, jnp.float32))

    def drift(s, x, args):
        log_alpha_bar, beta = continuous_alpha_bar(sched, s)
        return -0.5 * beta * (x - eps_at(s, x) / jnp.sqrt(-jnp.expm1(log_alpha_bar)))

    if steps is None:
        # β(s) jumps at every grid point t/T (log ᾱ is piecewise linear): the
        # solver steps onto each jump, or its error estimate would not hold
        # across the kinks (measured: 18× the error at rtol = atol = 1e-5).
        controller = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=rtol, atol=atol),
                                                    jump_ts=jnp.arange(1, T) / T)
        solver, dt0 = diffrax.Tsit5(), -0.01
    else:
        solver, controller, dt0 = diffrax.Heun(), diffrax.ConstantStepSize(), -(1.0 - s_end) / steps
        max_steps = steps
    sol = diffrax.diffeqsolve(diffrax.ODETerm(drift), solver, t0=1.0, t1=s_end, dt0=dt0, y0=x_T,
                              stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True),
                              max_steps=max_steps)
    x = sol.ys[0]
    if denoise:
        beta_1 = sched.betas[0]  # 1 − ᾱ_1 = β_1 exactly
        x = (x - jnp.sqrt(beta_1) * eps_at(s_end, x)) / jnp.sqrt(1.0 - beta_1)
    return ODESolution(x, jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32))


@functools.lru_cache(maxsize=16)
def _ode_chunk_fn(config: DDPMConfig, rtol: float, atol: float, steps: int | None):
    sched = schedule(config)

    @jax.jit
    def run(keys, weights, y, lam):
        w = 1.0 / jnp.asarray(lam, jnp.float32) - 1.0
        net = ddpm_eps(config, weights)
        x_T = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), config.image_shape, jnp.float32))(keys)
        x0 = ode_sample(x_T, lambda x, t: guided_eps(net, x, t, y, w, null_label=config.num_classes), sched,
                        rtol=rtol, atol=atol, steps=steps).x
        return _to_images(x0)

    return run


def ddpm_ode_sample(config: DDPMConfig, params: DDPMParams, key: Array, y: Array, lam, *,
                    rtol: float = 1e-3, atol: float = 1e-3, steps: int | None = None,
                    progress: bool = False) -> Array:
    """Deterministic samples by the probability-flow ODE (see the module docstring).

    Sample i starts from the same N(0, I) draw as in the ancestral sampler
    (``fold_in(fold_in(key, i), 0)``) and is then a deterministic function
    of it: the same key gives the same images. The adaptive controller sees
    a chunk as one ODE, so with ``steps=None`` a sample can move within the
    solver tolerance when the chunking changes; fixed ``steps`` avoid that.

    Args:
      config: the model's configuration.
      params: fitted :class:`DDPMParams` (the EMA weights are used).
      key: the initial-noise key.
      y: ``(n,)`` int labels in [0, C).
      lam: sampling bias λ ∈ (0, 1], guidance w = 1/λ − 1.
      rtol, atol: adaptive Tsit5 tolerances.
      steps: fixed-step Heun with this many steps instead (2 network
        evaluations per step).
      progress: a tqdm bar over chunks.

    Returns:
      ``(n, H, W)`` float32 images in [0, 1].
    """
    lam = _lam(lam)
    y = jnp.asarray(y)
    if y.ndim != 1 or y.shape[0] < 1 or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ParameterError("y", f"must be a non-empty (n,) integer array, got {y.shape} {y.dtype}")
    if steps is not None:
        steps = check_int("steps", steps, minimum=1)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if check_float(name, value) <= 0:
            raise ParameterError(name, f"must be > 0, got {value}")
    y = y.astype(jnp.int32)
    lo, hi = (int(v) for v in jax.device_get((jnp.min(y), jnp.max(y))))
    if lo < 0 or hi >= config.num_classes:
        raise ParameterError("y", f"labels must be in [0, {config.num_classes}), got [{lo}, {hi}]")
    fn = _ode_chunk_fn(_canonical(config), float(rtol), float(atol), steps)
    return _chunked(fn, config.sample_chunk, sample_keys(key, y.shape[0]), y, params.ema, lam, progress)
