"""Conditional DDPM, fresh data loop, several n_ini (Figure 9, right).

    python experiments/fig9_ddpm.py --preset quick --out out/

Grids and presets live in madjax/figures/ddpm.py; the paper preset reads MNIST from $MADJAX_DATA.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig9-ddpm"], __doc__)
