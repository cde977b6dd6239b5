"""Training the DDPM: the ε-prediction loss, the optimiser and the compiled training epoch.

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
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from madjax.deep.ddpm.config import DDPMConfig
from madjax.deep.ddpm.network import EpsFn, UNet, ddpm_eps
from madjax.deep.ddpm.schedules import Schedule, q_sample, schedule
from madjax.validation import ParameterError

Array = jax.Array


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


@functools.lru_cache(maxsize=16)
def _compiled_training(config: DDPMConfig):
    """The jitted ``init`` and ``train_epoch`` of a (canonical) configuration."""
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

    return init, train_epoch
