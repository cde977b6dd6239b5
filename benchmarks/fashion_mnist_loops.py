"""The quick image-loop figures on Fashion-MNIST, a few generations at a time (resumable).

    python benchmarks/fashion_mnist_loops.py --out runs/fashion-mnist --generations 3 fig4 fig13

Runs each figure's quick preset on Fashion-MNIST (``madjax reproduce FIG
--preset quick --data fashion-mnist``: the same configurations, directories
and files) but stops every run at ``--generations`` T instead of the
preset's; running it again with a larger T -- or ``madjax reproduce`` itself
-- continues the saved runs (the generations count may change on resume).
Figures run in the order given, and within a figure its runs one after
another; each is drawn when it finishes. Progress: one log line per
generation on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time


def main(argv=None) -> int:
    from madjax._progress import configure_logging
    from madjax.figures import IMAGE_FIGURES, get_figure

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figures", nargs="+", choices=IMAGE_FIGURES)
    p.add_argument("--out", default="runs/fashion-mnist")
    p.add_argument("--generations", type=int, default=3, help="stop every run at this generation")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.generations < 1:
        p.error(f"--generations: must be >= 1, got {args.generations}")
    configure_logging(0, False)
    os.makedirs(args.out, exist_ok=True)
    for fig_id in args.figures:
        fig = get_figure(fig_id)
        config = fig.with_data(fig.get_config("quick"), "fashion-mnist", args.data_dir)
        config = dataclasses.replace(config, generations=min(args.generations, config.generations))
        config.check_files()
        start = time.perf_counter()
        fig.run(config, args.out, seed=args.seed, progress=True)
        print(f"{fig_id}: {config.generations} generations of {[r.tag for r in config.runs]} in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        for path in fig.plot(args.out):
            print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
