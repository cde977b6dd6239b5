"""GLOW normalizing flow for low-dimensional points, in Flax NNX.

A flow is an invertible map f: x ↦ z from data to a standard normal latent,
trained by exact maximum likelihood (Dinh et al., 2016; Kingma & Dhariwal,
2018):

.. math::

    \\log q(x) = \\log \\mathcal N\\big(f(x); 0, I\\big)
                 + \\log\\left|\\det \\frac{\\partial f}{\\partial x}\\right|.

f is a stack of ``couplings`` GLOW steps, each

1. **ActNorm** z = (x − b)·e^{s}, per dimension, with data-dependent
   initialisation (b, s set so the first training batch leaves it with zero
   mean and unit variance); log-det Σ s.
2. **Invertible 1×1 mixing** z = W x with the LU parametrisation
   W = P L (U + diag(sign·e^{log|s|})) of Kingma & Dhariwal (2018, §3.2): P a
   fixed permutation, L unit lower-triangular, U strictly upper-triangular;
   log-det Σ log|s| costs O(d). For points "1×1" is just a d×d matrix
   (2×2 on Rosenbrock), initialised at a random rotation.
3. **Affine coupling** on a split x = (x_a, x_b):
   z_a = x_a, z_b = x_b·e^{log s} + t with (log s, t) = NN(x_a). The scale is
   squashed, log s = tanh(·) ∈ (−1, 1), so one layer can never blow a
   sample up or collapse it (the "stable scale"); the network's last layer is
   zero-initialised so every coupling starts as the identity. Consecutive
   couplings alternate which half is conditioned on, so both coordinates are
   transformed even before the mixing has learnt anything.

Sampling bias (DESIGN §1): x = f⁻¹(√λ·ε), ε ~ N(0, I), i.e. z ~ N(0, λI).

The functional record (:func:`glow`) follows ``madjax.base.GenerativeModel``:
``Params`` is a :class:`GlowParams` of ``nnx.State`` trees plus the optax
state; training runs ``jax.jit`` on ``(graphdef, state)`` and merges inside
(the NNX performance guide's split → jit → merge pattern).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from madjax._progress import progress_bar
from madjax.base import GenerativeModel
from madjax.validation import ParameterError, check_float, check_int

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class GlowConfig:
    """Architecture and training schedule of a GLOW flow (the paper's defaults).

    Attributes:
      dim: data dimension d (2 for Rosenbrock).
      couplings: number of GLOW steps (actnorm + mixing + coupling); paper: 8.
      hidden: width of the two hidden layers of each coupling network; paper: 64.
      epochs: passes over the training set per generation; paper: 20.
      batch_size: minibatch size; paper: 256. Each epoch uses ⌊n/batch⌋ full
        batches of a fresh permutation (the remainder differs every epoch).
      learning_rate: Adam step size at the start of each generation's fit.
      final_lr_fraction: the step size decays (cosine) to this fraction of
        ``learning_rate`` by the end of the fit, so each generation ends
        converged rather than jittering at the constant-step noise floor.
      grad_clip: global-norm gradient clipping (guards the first steps of a
        warm-started generation trained on outliers).
      init_points: points used for ActNorm's data-dependent initialisation.
    """

    dim: int = 2
    couplings: int = 8
    hidden: int = 64
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.01
    grad_clip: float = 10.0
    init_points: int = 2048

    def __post_init__(self):
        for name in ("dim", "couplings", "hidden", "epochs", "batch_size", "init_points"):
            check_int(name, getattr(self, name), minimum=2 if name == "dim" else 1)
        for name in ("learning_rate", "final_lr_fraction", "grad_clip"):
            if check_float(name, getattr(self, name)) <= 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)}")


class Buffer(nnx.Variable):
    """A non-trainable variable (fixed permutation, signs, initialisation flag)."""


class ActNorm(nnx.Module):
    """Per-dimension affine normalisation z = (x − loc)·exp(log_scale)."""

    def __init__(self, dim: int):
        self.loc = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.log_scale = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def initialize(self, x: Array) -> None:
        """Data-dependent init: zero mean, unit variance on ``x`` ``(n, d)``."""
        self.loc[...] = jnp.mean(x, axis=0)
        self.log_scale[...] = -jnp.log(jnp.std(x, axis=0) + 1e-6)

    def forward(self, x: Array) -> tuple[Array, Array]:
        return (x - self.loc[...]) * jnp.exp(self.log_scale[...]), jnp.sum(self.log_scale[...])

    def inverse(self, z: Array) -> Array:
        return z * jnp.exp(-self.log_scale[...]) + self.loc[...]


class InvertibleLinear(nnx.Module):
    """LU-parametrised invertible d×d mixing (GLOW's 1×1 convolution for points)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        # Random rotation, then its LU factors (Kingma & Dhariwal, 2018, §3.2).
        q, _ = jnp.linalg.qr(jax.random.normal(rngs.params(), (dim, dim), jnp.float32))
        p, lower, upper = jax.scipy.linalg.lu(q)
        s = jnp.diag(upper)
        self.perm = Buffer(p)
        self.sign_s = Buffer(jnp.sign(s))
        self.lower = nnx.Param(jnp.tril(lower, -1))
        self.upper = nnx.Param(jnp.triu(upper, 1))
        self.log_abs_s = nnx.Param(jnp.log(jnp.abs(s)))

    def _factors(self) -> tuple[Array, Array]:
        dim = self.log_abs_s.shape[0]
        eye = jnp.eye(dim, dtype=jnp.float32)
        # Masking here (not only at init) keeps gradients off the unused halves.
        lower = jnp.tril(self.lower[...], -1) + eye
        upper = jnp.triu(self.upper[...], 1) + jnp.diag(self.sign_s[...] * jnp.exp(self.log_abs_s[...]))
        return lower, upper

    def forward(self, x: Array) -> tuple[Array, Array]:
        lower, upper = self._factors()
        w = self.perm[...] @ lower @ upper
        return x @ w.T, jnp.sum(self.log_abs_s[...])

    def inverse(self, z: Array) -> Array:
        # x = U⁻¹ L⁻¹ Pᵀ z by two triangular solves (no explicit inverse).
        lower, upper = self._factors()
        y = jax.scipy.linalg.solve_triangular(lower, self.perm[...].T @ z.T, lower=True, unit_diagonal=True)
        return jax.scipy.linalg.solve_triangular(upper, y, lower=False).T


class AffineCoupling(nnx.Module):
    """z_a = x_a, z_b = x_b·exp(tanh h) + t, with (h, t) = NN(x_a)."""

    def __init__(self, dim: int, hidden: int, parity: int, *, rngs: nnx.Rngs):
        half = dim // 2
        first, second = tuple(range(half)), tuple(range(half, dim))
        self.cond_idx, self.trans_idx = (first, second) if parity == 0 else (second, first)
        n_out = len(self.trans_idx)
        self.hidden1 = nnx.Linear(len(self.cond_idx), hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        # Zero output layer: each coupling starts as the identity map (GLOW).
        self.out = nnx.Linear(hidden, 2 * n_out, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def _shift_log_scale(self, x_a: Array) -> tuple[Array, Array]:
        h = jax.nn.gelu(self.hidden1(x_a))
        h = jax.nn.gelu(self.hidden2(h))
        raw_scale, shift = jnp.split(self.out(h), 2, axis=-1)
        return shift, jnp.tanh(raw_scale)

    def forward(self, x: Array) -> tuple[Array, Array]:
        x_a, x_b = x[:, self.cond_idx], x[:, self.trans_idx]
        shift, log_s = self._shift_log_scale(x_a)
        z = x.at[:, self.trans_idx].set(x_b * jnp.exp(log_s) + shift)
        return z, jnp.sum(log_s, axis=-1)

    def inverse(self, z: Array) -> Array:
        z_a, z_b = z[:, self.cond_idx], z[:, self.trans_idx]
        shift, log_s = self._shift_log_scale(z_a)
        return z.at[:, self.trans_idx].set((z_b - shift) * jnp.exp(-log_s))


class Glow(nnx.Module):
    """A stack of GLOW steps, data → latent; see the module docstring."""

    def __init__(self, config: GlowConfig, *, rngs: nnx.Rngs):
        self.norms = nnx.List([ActNorm(config.dim) for _ in range(config.couplings)])
        self.mixes = nnx.List([InvertibleLinear(config.dim, rngs=rngs) for _ in range(config.couplings)])
        self.couplings = nnx.List(
            [AffineCoupling(config.dim, config.hidden, k % 2, rngs=rngs) for k in range(config.couplings)]
        )
        self.initialized = Buffer(jnp.array(False))

    def forward(self, x: Array) -> tuple[Array, Array]:
        """x ``(n, d)`` -> (z ``(n, d)``, log|det ∂z/∂x| ``(n,)``)."""
        logdet = jnp.zeros(x.shape[:1], x.dtype)
        for norm, mix, coupling in zip(self.norms, self.mixes, self.couplings):
            x, ld_norm = norm.forward(x)
            x, ld_mix = mix.forward(x)
            x, ld_coupling = coupling.forward(x)
            logdet = logdet + ld_norm + ld_mix + ld_coupling
        return x, logdet

    def inverse(self, z: Array) -> Array:
        """z ``(n, d)`` -> x ``(n, d)``, the exact inverse of :meth:`forward`."""
        for norm, mix, coupling in reversed(list(zip(self.norms, self.mixes, self.couplings))):
            z = coupling.inverse(z)
            z = mix.inverse(z)
            z = norm.inverse(z)
        return z

    def log_prob(self, x: Array) -> Array:
        """Exact log q(x) ``(n,)`` under the flow."""
        z, logdet = self.forward(x)
        return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * _LOG_2PI + logdet

    def initialize(self, x: Array) -> None:
        """ActNorm data-dependent init: pass ``x`` through, normalising each ActNorm's input."""
        for norm, mix, coupling in zip(self.norms, self.mixes, self.couplings):
            norm.initialize(x)
            x, _ = norm.forward(x)
            x, _ = mix.forward(x)
            x, _ = coupling.forward(x)
        self.initialized[...] = jnp.array(True)


class GlowParams(NamedTuple):
    """The parameters of one fitted flow (the ``Params`` of the loop interface).

    Attributes:
      params: ``nnx.State`` of the trainable ``nnx.Param`` variables.
      buffers: ``nnx.State`` of the fixed variables (permutations, signs,
        the ActNorm-initialised flag).
      opt_state: optax state of the Adam chain over ``params``; carried from
        one generation to the next because each generation warm-starts from
        its predecessor (and checkpointed with it).
    """

    params: nnx.State
    buffers: nnx.State
    opt_state: optax.OptState


class GlowInfo(NamedTuple):
    """Diagnostics of one :func:`glow` ``fit`` (the ``info`` of ``(params, info)``), each a ``()`` array.

    Attributes:
      loss: float32, mean negative log-likelihood (nats per point) over the
        minibatches of the last epoch.
      steps: int32, optimiser steps taken by this fit (epochs × minibatches).
      nonfinite: bool, True if any epoch's mean loss was NaN or ±inf.
    """

    loss: Array
    steps: Array
    nonfinite: Array


def _optimizer(config: GlowConfig) -> optax.GradientTransformation:
    """Clipped Adam *directions*; the step size is applied by the caller (see below)."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.scale_by_adam())


def _learning_rate(config: GlowConfig, step: Array, total: int) -> Array:
    """Cosine decay from ``learning_rate`` to ``learning_rate·final_lr_fraction`` within one fit.

    The schedule restarts at every generation (every ``fit``) while Adam's
    moment estimates carry over from the previous generation, which is why
    the step size is applied outside the optax chain instead of with a
    schedule keyed on optax's global step count.
    """
    lr, low = config.learning_rate, config.learning_rate * config.final_lr_fraction
    return low + 0.5 * (lr - low) * (1.0 + jnp.cos(jnp.pi * step / max(total, 1)))


@functools.lru_cache(maxsize=16)  # one set of compiled functions per (config, progress), shared by runs
def glow(config: GlowConfig = GlowConfig(), *, progress: bool = False) -> GenerativeModel:
    """A GLOW flow as a :class:`~madjax.base.GenerativeModel` record.

    Args:
      config: architecture and training schedule.
      progress: show a tqdm bar over the epochs of each ``fit``.

    Returns:
      ``GenerativeModel(init, fit, sample)`` with

      * ``init(key) -> GlowParams``: random rotation mixings, identity couplings,
        ActNorm not yet initialised;
      * ``fit(key, params, data) -> (GlowParams, GlowInfo)``: ``config.epochs``
        epochs of Adam on the mean negative log-likelihood of ``data``
        ``(n, d)`` float32, warm-started from ``params`` (ActNorm is
        initialised on the first ``init_points`` points of the first fit);
        :class:`GlowInfo` holds the last epoch's mean loss, the number of
        optimiser steps and a non-finite flag (device scalars: no host sync);
      * ``sample(key, params, n, lam) -> (n, d)`` float32: f⁻¹(√λ ε).

      The record also works with :func:`glow_log_prob` for likelihoods.
    """
    graphdef = _graphdef(config)
    tx = _optimizer(config)

    @jax.jit  # building the modules eagerly dispatches dozens of tiny ops; compiled it is one call
    def init(key: Array) -> GlowParams:
        _, params, buffers = nnx.split(Glow(config, rngs=nnx.Rngs(params=key)), nnx.Param, ...)
        return GlowParams(params, buffers, tx.init(params))

    def loss_fn(params, buffers, x):
        return -jnp.mean(nnx.merge(graphdef, params, buffers).log_prob(x))

    @jax.jit
    def train_epoch(key, state: GlowParams, data: Array, epoch: Array) -> tuple[GlowParams, Array]:
        n = data.shape[0]
        batch = min(config.batch_size, n)
        n_batches = n // batch
        order = jax.random.permutation(key, n)[: n_batches * batch].reshape(n_batches, batch)
        steps = epoch * n_batches + jnp.arange(n_batches)

        def step(carry, inputs):
            params, opt_state = carry
            idx, s = inputs
            loss, grads = jax.value_and_grad(loss_fn)(params, state.buffers, data[idx])
            direction, opt_state = tx.update(grads, opt_state, params)
            lr = _learning_rate(config, s, config.epochs * n_batches)
            params = jax.tree.map(lambda p, d: p - lr * d, params, direction)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (state.params, state.opt_state), (order, steps))
        return GlowParams(params, state.buffers, opt_state), jnp.mean(losses)

    @jax.jit
    def data_init(state: GlowParams, data: Array) -> GlowParams:
        model = nnx.merge(graphdef, state.params, state.buffers)
        model.initialize(data[: config.init_points])
        _, params, buffers = nnx.split(model, nnx.Param, ...)
        return GlowParams(params, buffers, state.opt_state)

    def fit(key: Array, params: GlowParams, data: Array) -> tuple[GlowParams, GlowInfo]:
        data = jnp.asarray(data, jnp.float32)
        if data.ndim != 2 or data.shape[1] != config.dim:
            raise ParameterError("data", f"must have shape (n, {config.dim}), got {data.shape}")
        # One host read of a flag per generation: the data init runs on the first fit only.
        if not bool(params.buffers["initialized"][...]):
            params = data_init(params, data)
        nonfinite = jnp.zeros((), bool)
        with progress_bar(total=config.epochs, desc="epoch", enabled=progress, unit="epoch", nested=True) as bar:
            for epoch in range(config.epochs):
                params, loss = train_epoch(jax.random.fold_in(key, epoch), params, data, epoch)
                nonfinite = nonfinite | ~jnp.isfinite(loss)
                bar.update(1)
                if not bar.disable:  # the host sync only when someone is watching
                    bar.set_postfix(nll=f"{float(loss):.3f}")
        steps = config.epochs * (data.shape[0] // min(config.batch_size, data.shape[0]))  # as train_epoch
        return params, GlowInfo(loss, jnp.asarray(steps, jnp.int32), nonfinite)

    @functools.partial(jax.jit, static_argnums=2)
    def _sample(key, params, n, lam):
        eps = jax.random.normal(key, (n, config.dim), jnp.float32)
        model = nnx.merge(graphdef, params.params, params.buffers)
        return model.inverse(jnp.sqrt(jnp.asarray(lam, jnp.float32)) * eps)

    def sample(key: Array, params: GlowParams, n: int, lam) -> Array:
        # n sets a shape, so it is static; λ is traced (one compile serves every λ).
        return _sample(key, params, int(n), lam)

    return GenerativeModel(init=init, fit=fit, sample=sample)


def glow_log_prob(config: GlowConfig, params: GlowParams, x: Array) -> Array:
    """Exact log q(x) ``(n,)`` of the flow ``params`` at points ``x`` ``(n, d)``."""
    return _log_prob(_graphdef(config), params.params, params.buffers, jnp.asarray(x, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _log_prob(graphdef, params, buffers, x):
    return nnx.merge(graphdef, params, buffers).log_prob(x)


@functools.lru_cache(maxsize=None)
def _graphdef(config: GlowConfig):
    """The (static, hashable) graph of a flow with this architecture."""
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: Glow(config, rngs=nnx.Rngs(0))), nnx.Param, ...)
    return graphdef


def glow_transform(config: GlowConfig, params: GlowParams, x: Array) -> tuple[Array, Array]:
    """f(x) and log|det ∂f/∂x| (eager; for tests and inspection)."""
    return nnx.merge(_graphdef(config), params.params, params.buffers).forward(jnp.asarray(x, jnp.float32))


def glow_inverse(config: GlowConfig, params: GlowParams, z: Array) -> Array:
    """f⁻¹(z) (eager; for tests and inspection)."""
    return nnx.merge(_graphdef(config), params.params, params.buffers).inverse(jnp.asarray(z, jnp.float32))
