"""Fresh-data loop: n_e/n_r vs memory K (Figure 33).

    python experiments/fig33.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig33"], __doc__)
