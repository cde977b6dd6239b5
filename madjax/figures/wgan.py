"""Figure 13: a WGAN-GP in the unbiased fully synthetic loop.

Paper (App. C.2, Fig. 13): WGAN-GPs (Gulrajani et al., 2017) trained on MNIST
in a fully synthetic loop for 100 generations; the FID rises monotonically
while precision (quality) and recall (diversity) fall. The paper's loop is
unbiased: λ = 1 (latents z ~ N(0, I)).

Presets (network and schedule: ``WGAN_CONFIGS[preset]`` of
:mod:`madjax.deep.wgan`):

* ``paper`` -- MNIST, n_ini = n_syn = 60k, 100 generations, 10k evaluation
  samples against the 10k test images (GPU; ``--dry-run`` here);
* ``quick`` -- the bundled 8×8 digits, n = 1000, a small WGAN-GP warm-started
  every generation, T = 40 generations (9 minutes on a 2-core CPU;
  README);
* ``smoke`` -- tiny networks, n = 96, 2 generations.

Data under ``DIR``: the run in ``DIR/wgan-fully-synthetic/lam_1/``
(:mod:`madjax.figures.image_loops`), ``DIR/fig13.csv`` and
``DIR/fig13.png`` / ``.pdf`` (LeNet-FID / precision / recall vs t and sample
grids of a few generations) drawn from it only. LeNet-FID is the Fréchet
distance in the features of madjax's own LeNet, not Inception FID.
``madjax reproduce fig13 --data fashion-mnist`` runs a preset on other
images (:func:`madjax.figures.image_loops.with_data`); the quick WGAN-GP
runs there as it is, ≈ 3.4 minutes per 28×28 generation on a 2-core CPU
(:data:`madjax.deep.runner.QUICK_28`).
"""

from __future__ import annotations

import dataclasses

from madjax.deep.loop import DeepLoop
from madjax.figures import PRESETS, Figure
from madjax.figures import image_loops as IL
from madjax.figures.style import setting
from madjax.validation import ParameterError, check_choice

NAME = "fig13"
FAMILY = "wgan-fully-synthetic"

# data, n (= n_ini = n_syn), n_eval (None: the whole test split), λ, generations T.
GRID = {
    "paper": dict(data="mnist", n=60_000, n_eval=10_000, lam=1.0, generations=100),
    "quick": dict(data="digits", n=1000, n_eval=None, lam=1.0, generations=40),
    "smoke": dict(data="digits", n=96, n_eval=48, lam=1.0, generations=2),
}


def get_config(preset: str) -> IL.ImageLoopConfig:
    """The configuration of Figure 13 at ``preset`` (:data:`GRID`)."""
    from madjax.deep.wgan import WGAN_CONFIGS

    check_choice("preset", preset, PRESETS)
    g = GRID[preset]
    model = dataclasses.replace(WGAN_CONFIGS[preset], image_shape=IL.DATA_SHAPES[g["data"]])
    loop = DeepLoop("fully-synthetic", n_ini=g["n"], n_real=0, n_syn=g["n"])
    return IL.ImageLoopConfig(figure=NAME, preset=preset, model="wgan", model_config=model, data=g["data"],
                              generations=g["generations"], runs=(IL.LoopRun(FAMILY, f"lam_{g['lam']:g}", g["lam"], loop),),
                              n_eval=g["n_eval"])


def run(config: IL.ImageLoopConfig, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
    """Run (or resume) the loop and write ``DIR/fig13.csv``."""
    IL.run_figure(config, out_dir, seed=seed, progress=progress)


def plot(out_dir: str) -> list[str]:
    """Redraw ``DIR/fig13.png`` / ``.pdf`` from the saved run."""
    runs = IL.saved_runs(out_dir, FAMILY)
    if not runs:
        raise ParameterError("from", f"no {NAME} data under {out_dir!r}")

    def spread(run):  # four generations spread over the run, always the first and the last
        last = run["rows"][-1]["generation"]
        return sorted({1, max(1, round(last / 3)), max(1, round(2 * last / 3)), last})

    lam = setting("lam", runs[0]["lam"])
    title = f"WGAN-GP in the fully synthetic loop ({lam}): LeNet-FID, precision and recall vs generation $t$"
    return IL.metrics_and_samples_figure(out_dir, NAME, title, runs, label=lambda r: setting("lam", r["lam"]),
                                         paper="Fig. 13 (MNIST, fully synthetic, $n_{\\mathrm{ini}}$ = $n_s$ = 60k, "
                                               "$\\lambda$ = 1, 100 generations)",
                                         baseline_metrics=IL.baseline(out_dir, FAMILY), sample_generations=spread)


FIGURES = {NAME: Figure(NAME, get_config, run, IL.dry_run, plot, IL.with_data)}
