"""Replace loop with n_t = ceil(n_s t^alpha): E||mu_t - mu_0||^2 and E log det Sigma_t are bounded iff
alpha > 1 (Xu, He & Cheng 2025).

    python experiments/growing_sample_sizes.py --preset quick --out out/

Presets and the laws checked live in madjax/figures/operators.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["growing-sample-sizes"], __doc__)
