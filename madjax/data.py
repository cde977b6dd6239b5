"""Real-data sources for the deep loops (DESIGN §8).

A loop draws its real data through a :class:`DataSource`: a name, the shape
of one sample, and a pure ``sample(key, n)``. Sources whose law is known in
closed form also carry its exact moments, so tests and figures compare a
model against the truth rather than against another sample.

Rosenbrock (Pagani et al., 2022; the paper's Figure 15, App. "normalizing
flows"):

.. math::

    p(x_1, x_2) \\propto \\exp\\big(-\\tfrac12 x_1^2 - (x_2 - x_1^2)^2\\big),

which factorises as x₁ ~ N(0, 1) and x₂ | x₁ ~ N(x₁², 1/2), so it is sampled
exactly. Its normaliser is √(2π)·√π, and

* E x₁ = 0, Var x₁ = 1, P(|x₁| > 2) = 2Φ(−2) ≈ 0.0455;
* E x₂ = E x₁² = 1, Var x₂ = Var x₁² + 1/2 = 2 + 1/2 = 5/2.

Image sources (``digits``, ``mnist``) are added to :data:`SOURCES` by the
issues that need them; :func:`get_source` reports a source that this version
lacks as a :class:`~madjax.validation.ParameterError` naming ``data``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from madjax.validation import ParameterError, check_choice

Array = jax.Array

DATA_NAMES = ("rosenbrock", "digits", "mnist")

# Exact Rosenbrock moments (module docstring): the references of tests and plots.
ROSENBROCK_MEAN = (0.0, 1.0)
ROSENBROCK_VAR = (1.0, 2.5)
ROSENBROCK_TAIL_MASS = math.erfc(2.0 / math.sqrt(2.0))  # P(|x1| > 2) = 2Φ(−2)
_ROSENBROCK_LOG_Z = 0.5 * math.log(2.0 * math.pi) + 0.5 * math.log(math.pi)


class DataSource(NamedTuple):
    """A real-data distribution a loop can draw fresh samples from.

    Attributes:
      name: the ``--data`` name.
      shape: shape of one sample, e.g. ``(2,)`` for Rosenbrock points.
      sample: ``sample(key, n) -> x`` of shape ``(n, *shape)``, float32;
        ``n`` is a Python int (it sets a shape).
      log_density: exact normalised log-density ``(n, *shape) -> (n,)``, or
        ``None`` where it is unknown.
    """

    name: str
    shape: tuple
    sample: Callable[[Array, int], Array]
    log_density: Callable[[Array], Array] | None = None


def rosenbrock_sample(key: Array, n: int) -> Array:
    """Exact samples of the 2-D Rosenbrock law.

    Args:
      key: PRNG key.
      n: number of points.

    Returns:
      ``(n, 2)`` float32: x₁ ~ N(0, 1), x₂ = x₁² + ε/√2 with ε ~ N(0, 1).
    """
    k1, k2 = jax.random.split(key)
    x1 = jax.random.normal(k1, (n,), jnp.float32)
    x2 = x1**2 + jax.random.normal(k2, (n,), jnp.float32) * jnp.sqrt(0.5)
    return jnp.stack([x1, x2], axis=-1)


def rosenbrock_log_density(x: Array) -> Array:
    """Normalised log p(x) of the 2-D Rosenbrock law; ``(..., 2) -> (...)``."""
    x1, x2 = x[..., 0], x[..., 1]
    return -0.5 * x1**2 - (x2 - x1**2) ** 2 - _ROSENBROCK_LOG_Z


SOURCES: dict[str, Callable[[str | None], DataSource]] = {
    "rosenbrock": lambda data_dir: DataSource("rosenbrock", (2,), rosenbrock_sample, rosenbrock_log_density),
}


def get_source(name: str, data_dir: str | None = None, param: str = "data") -> DataSource:
    """The :class:`DataSource` called ``name``.

    Raises:
      ParameterError: naming ``param`` for an unknown name, or a known one
        this version of madjax does not provide yet.
    """
    check_choice(param, name, DATA_NAMES)
    if name not in SOURCES:
        raise ParameterError(param, f"{name} is not available in this version of madjax")
    return SOURCES[name](data_dir)
