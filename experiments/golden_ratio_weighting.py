"""Weighted fresh loop: the stationary error V(w) over the real weight w, minimised at (sqrt 5 - 1)/2 for
n_r = n_s (He, Xu & Cheng 2026).

    python experiments/golden_ratio_weighting.py --preset quick --out out/

Presets and the laws checked live in madjax/figures/operators.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["golden-ratio-weighting"], __doc__)
