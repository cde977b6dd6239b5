"""The generation-step interface shared by every model (DESIGN §6).

A self-consuming loop only needs three things from a generative model: fresh
parameters, a way to fit them to a training set, and a way to draw a (possibly
biased) training set for the next generation. Every model in madjax -- the
exact Gaussian engine, the sample-based Gaussian, the GMM and the deep models
-- is a small record of these pure functions, built by a factory, in the style
of ``blackjax`` kernels and ``optax`` transformations.

The key always comes first; parameters are pytrees; the sampling bias
``lam`` (λ ∈ (0, 1]) is an argument of ``sample``, so one compiled function
serves every λ.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

Array = jax.Array
Params = Any
Dataset = Any


class InitFn(Protocol):
    def __call__(self, key: Array) -> Params:
        """Return fresh (untrained) parameters."""


class FitFn(Protocol):
    def __call__(self, key: Array, params: Params, data: Dataset) -> Params:
        """Train / estimate parameters on ``data`` (warm-started from ``params``)."""


class SampleFn(Protocol):
    def __call__(self, key: Array, params: Params, n: Array, lam: Array) -> Dataset:
        """Draw a training set of ``n`` samples with sampling bias ``lam``."""


class GenerativeModel(NamedTuple):
    """A generative model as a record of pure functions (DESIGN §6).

    Attributes:
      init: ``init(key) -> params``.
      fit: ``fit(key, params, data) -> params``.
      sample: ``sample(key, params, n, lam) -> data``; λ = 1 is unbiased.
    """

    init: InitFn
    fit: FitFn
    sample: SampleFn
