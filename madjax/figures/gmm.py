"""Figures 11 and 12: a 25-mode GMM in the unbiased fully synthetic loop (paper App. C.1).

Fig. 11 shows the fitted mixture after 1, 200 and 2,000 generations (modes
are lost over time); Fig. 12 plots three diversity metrics -- total variance,
average modal variance and recall -- against t, to argue that recall tracks
the loss of modes best. Both figures come from one simulation
(``madjax.simulate(model="gmm", ...)``, the executor every jittable model
runs through), stored once and shared.

Sizes (the paper states neither the training-set size nor the number of
runs). Mode loss is driven by the random walk of the mixture weights, whose
per-generation variance is π(1 − π)/n, and the per-mode variance shrinks by a
factor ≈ 1 − 1/(n/25) per generation: both depend on t/n. We pick n so that,
like the paper's panels, few modes are lost by t = T/10 and most by t = T,
and scale n with T in the smaller presets so that the curves are the same
functions of t/T:

* ``paper`` -- n_ini = n_syn = 10⁴, T = 2,000, 16 chains, snapshots at
  t = 1, 200, 2,000 (GPU-scale; ``--dry-run`` here);
* ``quick`` -- n = 1,000, T = 200, 16 chains, snapshots at t = 1, 20, 200
  (a 2-core CPU in a few minutes);
* ``smoke`` -- n = 200, T = 10, 2 chains, n_eval = 200 (every code path).

λ = 1 throughout (the paper's loop is unbiased). Diagnostics use
``n_eval`` = 1,000 model samples per generation (recall against as many fresh
target samples, k = 5).

Data under ``DIR``: ``fig11_12/config.json``, one NetCDF per finished batch
of chains (``fig11_12/chains_<a>-<b>.nc``, so an interrupted run resumes), the
combined ``fig11_12.nc``, and ``fig11.png/.pdf``, ``fig12.png/.pdf`` drawn
from it only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import xarray as xr

from madjax._progress import log
from madjax.figures import PRESETS, Figure
from madjax.figures.style import caption, finish, save, setting
from madjax.io import READ_ERRORS, atomic_path, check_schema, open_checked, read_json, write_json
from madjax.validation import ParameterError, check_choice, check_int, check_lam, check_seed
from madjax.walltime import calibrate, estimate

NAME = "fig11_12"


@dataclasses.dataclass(frozen=True)
class GMMFigureConfig:
    """Configuration of Figures 11/12 (presets in the module docstring).

    Attributes:
      preset: the preset's name (recorded with the data).
      n: points per generation (n_ini = n_syn).
      generations: T.
      chains: independent chains (bands in Fig. 12).
      n_eval: evaluation / fresh-target sample size of the diagnostics.
      snapshots: generations drawn in Fig. 11.
      batch: chains per resumable batch (one NetCDF each).
      lam: sampling bias λ (1 in the paper).
    """

    preset: str
    n: int
    generations: int
    chains: int
    n_eval: int
    snapshots: tuple
    batch: int
    lam: float = 1.0

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        check_int("n", self.n, minimum=25)
        check_int("generations", self.generations, minimum=1)
        check_int("chains", self.chains, minimum=1)
        check_int("n_eval", self.n_eval, minimum=26)
        check_int("batch", self.batch, minimum=1)
        check_lam(self.lam)
        if not self.snapshots:
            raise ParameterError("snapshots", "must hold at least one generation")
        for t in self.snapshots:
            check_int("snapshots", t, minimum=1, maximum=self.generations)

    def record(self, seed: int) -> dict:
        return {"figure": NAME, "seed": seed, "loop": "fully-synthetic", **dataclasses.asdict(self),
                "snapshots": list(self.snapshots)}


def get_config(preset: str) -> GMMFigureConfig:
    """The ``paper`` configuration, or its ``quick`` / ``smoke`` overlay."""
    check_choice("preset", preset, PRESETS)
    if preset == "paper":
        return GMMFigureConfig(preset, n=10_000, generations=2000, chains=16, n_eval=1000,
                               snapshots=(1, 200, 2000), batch=16)
    if preset == "quick":
        return GMMFigureConfig(preset, n=1000, generations=200, chains=16, n_eval=1000,
                               snapshots=(1, 20, 200), batch=8)
    return GMMFigureConfig(preset, n=200, generations=10, chains=2, n_eval=200, snapshots=(1, 2, 10), batch=2)


def _dir(out_dir: str) -> str:
    return os.path.join(out_dir, NAME)


def _combined(out_dir: str) -> str:
    return os.path.join(out_dir, f"{NAME}.nc")


def _check_resumable(out_dir: str, record: dict) -> None:
    path = os.path.join(_dir(out_dir), "config.json")
    if os.path.exists(path):
        saved = read_json(path, "out")
        if saved != record:
            raise ParameterError("out", f"{_dir(out_dir)!r} holds a different {NAME} run "
                                        f"(preset {saved.get('preset')!r}, seed {saved.get('seed')}); "
                                        "use another output directory")


def _simulate(config: GMMFigureConfig, *, seed: int, chains: int, first_chain: int, progress: bool) -> xr.Dataset:
    """A batch of chains, with ``n_eval`` samples of each snapshot model (``snap_samples``, keyed by
    ``fold_in(fold_in(key(seed), chain), snapshot)`` so that a batch draws what one call would)."""
    import jax
    import jax.numpy as jnp

    from madjax import simulate
    from madjax.gmm import GMMParams, sample_gmm

    ds = simulate(model="gmm", loop="fully-synthetic", n_ini=config.n, n_syn=config.n, lam=config.lam,
                  generations=config.generations, chains=chains, seed=seed, n_eval=config.n_eval,
                  snapshots=config.snapshots, first_chain=first_chain, progress=progress)
    params = GMMParams(*(jnp.asarray(ds[f"snap_{f}"].values) for f in GMMParams._fields))
    keys = jax.vmap(lambda c: jax.vmap(lambda t: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), c), t))(
        jnp.asarray(config.snapshots)))(jnp.asarray(ds.chain.values, jnp.uint32))
    draw = jax.jit(jax.vmap(jax.vmap(lambda k, p: sample_gmm(k, p, config.n_eval, 1.0))))
    ds["snap_samples"] = (("chain", "snapshot", "point", "xy"), np.asarray(draw(keys, params)))
    return ds


def run(config: GMMFigureConfig, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
    """Run (or resume, or reuse) the simulation and write ``DIR/fig11_12.nc``."""
    seed = check_seed(seed)
    record = config.record(seed)
    _check_resumable(out_dir, record)
    combined = _combined(out_dir)
    attrs = _saved_attrs(combined)
    if attrs is not None:
        check_schema(combined, attrs)
        if json.loads(attrs.get("figure_config", "{}")) == record:
            return  # fig11 and fig12 share one run
    os.makedirs(_dir(out_dir), exist_ok=True)
    write_json(os.path.join(_dir(out_dir), "config.json"), record, indent=1)
    start_time = time.perf_counter()
    paths = []
    for first in range(0, config.chains, config.batch):
        count = min(config.batch, config.chains - first)
        path = os.path.join(_dir(out_dir), f"chains_{first:05d}-{first + count - 1:05d}.nc")
        paths.append(path)
        attrs = _saved_attrs(path)
        if attrs is not None:
            check_schema(path, attrs)
            continue
        if progress:
            print(f"{NAME}: chains {first}–{first + count - 1} of {config.chains}", flush=True)
        ds = _simulate(config, seed=seed, chains=count, first_chain=first, progress=progress)
        with atomic_path(path, suffix=".nc") as tmp:
            ds.to_netcdf(tmp)
    parts = [xr.load_dataset(p) for p in paths]
    ds = xr.concat(parts, dim="chain")
    ds.attrs = dict(parts[0].attrs)
    ds.attrs["figure_config"] = json.dumps(record)
    ds.attrs["wall_seconds_this_call"] = time.perf_counter() - start_time
    with atomic_path(combined, suffix=".nc") as tmp:
        ds.to_netcdf(tmp)


def _saved_attrs(path: str) -> dict | None:
    """The attributes of a saved NetCDF file, or None when there is none -- or it is damaged (then it is
    recomputed, with one warning line)."""
    if not os.path.exists(path):
        return None
    try:
        with xr.open_dataset(path) as ds:
            return dict(ds.attrs)
    except READ_ERRORS as err:
        log.warning("%s is damaged (%s); computing it again", path, " ".join(str(err).split())[:160])
        return None


def dry_run(config: GMMFigureConfig) -> str:
    """Validate, report shapes and a memory estimate, and compile and time one generation of a batch of
    chains: the wall time estimated on this machine (:mod:`madjax.walltime`)."""
    import jax
    import jax.numpy as jnp

    from madjax.gmm import GMMSpec
    from madjax.loops import LoopParams, LoopSpec, run_chains_jit

    model = GMMSpec(draw_rows=config.n, n_eval=config.n_eval)
    spec = LoopSpec(kind="fully-synthetic", model=model)
    params = LoopParams.create(n_ini=config.n, n_syn=config.n, lam=config.lam)
    ids = jnp.arange(config.batch, dtype=jnp.uint32)
    cal = calibrate(lambda: run_chains_jit(jax.random.key(0), ids, params, spec, 2), 2 * config.batch)
    k = model.n_components
    # per chain: data + EM's (K, n) work arrays (~10) + the ring buffer + the records (T x params + diagnostics)
    per_chain = (2 * config.n + 10 * k * config.n + 7 * k + config.generations * (7 * k + 8)) * 4
    tiles = 3 * (1 << 19) * 4
    memory_mb = (config.batch * per_chain + tiles) / 2**20
    return (f"fully synthetic, λ = {config.lam:g}, n = {config.n} per generation, T = {config.generations}, "
            f"{config.chains} chains in batches of {config.batch}, n_eval = {config.n_eval}, "
            f"snapshots {config.snapshots}; {config.chains * config.generations} chain-generations; "
            f"≈ {memory_mb:.0f} MiB per batch; one generation compiled and run; "
            f"{estimate(config.chains * config.generations, 2, cal)}")


# ----------------------------------------------------------------------------- plots


# What the plots read, with the dimensions they index by.
PLOTTED = {"snap_samples": ("chain", "snapshot", "point", "xy"),
           **{name: ("chain", "generation")
              for name in ("modes_covered", "total_variance", "modal_variance", "recall")}}


def _load(out_dir: str) -> xr.Dataset:
    path = _combined(out_dir)
    if not os.path.exists(path):
        raise ParameterError("from", f"no {NAME} data under {out_dir!r} (run `madjax reproduce fig11` first)")
    return open_checked(path, dims=PLOTTED)


def _caption(ds: xr.Dataset, what: str) -> str:
    config = json.loads(ds.attrs.get("figure_config", "{}"))
    return caption(config.get("preset"), dim=2, chains=ds.sizes["chain"], per=None,
                   paper=f"{what} (25-mode GMM, fully synthetic, λ = 1, 2,000 generations)",
                   notes=[f"{setting('n_ini', config.get('n', '?'))} = $n_s$ samples per generation, "
                          f"{setting('lam', config.get('lam', 1.0))}, T = {ds.sizes['generation']}"])


def plot_fig11(out_dir: str) -> list[str]:
    """Redraw ``DIR/fig11.png/.pdf``: samples of the fitted GMM of chain 0 at the snapshot generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from madjax.points import GRID

    ds = _load(out_dir)
    snaps = [int(t) for t in ds.snapshot.values]
    chain = ds.chain.values[0]
    fig, axes = plt.subplots(1, len(snaps), figsize=(3.2 * len(snaps), 3.4), squeeze=False, constrained_layout=True)
    grid = np.array([(a, b) for a in GRID for b in GRID])
    for ax, t in zip(axes[0], snaps):
        x = ds.snap_samples.sel(chain=chain, snapshot=t).values
        ax.scatter(grid[:, 0], grid[:, 1], s=14, marker="+", color="tab:red", linewidths=0.6, zorder=1)
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6, color="tab:blue", rasterized=True, zorder=2)
        covered = int(ds.modes_covered.sel(chain=chain, generation=t))
        ax.set_title(f"$t$ = {t}: {covered}/25 modes covered", fontsize=10)
        ax.set_xlim(-5.5, 5.5)
        ax.set_ylim(-5.5, 5.5)
        ax.set_aspect("equal")
        ax.set_xticks([-4, -2, 0, 2, 4])
        ax.set_yticks([-4, -2, 0, 2, 4])
    finish(fig, r"A GMM in the fully synthetic loop loses modes: samples of $\mathcal{G}^t$ "
                f"(+: the 25 true modes; chain {chain}, {x.shape[0]} points)", _caption(ds, "Fig. 11"), width=90)
    return save(fig, out_dir, "fig11", dpi=150)


def plot_fig12(out_dir: str) -> list[str]:
    """Redraw ``DIR/fig12.png/.pdf``: diversity metrics vs t, mean and 10–90 % band over chains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = _load(out_dir)
    t = ds.generation.values
    panels = [("total_variance", r"total variance tr $\Sigma$", False),
              ("modal_variance", "average modal variance", True),
              ("recall", "recall (k = 5)", False),
              ("modes_covered", "modes covered (of 25)", False)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), constrained_layout=True)
    for ax, (name, label, log_axis) in zip(axes, panels):
        values = ds[name].values.astype(float)
        mean = np.nanmean(values, axis=0)
        lo, hi = np.nanquantile(values, [0.1, 0.9], axis=0)
        ax.fill_between(t, lo, hi, alpha=0.25, color="tab:blue", linewidth=0,
                        label=f"10–90 % of {ds.sizes['chain']} chains")
        ax.plot(t, mean, color="tab:blue", linewidth=1.2, label="mean over chains")
        ax.set_xlabel("generation $t$")
        ax.set_title(label, fontsize=10)
        if log_axis:
            ax.set_yscale("log")
        if name == "modes_covered":
            ax.set_ylim(0, 26)
        if name == "recall":
            ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    finish(fig, "Diversity of a GMM in the fully synthetic loop: recall tracks the loss of modes best",
           _caption(ds, "Fig. 12"))
    return save(fig, out_dir, "fig12", dpi=150)


FIGURES = {
    "fig11": Figure("fig11", get_config, run, dry_run, plot_fig11),
    "fig12": Figure("fig12", get_config, run, dry_run, plot_fig12),
}
