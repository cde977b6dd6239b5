"""Figures 11/12: a 25-mode GMM in the unbiased fully synthetic loop.

Runs (or resumes) ``madjax reproduce fig11 fig12`` and prints, at the
snapshot generations (t = 1, T/10, T), the modes covered, recall, average
modal variance and total variance (mean and range over chains), plus the wall
time.

    python experiments/fig11_12_gmm.py --preset quick --out runs/gmm_quick
"""

import argparse
import os
import time

import xarray as xr

from madjax.figures import reproduce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    reproduce(["fig11", "fig12"], preset=args.preset, out=args.out, seed=args.seed)
    wall = time.perf_counter() - start

    ds = xr.load_dataset(os.path.join(args.out, "fig11_12.nc"))
    print(f"{'t':>5} | {'modes covered':>20} | {'recall':>6} | {'modal var':>9} | {'total var':>9}")
    for t in ds.snapshot.values:
        at = ds.sel(generation=t)
        modes = at.modes_covered.values
        print(f"{int(t):5d} | {modes.mean():6.1f} (min {modes.min():2d}, max {modes.max():2d}) | "
              f"{float(at.recall.mean()):6.3f} | {float(at.modal_variance.mean()):9.2e} | "
              f"{float(at.total_variance.mean()):9.2f}")
    print(f"{ds.sizes['chain']} chains, {ds.sizes['generation']} generations; wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
