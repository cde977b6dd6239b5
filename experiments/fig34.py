"""Fresh-data loop: WD vs total n for real fraction p and for lambda (Figure 34).

    python experiments/fig34.py --preset quick --out out/

Grids and presets live in madjax/figures/phase.py.
"""

from madjax.figures import script_main

if __name__ == "__main__":
    script_main(["fig34"], __doc__)
