"""Synthetic-augmentation loop: n_e/n_r over (n_r, n_s) (Figure 30).

    python experiments/fig30.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig30"], __doc__)
