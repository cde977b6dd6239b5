"""``madjax.simulate``: many chains of one loop, returned as an ``xarray.Dataset``.

This module validates a simulation request (every check before any work),
runs the compiled loop driver over bounded chunks of chains -- sharded over
all local devices along a ``("chain",)`` mesh -- and packs the diagnostics
into a Dataset with dims ``(chain, generation)`` (DESIGN §10).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
import xarray as xr

from madjax.gaussian import FACTORED_ONLY, FACTORS, LOGDET_ACCURACY, choose_factor, full_rank
from madjax.io import atomic_path, describe, provenance
from madjax.loops import (
    LOOP_ALIASES,
    LOOPS,
    LoopParams,
    LoopSpec,
    run_chains_jit,
    run_chunked,
    synthetic_extent,
    synthetic_sizes,
)
from madjax.models import MODELS, resolve_model, train_rows
from madjax.resources import check_chain_run
from madjax.validation import (
    INT32_MAX,
    ParameterError,
    check_choice,
    check_dtype,
    check_fraction,
    check_int,
    check_int32,
    check_lam,
    check_loop_sizes,
    check_nonnegative,
    check_seed,
    check_writable,
    resolve_loop_sizes,
)

# Bound on the memory of one compiled chunk.
_CHUNK_BYTES = 1 << 30
# Per-generation booleans reported as per-chain counts ``n_<name>`` (``em_converged`` as its complement).
_TROUBLE = ("underflow", "nonfinite")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """A validated simulation request; ``n_real``/``n_syn`` are resolved from p, n if given.

    ``options`` holds the model's own options (:data:`madjax.models.MODELS`),
    as sorted ``(name, value)`` pairs so that the config stays hashable.
    """

    model: str
    loop: str
    dim: int
    n_ini: int
    n_real: int
    n_syn: int
    lam: float
    generations: int
    chains: int
    memory: int
    accumulate: bool
    real_fraction: float | None
    n_total: int | None
    dtype: str
    seed: int
    target: str = "normal"
    options: tuple = ()
    subsample: bool = False
    n_train: int = 0
    weighted: bool = False
    real_weight: float = 0.5
    tilted: bool = False
    tilt: float = 0.0
    growth: float = 0.0
    schedule: tuple = ()

    def model_spec(self):
        largest, _ = synthetic_extent(self.n_syn, self.growth, self.schedule, self.generations)
        rows = max(self.n_ini, self.n_real, largest, 2)
        train = train_rows(self.n_ini, self.n_real, self.n_syn, generations=self.generations,
                           accumulate=self.accumulate, growth=self.growth, schedule=self.schedule)
        return MODELS[self.model].build(dim=self.dim, dtype=self.dtype, draw_rows=rows, train_rows=train,
                                        target=self.target, **dict(self.options))

    def spec(self) -> LoopSpec:
        return LoopSpec(kind=self.loop, model=self.model_spec(), memory=self.memory, accumulate=self.accumulate,
                        subsample=self.subsample, weighted=self.weighted, tilted=self.tilted, schedule=self.schedule)

    def params(self) -> LoopParams:
        return LoopParams.create(n_ini=self.n_ini, n_real=self.n_real, n_syn=self.n_syn, lam=self.lam,
                                 memory=self.memory, n_train=self.n_train, real_weight=self.real_weight,
                                 tilt=self.tilt, growth=self.growth, dtype=self.dtype)


def make_config(*, model="gaussian", loop, dim=None, n_ini=None, n_real=None, n_syn=None, lam=1.0,
                generations, chains=1, memory=1, accumulate=False, real_fraction=None, n_total=None,
                engine=None, dtype="float32", seed=0, factor=None, w2_every=None, target=None, bandwidth=None,
                n_eval=None, estimator=None, reference=None, subsample=False, n_train=None, real_weight=None,
                tilt=None, growth=0.0, n_syn_schedule=None) -> SimulationConfig:
    """Validate a simulation request (raises :class:`ParameterError` naming the parameter).

    Sizes per loop (DESIGN §10): fully-synthetic takes ``n_ini`` and ``n_syn``
    (``n_real`` omitted or 0); synthetic-augmentation fits G¹ on D_r, so
    ``n_ini`` is omitted or equals ``n_real``; fresh takes all three.
    ``real_fraction`` and ``n_total`` together replace ``n_real``/``n_syn``.
    Model options: ``engine``, ``factor``, ``w2_every`` (Gaussian; ``factor="auto"``
    or None picks :func:`madjax.gaussian.choose_factor`), ``bandwidth`` (KDE),
    ``n_eval`` (GMM, KDE); ``target`` ``"normal"`` or ``"grid"`` (point models);
    ``estimator`` and ``reference`` (Gaussian, :class:`~madjax.gaussian.GaussianSpec`).
    Loop operators (:mod:`madjax.loops`): ``loop`` may be an alias of
    :data:`~madjax.loops.LOOP_ALIASES`; ``subsample`` with ``n_train`` (default
    n_ini); ``real_weight`` w turns weighted mixing on; ``tilt`` β curation;
    ``growth`` α or ``n_syn_schedule`` (T − 1 sizes of generations 2 … T).
    """
    subsample = bool(subsample)
    if loop in LOOP_ALIASES:
        alias = LOOP_ALIASES[loop]
        loop, accumulate, subsample = alias["kind"], accumulate or alias["accumulate"], subsample or alias["subsample"]
    check_choice("loop", loop, LOOPS + tuple(LOOP_ALIASES))
    target, dim, options = resolve_model(model, target=target, dim=dim,
                                         options=dict(engine=engine, factor=factor, w2_every=w2_every,
                                                      bandwidth=bandwidth, n_eval=n_eval, estimator=estimator,
                                                      reference=reference))
    dtype = check_dtype(dtype)
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    chains = check_int("chains", chains, minimum=1, maximum=INT32_MAX)
    memory = check_int("memory", memory, minimum=1)
    seed = check_seed(seed)
    if accumulate and memory > 1:
        raise ParameterError("memory", "memory K > 1 cannot be combined with accumulate")

    if real_fraction is not None or n_total is not None:
        if n_real is not None or n_syn is not None:
            raise ParameterError("real_fraction", "give either real_fraction with n_total, or n_real/n_syn, not both")
        if real_fraction is None:
            raise ParameterError("real_fraction", "is required with n_total")
        if n_total is None:
            raise ParameterError("n_total", "is required with real_fraction")
        if loop == "fully-synthetic":
            raise ParameterError("real_fraction", "has no meaning in the fully-synthetic loop")
        real_fraction = check_fraction(real_fraction)
        n_total = check_int("n_total", n_total, minimum=2, maximum=INT32_MAX)
        n_real, n_syn = (int(v) for v in LoopParams.split_total(real_fraction, n_total))

    for name, value in (("n_ini", n_ini), ("n_real", n_real), ("n_syn", n_syn)):
        if value is not None:
            check_int(name, value, minimum=0)
    n_ini, n_real = resolve_loop_sizes(loop, n_ini, n_real)
    if n_ini is None:
        raise ParameterError("n_ini", f"is required for the {loop} loop")
    if n_syn is None:
        raise ParameterError("n_syn", f"is required for the {loop} loop")
    fewest = MODELS[model].min_points(options)
    if n_ini < fewest:
        name = "n_real" if loop == "synthetic-augmentation" else "n_ini"
        raise ParameterError(name, f"a training set of the {model} model needs at least {fewest} points, got {n_ini}")
    if generations > 1 and n_real + n_syn < fewest:
        name = "n_syn" if loop == "fully-synthetic" else ("n_total" if n_total is not None else "n_syn")
        raise ParameterError(name, f"a training set of the {model} model needs at least {fewest} points, "
                                   f"got n_real + n_syn = {n_real + n_syn}")
    check_loop_sizes(n_ini=n_ini, n_real=n_real, n_syn=n_syn, generations=generations, accumulate=accumulate)
    ops = check_operators(loop=loop, generations=generations, n_ini=n_ini, n_syn=n_syn, subsample=subsample,
                          n_train=n_train, real_weight=real_weight, tilt=tilt, growth=growth,
                          n_syn_schedule=n_syn_schedule)
    if model == "gaussian":
        smallest = min(ops["schedule"], default=n_syn)  # full rank needs every draw's size
        options["factor"] = _gaussian_factor(options, loop, dim, n_ini, n_real, smallest, memory, accumulate, ops)
        options["engine"] = check_choice("engine", options["engine"], ("exact", "sampled"))
        options["w2_every"] = check_int("w2_every", options["w2_every"], minimum=1)
    largest, _ = synthetic_extent(n_syn, ops["growth"], ops["schedule"], generations)
    check_int32("growth", largest, "the largest synthetic sample n_s T^growth")
    if model != "gaussian" or options["engine"] == "sampled":
        if accumulate:  # the pool holds T draws of the largest size
            check_int32("generations", generations * max(n_ini, n_real, largest),
                        "the pool's rows T x max(n_ini, n_real, n_syn)")
    config = SimulationConfig(model=model, loop=loop, dim=dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn,
                              lam=lam, generations=generations, chains=chains, memory=memory,
                              accumulate=bool(accumulate), real_fraction=real_fraction, n_total=n_total,
                              dtype=dtype, seed=seed, target=target, options=tuple(sorted(options.items())), **ops)
    config.spec()  # the model validates its own options and refuses loop variants it cannot run
    return config


def check_operators(*, loop, generations, n_ini, n_syn, subsample=False, n_train=None, real_weight=None, tilt=None,
                    growth=0.0, n_syn_schedule=None) -> dict:
    """Validate the loop operators of a request; returns the :class:`SimulationConfig` fields
    (``subsample, n_train, weighted, real_weight, tilted, tilt, growth, schedule``)."""
    ops = dict(subsample=bool(subsample), n_train=0, weighted=real_weight is not None,
               real_weight=0.5 if real_weight is None else check_fraction(real_weight, "real_weight"),
               tilted=tilt is not None, tilt=0.0, growth=0.0, schedule=())
    if subsample:
        ops["n_train"] = n_ini if n_train is None else check_int("n_train", n_train, minimum=2, maximum=INT32_MAX)
    elif n_train is not None:
        raise ParameterError("n_train", "is the subsample's size of accumulate-subsample (--loop accumulate-subsample)")
    if tilt is not None:
        ops["tilt"] = check_nonnegative("tilt", tilt, maximum=1e6)
    growth = check_nonnegative("growth", 0.0 if growth is None else growth, maximum=4.0)
    if n_syn_schedule is not None:
        if growth:
            raise ParameterError("n_syn_schedule", "give either growth or a schedule, not both")
        schedule = tuple(check_int("n_syn_schedule", v, minimum=0, maximum=INT32_MAX) for v in n_syn_schedule)
        if len(schedule) != generations - 1:
            raise ParameterError("n_syn_schedule", f"needs {generations - 1} sizes (generations 2 ... T), "
                                                   f"got {len(schedule)}")
        if loop == "fully-synthetic" and min(schedule, default=2) < 2:
            raise ParameterError("n_syn_schedule", "the fully-synthetic loop needs at least 2 samples per generation")
        ops["schedule"] = schedule
    ops["growth"] = growth
    if (growth or n_syn_schedule is not None) and loop != "fully-synthetic" and n_syn == 0 and not n_syn_schedule:
        raise ParameterError("growth", "grows the synthetic sample: it needs n_syn > 0")
    return ops


def _gaussian_factor(options, loop, dim, n_ini, n_real, n_syn, memory, accumulate, ops) -> str:
    factor = check_choice("factor", options["factor"], ("auto",) + FACTORS)
    best = choose_factor(loop, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory,
                         accumulate=accumulate, engine=options["engine"], estimator=options["estimator"],
                         plain=not (ops["tilted"] or ops["weighted"] or ops["subsample"]), weighted=ops["weighted"],
                         subsample=ops["subsample"])
    if factor == "auto":
        return best
    if factor == "factored" and best != "factored":
        raise ParameterError("factor", FACTORED_ONLY)
    if factor == "cholesky" and not full_rank(loop, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn):
        raise ParameterError("factor", f"cholesky needs every training set to hold at least d + 1 = {dim + 1} "
                                       "points (a singular covariance has no Cholesky factor); use eigh or auto")
    return factor


def chain_cost(config: SimulationConfig) -> tuple[int, float]:
    """Per-chain working set (bytes) and seconds per chain-generation of a request."""
    spec = config.model_spec()
    return MODELS[config.model].cost(spec, config.memory, config.generations, config.accumulate)


def default_chunk(config: SimulationConfig) -> int:
    """Chains per compiled call, so that one call's working set stays near 1 GiB."""
    per_chain, _ = chain_cost(config)
    return max(1, min(config.chains, _CHUNK_BYTES // per_chain))


def check_resources(config: SimulationConfig, chunk: int | None = None, allow_large: bool = False) -> None:
    """Refuse a request whose memory or time is absurd (:mod:`madjax.resources`), before any work."""
    per_chain, cost = chain_cost(config)
    points = config.model_spec().points
    sizes = dict(chains=config.chains, generations=config.generations, dim=config.dim, memory=config.memory)
    if points:  # the model draws points: the largest size counts
        name = max(("n_ini", "n_real", "n_syn"), key=lambda k: getattr(config, k))
        sizes[name] = getattr(config, name)
    check_chain_run(chains=config.chains, generations=config.generations, per_chain_bytes=per_chain,
                    per_chain_gen_s=cost, chunk=min(chunk or default_chunk(config), config.chains),
                    memory=config.memory, sizes=sizes,
                    what=f"{config.chains} chains x {config.generations} generations of the {config.model} model"
                         f" at d = {config.dim}"
                         + (f", memory K = {config.memory}" if config.memory > 1 else "")
                         + (f", {points} points per draw" if points else ""),
                    allow_large=allow_large)


def run_diagnostics(config: SimulationConfig, *, chunk: int | None = None, progress: bool = False,
                    snapshots: tuple = (), first_chain: int = 0) -> dict:
    """Run all chains in chunks (:func:`madjax.loops.run_chunked`); NumPy arrays ``(chains, T)``.

    Chain i always uses key ``fold_in(key(seed), i)``, so results do not depend
    on ``chunk``, on the number of devices or on the number of processes.
    With ``snapshots`` the fitted parameters of those generations come back
    as ``snap_<field>`` arrays ``(chains, len(snapshots), ...)``. Chains
    ``first_chain … first_chain + chains − 1`` are run (batches of a long run
    give the numbers of one call).
    """
    spec, params = config.spec(), config.params()
    chunk = default_chunk(config) if chunk is None else check_int("chunk", chunk, minimum=1)
    seed_key = jax.random.key(config.seed)

    def chunk_fn(ids):
        out = run_chains_jit(seed_key, ids, params, spec, config.generations, snapshots)
        records, snaps = out if snapshots else (out, None)
        records = dict(records._asdict() if hasattr(records, "_asdict") else records)
        if snaps is not None:
            records.update({f"snap_{k}": v for k, v in snaps._asdict().items()})
        return records

    return run_chunked(chunk_fn, chains=config.chains, chunk=chunk, first_chain=first_chain, progress=progress)


def logdet_status(lost: np.ndarray, w2_every: int) -> np.ndarray:
    """``cov_logdet_status`` ``(chains, T)`` int8: 0 computed, 1 skipped by ``w2_every``, 2 lost precision."""
    skipped = (np.arange(lost.shape[-1]) % w2_every != 0)[None, :]
    return np.where(lost, 2, np.where(skipped, 1, 0)).astype(np.int8)


def theory_moments(config: SimulationConfig) -> dict:
    """The closed forms of :func:`madjax.theory.loop_moments` for this run (Gaussian model only)."""
    if config.model != "gaussian":
        return {}
    from madjax import theory

    options = dict(config.options)
    grown = config.growth > 0 or bool(config.schedule)
    sizes = (synthetic_sizes(config.n_syn, config.growth, config.schedule, config.generations)[: config.generations - 1]
             if grown else None)
    return theory.loop_moments(config.loop, config.generations, dim=config.dim, n_ini=config.n_ini,
                               n_real=config.n_real, n_syn=config.n_syn, lam=config.lam, memory=config.memory,
                               accumulate=config.accumulate, estimator=options["estimator"],
                               spectrum=options["spectrum"], sizes=sizes, subsample=config.subsample,
                               weighted=config.weighted, real_weight=config.real_weight, tilted=config.tilted,
                               tilt=config.tilt)


def lost_precision_warning(ds: xr.Dataset) -> str | None:
    """One line when some ``cov_logdet`` values could not be computed to their accuracy (NaN, status 2)."""
    if "cov_logdet_status" not in ds:
        return None
    share = float((ds.cov_logdet_status == 2).any("generation").mean())
    if share == 0:
        return None
    return (f"cov_logdet: {100 * share:.3g} % of chains have generations whose log det Sigma_t is not computable "
            f"to {LOGDET_ACCURACY:g} nats in {ds.cov_logdet.dtype} (recorded as NaN, cov_logdet_status = 2); "
            "rerun with --x64")


def theory_z(ds: xr.Dataset) -> dict[str, tuple[float, int, int]]:
    """Per variable with a ``<name>_theory`` closed form: ``(max |z|, at generation, generations left out)``.

    ``z_t = (mean over chains − theory_t) / (sd / sqrt(chains))`` over the
    generations where the theory is finite, the chains vary and no chain's
    value is missing (a mean over the chains that kept their precision would
    be a biased one); ``w2_sq`` is compared with the chains' ``w2**2``.
    """
    out = {}
    chains = ds.sizes["chain"]
    for name in [v for v in ds.data_vars if str(v).endswith("_theory")]:
        var = name[: -len("_theory")]
        sim = (ds.w2**2 if var == "w2_sq" else ds[var]).astype(np.float64)
        theory = ds[name].astype(np.float64).values
        complete = (sim.notnull().sum("chain") == chains).values
        se = sim.std("chain", ddof=1).values / np.sqrt(chains)
        usable = np.isfinite(theory) & (se > 0) & (chains > 1)
        z = np.where(usable & complete, np.abs(sim.mean("chain").values - theory) / np.where(se > 0, se, 1), np.nan)
        if np.isfinite(z).any():
            at = int(np.nanargmax(z))
            out[var] = (float(z[at]), int(ds.generation[at]), int(np.sum(usable & ~complete)))
    return out


def theory_table(ds: xr.Dataset) -> str:
    """The ``--theory`` table: the largest per-generation |z| of each variable against its closed form."""
    rows = theory_z(ds)
    if not rows:
        return ("no closed form for this loop in madjax.theory (memory K > 1, accumulate-subsample, the point "
                "models and the other cases listed in madjax.theory.loop_moments have none)")
    lines = [f"{'variable':<14} {'max |z|':>8} {'at t':>6}  generations left out (a chain's value missing)"]
    lines += [f"{var:<14} {z:>8.2f} {t:>6d}  {left}" for var, (z, t, left) in rows.items()]
    return "\n".join(lines)


def to_dataset(config: SimulationConfig, records: dict, snapshots: tuple = (), first_chain: int = 0) -> xr.Dataset:
    """Pack ``(chains, T)`` records into the Dataset of DESIGN §10 (``long_name``\\s: :data:`madjax.io.VARIABLES`).

    Per-generation trouble flags (``underflow``, ``nonfinite``) become per-chain
    counts ``n_<flag>``, ``em_converged`` becomes ``n_em_unconverged``,
    ``logdet_lost`` becomes ``cov_logdet_status``; ``snap_<field>`` arrays get
    dims ``(chain, snapshot, <field>_axis1, …)``.
    """
    coords = {"chain": first_chain + np.arange(config.chains), "generation": np.arange(1, config.generations + 1)}
    dims = ("chain", "generation")
    data = {}
    for name, values in records.items():
        if name in _TROUBLE:
            data[f"n_{name}"] = (("chain",), values.sum(axis=1).astype(np.int32))
        elif name == "em_converged":
            data["n_em_unconverged"] = (("chain",), (~values).sum(axis=1).astype(np.int32))
        elif name == "logdet_lost":
            data["cov_logdet_status"] = (dims, logdet_status(values, dict(config.options).get("w2_every", 1)))
        elif name.startswith("snap_"):
            extra = tuple(f"{name[5:]}_axis{i}" for i in range(1, values.ndim - 1))
            data[name] = (("chain", "snapshot") + extra, values)
        else:
            data[name] = (dims, values)
    if snapshots:
        coords["snapshot"] = np.asarray(snapshots)
    for name, values in theory_moments(config).items():
        data[f"{name}_theory"] = (("generation",), np.asarray(values, records["w2"].dtype))
    ds = xr.Dataset(data, coords=coords)
    if "cov_logdet_status" in ds:
        ds["cov_logdet_status"].attrs.update(flag_values=np.arange(3, dtype=np.int8),
                                             flag_meanings="computed skipped_by_w2_every lost_precision")
    return ds


def simulate(*, model="gaussian", loop, dim=None, n_ini=None, n_real=None, n_syn=None, lam=1.0,
             generations, chains=1, memory=1, accumulate=False, real_fraction=None, n_total=None,
             engine=None, dtype="float32", seed=0, factor=None, w2_every=None, target=None, bandwidth=None,
             n_eval=None, estimator=None, reference=None, subsample=False, n_train=None, real_weight=None, tilt=None,
             growth=0.0, n_syn_schedule=None, snapshots=(), first_chain=0, chunk=None, progress=False,
             allow_large=False) -> xr.Dataset:
    """Simulate ``chains`` independent chains of a self-consuming loop.

    Args mirror the command-line options (DESIGN §10): ``model`` is
    ``"gaussian"``, ``"gmm"`` or ``"kde"`` (:data:`madjax.models.MODELS`);
    ``loop`` is ``"fully-synthetic"``, ``"synthetic-augmentation"`` or
    ``"fresh"``; sizes ``n_ini``, ``n_real``, ``n_syn`` (or ``real_fraction``
    with ``n_total``); ``lam`` the sampling bias λ ∈ (0, 1]; ``memory`` K;
    ``accumulate`` the growing synthetic pool; ``dtype="float64"`` needs jax's
    x64 mode; ``seed`` ∈ [0, 2³² − 1]. Gaussian options: ``engine``
    ``"exact"`` (default) or ``"sampled"``; ``factor`` ``"auto"`` (default),
    ``"eigh"``, ``"cholesky"`` or ``"factored"`` (:class:`~madjax.gaussian.GaussianSpec`);
    ``w2_every=k`` records ``w2`` and ``cov_logdet`` on generations 1, 1 + k, …
    only (NaN elsewhere). Point models: ``target`` ``"normal"`` (N(0, I_d),
    needs ``dim``) or ``"grid"`` (the 25 modes, d = 2; the GMM's only target);
    ``bandwidth`` (KDE: ``"scott"``, ``"silverman"`` or a number); ``n_eval``
    points of the evaluation sample. ``snapshots`` keeps the fitted parameters
    of those generations (``snap_<field>``); ``estimator`` (``"unbiased"``,
    ``"mle"``, ``"known-cov"``) and ``reference`` (``"identity"``, ``"power:ALPHA"``,
    a file or an array: P_r = N(μ₀, Σ₀)) of the Gaussian; the loop operators
    (``loop="replace"|"accumulate"|"accumulate-subsample"``, ``subsample``,
    ``n_train``, ``real_weight``, ``tilt``, ``growth``, ``n_syn_schedule``;
    :func:`make_config`, :mod:`madjax.loops`); ``first_chain`` runs chains
    ``first_chain …`` (a batch of a longer run). A request whose estimated memory
    or time is absurd is refused unless ``allow_large=True`` (:mod:`madjax.resources`).

    Returns:
      ``xarray.Dataset`` with dims ``(chain, generation)``, generation = 1..T.
      Every model records ``w2``, its distance to P_r (Gaussian: W2; GMM: the
      mixture W2; KDE: debiased Sinkhorn W2) and ``n_nonfinite``. Gaussian:
      ``mean_sq_norm``, ``cov_trace``, ``cov_logdet`` (+ ``cov_logdet_status``),
      ``cov_rank``, ``n_underflow``; point models: ``total_variance``,
      ``recall``, ``precision`` and on the grid ``modal_variance``,
      ``modes_covered``; GMM ``em_iterations``, ``n_em_unconverged``; KDE
      ``bandwidth``. Attributes ``config`` (JSON), ``madjax_version``,
      ``jax_version``, ``device``.

    Raises:
      ValueError (:class:`~madjax.validation.ParameterError`) naming the bad
      parameter, before any work.

    Example:
      >>> ds = simulate(loop="fully-synthetic", dim=2, n_ini=10, n_syn=10, generations=3, chains=4)
      >>> ds.w2.dims, ds.w2.shape
      (('chain', 'generation'), (4, 3))
    """
    config = make_config(model=model, loop=loop, dim=dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn,
                         lam=lam, generations=generations, chains=chains, memory=memory,
                         accumulate=accumulate, real_fraction=real_fraction, n_total=n_total,
                         engine=engine, dtype=dtype, seed=seed, factor=factor, w2_every=w2_every, target=target,
                         bandwidth=bandwidth, n_eval=n_eval, estimator=estimator, reference=reference,
                         subsample=subsample, n_train=n_train, real_weight=real_weight, tilt=tilt, growth=growth,
                         n_syn_schedule=n_syn_schedule)
    snapshots = tuple(sorted({check_int("snapshots", s, minimum=1, maximum=config.generations) for s in snapshots}))
    if chunk is not None:
        check_int("chunk", chunk, minimum=1)
    check_resources(config, chunk, allow_large)
    first_chain = check_int("first_chain", first_chain, minimum=0)
    records = run_diagnostics(config, chunk=chunk, progress=progress, snapshots=snapshots, first_chain=first_chain)
    ds = to_dataset(config, records, snapshots, first_chain)
    warning = lost_precision_warning(ds)
    if warning:
        logging.getLogger("madjax").warning(warning)
    config_record = dataclasses.asdict(config)
    config_record.update(dict(config.options), snapshots=list(snapshots), first_chain=first_chain)
    del config_record["options"]
    ds.attrs.update(provenance(config_record))
    return describe(ds)


def simulate_to_file(out, **kwargs) -> xr.Dataset:
    """:func:`simulate`, then write NetCDF atomically (no partial file on failure)."""
    out = check_writable("out", out)
    ds = simulate(**kwargs)
    if jax.process_index() != 0:  # multi-host: process 0 writes
        return ds
    with atomic_path(out) as tmp:  # created by the writer: the file follows the umask
        ds.to_netcdf(tmp, engine="netcdf4")
    return ds
