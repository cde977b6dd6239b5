"""Synthetic-augmentation loop: n_e/n_r over (n_s, lambda), panels by n_r (Figure 31).

    python experiments/fig31.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig31"], __doc__)
