"""WGAN-GP, unbiased fully synthetic loop: FID, precision and recall vs generation (Figure 13).

    python experiments/fig13_wgan.py --preset quick --out out/

Presets live in madjax/figures/wgan.py; the paper preset reads MNIST from $MADJAX_DATA.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig13"], __doc__)
