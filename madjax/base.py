"""The generation-step interface shared by every model (DESIGN §6).

A self-consuming loop needs three things from a generative model: fresh
parameters, a way to fit them to a training set, and a way to draw a (possibly
biased) training set for the next generation. Every model in madjax -- the
exact Gaussian engine, the sample-based Gaussian, the GMM, the KDE and the deep
models -- is a small record of these pure functions, built by a factory, in
the style of ``blackjax`` kernels and ``optax`` transformations.

The key always comes first; parameters are pytrees; the sampling bias
``lam`` (λ ∈ (0, 1]) is an argument of ``sample``, so one compiled function
serves every λ. ``fit`` returns ``(params, info)`` as blackjax's ``step``
returns ``(state, info)``: EM iterations, a bandwidth or a training loss
travel with the parameters instead of through a side door.

Two records exist:

* :class:`GenerativeModel` -- ``init``/``fit``/``sample``; what a deep model
  (DDPM, WGAN-GP, GLOW) provides. The host-loop executor
  (:func:`madjax.deep.loop.run_loop`) adds the row algebra of
  :mod:`madjax.loops` (datasets are pytrees of arrays sharing a leading row
  axis, of any length).
* :class:`LoopModel` -- a :class:`GenerativeModel` plus the data algebra and
  the diagnostics a *jittable* loop needs under ``lax.scan × vmap``: every
  shape static, every size a traced ``int32``. The Gaussian engines
  (``Dataset`` = sufficient statistics or a masked point buffer), the GMM and
  the KDE (masked point buffers) implement it; one generation step and one
  executor (:mod:`madjax.loops`) serve them all.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

Array = jax.Array
Params = Any
Dataset = Any
Info = Any
Record = Any


class InitFn(Protocol):
    def __call__(self, key: Array) -> Params:
        """Fresh parameters; for a :class:`LoopModel` any value of the fitted structure
        (it fills the memory slots before they are used, and is never sampled)."""


class FitFn(Protocol):
    def __call__(self, key: Array, params: Params, data: Dataset) -> tuple[Params, Info]:
        """Train / estimate on ``data`` (warm-started from ``params`` where the model
        wants it); returns the new parameters and a pytree of fit diagnostics."""


class SampleFn(Protocol):
    def __call__(self, key: Array, params: Params, n: Array, lam: Array) -> Dataset:
        """Draw a training set of ``n`` samples with sampling bias ``lam``."""


class GenerativeModel(NamedTuple):
    """A generative model as a record of pure functions (DESIGN §6).

    Attributes:
      init: ``init(key) -> params``.
      fit: ``fit(key, params, data) -> (params, info)``.
      sample: ``sample(key, params, n, lam) -> data``; λ = 1 is unbiased.
    """

    init: InitFn
    fit: FitFn
    sample: SampleFn


class LoopModel(NamedTuple):
    """A jittable model with its data algebra, diagnostics and real source (DESIGN §6).

    Shape contract (``C`` a static capacity chosen by the model's spec; all
    sizes traced ``()`` int32):

    * ``init(key) -> P``; ``fit(key, P, D) -> (P, I)``; ``sample(key, P, n, λ) -> D``
      with ``n ≤`` the model's draw capacity. ``P`` has one static structure
      whatever the training set's size (the memory ring buffer stacks it).
    * ``sample_real(key, n) -> D``: n draws of the target ``P_r``.
    * ``sample_mixture(key, history, valid, n, λ) -> D``: n samples, each from
      a model drawn uniformly among the slots of ``history`` (``P`` stacked on
      a leading ``(K_max,)`` axis) where ``valid`` ``(K_max,)`` is True
      (memory K, DESIGN §1).
    * ``concat(*parts) -> D`` (real and synthetic parts; capacities add);
      ``empty(generations) -> D`` the empty accumulating pool, with room for
      ``generations`` appends; ``append(pool, D) -> D`` (same structure as
      ``pool``); ``size(D) -> ()`` int32.
    * ``confine(D, P¹) -> D``: in the fully synthetic loop every later
      sample lies in the support of G¹; a model that tracks supports (the
      Gaussian's analytic rank) records it, the others return ``D``.
    * ``diagnose(key, P, I, t) -> R``: a NamedTuple or dict of ``()`` leaves
      describing generation ``t``'s fitted model (the executor stacks them
      to ``(chains, T)``); ``w2`` is the model's distance to P_r, from which
      WD and n_e are computed.

    The loop operators use three more functions, None where a model has no such
    operator (its spec's ``check_loop`` refuses the operator):

    * ``subsample(key, D, n) -> D``: a uniform subsample of n of D's points,
      without replacement (accumulate-subsample);
    * ``mix(D_real, D_syn, w) -> D'``: the training set that weighs the real
      points by w and the synthetic ones by 1 − w (weighted mixing; ``fit`` takes ``D'``);
    * ``tilt(P, λ, β) -> P'``: parameters whose ``sample(key, P', n, 1)`` draws
      from the λ-sampler tilted by ``exp(−β‖x − μ₀‖²/2)`` (curation).
    """

    init: InitFn
    fit: FitFn
    sample: SampleFn
    sample_real: Any
    sample_mixture: Any
    concat: Any
    empty: Any
    append: Any
    size: Any
    confine: Any
    diagnose: Any
    subsample: Any = None
    mix: Any = None
    tilt: Any = None


class ModelSpec(Protocol):
    """Static, hashable description of a jittable model (a frozen dataclass).

    ``build()`` returns its :class:`LoopModel`; ``check_loop(loop)`` (a
    :class:`~madjax.loops.LoopSpec`) raises :class:`~madjax.validation.ParameterError`
    naming the option when the model cannot run that loop variant or operator;
    ``dim`` and ``dtype`` describe its data.
    """

    dim: int
    dtype: str

    def build(self) -> LoopModel: ...

    def check_loop(self, loop) -> None: ...
