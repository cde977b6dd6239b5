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
import jax.numpy as jnp
import numpy as np
import xarray as xr

from madjax.gaussian import FACTORS, LOGDET_ACCURACY
from madjax.io import atomic_path, describe, provenance
from madjax.loops import (
    FACTORED_ONLY,
    LOOPS,
    LoopParams,
    LoopSpec,
    choose_factor,
    full_rank,
    padded_chain_ids,
    run_chains_jit,
)
from madjax.resources import chain_bytes, chain_generation_seconds, check_chain_run
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
    check_seed,
    check_writable,
    resolve_loop_sizes,
)

MODELS = ("gaussian", "gmm")
# Bound on the memory of one compiled chunk (the per-chain working set is a
# handful of d×d matrices per ring-buffer slot).
_CHUNK_BYTES = 1 << 30
_TROUBLE = ("underflow", "nonfinite")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """A validated simulation request; ``n_real``/``n_syn`` are resolved from p, n if given."""

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
    engine: str
    dtype: str
    seed: int
    factor: str = "eigh"
    w2_every: int = 1

    def spec(self) -> LoopSpec:
        max_points = max(self.n_ini, self.n_real, self.n_syn, 2)
        return LoopSpec(kind=self.loop, dim=self.dim, memory=self.memory, accumulate=self.accumulate,
                        engine=self.engine, max_points=max_points if self.engine == "sampled" else 0,
                        dtype=self.dtype, factor=self.factor, w2_every=self.w2_every)

    def params(self) -> LoopParams:
        return LoopParams.create(n_ini=self.n_ini, n_real=self.n_real, n_syn=self.n_syn, lam=self.lam,
                                 memory=self.memory, dtype=self.dtype)


def make_config(*, model="gaussian", loop, dim=None, n_ini=None, n_real=None, n_syn=None, lam=1.0,
                generations, chains=1, memory=1, accumulate=False, real_fraction=None, n_total=None,
                engine="exact", dtype="float32", seed=0, factor="auto", w2_every=1) -> SimulationConfig:
    """Validate a simulation request (raises :class:`ParameterError` naming the parameter).

    Sizes per loop (DESIGN §10): fully-synthetic takes ``n_ini`` and ``n_syn``
    (``n_real`` omitted or 0); synthetic-augmentation fits G¹ on D_r, so
    ``n_ini`` is omitted or equals ``n_real``; fresh takes all three.
    ``real_fraction`` and ``n_total`` together replace ``n_real``/``n_syn``.
    ``factor="auto"`` picks Cholesky where every Σ_t has full rank by
    construction and ``eigh`` otherwise (:func:`madjax.loops.choose_factor`).
    """
    check_choice("model", model, MODELS)
    check_choice("factor", factor, ("auto",) + FACTORS)
    w2_every = check_int("w2_every", w2_every, minimum=1)
    check_choice("loop", loop, LOOPS)
    check_choice("engine", engine, ("exact", "sampled"))
    dtype = check_dtype(dtype)
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    chains = check_int("chains", chains, minimum=1, maximum=INT32_MAX)
    memory = check_int("memory", memory, minimum=1)
    seed = check_seed(seed)
    if accumulate and memory > 1:
        raise ParameterError("memory", "memory K > 1 cannot be combined with accumulate")
    if model == "gmm":
        dim = 2 if dim is None else check_int("dim", dim, minimum=2, maximum=2)
    elif dim is None:
        raise ParameterError("dim", "is required for the Gaussian model")
    dim = check_int("dim", dim, minimum=1)

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
    if n_ini < 2:
        name = "n_real" if loop == "synthetic-augmentation" else "n_ini"
        raise ParameterError(name, f"a training set needs at least 2 points, got {n_ini}")
    if generations > 1 and n_real + n_syn < 2:
        name = "n_syn" if loop == "fully-synthetic" else ("n_total" if n_total is not None else "n_syn")
        raise ParameterError(name, f"a training set needs at least 2 points, got n_real + n_syn = {n_real + n_syn}")
    check_loop_sizes(n_ini=n_ini, n_real=n_real, n_syn=n_syn, generations=generations, accumulate=accumulate)
    if engine == "sampled" and accumulate:
        check_int32("generations", generations * max(n_ini, n_real, n_syn),
                    "the sampled pool's rows T x max(n_ini, n_real, n_syn)")
    if model == "gaussian":
        best = choose_factor(loop, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory,
                             accumulate=accumulate, engine=engine)
        if factor == "auto":
            factor = best
        elif factor == "factored" and best != "factored":
            raise ParameterError("factor", FACTORED_ONLY)
        elif factor == "cholesky" and not full_rank(loop, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn):
            raise ParameterError("factor", f"cholesky needs every training set to hold at least d + 1 = {dim + 1} "
                                           "points (a singular covariance has no Cholesky factor); use eigh or auto")
    else:
        factor = "eigh"  # unused by the GMM
    return SimulationConfig(model=model, loop=loop, dim=dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn,
                            lam=lam, generations=generations, chains=chains, memory=memory,
                            accumulate=bool(accumulate), real_fraction=real_fraction, n_total=n_total,
                            engine=engine, dtype=dtype, seed=seed, factor=factor, w2_every=w2_every)


def default_chunk(spec: LoopSpec, chains: int) -> int:
    """Chains per compiled call, so that one call's working set stays near 1 GiB."""
    per_chain = chain_bytes(spec.dim, spec.memory, jnp.dtype(spec.dtype).itemsize, points=spec.max_points)
    return max(1, min(chains, _CHUNK_BYTES // per_chain))


# The GMM engine draws its points and keeps 25 responsibilities per point beside its 2 coordinates.
_GMM_POINT_WIDTH = 2 + 25


def check_resources(config: SimulationConfig, chunk: int | None = None, allow_large: bool = False) -> None:
    """Refuse a request whose memory or time is absurd (:mod:`madjax.resources`), before any work."""
    itemsize = np.dtype(config.dtype).itemsize
    sizes = dict(chains=config.chains, generations=config.generations, dim=config.dim, memory=config.memory)
    if config.model == "gmm":
        points = max(config.n_ini, config.n_real + config.n_syn)
        per_chain = chain_bytes(2, config.memory, itemsize, points=points, width=_GMM_POINT_WIDTH)
        cost = chain_generation_seconds(2, config.memory, points=points, width=_GMM_POINT_WIDTH)
        chunk = chunk or config.chains  # the GMM runs all chains at once unless told otherwise
    else:
        spec = config.spec()
        points = spec.max_points
        pool = config.generations * points if config.accumulate else 0
        per_chain = chain_bytes(config.dim, config.memory, itemsize, points=points, pool_rows=pool)
        cost = chain_generation_seconds(config.dim, config.memory, points=points)
        chunk = chunk or default_chunk(spec, config.chains)
    if points:  # the engine draws points: the largest size counts
        name = max(("n_ini", "n_real", "n_syn"), key=lambda k: getattr(config, k))
        sizes[name] = getattr(config, name)
    check_chain_run(chains=config.chains, generations=config.generations, per_chain_bytes=per_chain,
                    per_chain_gen_s=cost, chunk=min(chunk, config.chains), memory=config.memory, sizes=sizes,
                    what=f"{config.chains} chains x {config.generations} generations at d = {config.dim}"
                         + (f", memory K = {config.memory}" if config.memory > 1 else "")
                         + (f", {points} points per draw" if points else ""),
                    allow_large=allow_large)


def process_chains(chains: int) -> tuple[int, int]:
    """This process's contiguous share ``[start, stop)`` of the chains (multi-host runs)."""
    n, i = jax.process_count(), jax.process_index()
    per = -(-chains // n)
    return min(i * per, chains), min((i + 1) * per, chains)


def run_diagnostics(config: SimulationConfig, *, chunk: int | None = None, progress: bool = False) -> dict:
    """Run all chains in chunks; returns NumPy arrays of shape ``(chains, T)``.

    Chain i always uses key ``fold_in(key(seed), i)``; each chunk is sharded
    over the local devices and padded to a multiple of their number, and the
    padding is dropped, so results do not depend on ``chunk``, on the number
    of devices, or (with ``jax.distributed``) on the number of processes:
    each process runs its share of chain ids and the shares are gathered.
    """
    from madjax._progress import progress_bar

    spec, params = config.spec(), config.params()
    chunk = default_chunk(spec, config.chains) if chunk is None else check_int("chunk", chunk, minimum=1)
    seed_key = jax.random.key(config.seed)
    lo, hi = process_chains(config.chains)
    pieces = []
    with progress_bar(total=hi - lo, desc="chains", enabled=progress) as bar:
        for start in range(lo, hi, chunk):
            ids, count = padded_chain_ids(start, min(chunk, hi - start))
            out = jax.device_get(run_chains_jit(seed_key, ids, params, spec, config.generations))
            pieces.append(jax.tree.map(lambda x, c=count: x[:c], out))
            bar.update(count)
    records = {name: np.concatenate([getattr(p, name) for p in pieces]) for name in pieces[0]._fields}
    if jax.process_count() > 1:
        records = _gather_processes(records, config.chains)
    return records


def _gather_processes(records: dict, chains: int) -> dict:
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


def logdet_status(lost: np.ndarray, w2_every: int) -> np.ndarray:
    """``cov_logdet_status`` ``(chains, T)`` int8: 0 computed, 1 skipped by ``w2_every``, 2 lost precision."""
    skipped = (np.arange(lost.shape[-1]) % w2_every != 0)[None, :]
    return np.where(lost, 2, np.where(skipped, 1, 0)).astype(np.int8)


def theory_moments(config: SimulationConfig) -> dict:
    """The closed forms of :func:`madjax.theory.loop_moments` for this run (Gaussian model only)."""
    if config.model != "gaussian":
        return {}
    from madjax import theory

    return theory.loop_moments(config.loop, config.generations, dim=config.dim, n_ini=config.n_ini,
                               n_real=config.n_real, n_syn=config.n_syn, lam=config.lam, memory=config.memory,
                               accumulate=config.accumulate)


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
        return "no closed form for this loop (memory K > 1, accumulation and the GMM have none in madjax.theory)"
    lines = [f"{'variable':<14} {'max |z|':>8} {'at t':>6}  generations left out (a chain's value missing)"]
    lines += [f"{var:<14} {z:>8.2f} {t:>6d}  {left}" for var, (z, t, left) in rows.items()]
    return "\n".join(lines)


def to_dataset(config: SimulationConfig, records: dict) -> xr.Dataset:
    """Pack ``(chains, T)`` diagnostics into the Dataset of DESIGN §10 (their ``long_name``\s: :data:`madjax.io.VARIABLES`)."""
    coords = {"chain": np.arange(config.chains), "generation": np.arange(1, config.generations + 1)}
    dims = ("chain", "generation")
    data = {}
    for name, values in records.items():
        if name in _TROUBLE:
            data[f"n_{name}"] = (("chain",), values.sum(axis=1).astype(np.int32))
        elif name == "logdet_lost":
            data["cov_logdet_status"] = (dims, logdet_status(values, config.w2_every))
        else:
            data[name] = (dims, values)
    for name, values in theory_moments(config).items():
        data[f"{name}_theory"] = (("generation",), np.asarray(values, records["w2"].dtype))
    ds = xr.Dataset(data, coords=coords)
    if "cov_logdet_status" in ds:
        ds["cov_logdet_status"].attrs.update(flag_values=np.arange(3, dtype=np.int8),
                                             flag_meanings="computed skipped_by_w2_every lost_precision")
    return ds


def simulate(*, model="gaussian", loop, dim=None, n_ini=None, n_real=None, n_syn=None, lam=1.0,
             generations, chains=1, memory=1, accumulate=False, real_fraction=None, n_total=None,
             engine="exact", dtype="float32", seed=0, factor="auto", w2_every=1, chunk=None,
             progress=False, allow_large=False) -> xr.Dataset:
    """Simulate ``chains`` independent chains of a self-consuming loop.

    Args mirror the command-line options (DESIGN §10): ``loop`` is
    ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``; sizes
    ``n_ini``, ``n_real``, ``n_syn`` (or ``real_fraction`` with ``n_total``);
    ``lam`` the sampling bias λ ∈ (0, 1]; ``memory`` K; ``accumulate`` the
    growing synthetic pool; ``engine`` ``"exact"`` or ``"sampled"``;
    ``dtype="float64"`` needs jax's x64 mode; ``factor`` ``"auto"``,
    ``"eigh"`` or ``"cholesky"`` (:class:`~madjax.loops.LoopSpec`);
    ``w2_every=k`` records ``w2`` and ``cov_logdet`` on generations
    1, 1 + k, … only (NaN elsewhere), which with Cholesky skips the
    eigenvalue solve on the others. ``seed`` ∈ [0, 2³² − 1]. A request
    whose estimated memory or time is absurd is refused unless
    ``allow_large=True`` (:mod:`madjax.resources`).

    Returns:
      ``xarray.Dataset`` with dims ``(chain, generation)``, generation = 1..T.
      Gaussian: ``w2``, ``mean_sq_norm``, ``cov_trace``, ``cov_logdet``,
      ``cov_rank`` and per-chain trouble counts ``n_underflow``,
      ``n_nonfinite``; GMM: ``total_variance``, ``modal_variance``, ``recall``,
      ``modes_covered``. Attributes ``config`` (JSON), ``madjax_version``,
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
                         engine=engine, dtype=dtype, seed=seed, factor=factor, w2_every=w2_every)
    if chunk is not None:
        check_int("chunk", chunk, minimum=1)
    check_resources(config, chunk, allow_large)
    if config.model == "gmm":
        from madjax.gmm import simulate_gmm

        ds = simulate_gmm(loop=config.loop, n_ini=config.n_ini, n_real=config.n_real, n_syn=config.n_syn,
                          lam=config.lam, generations=config.generations, chains=config.chains, seed=config.seed,
                          dtype=config.dtype, progress=progress, chunk=chunk, memory=config.memory,
                          accumulate=config.accumulate)
    else:
        ds = to_dataset(config, run_diagnostics(config, chunk=chunk, progress=progress))
        warning = lost_precision_warning(ds)
        if warning:
            logging.getLogger("madjax").warning(warning)
    ds.attrs.update(provenance(dataclasses.asdict(config)))
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
