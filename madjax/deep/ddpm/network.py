"""The DDPM's network ε_θ(x_t, t, c): a small conditional U-Net in Flax NNX.

:class:`UNet` (residual blocks with scale-shift GroupNorm, one skip per
resolution, a sinusoidal time embedding plus a label embedding with a null
class ∅ at index ``num_classes``); :func:`conv3x3` is its 3×3 convolution
with a hand-written VJP (fast inside ``lax.scan`` on XLA:CPU), and
:func:`ddpm_eps` closes the network over fixed weights as an :data:`EpsFn`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

if TYPE_CHECKING:
    from madjax.deep.ddpm.config import DDPMConfig

Array = jax.Array

# eps_fn(x (n, H, W), t (n,) float network time in [1, T], y (n,) int32) -> (n, H, W)
EpsFn = Callable[[Array, Array, Array], Array]


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
