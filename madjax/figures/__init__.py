"""Paper figures: one small record per figure, three presets each (DESIGN §4).

Each figure module exposes ``FIGURES: dict[str, Figure]``. A :class:`Figure`
bundles

* ``get_config(preset) -> config`` -- the ``paper`` configuration with a
  ``quick`` / ``smoke`` overlay (the big_vision pattern); grids live there,
  documented beside their values;
* ``run(config, out_dir, *, seed, progress) -> None`` -- compute and store the
  data under ``out_dir`` (resumable where the run is long);
* ``dry_run(config) -> str`` -- validate, report shapes and a memory estimate,
  compile one step, without running;
* ``plot(out_dir) -> list[str]`` -- redraw ``FIG.png`` and ``FIG.pdf`` from
  the saved data;
* ``with_data(config, data, data_dir) -> config`` (image figures only, else
  None) -- the configuration on another image data set (``reproduce
  --data``; :func:`madjax.figures.image_loops.with_data`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, NamedTuple

from madjax._progress import log
from madjax.io import READ_ERRORS
from madjax.validation import ParameterError, check_choice, check_seed, check_writable

PRESETS = ("smoke", "quick", "paper")


class Figure(NamedTuple):
    name: str
    get_config: Callable[[str], Any]
    run: Callable[..., None]
    dry_run: Callable[[Any], str]
    plot: Callable[[str], list]
    with_data: Callable[[Any, str | None, str | None], Any] | None = None


# Figure id -> module that defines it (imported lazily: deep models are heavy).
_MODULES = {
    "fig9": "madjax.figures.phase",
    "fig10": "madjax.figures.phase",
    "fig30": "madjax.figures.phase",
    "fig31": "madjax.figures.phase",
    "fig32": "madjax.figures.phase",
    "fig33": "madjax.figures.phase",
    "fig34": "madjax.figures.phase",
    "gmm-phase": "madjax.figures.phase",
    "fig11": "madjax.figures.gmm",
    "fig12": "madjax.figures.gmm",
    "fig15": "madjax.figures.glow",
    "fig4": "madjax.figures.ddpm",
    "fig8": "madjax.figures.ddpm",
    "fig9-ddpm": "madjax.figures.ddpm",
    "fig13": "madjax.figures.wgan",
    "fig14": "madjax.figures.ddpm",
    "fig28": "madjax.figures.ddpm",
    "fig29": "madjax.figures.ddpm",
    "fig6": "madjax.figures.ddpm_samples",
    "fig24": "madjax.figures.ddpm_samples",
    "fig25": "madjax.figures.ddpm_samples",
    "moments-synthetic": "madjax.figures.theory",
    "moments-fresh": "madjax.figures.theory",
    "replace-vs-accumulate": "madjax.figures.operators",
    "golden-ratio-weighting": "madjax.figures.operators",
    "growing-sample-sizes": "madjax.figures.operators",
    "curation-tilt": "madjax.figures.operators",
}
FIGURE_IDS = tuple(_MODULES)
# The figures of deep models on images: those ``reproduce --data`` applies to.
IMAGE_FIGURES = tuple(f for f, m in _MODULES.items()
                      if m in ("madjax.figures.ddpm", "madjax.figures.ddpm_samples", "madjax.figures.wgan"))


def get_figure(fig_id: str, param: str = "figure") -> Figure:
    check_choice(param, fig_id, FIGURE_IDS)
    try:
        module = importlib.import_module(_MODULES[fig_id])
    except ModuleNotFoundError as err:
        if err.name != _MODULES[fig_id]:
            raise
        raise ParameterError(param, f"{fig_id} is not available in this version of madjax") from None
    return module.FIGURES[fig_id]


def _expand(figures: list[str]) -> list[str]:
    if "all" in figures:
        return list(FIGURE_IDS)
    return list(dict.fromkeys(figures))


def reproduce(figures, *, preset: str = "quick", out: str, dry_run: bool = False, seed: int = 0,
              progress: bool = True, data: str | None = None, data_dir: str | None = None) -> None:
    """Run figures' presets into ``out`` and draw them (``DIR/FIG.png``, ``DIR/FIG.pdf``).

    Everything is validated (ids, preset, seed, output directory,
    configurations, and -- unless ``dry_run`` -- the image data files) before
    the first figure starts.

    Args:
      figures: figure ids (:data:`FIGURE_IDS`) or ``"all"``.
      preset: ``"smoke"``, ``"quick"`` or ``"paper"``.
      out: output directory.
      dry_run: validate and report each figure without running it.
      seed: integer seed in [0, 2³² − 1].
      progress: progress bars and stage lines.
      data: image data of the image figures (:data:`IMAGE_FIGURES`):
        ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``; None keeps each
        preset's own (digits for smoke and quick, mnist for paper). With
        ``"all"`` it applies to the image figures only; naming another
        figure with it is an error.
      data_dir: directory of the IDX files of mnist / fashion-mnist (None:
        ``$MADJAX_DATA`` for mnist, ``/usr/share/datasets/fashion-mnist``
        for fashion-mnist); same rules as ``data``.

    Raises:
      ParameterError: naming the parameter (``figure``, ``preset``, ``seed``,
        ``out``, ``data``, ``data_dir``, or a configuration field).
    """
    check_choice("preset", preset, PRESETS)
    check_seed(seed)
    if data is not None:
        from madjax.data import IMAGE_NAMES

        check_choice("data", data, IMAGE_NAMES)
    check_writable("out", out, directory=True)
    ids = _expand(list(figures))
    if data is not None or data_dir is not None:
        others = [f for f in ids if f not in IMAGE_FIGURES]
        if others and "all" not in figures:
            raise ParameterError("data" if data is not None else "data_dir",
                                 f"applies to the image figures ({', '.join(IMAGE_FIGURES)}) only; "
                                 f"{', '.join(others)} {'draws' if len(others) == 1 else 'draw'} no images")
    figs = [get_figure(f) for f in ids]
    configs = [fig.get_config(preset) for fig in figs]
    if data is not None or data_dir is not None:
        configs = [fig.with_data(config, data, data_dir) if fig.with_data is not None else config
                   for fig, config in zip(figs, configs)]
    if not dry_run:
        for config in configs:
            _check_data_files(config)
    for fig, config in zip(figs, configs):
        if dry_run:
            print(f"{fig.name} [{preset}]: {fig.dry_run(config)}")
            continue
        os.makedirs(out, exist_ok=True)
        log.info("%s [%s]: running into %s", fig.name, preset, out)
        fig.run(config, out, seed=seed, progress=progress)
        log.info("%s: drawing", fig.name)
        for path in fig.plot(out):
            if progress:
                print(path)


def _check_data_files(config) -> None:
    """Read and check the data files a figure's configuration needs (its ``check_files()``, where it has one):
    a bad directory or a size the data cannot supply fails before any work."""
    check = getattr(config, "check_files", None)
    if callable(check):
        check()


def plot(fig_id: str | None, source: str) -> list:
    """Redraw figure ``fig_id`` from the data under ``source``; without an id, draw the sweeps there.

    A user's sweep (``madjax sweep``) is drawn by the shape of its grid:
    :func:`madjax.figures.phase.plot_sweeps`. Missing data is one
    :class:`ParameterError` naming ``from``.
    """
    if fig_id is not None:
        fig = get_figure(fig_id)
    if not os.path.isdir(source) and not (fig_id is None and os.path.isfile(source)):
        raise ParameterError("from", f"no such directory: {source!r}")
    if fig_id is None:
        from madjax.figures.phase import plot_sweeps

        return plot_sweeps(source)
    try:
        return fig.plot(source)
    except ParameterError:
        raise
    except (*READ_ERRORS, AttributeError) as err:  # saved data of the wrong shape or kind: one line, no traceback
        raise ParameterError("from", f"{source}: the saved {fig_id} data cannot be drawn "
                                     f"({type(err).__name__}: {' '.join(str(err).split())[:160]})") from None


def script_main(fig_ids, description: str, argv=None) -> None:
    """Entry point of the thin ``experiments/`` scripts: ``--preset``, ``--out``, ``--seed``."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--out", default="out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reproduce(list(fig_ids), preset=args.preset, out=args.out, seed=args.seed)
