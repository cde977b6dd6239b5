"""Replace vs accumulate vs accumulate-subsample: E||mu_t - mu_0||^2 / m_1 per generation, known and
refitted covariance (Dey & Donoho 2024; Gerstgrasser et al. 2024; Kazdan, Schaeffer et al. 2025).

    python experiments/replace_vs_accumulate.py --preset quick --out out/

Presets and the laws checked live in madjax/figures/operators.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["replace-vs-accumulate"], __doc__)
