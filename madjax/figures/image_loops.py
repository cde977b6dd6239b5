"""Shared machinery of the image-loop figures (DDPM: 4, 8, 9 right, 14, 28, 29; WGAN-GP: 13).

A figure is a set of **runs** -- one chain of one loop at one λ (or one n_ini)
through :func:`madjax.deep.loop.run_loop` -- grouped in **families** that
figures share: Figures 4 and 14 draw the same fully synthetic runs, Figure 29
draws the runs of Figures 8 and 28. A run lives in ``DIR/<family>/<tag>/``
(``tag`` = ``lam_<λ>`` or ``n_ini_<n>``) with its ``config.json``,
``metrics.csv``, ``samples/gen_<t>.npz`` (``x``, and ``y`` for the
conditional DDPM) and ``checkpoints/``, so

* reproducing a second figure of a family reuses the finished runs (the run
  configuration holds no figure name; a figure asking for more generations
  than a saved run has continues it);
* a killed figure resumes generation by generation.

Each family also stores ``real_baseline.json``: the metrics of ``n_eval``
real *training* images against the same test-split reference -- the floor a
perfect model would reach (LeNet-FID > 0 and precision/recall < 1 from finite
samples alone), drawn as a dotted line in the plots.

Metrics (:func:`madjax.deep.runner.image_evaluation`): LeNet-FID, precision
and recall (k = 5) on the penultimate-layer features of a LeNet trained on
the same data's training split, against its held-out test split (296
digits, or the 10 000 MNIST / Fashion-MNIST test images). LeNet-FID is the
Fréchet distance in those 84 features, not Inception FID: its values are not
comparable with published FIDs.

Data: each preset names its own (digits for smoke and quick, MNIST for
paper); :func:`with_data` (``madjax reproduce --data``) puts a figure on
another image data set -- ``fashion-mnist`` for real 28×28 images -- with
the model's image size changed to match and every size of the preset kept.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from madjax.data import IDX_NAMES, IMAGE_NAMES, MNIST_SHAPE, Images, get_source, load_images
from madjax.deep.loop import DeepLoop, check_resumable, read_metrics, run_loop
from madjax.figures.samples import image_grid
from madjax.io import read_json, read_npz, write_json
from madjax.deep.runner import MODELS, QUICK_28, check_real_sizes, image_evaluation
from madjax.figures import PRESETS
from madjax.figures.style import caption, finish, save, setting
from madjax.validation import ParameterError, check_choice, check_int, check_lam, check_seed

# Image size of each data set, known without reading any file (dry runs).
DATA_SHAPES = {"digits": (8, 8), "mnist": MNIST_SHAPE, "fashion-mnist": MNIST_SHAPE}
DIGITS_TRAIN = 1501  # the fixed digits training split (madjax.data)
METRICS = ("fid", "precision", "recall")
# Axis titles. "fid" is the Fréchet distance in LeNet features (LeNet-FID), not Inception FID.
LABELS = {"fid": "LeNet-FID", "precision": "precision (quality)", "recall": "recall (diversity)"}


@dataclasses.dataclass(frozen=True)
class LoopRun:
    """One chain of one loop: where it lives and what it runs.

    Attributes:
      family: directory under ``DIR`` shared by the figures that draw it.
      tag: the run's directory inside the family (``lam_0.5``, ``n_ini_100``).
      lam: sampling bias λ ∈ (0, 1].
      loop: loop kind and sizes.
    """

    family: str
    tag: str
    lam: float
    loop: DeepLoop

    def __post_init__(self):
        check_lam(self.lam, "lams")
        if not isinstance(self.loop, DeepLoop):
            raise ParameterError("loop", f"must be a DeepLoop, got {type(self.loop).__name__}")

    def directory(self, out_dir: str) -> str:
        return os.path.join(out_dir, self.family, self.tag)


@dataclasses.dataclass(frozen=True)
class ImageLoopConfig:
    """Configuration of an image-loop figure (the grids live in the figure modules).

    Attributes:
      figure: the figure id.
      preset: the preset's name (recorded with each run).
      model: ``"ddpm"`` or ``"wgan"``.
      model_config: its ``DDPMConfig`` / ``WGANConfig`` (image size of ``data``).
      data: ``"digits"``, ``"mnist"`` (from ``data_dir`` or ``$MADJAX_DATA``)
        or ``"fashion-mnist"`` (from ``data_dir`` or
        ``/usr/share/datasets/fashion-mnist``).
      generations: T of every run.
      runs: the runs, in plotting order.
      n_eval: model samples scored (and saved) per generation; None: as many
        as the test split holds.
      data_dir: directory of the IDX files (None: the data set's default).
      n_ref: reference images, a class-balanced subset of the test split
        (:func:`madjax.deep.runner.reference_subset`); None: all of it.

    Raises:
      ParameterError: naming the field; checked in ``__post_init__`` from the
        configuration alone (no file is read).
    """

    figure: str
    preset: str
    model: str
    model_config: Any
    data: str
    generations: int
    runs: tuple
    n_eval: int | None = None
    data_dir: str | None = None
    n_ref: int | None = None

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        check_choice("model", self.model, ("ddpm", "wgan"))
        check_choice("data", self.data, IMAGE_NAMES)
        check_int("generations", self.generations, minimum=1)
        if self.n_eval is not None:
            check_int("n_eval", self.n_eval, minimum=6)
        if self.n_ref is not None:
            check_int("n_ref", self.n_ref, minimum=6)
        if not self.runs:
            raise ParameterError("runs", "must hold at least one run")
        dirs = [(r.family, r.tag) for r in self.runs]
        if len(set(dirs)) != len(dirs):
            raise ParameterError("runs", f"two runs share a directory: {dirs}")
        shape = tuple(self.model_config.image_shape)
        if shape != DATA_SHAPES[self.data]:
            raise ParameterError("image_shape", f"the model makes {shape} images, {self.data} images are "
                                                f"{DATA_SHAPES[self.data]}")
        if self.data == "digits":  # the split's size is fixed: check the real draws here already
            for run in self.runs:
                for name in ("n_ini", "n_real"):
                    if getattr(run.loop, name) > DIGITS_TRAIN:
                        raise ParameterError(name, f"must be <= {DIGITS_TRAIN} (the digits training split), "
                                                   f"got {getattr(run.loop, name)}")

    def check_files(self) -> None:
        """Read and check the data files, and every run's real draws against the training split.

        What :func:`madjax.figures.reproduce` calls for every figure before
        the first one starts (a dry run skips it: it needs no file).

        Raises:
          ParameterError: naming ``data_dir`` (missing or malformed files) or
            ``n_ini`` / ``n_real`` (more real images than the split holds).
        """
        load_images(self.data, self.data_dir)
        for run in self.runs:
            check_real_sizes(run.loop, self.data, self.data_dir)

    def record(self, run: LoopRun, seed: int) -> dict:
        """The run's JSON configuration: everything that sets its numbers, and no figure name."""
        record = {"family": run.family, "model": self.model, "preset": self.preset, "data": self.data,
                  "lam": run.lam, "seed": seed, "loop": dataclasses.asdict(run.loop),
                  self.model: dataclasses.asdict(self.model_config), "n_eval": self.n_eval,
                  "generations": self.generations}
        if self.n_ref is not None:  # only where set: the runs saved before n_ref existed stay resumable
            record["n_ref"] = self.n_ref
        return record


def with_data(config: ImageLoopConfig, data: str | None = None, data_dir=None) -> ImageLoopConfig:
    """``config`` on the image data set ``data`` (``madjax reproduce --data``).

    The model's ``image_shape`` becomes the data's; every size, grid and
    schedule of the preset stays, so a preset whose real draws exceed the new
    data's training split is an error (the paper sizes need 60 000 images) --
    except the **quick preset on 28×28 images** (mnist, fashion-mnist), which
    takes the changes of :data:`madjax.deep.runner.QUICK_28` that keep a
    generation within minutes on a CPU: for the DDPM, T = 50 diffusion steps,
    n = 500 in the fully synthetic runs (the other loops keep their sizes),
    500 scored samples against a class-balanced 500 of the test images; the
    WGAN-GP is unchanged.

    Args:
      config: a figure's configuration.
      data: ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``; None keeps the
        preset's.
      data_dir: directory of the IDX files (mnist, fashion-mnist); None: the
        data set's default.

    Raises:
      ParameterError: naming ``data``, ``data_dir`` (given for digits, which
        has no files) or the size that does not fit -- from the
        configuration alone: no file is read.
    """
    data = config.data if data is None else data
    check_choice("data", data, IMAGE_NAMES)
    if data_dir is not None and data not in IDX_NAMES:
        raise ParameterError("data_dir", f"{data} is bundled with scikit-learn and has no files: data_dir applies "
                                         f"to {' and '.join(IDX_NAMES)}")
    model_config = dataclasses.replace(config.model_config, image_shape=DATA_SHAPES[data])
    changes = {}
    if config.preset == "quick" and DATA_SHAPES[data] == MNIST_SHAPE and DATA_SHAPES[config.data] != MNIST_SHAPE:
        quick = QUICK_28[config.model]
        model_config = dataclasses.replace(model_config, **quick["changes"])
        if quick["n"] is not None:
            n = quick["n"]
            changes["runs"] = tuple(
                dataclasses.replace(r, loop=dataclasses.replace(r.loop, n_ini=n, n_syn=n))
                if r.loop.kind == "fully-synthetic" else r for r in config.runs)
        if quick["n_eval"] is not None:
            changes.update(n_eval=quick["n_eval"], n_ref=quick["n_eval"])
    return dataclasses.replace(config, data=data, model_config=model_config,
                               data_dir=None if data_dir is None else os.fspath(data_dir), **changes)


def build_model(config: ImageLoopConfig, progress: bool):
    """The model of a figure (one compiled set of functions for all its runs)."""
    return MODELS[config.model].build(config.model_config, progress)


def run_figure(config: ImageLoopConfig, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
    """Run (or resume) every run of ``config`` and write ``DIR/<figure>.csv``.

    Validation first (run directories, data files, real sizes), then the
    LeNet (trained once and cached), then the runs one after the other.
    """
    seed = check_seed(seed)
    for run in config.runs:
        check_resumable(run.directory(out_dir), config.record(run, seed))
    source = get_source(config.data, config.data_dir)
    for run in config.runs:
        check_real_sizes(run.loop, config.data, config.data_dir)
    evaluation = image_evaluation(config.data, config.data_dir, n_eval=config.n_eval, progress=progress,
                                  n_ref=config.n_ref)
    model = build_model(config, progress)
    for family in dict.fromkeys(r.family for r in config.runs):
        _write_baseline(os.path.join(out_dir, family), source, evaluation, seed)
    for run in config.runs:
        start = time.perf_counter()
        run_loop(model, source, run.loop, lam=run.lam, generations=config.generations, seed=seed,
                 out=run.directory(out_dir), evaluate=evaluation.evaluate, n_eval=evaluation.n_eval,
                 reference=evaluation.reference, record=config.record(run, seed), progress=progress,
                 label=f"{config.figure} {run.tag}")
        _add_timing(os.path.join(out_dir, run.family), run.tag, time.perf_counter() - start)
    write_combined(out_dir, config.figure, config.runs)


def _write_baseline(family_dir: str, source, evaluation, seed: int) -> None:
    """Metrics of n_eval real training images vs the reference (the floor of the curves)."""
    path = os.path.join(family_dir, "real_baseline.json")
    if os.path.exists(path):
        return
    os.makedirs(family_dir, exist_ok=True)
    real = source.sample(jax.random.fold_in(jax.random.PRNGKey(seed), 7919), evaluation.n_eval)
    metrics = evaluation.evaluate(None, None, real, evaluation.reference)
    write_json(path, {k: float(v) for k, v in metrics.items()} | {"n": int(evaluation.n_eval)}, indent=2)


def _add_timing(family_dir: str, tag: str, seconds: float) -> None:
    """Add ``seconds`` to the wall time of run ``tag``: a resumed run adds what it spent."""
    path = os.path.join(family_dir, "timings.json")
    timings = {}
    if os.path.exists(path):
        with open(path) as f:
            timings = json.load(f)
    timings[tag] = round(timings.get(tag, 0.0) + seconds, 1)
    write_json(path, timings, indent=2)


# ----------------------------------------------------------------------------- saved data


def saved_runs(out_dir: str, family: str) -> list[dict]:
    """Every run saved under ``DIR/<family>/`` with at least one finished generation.

    Each is its ``config.json`` as a dict plus ``path``, ``tag`` and ``rows``
    (the metric rows).
    """
    runs = []
    for path in sorted(glob.glob(os.path.join(out_dir, family, "*", "config.json"))):
        run_dir = os.path.dirname(path)
        if not os.path.exists(os.path.join(run_dir, "metrics.csv")):
            continue
        saved = read_json(path, "from")
        saved["path"], saved["tag"] = run_dir, os.path.basename(run_dir)
        saved["rows"] = read_metrics(run_dir)
        if saved["rows"]:
            runs.append(saved)
    return runs


def baseline(out_dir: str, family: str) -> dict | None:
    path = os.path.join(out_dir, family, "real_baseline.json")
    if not os.path.exists(path):
        return None
    return read_json(path, "from")


def saved_samples(run_dir: str) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """``{t: (x, y or None)}`` of a run's sample files."""
    out = {}
    for file in glob.glob(os.path.join(run_dir, "samples", "gen_*.npz")):
        stem = os.path.basename(file)[len("gen_"):-len(".npz")]
        if stem.isdigit():
            z = read_npz(file, "from")
            out[int(stem)] = (z["x"], z.get("y"))
    return out


def write_combined(out_dir: str, figure: str, runs) -> str:
    """``DIR/<figure>.csv``: ``loop, accumulate, lam, n_ini, generation`` then the metrics, every run."""
    rows = []
    for run in runs:
        for row in read_metrics(run.directory(out_dir)):
            rows.append({"loop": run.loop.kind, "accumulate": int(run.loop.accumulate), "lam": run.lam,
                         "n_ini": run.loop.n_ini, **row})
    path = os.path.join(out_dir, f"{figure}.csv")
    names = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ----------------------------------------------------------------------------- dry run


# Images per minibatch of the dry run's training step (module docstring of dry_run).
_DRY_BATCH = 2


def dry_run(config: ImageLoopConfig) -> str:
    """Validate, report shapes and a memory estimate, and compile (and run) one training step.

    Needs no data file: shapes come from the configuration and parameters
    from ``jax.eval_shape`` of the model's ``init`` (zero-filled, so init's
    own compilation is skipped). The step is one epoch of ``fit`` on exactly
    one optimiser step's images with the minibatch cut to ``_DRY_BATCH``
    images: the compiled program is the configured one (network, loss,
    optimiser, every shape but the batch axis), while running it costs
    seconds even where one paper-size step on a CPU would take minutes. Where
    the data is MNIST or Fashion-MNIST and its files are missing, the report
    says so (one clause of the same line): a real run needs them.
    """
    cfg = config.model_config
    entry = MODELS[config.model]
    h, w = cfg.image_shape
    n_critic = getattr(cfg, "n_critic", 1)  # a WGAN generator step takes n_critic critic batches
    small = dataclasses.replace(cfg, epochs=1, batch_size=_DRY_BATCH, warm_start=True)
    model = entry.build(small, False)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
    n_floats = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    n_step = _DRY_BATCH * n_critic
    batch = Images(jnp.zeros((n_step, h, w), jnp.float32),
                   jnp.arange(n_step, dtype=jnp.int32) % max(getattr(cfg, "num_classes", 1), 1))
    start = time.perf_counter()
    jax.block_until_ready(model.fit(jax.random.PRNGKey(1), params, batch))
    step_s = time.perf_counter() - start
    sample = jax.eval_shape(lambda k: model.sample(k, params, 4, 0.5), jax.random.PRNGKey(2))
    largest = max(r.loop.training_size(config.generations) for r in config.runs)
    data_mb = largest * (h * w * 4 + 4) / 2**20  # pixels + labels of the largest training set (pool included)
    n_gen = len(config.runs) * config.generations
    kinds = sorted({(r.loop.kind + (" + accumulate" if r.loop.accumulate else "")) for r in config.runs})
    return (f"{config.model} on {config.data} {h}x{w}, {', '.join(kinds)}, runs {[r.tag for r in config.runs]}, "
            f"T = {config.generations} ({n_gen} generations), largest training set {largest} images "
            f"(≈ {data_mb:.0f} MiB), model + optimiser state {n_floats} floats (≈ {n_floats * 4 / 2**20:.0f} MiB), "
            f"batch {cfg.batch_size}{f' x {n_critic} critic steps' if n_critic > 1 else ''}, "
            f"samples {tuple(sample.x.shape[1:])}; one training step (batch {_DRY_BATCH}) compiled and run "
            f"in {step_s:.1f} s; {_data_note(config)}")


def _data_note(config: ImageLoopConfig) -> str:
    if config.data == "digits":
        return "data: digits (bundled with scikit-learn)"
    if config.data == "mnist" and config.data_dir is None and not os.environ.get("MADJAX_DATA"):
        return "data: MNIST files not found (MADJAX_DATA is not set) -- a real run needs them"
    try:
        load_images(config.data, config.data_dir)
    except ParameterError as err:
        return f"data: {config.data} files not usable ({err.message}) -- a real run needs them"
    return f"data: {config.data} files found"


# ----------------------------------------------------------------------------- plots


def caption_for(runs: list, paper: str) -> str:
    """The caption line of an image-loop figure, from its saved runs' configurations."""
    first = runs[0]
    h, w = DATA_SHAPES.get(first["data"], (0, 0))
    shared = {k: first["loop"][k] for k in ("n_ini", "n_real", "n_syn")  # sizes common to every run
              if first["loop"].get(k) and all(r["loop"][k] == first["loop"][k] for r in runs)}
    sizes = ", ".join(setting(k, v) for k, v in shared.items())
    return caption(first.get("preset"), dim=f"{h * w} ({h}×{w} {first['data']} images)", chains=1, per="curve",
                   paper=paper, notes=[f"{sizes} per generation"] if sizes else [])


def plot_curves(axes, series, *, baseline_metrics=None, metrics=METRICS) -> None:
    """LeNet-FID / precision / recall vs generation, one line per ``(label, rows, style, color)``."""
    for ax, name in zip(axes, metrics):
        for label, rows, style, color in series:
            gens = [r["generation"] for r in rows]
            ax.plot(gens, [r.get(name, math.nan) for r in rows], style, color=color, lw=1.4, ms=3, label=label)
        if baseline_metrics and name in baseline_metrics:
            ax.axhline(baseline_metrics[name], color="0.4", lw=0.8, ls=":", label="real (train vs test)")
        ax.set_title(LABELS.get(name, name), fontsize=9)
        ax.set_xlabel("generation $t$", fontsize=8)
        ax.tick_params(labelsize=7)
        if name in ("precision", "recall"):
            ax.set_ylim(-0.02, 1.02)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=6)


def draw_grid(ax, x: np.ndarray, y: np.ndarray | None, title: str, per_row: int = 8) -> None:
    mosaic, labels = image_grid(x, y, per_row=per_row)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=7)


def metrics_and_samples_figure(out_dir: str, name: str, title: str, runs: list, *, label, paper: str,
                               baseline_metrics=None, sample_generations=None) -> list[str]:
    """The standard layout: LeNet-FID / precision / recall curves above a row of sample grids per run.

    Args:
      title: the headline (what the figure shows).
      runs: saved runs (:func:`saved_runs`), one curve each.
      paper: the paper's figure and setting the preset stands in for (caption line).
      label: ``run -> str`` legend label.
      baseline_metrics: the real-data floor (dotted).
      sample_generations: ``run -> [t, ...]`` generations whose samples are
        shown (default: the first and the last saved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = {r["path"]: saved_samples(r["path"]) for r in runs}
    cells = []  # (run, t) of every sample grid, six to a row
    for r in runs:
        saved = sorted(samples[r["path"]])
        wanted = sample_generations(r) if sample_generations else ([saved[0], saved[-1]] if saved else [])
        cells += [(r, t) for t in dict.fromkeys(wanted) if t in samples[r["path"]]]
    grid_rows = math.ceil(len(cells) / 6)
    fig = plt.figure(figsize=(10.0, 3.4 + 1.9 * grid_rows), layout="constrained")
    spec = fig.add_gridspec(1 + grid_rows, 6, height_ratios=[2.6] + [2.0] * grid_rows)
    axes = [fig.add_subplot(spec[0, 2 * i:2 * i + 2]) for i in range(3)]
    series = [(label(r), r["rows"], "-o", f"C{i}") for i, r in enumerate(runs)]
    plot_curves(axes, series, baseline_metrics=baseline_metrics)
    for i, (r, t) in enumerate(cells):
        ax = fig.add_subplot(spec[1 + i // 6, i % 6])
        x, y = samples[r["path"]][t]
        draw_grid(ax, x, y, f"{label(r)}, $t$ = {t}")
    finish(fig, title, caption_for(runs, paper))
    return save(fig, out_dir, name)
