"""Figures 6, 24 and 25: the DDPM's samples in the fully synthetic loop, generation by generation.

The paper shows what the metrics of Figure 4 summarise:

* **Fig. 6** -- a 2-D UMAP projection of the samples of successive
  generations, unbiased (λ = 1) beside biased (λ < 1) sampling, coloured by
  generation: without bias the samples drift away from the real data
  (quality lost), with it they contract onto a few points per class
  (diversity lost).
* **Figs 24 / 25** -- random samples of every generation, λ = 1 (Fig. 24)
  and λ < 1 (Fig. 25).

**Data.** The figures draw the runs of Figures 4 and 14,
``DIR/ddpm-fully-synthetic/lam_<λ>/samples/gen_<t>.npz`` (the ``n_eval``
samples of G^t at λ that each generation is scored on,
:func:`madjax.deep.loop.run_loop`): ``reproduce fig6`` in a directory where
``fig4`` ran trains nothing it already has (same configuration, same
directories, :mod:`madjax.figures.image_loops`), and runs -- or continues --
Figure 4's λ = 1 and λ < 1 runs otherwise. ``madjax plot fig6 --from DIR``
draws whatever generations are saved there, finished runs or not.

**The projection** (Fig. 6). Images are flattened to their H·W pixels; the
samples of every saved generation of both runs (at most
``points_per_generation`` of each, a fixed random subset) and as many real
test images (grey, for reference, when the data can be read) are embedded
by *one* UMAP (McInnes et al., 2018; ``umap-learn`` with ``random_state``
fixed, hence single-threaded and reproducible), so both panels share their
axes. The embedding is written to ``DIR/fig6.npz`` (``xy (m, 2)``,
``generation (m,)`` -- 0 for real images --, ``lam (m,)``,
``label (m,)`` -- −1 where unknown --, and ``fingerprint``, a hash of the
sample files it came from); ``plot`` redraws from it, and computes it again
only when the saved samples changed.

**Sample grids** (Figs 24, 25): one row per saved generation; in each row
``per_class`` samples of every class, in class order (the sampler returns
balanced, shuffled labels, so the first samples of a class are a random
draw of it).

**Presets**: the sizes and λ of Figure 4 (:mod:`madjax.figures.ddpm`,
``SIZES`` and ``GRIDS["fig4"]``): ``paper`` MNIST, λ ∈ {1, 0.5}, 10
generations; ``quick`` λ ∈ {1, 0.5}, 6 generations (on 28×28 data the quick
DDPM of :data:`madjax.deep.runner.QUICK_28`); ``smoke`` λ ∈ {1, 0.5}, 2
generations of the smoke DDPM (Figure 4's smoke preset runs λ = 1 only).
``reproduce --data`` applies (:func:`madjax.figures.image_loops.with_data`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os

import numpy as np

from madjax.deep.loop import DeepLoop
from madjax.figures import PRESETS, Figure
from madjax.figures import ddpm as D
from madjax.figures import image_loops as IL
from madjax.figures.style import caption, finish, save, setting
from madjax.io import atomic_path, read_npz
from madjax.validation import ParameterError, check_choice, check_int

FAMILY = D.FULLY
SAMPLE_FIGURES = ("fig6", "fig24", "fig25")


@dataclasses.dataclass(frozen=True)
class Projection:
    """Settings of Figure 6's UMAP.

    Attributes:
      points_per_generation: samples of each generation of each run (and real
        test images) embedded, a fixed random subset.
      n_neighbors: UMAP's neighbourhood size.
      min_dist: UMAP's minimum distance between embedded points.
      seed: ``random_state`` of UMAP and seed of the subsets.
    """

    points_per_generation: int = 500
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self):
        check_int("points_per_generation", self.points_per_generation, minimum=4)
        check_int("n_neighbors", self.n_neighbors, minimum=2)
        if not (isinstance(self.min_dist, (int, float)) and 0 <= self.min_dist <= 1):
            raise ParameterError("min_dist", f"must be in [0, 1], got {self.min_dist!r}")
        check_int("seed", self.seed, minimum=0)


# λ values and generations: Figure 4's (so the runs are shared); smoke adds λ = 0.5.
GRIDS = {
    "paper": dict(D.GRIDS["fig4"]["paper"]),
    "quick": dict(D.GRIDS["fig4"]["quick"]),
    "smoke": dict(lams=(1.0, 0.5), generations=D.GRIDS["fig4"]["smoke"]["generations"]),
}
PROJECTIONS = {
    "paper": Projection(points_per_generation=1000),
    "quick": Projection(points_per_generation=500),
    "smoke": Projection(points_per_generation=24, n_neighbors=5),
}
PER_CLASS = 2  # samples of each class per generation in Figs 24 / 25


@dataclasses.dataclass(frozen=True)
class SampleFigureConfig(IL.ImageLoopConfig):
    """An :class:`~madjax.figures.image_loops.ImageLoopConfig` with Figure 6's projection settings."""

    projection: Projection = Projection()


def _biased(lams) -> float:
    below = [lam for lam in lams if lam < 1]
    if not below:
        raise ParameterError("lams", f"the sample figures need a λ < 1, got {tuple(lams)}")
    return min(below)


def get_config(fig: str, preset: str) -> SampleFigureConfig:
    """The configuration of ``fig`` (``fig6``, ``fig24``, ``fig25``) at ``preset``."""
    check_choice("figure", fig, SAMPLE_FIGURES)
    check_choice("preset", preset, PRESETS)
    sizes, grid = D.SIZES[preset], GRIDS[preset]
    lams = {"fig6": (1.0, _biased(grid["lams"])), "fig24": (1.0,), "fig25": (_biased(grid["lams"]),)}[fig]
    n = sizes["n"]
    loop = DeepLoop("fully-synthetic", n_ini=n, n_real=0, n_syn=n)
    runs = tuple(IL.LoopRun(FAMILY, f"lam_{lam:g}", lam, loop) for lam in lams)
    return SampleFigureConfig(figure=fig, preset=preset, model="ddpm",
                              model_config=D._model_config(preset, sizes["data"]), data=sizes["data"],
                              generations=grid["generations"], runs=runs, n_eval=sizes["n_eval"],
                              projection=PROJECTIONS[preset])


# ----------------------------------------------------------------------------- saved samples


def _pick_runs(out_dir: str, fig: str) -> list[dict]:
    """The saved runs a figure draws: λ = 1 and/or the smallest λ < 1 of the family."""
    runs = IL.saved_runs(out_dir, FAMILY)
    unbiased = [r for r in runs if r["lam"] == 1.0]
    biased = sorted((r for r in runs if r["lam"] < 1.0), key=lambda r: r["lam"])
    wanted = {"fig6": unbiased[:1] + biased[:1], "fig24": unbiased[:1], "fig25": biased[:1]}[fig]
    need = {"fig6": "a λ = 1 and a λ < 1 run", "fig24": "a λ = 1 run", "fig25": "a λ < 1 run"}[fig]
    if len(wanted) < (2 if fig == "fig6" else 1) or not all(IL.saved_samples(r["path"]) for r in wanted):
        raise ParameterError("from", f"no {fig} data under {out_dir!r}: it needs {need} with saved samples "
                                     f"in {os.path.join(out_dir, FAMILY)} (madjax reproduce {fig} or fig4)")
    return wanted


def generation_rows(samples: dict, *, per_class: int = PER_CLASS, width: int = 20) -> tuple[list, list]:
    """Images of each generation for a sample grid.

    Args:
      samples: ``{t: (x (n, H, W), y (n,) or None)}``.
      per_class: with labels, the first ``per_class`` samples of each class
        (class order); without, the first ``width`` samples.
      width: images per row without labels.

    Returns:
      ``(generations, rows)``: the sorted ``t`` and for each an array
      ``(k, H, W)``.
    """
    gens = sorted(samples)
    rows = []
    for t in gens:
        x, y = samples[t]
        if y is None:
            rows.append(np.asarray(x[:width], np.float32))
        else:
            rows.append(np.concatenate([x[y == c][:per_class] for c in np.unique(y)], axis=0).astype(np.float32))
    return gens, rows


def mosaic(rows: list) -> np.ndarray:
    """Rows of images ``(k_i, H, W)`` tiled into one 2-D array in [0, 1], 1-pixel grey borders (NaN: grey)."""
    h, w = rows[0].shape[1:3]
    k = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + 1) + 1, k * (w + 1) + 1), 0.5, np.float32)
    for i, images in enumerate(rows):
        images = np.nan_to_num(np.clip(images, 0.0, 1.0), nan=0.5)
        for j, image in enumerate(images):
            out[1 + i * (h + 1):1 + i * (h + 1) + h, 1 + j * (w + 1):1 + j * (w + 1) + w] = image
    return out


# ----------------------------------------------------------------------------- the projection


def _fingerprint(runs: list, projection: Projection) -> str:
    h = hashlib.sha256(repr(dataclasses.astuple(projection)).encode())
    for r in runs:  # every sample file, whatever the zero-padding of its generation number
        for path in sorted(glob.glob(os.path.join(r["path"], "samples", "gen_*.npz"))):
            h.update(f"{r['lam']}:{os.path.basename(path)}:".encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:32]


def _reference(data: str, data_dir=None) -> tuple[np.ndarray, np.ndarray] | None:
    """The real test images of ``data``, or None where they cannot be read."""
    from madjax.data import load_images

    try:
        split = load_images(data, data_dir)
    except ParameterError:
        return None
    return np.asarray(split.x_test, np.float32), np.asarray(split.y_test, np.int32)


def umap_embedding(x: np.ndarray, projection: Projection) -> np.ndarray:
    """UMAP of the rows of ``x (m, D)`` into ``(m, 2)`` float32, reproducible (``random_state`` fixed)."""
    import warnings

    try:
        import umap
    except ImportError:  # pragma: no cover - a declared dependency
        raise ParameterError("figure", "fig6 needs umap-learn (pip install umap-learn)") from None
    reducer = umap.UMAP(n_components=2, n_neighbors=min(projection.n_neighbors, len(x) - 1),
                        min_dist=projection.min_dist, random_state=projection.seed)
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": that is the point
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(reducer.fit_transform(np.asarray(x, np.float32)), np.float32)


def project(out_dir: str, projection: Projection, *, data_dir=None) -> dict:
    """Embed Figure 6's saved samples (and real test images) and write ``DIR/fig6.npz``; reuse it if current.

    Returns:
      The arrays of ``DIR/fig6.npz`` (module docstring).
    """
    runs = _pick_runs(out_dir, "fig6")
    path = os.path.join(out_dir, "fig6.npz")
    fingerprint = _fingerprint(runs, projection)
    if os.path.exists(path):
        saved = read_npz(path, "from", ("xy", "generation", "lam", "label", "fingerprint"))
        if str(saved["fingerprint"]) == fingerprint:
            return saved
    rng = np.random.default_rng(projection.seed)
    m = projection.points_per_generation
    parts, gens, lams, labels = [], [], [], []
    for r in runs:
        for t, (x, y) in sorted(IL.saved_samples(r["path"]).items()):
            keep = np.sort(rng.permutation(len(x))[:m])
            parts.append(x[keep].reshape(len(keep), -1))
            gens.append(np.full(len(keep), t, np.int32))
            lams.append(np.full(len(keep), r["lam"], np.float32))
            labels.append(y[keep].astype(np.int32) if y is not None else np.full(len(keep), -1, np.int32))
    real = _reference(runs[0]["data"], data_dir)
    if real is not None:
        keep = np.sort(rng.permutation(len(real[0]))[:m])
        parts.append(real[0][keep].reshape(len(keep), -1))
        gens.append(np.zeros(len(keep), np.int32))
        lams.append(np.full(len(keep), np.nan, np.float32))
        labels.append(real[1][keep])
    x = np.concatenate(parts)
    x = np.nan_to_num(np.clip(x, 0.0, 1.0), nan=0.5)  # a non-finite sample sits at mid-grey, not at infinity
    arrays = {"xy": umap_embedding(x, projection), "generation": np.concatenate(gens),
              "lam": np.concatenate(lams), "label": np.concatenate(labels), "fingerprint": np.array(fingerprint)}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return arrays


# ----------------------------------------------------------------------------- plots


def _caption(runs: list, paper: str, what: str) -> str:
    first = runs[0]
    h, w = IL.DATA_SHAPES.get(first["data"], (0, 0))
    return caption(first.get("preset"), dim=f"{h * w} ({h}×{w} {first['data']} images)", chains=1, per="run",
                   paper=paper, notes=[f"{setting('n_ini', first['loop']['n_ini'])} = $n_s$ per generation; "
                                       + what])


def _plot_fig6(out_dir: str, projection: Projection | None = None, data_dir=None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _pick_runs(out_dir, "fig6")
    projection = projection or PROJECTIONS.get(runs[0].get("preset"), Projection())
    arrays = project(out_dir, projection, data_dir=data_dir)
    xy, gen, lam = arrays["xy"], arrays["generation"], arrays["lam"]
    last = int(gen.max())
    cmap = plt.get_cmap("viridis", max(last, 2))
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.4), layout="constrained", sharex=True, sharey=True)
    real = gen == 0
    for ax, r in zip(axes, runs):
        if real.any():
            ax.scatter(xy[real, 0], xy[real, 1], s=3, c="0.8", lw=0, label="real (test)")
        mine = (~real) & np.isclose(lam, r["lam"])
        order = np.argsort(gen[mine], kind="stable")  # later generations on top
        points = ax.scatter(xy[mine][order, 0], xy[mine][order, 1], s=3, c=gen[mine][order], cmap=cmap,
                            vmin=0.5, vmax=max(last, 2) + 0.5, lw=0)
        tail = "unbiased" if r["lam"] == 1 else "biased"
        ax.set_title(f"{setting('lam', r['lam'])} ({tail})", fontsize=9)
        ax.set(xticks=[], yticks=[])
        if real.any():
            ax.legend(fontsize=7, loc="lower right", markerscale=3)
    bar = fig.colorbar(points, ax=axes, shrink=0.8, ticks=range(1, max(last, 2) + 1))
    bar.set_label("generation $t$", fontsize=8)
    finish(fig, "DDPM samples of successive generations, 2-D UMAP: quality lost without bias ($\\lambda$ = 1), "
                "diversity lost with it", _caption(runs, "Fig. 6 (MNIST, fully synthetic, $\\lambda$ = 1 vs "
                                                         "$\\lambda$ < 1)",
                                                   "one UMAP of the pixels of all panels' points"))
    return save(fig, out_dir, "fig6")


def _plot_grid(fig_id: str):
    def plot(out_dir: str) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        (run,) = _pick_runs(out_dir, fig_id)
        gens, rows = generation_rows(IL.saved_samples(run["path"]))
        image = mosaic(rows)
        h = rows[0].shape[1]
        fig, ax = plt.subplots(figsize=(9.0, 8.4 * image.shape[0] / image.shape[1] + 1.2), layout="constrained")
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([(i + 0.5) * (h + 1) for i in range(len(gens))], [f"$t$ = {t}" for t in gens], fontsize=7)
        ax.set_xticks([])
        ax.tick_params(length=0)
        lam = setting("lam", run["lam"])
        paper = "Fig. 24 (MNIST, $\\lambda$ = 1)" if fig_id == "fig24" else "Fig. 25 (MNIST, $\\lambda$ < 1)"
        finish(fig, f"Random DDPM samples of each generation of the fully synthetic loop, {lam}",
               _caption([run], paper, f"{PER_CLASS} samples per class per row, in class order"))
        return save(fig, out_dir, fig_id)

    return plot


def _figure(fig_id: str) -> Figure:
    def run(config, out_dir: str, *, seed: int = 0, progress: bool = True) -> None:
        IL.run_figure(config, out_dir, seed=seed, progress=progress)
        if fig_id == "fig6":
            project(out_dir, config.projection, data_dir=config.data_dir)

    plot = (lambda out_dir: _plot_fig6(out_dir)) if fig_id == "fig6" else _plot_grid(fig_id)
    return Figure(fig_id, lambda preset: get_config(fig_id, preset), run, IL.dry_run, plot, IL.with_data)


FIGURES = {fig: _figure(fig) for fig in SAMPLE_FIGURES}
