"""Gaussian phase diagrams and trajectories: Figures 9, 10, 30, 31, 32, 33, 34.

Grids (the paper's text does not list them; chosen to cover the regimes it
describes -- n_r from below d to far above it, n_s/n_r from about 0.1 to
≥ 100, λ from 1 down to 0.5, K up to 10):

* ``paper``: d = 100, n_r ∈ {10 … 10⁴}, n_s ∈ {10 … 10⁵}, λ ∈ {1, 0.9, 0.7, 0.5},
  256 chains. GPU-scale; checked here with ``--dry-run``.
* ``quick``: d = 10 with n_r and n_s scaled with d (n_r from 0.5 d to 32 d),
  n_s/n_r up to ~64, 64–128 chains: a 2-core CPU in minutes.
* ``smoke``: d = 4, 2×2 grids, 32 chains: seconds; what tests and notebooks run.
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

from madjax.effective import (
    admissibility_threshold,
    burn_in,
    cell_factor,
    horizon_level,
)
from madjax.figures import Figure
from madjax.loops import LoopParams, LoopSpec, run_cells_jit, stack_params
from madjax.sweeps import CellStore, cell_params, run_effective_sweep, validate_grid
from madjax.validation import check_choice


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One figure's sweeps. ``sweeps``: name -> (grid, fixed); ``plot``: layout."""

    fig: str
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

    def __post_init__(self):
        for _, grid, fixed in self.sweeps:
            if self.kind != "trajectory":
                validate_grid(grid, fixed)


def _cfg(fig, preset, **per_preset):
    check_choice("preset", preset, ("smoke", "quick", "paper"))
    return PhaseConfig(fig=fig, **per_preset[preset])


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
                               threshold_ratio_max=64.0, sweeps=(("fig10", {"lam": [1.0, 0.8], "n_real": [5, 20, 80, 320],
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
    raise KeyError(fig)


# ----------------------------------------------------------------------------- running


def _run_trajectory(cfg: PhaseConfig, out: str, seed: int, progress: bool) -> None:
    """Mean W2 (and its se over chains) per generation for every (λ, n_ini) cell."""
    (name, grid, fixed), = cfg.sweeps
    store = CellStore(os.path.join(out, f"{name}.zarr"), grid,
                      {"wd": (("generation",), (cfg.generations,), np.float64, np.nan),
                       "wd_se": (("generation",), (cfg.generations,), np.float64, np.nan)},
                      {"sweep": json.dumps({"cfg": dataclasses.asdict(cfg), "seed": seed}, sort_keys=True, default=str)})
    combos = store.cells()
    keys = list(grid)
    cells = {idx: cell_params({**fixed, **{k: grid[k][i] for k, i in zip(keys, idx)}}) for idx in combos}
    done = store.done()
    # One compiled call per factorisation: each cell's route depends on its own sizes only.
    by_factor: dict[str, list] = {}
    for idx in combos:
        if not done[idx]:
            by_factor.setdefault(cell_factor(cfg.loop, cfg.dim, cells[idx]), []).append(idx)
    for factor, todo in by_factor.items():
        spec = LoopSpec(kind=cfg.loop, dim=cfg.dim, factor=factor)
        params = stack_params([LoopParams.create(**cells[idx]) for idx in todo])
        w2 = np.asarray(run_cells_jit(jax.random.key(seed), jnp.arange(cfg.chains, dtype=jnp.uint32), params, spec,
                                      cfg.generations).w2, np.float64)
        for c, idx in enumerate(todo):
            store.write(idx, {"wd": w2[c].mean(0), "wd_se": w2[c].std(0, ddof=1) / np.sqrt(cfg.chains)})
    store.export(os.path.join(out, f"{name}.nc"))


def _run_threshold(cfg: PhaseConfig, out: str, seed: int) -> None:
    """n_s*(n_r, λ) for every λ < 1 panel and n_r of the heatmap (root finding, CRN)."""
    (name, grid, _), = cfg.sweeps
    rows = []
    for lam in grid["lam"]:
        for n_real in grid["n_real"]:
            if lam == 1.0:
                continue
            r = admissibility_threshold(loop=cfg.loop, dim=cfg.dim, n_real=n_real, lam=lam, chains=cfg.chains,
                                        seed=seed, points=6, ratio_max=cfg.threshold_ratio_max)
            rows.append((lam, n_real, r["n_syn_star"] or np.nan, r["n_syn_star_lo"] or np.nan,
                         r["n_syn_star_hi"] or np.nan))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    ds = xr.Dataset({k: ("row", arr[:, i]) for i, k in enumerate(("lam", "n_real", "n_syn_star", "n_syn_star_lo",
                                                                    "n_syn_star_hi"))})
    ds.to_netcdf(os.path.join(out, f"{name}_threshold.nc"))


def run(cfg: PhaseConfig, out: str, *, seed: int = 0, progress: bool = True) -> None:
    if cfg.kind == "trajectory":
        return _run_trajectory(cfg, out, seed, progress)
    for name, grid, fixed in cfg.sweeps:
        run_effective_sweep(out, name, loop=cfg.loop, dim=cfg.dim, grid=grid, fixed=fixed, chains=cfg.chains,
                            seed=seed, progress=progress)
    if cfg.threshold:
        _run_threshold(cfg, out, seed)


def dry_run(cfg: PhaseConfig) -> str:
    """Shapes, horizon, a memory estimate and one compiled (tiny) step -- no sweep."""
    parts = []
    for name, grid, fixed in cfg.sweeps:
        keys = list(grid)
        cells = [cell_params({**fixed, **dict(zip(keys, c))}) for c in itertools.product(*grid.values())]
        if cfg.kind == "trajectory":
            T = cfg.generations
        else:
            levels = [horizon_level(burn_in(c["n_real"], c["n_syn"], c["memory"])) for c in cells]
        slots = max(c["memory"] for c in cells)
        batch = 16
        mem = batch * cfg.chains * (4 * slots + 8) * cfg.dim**2 * 4
        if cfg.kind == "trajectory":
            levels = [T] * len(cells)
        work = cfg.chains * sum(levels)
        parts.append(f"{name}: {len(cells)} cells x {cfg.chains} chains, T from {min(levels)} to {max(levels)} "
                     f"generations ({len(set(levels))} compiled horizons), d={cfg.dim}, {work:.3g} "
                     f"chain-generations, ~{mem / 2**30:.2f} GiB per batch")
        spec = LoopSpec(kind=cfg.loop, dim=cfg.dim, memory=slots)
        p = stack_params([LoopParams.create(**cells[0])])
        lowered = run_cells_jit.lower(jax.random.key(0), jnp.arange(2, dtype=jnp.uint32), p, spec, 2)
        lowered.compile()
    return "; ".join(parts) + "; one step compiled OK"


# ----------------------------------------------------------------------------- plotting


def _save(fig, out: str, name: str) -> list:
    paths = [os.path.join(out, f"{name}.{ext}") for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _heatmap(cfg: PhaseConfig, out: str) -> list:
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    (name, _, _), = cfg.sweeps
    ds = xr.open_dataset(os.path.join(out, f"{name}.nc"))
    panels = ds[cfg.panel].values if cfg.panel else [None]
    thr = None
    if cfg.threshold and os.path.exists(os.path.join(out, f"{name}_threshold.nc")):
        thr = xr.open_dataset(os.path.join(out, f"{name}_threshold.nc"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1, 3.8), squeeze=False,
                             constrained_layout=True)
    log_ratio = np.log2(ds.n_e_ratio)
    vmax = float(np.nanmax(np.abs(log_ratio))) or 1.0
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    for ax, pv in zip(axes[0], panels):
        sub = log_ratio.sel({cfg.panel: pv}) if cfg.panel else log_ratio
        sub = sub.transpose(cfg.y, cfg.x)
        xs, ys = ds[cfg.x].values, ds[cfg.y].values
        im = ax.pcolormesh(np.arange(len(xs) + 1) - 0.5, np.arange(len(ys) + 1) - 0.5, sub.values,
                           cmap="RdYlGn", norm=norm, shading="flat")
        if sub.shape[0] > 1 and sub.shape[1] > 1:
            ax.contour(np.arange(len(xs)), np.arange(len(ys)), sub.values, levels=[0.0], colors="k", linewidths=1.5)
        for i in range(len(ys)):
            for j in range(len(xs)):
                ax.text(j, i, f"{2 ** sub.values[i, j]:.2g}", ha="center", va="center", fontsize=7)
        if thr is not None and pv is not None:
            rows = thr.where(thr.lam == pv, drop=True)
            if rows.sizes.get("row", 0):
                fx = np.interp(np.log(rows.n_syn_star.values), np.log(xs.astype(float)), np.arange(len(xs)),
                               left=np.nan, right=np.nan)
                fy = np.interp(rows.n_real.values, ys, np.arange(len(ys)))
                ax.plot(fx, fy, "w--o", ms=3, lw=1.5, label="n_s* (root finding)")
                ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs], rotation=45)
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(cfg.x)
        ax.set_ylabel(cfg.y)
        if pv is not None:
            ax.set_title(f"{cfg.panel} = {pv:g}")
    fig.colorbar(im, ax=axes[0].tolist(), label="log2(n_e / n_r)  (green: admissible)")
    fig.suptitle(f"{cfg.fig}: {cfg.loop} loop, d = {cfg.dim}")
    return _save(fig, out, cfg.fig)


def _curves(cfg: PhaseConfig, out: str) -> list:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.sweeps), figsize=(5 * len(cfg.sweeps), 3.8), squeeze=False)
    for ax, (name, grid, _) in zip(axes[0], cfg.sweeps):
        ds = xr.open_dataset(os.path.join(out, f"{name}.nc"))
        if cfg.fig == "fig33":
            ax.errorbar(ds.memory, ds.n_e_ratio, yerr=2 * ds.n_e_ratio_se, marker="o", capsize=3)
            ax.set_xlabel("memory K")
            ax.set_ylabel("n_e / n_r")
            continue
        other = [d for d in grid if d != cfg.x][0]
        for v in ds[other].values:
            s = ds.sel({other: v})
            ax.errorbar(s[cfg.x], s.wd, yerr=2 * s.wd_se, marker="o", ms=3, capsize=2, label=f"{other} = {v:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("total n")
        ax.set_ylabel("WD")
        ax.legend(fontsize=8)
    fig.suptitle(f"{cfg.fig}: {cfg.loop} loop, d = {cfg.dim}")
    return _save(fig, out, cfg.fig)


def _trajectory(cfg: PhaseConfig, out: str) -> list:
    import matplotlib.pyplot as plt

    (name, grid, fixed), = cfg.sweeps
    ds = xr.open_dataset(os.path.join(out, f"{name}.nc"))
    fig, axes = plt.subplots(1, len(ds.lam), figsize=(5 * len(ds.lam), 3.8), squeeze=False, sharey=True)
    for ax, lam in zip(axes[0], ds.lam.values):
        for n_ini in ds.n_ini.values:
            s = ds.sel(lam=lam, n_ini=n_ini)
            ax.plot(s.generation, s.wd, label=f"n_ini = {n_ini}")
            ax.fill_between(s.generation, s.wd - 2 * s.wd_se, s.wd + 2 * s.wd_se, alpha=0.3)
        ax.set_yscale("log")
        ax.set_xlabel("generation t")
        ax.set_title(f"λ = {lam:g}, n_r = {fixed['n_real']}, n_s = {fixed['n_syn']}")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("WD(G^t, P_r)")
    fig.suptitle(f"{cfg.fig}: fresh loop, d = {cfg.dim}")
    return _save(fig, out, cfg.fig)


_CONFIG_FILE = "{fig}_config.json"


def _figure(fig_id: str) -> Figure:
    def run_fig(cfg, out, *, seed=0, progress=True):
        run(cfg, out, seed=seed, progress=progress)
        with open(os.path.join(out, _CONFIG_FILE.format(fig=fig_id)), "w") as fh:
            json.dump({"preset_config": dataclasses.asdict(cfg)}, fh, default=str)

    def plot(out):
        with open(os.path.join(out, _CONFIG_FILE.format(fig=fig_id))) as fh:
            raw = json.load(fh)["preset_config"]
        raw["sweeps"] = tuple(tuple(s) for s in raw["sweeps"])
        cfg = PhaseConfig(**raw)
        return {"heatmap": _heatmap, "curve": _curves, "trajectory": _trajectory}[cfg.kind](cfg, out)

    return Figure(fig_id, lambda preset: get_config(fig_id, preset), run_fig, dry_run, plot)


FIGURES = {f: _figure(f) for f in ("fig9", "fig10", "fig30", "fig31", "fig32", "fig33", "fig34")}
