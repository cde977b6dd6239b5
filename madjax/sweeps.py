"""Resumable sweeps of n_e/n_r (or WD trajectories) over grids of loop parameters.

A sweep is a grid of cells over any of ``n_real, n_syn, lam, memory,
real_fraction, n_total, n_ini``. Cells run in vectorised batches (all swept values are traced; cells are
grouped by horizon level, a power of two of T, so a grid compiles once per
level and no cell runs the slowest cell's horizon) with common random numbers:
chain i has the same key in every cell. Each finished batch is written at
once to ``DIR/<name>.zarr`` (the values first, then the cell's ``done`` flag),
so a killed sweep resumes where it stopped; because a cell's numbers depend
only on its parameters, the chain keys and its horizon level, the resumed
sweep reproduces an uninterrupted one exactly. When all cells are done the
store is exported to ``DIR/<name>.nc``.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import xarray as xr

from madjax._progress import WeightedProgress, log
from madjax.effective import (
    EFFECTIVE_LOOPS,
    burn_in,
    edist_table,
    horizon_level,
    invert,
    result_record,
    steady_wd_cells,
)
from madjax.io import check_schema, describe, provenance
from madjax.loops import LoopParams
from madjax.validation import (
    ParameterError,
    check_choice,
    check_dtype,
    check_fraction,
    check_int,
    check_lam,
    check_writable,
)

SWEEP_PARAMS = ("n_real", "n_syn", "lam", "memory", "real_fraction", "n_total", "n_ini")
_INT_PARAMS = {"n_real", "n_syn", "memory", "n_total", "n_ini"}
OUTPUTS = ("wd", "wd_se", "n_e", "n_e_se", "n_e_ratio", "n_e_ratio_se", "n_e_bound", "converged", "burn_in")
_BOUND_CODE = {None: 0, "lower": 1, "upper": 2}


def validate_grid(grid: dict, fixed: dict) -> dict:
    """Check names and values of a grid (lists) and its fixed values; returns the grid."""
    if not grid:
        raise ParameterError("grid", "needs at least one swept parameter")
    for name, values in {**grid, **{k: [v] for k, v in fixed.items()}}.items():
        check_choice("grid", name, SWEEP_PARAMS)
        if len(values) == 0:
            raise ParameterError(name, "needs at least one value")
        for v in values:
            if name == "lam":
                check_lam(v)
            elif name == "real_fraction":
                check_fraction(v)
            else:
                check_int(name, v, minimum={"memory": 1, "n_ini": 2, "n_real": 2 if "real_fraction" not in grid
                                             and "real_fraction" not in fixed else 0}.get(name, 0))
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

    def __init__(self, path: str, grid: dict, outputs: dict, config: dict, fixed: dict | None = None):
        """``outputs``: name -> (extra dims, extra shape, dtype, fill); ``config``: what the cells depend on."""
        self.path, self.grid, self.outputs = path, grid, outputs
        self.dims = tuple(grid)
        self.shape = tuple(len(v) for v in grid.values())
        attrs = provenance(config)
        if os.path.exists(path):
            stored = xr.open_zarr(path, consolidated=False)
            check_schema(path, stored.attrs)
            if stored.attrs.get("config") != attrs["config"]:
                raise ParameterError("out", f"{path} holds a different sweep; choose another --out or --name")
            return
        data = {}
        encoding = {}
        for name, (extra_dims, extra_shape, dtype, fill) in {**outputs, "done": ((), (), np.int8, 0)}.items():
            data[name] = (self.dims + extra_dims, np.full(self.shape + extra_shape, fill, dtype))
            encoding[name] = {"chunks": (1,) * len(self.dims) + extra_shape}
        coords = {**{k: np.asarray(v) for k, v in (fixed or {}).items()}, **{k: np.asarray(v) for k, v in grid.items()}}
        for name, (extra_dims, extra_shape, *_rest) in outputs.items():
            for d, n in zip(extra_dims, extra_shape):
                coords.setdefault(d, np.arange(1, n + 1))
        ds = describe(xr.Dataset(data, coords=coords, attrs=attrs))
        ds.to_zarr(path, mode="w", encoding=encoding, consolidated=False)

    def cells(self):
        return list(itertools.product(*(range(n) for n in self.shape)))

    def done(self) -> np.ndarray:
        return xr.open_zarr(self.path, consolidated=False)["done"].values.astype(bool)

    def write(self, index: tuple, values: dict) -> None:
        region = {d: slice(i, i + 1) for d, i in zip(self.dims, index)}
        data = {}
        for name, value in values.items():
            extra_dims = self.outputs[name][0]
            data[name] = (self.dims + extra_dims, np.asarray(value)[(None,) * len(self.dims)])
        xr.Dataset(data).to_zarr(self.path, region=region, consolidated=False)
        done = xr.Dataset({"done": (self.dims, np.ones((1,) * len(self.dims), np.int8))})
        done.to_zarr(self.path, region=region, consolidated=False)

    def export(self, nc_path: str) -> xr.Dataset:
        ds = xr.open_zarr(self.path, consolidated=False).load()
        tmp = nc_path + ".part"
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, nc_path)
        return ds


def run_effective_sweep(out: str, name: str, *, loop: str, dim: int, grid: dict, fixed: dict | None = None,
                        chains: int = 256, seed: int = 0, dtype: str = "float32", batch: int = 16,
                        progress: bool = True) -> xr.Dataset:
    """n_e/n_r, WD and their standard errors over a grid; resumable (see module docstring).

    Args:
      out: directory; writes ``out/name.zarr`` as cells finish and ``out/name.nc`` at the end.
      grid: ``{param: [values]}`` over ``SWEEP_PARAMS``; dims of the result, in this order.
      fixed: values common to every cell (e.g. ``{"lam": 0.9}``).

    Returns:
      ``xarray.Dataset`` with ``n_e_ratio``, ``n_e_ratio_se``, ``wd``, ... on the grid dims.
    """
    fixed = dict(fixed or {})
    check_choice("loop", loop, EFFECTIVE_LOOPS)
    dim = check_int("dim", dim, minimum=1)
    chains = check_int("chains", chains, minimum=2)
    dtype = check_dtype(dtype)
    check_writable("out", out, directory=True)
    grid = {k: [int(v) if k in _INT_PARAMS else float(v) for v in vals] for k, vals in validate_grid(grid, fixed).items()}
    names = list(grid)
    combos = list(itertools.product(*grid.values()))
    cells = [cell_params({**fixed, **dict(zip(names, combo))}) for combo in combos]
    memory_slots = max(c["memory"] for c in cells)
    # Cells are grouped by horizon level (powers of two of T): one compilation per level.
    levels = [horizon_level(burn_in(c["n_real"], c["n_syn"], c["memory"])) for c in cells]
    config = {"loop": loop, "dim": dim, "grid": grid, "fixed": fixed, "chains": chains, "seed": seed, "dtype": dtype}
    os.makedirs(out, exist_ok=True)
    f8 = ((), (), np.float64, np.nan)
    outputs = {k: f8 for k in OUTPUTS}
    outputs.update(n_e_bound=((), (), np.int8, -1), converged=((), (), np.int8, -1),
                   burn_in=((), (), np.int32, -1))
    store = CellStore(os.path.join(out, f"{name}.zarr"), grid, outputs, config, fixed)
    table = edist_table(dim, dtype)
    index = store.cells()
    done = store.done()
    todo = [i for i, idx in enumerate(index) if not done[idx]]
    log.info("%s: %d of %d cells to run, %d chains, d = %d, %.3g chain-generations", name, len(todo), len(index),
             chains, dim, chains * sum(levels[i] for i in todo))
    with WeightedProgress([chains * lv for lv in levels], done=[i for i, idx in enumerate(index) if done[idx]],
                          desc=name, enabled=progress) as bar:
        batches = [(level, group[start:start + batch]) for level in sorted(set(levels))
                   for group in [[i for i in todo if levels[i] == level]] for start in range(0, len(group), batch)]
        for level, chunk in batches:
            ests = steady_wd_cells([cells[i] for i in chunk], loop=loop, dim=dim, chains=chains, seed=seed,
                                   dtype=dtype, memory_slots=memory_slots, batch=batch, horizon_T=level)
            for i, est in zip(chunk, ests):
                rec = result_record(est, invert(table, est.wd, est.wd_se), cells[i]["n_real"], chains)
                rec["n_e_bound"] = _BOUND_CODE[rec["n_e_bound"]]
                rec["converged"] = int(rec["converged"])
                store.write(index[i], {k: rec[k] for k in OUTPUTS})
            bar.advance(chunk)
    log.info("%s: exporting %s", name, os.path.join(out, f"{name}.nc"))
    ds = store.export(os.path.join(out, f"{name}.nc"))
    return ds


def _read_grid_file(path: str) -> dict:
    try:
        with open(path) as fh:
            grid = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ParameterError("grid", f"cannot read grid file {path!r}: {err}") from None
    if not isinstance(grid, dict):
        raise ParameterError("grid", "must be a JSON object {param: [values]}")
    return {k: v if isinstance(v, list) else [v] for k, v in grid.items()}


def sweep_cli(args) -> xr.Dataset:
    """``madjax sweep``: lists with one value are fixed, longer lists are swept."""
    if args.grid is not None:
        values = _read_grid_file(args.grid)
    else:
        values = {k: getattr(args, k) for k in SWEEP_PARAMS if k != "n_ini" and getattr(args, k) is not None}
    grid = {k: v for k, v in values.items() if len(v) > 1}
    fixed = {k: v[0] for k, v in values.items() if len(v) == 1}
    if not grid:  # a single cell is a grid of one
        first = next(iter(fixed), None)
        if first is None:
            raise ParameterError("n_real", "no grid given")
        grid = {first: [fixed.pop(first)]}
    ds = run_effective_sweep(args.out, args.name, loop=args.loop, dim=args.dim, grid=grid, fixed=fixed,
                             chains=args.chains, seed=args.seed, dtype="float64" if args.x64 else "float32",
                             progress=not args.quiet)
    if not args.quiet:
        print(os.path.join(args.out, f"{args.name}.nc"))
    return ds
