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
  the saved data.
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
    "moments-synthetic": "madjax.figures.theory",
    "moments-fresh": "madjax.figures.theory",
}
FIGURE_IDS = tuple(_MODULES)


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
              progress: bool = True) -> None:
    """Run figures' presets into ``out`` and draw them (``DIR/FIG.png``, ``DIR/FIG.pdf``).

    Everything is validated (ids, preset, seed, output directory,
    configurations) before the first figure starts.
    """
    check_choice("preset", preset, PRESETS)
    check_seed(seed)
    check_writable("out", out, directory=True)
    figs = [get_figure(f) for f in _expand(list(figures))]
    configs = [fig.get_config(preset) for fig in figs]
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
