"""Fresh-data loop: WD vs generation for several n_ini, lambda = 1 and < 1 (Figure 9, left).

    python experiments/fig9.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig9"], __doc__)
