"""Theory beside Monte-Carlo: the Gaussian loops' moments against their closed forms.

Two figure ids, each with ``smoke`` / ``quick`` / ``paper`` presets:

* ``moments-synthetic`` -- the fully synthetic loop (the paper's §3 collapse,
  Eq. 1 with bias λ): E tr Σ_t = λ^{t−1} d, E‖μ_t‖², E log det Σ_t at three λ;
  the per-eigenvalue rates 2·E log (L_t)_kk / t with the Lyapunov exponents
  as asymptotes (Newman 1986); and, for d = 1, E W2²(G^t, P_r).
* ``moments-fresh`` -- the fresh-data and synthetic-augmentation loops'
  moment recursions for E tr Σ_t and E‖μ_t‖², with their fixed points.

Every panel shows the chains' mean ± 2 se and the closed form of
:mod:`madjax.theory` as a dashed line labelled "theory". WD and n_e have no
closed form for d > 1, so the phase diagrams carry none.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from madjax import theory
from madjax.figures import Figure
from madjax.figures.style import band_label, caption, finish, save, setting, symbol
from madjax.gaussian import gaussian_factored
from madjax.io import atomic_path, describe, open_checked, provenance
from madjax.validation import ParameterError, check_choice

LOOPS_FRESH = ("fresh", "synthetic-augmentation")
RATE_CHAINS = 1000  # chains of the per-eigenvalue rate panel (its state is (T, d) per chain)


@dataclasses.dataclass(frozen=True)
class MomentsConfig:
    """One figure's sizes (documented per preset in :func:`get_config`).

    Attributes:
      fig: figure id.
      dim: d of the main panels.
      n_ini, n_real, n_syn: sizes (n_real unused by ``moments-synthetic``).
      lams: the three λ.
      generations: T.
      chains: chains per λ.
      dim_w2: d of the W2 panel (1; ``moments-synthetic`` only).
      n_w2: n_ini = n_s of the W2 panel.
    """

    fig: str
    preset: str
    dim: int
    n_ini: int
    n_real: int
    n_syn: int
    lams: tuple
    generations: int
    chains: int
    n_w2: int = 10


def get_config(fig: str, preset: str) -> MomentsConfig:
    """``paper``: d = 100 (the paper's Gaussian dimension), 10⁴ chains; ``quick``: d = 10, 4000 chains
    (about a minute on two cores); ``smoke``: d = 3, 2000 chains, T = 12. λ ∈ {1, 0.9, 0.7}: unbiased, mild and
    strong bias. The fully synthetic sizes keep n − 1 ≥ d so that log det is finite."""
    check_choice("preset", preset, ("smoke", "quick", "paper"))
    sizes = {
        "paper": dict(dim=100, n_ini=200, n_real=100, n_syn=200, generations=200, chains=10_000),
        "quick": dict(dim=10, n_ini=20, n_real=10, n_syn=20, generations=50, chains=4000),
        # d = 3 and T = 12 (with 2000 chains, cheap at d = 3) are the sizes of tests/test_theory.py,
        # which then shares the compiled loops with this preset
        "smoke": dict(dim=3, n_ini=8, n_real=4, n_syn=8, generations=12, chains=2000),
    }[preset]
    if fig == "moments-fresh":
        sizes["generations"] = min(sizes["generations"], 40)
    return MomentsConfig(fig=fig, preset=preset, lams=(1.0, 0.9, 0.7), **sizes)


def _summary(ds: xr.Dataset, names) -> dict:
    """Chains' mean and standard error per generation of each variable."""
    out = {}
    for name in names:
        x = ds.w2**2 if name == "w2_sq" else ds[name]
        x = x.astype(np.float64)
        out[name] = x.mean("chain")
        out[f"{name}_se"] = x.std("chain", ddof=1) / np.sqrt(ds.sizes["chain"])
        out[f"{name}_theory"] = ds[f"{name}_theory"].astype(np.float64)
    return out


def log_diag_chains(key, *, dim: int, n_ini, n_syn, lam, chains: int, generations: int) -> np.ndarray:
    """``log (L_t)_kk`` of every chain and generation of the fully synthetic loop: ``(chains, T, d)``.

    Read off the factored engine's state (:func:`madjax.gaussian.gaussian_factored`),
    whose diagonal is the product of the Bartlett diagonals. Sizes and λ are
    traced: one compilation per (d, chains, T).
    """
    n_ini, n_syn = jnp.int32(n_ini), jnp.int32(n_syn)
    return np.asarray(_log_diag_jit(key, n_ini, n_syn, jnp.float32(lam), dim, chains, generations), np.float64)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _log_diag_jit(key, n_ini, n_syn, lam, dim, chains, generations):
    eng = gaussian_factored(dim)

    def chain(k):
        first, _ = eng.fit(None, None, eng.sample_real(jax.random.fold_in(k, 1), n_ini))

        def step(g, t):
            g, _ = eng.fit(None, None, eng.sample(jax.random.fold_in(k, t), g, n_syn, lam))
            return g, g.log_diag

        _, rest = jax.lax.scan(step, first, jnp.arange(2, generations + 1))
        return jnp.concatenate([first.log_diag[None], rest])

    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(chains))
    return jax.vmap(chain)(keys)


def _simulate_lams(cfg: MomentsConfig, loop: str, dim: int, names, seed: int, progress: bool, **sizes) -> xr.Dataset:
    from madjax.simulate import simulate

    parts = []
    for lam in cfg.lams:
        ds = simulate(loop=loop, dim=dim, lam=lam, generations=cfg.generations, chains=cfg.chains, seed=seed,
                      progress=progress, **sizes)
        parts.append(xr.Dataset(_summary(ds, names)))
    return xr.concat(parts, dim=xr.DataArray(list(cfg.lams), dims="lam", name="lam"))


def run(cfg: MomentsConfig, out: str, *, seed: int = 0, progress: bool = True) -> None:
    """Simulate each λ and store means, standard errors and theory in ``DIR/<fig>.nc``."""
    if cfg.fig == "moments-synthetic":
        ds = _simulate_lams(cfg, "fully-synthetic", cfg.dim, ("cov_trace", "mean_sq_norm", "cov_logdet"), seed,
                            progress, n_ini=cfg.n_ini, n_syn=cfg.n_syn)
        w2 = _simulate_lams(cfg, "fully-synthetic", 1, ("w2_sq",), seed, progress, n_ini=cfg.n_w2, n_syn=cfg.n_w2)
        ds = ds.merge(w2)
        rates = []
        for lam in cfg.lams:
            x = log_diag_chains(jax.random.fold_in(jax.random.key(seed), 1), dim=cfg.dim, n_ini=cfg.n_ini,
                                n_syn=cfg.n_syn, lam=lam, chains=min(cfg.chains, RATE_CHAINS),
                                generations=cfg.generations)
            per_t = 2 * x / np.arange(1, cfg.generations + 1)[None, :, None]  # (chains, T, d)
            rates.append((per_t.mean(0), per_t.std(0, ddof=1) / np.sqrt(x.shape[0]),
                          np.asarray(theory.lyapunov_exponents(dim=cfg.dim, n_syn=cfg.n_syn, lam=lam))))
        ds["rate"] = (("lam", "generation", "k"), np.stack([r[0] for r in rates]))
        ds["rate_se"] = (("lam", "generation", "k"), np.stack([r[1] for r in rates]))
        ds["lyapunov"] = (("lam", "k"), np.stack([r[2] for r in rates]))
        ds = ds.assign_coords(k=np.arange(1, cfg.dim + 1))
    else:
        parts = []
        for loop in LOOPS_FRESH:
            sizes = dict(n_real=cfg.n_real, n_syn=cfg.n_syn)
            if loop == "fresh":
                sizes["n_ini"] = cfg.n_ini
            part = _simulate_lams(cfg, loop, cfg.dim, ("cov_trace", "mean_sq_norm"), seed, progress, **sizes)
            fixed = [theory.fixed_point(_recursion(loop, cfg, lam)) for lam in cfg.lams]
            part["cov_trace_limit"] = ("lam", np.array([float(f[0]) for f in fixed]))
            part["mean_sq_norm_limit"] = ("lam", np.array([float(f[1]) for f in fixed]))
            parts.append(part)
        ds = xr.concat(parts, dim=xr.DataArray(list(LOOPS_FRESH), dims="loop", name="loop"))
    ds.attrs.update(provenance(dataclasses.asdict(cfg)))
    with atomic_path(os.path.join(out, f"{cfg.fig}.nc"), ".nc") as tmp:
        describe(ds).to_netcdf(tmp)


def _recursion(loop: str, cfg: MomentsConfig, lam: float) -> theory.Affine:
    if loop == "fresh":
        return theory.fresh_recursion(n_ini=cfg.n_ini, n_real=cfg.n_real, n_syn=cfg.n_syn, lam=lam,
                                      trace0=float(cfg.dim))
    return theory.augmentation_recursion(n_real=cfg.n_real, n_syn=cfg.n_syn, lam=lam, trace0=float(cfg.dim))


def dry_run(cfg: MomentsConfig) -> str:
    runs = len(cfg.lams) * (2 if cfg.fig == "moments-synthetic" else len(LOOPS_FRESH))
    work = runs * cfg.chains * cfg.generations
    return (f"{runs} runs of {cfg.chains} chains × {cfg.generations} generations at d = {cfg.dim} "
            f"({work:.3g} chain-generations; the exact engine costs O(d³) per chain-generation)")


_LABELS = {
    "cov_trace": r"E tr $\Sigma_t$",
    "mean_sq_norm": r"E $\|\mu_t\|^2$",
    "cov_logdet": r"E log det $\Sigma_t$",
    "w2_sq": r"E $W_2^2(G^t, P_r)$",
}


def _panel(ax, ds: xr.Dataset, name: str, log: bool = False, limit: str | None = None) -> None:
    t = ds.generation.values
    for i, lam in enumerate(ds.lam.values):
        colour = f"C{i}"
        m, se = ds[name].sel(lam=lam).values, ds[f"{name}_se"].sel(lam=lam).values
        ax.plot(t, m, color=colour, lw=1.2, label=setting("lam", float(lam)))
        ax.fill_between(t, m - 2 * se, m + 2 * se, color=colour, alpha=0.25, lw=0)
        ax.plot(t, ds[f"{name}_theory"].sel(lam=lam).values, "k--", lw=0.9,
                label="theory" if i == 0 else None)
        if limit is not None:
            ax.axhline(float(ds[limit].sel(lam=lam)), color=colour, ls=":", lw=0.9,
                       label="fixed point" if i == 0 else None)
    ax.set_xlabel(symbol("generation"))
    ax.set_ylabel(_LABELS[name])
    if log:
        ax.set_yscale("log")


def plot(out: str, fig_id: str) -> list:
    import matplotlib.pyplot as plt

    ds = open_checked(os.path.join(out, f"{fig_id}.nc"), "from")
    cfg = MomentsConfig(**{**_config_attrs(ds), "lams": tuple(ds.lam.values.tolist())})
    sizes = f"{symbol('n_ini')} = {cfg.n_ini}, {symbol('n_syn')} = {cfg.n_syn}"
    if fig_id == "moments-synthetic":
        fig, axes = plt.subplots(1, 5, figsize=(22, 4.2), layout="constrained")
        _panel(axes[0], ds, "cov_trace", log=True)
        _panel(axes[1], ds, "mean_sq_norm")
        _panel(axes[2], ds, "cov_logdet")
        ax = axes[3]
        lam = float(ds.lam.values[-1])
        sub = ds.sel(lam=lam)
        for j, k in enumerate(ds.k.values[:: max(1, cfg.dim // 5)]):
            m, se = sub.rate.sel(k=k).values, sub.rate_se.sel(k=k).values
            ax.plot(ds.generation, m, color=f"C{j}", lw=1.1, label=f"$k$ = {k}")
            ax.fill_between(ds.generation, m - 2 * se, m + 2 * se, color=f"C{j}", alpha=0.25, lw=0)
            ax.axhline(float(sub.lyapunov.sel(k=k)), color=f"C{j}", ls="--", lw=0.9,
                       label="almost-sure limit" if j == 0 else None)
        ax.set_xlabel(symbol("generation"))
        ax.set_ylabel(r"$2\,$E log $(L_t)_{kk}\,/\,t$")
        ax.set_title(f"per-eigenvalue decay rates, {setting('lam', lam)}", fontsize=9)
        ax.legend(fontsize=7)
        _panel(axes[4], ds, "w2_sq")
        axes[4].set_title(f"d = 1, {symbol('n_ini')} = {symbol('n_syn')} = {cfg.n_w2}", fontsize=9)
        for ax in axes[:3]:
            ax.set_title(sizes, fontsize=9)
        headline = r"Fully synthetic loop: every moment follows its closed form, and $\Sigma_t$ collapses"
        paper = "§3 fully synthetic loop (Eq. 1, sampling bias λ)"
        notes = ("Dashed black: closed forms of madjax.theory; dashed colour (4th panel): the Lyapunov "
                 "exponents ψ((n_s − k)/2) − log((n_s − 1)/2) + log λ", band_label(cfg.chains),
                 f"4th panel from {min(cfg.chains, RATE_CHAINS)} chains")
    else:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
        for row, loop in enumerate(ds.loop.values):
            sub = ds.sel(loop=loop)
            for col, name in enumerate(("cov_trace", "mean_sq_norm")):
                _panel(axes[row, col], sub, name, limit=f"{name}_limit")
                shown = f"{symbol('n_real')} = {cfg.n_real}, {symbol('n_syn')} = {cfg.n_syn}"
                if loop == "fresh":
                    shown = f"{symbol('n_ini')} = {cfg.n_ini}, " + shown
                axes[row, col].set_title(f"{loop} loop, {shown}", fontsize=9)
        headline = "Loops with real data: moments follow their recursions to a fixed point"
        paper = "§4–5 fresh-data and synthetic-augmentation loops"
        notes = ("Dashed black: the moment recursions of madjax.theory; dotted: their fixed points",
                 band_label(cfg.chains))
    axes.flat[0].legend(fontsize=7)
    finish(fig, headline, caption(cfg.preset, paper=paper, dim=cfg.dim, chains=cfg.chains, per="λ", notes=notes))
    return save(fig, out, fig_id)


def _config_attrs(ds: xr.Dataset) -> dict:
    import json

    try:
        raw = json.loads(ds.attrs["config"])
        return {f.name: raw[f.name] for f in dataclasses.fields(MomentsConfig) if f.name != "lams"}
    except (KeyError, TypeError, ValueError) as err:
        raise ParameterError("from", f"the saved data carries no moments configuration ({err})") from None


def _figure(fig_id: str) -> Figure:
    return Figure(fig_id, lambda preset: get_config(fig_id, preset), run, dry_run,
                  lambda out: plot(out, fig_id))


FIGURES = {f: _figure(f) for f in ("moments-synthetic", "moments-fresh")}
