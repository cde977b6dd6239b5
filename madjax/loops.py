"""One loop driver for every self-consuming loop (paper §2, App. A; DESIGN §1, §6).

Generation 1 is fitted to real data only: ``n_ini`` fresh samples, except in
the synthetic-augmentation loop, where G¹ is fitted to the real set D_r
(``n_real`` samples) that is reused at every generation. For t ≥ 2 the
training set of generation t is

=========================  ===================================  ==========================
loop                       real part                            synthetic part
=========================  ===================================  ==========================
fully-synthetic            none                                 n_s samples from G^{t−1}
synthetic-augmentation     the same D_r (n_r) every generation  n_s samples from G^{t−1}
fresh                      n_r **new** real samples             n_s samples from G^{t−1}
=========================  ===================================  ==========================

Variants: sampling bias λ (the model samples ``N(μ, λΣ)``); memory K -- each
synthetic sample comes from a model drawn uniformly among the last K
generations that exist, t−K … t−1 (the paper writes τ = t−1−K … t−1; we read
that as K models), so the group sizes are Multinomial(n_s, uniform); an
accumulating synthetic pool (App. A.2: the pool keeps all previous
generations' samples, n_s^t = (t − 1) n_s); real fraction p of a total n
(``n_r = round(p n)``, ``n_s = n − n_r``).

What changes shapes or code paths is static (:class:`LoopSpec`); what users
sweep is a traced array leaf (:class:`LoopParams`), so one compiled function
serves a whole grid. :func:`run_chain` is one ``lax.scan`` over generations;
:func:`run_chains` vmaps it over chains whose keys are
``fold_in(seed_key, chain_index)``, so no number depends on chunking or on the
device count.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from madjax.base import Array
from madjax.distributed import chain_devices
from madjax.gaussian import (
    FACTORS,
    Diagnostics,
    GaussianEngine,
    add_spectrum,
    diagnose_moments,
    gaussian_exact,
    gaussian_factored,
    gaussian_sampled,
)
from madjax.validation import ParameterError, check_choice, check_int

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")
FACTORED_ONLY = ("factored needs the fully-synthetic loop with memory 1, no accumulate and the exact engine "
                 "(other loops pool real and synthetic data); use eigh, cholesky or auto")
ENGINES = ("exact", "sampled")


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """Static description of a loop: everything that changes shapes or code paths.

    Attributes:
      kind: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      memory: K_max, the number of model slots in the ring buffer; the traced
        ``LoopParams.memory`` (1 ≤ K ≤ K_max) selects how many are used.
      accumulate: keep every previous generation's synthetic samples.
      engine: ``"exact"`` (sufficient statistics) or ``"sampled"`` (points).
      dim: dimension d.
      max_points: buffer rows per draw of the sampled engine (ignored by exact).
      dtype: ``"float32"`` or ``"float64"``.
      factor: ``"eigh"`` (always valid), ``"cholesky"`` (Cholesky for sampling,
        eigenvalues without eigenvectors for the diagnostics; valid when every
        fit has full rank by construction) or ``"factored"`` (the square root
        carried as a product of triangular factors, exact log det; the fully
        synthetic loop with K = 1, no accumulation, exact engine), see
        :func:`choose_factor` and the module docstring of :mod:`madjax.gaussian`.
      w2_every: compute the spectral diagnostics (``w2``, ``cov_logdet``,
        ``underflow`` from the spectrum) only on generations 1, 1 + k, 1 + 2k, …
        and record NaN on the others. With ``factor="cholesky"`` nothing else
        needs the spectrum, so the skipped generations cost a Cholesky instead
        of an eigen-solve (benchmarks/README.md).
    """

    kind: str
    dim: int
    memory: int = 1
    accumulate: bool = False
    engine: str = "exact"
    max_points: int = 0
    dtype: str = "float32"
    factor: str = "eigh"
    w2_every: int = 1

    def __post_init__(self):
        check_choice("loop", self.kind, LOOPS)
        check_choice("engine", self.engine, ENGINES)
        check_choice("factor", self.factor, FACTORS)
        check_int("w2_every", self.w2_every, minimum=1)
        check_int("dim", self.dim, minimum=1)
        check_int("memory", self.memory, minimum=1)
        if self.accumulate and self.memory > 1:
            raise ParameterError("memory", "memory K > 1 cannot be combined with accumulate")
        if self.engine == "sampled":
            check_int("max_points", self.max_points, minimum=2)
        if self.factor == "factored" and not factored_loop(self.kind, memory=self.memory,
                                                          accumulate=self.accumulate, engine=self.engine):
            raise ParameterError("factor", FACTORED_ONLY)

    def engine_model(self) -> GaussianEngine:
        if self.factor == "factored":
            return gaussian_factored(self.dim, self.dtype)
        if self.engine == "exact":
            return gaussian_exact(self.dim, self.dtype, self.factor)
        return gaussian_sampled(self.dim, self.max_points, self.dtype, self.factor)

    def diagnose(self, model, t) -> Diagnostics:
        """Diagnostics of generation ``t``'s model; spectral ones only every ``w2_every``-th."""
        moments = diagnose_moments(model, self.factor)
        if self.w2_every == 1:
            return add_spectrum(moments, model, self.factor)
        # t is the scan's own counter, shared by all chains: under vmap this
        # stays a real branch, so skipped generations skip the eigen-solve.
        return jax.lax.cond(jnp.mod(t - 1, self.w2_every) == 0,
                            lambda: add_spectrum(moments, model, self.factor), lambda: moments)


def full_rank(kind: str, dim: int, *, n_ini, n_real, n_syn) -> bool:
    """Whether every fitted Σ of the loop has rank d by construction, for all cells given.

    A set of n points from a rank-d Gaussian spans d dimensions iff n ≥ d + 1;
    a union of groups spans at least as much as its largest. By induction from
    G¹ (fitted to n_ini points, or to D_r in synthetic augmentation), every
    model has rank d iff each training set holds ≥ d + 1 points: the smallest
    is generation 2's (accumulation and memory only add points or groups).
    Sizes may be scalars or arrays (all cells of a grid).
    """
    n_ini, n_real, n_syn = (np.asarray(v, np.int64) for v in (n_ini, n_real, n_syn))
    first = n_real if kind == "synthetic-augmentation" else n_ini
    later = n_syn if kind == "fully-synthetic" else n_real + n_syn
    return bool(np.all(first >= dim + 1) and np.all(later >= dim + 1))


def factored_loop(kind: str, *, memory: int = 1, accumulate: bool = False, engine: str = "exact") -> bool:
    """Whether each generation trains on one sample of one model only, so Σ_t need never be formed.

    That is the fully synthetic loop with K = 1 and no accumulation on the
    exact engine: ``L_t = sqrt(λ / (n_s − 1)) L_{t−1} A_t``
    (:func:`madjax.gaussian.gaussian_factored`). Every other loop pools
    groups of points, whose scatter is a sum, not a product.
    """
    return kind == "fully-synthetic" and memory == 1 and not accumulate and engine == "exact"


def choose_factor(kind: str, dim: int, *, n_ini, n_real, n_syn, memory: int = 1, accumulate: bool = False,
                  engine: str = "exact") -> str:
    """``"factored"`` where :func:`factored_loop` holds; else ``"cholesky"`` where
    :func:`full_rank` holds for every cell; else ``"eigh"``."""
    if factored_loop(kind, memory=memory, accumulate=accumulate, engine=engine):
        return "factored"
    return "cholesky" if full_rank(kind, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn) else "eigh"


class LoopParams(NamedTuple):
    """Swept values of a loop, as array leaves (one compilation serves all values).

    Attributes:
      n_ini: ``()`` int32, real samples of generation 1 (= n_real for synthetic augmentation).
      n_real: ``()`` int32, real samples per generation t ≥ 2.
      n_syn: ``()`` int32, synthetic samples per generation t ≥ 2.
      lam: ``()`` float, sampling bias λ ∈ (0, 1].
      memory: ``()`` int32, memory K (1 ≤ K ≤ ``LoopSpec.memory``).
    """

    n_ini: Array
    n_real: Array
    n_syn: Array
    lam: Array
    memory: Array

    @classmethod
    def create(cls, *, n_ini=2, n_real=0, n_syn=0, lam=1.0, memory=1, dtype="float32") -> "LoopParams":
        """Cast values (scalars or arrays, possibly traced) to the leaf dtypes."""
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        return cls(i32(n_ini), i32(n_real), i32(n_syn), jnp.asarray(lam, dtype), i32(memory))

    @staticmethod
    def split_total(real_fraction, n_total):
        """``n_r = round(p n)``, ``n_s = n − n_r`` (Fig. 34); works on traced values."""
        n_total = jnp.asarray(n_total, jnp.int32)
        n_real = jnp.round(jnp.asarray(real_fraction, jnp.float32) * n_total).astype(jnp.int32)
        return n_real, n_total - n_real


class ChainState(NamedTuple):
    """Carry of the scan over generations.

    Attributes:
      models: :class:`GaussianParams` stacked over the K_max ring-buffer slots;
        generation s lives in slot ``(s − 1) mod K_max``.
      real: the fixed real set D_r (synthetic augmentation; else an unused placeholder).
      pool: the accumulated synthetic pool (``accumulate``; else a placeholder).
      support: ``()`` int32, cap on every later rank (fully synthetic: all
        later points lie in G¹'s support; otherwise d).
    """

    models: object
    real: object
    pool: object
    support: Array


def _slot_mask(t: Array, memory: Array, slots: int) -> Array:
    """Slots holding one of the generations ``max(1, t − K) … t − 1``: ``(K_max,)`` bool."""
    j = jnp.arange(slots)
    gen = t - 1 - jnp.mod(t - 2 - j, slots)  # latest generation s ≤ t − 1 stored in slot j
    return (gen >= jnp.maximum(1, t - memory)) & (gen >= 1)


def _synthetic(key, spec: LoopSpec, eng: GaussianEngine, models, params: LoopParams, t):
    """n_s samples, each from a model drawn uniformly among the last K generations."""
    if spec.memory == 1:
        only = jax.tree.map(lambda x: x[0], models)
        return eng.sample(key, only, params.n_syn, params.lam)
    k_counts, k_draw = jax.random.split(key)
    valid = _slot_mask(t, params.memory, spec.memory).astype(jnp.float32)
    counts = jax.random.multinomial(k_counts, params.n_syn.astype(jnp.float32), valid / jnp.sum(valid))
    keys = jax.random.split(k_draw, spec.memory)
    groups = jax.vmap(eng.sample, in_axes=(0, 0, 0, None))(keys, models, counts.astype(jnp.int32), params.lam)
    return eng.concat(*(jax.tree.map(lambda x, i=i: x[i], groups) for i in range(spec.memory)))


def run_chain(key: Array, params: LoopParams, spec: LoopSpec, generations: int) -> Diagnostics:
    """One chain of the loop: a ``lax.scan`` over generations 2 … T.

    Args:
      key: the chain's PRNG key; generation t uses ``fold_in(key, t)``.
      params: :class:`LoopParams` (scalars).
      spec: :class:`LoopSpec` (static).
      generations: T (static).

    Returns:
      :class:`Diagnostics` with leaves of shape ``(T,)``, generation 1 first.
    """
    eng = spec.engine_model()
    reference = eng.init(key)  # P_r = N(0, I_d)
    k_real, k_fit = jax.random.split(jax.random.fold_in(key, 1))
    n_first = params.n_real if spec.kind == "synthetic-augmentation" else params.n_ini
    first_data = eng.sample_real(k_real, n_first)
    first = eng.fit(k_fit, reference, first_data)
    slots = spec.memory
    models = jax.tree.map(lambda x: jnp.broadcast_to(x, (slots,) + x.shape), first)
    support = first.rank if spec.kind == "fully-synthetic" else jnp.int32(spec.dim)
    state = ChainState(models=models, real=first_data, pool=eng.pool_init(generations), support=support)

    def step(carry, t):
        state, previous = carry
        k_real, k_syn, k_fit = jax.random.split(jax.random.fold_in(key, t), 3)
        synthetic = _synthetic(k_syn, spec, eng, state.models, params, t)
        pool = state.pool
        if spec.accumulate:
            pool = eng.pool_append(pool, synthetic)
            synthetic = pool
        if spec.kind == "fresh":
            train = eng.concat(eng.sample_real(k_real, params.n_real), synthetic)
        elif spec.kind == "synthetic-augmentation":
            train = eng.concat(state.real, synthetic)
        else:
            train = synthetic
        train = train._replace(rank=jnp.minimum(train.rank, state.support))
        model = eng.fit(k_fit, reference, train)
        slot = jnp.mod(t - 1, slots)
        models = jax.tree.map(lambda buf, x: buf.at[slot].set(x), state.models, model)
        return (state._replace(models=models, pool=pool), spec.diagnose(model, t)), previous

    # The scan carries each generation's record and emits it one step later, so
    # that it reads generation 1's: jaxlib's CPU LAPACK kernels deadlock when two
    # of them run at once (gaussian.symmetric_eigvals), and this makes every
    # factorisation of the loop wait for the one before.
    carry = (state, spec.diagnose(first, jnp.int32(1)))
    (_, last), records = jax.lax.scan(step, carry, jnp.arange(2, generations + 1, dtype=jnp.int32))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), records, last)


def padded_chain_ids(start: int, count: int) -> tuple[Array, int]:
    """Chain ids ``start … start+count−1`` padded to a multiple of the device count and
    sharded over a ``("chain",)`` mesh of :func:`~madjax.distributed.chain_devices` (all
    local devices; one on the CPU backend, whose forced host devices deadlock in LAPACK).

    Returns the ids and the number of real (unpadded) chains; padded chains are
    computed and dropped, so no result depends on the device count.
    """
    devices = chain_devices()
    size = -(-count // len(devices)) * len(devices)
    ids = jnp.arange(start, start + size, dtype=jnp.uint32)
    if len(devices) > 1:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("chain",))
        ids = jax.device_put(ids, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("chain")))
    return ids, count


def chain_keys(seed_key: Array, chain_ids: Array) -> Array:
    """Per-chain keys ``fold_in(seed_key, i)``: independent of chunking and devices."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(seed_key, chain_ids)


def run_chains(seed_key: Array, chain_ids: Array, params: LoopParams, spec: LoopSpec, generations: int):
    """:func:`run_chain` vmapped over chains: leaves of shape ``(chains, T)``."""
    keys = chain_keys(seed_key, chain_ids)
    return jax.vmap(run_chain, in_axes=(0, None, None, None))(keys, params, spec, generations)


run_chains_jit = jax.jit(run_chains, static_argnames=("spec", "generations"))
"""The compiled driver: one executable per (spec, T, chunk size); params are traced."""


def run_cells(seed_key: Array, chain_ids: Array, params: LoopParams, spec: LoopSpec, generations: int):
    """:func:`run_chains` vmapped over a leading *cell* axis of ``params``.

    Every cell uses the same chain keys (common random numbers across cells,
    DESIGN §3). Leaves of the result have shape ``(cells, chains, T)``.
    """
    return jax.vmap(run_chains, in_axes=(None, None, 0, None, None))(seed_key, chain_ids, params, spec, generations)


run_cells_jit = jax.jit(run_cells, static_argnames=("spec", "generations"))


def stack_params(cells) -> LoopParams:
    """Stack a sequence of :class:`LoopParams` along a new leading cell axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *cells)
