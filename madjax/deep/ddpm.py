"""Conditional DDPM with classifier-free guidance, in Flax NNX.

**Forward process** (Ho et al., 2020). A linear schedule
β_t = β_1 + (β_T − β_1)(t − 1)/(T − 1), t = 1 … T (paper: T = 500,
β_1 = 10⁻⁴, β_T = 0.02), α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, and

.. math::

    q(x_t \\mid x_0) = \\mathcal N\\big(\\sqrt{\\bar\\alpha_t}\\,x_0,\\;(1-\\bar\\alpha_t) I\\big),
    \\qquad x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon .

Images live in [0, 1] outside the model and are mapped to x₀ = 2x − 1 ∈ [−1, 1]
inside it; samples are mapped back and clipped to [0, 1].

**Training** minimises the ε-prediction loss (Ho et al., 2020, Eq. 14)

.. math::

    L = \\mathbb E_{x_0, c, t, \\varepsilon}\\,
        \\big\\|\\varepsilon - \\varepsilon_\\theta(x_t, t, \\tilde c)\\big\\|^2,
    \\qquad t \\sim \\mathcal U\\{1..T\\},\\ \\varepsilon \\sim \\mathcal N(0, I),

the squared norm summed over the d = H·W pixels (so an ε_θ ≡ 0 scores
E L = d). The label c̃ is the true class c, replaced by the null class ∅
(embedding index ``num_classes``) with probability ``label_dropout`` = 0.1
(Ho & Salimans, 2021), so one network learns both ε(x, t, c) and the
unconditional ε(x, t, ∅). Training images labelled −1 (unconditional data)
always train the ∅ branch.

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

**Warm start.** The paper trains every generation from scratch (§2). With
``warm_start=True`` (the default, as in the GLOW loop) each generation
instead fine-tunes its predecessor's weights (and EMA and Adam moments) on
its own training set. The CPU presets afford a few hundred optimiser steps
per generation, after which a model trained from scratch is still improving
(the quick preset's training loss is still falling after 40 epochs):
re-initialising would make every generation pay that same undertraining, an
error of the fit rather than of the loop, whereas a fine-tune keeps
converging on the data it is given. The price is a memory of earlier
generations through the initial weights, so the loop's drift can be slower
than from scratch. ``warm_start=False`` re-initialises from ``fit``'s key,
as in the paper (the ``paper`` preset).

**EMA.** An exponential moving average of the weights, decay
min(``ema_decay``, (1 + k)/(10 + k)) at optimiser step k (the usual warm-up
so the average is not dominated by the initial weights); both samplers use
the EMA weights (``ema_decay=0`` samples with the raw weights).

The functional record (:func:`ddpm`) follows ``madjax.base.GenerativeModel``;
``Params`` is a :class:`DDPMParams`. Named presets are in
:data:`DDPM_CONFIGS`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from madjax._progress import progress_bar
from madjax.base import GenerativeModel
from madjax.data import Images
from madjax.validation import ParameterError, check_float, check_int, check_lam

Array = jax.Array

# eps_fn(x (n, H, W), t (n,) float network time in [1, T], y (n,) int32) -> (n, H, W)
EpsFn = Callable[[Array, Array, Array], Array]

# The sampler starts from N(0, I), so the forward process must have destroyed
# (almost) all the signal by t = T: ᾱ_T ≤ this (√ᾱ_T ≤ 0.14). The paper's
# schedule (T = 500, 10⁻⁴…0.02) has ᾱ_T = 0.0066.
_MAX_ALPHA_BAR_T = 0.02


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
    """Schedule, U-Net and training of a conditional DDPM (defaults: the paper's MNIST model).

    The paper states T = 500, 10 % label dropout and λ = 1/(1+w); it gives
    neither the network nor the training schedule. The defaults are a
    standard small conditional MNIST U-Net trained for 20 epochs with batch
    256 (as in common MNIST classifier-free-guidance DDPMs).

    Attributes:
      image_shape: (H, W); each side divisible by 2^(len(channels) − 1).
      num_classes: C; the label embedding has C + 1 rows, the last is ∅.
      timesteps: T.
      beta_start, beta_end: β_1 and β_T of the linear schedule; ᾱ_T must be
        ≤ 0.02 (the sampler starts from N(0, I)): a short chain needs larger
        β (the smoke preset scales them by 500/T).
      channels: U-Net widths, one per resolution (H, H/2, …).
      blocks: residual blocks per resolution on each side of the U.
      embed_dim: size of the sinusoidal time embedding and of the
        time + label embedding added into every block.
      epochs: passes over the training set per ``fit``.
      batch_size: minibatch size (⌊n/batch⌋ full batches of a fresh
        permutation per epoch).
      learning_rate: Adam step size at the start of each ``fit``; it decays
        (cosine) to ``learning_rate·final_lr_fraction`` by the end.
      final_lr_fraction: see ``learning_rate``.
      grad_clip: global-norm gradient clipping.
      ema_decay: EMA decay of the weights the samplers use; 0 = no EMA.
      label_dropout: probability of training on ∅ instead of the label.
      warm_start: ``fit`` fine-tunes the given parameters (True) or
        re-initialises from its key (False, the paper's protocol).
      sample_chunk: at most this many images go through the sampler at once.
    """

    image_shape: tuple[int, int] = (28, 28)
    num_classes: int = 10
    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: int = 2
    embed_dim: int = 128
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-4
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    warm_start: bool = True
    sample_chunk: int = 1000

    def __post_init__(self):
        shape = self.image_shape
        if not isinstance(shape, tuple) or len(shape) != 2:
            raise ParameterError("image_shape", f"must be a tuple (H, W), got {shape!r}")
        for side in shape:
            check_int("image_shape", side, minimum=2)
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ParameterError("channels", f"must be a non-empty tuple of widths, got {self.channels!r}")
        for width in self.channels:
            check_int("channels", width, minimum=1)
        factor = 2 ** (len(self.channels) - 1)
        if any(side % factor for side in shape):
            raise ParameterError(
                "image_shape", f"{shape} is not divisible by 2^{len(self.channels) - 1} = {factor} "
                f"(one halving per extra entry of channels={self.channels})"
            )
        check_int("num_classes", self.num_classes, minimum=1)
        check_int("timesteps", self.timesteps, minimum=2)
        for name in ("blocks", "embed_dim", "epochs", "batch_size", "sample_chunk"):
            check_int(name, getattr(self, name), minimum=1)
        if self.embed_dim % 2:
            raise ParameterError("embed_dim", f"must be even (sine and cosine halves), got {self.embed_dim}")
        for name in ("learning_rate", "final_lr_fraction", "grad_clip"):
            if check_float(name, getattr(self, name)) <= 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("ema_decay", "label_dropout"):
            if not 0.0 <= check_float(name, getattr(self, name)) < 1.0:
                raise ParameterError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < check_float("beta_start", self.beta_start) < 1.0:
            raise ParameterError("beta_start", f"must be in (0, 1), got {self.beta_start}")
        if not self.beta_start <= check_float("beta_end", self.beta_end) < 1.0:
            raise ParameterError("beta_end", f"must be in [beta_start, 1), got {self.beta_end}")
        alpha_bar_t = float(_schedule_f64(self.timesteps, self.beta_start, self.beta_end)[2][-1])
        if alpha_bar_t > _MAX_ALPHA_BAR_T:
            raise ParameterError(
                "beta_end", f"the schedule keeps ᾱ_T = {alpha_bar_t:.3g} of the signal at t = T "
                f"(must be ≤ {_MAX_ALPHA_BAR_T}); raise beta_start/beta_end or timesteps"
            )
        if not isinstance(self.warm_start, bool):
            raise ParameterError("warm_start", f"must be a bool, got {self.warm_start!r}")


# --------------------------------------------------------------------------- schedule


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


def loss(key: Array, eps_fn: EpsFn, sched: Schedule, x0: Array, y: Array, *, null_label: int,
         label_dropout: float = 0.0) -> Array:
    """The ε-prediction loss E ||ε − ε_θ(x_t, t, c̃)||² on one batch (a scalar).

    Args:
      key: draws t ~ U{1..T}, ε ~ N(0, I) and the label dropout.
      eps_fn: the network, ``eps_fn(x_t, t, y)`` (t as float network time).
      sched: the schedule.
      x0: ``(n, H, W)`` clean images in model space.
      y: ``(n,)`` int labels in [0, C); −1 (unconditional data) means ∅.
      null_label: the index of ∅ (= C).
      label_dropout: probability of replacing a label by ∅.

    Returns:
      The batch mean of the per-image squared error summed over pixels.
    """
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    n = x0.shape[0]
    t = jax.random.randint(k_t, (n,), 1, sched.betas.shape[0] + 1)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    drop = jax.random.bernoulli(k_drop, label_dropout, (n,)) | (y < 0)
    labels = jnp.where(drop, null_label, y)
    pred = eps_fn(q_sample(sched, x0, t, eps), t.astype(x0.dtype), labels)
    return jnp.mean(jnp.sum((eps - pred) ** 2, axis=(1, 2)))


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


# Presets for the loops (DESIGN §4). Wall times measured on a 2-core CPU shared
# with three other jobs (load 2.5–4), training on the 1,501 digits of the train
# split; the first fit and the first sample of a process add their compilation:
#
#   preset  fit (1 generation)   first fit   sample 1000, λ = 1 / λ = 0.5
#   quick   43 s                 73–82 s     13 s / 18 s
#   smoke   1.2 s                25 s        (500 at λ = 0.5: 4 s)
#
# The quick model at T = 500 samples 1000 images in 73 s (λ = 1) / 116–148 s
# (λ = 0.5), hence its T = 100 (below).
DDPM_CONFIGS: dict[str, DDPMConfig] = {
    # The paper's MNIST model: 28×28, T = 500, 60k images (GPU).
    "paper": DDPMConfig(warm_start=False),
    # 8×8 digits (~1,500 training images), recognisable class-conditional digits
    # after one fit. T = 100 instead of 500: the samplers cost T network passes
    # (2T with guidance), and a loop samples n_s + n_eval images per generation,
    # which at T = 500 would cost several times the fit on a CPU. The β range is
    # the paper's scaled by 500/T (5·10⁻⁴ … 0.1), so ᾱ_T ≈ 0.006 as for the paper.
    "quick": DDPMConfig(
        image_shape=(8, 8), timesteps=100, beta_start=5e-4, beta_end=0.1, channels=(16, 32), blocks=1,
        embed_dim=64, epochs=40, batch_size=128, learning_rate=2e-3, ema_decay=0.99,
    ),
    # Every code path in seconds: a tiny net and a 50-step chain (β scaled by 500/50).
    "smoke": DDPMConfig(
        image_shape=(8, 8), timesteps=50, beta_start=1e-3, beta_end=0.2, channels=(8, 16), blocks=1,
        embed_dim=16, epochs=2, batch_size=64, learning_rate=2e-3, ema_decay=0.9,
    ),
}


# --------------------------------------------------------------------------- network


def _groups(width: int) -> int:
    """The largest of 8, 4, 2, 1 groups that divides ``width``."""
    return next(g for g in (8, 4, 2, 1) if width % g == 0)


_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_same(x: Array, kernel: Array) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_CONV_DIMS)


@jax.custom_vjp
def conv3x3(x: Array, kernel: Array) -> Array:
    """3×3 'SAME' stride-1 convolution, NHWC × HWIO -> NHWC, with a hand-written VJP.

    The maths is ``lax.conv_general_dilated``'s; only the backward pass
    differs. Inside a ``lax.scan``/``while`` body XLA:CPU runs the
    convolutions that autodiff emits for the gradients (input and kernel)
    10–40× slower than at top level (measured on 8×8 and 4×4 activations),
    which made a scanned training epoch slower than a Python loop of steps.
    Here ∂/∂x is an ordinary forward convolution of the cotangent with the
    flipped, transposed kernel, and ∂/∂kernel an einsum of the 3×3 patches
    with the cotangent; both run at full speed in a loop, on any backend.
    """
    return _conv_same(x, kernel)


def _conv3x3_fwd(x, kernel):
    return _conv_same(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, g):
    x, kernel = residuals
    h, w = x.shape[1], x.shape[2]
    # y = Σ_{ij} x[· + i − 1, · + j − 1] k_ij  =>  ∂x = g ⋆ (k flipped in space, in/out swapped).
    gx = _conv_same(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.stack([padded[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=3)
    gk = jnp.einsum("nhwpc,nhwo->pco", patches, g).reshape(kernel.shape)
    return gx, gk


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv3x3(nnx.Module):
    """A 3×3 'SAME' convolution layer (LeCun-normal kernel, or zeros) on :func:`conv3x3`."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, zero: bool = False):
        shape = (3, 3, c_in, c_out)
        init = nnx.initializers.zeros if zero else nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        return conv3x3(x, self.kernel[...]) + self.bias[...]


class GroupNorm(nnx.Module):
    """Group normalisation (Wu & He, 2018) of NHWC activations, two-pass (centred) variance.

    Same maths as ``nnx.GroupNorm``; the per-group sums are a matmul with the
    ``(C, G)`` group-indicator matrix, which XLA:CPU runs several times faster
    than the strided reductions of the reshaped tensor (on 8×8 images the norm
    otherwise costs as much as the convolutions).
    """

    def __init__(self, width: int, *, rngs: nnx.Rngs, epsilon: float = 1e-6):
        del rngs  # no random initialisation; kept for the nnx constructor convention
        self.groups = _groups(width)  # a Python int: static, not part of the state
        self.scale = nnx.Param(jnp.ones((width,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32))
        self.epsilon = epsilon

    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        ind = jnp.repeat(jnp.eye(self.groups, dtype=x.dtype), width // self.groups, axis=0)  # (C, G) constant
        count = x.shape[1] * x.shape[2] * (width // self.groups)
        mean = jnp.einsum("nhwc,cg->ng", x, ind) / count
        centred = x - (mean @ ind.T)[:, None, None, :]
        var = jnp.einsum("nhwc,cg->ng", centred * centred, ind) / count
        inv = (jax.lax.rsqrt(var + self.epsilon) @ ind.T)[:, None, None, :]
        return centred * inv * self.scale[...] + self.bias[...]


def timestep_embedding(t: Array, dim: int) -> Array:
    """Sinusoidal embedding ``(n, dim)`` of float times t (Vaswani et al., 2017; Ho et al., 2020)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResBlock(nnx.Module):
    """GroupNorm → SiLU → conv → GroupNorm, scaled and shifted by the embedding → SiLU → conv, + skip.

    The embedding enters as a scale and shift *after* the second norm (the
    "scale-shift norm" of Dhariwal & Nichol, 2021): added before it, as in Ho
    et al., a per-channel offset would be normalised away whenever a group
    holds a single channel, which is the case in the narrow nets of the small
    presets.
    """

    def __init__(self, c_in: int, c_out: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(c_in, rngs=rngs)
        self.conv1 = Conv3x3(c_in, c_out, rngs=rngs)
        self.embed = nnx.Linear(embed_dim, 2 * c_out, rngs=rngs)
        self.norm2 = GroupNorm(c_out, rngs=rngs)
        # Zero last conv: every block starts as its skip path (Ho et al.'s initialisation).
        self.conv2 = Conv3x3(c_out, c_out, zero=True, rngs=rngs)
        # A 1×1 convolution is a linear map of the channel axis.
        self.skip = nnx.Linear(c_in, c_out, rngs=rngs) if c_in != c_out else None

    def __call__(self, x: Array, emb: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        scale, shift = jnp.split(self.embed(emb)[:, None, None, :], 2, axis=-1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(jax.nn.silu(h))
        return h + (self.skip(x) if self.skip is not None else x)


class UNet(nnx.Module):
    """ε_θ(x_t, t, c): a small U-Net with one skip per resolution.

    Stem conv → per resolution ``blocks`` residual blocks, then 2×2 average
    pooling + conv down → middle block → per resolution (coarse to fine) a nearest ×2
    upsampling + conv, concatenation with that resolution's skip and
    ``blocks`` residual blocks → GroupNorm, SiLU, zero-initialised conv to one
    channel (so an untrained network predicts ε = 0). The embedding
    SiLU(MLP(sinusoid(t)) + Embed(c)) (C + 1 rows, the last is ∅) scales and
    shifts every block.
    """

    def __init__(self, config: DDPMConfig, *, rngs: nnx.Rngs):
        ch, e = config.channels, config.embed_dim
        self.embed_dim = e
        self.time1 = nnx.Linear(e, e, rngs=rngs)
        self.time2 = nnx.Linear(e, e, rngs=rngs)
        self.label = nnx.Embed(config.num_classes + 1, e, rngs=rngs)
        self.stem = Conv3x3(1, ch[0], rngs=rngs)
        self.down_blocks = nnx.List([
            nnx.List([ResBlock(c, c, e, rngs=rngs) for _ in range(config.blocks)]) for c in ch
        ])
        self.downs = nnx.List([Conv3x3(ch[i], ch[i + 1], rngs=rngs) for i in range(len(ch) - 1)])
        self.mid = ResBlock(ch[-1], ch[-1], e, rngs=rngs)
        self.ups = nnx.List([Conv3x3(ch[i + 1], ch[i], rngs=rngs) for i in range(len(ch) - 1)])
        self.up_blocks = nnx.List([
            nnx.List([ResBlock(2 * c if b == 0 else c, c, e, rngs=rngs) for b in range(config.blocks)])
            for c in ch
        ])
        self.out_norm = GroupNorm(ch[0], rngs=rngs)
        self.out = Conv3x3(ch[0], 1, zero=True, rngs=rngs)

    def __call__(self, x: Array, t: Array, y: Array) -> Array:
        """x ``(n, H, W)``, t ``(n,)`` float in [1, T], y ``(n,)`` int in [0, C] -> ε ``(n, H, W)``."""
        temb = self.time2(jax.nn.silu(self.time1(timestep_embedding(t, self.embed_dim))))
        emb = jax.nn.silu(temb + self.label(y))
        h = self.stem(x[..., None])
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downs):
                n, hh, ww, c = h.shape
                h = self.downs[level](h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4)))  # 2×2 avg pool
        h = self.mid(h, emb)
        for level in reversed(range(len(self.up_blocks))):
            if level < len(self.ups):
                h = self.ups[level](jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))  # nearest ×2
            h = jnp.concatenate([h, skips[level]], axis=-1)
            for block in self.up_blocks[level]:
                h = block(h, emb)
        return self.out(jax.nn.silu(self.out_norm(h)))[..., 0]


class DDPMParams(NamedTuple):
    """The parameters of one fitted DDPM (the ``Params`` of the loop interface).

    Attributes:
      params: ``nnx.State`` of the network's weights (what Adam trains).
      ema: ``nnx.State``, the exponential moving average the samplers use.
      opt_state: optax state of the clipped Adam chain (carried across
        generations when ``warm_start``; checkpointed with the weights).
      step: ``()`` int32 optimiser steps so far (drives the EMA warm-up).
    """

    params: nnx.State
    ema: nnx.State
    opt_state: optax.OptState
    step: Array


class DDPMInfo(NamedTuple):
    """Diagnostics of one :func:`ddpm` ``fit`` (the ``info`` of ``(params, info)``), each a ``()`` array.

    Attributes:
      loss: float32, the denoising loss (:func:`loss`) averaged over the
        minibatches of the last epoch.
      steps: int32, optimiser steps taken by this fit (``params.step``
        counts them over every fit since ``init``).
      nonfinite: bool, True if any epoch's mean loss was NaN or ±inf.
    """

    loss: Array
    steps: Array
    nonfinite: Array


@functools.cache
def _graphdef(config: DDPMConfig):
    """The (static, hashable) graph of the U-Net of this architecture."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0))))
    return graphdef


def ddpm_eps(config: DDPMConfig, weights: nnx.State) -> EpsFn:
    """The network ε_θ(x, t, y) with fixed ``weights`` (``params.ema`` or ``params.params``)."""
    graphdef = _graphdef(config)

    def eps_fn(x, t, y):
        return nnx.merge(graphdef, weights)(x, t, y)

    return eps_fn


def _optimizer(config: DDPMConfig) -> optax.GradientTransformation:
    """Clipped Adam *directions*; the step size (cosine within a fit) is applied by the caller."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.scale_by_adam())


def _learning_rate(config: DDPMConfig, step: Array, total: Array) -> Array:
    """Cosine decay from ``learning_rate`` to ``learning_rate·final_lr_fraction`` over the ``total`` steps of one fit."""
    lr, low = config.learning_rate, config.learning_rate * config.final_lr_fraction
    return low + 0.5 * (lr - low) * (1.0 + jnp.cos(jnp.pi * step / jnp.maximum(total, 1)))


def _check_images(config: DDPMConfig, data) -> tuple[Array, Array]:
    """Validate an ``Images`` training set; return (x₀ in model space, labels)."""
    x, y = getattr(data, "x", None), getattr(data, "y", None)
    if x is None or y is None:
        raise ParameterError("data", f"must be Images(x, y), got {type(data).__name__}")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    if x.ndim != 3 or tuple(x.shape[1:]) != config.image_shape:
        raise ParameterError("data", f"x must have shape (n, {config.image_shape[0]}, {config.image_shape[1]}), "
                                     f"got {tuple(x.shape)}")
    if y.shape != (x.shape[0],) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ParameterError("data", f"y must be ({x.shape[0]},) integers, got {y.shape} {y.dtype}")
    if x.shape[0] < 1:
        raise ParameterError("data", "must hold at least one image")
    lo, hi = (int(v) for v in jax.device_get((jnp.min(y), jnp.max(y))))  # one host read per fit
    if lo < -1 or hi >= config.num_classes:
        raise ParameterError("data", f"labels must be in [-1, {config.num_classes}), got [{lo}, {hi}]")
    return 2.0 * x - 1.0, y.astype(jnp.int32)


def _to_images(x0: Array) -> Array:
    """Model space [−1, 1] -> data space, clipped to [0, 1]."""
    return jnp.clip((x0 + 1.0) / 2.0, 0.0, 1.0)


def _lam(lam):
    """Validate λ when it is a concrete number (a traced λ is the caller's business)."""
    if isinstance(lam, numbers.Real) or (isinstance(lam, (np.ndarray, np.generic)) and np.ndim(lam) == 0):
        return check_lam(float(lam))
    return lam


def _canonical(config: DDPMConfig) -> DDPMConfig:
    """``config`` with the fields that do not enter a compiled function reset.

    ``epochs`` (each epoch receives it as a traced value for the
    learning-rate schedule), ``warm_start`` and ``sample_chunk`` (host-side choices) do not
    change what :func:`_compiled` compiles, so configurations differing only
    in them share one set of executables.
    """
    return dataclasses.replace(config, epochs=1, warm_start=True, sample_chunk=1)


@functools.lru_cache(maxsize=16)
def _compiled(config: DDPMConfig):
    """The jitted ``init``, ``train_epoch`` and ``sample_chunk`` of a (canonical) configuration."""
    tx = _optimizer(config)
    sched = schedule(config)
    null = config.num_classes

    @jax.jit  # building the modules eagerly dispatches many tiny ops; compiled it is one call
    def init(key: Array) -> DDPMParams:
        # The initialisers draw from an "unsafe_rbg" key seeded by ``key``: one
        # XLA RngBitGenerator per weight instead of an inlined threefry hash,
        # which cuts the compilation of ``init`` several-fold on CPU. (Its
        # streams are backend-specific; only the initial weights use it.)
        rbg = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")
        _, params = nnx.split(UNet(config, rngs=nnx.Rngs(params=rbg)))
        return DDPMParams(params, params, tx.init(params), jnp.zeros((), jnp.int32))

    def batch_loss(params, key, x0, y):
        return loss(key, ddpm_eps(config, params), sched, x0, y, null_label=null,
                    label_dropout=config.label_dropout)

    @jax.jit
    def train_epoch(key, state: DDPMParams, x0: Array, y: Array, epoch: Array,
                    epochs: Array) -> tuple[DDPMParams, Array]:
        n = x0.shape[0]
        batch = min(config.batch_size, n)
        n_batches = n // batch
        k_perm, k_steps = jax.random.split(key)
        order = jax.random.permutation(k_perm, n)[: n_batches * batch].reshape(n_batches, batch)
        steps = jnp.arange(n_batches)

        def step(carry, inputs):
            params, ema, opt_state, count = carry
            idx, s = inputs
            value, grads = jax.value_and_grad(batch_loss)(params, jax.random.fold_in(k_steps, s),
                                                          x0[idx], y[idx])
            direction, opt_state = tx.update(grads, opt_state, params)
            lr = _learning_rate(config, epoch * n_batches + s, epochs * n_batches)
            params = jax.tree.map(lambda p, d: p - lr * d, params, direction)
            decay = jnp.minimum(config.ema_decay, (1.0 + count) / (10.0 + count))
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
            return (params, ema, opt_state, count + 1), value

        carry = (state.params, state.ema, state.opt_state, state.step)
        (params, ema, opt_state, count), losses = jax.lax.scan(step, carry, (order, steps))
        return DDPMParams(params, ema, opt_state, count), jnp.mean(losses)

    @jax.jit
    def sample_chunk(keys: Array, weights: nnx.State, y: Array, lam: Array) -> Array:
        w = 1.0 / jnp.asarray(lam, jnp.float32) - 1.0
        net = ddpm_eps(config, weights)

        def eps_fn(x, t):
            return guided_eps(net, x, t, y, w, null_label=null)

        return _to_images(ancestral_sample(keys, eps_fn, sched, config.image_shape))

    return init, train_epoch, sample_chunk


@functools.lru_cache(maxsize=16)  # one set of compiled functions per (config, progress), shared by runs
def ddpm(config: DDPMConfig = DDPMConfig(), *, progress: bool = False) -> GenerativeModel:
    """A conditional DDPM as a :class:`~madjax.base.GenerativeModel` record.

    Args:
      config: schedule, network and training.
      progress: show a tqdm bar over the epochs of each ``fit`` and the
        chunks of each ``sample``.

    Returns:
      ``GenerativeModel(init, fit, sample)`` with

      * ``init(key) -> DDPMParams``: a fresh U-Net (ε_θ ≡ 0), EMA = weights;
      * ``fit(key, params, data: Images) -> (DDPMParams, DDPMInfo)``:
        ``config.epochs`` epochs of clipped Adam on :func:`loss` with label
        dropout, each epoch one jitted ``lax.scan`` over minibatches;
        warm-started from ``params`` unless ``config.warm_start`` is False;
        :class:`DDPMInfo` holds the last epoch's mean loss, the number of
        optimiser steps and a non-finite flag (device scalars: no host sync);
      * ``sample(key, params, n, lam) -> Images``: n images with balanced
        labels (:func:`balanced_labels`) from the ancestral sampler with
        guidance w = 1/λ − 1 and the EMA weights; x ``(n, H, W)`` float32 in
        [0, 1], y ``(n,)`` int32. With ``k_labels, k_noise = split(key)``,
        the labels are ``balanced_labels(k_labels, n, C)`` and image i is
        :func:`ancestral_sample` with key ``fold_in(k_noise, i)``, whatever
        the chunking. n is static (it sets shapes), λ traced: one
        compilation per chunk size serves every λ.
    """
    init, train_epoch, sample_chunk = _compiled(_canonical(config))

    def fit(key: Array, params: DDPMParams, data: Images) -> tuple[DDPMParams, DDPMInfo]:
        x0, y = _check_images(config, data)
        k_init, k_train = jax.random.split(key)
        if not config.warm_start:
            params = init(k_init)
        start, nonfinite = params.step, jnp.zeros((), bool)
        with progress_bar(total=config.epochs, desc="epoch", enabled=progress, unit="epoch", nested=True) as bar:
            for epoch in range(config.epochs):
                params, value = train_epoch(jax.random.fold_in(k_train, epoch), params, x0, y, epoch, config.epochs)
                nonfinite = nonfinite | ~jnp.isfinite(value)
                bar.update(1)
                if not bar.disable:  # the host sync only when someone is watching
                    bar.set_postfix(loss=f"{float(value):.2f}")
        return params, DDPMInfo(value, params.step - start, nonfinite)

    def sample(key: Array, params: DDPMParams, n: int, lam) -> Images:
        n = check_int("n", n, minimum=1)
        lam = _lam(lam)
        k_labels, k_noise = jax.random.split(key)
        y = balanced_labels(k_labels, n, config.num_classes)
        keys = sample_keys(k_noise, n)
        x = _chunked(sample_chunk, config.sample_chunk, keys, y, params.ema, lam, progress)
        return Images(x, y)

    return GenerativeModel(init=init, fit=fit, sample=sample)


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
