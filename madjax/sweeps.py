"""Resumable sweeps of n_e/n_r (or WD trajectories) over grids of loop parameters.

A sweep is a grid of cells over any of ``n_real, n_syn, lam, memory,
real_fraction, n_total, n_ini`` and the stationary loop operators ``real_weight``
(weighted mixing) and ``tilt`` (curation). A *trajectory* sweep
(:func:`run_trajectory_sweep`) records instead, per cell, the chains' mean and
standard error of every diagnostic per generation, for any loop and every
operator, growing sample sizes (``growth``) included, which have no steady state. Cells run in vectorised batches (all swept values are traced; cells are
grouped by horizon level, a power of two of T, so a grid compiles once per
level and no cell runs the slowest cell's horizon) with common random numbers:
chain i has the same key in every cell. Each finished batch is written at
once to ``DIR/<name>.zarr`` (the values first, then the cell's ``done`` flag),
so a killed sweep resumes where it stopped; because a cell's numbers depend
only on its parameters, the chain keys and its horizon level, the resumed
sweep reproduces an uninterrupted one exactly. When all cells are done the
store is exported to ``DIR/<name>.nc``.

The store is created atomically (built aside, then renamed: a kill during
creation leaves nothing to trip over) and checked before it is trusted: on
every open and before export, a cell marked done whose values are missing,
unreadable or invalid is recomputed (one warning line); a store whose
metadata is damaged is started again when no cell is finished, and refused
with one line otherwise (:class:`CellStore`, :mod:`madjax.io`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp

import numpy as np
import xarray as xr

from madjax._progress import WeightedProgress, log
from madjax.effective import (
    EFFECTIVE_LOOPS,
    cell_burn_in,
    check_steady_resources,
    choose_model,
    edist_table,
    horizon_level,
    invert,
    result_record,
    steady_wd_cells,
)
from madjax.io import (
    atomic_path,
    check_schema,
    create_store,
    describe,
    provenance,
    read_cells,
    store_attrs,
    store_problem,
    trusted_cells,
    write_region,
)
from madjax.loops import LoopParams
from madjax.resources import CELL_S, chain_generation_seconds, check_budget
from madjax.validation import (
    INT32_MAX,
    ParameterError,
    check_choice,
    check_dtype,
    check_fraction,
    check_int,
    check_lam,
    check_name,
    check_nonnegative,
    check_seed,
    check_writable,
)

SWEEP_PARAMS = ("n_real", "n_syn", "lam", "memory", "real_fraction", "n_total", "n_ini", "real_weight", "tilt")
TRAJECTORY_PARAMS = ("n_ini", "n_real", "n_syn", "lam", "memory", "n_train", "growth", "real_weight", "tilt")
_INT_PARAMS = {"n_real", "n_syn", "memory", "n_total", "n_ini"}
OUTPUTS = ("wd", "wd_se", "n_e", "n_e_se", "n_e_ratio", "n_e_ratio_se", "n_e_bound", "converged", "burn_in")
_BOUND_CODE = {None: 0, "lower": 1, "upper": 2}


def validate_grid(grid: dict, fixed: dict) -> dict:
    """Check names and values of a grid (lists) and its fixed values; returns the grid."""
    if not grid:
        raise ParameterError("grid", "needs at least one swept parameter")
    for name, values in {**grid, **{k: [v] for k, v in fixed.items()}}.items():
        if name == "growth":
            raise ParameterError("growth", "growing sample sizes have no steady state, so no n_e: use a "
                                           "trajectory sweep (--trajectory)")
        check_choice("grid", name, SWEEP_PARAMS)
        if len(values) == 0:
            raise ParameterError(name, "needs at least one value")
        for v in values:
            if name == "lam":
                check_lam(v)
            elif name in ("real_fraction", "real_weight"):
                check_fraction(v, name)
            elif name == "tilt":
                check_nonnegative(name, v, maximum=1e6)
            else:
                check_int(name, v, minimum={"memory": 1, "n_ini": 2, "n_real": 2 if "real_fraction" not in grid
                                             and "real_fraction" not in fixed else 0}.get(name, 0),
                          maximum=INT32_MAX)
    names = set(grid) | set(fixed)
    if ("real_fraction" in names) != ("n_total" in names):
        raise ParameterError("real_fraction", "real_fraction and n_total go together")
    if "real_fraction" in names and names & {"n_real", "n_syn"}:
        raise ParameterError("real_fraction", "give either real_fraction/n_total or n_real/n_syn")
    if "real_fraction" not in names and not {"n_real", "n_syn"} <= names:
        raise ParameterError("n_real", "the grid needs n_real and n_syn (swept or fixed)")
    return grid


def cell_params(values: dict) -> dict:
    """LoopParams fields of one cell (resolving p, n into n_r, n_s)."""
    cell = {"lam": 1.0, "memory": 1, **values}
    if "real_fraction" in cell:
        n_real, n_syn = LoopParams.split_total(cell.pop("real_fraction"), cell.pop("n_total"))
        cell["n_real"], cell["n_syn"] = int(n_real), int(n_syn)
    cell["n_ini"] = int(cell.get("n_ini", max(cell["n_real"], 2)))
    if cell["n_real"] < 1:
        raise ParameterError("real_fraction", "every cell needs at least one real sample per generation")
    return cell


class CellStore:
    """A Zarr store of per-cell outputs with a ``done`` flag (chunks of one cell).

    The store describes itself (:mod:`madjax.io`): provenance and ``config``
    in its attributes, ``long_name``/``units`` on every variable, and the
    ``fixed`` values (common to every cell) as scalar coordinates. A store
    of another schema or another ``config`` is refused, never resumed.
    """

    def __init__(self, path: str, grid: dict, outputs: dict, config: dict, fixed: dict | None = None, *,
                 nan_ok: tuple[str, ...] = ()):
        """``outputs``: name -> (extra dims, extra shape, dtype, fill); ``config``: what the cells depend on;
        ``nan_ok``: float outputs that may be NaN in a finished cell (all others must be finite, and integer
        outputs must differ from their fill)."""
        self.path, self.grid, self.outputs = path, grid, outputs
        self.dims = tuple(grid)
        self.shape = tuple(len(v) for v in grid.values())
        self.checks = {name: fill if np.issubdtype(dtype, np.integer) else None
                       for name, (_, _, dtype, fill) in outputs.items() if name not in nan_ok}
        attrs = provenance(config)
        if os.path.lexists(path):
            self._reopen(attrs)
        if not os.path.lexists(path):
            self._create(attrs, fixed)
        self.verify()

    def _create(self, attrs: dict, fixed: dict | None) -> None:
        data = {}
        encoding = {}
        for name, (extra_dims, extra_shape, dtype, fill) in {**self.outputs, "done": ((), (), np.int8, 0)}.items():
            data[name] = (self.dims + extra_dims, np.full(self.shape + extra_shape, fill, dtype))
            encoding[name] = {"chunks": (1,) * len(self.dims) + extra_shape}
        coords = {**{k: np.asarray(v) for k, v in (fixed or {}).items()},
                  **{k: np.asarray(v) for k, v in self.grid.items()}}
        for name, (extra_dims, extra_shape, *_rest) in self.outputs.items():
            for d, n in zip(extra_dims, extra_shape):
                coords.setdefault(d, np.arange(1, n + 1))
        create_store(self.path, describe(xr.Dataset(data, coords=coords, attrs=attrs)), encoding)

    def _reopen(self, attrs: dict) -> None:
        """Check an existing store: the same sweep, whole metadata; an unfinished creation starts again."""
        shapes = {name: self.shape + tuple(extra_shape)
                  for name, (_, extra_shape, *_rest) in {**self.outputs, "done": ((), (), np.int8, 0)}.items()}
        problem = store_problem(self.path, shapes)
        try:
            stored = store_attrs(self.path)
        except Exception:  # noqa: BLE001 - unreadable metadata: judged by its structure below
            stored = None
        if stored is not None and (problem is None or "config" in stored):  # another sweep is never touched
            check_schema(self.path, stored)
            if stored.get("config") != attrs["config"]:
                raise ParameterError("out", f"{self.path} holds a different sweep; choose another --out or --name")
        if problem is None:
            return
        if not os.path.isdir(self.path) or self._any_done() or not self._looks_like_zarr():
            raise ParameterError("out", f"{self.path}: damaged store ({problem}); move it away to start again")
        log.warning("%s: unfinished store (%s); creating it again", self.path, problem)
        shutil.rmtree(self.path)

    def _any_done(self) -> bool:
        try:
            return bool(np.any(read_cells(self.path, "done") == 1))
        except Exception:  # noqa: BLE001 - no readable flags: no cell was ever finished in this store
            return False

    def _looks_like_zarr(self) -> bool:
        """Empty, or Zarr metadata at the top: safe to remove as an unfinished creation."""
        names = os.listdir(self.path)
        return not names or bool({"zarr.json", ".zgroup", ".zattrs"} & set(names))

    def cells(self):
        return list(itertools.product(*(range(n) for n in self.shape)))

    def done(self) -> np.ndarray:
        """The finished cells whose values can be trusted, as a boolean array over the grid."""
        return trusted_cells(self.path, self.shape, self.checks)

    def verify(self) -> np.ndarray:
        """Clear the ``done`` flag of cells whose values are missing, unreadable or invalid; return :meth:`done`.

        Such cells are then recomputed by the next run (one warning line).
        """
        flagged = read_cells(self.path, "done") == 1
        trusted = self.done()
        bad = [index for index in self.cells() if flagged[index] and not trusted[index]]
        if bad:
            log.warning("%s: %d cell(s) marked done hold missing, unreadable or invalid values; recomputing them",
                        self.path, len(bad))
            for index in bad:
                self._flag(index, 0)
        return trusted

    def _region(self, index: tuple) -> dict:
        return {d: slice(i, i + 1) for d, i in zip(self.dims, index)}

    def _flag(self, index: tuple, value: int) -> None:
        flag = xr.Dataset({"done": (self.dims, np.full((1,) * len(self.dims), value, np.int8))})
        write_region(self.path, flag, self._region(index))

    def write(self, index: tuple, values: dict) -> None:
        """Store one cell's values, then mark it done."""
        data = {}
        for name, value in values.items():
            extra_dims = self.outputs[name][0]
            data[name] = (self.dims + extra_dims, np.asarray(value)[(None,) * len(self.dims)])
        write_region(self.path, xr.Dataset(data), self._region(index))
        self._flag(index, 1)

    def export(self, nc_path: str) -> xr.Dataset:
        """Check every cell (:meth:`verify`), then write ``nc_path`` atomically; refuse an unfinished store."""
        trusted = self.verify()
        if not trusted.all():
            raise ParameterError("out", f"{self.path}: {int((~trusted).sum())} of {trusted.size} cells are not "
                                        "finished; run the same command again to complete them")
        try:
            ds = xr.open_zarr(self.path, consolidated=False).load()
        except Exception as err:  # noqa: BLE001 - zarr's codec errors share no base
            raise ParameterError("out", f"{self.path}: unreadable store ({' '.join(str(err).split())})") from None
        with atomic_path(nc_path, suffix=".nc") as tmp:
            ds.to_netcdf(tmp, engine="netcdf4")
        return ds


def run_effective_sweep(out: str, name: str, *, loop: str, dim: int | None = None, grid: dict,
                        fixed: dict | None = None, chains: int = 256, seed: int = 0, dtype: str = "float32",
                        batch: int = 16, progress: bool = True, allow_large: bool = False, model="gaussian",
                        target=None, bandwidth=None, n_eval=None, table_n_max=None, estimator=None,
                        reference=None) -> xr.Dataset:
    """n_e/n_r, WD and their standard errors over a grid; resumable (see module docstring).

    Args:
      out: directory; writes ``out/name.zarr`` as cells finish and ``out/name.nc`` at the end.
      grid: ``{param: [values]}`` over ``SWEEP_PARAMS``; dims of the result, in this order.
      fixed: values common to every cell (e.g. ``{"lam": 0.9}``).
      name: a plain file name (it may not leave ``out``).
      allow_large: run even a grid whose estimated memory or time is absurd
        (:func:`madjax.effective.check_steady_resources`).
      model, target, bandwidth, n_eval, table_n_max, estimator, reference: the
        jittable model and its options, as in :func:`madjax.effective.effective_size` (a
        :class:`~madjax.models.ModelChoice` is accepted too).

    Everything is validated before the first file is written.

    Returns:
      ``xarray.Dataset`` with ``n_e_ratio``, ``n_e_ratio_se``, ``wd``, ... on the grid dims.
    """
    fixed = dict(fixed or {})
    check_choice("loop", loop, EFFECTIVE_LOOPS)
    choice = choose_model(model, dim=dim, dtype=dtype, target=target, bandwidth=bandwidth, n_eval=n_eval,
                          estimator=estimator, reference=reference)
    dim, dtype = choice.dim, choice.dtype
    if table_n_max is not None:
        check_int("table_n_max", table_n_max, minimum=choice.entry.table[0] + 1)
    chains = check_int("chains", chains, minimum=2, maximum=INT32_MAX)
    seed = check_seed(seed)
    dtype = check_dtype(dtype)
    check_writable("out", out, directory=True)
    check_name("name", name)
    grid = {k: [int(v) if k in _INT_PARAMS else float(v) for v in vals] for k, vals in validate_grid(grid, fixed).items()}
    names = list(grid)
    weights = grid.get("real_weight", []) + ([fixed["real_weight"]] if "real_weight" in fixed else [])
    if any(w <= 0 for w in weights):  # refused up front, not when the cell comes
        raise ParameterError("real_weight", "w = 0 gives the real data no weight: no steady state")
    # Enumerating the cells costs time too: a grid too large to run is refused before it is listed.
    n_cells = math.prod(len(v) for v in grid.values())
    check_budget(max(grid, key=lambda k: len(grid[k])), what=f"a grid of {n_cells} cells x {chains} chains",
                 seconds=n_cells * (CELL_S + chains * horizon_level(1) * chain_generation_seconds(dim)),
                 allow_large=allow_large)
    combos = list(itertools.product(*grid.values()))
    cells = [cell_params({**fixed, **dict(zip(names, combo))}) for combo in combos]
    fewest = choice.min_points
    for c in cells:
        if c["n_real"] < fewest:
            raise ParameterError("n_real", f"a training set of the {choice.name} model needs at least {fewest} "
                                           f"points, got n_real = {c['n_real']}")
    memory_slots = max(c["memory"] for c in cells)
    check_steady_resources(cells, chains=chains, memory_slots=memory_slots, batch=batch, by_level=True,
                           allow_large=allow_large, model=choice)
    # Cells are grouped by horizon level (powers of two of T): one compilation per level.
    levels = [horizon_level(cell_burn_in(c)) for c in cells]
    config = {"loop": loop, "grid": grid, "fixed": fixed, "chains": chains, "seed": seed, **choice.record(),
              "table_n_max": table_n_max}
    os.makedirs(out, exist_ok=True)
    f8 = ((), (), np.float64, np.nan)
    outputs = {k: f8 for k in OUTPUTS}
    outputs.update(n_e_bound=((), (), np.int8, -1), converged=((), (), np.int8, -1),
                   burn_in=((), (), np.int32, -1))
    store = CellStore(os.path.join(out, f"{name}.zarr"), grid, outputs, config, fixed,
                      nan_ok=("n_e_se", "n_e_ratio_se"))
    table = edist_table(model=choice, n_max=table_n_max)
    index = store.cells()
    done = store.done()
    todo = [i for i, idx in enumerate(index) if not done[idx]]
    log.info("%s: %d of %d cells to run, %d chains, d = %d, %.3g chain-generations", name, len(todo), len(index),
             chains, dim, chains * sum(levels[i] for i in todo))
    with WeightedProgress([chains * lv for lv in levels], done=[i for i, idx in enumerate(index) if done[idx]],
                          desc=name, enabled=progress) as bar:
        # A level's batch is at most its number of cells in the whole grid (a level of 2 cells is
        # not padded to 16): fixed per level, so a resumed sweep compiles and computes the same shapes.
        sizes = {level: min(batch, levels.count(level)) for level in set(levels)}
        batches = [(level, group[start:start + sizes[level]]) for level in sorted(set(levels))
                   for group in [[i for i in todo if levels[i] == level]]
                   for start in range(0, len(group), sizes[level])]
        for level, chunk in batches:
            ests = steady_wd_cells([cells[i] for i in chunk], loop=loop, chains=chains, seed=seed,
                                   memory_slots=memory_slots, batch=sizes[level], horizon_T=level, model=choice)
            for i, est in zip(chunk, ests):
                rec = result_record(est, invert(table, est.wd, est.wd_se), cells[i]["n_real"], chains)
                rec["n_e_bound"] = _BOUND_CODE[rec["n_e_bound"]]
                rec["converged"] = int(rec["converged"])
                store.write(index[i], {k: rec[k] for k in OUTPUTS})
            bar.advance(chunk)
    log.info("%s: exporting %s", name, os.path.join(out, f"{name}.nc"))
    ds = store.export(os.path.join(out, f"{name}.nc"))
    return ds


def run_trajectory_sweep(out: str, name: str, *, loop: str, grid: dict, fixed: dict | None = None,
                         generations: int, chains: int = 256, seed: int = 0, progress: bool = True,
                         allow_large: bool = False, **options) -> xr.Dataset:
    """Per-generation means and standard errors of every diagnostic over a grid; resumable.

    Each cell is a :func:`madjax.simulate.simulate` request (``loop`` -- any
    loop or alias --, ``options``: its model, sizes and operators as keywords,
    with the swept values of :data:`TRAJECTORY_PARAMS` from ``grid`` and
    ``fixed``). Cells with the same static spec run in one compiled, vmapped
    call with common random numbers (chain i has the same key in every cell),
    so a sweep over ``growth``, ``real_weight``, ``tilt`` or λ compiles once.
    Every cell is validated (and the whole grid's memory and time estimated)
    before the store is created; finished cells are written to
    ``out/name.zarr`` at once and the store is exported to ``out/name.nc``.

    Returns:
      ``xarray.Dataset`` with ``<diagnostic>_mean`` and ``<diagnostic>_se``
      on the grid dims and ``generation``.
    """
    from madjax.loops import run_cells_jit, run_chunked, stack_params
    from madjax.simulate import chain_cost, check_resources, make_config

    fixed = dict(fixed or {})
    if not grid:
        raise ParameterError("grid", "needs at least one swept parameter")
    for key in {**grid, **fixed}:
        check_choice("grid", key, TRAJECTORY_PARAMS)
    for key, values in grid.items():
        if len(values) == 0:
            raise ParameterError(key, "needs at least one value")
    check_writable("out", out, directory=True)
    check_name("name", name)
    chains = check_int("chains", chains, minimum=2, maximum=INT32_MAX)
    seed = check_seed(seed)
    names = list(grid)
    combos = list(itertools.product(*grid.values()))
    configs = [make_config(loop=loop, generations=generations, chains=chains, seed=seed,
                           **{**options, **fixed, **dict(zip(names, combo))}) for combo in combos]
    for config in configs:
        check_resources(config, allow_large=allow_large)
    check_budget(max(grid, key=lambda k: len(grid[k])), what=f"a grid of {len(configs)} cells x {chains} chains x "
                                                           f"{generations} generations",
                 seconds=len(configs) * (CELL_S + chains * generations * chain_generation_seconds(configs[0].dim)),
                 allow_large=allow_large)
    groups: dict = {}
    for i, config in enumerate(configs):
        groups.setdefault(config.spec(), []).append(i)
    first_spec = next(iter(groups))
    shapes = jax.eval_shape(lambda: run_cells_jit(jax.random.key(0), jnp.arange(1, dtype=jnp.uint32),
                                                  stack_params([configs[0].params()]), first_spec, generations))
    shapes = shapes._asdict() if hasattr(shapes, "_asdict") else shapes
    fields = [k for k, v in shapes.items() if jnp.issubdtype(v.dtype, jnp.floating)]
    record = {"loop": loop, "grid": {k: list(map(float, v)) for k, v in grid.items()}, "fixed": fixed,
              "generations": generations, "chains": chains, "seed": seed,
              "cell": json.loads(json.dumps(dataclasses.asdict(configs[0]), default=str))}
    os.makedirs(out, exist_ok=True)
    per_gen = (("generation",), (generations,), np.float64, np.nan)
    outputs = {f"{k}_{stat}": per_gen for k in fields for stat in ("mean", "se")}
    store = CellStore(os.path.join(out, f"{name}.zarr"), {k: list(v) for k, v in grid.items()}, outputs, record,
                      fixed, nan_ok=tuple(outputs))
    index = store.cells()
    done = store.done()
    with WeightedProgress([chains] * len(configs), done=[i for i, idx in enumerate(index) if done[idx]],
                          desc=name, enabled=progress) as bar:
        for spec, idx in groups.items():
            todo = [i for i in idx if not done[index[i]]]
            if not todo:
                continue
            params = stack_params([configs[i].params() for i in todo])
            # cells × chunk near 1 GiB; all chains in one chunk where they fit (one shape, one compilation)
            chunk = max(1, min(chains, (1 << 30) // (chain_cost(configs[todo[0]])[0] * len(todo))))

            def chunk_fn(ids, params=params, spec=spec):
                out = run_cells_jit(jax.random.key(seed), ids, params, spec, generations)
                out = out._asdict() if hasattr(out, "_asdict") else out
                return {k: jnp.moveaxis(out[k], 1, 0) for k in fields}  # chains first

            records = run_chunked(chunk_fn, chains=chains, chunk=chunk)
            for j, i in enumerate(todo):
                values = {}
                for k in fields:
                    x = np.asarray(records[k][:, j], np.float64)
                    values[f"{k}_mean"] = x.mean(0)
                    values[f"{k}_se"] = x.std(0, ddof=1) / math.sqrt(chains)
                store.write(index[i], values)
            bar.advance(todo)
    return store.export(os.path.join(out, f"{name}.nc"))


# A grid file lists a few values per parameter; reading stops past this size
# (a file that never ends, such as /dev/zero, is refused, not read forever).
GRID_FILE_MAX = 1 << 20


def read_grid_file(path: str) -> dict:
    """A JSON grid file ``{param: [values...]}`` (a bare value is a list of one), read at most
    :data:`GRID_FILE_MAX` bytes; an unreadable or malformed file raises ``ParameterError('grid', ...)``."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(GRID_FILE_MAX + 1)
        if len(raw) > GRID_FILE_MAX:
            raise ParameterError("grid", f"grid file {path!r} is larger than {GRID_FILE_MAX >> 20} MiB; "
                                         "it should list a few values per parameter")
        grid = json.loads(raw)
    except (OSError, ValueError, RecursionError) as err:  # JSON and UTF-8 errors are ValueErrors
        if isinstance(err, ParameterError):
            raise
        raise ParameterError("grid", f"cannot read grid file {path!r}: {err}") from None
    if not isinstance(grid, dict):
        raise ParameterError("grid", "must be a JSON object {param: [values]}")
    return {k: v if isinstance(v, list) else [v] for k, v in grid.items()}
