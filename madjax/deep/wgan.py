"""Wasserstein GAN with gradient penalty (WGAN-GP) for images, in Flax NNX.

A generator G: z ↦ x maps latents z ∈ ℝ^m to images and a critic
D: x ↦ ℝ scores them. WGAN-GP (Gulrajani et al., 2017, Alg. 1) trains D to
estimate the Kantorovich–Rubinstein dual of the Wasserstein-1 distance,

.. math::

    W_1(P_r, P_g) = \\sup_{\\|D\\|_L \\le 1} \\mathbb E_{x\\sim P_r} D(x)
                    - \\mathbb E_{z} D(G(z)),

enforcing the 1-Lipschitz constraint softly with a penalty on the gradient
norm at random interpolates between real and generated images. On a batch
of B real images x_i and fakes x̃_i = G(z_i) the losses are

.. math::

    L_D &= \\frac1B \\sum_i D(\\tilde x_i) - \\frac1B \\sum_i D(x_i)
          + \\lambda_{gp} \\frac1B \\sum_i \\big(\\|\\nabla_{\\hat x} D(\\hat x_i)\\|_2 - 1\\big)^2,
          \\qquad \\hat x_i = \\epsilon_i x_i + (1 - \\epsilon_i)\\tilde x_i,
          \\ \\epsilon_i \\sim U[0, 1] \\text{ per sample},

    L_G &= -\\frac1B \\sum_i D(G(z_i)),

with λ_gp = 10 and ``n_critic`` = 5 critic steps (each on a fresh real batch,
fresh latents and fresh ε) per generator step, both trained with
Adam(lr = 10⁻⁴, β₁ = 0.5, β₂ = 0.9) -- the settings of the paper's MNIST
experiment (Gulrajani et al., 2017, App. and their ``gan_mnist.py``).
``-L_D`` without the penalty, mean D(x) − mean D(x̃), is the critic's
estimate of W₁ (reported while training).

The norm is taken per sample, over all pixels, so the penalty needs a critic
that scores each image independently: **no batch normalisation in the
critic** (Gulrajani et al., 2017, §4); the per-sample gradients are then the
gradient of Σ_i D(x̂_i) with respect to the batch x̂.

Architectures (small DCGAN-style, NHWC inside, images ``(n, H, W)`` outside),
for ``widths = (c_0, …, c_k)`` and base resolution (H/2^k, W/2^k):

* generator: Linear z → (H/2^k, W/2^k, c_0), ReLU; for j = 1…k a
  nearest-neighbour ×2 upsampling and a 3×3 convolution to c_j channels,
  ReLU (the "resize-convolution" of Odena et al., 2016, which avoids the
  checkerboard artefacts of transposed convolutions); a 3×3 convolution to
  one channel and a sigmoid, so images lie in [0, 1] like the data. No batch
  norm (as in the WGAN-GP MNIST generator).
* critic: for j = k…1 a stride-2 4×4 convolution to c_j channels
  (halving the resolution), LeakyReLU(0.2); a 3×3 convolution to c_0
  channels at the base resolution, LeakyReLU(0.2); Linear → 1.

``widths = (256, 128, 64)`` on 28×28 MNIST (base 7×7) is the size of the
WGAN-GP MNIST networks (DIM = 64); ``(32, 16)`` on the 8×8 digits (base 4×4).
Convolutions are 'SAME'-padded (:func:`conv2d`).

Sampling bias (DESIGN §1): x = G(√λ·ε), ε ~ N(0, I_m), i.e. latents with
variance λ; λ = 1 is the unbiased sampler. The paper's MNIST WGAN is
unconditional, so samples carry the label −1.

**Warm start.** The paper trains each generation from scratch (§2). ``fit``
by default starts from the parameters and Adam moments it is given -- in a
loop, the previous generation's -- because a GAN's adversarial optimisation
from a random start needs far more generator steps to reach recognisable
digits than continuing from a model that already draws digits does, and
that is what lets a quick preset run many generations on a CPU. The model
still learns each generation's training set only (G^t is trained on D^t
alone), so the loop's self-consumption is unchanged; what warm starting
changes is only the optimiser's starting point (a smaller step budget per
generation then also means less drift per generation). ``warm_start=False``
re-initialises networks and optimisers from the fit's key, as in the paper.

The functional record (:func:`wgan`) follows ``madjax.base.GenerativeModel``:
``Params`` is a :class:`WGANParams` of ``nnx.State`` trees and optax states;
training runs one ``jax.jit``-compiled ``lax.scan`` per epoch on the split
states (the NNX performance guide's split → jit → merge pattern).

Reference: I. Gulrajani, F. Ahmed, M. Arjovsky, V. Dumoulin, A. Courville,
"Improved Training of Wasserstein GANs", NeurIPS 2017.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from itertools import pairwise
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from madjax._progress import progress_bar
from madjax.base import GenerativeModel
from madjax.data import Images
from madjax.validation import ParameterError, check_float, check_int

Array = jax.Array
CriticFn = Callable[[Array], Array]  # images (B, ...) -> scores (B,)

_LEAK = 0.2  # LeakyReLU slope of the critic (DCGAN / WGAN-GP)


@dataclasses.dataclass(frozen=True)
class WGANConfig:
    """Architecture and training schedule of a WGAN-GP.

    Attributes:
      image_shape: (H, W) of the images; both must be divisible by 2^k,
        k = ``len(widths) − 1`` (the number of up/down-sampling stages).
      latent_dim: m, the dimension of the latent z ~ N(0, I_m).
      widths: channels ``(c_0, …, c_k)`` from the coarsest resolution to the
        finest (module docstring).
      epochs: passes over the training set per fit. One epoch is a fresh
        permutation of the n images cut into ⌊n / (B·n_critic)⌋ generator
        steps, each with ``n_critic`` disjoint real batches of B images, so
        the critic sees every image (but a remainder) once per epoch.
      batch_size: B; lowered to ⌊n / n_critic⌋ when the training set is
        smaller than one generator step's B·n_critic images.
      n_critic: critic steps per generator step (paper: 5).
      gp_weight: λ_gp, the weight of the gradient penalty (paper: 10).
      generator_lr, critic_lr: Adam step sizes (paper: 10⁻⁴ both).
      beta1, beta2: Adam's moment decay rates (paper: 0.5, 0.9).
      warm_start: start each fit from the given parameters (default; module
        docstring) rather than from fresh ones drawn from the fit's key.
      sample_batch: latents pushed through the generator at once when
        sampling (bounds memory for large n).

    Raises:
      ParameterError: naming the offending field; checked in ``__post_init__``.
    """

    image_shape: tuple = (28, 28)
    latent_dim: int = 128
    widths: tuple = (256, 128, 64)
    epochs: int = 50
    batch_size: int = 50
    n_critic: int = 5
    gp_weight: float = 10.0
    generator_lr: float = 1e-4
    critic_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    warm_start: bool = True
    sample_batch: int = 1024

    def __post_init__(self):
        for name in ("image_shape", "widths"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ParameterError(name, f"must be a sequence of integers, got {value!r}")
            # Lists (say, read back from JSON) become tuples: the config stays hashable.
            object.__setattr__(self, name, tuple(check_int(name, v, minimum=1) for v in value))
        if len(self.image_shape) != 2:
            raise ParameterError("image_shape", f"must be (H, W), got {self.image_shape}")
        if not self.widths:
            raise ParameterError("widths", "must hold at least one channel count")
        factor = 2 ** (len(self.widths) - 1)
        if any(s % factor for s in self.image_shape):
            raise ParameterError(
                "image_shape",
                f"{self.image_shape} must be divisible by 2^{len(self.widths) - 1} = {factor} "
                f"({len(self.widths) - 1} resampling stages from widths={self.widths})",
            )
        for name in ("latent_dim", "epochs", "batch_size", "n_critic", "sample_batch"):
            check_int(name, getattr(self, name), minimum=1)
        if check_float("gp_weight", self.gp_weight) < 0:
            raise ParameterError("gp_weight", f"must be >= 0, got {self.gp_weight}")
        for name in ("generator_lr", "critic_lr"):
            if check_float(name, getattr(self, name)) <= 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= check_float(name, getattr(self, name)) < 1.0:
                raise ParameterError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not isinstance(self.warm_start, bool):
            raise ParameterError("warm_start", f"must be True or False, got {self.warm_start!r}")

    @property
    def base_shape(self) -> tuple[int, int]:
        """The coarsest resolution (H/2^k, W/2^k)."""
        factor = 2 ** (len(self.widths) - 1)
        return self.image_shape[0] // factor, self.image_shape[1] // factor


# Presets (consumed by the runner and figures).
#
# * paper: MNIST 28×28, the WGAN-GP MNIST networks and optimiser (DIM = 64,
#   batch 50, Adam 10⁻⁴ / 0.5 / 0.9, n_critic 5, λ_gp 10); 50 epochs of the
#   60k training images are 50·⌊60000/250⌋ = 12,000 generator steps per
#   generation, trained from scratch as in the paper (GPU).
# * quick: the 8×8 digits (1,501 training images), widths (32, 16) and a step
#   size of 10⁻³ that networks this small tolerate: 100 epochs are 900
#   generator steps on the full split (600 on 1,000 images). Measured on a
#   2-core CPU shared with other jobs (load average ~7): the first fit 48 s
#   (10 s of it compiling), warm-started fits 25–35 s; G¹ scores LeNet-FID
#   ≈ 4, precision ≈ 0.84, recall ≈ 0.97 against the test split (real train
#   vs test: 0.9 / 0.98 / 0.94) and draws recognisable digits.
# * smoke: the 8×8 digits with tiny networks and two epochs: every code path,
#   ~7 s for the first fit (nearly all compilation), 0.2 s after.
WGAN_CONFIGS = {
    "paper": WGANConfig(image_shape=(28, 28), latent_dim=128, widths=(256, 128, 64), epochs=50, batch_size=50,
                        warm_start=False),
    "quick": WGANConfig(image_shape=(8, 8), latent_dim=32, widths=(32, 16), epochs=100, batch_size=32,
                        generator_lr=1e-3, critic_lr=1e-3),
    "smoke": WGANConfig(image_shape=(8, 8), latent_dim=8, widths=(8, 4), epochs=2, batch_size=16),
}


# ---------------------------------------------------------------------------------------------
# The losses (pure functions of a critic function; what the tests check in closed form).


class CriticStats(NamedTuple):
    """Diagnostics of one critic loss evaluation.

    Attributes:
      wasserstein: ``()`` mean D(x) − mean D(x̃), the critic's estimate of W₁.
      penalty: ``()`` the gradient penalty (before the weight λ_gp).
    """

    wasserstein: Array
    penalty: Array


def gradient_penalty(critic_fn: CriticFn, x_real: Array, x_fake: Array, eps: Array) -> Array:
    """Mean of (‖∇_x̂ D(x̂)‖₂ − 1)² at x̂ = ε·x_real + (1 − ε)·x_fake.

    Args:
      critic_fn: D, images ``(B, ...)`` -> scores ``(B,)``; it must score each
        image independently of the others (no batch norm), so that the
        gradient of Σ_i D(x̂_i) with respect to the batch holds the
        per-sample gradients ∇D(x̂_i).
      x_real: ``(B, ...)`` real images.
      x_fake: ``(B, ...)`` generated images.
      eps: ``(B,)`` interpolation weights, ε_i ~ U[0, 1] in training.

    Returns:
      ``()`` float: (1/B) Σ_i (‖∇D(x̂_i)‖₂ − 1)², the norm over every
      non-batch axis. A linear critic D(x) = ⟨a, x⟩ gives (‖a‖ − 1)²; a
      constant critic gives 1.
    """
    eps = eps.reshape(eps.shape + (1,) * (x_real.ndim - 1))
    x_hat = eps * x_real + (1.0 - eps) * x_fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    sq = jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1)
    # Double where: √ has an infinite derivative at 0 (a flat critic), which
    # would turn the parameter gradient into NaN.
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return jnp.mean((norm - 1.0) ** 2)


def critic_loss(
    critic_fn: CriticFn, x_real: Array, x_fake: Array, eps: Array, gp_weight: float = 10.0
) -> tuple[Array, CriticStats]:
    """L_D = mean D(x_fake) − mean D(x_real) + λ_gp·GP (module docstring).

    Args:
      critic_fn: D, images ``(B, ...)`` -> scores ``(B,)``.
      x_real: ``(B, ...)`` real images.
      x_fake: ``(B, ...)`` generated images (treated as constants by the caller).
      eps: ``(B,)`` interpolation weights of the penalty.
      gp_weight: λ_gp.

    Returns:
      ``(loss, CriticStats(wasserstein, penalty))``: the critic minimises
      ``loss``; ``wasserstein`` = mean D(x_real) − mean D(x_fake) = −(loss − λ_gp·GP).
    """
    wasserstein = jnp.mean(critic_fn(x_real)) - jnp.mean(critic_fn(x_fake))
    penalty = gradient_penalty(critic_fn, x_real, x_fake, eps)
    return -wasserstein + gp_weight * penalty, CriticStats(wasserstein, penalty)


def generator_loss(critic_fn: CriticFn, x_fake: Array) -> Array:
    """L_G = −mean D(x_fake): the generator raises the critic's score of its images."""
    return -jnp.mean(critic_fn(x_fake))


# ---------------------------------------------------------------------------------------------
# Networks.


def conv2d(x: Array, kernel: Array, stride: int = 1) -> Array:
    """'SAME'-padded 2-D convolution (cross-correlation) of NHWC images.

    Args:
      x: ``(B, H, W, C_in)`` images.
      kernel: ``(k_h, k_w, C_in, C_out)`` filters (HWIO).
      stride: the same stride along both axes.

    Returns:
      ``(B, ⌈H/stride⌉, ⌈W/stride⌉, C_out)``, equal to
      ``lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))``.

    On accelerators this *is* that call. On the CPU the convolution is
    written as a matrix product over k_h·k_w shifted (strided) slices of the
    padded input ("im2col"): XLA:CPU runs the convolutions that autodiff
    emits for the gradients (and the penalty's gradient of a gradient) an
    order of magnitude slower inside a loop body than outside one (jax issue
    #12868), while slices and matrix products keep their speed -- and a
    training epoch is one ``lax.scan``.
    """
    if jax.default_backend() != "cpu":
        return jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    return conv2d_im2col(x, kernel, stride)


def conv2d_im2col(x: Array, kernel: Array, stride: int = 1) -> Array:
    """:func:`conv2d` as one matrix product over shifted slices (the CPU path; same arguments)."""
    k_h, k_w, c_in, c_out = kernel.shape
    height, width = x.shape[1:3]
    out_h, out_w = -(-height // stride), -(-width // stride)
    # XLA's 'SAME' padding: total (out − 1)·stride + k − size, the odd pixel at the end.
    pad_h = max((out_h - 1) * stride + k_h - height, 0)
    pad_w = max((out_w - 1) * stride + k_w - width, 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    patches = jnp.concatenate(
        [x[:, i: i + (out_h - 1) * stride + 1: stride, j: j + (out_w - 1) * stride + 1: stride, :]
         for i in range(k_h) for j in range(k_w)],
        axis=-1,
    )  # (B, out_h, out_w, k_h·k_w·C_in), the (i, j, c) order of the kernel's reshape
    return patches @ kernel.reshape(k_h * k_w * c_in, c_out)


class Conv(nnx.Module):
    """A 'SAME' convolution with bias, via :func:`conv2d` (LeCun-normal init, as ``nnx.Conv``)."""

    def __init__(self, c_in: int, c_out: int, size: int, *, stride: int = 1, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (size, size, c_in, c_out), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))
        self.stride = stride

    def __call__(self, x: Array) -> Array:
        return conv2d(x, self.kernel[...], self.stride) + self.bias[...]


class Generator(nnx.Module):
    """z ``(B, m)`` -> images ``(B, H, W)`` in [0, 1] (module docstring)."""

    def __init__(self, config: WGANConfig, *, rngs: nnx.Rngs):
        h, w = config.base_shape
        self.base = (h, w, config.widths[0])
        self.dense = nnx.Linear(config.latent_dim, h * w * config.widths[0], rngs=rngs)
        self.ups = nnx.List([
            Conv(c_in, c_out, 3, rngs=rngs) for c_in, c_out in pairwise(config.widths)
        ])
        self.out = Conv(config.widths[-1], 1, 3, rngs=rngs)

    def __call__(self, z: Array) -> Array:
        h = jax.nn.relu(self.dense(z)).reshape(z.shape[0], *self.base)
        for up in self.ups:
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour ×2
            h = jax.nn.relu(up(h))
        return jax.nn.sigmoid(self.out(h))[..., 0]


class Critic(nnx.Module):
    """Images ``(B, H, W)`` -> scores ``(B,)``; no batch norm (gradient penalty)."""

    def __init__(self, config: WGANConfig, *, rngs: nnx.Rngs):
        # Channels from the finest resolution to the coarsest: 1 -> c_k -> … -> c_1 (downs) -> c_0 (mid).
        chain = (1,) + tuple(reversed(config.widths))
        self.downs = nnx.List([
            Conv(c_in, c_out, 4, stride=2, rngs=rngs) for c_in, c_out in pairwise(chain[:-1])
        ])
        self.mid = Conv(chain[-2], chain[-1], 3, rngs=rngs)
        widths = config.widths
        h, w = config.base_shape
        self.head = nnx.Linear(h * w * widths[0], 1, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        h = x[..., None]
        for down in self.downs:
            h = jax.nn.leaky_relu(down(h), _LEAK)
        h = jax.nn.leaky_relu(self.mid(h), _LEAK)
        return self.head(h.reshape(h.shape[0], -1))[:, 0]


class WGANParams(NamedTuple):
    """The parameters of one trained WGAN (the ``Params`` of the loop interface).

    Attributes:
      generator: ``nnx.State`` of the generator's parameters.
      critic: ``nnx.State`` of the critic's parameters.
      generator_opt: optax (Adam) state of the generator.
      critic_opt: optax (Adam) state of the critic. Both optimiser states are
        carried to the next generation with the networks when warm starting
        (and checkpointed with them).
    """

    generator: nnx.State
    critic: nnx.State
    generator_opt: optax.OptState
    critic_opt: optax.OptState


class TrainStats(NamedTuple):
    """Per-generator-step diagnostics of a training epoch, each ``(steps,)``.

    Attributes:
      wasserstein: critic's W₁ estimate, averaged over the step's critic steps.
      penalty: gradient penalty, averaged likewise.
      generator_loss: L_G of the generator step.
    """

    wasserstein: Array
    penalty: Array
    generator_loss: Array


class WGANInfo(NamedTuple):
    """Diagnostics of one :func:`wgan` ``fit`` (the ``info`` of ``(params, info)``), each a ``()`` array.

    Attributes:
      wasserstein: float32, the critic's W₁ estimate averaged over the last
        epoch's generator steps (:class:`TrainStats`).
      penalty: float32, the gradient penalty, averaged likewise.
      generator_loss: float32, L_G averaged likewise.
      steps: int32, generator steps taken by this fit (each after
        ``n_critic`` critic steps).
      nonfinite: bool, True if any epoch's statistics held a NaN or ±inf.
    """

    wasserstein: Array
    penalty: Array
    generator_loss: Array
    steps: Array
    nonfinite: Array


def _optimizers(config: WGANConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    adam = functools.partial(optax.adam, b1=config.beta1, b2=config.beta2)
    return adam(config.generator_lr), adam(config.critic_lr)


@functools.cache
def _graphdefs(config: WGANConfig):
    """The (static, hashable) graphs of the generator and critic of this architecture."""
    gen, _ = nnx.split(nnx.eval_shape(lambda: Generator(config, rngs=nnx.Rngs(0))))
    crit, _ = nnx.split(nnx.eval_shape(lambda: Critic(config, rngs=nnx.Rngs(0))))
    return gen, crit


def critic_step(config: WGANConfig, params: WGANParams, x_real: Array, z: Array, eps: Array
                ) -> tuple[WGANParams, CriticStats]:
    """One Adam step of the critic on L_D (the generator is held fixed).

    Args:
      config: the architecture and optimiser.
      params: current parameters.
      x_real: ``(B, H, W)`` real images.
      z: ``(B, m)`` latents of the fakes x̃ = G(z).
      eps: ``(B,)`` interpolation weights of the penalty.

    Returns:
      ``(params, stats)`` with the critic and its optimiser state updated;
      ``stats`` are those of the loss *before* the step.
    """
    gen_def, crit_def = _graphdefs(config)
    _, tx_critic = _optimizers(config)
    x_fake = jax.lax.stop_gradient(nnx.merge(gen_def, params.generator)(z))

    def loss_fn(critic_state):
        return critic_loss(nnx.merge(crit_def, critic_state), x_real, x_fake, eps, config.gp_weight)

    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params.critic)
    updates, critic_opt = tx_critic.update(grads, params.critic_opt, params.critic)
    critic = optax.apply_updates(params.critic, updates)
    return params._replace(critic=critic, critic_opt=critic_opt), stats


def generator_step(config: WGANConfig, params: WGANParams, z: Array) -> tuple[WGANParams, Array]:
    """One Adam step of the generator on L_G = −mean D(G(z)) (the critic is held fixed).

    Args:
      config: the architecture and optimiser.
      params: current parameters.
      z: ``(B, m)`` latents.

    Returns:
      ``(params, loss)`` with the generator and its optimiser state updated;
      ``loss`` is L_G before the step.
    """
    gen_def, crit_def = _graphdefs(config)
    tx_generator, _ = _optimizers(config)
    critic = nnx.merge(crit_def, params.critic)

    def loss_fn(generator_state):
        return generator_loss(critic, nnx.merge(gen_def, generator_state)(z))

    loss, grads = jax.value_and_grad(loss_fn)(params.generator)
    updates, generator_opt = tx_generator.update(grads, params.generator_opt, params.generator)
    generator = optax.apply_updates(params.generator, updates)
    return params._replace(generator=generator, generator_opt=generator_opt), loss


def train_epoch(config: WGANConfig, key: Array, params: WGANParams, x: Array) -> tuple[WGANParams, TrainStats]:
    """One epoch: ⌊n / (B·n_critic)⌋ generator steps, each after ``n_critic`` critic steps.

    Pure and traceable (one ``lax.scan`` over generator steps, an inner scan
    over critic steps); :func:`wgan`'s ``fit`` jits it.

    Args:
      config: the architecture and schedule.
      key: PRNG key of this epoch (permutation, latents, interpolation weights).
      params: parameters to start from.
      x: ``(n, H, W)`` float32 training images, n ≥ ``n_critic``.

    Returns:
      ``(params, TrainStats)`` with ``(steps,)`` diagnostics.
    """
    n = x.shape[0]
    batch = min(config.batch_size, n // config.n_critic)
    steps = n // (batch * config.n_critic)
    k_perm, k_steps = jax.random.split(key)
    order = jax.random.permutation(k_perm, n)[: steps * config.n_critic * batch]
    order = order.reshape(steps, config.n_critic, batch)

    def one_critic_step(params, inputs):
        idx, k = inputs
        k_z, k_eps = jax.random.split(k)
        z = jax.random.normal(k_z, (batch, config.latent_dim), jnp.float32)
        eps = jax.random.uniform(k_eps, (batch,), jnp.float32)
        return critic_step(config, params, x[idx], z, eps)

    def one_generator_step(params, inputs):
        idx, k = inputs
        k_critic, k_gen = jax.random.split(k)
        params, stats = jax.lax.scan(one_critic_step, params, (idx, jax.random.split(k_critic, config.n_critic)))
        z = jax.random.normal(k_gen, (batch, config.latent_dim), jnp.float32)
        params, g_loss = generator_step(config, params, z)
        return params, TrainStats(jnp.mean(stats.wasserstein), jnp.mean(stats.penalty), g_loss)

    return jax.lax.scan(one_generator_step, params, (order, jax.random.split(k_steps, steps)))


def wgan_generate(config: WGANConfig, params: WGANParams, z: Array) -> Array:
    """G(z): latents ``(B, m)`` -> images ``(B, H, W)`` float32 in [0, 1] (traceable)."""
    gen_def, _ = _graphdefs(config)
    return nnx.merge(gen_def, params.generator)(jnp.asarray(z, jnp.float32))


def wgan_critic(config: WGANConfig, params: WGANParams, x: Array) -> Array:
    """D(x): images ``(B, H, W)`` -> scores ``(B,)`` (traceable)."""
    _, crit_def = _graphdefs(config)
    return nnx.merge(crit_def, params.critic)(jnp.asarray(x, jnp.float32))


def _init(config: WGANConfig, key: Array) -> WGANParams:
    k_gen, k_crit = jax.random.split(key)
    _, generator = nnx.split(Generator(config, rngs=nnx.Rngs(params=k_gen)))
    _, critic = nnx.split(Critic(config, rngs=nnx.Rngs(params=k_crit)))
    tx_generator, tx_critic = _optimizers(config)
    return WGANParams(generator, critic, tx_generator.init(generator), tx_critic.init(critic))


def _images(config: WGANConfig, data) -> Array:
    """The ``(n, H, W)`` float32 pixels of ``data`` (:class:`Images` or an array), validated."""
    x = jnp.asarray(data.x if isinstance(data, Images) else data, jnp.float32)
    if x.ndim != 3 or tuple(x.shape[1:]) != config.image_shape:
        raise ParameterError("data", f"images must have shape (n, {config.image_shape[0]}, "
                                     f"{config.image_shape[1]}), got {tuple(x.shape)}")
    if x.shape[0] < config.n_critic:
        raise ParameterError("data", f"needs at least n_critic = {config.n_critic} images, got {x.shape[0]}")
    return x


def _training_only(config: WGANConfig) -> WGANConfig:
    """``config`` with the fields an epoch does not depend on set to fixed values."""
    return dataclasses.replace(config, epochs=1, warm_start=True, sample_batch=1)


# Configs differing only in epochs / warm_start / sample_batch share these compiled functions.
@functools.lru_cache(maxsize=16)
def _compiled_epoch(config: WGANConfig):
    return jax.jit(functools.partial(train_epoch, config))


@functools.lru_cache(maxsize=16)
def _compiled_init(config: WGANConfig):
    # Compiled, building the modules is one call instead of dozens of eagerly dispatched ops.
    return jax.jit(functools.partial(_init, config))


@functools.lru_cache(maxsize=16)  # one set of compiled functions per (config, progress), shared by runs
def wgan(config: WGANConfig = WGANConfig(), *, progress: bool = False) -> GenerativeModel:
    """A WGAN-GP as a :class:`~madjax.base.GenerativeModel` record.

    Args:
      config: architecture and training schedule.
      progress: show a tqdm bar over the epochs of each ``fit`` (terminal only).

    Returns:
      ``GenerativeModel(init, fit, sample)`` with

      * ``init(key) -> WGANParams``: fresh networks and Adam states;
      * ``fit(key, params, data) -> (WGANParams, WGANInfo)``: ``config.epochs``
        epochs of WGAN-GP on ``data`` (:class:`~madjax.data.Images`, labels
        ignored, or an ``(n, H, W)`` array), warm-started from ``params``
        unless ``config.warm_start`` is False (then re-initialised from
        ``key``); each epoch is one compiled ``lax.scan``
        (:func:`train_epoch`); :class:`WGANInfo` holds the last epoch's mean
        W₁ estimate, penalty and generator loss, the number of generator
        steps and a non-finite flag (device scalars: no host sync);
      * ``sample(key, params, n, lam) -> Images``: x = G(√λ·ε), ε ~ N(0, I)
        drawn as ``jax.random.normal(key, (n, latent_dim))``, clipped to
        [0, 1], y = −1 (unconditional); compiled once per n, λ traced.
    """
    init = _compiled_init(_training_only(config))
    epoch_fn = _compiled_epoch(_training_only(config))

    def fit(key: Array, params: WGANParams, data) -> tuple[WGANParams, WGANInfo]:
        x = _images(config, data)
        k_init, k_train = jax.random.split(key)
        if not config.warm_start:
            params = init(k_init)
        nonfinite = jnp.zeros((), bool)
        with progress_bar(total=config.epochs, desc="epoch", enabled=progress, unit="epoch", nested=True) as bar:
            for epoch in range(config.epochs):
                params, stats = epoch_fn(jax.random.fold_in(k_train, epoch), params, x)
                means = jax.tree.map(jnp.mean, stats)
                nonfinite = nonfinite | ~jnp.all(jnp.isfinite(jnp.stack(list(means))))
                bar.update(1)
                if not bar.disable:  # the host sync only when someone is watching
                    bar.set_postfix(w1=f"{float(means.wasserstein):.3f}")
        steps = config.epochs * stats.wasserstein.shape[0]
        return params, WGANInfo(means.wasserstein, means.penalty, means.generator_loss,
                                jnp.asarray(steps, jnp.int32), nonfinite)

    @functools.partial(jax.jit, static_argnums=2)
    def _sample(key, params, n, lam):
        eps = jax.random.normal(key, (n, config.latent_dim), jnp.float32)
        z = jnp.sqrt(jnp.asarray(lam, jnp.float32)) * eps
        # lax.map in chunks of sample_batch latents: memory stays bounded for large n.
        x = jax.lax.map(lambda zi: wgan_generate(config, params, zi[None])[0], z,
                        batch_size=min(config.sample_batch, n))
        return Images(jnp.clip(x, 0.0, 1.0), jnp.full((n,), -1, jnp.int32))

    def sample(key: Array, params: WGANParams, n: int, lam) -> Images:
        # n sets a shape, so it is static; λ is traced (one compile serves every λ).
        n = check_int("n", n, minimum=1)
        return _sample(key, params, n, lam)

    return GenerativeModel(init=init, fit=fit, sample=sample)
