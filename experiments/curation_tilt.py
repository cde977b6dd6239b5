"""Curated replace loop: tr Sigma_t against the n -> infinity limit 1/sigma_t^2 = 1/sigma_{t-1}^2 + beta,
and the known-covariance mean's exact error (Ferbach et al. 2024).

    python experiments/curation_tilt.py --preset quick --out out/

Presets and the laws checked live in madjax/figures/operators.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["curation-tilt"], __doc__)
