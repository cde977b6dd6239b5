"""Fresh-data loop: n_e/n_r over (n_s, lambda), panels by n_r (Figure 32).

    python experiments/fig32.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig32"], __doc__)
