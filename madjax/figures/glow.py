"""Figure 15: a GLOW flow in the fully synthetic loop on 2-D Rosenbrock.

Paper (App. "normalizing flows", Fig. 15): 10⁴ Rosenbrock samples train G¹;
each later generation trains on 10⁴ samples of its predecessor, for 16
generations, with and without sampling bias (latents N(0, λI)); GLOW with 8
couplings, hidden width 64, 20 epochs of batch 256 per generation. Claim:
either way the flow loses the target's tails (diversity) and λ < 1 loses them
faster.

The paper does not say which λ < 1 it used. We run λ ∈ {1, 0.9, 0.8}: with
the flow's latent shrunk by λ at every draw, the x₁-marginal's variance
contracts roughly like λ^t, so λ = 0.9 spreads the collapse over the 16
generations (0.9¹⁶ ≈ 0.19) while λ = 0.8 shows it within a few
(0.8¹⁶ ≈ 0.03). All λ share the seed, hence the same G¹ (fitting does not
depend on λ): common random numbers.

Presets (the same GLOW presets as ``madjax train``, :mod:`madjax.deep.runner`):

* ``paper`` -- the paper's setting above, all 16 generations (runs on a 2-core
  CPU; measured wall time in the README);
* ``quick`` -- same architecture and schedule, n = 4000, 8 generations;
* ``smoke`` -- 2 couplings, hidden 16, 2 epochs, n = 512, 3 generations,
  λ ∈ {1, 0.8}.

Data layout under ``DIR``: one resumable loop per λ in ``DIR/fig15/lam_<λ>/``
(``metrics.csv``, ``samples/gen_<t>.npz``, ``checkpoints/``), a combined
``DIR/fig15.csv`` (columns ``lam, generation, <metrics>``), and
``DIR/fig15.png`` / ``.pdf`` drawn from those files only.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
import time

import jax
import numpy as np

from madjax.data import ROSENBROCK_TAIL_MASS, ROSENBROCK_VAR, get_source, rosenbrock_log_density
from madjax.deep.evaluate import PointEval
from madjax.deep.glow import GlowConfig, glow
from madjax.deep.loop import check_resumable, read_metrics, run_loop
from madjax.io import read_json, read_npz, write_json
from madjax.deep.runner import GLOW_PRESETS, glow_evaluate, loop_sizes
from madjax.figures import PRESETS, Figure
from madjax.figures.style import caption, finish, save, setting
from madjax.validation import ParameterError, check_choice, check_int, check_lam, check_seed
from madjax.walltime import calibrate, estimate

NAME = "fig15"
# Entropy of the Rosenbrock law, −E log p = ½log(2π) + ½ + ½log π + ½ nats
# (x₁ ~ N(0,1) contributes ½log(2πe), x₂|x₁ ~ N(·, ½) contributes ½log(πe)):
# the floor of the ``nll`` curve.
ROSENBROCK_ENTROPY = 0.5 * np.log(2 * np.pi * np.e) + 0.5 * np.log(np.pi * np.e)


@dataclasses.dataclass(frozen=True)
class Fig15Config:
    """Configuration of Figure 15 (see the module docstring for the presets).

    Attributes:
      preset: the preset's name (recorded with the data).
      lams: sampling biases λ ∈ (0, 1], one loop each.
      generations: T.
      n: training-set size of every generation (n_ini = n_syn), evaluation
        samples per generation and real reference samples.
      glow: architecture and schedule.
      evaluation: subsample sizes of the metrics.
    """

    preset: str
    lams: tuple
    generations: int
    n: int
    glow: GlowConfig
    evaluation: PointEval

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        if not self.lams:
            raise ParameterError("lams", "must hold at least one λ")
        for lam in self.lams:
            check_lam(lam, "lams")
        if len(set(self.lams)) != len(self.lams):
            raise ParameterError("lams", f"must be distinct, got {self.lams}")
        check_int("generations", self.generations, minimum=1)
        check_int("n", self.n, minimum=2)

    def record(self, lam: float, seed: int) -> dict:
        """The JSON configuration of the λ loop (written to its ``config.json``)."""
        return {"figure": NAME, "preset": self.preset, "lam": lam, "seed": seed, "generations": self.generations, "n": self.n,
                "loop": "fully-synthetic", "glow": dataclasses.asdict(self.glow),
                "evaluation": dataclasses.asdict(self.evaluation)}


def get_config(preset: str) -> Fig15Config:
    """The ``paper`` configuration, or its ``quick`` / ``smoke`` overlay."""
    check_choice("preset", preset, PRESETS)
    spec = GLOW_PRESETS[preset]
    generations = {"paper": 16, "quick": 8, "smoke": 3}[preset]
    lams = (1.0, 0.8) if preset == "smoke" else (1.0, 0.9, 0.8)
    return Fig15Config(preset=preset, lams=lams, generations=generations, n=spec.n, glow=spec.glow,
                       evaluation=spec.evaluation)


def _lam_dir(out_dir: str, lam: float) -> str:
    return os.path.join(out_dir, NAME, f"lam_{lam:g}")


def run(config: Fig15Config, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
    """Run (or resume) the fully synthetic loop for every λ and write ``DIR/fig15.csv``."""
    seed = check_seed(seed)
    for lam in config.lams:  # validate every λ's directory before the first starts
        check_resumable(_lam_dir(out_dir, lam), config.record(lam, seed))
    source = get_source("rosenbrock")
    loop = loop_sizes("fully-synthetic", config.n)
    evaluate = glow_evaluate(config.glow, config.evaluation)
    model = glow(config.glow, progress=progress)
    timings = {}
    for lam in config.lams:
        start = time.perf_counter()
        run_loop(model, source, loop, lam=lam, generations=config.generations, seed=seed,
                 out=_lam_dir(out_dir, lam), evaluate=evaluate, n_eval=config.n, n_ref=config.n,
                 record=config.record(lam, seed), progress=progress, label=f"{NAME} λ={lam:g}")
        timings[f"{lam:g}"] = time.perf_counter() - start
    target = source.sample(jax.random.PRNGKey(seed), config.n)
    np.savez(os.path.join(out_dir, NAME, "target.npz"), x=np.asarray(target, np.float32))
    write_json(os.path.join(out_dir, NAME, "timings.json"),
               {"seconds_per_lam": timings, "note": "this call only (a resumed run times the remainder)"})
    _write_combined(out_dir)


def _runs(out_dir: str) -> list[tuple[float, str]]:
    """(λ, directory) of the saved loops, largest λ first."""
    runs = []
    for path in glob.glob(os.path.join(out_dir, NAME, "lam_*")):
        runs.append((float(read_json(os.path.join(path, "config.json"), "from")["lam"]), path))
    return sorted(runs, reverse=True)


def _write_combined(out_dir: str) -> str:
    rows = [{"lam": lam, **row} for lam, path in _runs(out_dir) for row in read_metrics(path)]
    path = os.path.join(out_dir, f"{NAME}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def dry_run(config: Fig15Config) -> str:
    """Validate, report shapes and memory, and compile and time one training step: the wall time
    estimated on this machine from the Adam steps (:mod:`madjax.walltime`; evaluation not included)."""
    model = glow(dataclasses.replace(config.glow, epochs=1), progress=False)
    params = model.init(jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params.params))
    batch = min(config.glow.batch_size, config.n)
    x = get_source("rosenbrock").sample(jax.random.PRNGKey(1), batch)
    cal = calibrate(lambda: model.fit(jax.random.PRNGKey(2), params, x), 1)
    # Parameters + Adam's two moments, the data and one sample set, float32.
    memory_mb = (3 * n_params + 4 * config.n * 2) * 4 / 2**20
    steps = config.n // batch * config.glow.epochs
    return (f"λ ∈ {config.lams}, T = {config.generations}, training set ({config.n}, 2), "
            f"{config.glow.couplings} couplings × hidden {config.glow.hidden} = {n_params} parameters, "
            f"{steps} Adam steps of batch {batch} per generation, "
            f"{len(config.lams) * config.generations} generations in all; "
            f"≈ {memory_mb:.1f} MiB of arrays; one step compiled and run; "
            f"{estimate(steps * len(config.lams) * config.generations, 1, cal, unit='steps')}")


def plot(out_dir: str) -> list[str]:
    """Redraw ``DIR/fig15.png`` and ``DIR/fig15.pdf`` from the saved loops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(out_dir)
    if not runs:
        raise ParameterError("from", f"no {NAME} data under {out_dir!r}")
    metrics = {lam: read_metrics(path) for lam, path in runs}
    samples = {lam: _saved_samples(path) for lam, path in runs}
    # The paper's panels: a few generations spread over the run, always the last.
    saved = sorted({t for s in samples.values() for t in s})
    show = [t for t in saved if t in (1, 2, 4, 8, 12, 16) or t == saved[-1]]
    target_path = os.path.join(out_dir, NAME, "target.npz")
    target = read_npz(target_path, "from")["x"] if os.path.exists(target_path) else None

    n_cols = len(show) + 1
    fig = plt.figure(figsize=(max(2.0 * n_cols, 10.0), 2.0 * len(runs) + 3.2), layout="constrained")
    grid = fig.add_gridspec(len(runs) + 1, 1, height_ratios=[2.0] * len(runs) + [2.6])
    xx, yy = np.meshgrid(np.linspace(-3.5, 3.5, 200), np.linspace(-1.5, 10, 200))
    density = np.exp(np.asarray(rosenbrock_log_density(np.stack([xx, yy], -1))))
    for row, (lam, _) in enumerate(runs):
        cells = grid[row].subgridspec(1, n_cols, wspace=0.05)
        panels = [("target", target)] + [(f"$t$ = {t}", samples[lam].get(t)) for t in show]
        for col, (title, x) in enumerate(panels):
            ax = fig.add_subplot(cells[col])
            ax.contour(xx, yy, density, levels=[1e-3, 1e-2, 1e-1], colors="0.7", linewidths=0.6)
            if x is not None:
                ok = np.all(np.isfinite(x), axis=1)
                ax.scatter(x[ok, 0], x[ok, 1], s=0.5, alpha=0.25, lw=0, color="k" if col == 0 else f"C{row}")
            ax.set(xlim=(-3.5, 3.5), ylim=(-1.5, 10), xticks=[], yticks=[])
            ax.set_box_aspect(1.0)  # square at every preset: few panels must not stretch to the figure's width
            ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(setting("lam", lam), fontsize=9)
    curves = grid[len(runs)].subgridspec(1, 5, wspace=0.4)
    specs = [
        ("W2 to target", [("w2", "-", "exact"), ("sinkhorn_w2", "--", "Sinkhorn")], None),
        ("precision / recall", [("precision", "-", "precision"), ("recall", "--", "recall")], None),
        (r"tail mass $P(|x_1| > 2)$", [("tail_mass", "-", None)], ROSENBROCK_TAIL_MASS),
        (r"Var $x_2$", [("var_x2", "-", None)], ROSENBROCK_VAR[1]),
        ("NLL of target samples", [("nll", "-", None)], ROSENBROCK_ENTROPY),
    ]
    for col, (title, lines, reference) in enumerate(specs):
        ax = fig.add_subplot(curves[col])
        for row, (lam, _) in enumerate(runs):
            gens = [r["generation"] for r in metrics[lam]]
            for key, style, label in lines:
                if key in (metrics[lam][0] if metrics[lam] else {}):
                    name = setting("lam", lam) + (f" {label}" if label and len(lines) > 1 else "")
                    ax.plot(gens, [r[key] for r in metrics[lam]], style, color=f"C{row}", lw=1.2, label=name)
        if reference is not None:
            ax.axhline(reference, color="0.4", lw=0.8, ls=":", label="target")
        if lines[0][0] == "nll":
            ax.set_yscale("log")  # a collapsing flow's cross-entropy grows by orders of magnitude
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("generation $t$", fontsize=8)
        ax.tick_params(labelsize=7)
        if col in (0, 1, 2):
            ax.legend(fontsize=6)
    saved = read_json(os.path.join(runs[0][1], "config.json"), "from")
    text = caption(saved.get("preset"), dim=2, chains=1, per=r"$\lambda$", notes=[
        f"{setting('n_ini', saved['n'])} = $n_s$ points per generation, T = {saved['generations']}; "
        "grey contours: the target density"],
        paper="Fig. 15 (GLOW, 8 couplings, hidden 64, 10⁴ Rosenbrock points, 16 generations)")
    finish(fig, r"GLOW in the fully synthetic loop on 2-D Rosenbrock: samples of $\mathcal{G}^t$ and "
                r"diagnostics vs generation $t$, one row per $\lambda$", text)
    return save(fig, out_dir, NAME)


def _saved_samples(path: str) -> dict[int, np.ndarray]:
    out = {}
    for file in glob.glob(os.path.join(path, "samples", "gen_*.npz")):
        stem = os.path.basename(file)[len("gen_"):-len(".npz")]
        if stem.isdigit():
            out[int(stem)] = read_npz(file, "from")["x"]
    return out


FIGURES = {NAME: Figure(NAME, get_config, run, dry_run, plot)}
