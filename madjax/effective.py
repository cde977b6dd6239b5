"""The loop's limit WD(n_r, n_s, λ) and the effective sample size n_e (Eq. 2, 3).

WD is the stationary mean of ``W2(G^t, P_r)`` (Eq. 2). The fresh and the
synthetic-augmentation loops forget G¹ geometrically: the mean of the model
contracts by ``ρ = n_s / (n_r + n_s)`` per generation (the covariance by about
λρ ≤ ρ). With memory K the mean follows an AR(K) recursion
``μ_t = (n_r/n)·noise + (ρ/K) Σ_{k=1..K} μ_{t−k}``, whose slowest root is the
largest root of ``x^K = (ρ/K)(x^{K−1} + … + 1)``. Burn-in is the smallest b
with ``root^b ≤ tol``; the measurement window after it is at least as long
again (and at least ``min_window`` generations). Generations within a chain
are correlated, so the standard error comes from per-chain time averages over
independent chains; convergence is checked by comparing the window's two
halves chain by chain, and a loop that fails the check is extended (twice)
and otherwise reported with ``converged = False``.

n_e solves ``E[W2(G(n_e), P_r)] = WD`` (Eq. 3), where ``G(n)`` is the Gaussian
fitted to n real samples. That curve is tabulated once per (d, dtype) on a
log grid of n with common random numbers, cached on disk, and inverted by
monotone interpolation in log–log. Outside the table n_e is reported as a
bound (``n_e_bound = "lower"``: n_e is at least the reported value;
``"upper"``: at most), never extrapolated. Standard errors combine the WD and
table errors by the delta method.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from madjax.io import StaleCache, load_checked_npz, rebuild_notice, save_checked_npz
from madjax._progress import log, progress_bar
from madjax.gaussian import choose_factor
from madjax.loops import (
    LoopParams,
    LoopSpec,
    chain_keys,
    padded_chain_ids,
    run_cells_jit,
    run_chain,
    stack_params,
)
from madjax.models import ModelChoice
from madjax.resources import (
    COMPILE_SLOT_S,
    HOST_COPIES,
    STEP_S,
    cause,
    check_budget,
)
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
)

EFFECTIVE_LOOPS = ("fresh", "synthetic-augmentation")
TOL = 1e-3  # burn-in: the initial model's influence decays below this factor
MIN_WINDOW = 50
CHUNK_BYTES = 1 << 30  # bound on one compiled call's working set
Z_CONVERGENCE = 3.0
EXTEND_BATCH = 4  # cells per call when cells are rerun at a longer horizon


# ----------------------------------------------------------------------------- burn-in


def contraction(n_real: int, n_syn: int, memory: int = 1, weight: float | None = None) -> float:
    """Slowest per-generation contraction factor of the loop's mean (see module docstring); with
    weighted mixing the synthetic part's weight ``1 − w`` (an empty part takes no weight)."""
    if weight is not None:
        rho = 0.0 if n_syn == 0 else (1.0 if n_real == 0 else 1.0 - weight)
    else:
        rho = n_syn / (n_real + n_syn) if n_real + n_syn > 0 else 0.0
    if memory == 1 or rho == 0.0:
        return rho
    return _dominant_root(rho, memory)


def _dominant_root(rho: float, memory: int) -> float:
    """The positive root of ``x^K = (ρ/K)(x^{K−1} + … + 1)``, by bisection on (0, 1).

    It is the polynomial's only positive root and bounds the moduli of all
    the others (Cauchy), and bisection costs O(K) per step where a companion
    matrix would cost O(K³) time and O(K²) memory (K = 10⁵ would not fit).
    On (0, 1) the equation's sign is that of ``x^K (1 − x) − (ρ/K)(1 − x^K)``.
    """
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return hi
        if mid**memory * (1.0 - mid) - rho / memory * (1.0 - mid**memory) < 0.0:
            lo = mid
        else:
            hi = mid


def burn_in(n_real: int, n_syn: int, memory: int = 1, tol: float = TOL, weight: float | None = None) -> int:
    """Generations discarded: smallest b ≥ 1 with ``contraction^b ≤ tol``. (Curation only adds
    contraction: the tilt shrinks the mean towards μ₀, so its burn-in is bounded by this one.)"""
    rho = contraction(n_real, n_syn, memory, weight)
    if rho <= 0.0:
        return 1
    if rho >= 1.0:
        if weight is not None:
            raise ParameterError("real_weight", "w = 0 gives the real data no weight: the loop never forgets G¹")
        raise ParameterError("n_real", "the loop has no real data and never forgets G¹")
    return max(1, math.ceil(math.log(tol) / math.log(rho)))


def cell_burn_in(cell: dict) -> int:
    """:func:`burn_in` of a cell (a dict of :class:`~madjax.loops.LoopParams` fields)."""
    return burn_in(cell["n_real"], cell["n_syn"], cell.get("memory", 1), weight=cell.get("real_weight"))


OPERATORS = {"real_weight": "weighted", "tilt": "tilted"}
"""Loop operators with a stationary state, by their :class:`~madjax.loops.LoopParams` leaf and the
:class:`~madjax.loops.LoopSpec` flag that turns them on: a cell that names the leaf uses the operator."""


def cell_operators(cells: list[dict]) -> dict:
    """The :class:`~madjax.loops.LoopSpec` flags of a batch of cells (every cell names the same leaves)."""
    flags = {flag: leaf in cells[0] for leaf, flag in OPERATORS.items()}
    if any((leaf in c) != flags[flag] for c in cells for leaf, flag in OPERATORS.items()):
        raise ParameterError("grid", "every cell of a batch must use the same loop operators")
    return flags


def horizon(burn: int, min_window: int = MIN_WINDOW) -> int:
    """Total generations T for a burn-in: the window after it is ≥ max(burn, min_window)."""
    return burn + max(burn, min_window)


def horizon_level(burn: int) -> int:
    """T rounded up to a power of two: a grid compiles once per level, not once per cell,
    and a cell never runs the horizon of the slowest cell of its grid."""
    return 1 << (horizon(burn) - 1).bit_length()


# ----------------------------------------------------------------------------- steady state


class SteadyState(NamedTuple):
    """Per-chain time averages of W2 over the window ``burn_in < t ≤ T``: ``(..., chains)``."""

    window: jax.Array
    first_half: jax.Array
    second_half: jax.Array


def _steady_chain(key, params, burn, spec, generations):
    record = run_chain(key, params, spec, generations)
    w2 = record["w2"] if isinstance(record, dict) else record.w2
    t = jnp.arange(1, generations + 1)
    mid = burn + (generations - burn) // 2
    recorded = jnp.mod(t - 1, getattr(spec.model, "w2_every", 1)) == 0  # w2_every > 1: average the recorded generations only
    avg = lambda m: jnp.sum(jnp.where(m & recorded, w2, 0.0)) / jnp.maximum(jnp.sum(m & recorded), 1)  # noqa: E731
    return SteadyState(avg(t > burn), avg((t > burn) & (t <= mid)), avg(t > mid))


def steady_state(seed_key, chain_ids, params: LoopParams, burn, spec: LoopSpec, generations: int) -> SteadyState:
    """Window averages for a batch of cells (leading axis of ``params``/``burn``), CRN across cells."""
    keys = chain_keys(seed_key, chain_ids)
    per_chain = jax.vmap(_steady_chain, in_axes=(0, None, None, None, None))
    per_cell = jax.vmap(per_chain, in_axes=(None, 0, 0, None, None))
    return per_cell(keys, params, burn, spec, generations)


steady_state_jit = jax.jit(steady_state, static_argnames=("spec", "generations"))


@dataclasses.dataclass(frozen=True)
class WDEstimate:
    wd: float
    wd_se: float
    converged: bool
    burn_in: int
    generations: int


def summarize(state: SteadyState, burn: int, generations: int) -> WDEstimate:
    """WD and its standard error across chains; the two-halves convergence check."""
    window = np.asarray(state.window, np.float64)
    chains = window.shape[-1]
    diff = np.asarray(state.first_half, np.float64) - np.asarray(state.second_half, np.float64)
    diff_se = diff.std(ddof=1) / math.sqrt(chains) if chains > 1 else np.inf
    converged = bool(abs(diff.mean()) <= Z_CONVERGENCE * diff_se) if np.isfinite(diff_se) else False
    se = window.std(ddof=1) / math.sqrt(chains) if chains > 1 else float("nan")
    return WDEstimate(float(window.mean()), float(se), converged, int(burn), int(generations))


def cell_factor(loop: str, dim: int, cell: dict) -> str:
    """The factorisation of one cell (:func:`madjax.gaussian.choose_factor`): a property of the cell alone."""
    return choose_factor(loop, dim, n_ini=cell.get("n_ini", max(cell["n_real"], 2)), n_real=cell["n_real"],
                         n_syn=cell["n_syn"], weighted="real_weight" in cell)


def operator_values(real_weight=None, tilt=None, growth=None) -> dict:
    """Validated stationary operators as cell entries (:data:`OPERATORS`); growth is refused: growing
    sample sizes have no stationary state, so neither WD nor n_e exists (one line naming the option)."""
    if growth:
        raise ParameterError("growth", "growing sample sizes have no stationary state, so no n_e: run simulate, "
                                       "or sweep --trajectory")
    out = {}
    if real_weight is not None:
        out["real_weight"] = check_fraction(real_weight, "real_weight")
    if tilt is not None:
        out["tilt"] = check_nonnegative("tilt", tilt, maximum=1e6)
    return out


def gaussian_choice(model: ModelChoice | None, dim, dtype="float32", w2_every=1) -> ModelChoice:
    """``model``, or the Gaussian of dimension ``dim`` when None (the functions below default to it)."""
    return model if model is not None else ModelChoice.create("gaussian", dim=dim, dtype=dtype, w2_every=w2_every)


def steady_wd_cells(cells: list[dict], *, loop: str, dim: int | None = None, chains: int, seed: int,
                    dtype: str = "float32", memory_slots: int = 1, batch: int | None = None, extend: int = 2,
                    horizon_T: int | None = None, w2_every: int = 1,
                    model: ModelChoice | None = None) -> list[WDEstimate]:
    """WD for a list of cells (dicts of LoopParams fields), one compilation per T and group of cells.

    All cells share the chain keys (common random numbers) and one horizon T,
    the largest any cell needs (or ``horizon_T``, so that a sweep's cells do not
    depend on how they are batched); each cell discards its own burn-in. Cells
    that fail the convergence check are rerun with T doubled, up to ``extend``
    times. Cells whose covariances all have full rank run the Cholesky route,
    the others ``eigh`` (:func:`cell_factor`); ``w2_every = k`` averages W2
    over every k-th generation of the window only. ``model`` (default: the
    Gaussian of dimension ``dim``) may be any registered jittable model: its
    cells are grouped by :meth:`~madjax.models.ModelChoice.group_key` (a point
    model's buffer capacity level), one compilation per group.
    """
    model = gaussian_choice(model, dim, dtype, w2_every)
    operators = cell_operators(cells)
    groups: dict = {}
    for i, cell in enumerate(cells):
        groups.setdefault(model.group_key(loop, cell), []).append(i)
    results: list[WDEstimate | None] = [None] * len(cells)
    for key, idx in groups.items():
        spec = LoopSpec(kind=loop, memory=memory_slots, model=model.group_spec(key), **operators)
        for i, est in zip(idx, _steady_wd_group([cells[i] for i in idx], spec, model, chains=chains, seed=seed,
                                                batch=batch, extend=extend, horizon_T=horizon_T)):
            results[i] = est
    return results


def check_steady_resources(cells: list[dict], *, dim: int | None = None, chains: int, dtype: str = "float32",
                           memory_slots: int = 1, batch: int | None = None, extend: int = 2,
                           horizon_T: int | None = None, by_level: bool = False, allow_large: bool = False,
                           model: ModelChoice | None = None) -> None:
    """Refuse, before any work, cells that overflow the device's int32 sizes or whose burn-in or size
    makes :func:`steady_wd_cells` absurd (:mod:`madjax.resources`; ``allow_large`` overrides the latter).

    A cell runs ``horizon_T`` generations (or its own horizon, rounded up to its
    :func:`horizon_level` with ``by_level`` as in a sweep), up to ``2**extend`` times as many if
    it fails the convergence check; its burn-in grows like n_s/n_r, which is named as the cause.
    """
    model = gaussian_choice(model, dim, dtype)
    dim = model.dim
    for c in cells:
        check_loop_sizes(n_ini=c.get("n_ini", max(c["n_real"], 2)), n_real=c["n_real"], n_syn=c["n_syn"],
                         generations=1)
    rows = max(max(c.get("n_ini", 0), c["n_real"], c["n_syn"]) for c in cells)
    per_chain, per_chain_gen = model.cost(memory_slots, rows)
    burns = [cell_burn_in(c) for c in cells]
    horizons = [horizon_T or (horizon_level(b) if by_level else horizon(b)) for b in burns]
    longest = max(horizons)
    check_int32("n_syn", (longest << extend) + 1, f"the horizon of the slowest cell (2**{extend} x {longest} "
                                                   "generations, set by its burn-in, which grows like n_s/n_r)")
    param = cause(chains=chains, dim=dim, memory=memory_slots, generations=longest)
    check_budget("n_syn" if param == "generations" else param,
                 what=f"{len(cells)} cell(s) x {chains} chains x up to {longest} generations (burn-in "
                      f"{max(burns)}) of the {model.name} model at d = {dim}"
                      + (f", memory K = {memory_slots}" if memory_slots > 1 else ""),
                 nbytes=(batch or len(cells)) * per_chain
                 + len(cells) * chains * len(SteadyState._fields) * 8 * HOST_COPIES,
                 seconds=longest * STEP_S + chains * sum(horizons) * per_chain_gen,
                 compile_s=memory_slots * COMPILE_SLOT_S, allow_large=allow_large)


def _steady_wd_group(cells: list[dict], spec: LoopSpec, model: ModelChoice, *, chains: int, seed: int,
                     batch: int | None, extend: int, horizon_T: int | None) -> list[WDEstimate]:
    dtype, memory_slots = spec.dtype, spec.memory
    burns = [cell_burn_in(c) for c in cells]
    generations = horizon_T or max(horizon(b) for b in burns)
    results: list[WDEstimate | None] = [None] * len(cells)
    todo = list(range(len(cells)))
    for attempt in range(extend + 1):
        # Reruns (cells that failed the convergence check) go in batches of at most EXTEND_BATCH:
        # still a fixed shape, but one slow cell no longer pays for a full batch of padding.
        size = batch or len(todo)
        if attempt > 0:
            size = min(size, EXTEND_BATCH)
        # Stream chains through bounded chunks: (cells × chunk) working sets stay near 1 GiB.
        per_chain = model.entry.cost(spec.model, memory_slots, 1, False)[0] * size
        chain_chunk = max(1, min(chains, CHUNK_BYTES // per_chain))
        for start in range(0, len(todo), size):
            idx = todo[start:start + size]
            padded = idx + [idx[-1]] * (size - len(idx))  # fixed batch shape: one compilation
            params = stack_params([LoopParams.create(n_ini=cells[i].get("n_ini", max(cells[i]["n_real"], 2)),
                                                     **{k: v for k, v in cells[i].items() if k != "n_ini"},
                                                     dtype=dtype) for i in padded])
            burn = jnp.asarray([burns[i] for i in padded], jnp.int32)
            parts = []
            for c0 in range(0, chains, chain_chunk):
                ids, count = padded_chain_ids(c0, min(chain_chunk, chains - c0))
                part = jax.device_get(steady_state_jit(jax.random.key(seed), ids, params, burn, spec, generations))
                parts.append(jax.tree.map(lambda x, c=count: x[:, :c], part))
            out = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *parts)
            for j, i in enumerate(idx):
                results[i] = summarize(jax.tree.map(lambda x, j=j: x[j], out), burns[i], generations)
        todo = [i for i in todo if not results[i].converged]
        if not todo or attempt == extend:
            break
        generations *= 2
    return results


# ----------------------------------------------------------------------------- E[W2(G(n), P_r)]


class EDistTable(NamedTuple):
    """``E[W2(G(n), N(0, I_d))]`` on a log grid of n (common random numbers)."""

    n: np.ndarray  # (m,) increasing
    mean: np.ndarray  # (m,) decreasing (monotone envelope)
    se: np.ndarray  # (m,)


# Bump when the way the table is computed changes: older cache files are then rebuilt, never reused.
# 2: the one loop layer's key streams, and tables for every jittable model.
TABLE_ALGORITHM = 2


def _cache_dir() -> str:
    return os.environ.get("MADJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "madjax"))


def table_grid(n_max: int, points: int, n_min: int = 2) -> np.ndarray:
    """The n of the table: ``points`` log-spaced values from ``n_min`` to ``n_max``, rounded, duplicates removed."""
    return np.unique(np.round(np.logspace(np.log10(n_min), np.log10(n_max), points)).astype(np.int64)
                     ).astype(np.float64)


def table_key(dim: int, dtype: str, chains: int, seed: int, n_max: int, points: int,
              model: ModelChoice | None = None) -> dict:
    """Everything a table's numbers depend on: its cache key."""
    from madjax import __version__

    model = gaussian_choice(model, dim, dtype)
    return {"table": "E[W2(G(n), P_r)]", "algorithm": TABLE_ALGORITHM, "madjax_version": __version__,
            "reference": model.target, "fit": f"generation 1 of the {model.name} model", "monotone": "running minimum",
            **model.record(), "chains": chains, "seed": seed, "n_max": n_max, "points": points}


def table_path(key: dict) -> str:
    """The cache file of a table: named by model, d, dtype and a hash of its whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(_cache_dir(), f"edist_{key['model']}_d{key['dim']}_{key['dtype']}_{digest}.npz")


def table_problem(table: EDistTable, n: np.ndarray) -> str | None:
    """Why ``table`` cannot be the E-dist table on the grid ``n``, or None.

    A valid table has the grid's n, finite float64 columns of its length,
    positive means that decrease in n (the running minimum makes them
    non-increasing; the ends must differ) and non-negative standard errors.
    """
    arrays = {"n": table.n, "mean": table.mean, "se": table.se}
    for name, a in arrays.items():
        if a.dtype != np.float64 or a.shape != n.shape:
            return f"column {name} is {a.dtype} {a.shape}, expected float64 {n.shape}"
        if not np.all(np.isfinite(a)):
            return f"column {name} is not finite"
    if not np.array_equal(table.n, n):
        return "its n grid differs from the expected one"
    if np.any(table.mean <= 0) or np.any(np.diff(table.mean) > 0) or table.mean[0] <= table.mean[-1]:
        return "its mean does not decrease in n"
    if np.any(table.se < 0):
        return "a negative standard error"
    return None


def edist_table(dim: int | None = None, dtype: str = "float32", *, chains: int | None = None, seed: int = 12345,
                n_max: int | None = None, points: int | None = None, cache: bool = True,
                model: ModelChoice | None = None) -> EDistTable:
    """Tabulate E[W2(G(n), P_r)] for n on a log grid (cached).

    G(n) is generation 1 of the loop: the model fitted to n points of its
    target (the Gaussian of Eq. (1) from the exact engine by default; any
    registered jittable ``model``, whose ``w2`` is its own distance -- the
    GMM's mixture W2, the KDE's Sinkhorn W2 with its sample-size floor). The
    grid runs from the fewest points a fit takes to ``n_max`` (default: as far
    as the model's cost allows, :data:`madjax.models.MODELS`); beyond it n_e is
    reported as a bound. Point models' sizes are grouped by buffer capacity
    level, one compilation per level. The cache file is keyed by
    :func:`table_key` (madjax's version, the algorithm, the model and its
    options, d, dtype, chains, seed and grid) and holds a checksum of its
    arrays; a file that is unreadable, stale, altered or fails
    :func:`table_problem` is rebuilt with one warning line.
    """
    model = gaussian_choice(model, dim, dtype)
    n_min, default_max, default_chains, default_points = model.table
    n_max, chains, points = n_max or default_max, chains or default_chains, points or default_points
    n = table_grid(n_max, points, n_min)
    key = table_key(model.dim, model.dtype, chains, seed, n_max, points, model)
    path = table_path(key)
    if cache and os.path.exists(path):
        try:
            table = EDistTable(**load_checked_npz(path, key, EDistTable._fields))
            problem = table_problem(table, n)
            if problem is None:
                return table
            rebuild_notice("E-dist", path, f"is invalid ({problem})")
        except StaleCache as err:
            rebuild_notice("E-dist", path, f"is {err}")
    log.info("building the E-dist table E[W2(G(n), P_r)] of the %s model for d = %d, %s: %d sizes x %d chains",
             model.name, model.dim, model.dtype, len(n), chains)
    w2 = np.full((len(n), chains), np.nan)
    groups: dict = {}
    for i, k in enumerate(n):
        groups.setdefault(model.group_key("fresh", dict(n_ini=int(k), n_real=0, n_syn=0)), []).append(i)
    for gkey, idx in groups.items():
        spec = LoopSpec(kind="fresh", model=model.group_spec(gkey))
        per_chain = model.entry.cost(spec.model, 1, 1, False)[0]
        batch = max(1, min(len(idx), CHUNK_BYTES // (per_chain * chains)))
        chain_chunk = chains if batch > 1 else max(1, min(chains, CHUNK_BYTES // per_chain))
        for start in range(0, len(idx), batch):
            cells = idx[start:start + batch]
            padded = cells + [cells[-1]] * (batch - len(cells))  # fixed batch shape: one compilation
            params = stack_params([LoopParams.create(n_ini=int(n[i]), dtype=model.dtype) for i in padded])
            for c0 in range(0, chains, chain_chunk):
                ids = jnp.arange(c0, min(chains, c0 + chain_chunk), dtype=jnp.uint32)
                rec = run_cells_jit(jax.random.key(seed), ids, params, spec, 1)
                rec = rec["w2"] if isinstance(rec, dict) else rec.w2
                w2[cells, c0:c0 + len(ids)] = np.asarray(rec, np.float64)[: len(cells), :, 0]
    mean = np.minimum.accumulate(w2.mean(1))  # CRN makes it smooth; enforce monotone for inversion
    table = EDistTable(n, mean, w2.std(1, ddof=1) / math.sqrt(chains))
    if cache:
        save_checked_npz(path, key, table._asdict())
    return table


class EffectiveSize(NamedTuple):
    n_e: float
    n_e_se: float
    bound: str | None  # None, "lower" (n_e ≥ value) or "upper" (n_e ≤ value)


def invert(table: EDistTable, wd: float, wd_se: float) -> EffectiveSize:
    """Solve E[W2(G(n_e))] = wd by log–log interpolation; delta-method standard error."""
    log_n, log_e = np.log(table.n), np.log(table.mean)
    if wd >= table.mean[0]:
        return EffectiveSize(float(table.n[0]), float("nan"), "upper")
    if wd <= table.mean[-1]:
        return EffectiveSize(float(table.n[-1]), float("nan"), "lower")
    # np.interp needs increasing x: interpolate log n against −log E
    x = -log_e
    log_ne = float(np.interp(-math.log(wd), x, log_n))
    n_e = math.exp(log_ne)
    k = int(np.clip(np.searchsorted(log_n, log_ne) - 1, 0, len(log_n) - 2))
    slope = (log_e[k + 1] - log_e[k]) / (log_n[k + 1] - log_n[k])  # d log E / d log n < 0
    table_se = float(np.interp(log_ne, log_n, table.se))
    se_log = math.sqrt(wd_se**2 + table_se**2) / (wd * abs(slope)) if slope != 0 else float("inf")
    return EffectiveSize(n_e, n_e * se_log, None)


# ----------------------------------------------------------------------------- public API


def validate_inputs(loop, dim, n_real, n_syn, lam, memory, chains, seed, dtype, model: ModelChoice | None = None):
    """Check the inputs shared by :func:`effective_size` and :func:`admissibility_threshold` (``n_syn`` may be
    None); returns them normalised or raises :class:`~madjax.validation.ParameterError` naming the first bad one.
    ``model`` (default: the Gaussian) sets the fewest real points a fit takes."""
    if loop in ("replace", "accumulate", "accumulate-subsample", "fully-synthetic"):
        raise ParameterError("loop", f"{loop} has no stationary state ("
                                     + ("no real data: it never forgets G¹" if loop in ("replace", "fully-synthetic")
                                        else "its pool grows every generation")
                                     + "), so no n_e: run simulate, or sweep --trajectory")
    check_choice("loop", loop, EFFECTIVE_LOOPS)
    if model is None:
        dim = check_int("dim", dim, minimum=1)
    fewest = 2 if model is None else model.min_points
    n_real = check_int("n_real", n_real, minimum=fewest)
    if n_syn is not None:
        n_syn = check_int("n_syn", n_syn, minimum=0)
    lam = check_lam(lam)
    memory = check_int("memory", memory, minimum=1)
    chains = check_int("chains", chains, minimum=2, maximum=INT32_MAX)
    seed = check_seed(seed)
    dtype = check_dtype(dtype)
    return loop, dim, n_real, n_syn, lam, memory, chains, seed, dtype


def result_record(est: WDEstimate, ne: EffectiveSize, n_real: int, chains: int) -> dict:
    """The JSON record of DESIGN §10 for one cell."""
    return {
        "wd": est.wd, "wd_se": est.wd_se, "n_e": ne.n_e, "n_e_se": ne.n_e_se,
        "n_e_ratio": ne.n_e / n_real, "n_e_ratio_se": ne.n_e_se / n_real, "n_e_bound": ne.bound,
        "converged": est.converged, "burn_in": est.burn_in, "generations": est.generations, "chains": chains,
    }


def effective_size(*, loop="fresh", dim=None, n_real, n_syn, lam=1.0, memory=1, chains=256, seed=0,
                   dtype="float32", w2_every=1, allow_large=False, model="gaussian", target=None, bandwidth=None,
                   n_eval=None, table_n_max=None, estimator=None, reference=None, real_weight=None, tilt=None,
                   growth=None) -> dict:
    """WD(n_r, n_s, λ), n_e and n_e/n_r with standard errors (Eq. 2, 3).

    ``model`` is any jittable model of :data:`madjax.models.MODELS`
    (``"gaussian"``, ``"gmm"``, ``"kde"``) with its ``target`` and options
    (``bandwidth``, ``n_eval``); WD is then its own distance (module
    docstring) and the E-dist table is the model's, tabulated up to
    ``table_n_max`` (default: as far as the model's cost allows; beyond it n_e
    is a bound).

    ``w2_every = k`` averages W2 over every k-th generation of the steady
    window (consecutive generations are strongly correlated, so the standard
    error grows far less than √k; it is reported as measured). The Gaussian's
    ``estimator`` and ``reference``, and the stationary loop operators
    ``real_weight`` (weighted mixing) and ``tilt`` (curation), apply to the
    loop and to the E-dist table alike (the table's G(n) is the same model
    fitted to n real points); ``growth`` is refused (no stationary state). A request
    whose burn-in or size makes the run absurd is refused unless
    ``allow_large`` (:func:`check_steady_resources`).

    Returns:
      dict with ``wd``, ``wd_se``, ``n_e``, ``n_e_se``, ``n_e_ratio``,
      ``n_e_ratio_se``, ``n_e_bound`` (None, "lower" or "upper"),
      ``converged``, ``burn_in``, ``generations``, ``chains``.

    Example:
      >>> r = effective_size(dim=3, n_real=10, n_syn=0, chains=512)  # no synthetic data: n_e = n_r
      >>> r["n_e_bound"] is None and abs(r["n_e_ratio"] - 1) < 0.2
      True
    """
    choice = choose_model(model, dim=dim, dtype=dtype, target=target, w2_every=w2_every, bandwidth=bandwidth,
                          n_eval=n_eval, estimator=estimator, reference=reference)
    loop, dim, n_real, n_syn, lam, memory, chains, seed, dtype = validate_inputs(
        loop, dim, n_real, n_syn, lam, memory, chains, seed, dtype, choice)
    if n_syn is None:
        raise ParameterError("n_syn", "is required (or use threshold search)")
    if table_n_max is not None:
        check_int("table_n_max", table_n_max, minimum=choice.entry.table[0] + 1)
    cell = dict(n_real=n_real, n_syn=n_syn, lam=lam, memory=memory,
                **operator_values(real_weight=real_weight, tilt=tilt, growth=growth))
    cell_burn_in(cell)  # w = 0: no stationary state, one line before any work
    check_steady_resources([cell], chains=chains, memory_slots=memory, allow_large=allow_large, model=choice)
    table = edist_table(model=choice, n_max=table_n_max)
    (est,) = steady_wd_cells([cell], loop=loop, chains=chains, seed=seed, memory_slots=memory, model=choice)
    return result_record(est, invert(table, est.wd, est.wd_se), n_real, chains)


def choose_model(model="gaussian", *, dim=None, dtype="float32", target=None, w2_every=1, bandwidth=None,
                 n_eval=None, estimator=None, reference=None) -> ModelChoice:
    """The :class:`~madjax.models.ModelChoice` of keyword options (only the model's own may be given)."""
    if isinstance(model, ModelChoice):
        return model
    options = dict(bandwidth=bandwidth, n_eval=n_eval, estimator=estimator, reference=reference)
    check_int("w2_every", w2_every, minimum=1)
    if w2_every != 1 or model in ("gaussian", "kde"):
        options["w2_every"] = w2_every  # an option of the models that thin their w2 (an error for the others)
    return ModelChoice.create(model, dim=dim, dtype=dtype, target=target, **options)


def ratio_curve(n_syn_values, *, loop, dim=None, n_real, lam, memory, chains, seed, dtype="float32", table,
                horizon_T=None, w2_every=1, model: ModelChoice | None = None, operators: dict | None = None):
    """n_e/n_r and its se for several n_s at once (one compilation, common random numbers);
    ``operators`` as returned by :func:`operator_values`."""
    cells = [dict(n_real=n_real, n_syn=int(s), lam=lam, memory=memory, **(operators or {})) for s in n_syn_values]
    ests = steady_wd_cells(cells, loop=loop, dim=dim, chains=chains, seed=seed, dtype=dtype, memory_slots=memory,
                           horizon_T=horizon_T, w2_every=w2_every, model=model)
    recs = [result_record(e, invert(table, e.wd, e.wd_se), n_real, chains) for e in ests]
    return recs


def threshold_grid(n_real: int, ratio_max: float = 100.0, points: int = 9) -> np.ndarray:
    """The coarse n_s grid of :func:`admissibility_threshold`: ``points`` log-spaced values in
    [0.05 n_r, ratio_max · n_r], rounded, at least 1, duplicates removed."""
    return np.unique(np.maximum(np.round(n_real * np.logspace(np.log10(0.05), np.log10(ratio_max), points)), 1)
                     .astype(int))


def admissibility_threshold(*, loop="fresh", dim=None, n_real, lam, memory=1, chains=256, seed=0, dtype="float32",
                            ratio_max: float = 100.0, points: int = 9, z: float = 1.96, w2_every: int = 1,
                            progress: bool = False, allow_large: bool = False, model="gaussian", target=None,
                            bandwidth=None, n_eval=None, table_n_max=None, estimator=None, reference=None,
                            real_weight=None, tilt=None, growth=None) -> dict:
    """The admissibility boundary n_s*(n_r, λ): where n_e/n_r crosses 1.

    A coarse log grid of n_s ∈ [0.05 n_r, ratio_max · n_r] brackets the sign
    change of ``n_e/n_r − 1``; a second grid inside the bracket refines it and
    n_s* is interpolated in log n_s. Every evaluation uses the same chain keys
    (common random numbers), so the curve is smooth in n_s and the root is
    stable. The interval ``[n_syn_star_lo, n_syn_star_hi]`` spans the n_s where
    the pointwise ``z``-interval of n_e/n_r still contains 1. If n_e/n_r ≥ 1
    over the whole range (e.g. λ = 1), ``n_syn_star`` is None and
    ``n_syn_star_lo`` is the largest n_s tried (a lower bound). ``w2_every``
    as in :func:`effective_size`, ``allow_large`` as in :func:`effective_size`;
    ``progress`` shows a bar over the n_s evaluated; the model and its options
    as in :func:`effective_size`, and so are the operators.
    """
    choice = choose_model(model, dim=dim, dtype=dtype, target=target, w2_every=w2_every, bandwidth=bandwidth,
                          n_eval=n_eval, estimator=estimator, reference=reference)
    loop, dim, n_real, _, lam, memory, chains, seed, dtype = validate_inputs(
        loop, dim, n_real, None, lam, memory, chains, seed, dtype, choice)
    operators = operator_values(real_weight=real_weight, tilt=tilt, growth=growth)
    check_int32("n_real", round(n_real * ratio_max) + n_real, f"n_real + the largest n_syn searched "
                                                              f"({ratio_max:g} n_real)")
    grid = threshold_grid(n_real, ratio_max, points)
    # one horizon for every evaluation: same chains, same generations (CRN)
    horizon_T = max(horizon(burn_in(n_real, int(s), memory, weight=operators.get("real_weight"))) for s in grid)
    check_steady_resources([dict(n_real=n_real, n_syn=int(s), memory=memory, **operators) for s in grid] * 2,
                           chains=chains,
                           memory_slots=memory, horizon_T=horizon_T, allow_large=allow_large,
                           model=choice)  # twice: the bracket, then as many points inside it
    table = edist_table(model=choice, n_max=table_n_max)
    kw = dict(loop=loop, n_real=n_real, lam=lam, memory=memory, chains=chains, seed=seed, table=table,
              horizon_T=horizon_T, model=choice, operators=operators)
    with progress_bar(total=len(grid) + points, desc=f"n_s* root finding (n_r = {n_real}, λ = {lam:g})",
                      enabled=progress, unit="n_s") as bar:
        return _bracket_and_refine(grid, kw, points, z, bar)


def _bracket_and_refine(grid, kw, points, z, bar) -> dict:
    """The two stages of :func:`admissibility_threshold`: bracket on ``grid``, refine inside the bracket."""
    recs = ratio_curve(grid, **kw)
    bar.update(len(grid))
    r = np.array([x["n_e_ratio"] for x in recs])
    below = np.nonzero(r < 1)[0]
    if below.size == 0:
        bar.update(points)
        return {"n_syn_star": None, "n_syn_star_lo": float(grid[-1]), "n_syn_star_hi": None,
                "threshold_grid": grid.tolist(), "threshold_ratio": r.tolist()}
    k = below[0]
    lo_s = grid[k - 1] if k > 0 else max(1, grid[0] // 10)
    fine = np.unique(np.round(np.exp(np.linspace(np.log(lo_s), np.log(grid[k]), points))).astype(int))
    fine = fine[~np.isin(fine, grid)]
    recs_f = ratio_curve(fine, **kw) if fine.size else []
    bar.update(points)
    s_all = np.concatenate([grid, fine])
    r_all = np.concatenate([r, [x["n_e_ratio"] for x in recs_f]])
    se_all = np.concatenate([[x["n_e_ratio_se"] for x in recs], [x["n_e_ratio_se"] for x in recs_f]])
    order = np.argsort(s_all)
    s_all, r_all, se_all = s_all[order], r_all[order], np.nan_to_num(se_all[order], nan=0.0)
    j = int(np.nonzero(r_all < 1)[0][0])
    if j == 0:
        star = float(s_all[0])
    else:
        x0, x1 = np.log(s_all[j - 1]), np.log(s_all[j])
        y0, y1 = r_all[j - 1] - 1, r_all[j] - 1
        star = float(np.exp(x0 + (x1 - x0) * y0 / (y0 - y1)))
    sure_ok = s_all[(r_all - z * se_all) > 1]
    sure_bad = s_all[(r_all + z * se_all) < 1]
    lo = float(sure_ok[sure_ok <= star].max()) if np.any(sure_ok <= star) else float(s_all[0])
    hi = float(sure_bad[sure_bad >= star].min()) if np.any(sure_bad >= star) else float(s_all[-1])
    return {"n_syn_star": star, "n_syn_star_lo": lo, "n_syn_star_hi": hi,
            "threshold_grid": s_all.tolist(), "threshold_ratio": r_all.tolist()}


def format_result(result: dict) -> str:
    lines = [
        f"WD        = {result['wd']:.6g} ± {result['wd_se']:.2g}",
        f"n_e       = {result['n_e']:.6g} ± {result['n_e_se']:.2g}"
        + (f"  ({result['n_e_bound']} bound)" if result["n_e_bound"] else ""),
        f"n_e / n_r = {result['n_e_ratio']:.4g} ± {result['n_e_ratio_se']:.2g}",
        f"converged = {result['converged']}  (burn-in {result['burn_in']} of {result['generations']} generations,"
        f" {result['chains']} chains)",
    ]
    if "n_syn_star" in result:
        star = result["n_syn_star"]
        lines.append("n_s*      = " + (f"{star:.6g}  [{result['n_syn_star_lo']:.6g}, {result['n_syn_star_hi']:.6g}]"
                                       if star is not None else f"none: n_e/n_r >= 1 up to n_s = "
                                                                f"{result['n_syn_star_lo']:.6g}"))
    return "\n".join(lines)
