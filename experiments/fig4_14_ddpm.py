"""Conditional DDPM, fully synthetic loop, several sampling biases λ (Figures 4 and 14).

    python experiments/fig4_14_ddpm.py --preset quick --out out/

Both figures draw the same runs (out/ddpm-fully-synthetic/lam_<λ>/), trained once.
Grids and presets live in madjax/figures/ddpm.py; the paper preset reads MNIST from $MADJAX_DATA.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig4", "fig14"], __doc__)
