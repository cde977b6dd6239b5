"""Loop operators of the literature, each checked against its paper's law (Gaussian loops, Monte-Carlo).

Four figure ids, each with ``smoke`` / ``quick`` / ``paper`` presets; every
panel shows the chains' mean ± 2 se and the closed form of
:mod:`madjax.theory` (dashed black) where one exists. Reference P_r =
N(0, I_d) (tr Σ₀ = d), λ = 1 throughout; m_1 = E‖μ_1 − μ₀‖² = tr Σ₀ / n_ini.

* ``replace-vs-accumulate`` -- E‖μ_t − μ₀‖² / m_1 per generation for
  *replace* (train on the last model's n_s samples only), *accumulate* (the
  real data plus every synthetic sample so far) and *accumulate-subsample*
  (a uniform subsample of n_r points of that pool), with n_s = n_r:

  - known covariance (only the mean is fitted; Dey & Donoho 2024): replace
    gives m_t / m_1 = t, accumulate ``1 + Σ_{s=2}^t 1/s² → π²/6``
    (:func:`madjax.theory.accumulate_known_cov_ratio`);
  - refitted (unbiased) covariance: :func:`~madjax.theory.replace_moments`
    and :func:`~madjax.theory.accumulate_moments` -- replace still grows
    linearly, accumulate stays bounded (Gerstgrasser et al. 2024,
    "Is model collapse inevitable?").

  Accumulate-subsample has no closed form here; Kazdan, Schaeffer et al.
  2025 ("Collapse or Thrive?") find it between the two.
* ``golden-ratio-weighting`` -- the fresh loop fitting ``w P̂_r + (1 − w) P̂_s``
  with known covariance has the stationary error
  ``V(w) = tr Σ₀ [w²/n_r + (1 − w)²/n_s] / (1 − (1 − w)²)``
  (:func:`~madjax.theory.weighted_variance`), minimised at
  ``w* = (√(ρ² + 4ρ) − ρ)/2``, ρ = n_r/n_s: ``(√5 − 1)/2`` for n_r = n_s (He,
  Xu & Cheng 2026, "Golden ratio weighting prevents model collapse").
  Each point is the chains' mean of the per-chain average of ‖μ_t − μ₀‖²
  over the last ``window`` generations, after a burn-in over which the
  transient ``(1 − w)^{2t}`` of the recursion has fallen below
  :data:`TRANSIENT` for the grid's smallest w; its z is taken against the
  exact expectation of that window average (:func:`~madjax.theory.weighted_moments`).
  A second panel has n_s ≠ n_r (:func:`~madjax.theory.optimal_real_weight`).
* ``growing-sample-sizes`` -- the replace loop drawing ``n_t = ⌈n_s t^α⌉``
  samples at generation t (unbiased refits): ``E‖μ_t − μ₀‖² = tr Σ₀ (1/n_ini
  + Σ_{s=2}^t 1/n_s)`` and ``E log det Σ_t = κ(n_ini) + Σ_{s=2}^t κ(n_s)``
  (:func:`~madjax.theory.replace_moments`, :func:`~madjax.theory.replace_logdet`)
  are bounded iff ``Σ 1/n_t < ∞``, i.e. α > 1 (Xu, He & Cheng 2025).
* ``curation-tilt`` -- the replace loop whose samples come from the sampler
  tilted by ``exp(−β‖x − μ₀‖²/2)`` (a reward maximised at μ₀; Ferbach et al.
  2024, "Self-consuming generative models with curated data provably optimize
  human preferences"): with a refitted covariance and n → ∞ each eigenvalue
  follows ``1/σ²_t = 1/σ²_{t−1} + β`` (:func:`~madjax.theory.tilted_limit`),
  so tr Σ_t falls like 1/(βt) -- the model concentrates on the reward's
  maximiser; simulated at n_ini = n_s = ``n_large`` (the exact engine's cost
  does not depend on n), the comparison with the limit includes the O(t/n)
  finite-n bias. With known covariance and small n the mean's error is exact
  (:func:`~madjax.theory.tilted_known_cov_mean_sq`): curation bounds it,
  where β = 0 lets it grow like t.

``run`` writes ``DIR/<fig>.nc`` (means, standard errors, theory) and
``DIR/<fig>_z.json``: per law and series the largest |z| =
|mean − theory| / se over the generations (or weights) where the theory is
finite and the chains vary, and the cross-check of
:func:`madjax.simulate.theory_z` on each simulated Dataset; the same record
is the ``max_abs_z`` attribute of the NetCDF file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import xarray as xr

from madjax import theory
from madjax.figures import Figure
from madjax.figures.style import band_label, finish, save, setting, symbol
from madjax.io import atomic_path, describe, open_checked, provenance, write_json
from madjax.loops import synthetic_sizes
from madjax.validation import ParameterError, check_choice

FIGURE_IDS = ("replace-vs-accumulate", "golden-ratio-weighting", "growing-sample-sizes", "curation-tilt")
RVA_LOOPS = ("replace", "accumulate", "accumulate-subsample")
RVA_ESTIMATORS = ("known-cov", "unbiased")
TRANSIENT = 1e-4
"""Golden-ratio burn-in: the transient (1 − w_min)^{2t} of E‖μ_t − μ₀‖² has fallen below this fraction
of its start before the averaging window begins."""

_PAPERS = {
    "replace-vs-accumulate": "Dey & Donoho 2024; Gerstgrasser et al. 2024; Kazdan, Schaeffer et al. 2025",
    "golden-ratio-weighting": "He, Xu & Cheng 2026 (golden ratio weighting)",
    "growing-sample-sizes": "Xu, He & Cheng 2025 (growing synthetic samples)",
    "curation-tilt": "Ferbach et al. 2024 (curated self-consuming loops)",
}
_W, _ALPHA, _BETA = "$w$", r"$\alpha$", r"$\beta$"


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """One figure's sizes (documented per preset in :func:`get_config`).

    Attributes:
      fig, preset: figure id and preset.
      dim: d.
      n: the base size: n_ini = n_r = n_s = n (growth: n_ini = n_s = n; the
        known-covariance panel of ``curation-tilt``: n_ini = n_s = n).
      generations: T.
      chains: chains per run.
      values: the swept operator values -- w (``golden-ratio-weighting``), α
        (``growing-sample-sizes``), β (``curation-tilt``); empty otherwise.
      n_syn_other: ``golden-ratio-weighting``'s second panel n_s (n_r = n); 0: no second panel.
      window: ``golden-ratio-weighting``: generations averaged at the end of each run.
      n_large: ``curation-tilt``: n_ini = n_s of the refitted-covariance runs (stands in for n → ∞).
    """

    fig: str
    preset: str
    dim: int
    n: int
    generations: int
    chains: int
    values: tuple = ()
    n_syn_other: int = 0
    window: int = 0
    n_large: int = 0


def golden_burn_in(w_min: float, tolerance: float = TRANSIENT) -> int:
    """Generations after which ``(1 − w_min)^{2t} ≤ tolerance`` (the weighted known-covariance recursion
    ``m_t = (1 − w)² m_{t−1} + const`` has forgotten its start); 1 for w_min = 1."""
    if not 0 < w_min <= 1:
        raise ParameterError("values", f"the weights must lie in (0, 1], got {w_min!r}")
    if w_min == 1:
        return 1
    return max(1, math.ceil(math.log(tolerance) / (2 * math.log1p(-w_min))))


def get_config(fig: str, preset: str) -> OperatorConfig:
    """The presets. ``paper``: d = 10, 10⁴–2·10⁴ chains, long horizons (GPU-sized, checked with
    ``--dry-run``); ``quick``: d = 4, 4000 chains (a minute or two each on two cores); ``smoke``: d = 2, a few
    hundred chains, a handful of generations (what the tests run: seconds of work after compilation).

    * ``replace-vs-accumulate``: T = 100 / 40 / 8; n = 50 / 10 / 8.
    * ``golden-ratio-weighting``: w from 0.05 (paper) / 0.1 (quick) / 0.25 (smoke) to 1; the second
      panel n_s = 4 n_r (ρ = 1/4, w* ≈ 0.39); T = burn-in (:func:`golden_burn_in`) + window.
    * ``growing-sample-sizes``: α ∈ {0, 0.5, 1, 2}; T = 200 / 100 / 10; n = 100 / 20 / 8 (≥ d + 1: log det
      finite).
    * ``curation-tilt``: β ∈ {0, 0.1, 1, 10} (β = 0: no curation); n_large = 10⁶ for every preset
      (the finite-n bias against the n → ∞ limit is O(t/n), under the Monte-Carlo se at these chains).

    Why n grows with T in the refitted replace runs: E tr Σ_t = tr Σ₀ at every t, but tr Σ_t → 0 almost
    surely (log det Σ_t falls by about d(d + 1)/(2n) per generation), so E‖μ_t − μ₀‖² = tr Σ₀ t/n is
    carried by ever rarer chains whose covariance has not yet collapsed. Once t is many times n/d, a few
    thousand chains' mean mostly falls below its expectation, with rare large spikes, and its standard error
    understates the uncertainty -- a heavy tail of the Monte-Carlo, not a failure of the law. The presets
    keep T d/n ≤ 20 in those runs (α = 0 and the refitted panel of ``replace-vs-accumulate``): with 4000
    chains the chains' mean of ‖μ_t − μ₀‖² followed the law within 2.5 se there, and fell short of it from
    T d/n ≈ 40 on; tr Σ_t itself, a heavier tail still, strays further by the last generations (its
    :func:`madjax.simulate.theory_z` record in ``DIR/<fig>_z.json``).
    """
    check_choice("figure", fig, FIGURE_IDS)
    check_choice("preset", preset, ("smoke", "quick", "paper"))
    base = {
        "paper": dict(dim=10, n=20, chains=20_000),
        "quick": dict(dim=4, n=10, chains=4000),
        "smoke": dict(dim=2, n=8, chains=400),
    }[preset]
    if fig == "replace-vs-accumulate":
        base["n"] = {"paper": 50, "quick": 10, "smoke": 8}[preset]
        return OperatorConfig(fig=fig, preset=preset, generations={"paper": 100, "quick": 40, "smoke": 8}[preset],
                              **base)
    if fig == "golden-ratio-weighting":
        step = {"paper": 0.05, "quick": 0.1, "smoke": 0.25}[preset]
        values = tuple(round(float(w), 6) for w in np.arange(step, 1 + step / 2, step))
        window = {"paper": 200, "quick": 40, "smoke": 8}[preset]
        generations = golden_burn_in(min(values)) + window
        return OperatorConfig(fig=fig, preset=preset, generations=generations, values=values,
                              n_syn_other=4 * base["n"], window=window, **base)
    if fig == "growing-sample-sizes":
        base["chains"] = min(base["chains"], 10_000)
        base["n"] = {"paper": 100, "quick": 20, "smoke": 8}[preset]
        return OperatorConfig(fig=fig, preset=preset, generations={"paper": 200, "quick": 100, "smoke": 10}[preset],
                              values=(0.0, 0.5, 1.0, 2.0), **base)
    base["chains"] = min(base["chains"], 10_000)
    return OperatorConfig(fig=fig, preset=preset, generations={"paper": 100, "quick": 40, "smoke": 8}[preset],
                          values=(0.0, 0.1, 1.0, 10.0), n_large=1_000_000, **base)


# ----------------------------------------------------------------------------- the runs


def _runs(cfg: OperatorConfig) -> list[tuple[str, dict]]:
    """Every :func:`madjax.simulate` call of a figure: ``(label, keywords)`` (chains, T and seed added later)."""
    d, n = cfg.dim, cfg.n
    runs = []
    if cfg.fig == "replace-vs-accumulate":
        for est in RVA_ESTIMATORS:
            for loop in RVA_LOOPS:
                sizes = dict(n_ini=n, n_syn=n) if loop == "replace" else dict(n_real=n, n_syn=n)
                engine = "sampled" if loop == "accumulate-subsample" else None
                runs.append((f"{est}/{loop}", dict(loop=loop, dim=d, estimator=est, engine=engine, **sizes)))
    elif cfg.fig == "golden-ratio-weighting":
        for n_syn in _golden_panels(cfg):
            for w in _golden_weights(cfg):
                runs.append((f"n_syn={n_syn}/w={w:g}", dict(loop="fresh", dim=d, n_ini=n, n_real=n, n_syn=n_syn,
                                                             estimator="known-cov", real_weight=w)))
    elif cfg.fig == "growing-sample-sizes":
        for alpha in cfg.values:
            runs.append((f"alpha={alpha:g}", dict(loop="replace", dim=d, n_ini=n, n_syn=n, growth=alpha)))
    else:
        for beta in cfg.values:
            runs.append((f"refitted/beta={beta:g}", dict(loop="replace", dim=d, n_ini=cfg.n_large,
                                                          n_syn=cfg.n_large, tilt=beta)))
        for beta in cfg.values:
            runs.append((f"known-cov/beta={beta:g}", dict(loop="replace", dim=d, n_ini=n, n_syn=n, tilt=beta,
                                                           estimator="known-cov")))
    return runs


def _golden_panels(cfg: OperatorConfig) -> tuple:
    return (cfg.n,) + ((cfg.n_syn_other,) if cfg.n_syn_other else ())


def _golden_weights(cfg: OperatorConfig) -> tuple:
    """The grid of w plus each panel's optimum w* (so every panel has a Monte-Carlo point at its optimum)."""
    optima = [round(float(theory.optimal_real_weight(n_real=cfg.n, n_syn=s)), 6) for s in _golden_panels(cfg)]
    return tuple(sorted(set(cfg.values) | set(optima)))


def _simulate(kwargs: dict, cfg: OperatorConfig, seed: int, progress: bool) -> xr.Dataset:
    from madjax.simulate import simulate

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return simulate(generations=cfg.generations, chains=cfg.chains, seed=seed, progress=progress, **kwargs)


def _mean_se(x: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """The chains' mean and standard error (float64), NaN where a chain's value is missing."""
    x = x.astype(np.float64)
    chains = x.sizes["chain"]
    mean = x.mean("chain", skipna=False).values
    se = x.std("chain", ddof=1, skipna=False).values / np.sqrt(chains)
    return mean, se


def max_abs_z(mean, se, exact, coords=None) -> dict:
    """``{"max_abs_z", "at"}`` of ``|mean − exact| / se`` over the entries where all three are finite and
    se > 0 (None when there is none); ``at`` is the coordinate (generation or w) of the largest."""
    mean, se, exact = (np.asarray(v, np.float64) for v in (mean, se, exact))
    usable = np.isfinite(mean) & np.isfinite(exact) & np.isfinite(se) & (se > 0)
    if not usable.any():
        return {"max_abs_z": None, "at": None}
    z = np.where(usable, np.abs(mean - exact) / np.where(usable, se, 1.0), -np.inf)
    i = int(np.argmax(z))
    at = coords[i] if coords is not None else i
    return {"max_abs_z": float(z[i]), "at": float(at) if isinstance(at, (float, np.floating)) else int(at)}


def _z_record(law: str, series: str, mean, se, exact, coords, chains: int) -> dict:
    return {"law": law, "series": series, "chains": chains, **max_abs_z(mean, se, exact, coords)}


def _simulate_z(label: str, ds: xr.Dataset) -> list[dict]:
    """:func:`madjax.simulate.theory_z` of one run, as z records (the stored ``<var>_theory`` closed forms)."""
    from madjax.simulate import theory_z

    return [{"law": f"madjax.simulate.theory_z: {var}", "series": label, "chains": ds.sizes["chain"],
             "max_abs_z": z, "at": at, "left_out": left} for var, (z, at, left) in theory_z(ds).items()]


def run(cfg: OperatorConfig, out: str, *, seed: int = 0, progress: bool = True) -> None:
    """Simulate every run of the figure; store ``DIR/<fig>.nc`` and ``DIR/<fig>_z.json``."""
    runner = {"replace-vs-accumulate": _run_rva, "golden-ratio-weighting": _run_golden,
              "growing-sample-sizes": _run_growth, "curation-tilt": _run_tilt}[cfg.fig]
    ds, records = runner(cfg, seed, progress)
    finite = [r["max_abs_z"] for r in records if r["max_abs_z"] is not None and not r["law"].startswith("madjax.")]
    summary = {"figure": cfg.fig, "preset": cfg.preset, "seed": seed,
               "max_abs_z": max(finite) if finite else None, "records": records}
    ds.attrs.update(provenance(dataclasses.asdict(cfg)))
    ds.attrs["max_abs_z"] = json.dumps(summary)
    with atomic_path(os.path.join(out, f"{cfg.fig}.nc"), ".nc") as tmp:
        _describe(ds).to_netcdf(tmp)
    write_json(os.path.join(out, f"{cfg.fig}_z.json"), summary, indent=1)


def _run_rva(cfg: OperatorConfig, seed: int, progress: bool):
    t = np.arange(1, cfg.generations + 1)
    tr0, m1 = float(cfg.dim), cfg.dim / cfg.n
    sizes = np.full(cfg.generations - 1, cfg.n)
    shape = (len(RVA_ESTIMATORS), len(RVA_LOOPS), cfg.generations)
    mean, se, exact = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    trace, trace_se = np.full(shape, np.nan), np.full(shape, np.nan)
    records = []
    for label, kwargs in _runs(cfg):
        est, loop = label.split("/")
        i, j = RVA_ESTIMATORS.index(est), RVA_LOOPS.index(loop)
        ds = _simulate(kwargs, cfg, seed, progress)
        mean[i, j], se[i, j] = _mean_se(ds.mean_sq_norm / m1)
        trace[i, j], trace_se[i, j] = _mean_se(ds.cov_trace)
        if est == "known-cov" and loop == "replace":
            exact[i, j] = t
        elif est == "known-cov" and loop == "accumulate":
            exact[i, j] = np.asarray(theory.accumulate_known_cov_ratio(t))
        elif loop == "replace":
            exact[i, j] = np.asarray(theory.replace_moments(sizes, n_ini=cfg.n, lam=1.0, trace0=tr0,
                                                            estimator=est)[1]) / m1
        elif loop == "accumulate":
            exact[i, j] = np.asarray(theory.accumulate_moments(sizes, n_first=cfg.n, lam=1.0, trace0=tr0,
                                                               estimator=est, with_first=True)[1]) / m1
        if np.isfinite(exact[i, j]).any():
            law = {("known-cov", "replace"): "m_t/m_1 = t (Dey & Donoho 2024)",
                   ("known-cov", "accumulate"): "m_t/m_1 = 1 + sum 1/s^2 -> pi^2/6 (Dey & Donoho 2024)",
                   ("unbiased", "replace"): "theory.replace_moments (unbiased)",
                   ("unbiased", "accumulate"): "theory.accumulate_moments (unbiased, with D_r)"}[(est, loop)]
            records.append(_z_record(law, label, mean[i, j], se[i, j], exact[i, j], t, cfg.chains))
        records += _simulate_z(label, ds)
    dims = ("estimator", "loop", "generation")
    ds = xr.Dataset({"mean_sq_ratio": (dims, mean), "mean_sq_ratio_se": (dims, se),
                     "mean_sq_ratio_theory": (dims, exact), "cov_trace": (dims, trace),
                     "cov_trace_se": (dims, trace_se),
                     "limit": ((), float(np.pi**2 / 6))},
                    coords={"estimator": list(RVA_ESTIMATORS), "loop": list(RVA_LOOPS), "generation": t})
    return ds, records


def _run_golden(cfg: OperatorConfig, seed: int, progress: bool):
    weights = _golden_weights(cfg)
    panels = _golden_panels(cfg)
    tr0 = float(cfg.dim)
    shape = (len(panels), len(weights))
    mean, se, exact, stationary = (np.full(shape, np.nan) for _ in range(4))
    results = {}
    for label, kwargs in _runs(cfg):
        ds = _simulate(kwargs, cfg, seed, progress)
        i, j = panels.index(kwargs["n_syn"]), weights.index(kwargs["real_weight"])
        window = ds.mean_sq_norm.isel(generation=slice(-cfg.window, None)).mean("generation")
        mean[i, j], se[i, j] = _mean_se(window)
        m = theory.weighted_moments(cfg.generations, n_ini=cfg.n, n_real=cfg.n, n_syn=kwargs["n_syn"], lam=1.0,
                                    trace0=tr0, weight=kwargs["real_weight"], estimator="known-cov")[1]
        exact[i, j] = float(np.mean(np.asarray(m)[-cfg.window:]))
        stationary[i, j] = float(theory.weighted_variance(kwargs["real_weight"], n_real=cfg.n, n_syn=kwargs["n_syn"],
                                                          trace0=tr0))
        results[label] = ds
    records = []
    for i, n_syn in enumerate(panels):
        series = f"n_real={cfg.n}, n_syn={n_syn}"
        records.append(_z_record("window mean of theory.weighted_moments (known-cov, exact)", series, mean[i], se[i],
                                 exact[i], weights, cfg.chains))
        records.append(_z_record("stationary V(w) = theory.weighted_variance", series, mean[i], se[i],
                                 stationary[i], weights, cfg.chains))
    for label, ds in results.items():
        records += _simulate_z(label, ds)
    optimum = np.array([float(theory.optimal_real_weight(n_real=cfg.n, n_syn=s)) for s in panels])
    ds = xr.Dataset({"window_mean_sq": (("n_syn", "w"), mean), "window_mean_sq_se": (("n_syn", "w"), se),
                     "window_mean_sq_theory": (("n_syn", "w"), exact),
                     "stationary_mean_sq": (("n_syn", "w"), stationary),
                     "optimal_weight": (("n_syn",), optimum)},
                    coords={"n_syn": list(panels), "w": list(weights)})
    ds["n_real"] = cfg.n
    return ds, records


def _run_growth(cfg: OperatorConfig, seed: int, progress: bool):
    t = np.arange(1, cfg.generations + 1)
    tr0 = float(cfg.dim)
    names = ("mean_sq_norm", "cov_logdet")
    data = {f"{k}{s}": np.full((len(cfg.values), cfg.generations), np.nan)
            for k in names for s in ("", "_se", "_theory")}
    sizes_all = np.zeros((len(cfg.values), cfg.generations - 1), np.int64)
    records = []
    for i, (label, kwargs) in enumerate(_runs(cfg)):
        ds = _simulate(kwargs, cfg, seed, progress)
        sizes = synthetic_sizes(cfg.n, kwargs["growth"], (), cfg.generations)[: cfg.generations - 1]
        sizes_all[i] = sizes
        exact = {"mean_sq_norm": theory.replace_moments(sizes, n_ini=cfg.n, lam=1.0, trace0=tr0)[1],
                 "cov_logdet": theory.replace_logdet(sizes, dim=cfg.dim, n_ini=cfg.n, lam=1.0)}
        for name in names:
            data[name][i], data[f"{name}_se"][i] = _mean_se(ds[name])
            data[f"{name}_theory"][i] = np.asarray(exact[name])
            law = {"mean_sq_norm": "theory.replace_moments with n_t = ceil(n t^alpha)",
                   "cov_logdet": "theory.replace_logdet with n_t = ceil(n t^alpha)"}[name]
            records.append(_z_record(law, label, data[name][i], data[f"{name}_se"][i], data[f"{name}_theory"][i], t,
                                     cfg.chains))
        records += _simulate_z(label, ds)
    dims = ("growth", "generation")
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={"growth": list(cfg.values), "generation": t})
    ds["n_syn_t"] = (("growth", "generation"), np.concatenate([np.full((len(cfg.values), 1), cfg.n), sizes_all], 1))
    return ds, records


def _run_tilt(cfg: OperatorConfig, seed: int, progress: bool):
    t = np.arange(1, cfg.generations + 1)
    spectrum = (1.0,) * cfg.dim
    sizes = np.full(cfg.generations - 1, cfg.n)
    shape = (len(cfg.values), cfg.generations)
    names = ("cov_trace", "cov_logdet", "mean_sq_norm_known_cov")
    data = {f"{k}{s}": np.full(shape, np.nan) for k in names for s in ("", "_se", "_theory")}
    records = []
    for label, kwargs in _runs(cfg):
        kind, _ = label.split("/")
        i = cfg.values.index(kwargs["tilt"])
        ds = _simulate(kwargs, cfg, seed, progress)
        if kind == "refitted":
            limit_trace, limit_logdet = theory.tilted_limit(cfg.generations, lam=1.0, tilt=kwargs["tilt"],
                                                            spectrum=spectrum)
            for name, limit in (("cov_trace", limit_trace), ("cov_logdet", limit_logdet)):
                data[name][i], data[f"{name}_se"][i] = _mean_se(ds[name])
                data[f"{name}_theory"][i] = np.asarray(limit)
                records.append(_z_record(f"theory.tilted_limit {name} (n -> infinity; n = {cfg.n_large})", label,
                                         data[name][i], data[f"{name}_se"][i], data[f"{name}_theory"][i], t,
                                         cfg.chains))
        else:
            name = "mean_sq_norm_known_cov"
            data[name][i], data[f"{name}_se"][i] = _mean_se(ds.mean_sq_norm)
            data[f"{name}_theory"][i] = np.asarray(theory.tilted_known_cov_mean_sq(
                sizes, n_ini=cfg.n, lam=1.0, tilt=kwargs["tilt"], spectrum=spectrum))
            records.append(_z_record("theory.tilted_known_cov_mean_sq (exact)", label, data[name][i],
                                     data[f"{name}_se"][i], data[f"{name}_theory"][i], t, cfg.chains))
        records += _simulate_z(label, ds)
    dims = ("tilt", "generation")
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={"tilt": list(cfg.values), "generation": t})
    return ds, records


_LONG_NAMES = {
    "mean_sq_ratio": "E ||mu_t - mu_0||^2 / m_1, m_1 = tr Sigma_0 / n_ini (chains' mean)",
    "cov_trace": "E tr Sigma_t (chains' mean)",
    "cov_logdet": "E log det Sigma_t (chains' mean)",
    "mean_sq_norm": "E ||mu_t - mu_0||^2 (chains' mean)",
    "mean_sq_norm_known_cov": "E ||mu_t - mu_0||^2 with known covariance (chains' mean)",
    "window_mean_sq": "E of the per-chain mean of ||mu_t - mu_0||^2 over the last `window` generations",
    "stationary_mean_sq": "stationary V(w) = lim E ||mu_t - mu_0||^2 (madjax.theory.weighted_variance)",
    "optimal_weight": "the real weight w* minimising V(w) (madjax.theory.optimal_real_weight)",
    "limit": "pi^2/6, the limit of the accumulating known-covariance ratio",
    "n_syn_t": "synthetic samples drawn at generation t (n_ini at t = 1)",
    "estimator": "covariance estimator: known-cov (only the mean fitted) or unbiased",
    "loop": "loop operator",
    "w": "real weight w (synthetic weight 1 - w)",
    "growth": "growth exponent alpha of n_t = ceil(n_s t^alpha)",
    "tilt": "curation strength beta of the tilt exp(-beta ||x - mu_0||^2 / 2)",
}


def _describe(ds: xr.Dataset) -> xr.Dataset:
    """``long_name`` on every variable and coordinate: madjax's table, then this module's names, with
    ``_se`` (standard error over chains) and ``_theory`` (closed form) variants."""
    ds = describe(ds)
    for name in ds.variables:
        if ds[name].attrs.get("long_name"):
            continue
        base, suffix = str(name), ""
        for end in ("_se", "_theory"):
            if base.endswith(end):
                base, suffix = base[: -len(end)], end
        text = _LONG_NAMES.get(base, base)
        if suffix == "_se":
            text = f"standard error over chains of: {text}"
        elif suffix == "_theory":
            text = f"closed form (madjax.theory) of: {text}"
        ds[name].attrs["long_name"] = text
    return ds


# ----------------------------------------------------------------------------- dry run


def dry_run(cfg: OperatorConfig) -> str:
    """Validate every run's request (sizes, operators, memory and time bounds) without running: runs,
    compilations and chain-generations."""
    from madjax.simulate import check_resources, make_config

    specs, work = set(), 0
    for _, kwargs in _runs(cfg):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        config = make_config(generations=cfg.generations, chains=cfg.chains, **kwargs)
        check_resources(config)
        specs.add(config.spec())
        work += cfg.chains * cfg.generations
    runs = len(_runs(cfg))
    return (f"{runs} runs of {cfg.chains} chains × {cfg.generations} generations at d = {cfg.dim} "
            f"({len(specs)} compiled loops, {work:.3g} chain-generations)")


# ----------------------------------------------------------------------------- plots


def _line(ax, x, mean, se, colour, label, exact=None, theory_label=None) -> None:
    ax.plot(x, mean, color=colour, lw=1.2, label=label)
    ax.fill_between(x, mean - 2 * se, mean + 2 * se, color=colour, alpha=0.25, lw=0)
    if exact is not None and np.isfinite(exact).any():
        ax.plot(x, exact, "k--", lw=0.9, label=theory_label)


def _load(out: str, fig_id: str) -> tuple[xr.Dataset, OperatorConfig]:
    ds = open_checked(os.path.join(out, f"{fig_id}.nc"), "from")
    try:
        raw = json.loads(ds.attrs["config"])
        fields = {f.name: raw[f.name] for f in dataclasses.fields(OperatorConfig)}
    except (KeyError, TypeError, ValueError) as err:
        raise ParameterError("from", f"the saved data carries no {fig_id} configuration ({err})") from None
    fields["values"] = tuple(fields["values"])
    return ds, OperatorConfig(**fields)


def plot(out: str, fig_id: str) -> list:
    import matplotlib.pyplot as plt

    ds, cfg = _load(out, fig_id)
    drawer = {"replace-vs-accumulate": _plot_rva, "golden-ratio-weighting": _plot_golden,
              "growing-sample-sizes": _plot_growth, "curation-tilt": _plot_tilt}[fig_id]
    fig, headline, notes = drawer(plt, ds, cfg)
    z = json.loads(ds.attrs.get("max_abs_z", "{}")).get("max_abs_z")
    if z is not None:
        notes = notes + (f"largest |z| of the Monte-Carlo against the closed forms: {z:.2f}",)
    text = " · ".join([f"{cfg.preset} preset", f"d = {cfg.dim}", f"{cfg.chains} chains per run",
                       f"the law of {_PAPERS[fig_id]}"]) + "".join(f". {n}" for n in notes)
    finish(fig, headline, text)
    return save(fig, out, fig_id)


def _plot_rva(plt, ds, cfg):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), layout="constrained")
    t = ds.generation.values
    titles = {"known-cov": "known covariance (only μ fitted)", "unbiased": "refitted covariance (unbiased)"}
    for ax, est in zip(axes, ds.estimator.values):
        for j, loop in enumerate(ds.loop.values):
            sub = ds.sel(estimator=est, loop=loop)
            _line(ax, t, sub.mean_sq_ratio.values, sub.mean_sq_ratio_se.values, f"C{j}", str(loop),
                  sub.mean_sq_ratio_theory.values, "theory" if j == 0 else None)
        if est == "known-cov":
            ax.axhline(float(ds.limit), color="0.4", ls=":", lw=0.9, label=r"$\pi^2/6$")
        ax.set_xlabel(symbol("generation"))
        ax.set_ylabel(r"E $\|\mu_t - \mu_0\|^2\,/\,m_1$")
        ax.set_yscale("log")  # t against a bounded curve: both stay readable
        ax.set_title(f"{titles.get(str(est), str(est))}, {symbol('n_real')} = {symbol('n_syn')} = {cfg.n}",
                     fontsize=9)
        ax.legend(fontsize=7)
    headline = "Replace grows like t; accumulating every sample keeps the error bounded (→ π²/6 with known Σ)"
    notes = (r"$m_1$ = tr $\Sigma_0$ / $n_{\mathrm{ini}}$; dashed black: closed forms of madjax.theory "
             "(accumulate-subsample has none)",
             band_label(cfg.chains))
    return fig, headline, notes


def _plot_golden(plt, ds, cfg):
    panels = ds.n_syn.values
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.3), layout="constrained", squeeze=False)
    unit = cfg.dim / cfg.n  # tr Σ₀ / n_r: the error of a fit to the real data alone
    w = ds.w.values
    grid = np.linspace(min(w) * 0.8, 1.0, 300)
    for ax, n_syn in zip(axes[0], panels):
        sub = ds.sel(n_syn=n_syn)
        m, se = sub.window_mean_sq.values / unit, sub.window_mean_sq_se.values / unit
        ax.errorbar(w, m, yerr=2 * se, fmt="o", ms=3.5, color="C0", capsize=2, label="Monte-Carlo ± 2 se")
        ax.plot(grid, np.asarray(theory.weighted_variance(grid, n_real=cfg.n, n_syn=int(n_syn),
                                                          trace0=float(cfg.dim))) / unit,
                "k--", lw=0.9, label="theory V(w)")
        w_star = float(sub.optimal_weight)
        ax.axvline(w_star, color="C3", ls="-", lw=0.9, label=f"optimum $w^*$ = {w_star:.3f}")
        pooled = cfg.n / (cfg.n + int(n_syn))
        ax.axvline(pooled, color="0.5", ls=":", lw=0.9, label=f"unweighted pooling, $w$ = {pooled:.2f}")
        ax.set_xlabel(f"real weight {_W}")
        ax.set_ylabel(r"stationary E $\|\mu_t - \mu_0\|^2$ / (tr $\Sigma_0 / n_r$)")
        ax.set_title(f"{symbol('n_real')} = {cfg.n}, {symbol('n_syn')} = {int(n_syn)}, known covariance",
                     fontsize=9)
        ax.legend(fontsize=7)
    headline = "Weighting real data by w: the stationary error is smallest at w* = (√5 − 1)/2 when n_r = n_s"
    burn = cfg.generations - cfg.window
    notes = (f"each point: per-chain mean of ‖μ_t − μ₀‖² over generations {burn + 1}–{cfg.generations}",
             band_label(cfg.chains, "error bars"))
    return fig, headline, notes


def _plot_growth(plt, ds, cfg):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), layout="constrained")
    t = ds.generation.values
    for ax, name, ylabel in ((axes[0], "mean_sq_norm", r"E $\|\mu_t - \mu_0\|^2$"),
                             (axes[1], "cov_logdet", r"E log det $\Sigma_t$")):
        for i, alpha in enumerate(ds.growth.values):
            sub = ds.sel(growth=alpha)
            _line(ax, t, sub[name].values, sub[f"{name}_se"].values, f"C{i}", setting(_ALPHA, float(alpha)),
                  sub[f"{name}_theory"].values, "theory" if i == 0 else None)
        ax.set_xlabel(symbol("generation"))
        ax.set_ylabel(ylabel)
        ax.set_title(f"replace, $n_t$ = ⌈{symbol('n_syn')} $t^\\alpha$⌉, {symbol('n_ini')} = {symbol('n_syn')} = "
                     f"{cfg.n}", fontsize=9)
        ax.legend(fontsize=7)
    headline = "Growing synthetic samples n_t ∝ t^α: the error stays bounded iff Σ 1/n_t < ∞ (α > 1)"
    notes = ("Dashed black: madjax.theory.replace_moments and replace_logdet with the same sizes",
             band_label(cfg.chains))
    return fig, headline, notes


def _plot_tilt(plt, ds, cfg):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3), layout="constrained")
    t = ds.generation.values
    panels = ((axes[0], "cov_trace", r"E tr $\Sigma_t$", "n → ∞ limit"),
              (axes[1], "cov_logdet", r"E log det $\Sigma_t$", "n → ∞ limit"),
              (axes[2], "mean_sq_norm_known_cov", r"E $\|\mu_t - \mu_0\|^2$", "theory"))
    for ax, name, ylabel, theory_label in panels:
        for i, beta in enumerate(ds.tilt.values):
            sub = ds.sel(tilt=beta)
            _line(ax, t, sub[name].values, sub[f"{name}_se"].values, f"C{i}", setting(_BETA, float(beta)),
                  sub[f"{name}_theory"].values, theory_label if i == 0 else None)
        ax.set_xlabel(symbol("generation"))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")  # β = 0 grows like t, β > 0 levels off far below
    big = f"{symbol('n_ini')} = {symbol('n_syn')} = {_power_of_ten(cfg.n_large)}, refitted covariance"
    axes[0].set_title(big, fontsize=9)
    axes[1].set_title(big, fontsize=9)
    axes[2].set_title(f"{symbol('n_ini')} = {symbol('n_syn')} = {cfg.n}, known covariance", fontsize=9)
    headline = "Curated replace loop: the model concentrates on the reward's maximiser (1/σ²_t grows by β)"
    notes = ("Dashed black: madjax.theory.tilted_limit (first two panels, n → ∞) and "
             "tilted_known_cov_mean_sq (exact, third)", band_label(cfg.chains))
    return fig, headline, notes


def _power_of_ten(n: int) -> str:
    """``$10^{6}$`` for 1 000 000; other numbers as they are."""
    k = round(math.log10(n)) if n > 0 else 0
    return f"$10^{{{k}}}$" if n == 10**k else f"{n:,}"


def _figure(fig_id: str) -> Figure:
    return Figure(fig_id, lambda preset: get_config(fig_id, preset), run, dry_run, lambda out: plot(out, fig_id))


FIGURES = {f: _figure(f) for f in FIGURE_IDS}
