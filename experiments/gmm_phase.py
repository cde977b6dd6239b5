"""The GMM's Figure 10: n_e/n_r over (n_r, n_s) for the 25-component mixture in the fresh loop,
panels by lambda, WD the mixture Wasserstein distance.

    python experiments/gmm_phase.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["gmm-phase"], __doc__)
