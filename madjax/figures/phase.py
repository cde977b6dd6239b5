"""Phase diagrams and trajectories: Figures 9, 10, 30, 31, 32, 33, 34 (Gaussian) and ``gmm-phase``.

Grids (the paper's text does not list them; chosen to cover the regimes it
describes -- n_r from below d to far above it, n_s/n_r from about 0.1 to
≥ 100, λ from 1 down to 0.5, K up to 10):

* ``paper``: d = 100, n_r ∈ {10 … 10⁴}, n_s ∈ {10 … 10⁵}, λ ∈ {1, 0.9, 0.7, 0.5},
  256 chains. GPU-scale; checked here with ``--dry-run``.
* ``quick``: d = 10 with n_r and n_s scaled with d (n_r from 0.5 d to 32 d),
  n_s/n_r up to ~64, 64–128 chains: a 2-core CPU in minutes.
* ``smoke``: d = 4, 2×2 grids, 32 chains: seconds; what tests and notebooks run.

``gmm-phase`` is Fig. 10's diagram for the 25-component GMM on the 2-D grid
(fresh loop, n_e/n_r over (n_r, n_s), panels λ = 1 and λ < 1), with WD the
mixture Wasserstein distance (:mod:`madjax.gmm`) and the GMM's own E-dist
table. A training set needs ≥ 25 points, so n_r starts at 50; the E-dist
table reaches as far in n as EM's cost allows in the preset (beyond it n_e is
a bound, marked ≥ on the cell):

* ``paper``: λ ∈ {1, 0.8}, n_r ∈ {50 … 3000}, n_s ∈ {25 … 10⁴}, 1000 chains, table to 10⁵:
  GPU-scale, checked with ``--dry-run``;
* ``quick``: λ ∈ {1, 0.5}, n_r ∈ {50, 200}, n_s ∈ {25, 100}, 128 chains,
  table to 4096, evaluation samples of 32 points (only ``w2`` enters n_e):
  every cell fits one buffer capacity level (256 rows), two horizon levels
  (64, 128).
  A GMM chain-generation costs ~1.8 ms here (EM with its k-means++ start
  1.2 ms, diagnostics 0.6 ms), ~100× a d = 10 Gaussian one, and cells that
  fail the convergence check rerun at twice the horizon: larger n_s/n_r
  needs the GPU-sized ``paper`` preset;
* ``smoke``: λ ∈ {1, 0.8}, n_r ∈ {30, 60}, n_s ∈ {10, 30}, 8 chains, table to 256: one
  horizon level and one buffer capacity level, so the sweep compiles once
  (plus once for the table).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from madjax._progress import log, progress_bar
from madjax.effective import (
    admissibility_threshold,
    burn_in,
    cell_factor,
    horizon,
    horizon_level,
    steady_state_jit,
    threshold_grid,
)
from madjax.figures import Figure
from madjax.figures.style import LOG2_RATIO_LIMIT, band_label, caption, finish, save, setting, symbol
from madjax.io import (SCHEMA_VERSION, atomic_path, check_schema, describe, open_checked, provenance, read_json,
                       write_json)
from madjax.gaussian import GaussianSpec
from madjax.loops import LoopParams, LoopSpec, padded_chain_ids, run_cells_jit, stack_params
from madjax.models import ModelChoice
from madjax.sweeps import CellStore, cell_params, run_effective_sweep, validate_grid
from madjax.validation import ParameterError, check_choice, check_name
from madjax.walltime import Calibration, calibrate, estimate


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One figure's sweeps. ``sweeps``: name -> (grid, fixed); ``plot``: layout."""

    fig: str
    preset: str
    loop: str
    dim: int
    sweeps: tuple  # ((name, grid dict, fixed dict), ...)
    chains: int
    kind: str  # "heatmap" | "curve" | "trajectory"
    x: str = "n_syn"
    y: str = "n_real"
    panel: str | None = "lam"
    threshold: bool = False
    generations: int = 0  # trajectory only
    threshold_ratio_max: float = 100.0  # root finding for n_s* searches n_s ≤ this × n_r
    model: str = "gaussian"  # a jittable model of madjax.models.MODELS
    model_options: tuple = ()  # its options, (name, value) pairs
    table_n_max: int | None = None  # the E-dist table's largest n (None: the model's default)

    def __post_init__(self):
        check_name("fig", self.fig)  # names become files under DIR: a stored config may not lead out of it
        for name, grid, fixed in self.sweeps:
            check_name("sweeps", name)
            if self.kind != "trajectory":
                validate_grid(grid, fixed)
        self.choice()  # the model and its options are valid

    def choice(self) -> ModelChoice:
        return ModelChoice.create(self.model, dim=self.dim, **dict(self.model_options))


def _cfg(fig, preset, **per_preset):
    check_choice("preset", preset, ("smoke", "quick", "paper"))
    return PhaseConfig(fig=fig, preset=preset, **per_preset[preset])


def get_config(fig: str, preset: str) -> PhaseConfig:
    if fig == "fig9":
        # Fresh loop, n_r = 100, n_s = 900 (paper); several n_ini, λ = 1 and 0.8.
        return _cfg(fig, preset,
                    paper=dict(loop="fresh", dim=100, chains=256, kind="trajectory", generations=100,
                               sweeps=(("fig9", {"lam": [1.0, 0.8], "n_ini": [10, 100, 1000, 10000]},
                                        {"n_real": 100, "n_syn": 900}),)),
                    quick=dict(loop="fresh", dim=10, chains=256, kind="trajectory", generations=100,
                               sweeps=(("fig9", {"lam": [1.0, 0.8], "n_ini": [3, 10, 100, 1000]},
                                        {"n_real": 10, "n_syn": 90}),)),
                    smoke=dict(loop="fresh", dim=4, chains=32, kind="trajectory", generations=20,
                               sweeps=(("fig9", {"lam": [1.0, 0.8], "n_ini": [3, 100]},
                                        {"n_real": 4, "n_syn": 36}),)))
    if fig == "fig10":
        # n_e/n_r over (n_r, n_s), panels by λ; the n_e = n_r frontier by root finding.
        return _cfg(fig, preset,
                    paper=dict(loop="fresh", dim=100, chains=256, kind="heatmap", threshold=True,
                               sweeps=(("fig10", {"lam": [1.0, 0.9, 0.7, 0.5],
                                                  "n_real": [10, 30, 100, 300, 1000, 3000, 10000],
                                                  "n_syn": [10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]},
                                        {}),)),
                    quick=dict(loop="fresh", dim=10, chains=64, kind="heatmap", threshold=True,
                               threshold_ratio_max=64.0, sweeps=(("fig10", {"lam": [1.0, 0.9, 0.7], "n_real": [5, 20, 80, 320],
                                                  "n_syn": [2, 10, 50, 250, 1250]}, {}),)),
                    smoke=dict(loop="fresh", dim=4, chains=32, kind="heatmap", threshold=True,
                               threshold_ratio_max=10.0, sweeps=(("fig10", {"lam": [1.0, 0.7], "n_real": [4, 16], "n_syn": [4, 32]}, {}),)))
    if fig == "fig32":
        # n_e/n_r over (n_s, λ), panels by n_r.
        lam = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
        return _cfg(fig, preset,
                    paper=dict(loop="fresh", dim=100, chains=256, kind="heatmap", x="n_syn", y="lam", panel="n_real",
                               sweeps=(("fig32", {"n_real": [100, 1000], "lam": lam,
                                                  "n_syn": [10, 100, 1000, 10000, 100000]}, {}),)),
                    quick=dict(loop="fresh", dim=10, chains=64, kind="heatmap", x="n_syn", y="lam", panel="n_real",
                               sweeps=(("fig32", {"n_real": [10, 100], "lam": lam,
                                                  "n_syn": [2, 10, 50, 250, 1000]}, {}),)),
                    smoke=dict(loop="fresh", dim=4, chains=32, kind="heatmap", x="n_syn", y="lam", panel="n_real",
                               sweeps=(("fig32", {"n_real": [8], "lam": [1.0, 0.6], "n_syn": [4, 32]}, {}),)))
    if fig == "fig33":
        # n_e/n_r vs memory K at n_r = 10³, n_s = 10⁴, λ = 1 (paper); same ratio n_s/n_r = 10 scaled.
        return _cfg(fig, preset,
                    paper=dict(loop="fresh", dim=100, chains=256, kind="curve", x="memory", panel=None,
                               sweeps=(("fig33", {"memory": [1, 2, 3, 4, 6, 8, 10]},
                                        {"n_real": 1000, "n_syn": 10000, "lam": 1.0}),)),
                    quick=dict(loop="fresh", dim=10, chains=128, kind="curve", x="memory", panel=None,
                               sweeps=(("fig33", {"memory": [1, 2, 3, 5, 8, 10]},
                                        {"n_real": 100, "n_syn": 1000, "lam": 1.0}),)),
                    smoke=dict(loop="fresh", dim=4, chains=32, kind="curve", x="memory", panel=None,
                               sweeps=(("fig33", {"memory": [1, 3]}, {"n_real": 8, "n_syn": 32, "lam": 1.0}),)))
    if fig == "fig34":
        # WD vs total n: real fraction p at λ = 1 (left); λ at p = 0.5 (right).
        def two(n_total, chains, dim, lams, ps):
            return dict(loop="fresh", dim=dim, chains=chains, kind="curve", x="n_total", panel=None,
                        sweeps=(("fig34_p", {"real_fraction": ps, "n_total": n_total}, {"lam": 1.0}),
                                ("fig34_lam", {"lam": lams, "n_total": n_total}, {"real_fraction": 0.5})))
        return _cfg(fig, preset,
                    paper=two([100, 300, 1000, 3000, 10000, 30000, 100000], 256, 100, [1.0, 0.99, 0.95, 0.9],
                              [1.0, 0.75, 0.5, 0.25]),
                    quick=two([20, 60, 200, 600, 2000, 6000], 128, 10, [1.0, 0.99, 0.95, 0.9],
                              [1.0, 0.75, 0.5, 0.25]),
                    smoke=two([20, 200], 32, 4, [1.0, 0.9], [1.0, 0.5]))
    if fig == "fig30":
        # Synthetic augmentation: n_e/n_r over (n_r, n_s), panels by λ.
        return _cfg(fig, preset,
                    paper=dict(loop="synthetic-augmentation", dim=100, chains=256, kind="heatmap",
                               sweeps=(("fig30", {"lam": [1.0, 0.8], "n_real": [20, 50, 100, 300, 1000, 3000],
                                                  "n_syn": [10, 30, 100, 300, 1000, 3000, 10000]}, {}),)),
                    quick=dict(loop="synthetic-augmentation", dim=10, chains=64, kind="heatmap",
                               sweeps=(("fig30", {"lam": [1.0, 0.8], "n_real": [3, 5, 10, 40, 160],
                                                  "n_syn": [2, 10, 50, 250]}, {}),)),
                    smoke=dict(loop="synthetic-augmentation", dim=4, chains=32, kind="heatmap",
                               sweeps=(("fig30", {"lam": [1.0], "n_real": [3, 16], "n_syn": [4, 32]}, {}),)))
    if fig == "fig31":
        # Synthetic augmentation: n_e/n_r over (n_s, λ), panels by n_r.
        lam = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
        return _cfg(fig, preset,
                    paper=dict(loop="synthetic-augmentation", dim=100, chains=256, kind="heatmap", x="n_syn",
                               y="lam", panel="n_real",
                               sweeps=(("fig31", {"n_real": [50, 1000], "lam": lam,
                                                  "n_syn": [10, 100, 1000, 10000]}, {}),)),
                    quick=dict(loop="synthetic-augmentation", dim=10, chains=64, kind="heatmap", x="n_syn",
                               y="lam", panel="n_real",
                               sweeps=(("fig31", {"n_real": [5, 100], "lam": lam, "n_syn": [2, 10, 50, 250]}, {}),)),
                    smoke=dict(loop="synthetic-augmentation", dim=4, chains=32, kind="heatmap", x="n_syn",
                               y="lam", panel="n_real",
                               sweeps=(("fig31", {"n_real": [3], "lam": [1.0, 0.6], "n_syn": [4, 32]}, {}),)))
    if fig == "gmm-phase":
        # The GMM's Fig. 10: n_e/n_r over (n_r, n_s) at λ = 1 and 0.8 (module docstring for the grids).
        gmm = dict(loop="fresh", dim=2, kind="heatmap", model="gmm")
        return _cfg(fig, preset,
                    paper=dict(**gmm, chains=1000, table_n_max=10**5,
                               sweeps=(("gmm_phase", {"lam": [1.0, 0.8], "n_real": [50, 100, 300, 1000, 3000],
                                                      "n_syn": [25, 100, 300, 1000, 3000, 10000]}, {}),)),
                    quick=dict(**gmm, chains=128, table_n_max=4096, model_options=(("n_eval", 32),),
                               sweeps=(("gmm_phase", {"lam": [1.0, 0.5], "n_real": [50, 200],
                                                      "n_syn": [25, 100]}, {}),)),
                    smoke=dict(**gmm, chains=8, table_n_max=256, model_options=(("n_eval", 32),),
                               sweeps=(("gmm_phase", {"lam": [1.0, 0.8], "n_real": [30, 60],
                                                      "n_syn": [10, 30]}, {}),)))
    raise KeyError(fig)


# ----------------------------------------------------------------------------- running


def _run_trajectory(cfg: PhaseConfig, out: str, seed: int, progress: bool) -> None:
    """Mean W2 (and its se over chains) per generation for every (λ, n_ini) cell."""
    (name, grid, fixed), = cfg.sweeps
    store = CellStore(os.path.join(out, f"{name}.zarr"), grid,
                      {"wd": (("generation",), (cfg.generations,), np.float64, np.nan),
                       "wd_se": (("generation",), (cfg.generations,), np.float64, np.nan)},
                      {"cfg": dataclasses.asdict(cfg), "seed": seed}, fixed)
    combos = store.cells()
    keys = list(grid)
    cells = {idx: cell_params({**fixed, **{k: grid[k][i] for k, i in zip(keys, idx)}}) for idx in combos}
    done = store.done()
    # One compiled call per factorisation: each cell's route depends on its own sizes only. The batch
    # always has the shape of the whole group -- a resumed run pads the cells still to do with copies
    # of the last one -- so a cell's numbers never depend on which cells were already stored.
    by_factor: dict[str, list] = {}
    for idx in combos:
        by_factor.setdefault(cell_factor(cfg.loop, cfg.dim, cells[idx]), []).append(idx)
    for factor, group in by_factor.items():
        todo = [idx for idx in group if not done[idx]]
        if not todo:
            continue
        spec = LoopSpec(kind=cfg.loop, model=GaussianSpec(dim=cfg.dim, factor=factor))
        log.info("%s: %d cells x %d chains x %d generations (%s)", name, len(todo), cfg.chains, cfg.generations,
                 factor)
        padded = todo + [todo[-1]] * (len(group) - len(todo))
        params = stack_params([LoopParams.create(**cells[idx]) for idx in padded])
        w2 = np.asarray(run_cells_jit(jax.random.key(seed), jnp.arange(cfg.chains, dtype=jnp.uint32), params, spec,
                                      cfg.generations).w2, np.float64)
        for c, idx in enumerate(todo):
            store.write(idx, {"wd": w2[c].mean(0), "wd_se": w2[c].std(0, ddof=1) / np.sqrt(cfg.chains)})
    store.export(os.path.join(out, f"{name}.nc"))


THRESHOLD_POINTS = 6  # n_s per stage of the root finding (coarse bracket, then refinement)


def _run_threshold(cfg: PhaseConfig, out: str, seed: int, progress: bool) -> None:
    """n_s*(n_r, λ) for every λ < 1 panel and n_r of the heatmap (root finding, CRN)."""
    (name, grid, _), = cfg.sweeps
    lams = [lam for lam in grid["lam"] if lam < 1.0]  # at λ = 1 every n_s is admissible: no boundary
    names = ("n_syn_star", "n_syn_star_lo", "n_syn_star_hi")
    values = np.full((len(names), len(lams), len(grid["n_real"])), np.nan)
    with progress_bar(total=values[0].size, desc=f"{name}: n_s* root finding", enabled=progress,
                      unit="root") as bar:
        for i, lam in enumerate(lams):
            for j, n_real in enumerate(grid["n_real"]):
                r = admissibility_threshold(loop=cfg.loop, dim=cfg.dim, n_real=n_real, lam=lam, chains=cfg.chains,
                                            seed=seed, points=THRESHOLD_POINTS, ratio_max=cfg.threshold_ratio_max)
                values[:, i, j] = [np.nan if r[k] is None else r[k] for k in names]
                bar.update(1)
    ds = xr.Dataset({k: (("lam", "n_real"), v) for k, v in zip(names, values)},
                    coords={"lam": np.asarray(lams, np.float64), "n_real": np.asarray(grid["n_real"])},
                    attrs=provenance({"cfg": dataclasses.asdict(cfg), "seed": seed, "points": 6,
                                      "ratio_max": cfg.threshold_ratio_max}))
    ds.attrs["comment"] = ("n_syn_star is NaN where n_e/n_r >= 1 over the whole searched range "
                           "(up to threshold_ratio_max * n_r); n_syn_star_lo is then that range's end, a lower bound")
    path = os.path.join(out, f"{name}_threshold.nc")
    with atomic_path(path, suffix=".nc") as tmp:
        describe(ds).to_netcdf(tmp)


def run(cfg: PhaseConfig, out: str, *, seed: int = 0, progress: bool = True) -> None:
    if cfg.kind == "trajectory":
        return _run_trajectory(cfg, out, seed, progress)
    for name, grid, fixed in cfg.sweeps:
        run_effective_sweep(out, name, loop=cfg.loop, grid=grid, fixed=fixed, chains=cfg.chains,
                            seed=seed, progress=progress, model=cfg.choice(), table_n_max=cfg.table_n_max)
    if cfg.threshold:
        _run_threshold(cfg, out, seed, progress)


def _threshold_work(cfg: PhaseConfig) -> tuple[int, float, int]:
    """Roots, chain-generations and compilations of :func:`_run_threshold`: both stages run at the
    coarse grid's horizon; the refinement's batch depends on where the bracket falls, so every root
    compiles twice (the coarse stage, the refinement)."""
    (_, grid, _), = cfg.sweeps
    roots = sum(lam < 1.0 for lam in grid["lam"]) * len(grid["n_real"])
    work = 0.0
    for n_real in grid["n_real"]:
        n_syn = threshold_grid(n_real, cfg.threshold_ratio_max, THRESHOLD_POINTS)
        T = max(horizon(burn_in(n_real, int(s))) for s in n_syn)
        work += (len(n_syn) + THRESHOLD_POINTS) * cfg.chains * T
    return roots, work * roots / max(len(grid["n_real"]), 1), 2 * roots


def _calibration(cfg: PhaseConfig, cell: dict, slots: int) -> Calibration:
    """A short timed run of the function the figure compiles (16 cells x up to 16 chains x 2 generations)."""
    batch, generations = 16, 2
    choice = cfg.choice()
    spec = LoopSpec(kind=cfg.loop, memory=slots, model=choice.group_spec(choice.group_key(cfg.loop, cell)))
    params = stack_params([LoopParams.create(**cell)] * batch)
    ids, _ = padded_chain_ids(0, min(cfg.chains, 16))
    if cfg.kind == "trajectory":
        def run():
            return run_cells_jit(jax.random.key(0), ids, params, spec, generations)
    else:
        burn = jnp.ones(batch, jnp.int32)

        def run():
            return steady_state_jit(jax.random.key(0), ids, params, burn, spec, generations)
    return calibrate(run, batch * len(ids) * generations)


def dry_run(cfg: PhaseConfig) -> str:
    """Shapes, horizons, work, a memory estimate and the wall time estimated on this machine from a short
    calibration run of the compiled function (:mod:`madjax.walltime`) -- no sweep."""
    parts, work, compilations = [], 0.0, 0
    if cfg.model != "gaussian":
        n_min, n_max, table_chains, table_points = cfg.choice().table
        parts.append(f"E-dist table of the {cfg.model} model: {table_points} sizes from {n_min} to "
                     f"{cfg.table_n_max or n_max} x {table_chains} chains (cached once built)")
    for name, grid, fixed in cfg.sweeps:
        keys = list(grid)
        cells = [cell_params({**fixed, **dict(zip(keys, c))}) for c in itertools.product(*grid.values())]
        if cfg.kind == "trajectory":
            T = cfg.generations
        else:
            levels = [horizon_level(burn_in(c["n_real"], c["n_syn"], c["memory"])) for c in cells]
        slots = max(c["memory"] for c in cells)
        batch = 16
        choice = cfg.choice()
        rows = max(max(c.get("n_ini", 0), c["n_real"], c["n_syn"]) for c in cells)
        mem = batch * cfg.chains * choice.cost(slots, rows)[0]
        if cfg.kind == "trajectory":
            levels = [T] * len(cells)
        sweep_work = cfg.chains * sum(levels)
        work += sweep_work
        compilations += len({(level, choice.group_key(cfg.loop, c)) for level, c in zip(levels, cells)})
        parts.append(f"{name}: {len(cells)} cells x {cfg.chains} chains of the {cfg.model} model, T from "
                     f"{min(levels)} to {max(levels)} generations ({len(set(levels))} compiled horizons), "
                     f"d={cfg.dim}, {sweep_work:.3g} "
                     f"chain-generations, ~{mem / 2**30:.2f} GiB per batch")
    if cfg.threshold:
        roots, root_work, root_compilations = _threshold_work(cfg)
        work += root_work
        compilations += root_compilations
        parts.append(f"n_s* root finding: {roots} roots, ~{root_work:.3g} chain-generations")
    return "; ".join(parts) + "; compiled OK; " + estimate(work, compilations, _calibration(cfg, cells[0], slots))


# ----------------------------------------------------------------------------- plotting

# Figure id -> (headline, the paper's setting the preset stands in for).
_TEXT = {
    "fig9": (r"Fresh data loop: the initial model is forgotten -- WD of generation $t$ for several $n_{\mathrm{ini}}$",
             r"Fig. 9 (Gaussian, d = 100, $n_r$ = 100, $n_s$ = 900)"),
    "fig10": (r"Fresh data loop: synthetic data helps where $n_e/n_r \geq 1$ (green), over $n_r$ and $n_s$, "
              r"one panel per $\lambda$", "Fig. 10 (Gaussian, d = 100)"),
    "fig30": (r"Synthetic augmentation loop: $n_e/n_r$ over $n_r$ and $n_s$, one panel per $\lambda$",
              "Fig. 30 (Gaussian, d = 100)"),
    "fig31": (r"Synthetic augmentation loop: $n_e/n_r$ over $n_s$ and $\lambda$, one panel per $n_r$",
              "Fig. 31 (Gaussian, d = 100)"),
    "fig32": (r"Fresh data loop: sampling bias (smaller $\lambda$) shrinks the admissible $n_s$, one panel per $n_r$",
              "Fig. 32 (Gaussian, d = 100)"),
    "fig33": (r"Fresh data loop: sampling from the last $K$ models raises $n_e/n_r$",
              r"Fig. 33 (Gaussian, d = 100, $n_r = 10^3$, $n_s = 10^4$, $\lambda$ = 1)"),
    "fig34": (r"Fresh data loop: WD vs total data $n = n_r + n_s$, for real fraction $p$ and sampling bias $\lambda$",
              "Fig. 34 (Gaussian, d = 100)"),
    "gmm-phase": (r"GMM fresh data loop: $n_e/n_r$ over $n_r$ and $n_s$ (WD: mixture $W_2$), one panel per $\lambda$",
                  "Fig. 10 for the 25-mode GMM (2-D grid; not in the paper)"),
}
# Dimensions drawn on log axes (sample sizes); the others (λ, p, K) are linear.
_LOG_DIMS = frozenset({"n_real", "n_syn", "n_ini", "n_total"})
_MARKS = ("cells: $n_e/n_r$ and its standard error; ≥ / ≤: a bound ($n_e$ outside the tabulated E-dist range); "
          "hatched: steady state not reached")


def _outline():
    """Path effect of the lines drawn over cells: black with a white outline shows on every colour."""
    import matplotlib.patheffects as pe

    return [pe.withStroke(linewidth=3.2, foreground="white")]


def _load(path: str, what: str, variables: tuple[str, ...]) -> xr.Dataset:
    """A saved NetCDF file of this madjax's schema holding ``variables``; one line naming ``--from`` and the
    file when it is missing, damaged or incomplete."""
    if not os.path.exists(path):
        raise ParameterError("from", f"no {what} data under {os.path.dirname(path) or '.'!r} "
                                     f"({os.path.basename(path)} is missing)")
    return open_checked(path, "from", variables)


def _fixed(ds: xr.Dataset) -> str:
    """The fixed parameters of a sweep (its scalar coordinates), in the paper's symbols."""
    return ", ".join(setting(k, ds[k].item()) for k in ds.coords if ds[k].ndim == 0)


def _edges(values, log: bool) -> np.ndarray:
    """Cell edges of sorted centres: midpoints (geometric on log axes), outer cells as wide as their neighbours."""
    v = np.asarray(values, np.float64)
    v = np.log(v) if log else v
    if v.size == 1:
        half = np.log(2.0) / 2 if log else max(0.05 * abs(v[0]), 0.05)
        e = np.array([v[0] - half, v[0] + half])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
    return np.exp(e) if log else e


def _zero_contour(ax, xs, ys, z, x_log: bool, y_log: bool) -> bool:
    """The n_e = n_r line, interpolated between cell centres in the axes' own (log or linear) coordinates."""
    import contourpy

    if min(z.shape) < 2 or not (np.nanmin(z) < 0 < np.nanmax(z)):
        return False
    fx = np.log if x_log else np.asarray
    fy = np.log if y_log else np.asarray
    lines = contourpy.contour_generator(x=fx(xs.astype(float)), y=fy(ys.astype(float)), z=np.ma.masked_invalid(z)
                                        ).lines(0.0)
    for seg in lines:
        px = np.exp(seg[:, 0]) if x_log else seg[:, 0]
        py = np.exp(seg[:, 1]) if y_log else seg[:, 1]
        ax.plot(px, py, color="k", lw=1.6, path_effects=_outline(), zorder=4)
    return bool(lines)


def _cell_marks(ax, sub: xr.Dataset, x: str, y: str, z: np.ndarray, x_log: bool, y_log: bool) -> None:
    """Value (in n_e/n_r, the colour bar's labels), ±se, bound signs and hatching on every cell."""
    from matplotlib.patches import Rectangle

    xs, ys = sub[x].values, sub[y].values
    xe, ye = _edges(xs, x_log), _edges(ys, y_log)
    ratio = sub.n_e_ratio.values
    se = sub.n_e_ratio_se.values if "n_e_ratio_se" in sub else np.full_like(ratio, np.nan)
    bound = sub.n_e_bound.values if "n_e_bound" in sub else np.zeros(ratio.shape, np.int8)
    converged = sub.converged.values if "converged" in sub else np.ones(ratio.shape, np.int8)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            if not np.isfinite(ratio[i, j]):
                continue
            color = "white" if abs(z[i, j]) > 2.6 else "black"
            sign = {1: "≥", 2: "≤"}.get(int(bound[i, j]), "")
            value = f"{ratio[i, j]:.2f}" if ratio[i, j] < 1 else f"{ratio[i, j]:#.3g}"
            ax.text(xv, yv, f"{sign}{value}", ha="center", va="bottom", fontsize=7, color=color)
            if np.isfinite(se[i, j]):
                ax.text(xv, yv, f"±{se[i, j]:.1g}", ha="center", va="top", fontsize=5.5, color=color)
            if converged[i, j] == 0:
                ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                                       hatch="///", edgecolor="0.15", lw=0, zorder=3))


def _threshold(ax, thr: xr.Dataset) -> list:
    """n_s*(n_r) at one λ (x = n_s, y = n_r): the root and its stored interval as a band; legend handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n_r = thr.n_real.values.astype(float)
    star, lo, hi = thr.n_syn_star.values, thr.n_syn_star_lo.values, thr.n_syn_star_hi.values
    handles = []
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(star)
    if ok.any():
        ax.fill_betweenx(n_r[ok], lo[ok], hi[ok], facecolor="white", alpha=0.45, edgecolor="k", lw=0.6, ls=":",
                         zorder=5)
        ax.plot(star[ok], n_r[ok], "--o", color="k", ms=3.5, lw=1.4, path_effects=_outline(), zorder=6)
        handles += [Line2D([], [], ls="--", marker="o", color="k", ms=3.5, path_effects=_outline(),
                           label=r"$n_s^*$ (root finding)"),
                    Patch(facecolor="white", alpha=0.6, edgecolor="k", ls=":", label=r"$n_s^*$ interval")]
    beyond = ~np.isfinite(star) & np.isfinite(lo)
    if beyond.any():  # at the searched range's end, or on the right edge when that lies beyond the axes
        from matplotlib.transforms import offset_copy

        # raised above the cell's centre, where its value and ±se are written
        above_text = offset_copy(ax.transData, fig=ax.figure, y=10, units="points")
        ax.plot(np.minimum(lo[beyond], ax.get_xlim()[1]), n_r[beyond], ">", color="k", ms=6, mec="white", zorder=6,
                clip_on=False, transform=above_text)
        handles.append(Line2D([], [], ls="", marker=">", color="k", mec="white",
                              label=r"$n_s^*$ beyond the searched range"))
    return handles


def phase_diagram(ds: xr.Dataset, *, x: str, y: str, panel: str | None, headline: str, caption_text: str,
                  threshold: xr.Dataset | None = None):
    """n_e/n_r over (x, y) on axes by value, one panel per ``panel`` value; returns the matplotlib figure.

    Colours: log2(n_e/n_r) on the fixed scale ±:data:`~madjax.figures.style.LOG2_RATIO_LIMIT`, the colour
    bar labelled in ratios. Panels by n_r are stacked with the largest n_r on top (n_r grows upwards, as on
    Figure 10's axis); panels by λ run from λ = 1 leftwards to the strongest bias.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D

    ds = ds.sortby([d for d in (x, y) if d in ds.dims])
    panels = list(ds[panel].values) if panel else [None]
    panels = sorted(panels, reverse=True) if panel else panels
    column = panel == "n_real"
    shape = (len(panels), 1) if column else (1, len(panels))
    fig, axes = plt.subplots(*shape, figsize=(5.2 * shape[1] + 1.2, 3.9 * shape[0]), squeeze=False,
                             constrained_layout=True)
    limit = LOG2_RATIO_LIMIT
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    x_log, y_log = x in _LOG_DIMS, y in _LOG_DIMS
    handles = {}
    for ax, pv in zip(axes.ravel(), panels):
        sub = (ds.sel({panel: pv}) if panel else ds).transpose(y, x)
        z = np.log2(sub.n_e_ratio.values)
        xe, ye = _edges(sub[x].values, x_log), _edges(sub[y].values, y_log)
        im = ax.pcolormesh(xe, ye, z, cmap="RdYlGn", norm=norm, shading="flat")
        ax.set_xscale("log" if x_log else "linear")
        ax.set_yscale("log" if y_log else "linear")
        ax.set(xlim=(xe[0], xe[-1]), ylim=(ye[0], ye[-1]))
        _cell_marks(ax, sub, x, y, z, x_log, y_log)
        if _zero_contour(ax, sub[x].values, sub[y].values, z, x_log, y_log):
            handles["contour"] = Line2D([], [], color="k", lw=1.6, path_effects=_outline(),
                                        label=r"$n_e = n_r$ (between cell centres)")
        if threshold is not None and pv is not None and panel == "lam" and pv in threshold.lam.values:
            for h in _threshold(ax, threshold.sel(lam=pv)):
                handles[h.get_label()] = h
        ax.set_xticks(sub[x].values, [f"{v:g}" for v in sub[x].values], rotation=45 if sub.sizes[x] > 6 else 0)
        ax.set_yticks(sub[y].values, [f"{v:g}" for v in sub[y].values])
        ax.minorticks_off()
        ax.set_xlabel(symbol(x))
        ax.set_ylabel(symbol(y))
        if pv is not None:
            ax.set_title(setting(panel, pv))
    ticks = np.arange(-limit, limit + 1, 2)
    bar = fig.colorbar(im, ax=axes.ravel().tolist(), extend="both", ticks=ticks)
    bar.ax.set_yticklabels([f"{2.0 ** t:g}" if t >= 0 else f"1/{2.0 ** -t:g}" for t in ticks])
    bar.set_label(r"$n_e/n_r$ (log scale; green: $n_e \geq n_r$, admissible)")
    if handles:  # below the last panel: an axes legend, so the layout makes room for it
        axes.ravel()[-1].legend(handles=list(handles.values()), loc="upper right", bbox_to_anchor=(1.0, -0.2),
                                ncols=min(len(handles), 2), fontsize=8, frameon=False)
    finish(fig, headline, caption_text)
    return fig


def _heatmap(cfg: PhaseConfig, out: str) -> list:
    (name, _, _), = cfg.sweeps
    panel = (cfg.panel,) if cfg.panel else ()
    ds = _load(os.path.join(out, f"{name}.nc"), cfg.fig, ("n_e_ratio", "n_e_ratio_se", cfg.x, cfg.y, *panel))
    thr = (_load(os.path.join(out, f"{name}_threshold.nc"), cfg.fig, ("n_syn_star", "n_syn_star_lo", "n_syn_star_hi"))
           if cfg.threshold else None)
    headline, paper = _TEXT[cfg.fig]
    notes = [_MARKS]
    if thr is not None:
        notes.append(r"$n_s^*$ interval: the $n_s$ where $n_e/n_r = 1$ lies within 1.96 standard errors")
    fig = phase_diagram(ds, x=cfg.x, y=cfg.y, panel=cfg.panel, headline=headline, threshold=thr,
                        caption_text=caption(cfg.preset, dim=cfg.dim, chains=cfg.chains, paper=paper, notes=notes))
    return save(fig, out, cfg.fig)


def _log_ticks(ax, axis: str) -> None:
    """Log axis labelled at 1, 2, 5 × 10^k only (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def line_plot(ax, ds: xr.Dataset, x: str, chains: int, label: str | None = None) -> None:
    """n_e/n_r ± 2 se against one swept parameter, with the n_e = n_r line."""
    ax.errorbar(ds[x].values, ds.n_e_ratio.values, yerr=2 * ds.n_e_ratio_se.values, marker="o", capsize=3,
                label=label or f"$n_e/n_r$, {band_label(chains, 'error bars')}")
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--", label="$n_e = n_r$")
    if x in _LOG_DIMS:
        ax.set_xscale("log")
        _log_ticks(ax, "x")
    ax.set_xlabel(symbol(x))
    ax.set_ylabel("$n_e/n_r$")
    ax.legend(fontsize=8)


def _curves(cfg: PhaseConfig, out: str) -> list:
    import matplotlib.pyplot as plt

    headline, paper = _TEXT[cfg.fig]
    fig, axes = plt.subplots(1, len(cfg.sweeps), figsize=(5.2 * len(cfg.sweeps), 3.9), squeeze=False,
                             constrained_layout=True)
    fixed = []
    for ax, (name, grid, _) in zip(axes[0], cfg.sweeps):
        ds = _load(os.path.join(out, f"{name}.nc"), cfg.fig, ("n_e_ratio", "n_e_ratio_se", "wd", "wd_se", *grid))
        fixed.append(_fixed(ds))
        if cfg.fig == "fig33":
            line_plot(ax, ds, cfg.x, cfg.chains)
            ax.xaxis.get_major_locator().set_params(integer=True)
            continue
        other = [d for d in grid if d != cfg.x][0]
        for v in sorted(ds[other].values, reverse=True):
            s = ds.sel({other: v})
            ax.errorbar(s[cfg.x], s.wd, yerr=2 * s.wd_se, marker="o", ms=3, capsize=2, label=setting(other, v))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax, "x")
        _log_ticks(ax, "y")
        ax.set_xlabel("total data per generation $n = n_r + n_s$")
        ax.set_ylabel(r"WD (steady state)")
        ax.set_title(f"{symbol(other)} varies, {fixed[-1]}")
        ax.legend(fontsize=8, title=band_label(cfg.chains, "error bars"), title_fontsize=7)
    if cfg.fig == "fig33":
        headline = f"{headline} ({fixed[0]})"
    finish(fig, headline, caption(cfg.preset, dim=cfg.dim, chains=cfg.chains, paper=paper))
    return save(fig, out, cfg.fig)


def _trajectory(cfg: PhaseConfig, out: str) -> list:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    (name, _, _), = cfg.sweeps
    ds = _load(os.path.join(out, f"{name}.nc"), cfg.fig, ("wd", "wd_se", "lam", "n_ini", "generation"))
    lams = sorted(ds.lam.values, reverse=True)
    fig, axes = plt.subplots(1, len(lams), figsize=(5.2 * len(lams), 3.9), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, lam in zip(axes[0], lams):
        for n_ini in ds.n_ini.values:
            s = ds.sel(lam=lam, n_ini=n_ini)
            line, = ax.plot(s.generation, s.wd, label=setting("n_ini", n_ini))
            ax.fill_between(s.generation, s.wd - 2 * s.wd_se, s.wd + 2 * s.wd_se, alpha=0.3,
                            color=line.get_color(), lw=0)
        ax.set_yscale("log")
        _log_ticks(ax, "y")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("generation $t$")
        ax.set_title(setting("lam", lam))
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + [Patch(color="0.6", alpha=0.5, label=band_label(cfg.chains))], fontsize=8)
    axes[0][0].set_ylabel(r"WD$(\mathcal{G}^t, P_r)$")
    headline, paper = _TEXT[cfg.fig]
    finish(fig, f"{headline} ({_fixed(ds)})", caption(cfg.preset, dim=cfg.dim, chains=cfg.chains, paper=paper,
                                                      per="curve"))
    return save(fig, out, cfg.fig)


def plot_sweep(path: str) -> list:
    """Draw a user's sweep (``madjax sweep``) from its NetCDF file: the figure follows the swept dims.

    Two or three swept dims: a phase diagram (the third gives the panels); one: a line plot of n_e/n_r.
    Writes ``<name>.png`` / ``.pdf`` beside the file.
    """
    import matplotlib.pyplot as plt

    ds = open_checked(path)
    if "n_e_ratio" not in ds:
        raise ParameterError("from", f"{path} holds no n_e_ratio (not a sweep written by madjax sweep)")
    config = json.loads(ds.attrs.get("config", "{}"))
    dims = list(ds.n_e_ratio.dims)
    loop = config.get("loop", "?")
    name = os.path.splitext(os.path.basename(path))[0]
    setting_text = f"{loop} loop" + (f", {_fixed(ds)}" if _fixed(ds) else "")
    text = caption(None, dim=config.get("dim"), chains=config.get("chains"), paper=setting_text,
                   notes=[_MARKS] if len(dims) > 1 else [])
    loop = loop.capitalize()
    if len(dims) == 1:
        fig, ax = plt.subplots(figsize=(5.2, 3.9), constrained_layout=True)
        line_plot(ax, ds, dims[0], config.get("chains", 0))
        finish(fig, f"{loop} loop: $n_e/n_r$ vs {symbol(dims[0])}", text)
    elif len(dims) in (2, 3):
        x = "n_syn" if "n_syn" in dims else dims[-1]
        rest = [d for d in dims if d != x]
        y = "n_real" if "n_real" in rest and len(rest) == 2 else rest[-1]
        panel = next((d for d in rest if d != y), None)
        fig = phase_diagram(ds, x=x, y=y, panel=panel, caption_text=text,
                            headline=f"{loop} loop: $n_e/n_r$ over {symbol(x)} and {symbol(y)}"
                                     + (f", one panel per {symbol(panel)}" if panel else ""))
    else:
        raise ParameterError("from", f"{path} sweeps {len(dims)} parameters ({', '.join(dims)}); "
                                     "plot draws one to three")
    return save(fig, os.path.dirname(path) or ".", name)


def plot_sweeps(source: str) -> list:
    """``madjax plot --from DIR`` (no figure id): every sweep ``DIR/*.nc`` (or the one file ``source``)."""
    import glob

    if os.path.isfile(source):
        paths = [source]
    else:
        paths = [p for p in sorted(glob.glob(os.path.join(source, "*.nc"))) if not p.endswith("_threshold.nc")]
    paths = [p for p in paths if "n_e_ratio" in open_checked(p, "from").variables]
    if not paths:
        raise ParameterError("from", f"no sweep data (*.nc with n_e_ratio) under {source!r}")
    return [out for p in paths for out in plot_sweep(p)]


_CONFIG_FILE = "{fig}_config.json"


def _figure(fig_id: str) -> Figure:
    def run_fig(cfg, out, *, seed=0, progress=True):
        run(cfg, out, seed=seed, progress=progress)
        write_json(os.path.join(out, _CONFIG_FILE.format(fig=fig_id)),
                   {"schema_version": SCHEMA_VERSION, "preset_config": dataclasses.asdict(cfg)}, default=str)

    def plot(out):
        path = os.path.join(out, _CONFIG_FILE.format(fig=fig_id))
        if not os.path.exists(path):
            raise ParameterError("from", f"no {fig_id} data under {out!r} "
                                         f"(run `madjax reproduce {fig_id} --out {out}` first)")
        saved = read_json(path, "from")
        check_schema(path, saved, "from")
        try:
            raw = dict(saved["preset_config"])
            raw["sweeps"] = tuple(tuple(s) for s in raw["sweeps"])
            raw["model_options"] = tuple(tuple(o) for o in raw.get("model_options", ()))
            cfg = PhaseConfig(**raw)
        except (KeyError, TypeError, ValueError) as err:
            raise ParameterError("from", f"{path}: not a {fig_id} configuration "
                                         f"({type(err).__name__}: {err})") from None
        return {"heatmap": _heatmap, "curve": _curves, "trajectory": _trajectory}[cfg.kind](cfg, out)

    return Figure(fig_id, lambda preset: get_config(fig_id, preset), run_fig, dry_run, plot)


FIGURES = {f: _figure(f) for f in ("fig9", "fig10", "fig30", "fig31", "fig32", "fig33", "fig34", "gmm-phase")}
