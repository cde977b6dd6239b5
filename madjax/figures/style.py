"""The look every figure shares: the paper's symbols, a title with a caption line, one colour scale.

Figures name quantities as the paper does (n_r, n_s, λ, K, n_ini, p, n),
never by their code names (``n_real``, ``lam``); :data:`SYMBOLS` is the one
table from which axes, panel titles and legends take them. Every figure has
a headline that says what it shows and, below it, a caption line with the
preset, d, chains per cell and the paper setting it stands in for
(:func:`caption`, :func:`finish`). The phase diagrams share one colour scale,
:data:`LOG2_RATIO_LIMIT`, so the same colour means the same n_e/n_r in
Figures 10, 30, 31 and 32.
"""

from __future__ import annotations

import os
import textwrap

# Code name -> the paper's symbol (matplotlib mathtext).
SYMBOLS = {
    "n_real": "$n_r$",
    "n_syn": "$n_s$",
    "lam": r"$\lambda$",
    "memory": "$K$",
    "n_ini": r"$n_{\mathrm{ini}}$",
    "real_fraction": "$p$",
    "n_total": "$n$",
    "generation": "$t$",
    "n_e_ratio": "$n_e/n_r$",
    "wd": "WD",
}

# Phase diagrams colour log2(n_e/n_r) on [-LIMIT, LIMIT] in every figure (1/16 … 16).
LOG2_RATIO_LIMIT = 4.0


def symbol(name: str) -> str:
    """The paper's symbol of a parameter (its code name if the paper has none)."""
    return SYMBOLS.get(name, name)


def setting(name: str, value) -> str:
    """``"$\\lambda$ = 0.8"``: a parameter's symbol and value."""
    return f"{symbol(name)} = {value:g}" if isinstance(value, (int, float)) else f"{symbol(name)} = {value}"


def caption(preset: str | None, *, paper: str, dim=None, chains=None, per: str | None = "cell", notes=()) -> str:
    """The caption line: ``"quick preset · d = 10 · 64 chains per cell · stands in for the paper's …"``."""
    parts = [f"{preset} preset" if preset else "user sweep"]
    if dim is not None:
        parts.append(f"d = {dim}")
    if chains is not None:
        parts.append(f"{chains} chain{'s' if chains != 1 else ''}" + (f" per {per}" if per else ""))
    parts.append(f"stands in for the paper's {paper}" if preset else paper)
    return " · ".join(parts) + "".join(f". {n}" for n in notes)


def finish(fig, headline: str, caption_text: str, width: int = 120) -> None:
    """Headline as the figure title, the caption (wrapped) as the figure's bottom line.

    Both are the figure's own title and bottom label, so a constrained layout
    (which every madjax figure uses) makes room for them.
    """
    fig.suptitle(headline, fontsize=11)
    text = textwrap.fill(caption_text.replace(" = ", "\u00a0=\u00a0"), width)  # never break "n = 10"
    fig.supxlabel(text, fontsize=8, color="0.25")


def band_label(chains: int, what: str = "bands") -> str:
    """Legend text of an uncertainty band: ``"bands: ±2 se over 64 chains"``."""
    return f"{what}: ±2 se over {chains} chains"


def save(fig, out_dir: str, name: str, dpi: int = 130) -> list[str]:
    """Write ``DIR/name.png`` and ``DIR/name.pdf`` (tight bounding box: the caption is kept) and close."""
    import matplotlib.pyplot as plt

    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths
