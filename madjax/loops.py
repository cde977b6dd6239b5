"""One loop layer for every model: the generation step and the ``scan × vmap`` executor.

Generation 1 is fitted to real data only: ``n_ini`` fresh samples, except in
the synthetic-augmentation loop, where G¹ is fitted to the real set D_r
(``n_real`` samples) that is reused at every generation. For t ≥ 2 the
training set of generation t is (paper §2, App. A; DESIGN §1)

=========================  ===================================  ==========================
loop                       real part                            synthetic part
=========================  ===================================  ==========================
fully-synthetic            none                                 n_s samples from G^{t−1}
synthetic-augmentation     the same D_r (n_r) every generation  n_s samples from G^{t−1}
fresh                      n_r **new** real samples             n_s samples from G^{t−1}
=========================  ===================================  ==========================

Variants: sampling bias λ (the model's ``sample(key, params, n, lam)``);
memory K -- each synthetic sample comes from a model drawn uniformly among the
last K generations that exist, t−K … t−1 (the paper writes τ = t−1−K … t−1;
we read that as K models); an accumulating synthetic pool (App. A.2: the pool
keeps all previous generations' samples, n_s^t = (t − 1) n_s); real fraction p
of a total n (``n_r = round(p n)``, ``n_s = n − n_r``, :meth:`LoopParams.split_total`).

**Loop operators** of the literature, each a field of :class:`LoopSpec` (what
changes the code path) and a leaf of :class:`LoopParams` (what is swept):

=====================  ====================================================  ===========================
operator               generation t ≥ 2 trains on                            paper
=====================  ====================================================  ===========================
replace                n_s samples of G^{t−1} (``fully-synthetic``)          Shumailov et al. 2024
accumulate             D_r plus every generation's synthetic samples          Gerstgrasser et al. 2024
                       (``synthetic-augmentation`` + ``accumulate``)
accumulate-subsample   a uniform subsample of ``n_train`` of that pool       Kazdan, Schaeffer et al. 2025
                       (+ ``subsample``)
growing sizes          ``n_t = ⌈n_s t^α⌉`` synthetic samples (``growth``     Xu, He & Cheng 2025
                       α) or a user ``schedule``
weighted mixing        the real part weighted by w, the synthetic by 1 − w   He, Xu & Cheng 2026
                       (``weighted``, ``real_weight``)
curation               samples of the tilted sampler ∝ p(x) exp(−β‖x‖²/2)    Ferbach et al. 2024
                       (``tilted``, ``tilt`` β)
=====================  ====================================================  ===========================

``replace``, ``accumulate`` and ``accumulate-subsample`` are also names of
:data:`LOOP_ALIASES`, which map them onto (kind, accumulate, subsample).
A model that cannot run an operator refuses it in its spec's ``check_loop``.

**One step.** :func:`first_training_set` and :func:`training_set` are the
single definition of what a generation trains on. They only use the model's
``sample``, ``sample_mixture``, ``sample_real`` and its data algebra
(``concat``/``append``/``confine``; :class:`~madjax.base.LoopModel`), so the
exact Gaussian (sufficient statistics), the sampled Gaussian, the GMM and the
KDE (masked point buffers) run through them, and so does the deep host loop
(:func:`madjax.deep.loop.run_loop`, pytrees of rows).

**The scan × vmap executor** (this module): :func:`run_chain` is one
``lax.scan`` over generations; :func:`run_chains` vmaps it over chains whose
keys are ``fold_in(seed_key, chain_index)``; :func:`run_cells` vmaps that over
a grid of swept values; :func:`run_chunked` streams chains through bounded
chunks, each sharded over a ``("chain",)`` mesh and padded to the device
count, and gathers the shares of ``jax.distributed`` processes -- so no number
depends on chunking, devices or processes.

**Keys.** Generation t of a chain uses ``g = fold_in(chain_key, t)``, split
into ``(k_real, k_syn, k_fit)``; its diagnostics use ``fold_in(g, 3)``, the
subsample of accumulate-subsample ``fold_in(g, 4)``; the model's ``init`` gets
``fold_in(chain_key, 0)``.

**What compiles.** Everything that changes shapes or code paths is static
(:class:`LoopSpec`: loop kind, K_max, accumulation, and the model's spec --
dimension, dtype, engine, buffer capacities); everything users sweep is a
traced leaf (:class:`LoopParams`: n_ini, n_r, n_s, λ, K ≤ K_max). The unit of
compilation is therefore (spec, T, chunk shape): a whole grid of (n_r, n_s,
λ, K) cells is one executable per horizon level (``madjax.effective``).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from madjax.base import Array, LoopModel, ModelSpec
from madjax.distributed import chain_devices
from madjax.validation import ParameterError, check_choice, check_int

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")

LOOP_ALIASES = {
    "replace": dict(kind="fully-synthetic", accumulate=False, subsample=False),
    "accumulate": dict(kind="synthetic-augmentation", accumulate=True, subsample=False),
    "accumulate-subsample": dict(kind="synthetic-augmentation", accumulate=True, subsample=True),
}
"""The literature's loop names (Kazdan, Schaeffer et al. 2025) as (kind, accumulate, subsample):
*replace* trains on the last model's samples only; *accumulate* on the real data
plus every synthetic sample so far (Gerstgrasser et al. 2024); *accumulate-subsample*
on a fixed-size uniform subsample of that pool."""

TRACES: collections.Counter = collections.Counter()
"""How many times :func:`run_chain` was traced, per :class:`LoopSpec` (a Python side effect, so it
counts compilations, not calls): the guard that a sweep does not silently recompile per cell."""


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """Static description of a loop: everything that changes shapes or code paths.

    Attributes:
      kind: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      model: the model's static spec (:class:`~madjax.gaussian.GaussianSpec`,
        :class:`~madjax.gmm.GMMSpec`, :class:`~madjax.kde.KDESpec`), which
        may refuse a loop variant it cannot run (one line naming the option).
      memory: K_max, the number of model slots in the ring buffer; the traced
        ``LoopParams.memory`` (1 ≤ K ≤ K_max) selects how many are used.
      accumulate: keep every previous generation's synthetic samples.
      subsample: train on a uniform subsample (without replacement) of
        ``LoopParams.n_train`` points of the training set (accumulate-subsample;
        needs ``accumulate`` and a model that keeps points).
      weighted: fit the real part with weight ``LoopParams.real_weight`` = w and
        the synthetic part with 1 − w (needs a real part: ``fresh`` or
        ``synthetic-augmentation``; the model's ``mix``).
      tilted: draw synthetic samples from the curated sampler, the model's
        λ-sampler tilted by ``exp(−β‖x − μ₀‖²/2)``, β = ``LoopParams.tilt`` (the model's ``tilt``).
      schedule: synthetic sample sizes of generations 2 … T (a user schedule;
        it replaces ``n_syn`` and ``growth``); empty: ``⌈n_s t^α⌉``.
    """

    kind: str
    model: ModelSpec
    memory: int = 1
    accumulate: bool = False
    subsample: bool = False
    weighted: bool = False
    tilted: bool = False
    schedule: tuple = ()

    def __post_init__(self):
        check_choice("loop", self.kind, LOOPS)
        check_int("memory", self.memory, minimum=1)
        if self.accumulate and self.memory > 1:
            raise ParameterError("memory", "memory K > 1 cannot be combined with accumulate")
        if self.subsample and not self.accumulate:
            raise ParameterError("subsample", "accumulate-subsample draws its training set from the accumulating "
                                              "pool: it needs accumulate")
        if self.weighted and self.kind == "fully-synthetic":
            raise ParameterError("real_weight", "weighted mixing weighs real against synthetic data: it needs the "
                                                "fresh or synthetic-augmentation loop")
        if self.weighted and self.subsample:
            raise ParameterError("real_weight", "weighted mixing and accumulate-subsample cannot be combined")
        for n in self.schedule:
            check_int("n_syn_schedule", n, minimum=0)
        self.model.check_loop(self)

    @property
    def plain(self) -> bool:
        """No operator that changes what a draw or a fit is (subsample, weighting, tilt); size
        schedules and growth only change sizes (the Gaussian's factored route reads this)."""
        return not (self.subsample or self.weighted or self.tilted)

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def dtype(self) -> str:
        return self.model.dtype


class LoopParams(NamedTuple):
    """Swept values of a loop, as array leaves (one compilation serves all values).

    Attributes:
      n_ini: ``()`` int32, real samples of generation 1 (= n_real for synthetic augmentation).
      n_real: ``()`` int32, real samples per generation t ≥ 2.
      n_syn: ``()`` int32, synthetic samples per generation t ≥ 2.
      lam: ``()`` float, sampling bias λ ∈ (0, 1].
      memory: ``()`` int32, memory K (1 ≤ K ≤ ``LoopSpec.memory``).
      n_train: ``()`` int32, the subsample's size (``LoopSpec.subsample``).
      real_weight: ``()`` float, w ∈ [0, 1] (``LoopSpec.weighted``).
      tilt: ``()`` float, the curation strength β ≥ 0 (``LoopSpec.tilted``).
      growth: ``()`` float, α ≥ 0: generation t draws ``⌈n_s t^α⌉`` synthetic samples
        (:func:`grown_size`; α = 0 is the constant n_s).

    The host loop of the deep models uses the same record with Python scalars.
    """

    n_ini: Array
    n_real: Array
    n_syn: Array
    lam: Array
    memory: Array
    n_train: Array = 0
    real_weight: Array = 0.5
    tilt: Array = 0.0
    growth: Array = 0.0

    @classmethod
    def create(cls, *, n_ini=2, n_real=0, n_syn=0, lam=1.0, memory=1, n_train=0, real_weight=0.5, tilt=0.0,
               growth=0.0, dtype="float32") -> "LoopParams":
        """Cast values (scalars or arrays, possibly traced) to the leaf dtypes."""
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        f = lambda v: jnp.asarray(v, dtype)  # noqa: E731
        return cls(i32(n_ini), i32(n_real), i32(n_syn), f(lam), i32(memory), i32(n_train), f(real_weight), f(tilt),
                   jnp.asarray(growth, jnp.float32))

    @staticmethod
    def split_total(real_fraction, n_total):
        """``n_r = round(p n)``, ``n_s = n − n_r`` (Fig. 34); works on traced values."""
        n_total = jnp.asarray(n_total, jnp.int32)
        n_real = jnp.round(jnp.asarray(real_fraction, jnp.float32) * n_total).astype(jnp.int32)
        return n_real, n_total - n_real


# ----------------------------------------------------------------------------- the generation step

GROWTH_SNAP = 1e-5
"""Relative distance below which ``n_s t^α`` counts as an integer in :func:`grown_size` (float32
rounding of an exact integer such as 100·4¹ must not add a point)."""


def grown_size(n_syn, growth, t):
    """``n_t = ⌈n_s t^α⌉`` (Xu, He & Cheng 2025), traced or not; values within
    :data:`GROWTH_SNAP` (relative) of an integer are that integer. α = 0 gives n_s.

    Computed in float32 (the engine's arithmetic, shared by the host-side
    :func:`synthetic_sizes` and the closed forms, so they use the same n_t):
    exact below about 10⁵ points, to ~10⁻⁷ relative beyond."""
    x = jnp.asarray(n_syn, jnp.float32) * jnp.exp(jnp.asarray(growth, jnp.float32)
                                                  * jnp.log(jnp.asarray(t, jnp.float32)))
    nearest = jnp.round(x)
    size = jnp.where(jnp.abs(x - nearest) <= GROWTH_SNAP * x, nearest, jnp.ceil(x))
    return jnp.where(jnp.asarray(growth) == 0, jnp.asarray(n_syn, jnp.int32), size.astype(jnp.int32))


def synthetic_sizes(n_syn, growth=0.0, schedule: tuple = (), generations: int = 2) -> np.ndarray:
    """Host-side synthetic sizes of generations 2 … T, ``(..., T − 1)`` int64 (``n_syn`` and ``growth``
    broadcast): the schedule, else :func:`grown_size` in the same float32 arithmetic."""
    t = np.arange(2, max(generations, 2) + 1)
    if schedule:
        return np.broadcast_to(np.asarray(schedule, np.int64)[: t.size], np.shape(n_syn) + (t.size,))
    n = np.asarray(n_syn, np.int64)[..., None]
    return np.asarray(grown_size(n, np.asarray(growth)[..., None], t), np.int64)


EXACT_SUM_LIMIT = 1 << 20
"""Horizons up to which :func:`synthetic_extent` sums the sizes exactly (beyond: an upper bound)."""


def synthetic_extent(n_syn, growth=0.0, schedule: tuple = (), generations: int = 2) -> tuple[int, int]:
    """``(largest, total)`` synthetic sizes over generations 2 … T (all cells of ``n_syn``), without
    listing T sizes where none is needed: constant sizes and ``n_s t^α`` (increasing in t) are
    read off at T; a total over more than :data:`EXACT_SUM_LIMIT` growing generations is bounded
    by ``n_s (T^{α+1} − 1)/(α + 1) + T`` (enough for capacity and resource estimates)."""
    n = int(np.max(n_syn))
    steps = max(generations - 1, 0)
    if schedule:
        return max(schedule, default=0), sum(schedule)
    if not growth or steps == 0:
        return n, n * steps
    largest = int(grown_size(n, growth, generations))
    if generations <= EXACT_SUM_LIMIT:
        return largest, int(synthetic_sizes(n, growth, (), generations).sum())
    return largest, int(n * (generations ** (growth + 1) - 1) / (growth + 1)) + generations


def synthetic_size(spec: LoopSpec, params: LoopParams, t):
    """Synthetic samples drawn at generation t ≥ 2: the user schedule's entry, else :func:`grown_size`."""
    if spec.schedule:
        return jnp.asarray(spec.schedule, jnp.int32)[jnp.asarray(t, jnp.int32) - 2]
    if isinstance(params.growth, (int, float)) and params.growth == 0:
        return params.n_syn  # the host loop's constant size stays a Python int
    return grown_size(params.n_syn, params.growth, t)


def first_training_set(key: Array, kind: str, model: LoopModel, params: LoopParams):
    """Generation 1's training set: ``n_ini`` real draws, or D_r (``n_real`` draws) in
    synthetic augmentation, where it is then reused at every generation."""
    n = params.n_real if kind == "synthetic-augmentation" else params.n_ini
    return model.sample_real(key, n)


def training_set(keys: "GenerationKeys", t, spec: LoopSpec, model: LoopModel, params: LoopParams, *,
                 history, valid, real, pool, first=None):
    """The training set of a generation t ≥ 2, and the updated accumulating pool.

    Args:
      keys: the generation's :class:`GenerationKeys` (new real data, the
        synthetic draw, the subsample).
      t: the generation (traced in the executor).
      spec: the loop (kind, K_max, accumulate and the operators).
      model: the model record (its ``sample``, ``sample_mixture``,
        ``sample_real``, ``concat``, ``append``, ``confine``; ``tilt``,
        ``mix``, ``subsample`` for the operators that use them).
      params: sizes and λ (traced in the executor, Python scalars in the host loop).
      history: the previous models: with ``spec.memory == 1`` the newest model's
        parameters, else whatever ``model.sample_mixture`` takes (a ring buffer
        stacked on a ``(K_max,)`` axis, or a list in the host loop).
      valid: which slots of ``history`` hold one of the last K generations.
      real: D_r (synthetic augmentation; ignored otherwise).
      pool: the accumulated synthetic pool (``spec.accumulate``; else ignored).
      first: G¹'s parameters (fully synthetic: later data lie in its support).

    Returns:
      ``(train, pool)``.
    """
    n_syn = synthetic_size(spec, params, t)
    lam = params.lam
    if spec.tilted:  # the tilted λ-sampler has λ folded in
        tilt = lambda p: model.tilt(p, params.lam, params.tilt)  # noqa: E731
        history = tilt(history) if spec.memory == 1 else jax.vmap(tilt)(history)
        lam = jnp.ones_like(params.lam)
    if spec.memory == 1:
        synthetic = model.sample(keys.syn, history, n_syn, lam)
    else:
        synthetic = model.sample_mixture(keys.syn, history, valid, n_syn, lam)
    if spec.accumulate:
        pool = model.append(pool, synthetic)
        synthetic = pool
    if spec.kind == "fresh":
        real = model.sample_real(keys.real, params.n_real)
    if spec.kind == "fully-synthetic":
        train = model.confine(synthetic, first)
    elif spec.weighted:
        train = model.mix(real, synthetic, params.real_weight)
    else:
        train = model.concat(real, synthetic)
    if spec.subsample:
        train = model.subsample(keys.subsample, train, params.n_train)
    return train, pool


class GenerationKeys(NamedTuple):
    """The keys of one generation (module docstring): new real data, the synthetic draw,
    the fit, the diagnostics and accumulate-subsample's subsample."""

    real: Array
    syn: Array
    fit: Array
    diagnose: Array
    subsample: Array


def generation_keys(chain_key: Array, t) -> GenerationKeys:
    """The :class:`GenerationKeys` of generation ``t``: ``g = fold_in(chain_key, t)`` split in
    three, then ``fold_in(g, 3)`` and ``fold_in(g, 4)``."""
    g = jax.random.fold_in(chain_key, t)
    k_real, k_syn, k_fit = jax.random.split(g, 3)
    return GenerationKeys(k_real, k_syn, k_fit, jax.random.fold_in(g, 3), jax.random.fold_in(g, 4))


def slot_mask(t: Array, memory: Array, slots: int) -> Array:
    """Ring-buffer slots holding one of the generations ``max(1, t − K) … t − 1``: ``(K_max,)`` bool.

    Generation s lives in slot ``(s − 1) mod K_max``.
    """
    j = jnp.arange(slots)
    gen = t - 1 - jnp.mod(t - 2 - j, slots)  # latest generation s ≤ t − 1 stored in slot j
    return (gen >= jnp.maximum(1, t - memory)) & (gen >= 1)


# ----------------------------------------------------------------------------- scan × vmap


class ChainState(NamedTuple):
    """Carry of the scan over generations.

    Attributes:
      models: the fitted parameters stacked over the K_max ring-buffer slots.
      real: D_r (synthetic augmentation; else None).
      pool: the accumulated synthetic pool (``accumulate``; else None).
      first: G¹'s parameters (fully synthetic; else None).
    """

    models: Any
    real: Any
    pool: Any
    first: Any


def ordered_scan(step, state, first_record, ts: Array):
    """``lax.scan(step, ...)`` whose records are emitted one step late, generation 1's first.

    jaxlib's CPU LAPACK kernels (up to at least 0.10.2) deadlock when two of
    them run at once (benchmarks/README.md). Carrying each generation's record
    and emitting it at the next step makes every factorisation of the loop
    consume the one before, so XLA cannot schedule two concurrently. This helper
    (and :func:`madjax.distributed.chain_devices`' single CPU device) can go
    once the minimum jaxlib has the upstream fix.

    ``step(state, t) -> (state, record)``; returns the records stacked over
    ``(1 + len(ts),)`` and the final state.
    """

    def body(carry, t):
        state, previous = carry
        state, record = step(state, t)
        return (state, record), previous

    (state, last), records = jax.lax.scan(body, (state, first_record), ts)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), records, last), state


def run_chain(key: Array, params: LoopParams, spec: LoopSpec, generations: int, snapshots: tuple = ()):
    """One chain of the loop: generation 1, then a ``lax.scan`` over generations 2 … T.

    Args:
      key: the chain's PRNG key (module docstring for the per-generation keys).
      params: :class:`LoopParams` (scalars).
      spec: :class:`LoopSpec` (static).
      generations: T (static).
      snapshots: generations (static, 1 … T) whose fitted parameters are kept.

    Returns:
      The model's diagnostics record with leaves of shape ``(T,)``, generation 1
      first; with ``snapshots``, the pair ``(record, params)`` where ``params``
      has leaves stacked over ``(len(snapshots),)``.
    """
    TRACES[spec] += 1
    model = spec.model.build()
    slots = spec.memory
    keys = generation_keys(key, 1)
    first_data = first_training_set(keys.real, spec.kind, model, params)
    first, info = model.fit(keys.fit, model.init(jax.random.fold_in(key, 0)), first_data)  # t = 0: the init stream
    kept = jnp.asarray(snapshots, jnp.int32)
    state = ChainState(
        models=jax.tree.map(lambda x: jnp.broadcast_to(x, (slots,) + x.shape), first),
        real=first_data if spec.kind == "synthetic-augmentation" else None,
        pool=model.empty(generations) if spec.accumulate else None,
        first=first if spec.kind == "fully-synthetic" else None,
    )
    snaps = jax.tree.map(lambda x: jnp.broadcast_to(x, kept.shape + x.shape), first)

    def step(carry, t):
        state, snaps = carry
        keys = generation_keys(key, t)
        previous = jax.tree.map(lambda x: x[jnp.mod(t - 2, slots)], state.models)  # G^{t−1}: the warm start
        train, pool = training_set(keys, t, spec, model, params, history=previous if slots == 1 else state.models,
                                   valid=slot_mask(t, params.memory, slots), real=state.real, pool=state.pool,
                                   first=state.first)
        fitted, info = model.fit(keys.fit, previous, train)
        slot = jnp.mod(t - 1, slots)
        models = jax.tree.map(lambda buf, x: buf.at[slot].set(x), state.models, fitted)
        hit = kept == t
        snaps = jax.tree.map(lambda s, x: jnp.where(hit.reshape(hit.shape + (1,) * x.ndim), x, s), snaps, fitted)
        return (state._replace(models=models, pool=pool), snaps), model.diagnose(keys.diagnose, fitted, info, t)

    records, (_, snaps) = ordered_scan(step, (state, snaps), model.diagnose(keys.diagnose, first, info, jnp.int32(1)),
                                       jnp.arange(2, generations + 1, dtype=jnp.int32))
    return (records, snaps) if snapshots else records


def chain_keys(seed_key: Array, chain_ids: Array) -> Array:
    """Per-chain keys ``fold_in(seed_key, i)``: independent of chunking and devices."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(seed_key, chain_ids)


def run_chains(seed_key: Array, chain_ids: Array, params: LoopParams, spec: LoopSpec, generations: int,
               snapshots: tuple = ()):
    """:func:`run_chain` vmapped over chains: leaves of shape ``(chains, T)`` (snapshots ``(chains, S, ...)``)."""
    keys = chain_keys(seed_key, chain_ids)
    return jax.vmap(run_chain, in_axes=(0, None, None, None, None))(keys, params, spec, generations, snapshots)


run_chains_jit = jax.jit(run_chains, static_argnames=("spec", "generations", "snapshots"))
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


# ----------------------------------------------------------------------------- chunks, devices, processes


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


def process_chains(chains: int) -> tuple[int, int]:
    """This process's contiguous share ``[start, stop)`` of the chains (multi-host runs)."""
    n, i = jax.process_count(), jax.process_index()
    per = -(-chains // n)
    return min(i * per, chains), min((i + 1) * per, chains)


def gather_processes(records: dict, chains: int) -> dict:
    """Concatenate every process's chains (in process order = chain order)."""
    from jax.experimental import multihost_utils

    per = -(-chains // jax.process_count())
    out = {}
    for name, value in records.items():
        padded = np.zeros((per,) + value.shape[1:], value.dtype)
        padded[: len(value)] = value
        gathered = np.asarray(multihost_utils.process_allgather(padded))
        out[name] = gathered.reshape((-1,) + value.shape[1:])[:chains]
    return out


def run_chunked(chunk_fn, *, chains: int, chunk: int, first_chain: int = 0, progress: bool = False,
                desc: str = "chains") -> dict:
    """Run chains ``first_chain … first_chain + chains − 1`` in chunks of at most ``chunk``.

    ``chunk_fn(ids) -> record`` computes padded, sharded chain ids
    (:func:`padded_chain_ids`; e.g. ``run_chains_jit`` or ``run_cells_jit``
    with everything else bound) and returns a NamedTuple or dict of arrays
    with the chain axis first. Each process of a ``jax.distributed``
    run computes its share (:func:`process_chains`); the shares are gathered.

    Returns:
      ``{field: np.ndarray}`` with ``chains`` rows.
    """
    from madjax._progress import progress_bar

    lo, hi = process_chains(chains)
    pieces = []
    with progress_bar(total=hi - lo, desc=desc, enabled=progress) as bar:
        for start in range(lo, hi, chunk):
            ids, count = padded_chain_ids(first_chain + start, min(chunk, hi - start))
            out = jax.device_get(chunk_fn(ids))
            pieces.append(jax.tree.map(lambda x, c=count: x[:c], out))
            bar.update(count)
    pieces = [p._asdict() if hasattr(p, "_asdict") else p for p in pieces]
    records = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
    if jax.process_count() > 1:
        records = gather_processes(records, chains)
    return records
