"""Fresh-data loop: n_e/n_r over (n_r, n_s), panels by lambda, with the n_e = n_r frontier (Figure 10).

    python experiments/fig10.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig10"], __doc__)
