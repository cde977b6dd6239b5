"""Conditional DDPM, synthetic augmentation loop: last generation vs accumulated pool (Figures 8, 28, 29).

    python experiments/fig8_28_29_ddpm.py --preset quick --out out/

Figure 29 compares the runs of Figures 8 and 28 (out/ddpm-synthetic-augmentation*/lam_<λ>/).
Grids and presets live in madjax/figures/ddpm.py; the paper preset reads MNIST from $MADJAX_DATA.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig8", "fig28", "fig29"], __doc__)
