"""Figures 4, 8, 9 (right), 14, 28 and 29: a conditional DDPM in self-consuming loops.

The paper (App. A; §3–5, App. C.3, H.1) trains a conditional MNIST DDPM with
T = 500 diffusion steps and classifier-free guidance (10 % label dropout),
sampling bias λ = 1/(1 + w), and scores each generation's synthetic images
by FID, precision and recall on LeNet features (here: LeNet-FID, the Fréchet
distance in the features of madjax's own LeNet -- not Inception FID):

* **Fig. 4 / Fig. 14** -- fully synthetic loop, n_r¹ = n_s^t = 60k, λ = 1 and
  λ < 1 (Fig. 14: more generations and more λ). Claim: λ = 1 -- FID up,
  precision and recall down; λ < 1 -- precision held (or raised) at the cost
  of a fast loss of recall, FID still up.
* **Fig. 8** -- synthetic augmentation loop: the 60k real images at every
  generation plus 60k samples of G^{t−1}, several λ. Claim: the same trends,
  less pronounced.
* **Fig. 28** -- the same with accumulation: every previous generation's
  samples, n_s^t = (t − 1)·60k. **Fig. 29** -- FID of Fig. 8's runs against
  Fig. 28's: accumulation slows the degradation.
* **Fig. 9 (right)** -- fresh data loop, n_r = n_s = 2000 per generation, for
  several n_ini: the FID converges to the same level whatever n_ini.

Figures that draw the same loops share their runs (``DIR/<family>/<tag>/``,
:mod:`madjax.figures.image_loops`): 4 and 14 share
``DIR/ddpm-fully-synthetic/lam_<λ>/``, 29 draws 8's
``DIR/ddpm-synthetic-augmentation/lam_<λ>/`` and 28's
``DIR/ddpm-synthetic-augmentation-accumulate/lam_<λ>/``, and 9-ddpm lives in
``DIR/ddpm-fresh/n_ini_<n>/``. Each figure writes ``DIR/<fig>.csv`` (columns
``loop, accumulate, lam, n_ini, generation, fid, precision, recall,
n_nonfinite``; ``fid`` is LeNet-FID) and draws ``DIR/<fig>.png`` / ``.pdf``
from the saved runs only.

**Grids** (:data:`GRIDS`, one entry per figure; the paper does not list its
λ values beyond λ = 1, 0.8 and the "λ = 0.7 and 0.5" of §3, nor Fig. 9's
n_ini). λ runs from 1 down to 0.5 -- w = 0, 0.43, 1 for λ = 1, 0.7, 0.5 --
covering unbiased sampling, moderate and strong guidance. Fig. 4 shows the
two ends (λ = 1 and the smallest λ), Fig. 14 all of them and, in the paper
preset, more generations; Fig. 4's runs are a subset of Fig. 14's, so
reproducing both trains each run once.

**Presets** (sizes in :data:`SIZES`; the network and schedule are
``DDPM_CONFIGS[preset]`` of :mod:`madjax.deep.ddpm`):

* ``paper`` -- MNIST (``$MADJAX_DATA``), n = 60k per generation as in the
  paper, 10k evaluation samples against the 10k test images; Fig. 9-ddpm
  with n_r = n_s = 2000. GPU-scale: checked here with ``--dry-run``.
* ``quick`` -- the bundled 8×8 digits (1 501 training images, 296 test
  images as the reference), the quick DDPM of ``madjax train`` (T = 100
  diffusion steps, minibatch 32, every generation trained from scratch:
  :data:`madjax.deep.runner.DDPM_LOOP_CHANGES`); n = 1000 in the fully
  synthetic loop, D_r = n_s = 500 in the synthetic-augmentation loops,
  n_r = n_s = 250 in the fresh loop. Measured on this project's 2-core CPU
  while other jobs ran: Figs 4 + 14 in 12 min, Figs 8 + 28 + 29 in 20 min,
  Fig. 9-ddpm in 11 min (README: the values).
* ``smoke`` -- tiny network, 50-step chain, 2 generations: every code path
  in seconds (tests).

``madjax reproduce FIG --data fashion-mnist`` (or ``mnist``, ``digits``)
runs a preset on another image data set: the network's image size follows
the data, every size of the preset stays
(:func:`madjax.figures.image_loops.with_data`) -- except the quick preset on
28×28 images, which samples with T = 50 steps, runs the fully synthetic
loop with n = 500 and scores 500 samples against 500 test images
(:data:`madjax.deep.runner.QUICK_28`: a generation within 10 minutes on a
2-core CPU). Figures 6, 24 and 25 (:mod:`madjax.figures.ddpm_samples`) draw
the samples of Figure 4's runs.

On digits the fresh loop draws its n_r images per generation from the
1 501-image training split without replacement *within* a draw; draws of
different generations overlap (:mod:`madjax.deep.loop`).
"""

from __future__ import annotations

import dataclasses

from madjax.deep.loop import DeepLoop
from madjax.deep.runner import ddpm_preset_config
from madjax.figures import PRESETS, Figure
from madjax.figures import image_loops as IL
from madjax.figures.style import finish, save, setting
from madjax.validation import ParameterError, check_choice

FULLY = "ddpm-fully-synthetic"
AUGMENT = "ddpm-synthetic-augmentation"
ACCUMULATE = "ddpm-synthetic-augmentation-accumulate"
FRESH = "ddpm-fresh"

# Sizes per preset: data set; n = n_ini = n_syn of the fully synthetic loop;
# augment = n_real = n_syn of the synthetic-augmentation loops (D_r is G¹'s
# training set); fresh = n_r = n_s of the fresh loop; n_eval model samples per
# generation (None: the whole test split). The quick augmentation loops use
# half the fully synthetic n: their training sets hold D_r plus the synthetic
# part (and, accumulated, (t − 1)·n_s of it), which keeps Figs 8 + 28 + 29
# within the same CPU budget as Figs 4 + 14.
SIZES = {
    "paper": dict(data="mnist", n=60_000, augment=60_000, fresh=2000, n_eval=10_000),
    "quick": dict(data="digits", n=1000, augment=500, fresh=250, n_eval=None),
    "smoke": dict(data="digits", n=96, augment=96, fresh=48, n_eval=48),
}

# The grid of each figure: λ values (or n_ini values) and generations T.
GRIDS = {
    "fig4": {
        "paper": dict(lams=(1.0, 0.5), generations=10),
        "quick": dict(lams=(1.0, 0.5), generations=6),
        "smoke": dict(lams=(1.0,), generations=2),
    },
    "fig14": {
        "paper": dict(lams=(1.0, 0.9, 0.8, 0.7, 0.5), generations=20),
        "quick": dict(lams=(1.0, 0.7, 0.5), generations=6),
        "smoke": dict(lams=(1.0,), generations=2),
    },
    "fig8": {
        "paper": dict(lams=(1.0, 0.7, 0.5), generations=10),
        "quick": dict(lams=(1.0, 0.5), generations=5),
        "smoke": dict(lams=(0.5,), generations=2),
    },
    "fig28": {
        "paper": dict(lams=(1.0, 0.7, 0.5), generations=10),
        "quick": dict(lams=(1.0, 0.5), generations=5),
        "smoke": dict(lams=(0.5,), generations=2),
    },
    "fig9-ddpm": {
        # n_ini from far below n_r + n_s to the whole training split.
        "paper": dict(n_inis=(500, 4000, 60_000), lam=1.0, generations=10),
        "quick": dict(n_inis=(60, 500, 1500), lam=1.0, generations=8),
        # smoke: training sets of 96 or 192 images only (each new size compiles the training step again)
        "smoke": dict(n_inis=(96, 192), lam=1.0, generations=2),
    },
}
GRIDS["fig29"] = GRIDS["fig28"]  # Fig. 29 compares the runs of Figs 8 and 28


def _tag_lam(lam: float) -> str:
    return f"lam_{lam:g}"


def _model_config(preset: str, data: str):
    # The presets of ``madjax train ddpm`` (DDPM_CONFIGS with the loop changes of the runner).
    return dataclasses.replace(ddpm_preset_config(preset), image_shape=IL.DATA_SHAPES[data], num_classes=10)


def _runs(fig: str, preset: str) -> tuple:
    sizes, grid = SIZES[preset], GRIDS[fig][preset]
    n = sizes["n"]
    if fig in ("fig4", "fig14"):
        loop = DeepLoop("fully-synthetic", n_ini=n, n_real=0, n_syn=n)
        return tuple(IL.LoopRun(FULLY, _tag_lam(lam), lam, loop) for lam in grid["lams"])
    if fig == "fig9-ddpm":
        m = sizes["fresh"]
        return tuple(IL.LoopRun(FRESH, f"n_ini_{n_ini}", grid["lam"], DeepLoop("fresh", n_ini, m, m))
                     for n_ini in grid["n_inis"])
    m = sizes["augment"]
    last = DeepLoop("synthetic-augmentation", n_ini=m, n_real=m, n_syn=m)
    pooled = dataclasses.replace(last, accumulate=True)
    runs = []
    if fig in ("fig8", "fig29"):
        runs += [IL.LoopRun(AUGMENT, _tag_lam(lam), lam, last) for lam in GRIDS["fig8"][preset]["lams"]]
    if fig in ("fig28", "fig29"):
        runs += [IL.LoopRun(ACCUMULATE, _tag_lam(lam), lam, pooled) for lam in grid["lams"]]
    return tuple(runs)


def get_config(fig: str, preset: str) -> IL.ImageLoopConfig:
    """The configuration of ``fig`` at ``preset`` (grids in :data:`GRIDS`, sizes in :data:`SIZES`)."""
    check_choice("preset", preset, PRESETS)
    check_choice("figure", fig, tuple(GRIDS))
    sizes = SIZES[preset]
    return IL.ImageLoopConfig(figure=fig, preset=preset, model="ddpm",
                              model_config=_model_config(preset, sizes["data"]), data=sizes["data"],
                              generations=GRIDS[fig][preset]["generations"], runs=_runs(fig, preset),
                              n_eval=sizes["n_eval"])


# ----------------------------------------------------------------------------- plots


def _lam_label(run) -> str:
    return setting("lam", run["lam"])


def _need(runs: list, fig: str, out_dir: str) -> list:
    if not runs:
        raise ParameterError("from", f"no {fig} data under {out_dir!r}")
    return sorted(runs, key=lambda r: (-r["lam"], r["loop"]["n_ini"]))


# Figure id -> (headline: what it shows, the paper's figure and setting the preset stands in for).
_TEXT = {
    "fig4": (r"Conditional DDPM in the fully synthetic loop: LeNet-FID, precision and recall vs $t$, "
             r"unbiased ($\lambda$ = 1) and biased sampling",
             r"Fig. 4 (MNIST, fully synthetic, $n_{\mathrm{ini}}$ = $n_s$ = 60k, T = 500 diffusion steps)"),
    "fig14": (r"Conditional DDPM in the fully synthetic loop for several $\lambda$: LeNet-FID, precision and "
              r"recall vs $t$",
              r"Fig. 14 (MNIST, fully synthetic, $n_{\mathrm{ini}}$ = $n_s$ = 60k, more generations and $\lambda$)"),
    "fig8": (r"Conditional DDPM in the synthetic augmentation loop (real data plus samples of $\mathcal{G}^{t-1}$)",
             "Fig. 8 (MNIST, 60k real + 60k synthetic per generation)"),
    "fig28": (r"Conditional DDPM in the synthetic augmentation loop with accumulation (samples of every "
              r"earlier generation)", "Fig. 28 (MNIST, 60k real + (t − 1)·60k synthetic)"),
    "fig29": ("Synthetic augmentation: samples of the last generation only vs of all earlier generations",
              "Fig. 29 (the runs of Figs 8 and 28, MNIST)"),
    "fig9-ddpm": (r"Conditional DDPM in the fresh data loop: LeNet-FID, precision and recall vs $t$ for several "
                  r"$n_{\mathrm{ini}}$", "Fig. 9, right (MNIST, $n_r$ = $n_s$ = 2000)"),
}


def _plot_lams(fig: str, family: str, *, ends_only: bool = False):
    def plot(out_dir: str) -> list[str]:
        runs = _need(IL.saved_runs(out_dir, family), fig, out_dir)
        if ends_only:  # λ = 1 and the strongest bias, as in the paper's Fig. 4
            keep = {max(r["lam"] for r in runs), min(r["lam"] for r in runs)}
            runs = [r for r in runs if r["lam"] in keep]
        title, paper = _TEXT[fig]
        return IL.metrics_and_samples_figure(out_dir, fig, title, runs, label=_lam_label, paper=paper,
                                             baseline_metrics=IL.baseline(out_dir, family))

    return plot


def _plot_fig29(out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = _need(IL.saved_runs(out_dir, AUGMENT), "fig29", out_dir)
    pooled = _need(IL.saved_runs(out_dir, ACCUMULATE), "fig29", out_dir)
    lams = sorted({r["lam"] for r in last + pooled}, reverse=True)
    color = {lam: f"C{i}" for i, lam in enumerate(lams)}
    series = [(f"{_lam_label(r)}, last generation", r["rows"], "-o", color[r["lam"]]) for r in last]
    series += [(f"{_lam_label(r)}, all generations", r["rows"], "--s", color[r["lam"]]) for r in pooled]
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.4), constrained_layout=True)
    IL.plot_curves(axes, series, baseline_metrics=IL.baseline(out_dir, AUGMENT))
    title, paper = _TEXT["fig29"]
    finish(fig, title, IL.caption_for(last + pooled, paper))
    return save(fig, out_dir, "fig29")


def _plot_fig9(out_dir: str) -> list[str]:
    runs = _need(IL.saved_runs(out_dir, FRESH), "fig9-ddpm", out_dir)

    def last_only(run):
        return [run["rows"][-1]["generation"]]

    title, paper = _TEXT["fig9-ddpm"]
    return IL.metrics_and_samples_figure(out_dir, "fig9-ddpm", f"{title} ({_lam_label(runs[0])})", runs,
                                         label=lambda r: setting("n_ini", r["loop"]["n_ini"]), paper=paper,
                                         baseline_metrics=IL.baseline(out_dir, FRESH),
                                         sample_generations=last_only)


_PLOTS = {
    "fig4": _plot_lams("fig4", FULLY, ends_only=True),
    "fig14": _plot_lams("fig14", FULLY),
    "fig8": _plot_lams("fig8", AUGMENT),
    "fig28": _plot_lams("fig28", ACCUMULATE),
    "fig29": _plot_fig29,
    "fig9-ddpm": _plot_fig9,
}


def _figure(fig: str) -> Figure:
    def run(config, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
        IL.run_figure(config, out_dir, seed=seed, progress=progress)

    return Figure(fig, lambda preset: get_config(fig, preset), run, IL.dry_run, _PLOTS[fig], IL.with_data)


FIGURES = {fig: _figure(fig) for fig in ("fig4", "fig14", "fig8", "fig28", "fig29", "fig9-ddpm")}
