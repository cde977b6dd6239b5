"""Deliberately degraded real image sets: the yardsticks that validate LeNet-FID, precision and recall.

An image metric is worth something only if it moves the right way when real
images are made worse in a known way. These pure functions make the three
degradations of the LeNet-FID validation (``tests/test_fashion_mnist.py``,
``benchmarks/lenet_fid_validation.py``):

* :func:`add_noise` -- i.i.d. Gaussian pixel noise of standard deviation σ,
  clipped back to [0, 1] (quality: every image leaves the data manifold a
  little; expected: LeNet-FID up, precision down as σ grows);
* :func:`blur` -- a separable Gaussian blur of standard deviation σ pixels
  (quality: fine detail lost);
* :func:`without_class` -- every image of one class removed (diversity: a
  mode dropped; expected: recall down, precision unchanged).

All work on ``(n, H, W)`` float arrays in [0, 1] (numpy or jax) and return
jax arrays of the same shape and dtype (``without_class``: fewer rows).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from madjax.validation import ParameterError, check_float, check_int

Array = jax.Array

__all__ = ["add_noise", "blur", "gaussian_kernel", "without_class"]


def _images(x, param: str = "x") -> Array:
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ParameterError(param, f"must be images of shape (n, H, W), got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _sigma(sigma, param: str = "sigma") -> float:
    sigma = check_float(param, sigma)
    if not sigma >= 0 or math.isinf(sigma):
        raise ParameterError(param, f"must be a finite number >= 0, got {sigma}")
    return sigma


def add_noise(key: Array, x, sigma: float) -> Array:
    """``clip(x + σ·ε, 0, 1)`` with ε ~ N(0, I) of x's shape.

    Args:
      key: PRNG key of the noise.
      x: ``(n, H, W)`` images in [0, 1].
      sigma: noise standard deviation σ ≥ 0 (in pixel units of the [0, 1] scale).

    Returns:
      ``(n, H, W)`` images in [0, 1], x's dtype; σ = 0 returns x unchanged.

    Raises:
      ParameterError: naming ``x`` (not 3-D) or ``sigma`` (negative or not finite).
    """
    x = _images(x)
    sigma = _sigma(sigma)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return jnp.clip(x + jnp.asarray(sigma, x.dtype) * noise, 0.0, 1.0)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian kernel of standard deviation σ pixels.

    Taps at offsets −r … r, r = ⌈3σ⌉ (the taps beyond 3σ carry < 0.3 % of
    the mass), weights exp(−i²/2σ²) summing to 1; σ = 0 is the identity
    ``[1.0]``.

    Returns:
      ``(2r + 1,)`` float64.
    """
    sigma = _sigma(sigma)
    if sigma == 0:
        return np.ones(1)
    r = max(1, math.ceil(3 * sigma))
    i = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (i / sigma) ** 2)
    return w / w.sum()


def blur(x, sigma: float) -> Array:
    """A separable Gaussian blur of σ pixels (rows, then columns), edges extended.

    Each output pixel is a convex combination of input pixels (the kernel of
    :func:`gaussian_kernel` is non-negative and sums to 1; the image is
    padded by repeating its edge pixels), so outputs stay in [0, 1] and a
    constant image is unchanged.

    Args:
      x: ``(n, H, W)`` images in [0, 1].
      sigma: blur standard deviation σ ≥ 0 in pixels; 0 returns x.

    Returns:
      ``(n, H, W)`` images, x's dtype.

    Raises:
      ParameterError: naming ``x`` or ``sigma``.

    Example:
      >>> import numpy as np
      >>> x = np.zeros((1, 8, 8), np.float32); x[0, 4, 4] = 1.0
      >>> y = np.asarray(blur(x, 1.0))
      >>> y.shape, round(float(y.sum()), 5), bool(y.max() < 1.0)
      ((1, 8, 8), 1.0, True)
    """
    x = _images(x)
    kernel = gaussian_kernel(sigma)
    r = (len(kernel) - 1) // 2
    if r == 0:
        return x
    h, w = x.shape[1:]
    k = jnp.asarray(kernel, x.dtype)
    rows = jnp.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
    x = sum(k[j] * rows[:, j:j + h, :] for j in range(2 * r + 1))
    cols = jnp.pad(x, ((0, 0), (0, 0), (r, r)), mode="edge")
    return sum(k[j] * cols[:, :, j:j + w] for j in range(2 * r + 1))


def without_class(x, y, label: int) -> tuple[Array, Array]:
    """The images whose label is not ``label`` (order kept).

    Args:
      x: ``(n, H, W)`` images.
      y: ``(n,)`` integer labels.
      label: the class to drop; it must occur in ``y`` and not be all of it.

    Returns:
      ``(x', y')`` with the rows of class ``label`` removed: ``(m, H, W)``
      and ``(m,)``, m = n − #{y = label} ≥ 1.

    Raises:
      ParameterError: naming ``x``/``y`` (shapes) or ``label`` (absent, or
        the only class).
    """
    x = _images(x)
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ParameterError("y", f"must be ({x.shape[0]},) integer labels, got {y.shape} {y.dtype}")
    label = check_int("label", label)
    keep = y != label
    if keep.all():
        raise ParameterError("label", f"class {label} does not occur in y")
    if not keep.any():
        raise ParameterError("label", f"class {label} is every image: nothing would be left")
    idx = np.flatnonzero(keep)
    return x[idx], jnp.asarray(y[idx])
