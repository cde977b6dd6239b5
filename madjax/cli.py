"""The ``madjax`` command line (DESIGN §10).

This module parses and validates, calls the library, and writes results. It
holds no numerics. Every bad value -- including the parser's own errors --
ends in exactly one line on stderr, ``madjax: error: --lam: must be in (0, 1],
got 1.5``, and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from madjax import __version__
from madjax.validation import ParameterError

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")


class _UsageError(Exception):
    """A parser error, reported as one line (no usage banner)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse hook
        raise _UsageError(message)


def _fail(message: str) -> int:
    print(f"madjax: error: {message}", file=sys.stderr)
    return 2


def _positive_list(text: str, kind=float) -> list:
    """Parse a comma list such as ``100,1000`` (type errors become usage errors)."""
    try:
        return [kind(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of {kind.__name__}s: {text!r}") from None


def _int_list(text: str) -> list[int]:
    return _positive_list(text, int)


def _float_list(text: str) -> list[float]:
    return _positive_list(text, float)


def _str_list(text: str) -> list[str]:
    return _positive_list(text, str)


def _add_common(p: argparse.ArgumentParser, *, x64: bool = True) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host run with jax.distributed (coordinator from MADJAX_COORDINATOR, "
                        "MADJAX_NUM_PROCESSES, MADJAX_PROCESS_ID, or auto-detected on Slurm/MPI/TPU); "
                        "process 0 writes the results")
    if x64:
        p.add_argument("--x64", action="store_true", help="enable float64 (jax x64 mode) at start-up")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="madjax",
        description=(
            "Self-consuming generative loops in JAX: simulate Gaussian / GMM autophagous loops, "
            "measure the effective sample size n_e, sweep phase diagrams, reproduce the paper's figures."
        ),
    )
    parser.add_argument("--version", action="version", version=f"madjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # simulate ---------------------------------------------------------------------
    p = sub.add_parser("simulate", help="run Monte-Carlo chains of one loop and write a NetCDF file",
                       description="Run C independent chains of a self-consuming loop for T generations.")
    p.add_argument("--model", default="gaussian", help="gaussian | gmm (default gaussian)")
    p.add_argument("--loop", required=True, help=" | ".join(LOOPS))
    p.add_argument("--dim", type=int, default=None, help="dimension d (Gaussian; GMM is 2-D)")
    p.add_argument("--n-ini", type=int, default=None, help="real samples of generation 1")
    p.add_argument("--n-real", type=int, default=None, help="real samples per generation (t >= 2)")
    p.add_argument("--n-syn", type=int, default=None, help="synthetic samples per generation (t >= 2)")
    p.add_argument("--lam", type=float, default=1.0, help="sampling bias λ in (0, 1] (default 1)")
    p.add_argument("--generations", type=int, required=True, help="generations T")
    p.add_argument("--chains", type=int, default=1, help="independent chains C (default 1)")
    p.add_argument("--memory", type=int, default=1, help="memory K: sample from the last K models (default 1)")
    p.add_argument("--accumulate", action="store_true", help="keep every previous generation's synthetic samples")
    p.add_argument("--real-fraction", type=float, default=None, help="real fraction p of --n-total")
    p.add_argument("--n-total", type=int, default=None, help="total training-set size with --real-fraction")
    p.add_argument("--engine", default="exact", help="exact (sufficient statistics) | sampled (draw the points)")
    p.add_argument("--factor", default="auto",
                   help="auto | eigh | cholesky: how each fitted covariance is factorised (default auto: Cholesky "
                        "plus eigenvalues where every covariance has full rank, else eigh)")
    p.add_argument("--w2-every", type=int, default=1,
                   help="record w2 and cov_logdet every k-th generation only (NaN between; default 1)")
    p.add_argument("--chunk", type=int, default=None, help="chains per compiled batch (memory bound)")
    p.add_argument("--out", required=True, help="output NetCDF file (RUN.nc)")
    _add_common(p)

    # effective-size ---------------------------------------------------------------
    p = sub.add_parser("effective-size", help="WD(n_r, n_s, λ), n_e and n_e/n_r of a loop (Eq. 3)",
                       description="Steady-state Wasserstein distance of a loop and its effective sample size n_e.")
    p.add_argument("--loop", required=True, help="fresh | synthetic-augmentation")
    p.add_argument("--w2-every", type=int, default=1,
                   help="average W2 over every k-th generation of the steady window only (default 1)")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--n-real", type=int, required=True)
    p.add_argument("--n-syn", type=int, default=None)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--memory", type=int, default=1)
    p.add_argument("--chains", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threshold", action="store_true",
                   help="find the admissibility boundary n_s* where n_e/n_r = 1 (without --n-syn)")
    _add_common(p)

    # sweep -------------------------------------------------------------------------
    p = sub.add_parser("sweep", help="n_e/n_r over a user grid, resumable (Zarr) and exported (NetCDF)")
    p.add_argument("--loop", required=True, help="fresh | synthetic-augmentation")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--n-real", type=_int_list, default=None, help="comma list")
    p.add_argument("--n-syn", type=_int_list, default=None, help="comma list")
    p.add_argument("--lam", type=_float_list, default=None, help="comma list")
    p.add_argument("--memory", type=_int_list, default=None, help="comma list")
    p.add_argument("--real-fraction", type=_float_list, default=None, help="comma list")
    p.add_argument("--n-total", type=_int_list, default=None, help="comma list")
    p.add_argument("--grid", default=None, help="JSON file {param: [values...]} instead of the lists")
    p.add_argument("--chains", type=int, default=256)
    p.add_argument("--name", default="sweep", help="store name: DIR/NAME.zarr and DIR/NAME.nc")
    p.add_argument("--out", required=True, help="output directory")
    _add_common(p)

    # reproduce / plot --------------------------------------------------------------
    p = sub.add_parser("reproduce", help="reproduce paper figures",
                       description="Run a figure's preset, store its data and draw DIR/FIG.png and DIR/FIG.pdf.")
    p.add_argument("figures", nargs="+", metavar="FIG", help="figure ids, or 'all'")
    p.add_argument("--preset", default="quick", help="smoke | quick | paper (default quick)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the configuration, print shapes and a memory estimate, compile one step")
    _add_common(p)

    p = sub.add_parser("plot", help="redraw a figure from saved data")
    p.add_argument("figure", metavar="FIG", nargs="?",
                   help="figure id; omit it to draw your own sweeps (madjax sweep) under --from")
    p.add_argument("--from", dest="source", required=True, help="directory written by reproduce")

    # train -------------------------------------------------------------------------
    p = sub.add_parser(
        "train", help="run a deep self-consuming loop (one chain), checkpointed and resumable",
        description=(
            "Run one chain of a deep self-consuming loop: GLOW on 2-D Rosenbrock points, or a conditional "
            "DDPM / a WGAN-GP on images (the bundled 8x8 digits, or MNIST IDX files). Writes DIR/metrics.csv "
            "(one row per generation), DIR/samples/gen_<t>.npz and .png, DIR/checkpoints/; run it again "
            "with the same options (and a larger --generations) to resume. "
            "Example: madjax train ddpm --loop fully-synthetic --generations 5 --lam 0.7 --data digits "
            "--preset quick --out runs/ddpm"),
    )
    p.add_argument("model", metavar="MODEL", help="glow (rosenbrock) | ddpm | wgan (digits, mnist)")
    p.add_argument("--loop", required=True, help=" | ".join(LOOPS))
    p.add_argument("--generations", type=int, required=True, help="generations T")
    p.add_argument("--lam", type=float, default=1.0,
                   help="sampling bias λ in (0, 1]: latent variance (glow, wgan) or guidance w = 1/λ - 1 (ddpm)")
    p.add_argument("--data", required=True, help="rosenbrock | digits | mnist")
    p.add_argument("--data-dir", default=None,
                   help="directory of the MNIST IDX files, raw or .gz (default $MADJAX_DATA)")
    p.add_argument("--n-ini", type=int, default=None, help="real samples of generation 1 (default: the preset's)")
    p.add_argument("--n-real", type=int, default=None, help="real samples per generation t >= 2")
    p.add_argument("--n-syn", type=int, default=None, help="synthetic samples per generation t >= 2")
    p.add_argument("--memory", type=int, default=1, help="memory K: sample from the last K models (default 1)")
    p.add_argument("--accumulate", action="store_true", help="keep every previous generation's synthetic samples")
    p.add_argument("--save-every", type=int, default=1, help="write sample files every K generations (and at 1, T)")
    p.add_argument("--preset", default="quick", help="smoke | quick | paper (paper: MNIST sizes, a GPU)")
    p.add_argument("--out", required=True, help="output directory")
    _add_common(p, x64=False)

    # bench -------------------------------------------------------------------------
    p = sub.add_parser("bench", help="benchmarks")
    p.add_argument("what", metavar="WHAT", help="chains")
    p.add_argument("--dim", type=_int_list, default=[100])
    p.add_argument("--n-real", type=int, default=1000)
    p.add_argument("--n-syn", type=_int_list, default=[10000])
    p.add_argument("--lam", type=float, default=0.9)
    p.add_argument("--loop", default="fresh")
    p.add_argument("--chains", type=_int_list, default=[1000])
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--naive-chains", type=int, default=4, help="chains timed for the naive NumPy loop")
    p.add_argument("--factor", type=_str_list, default=["auto"],
                   help="madjax factorisations to time: auto | eigh | cholesky (comma list)")
    p.add_argument("--w2-every", type=_int_list, default=[1], help="W2 every k-th generation (comma list)")
    p.add_argument("--json", action="store_true")
    _add_common(p)
    return parser


def _cmd_simulate(args) -> int:
    from madjax.simulate import simulate_to_file

    simulate_to_file(
        args.out, model=args.model, loop=args.loop, dim=args.dim, n_ini=args.n_ini, n_real=args.n_real,
        n_syn=args.n_syn, lam=args.lam, generations=args.generations, chains=args.chains,
        memory=args.memory, accumulate=args.accumulate, real_fraction=args.real_fraction,
        n_total=args.n_total, engine=args.engine, dtype="float64" if args.x64 else "float32",
        seed=args.seed, factor=args.factor, w2_every=args.w2_every, chunk=args.chunk, progress=not args.quiet,
    )
    return 0


def _cmd_effective_size(args) -> int:
    from madjax.effective import effective_size_cli

    result = effective_size_cli(
        loop=args.loop, dim=args.dim, n_real=args.n_real, n_syn=args.n_syn, lam=args.lam,
        memory=args.memory, chains=args.chains, seed=args.seed, threshold=args.threshold,
        dtype="float64" if args.x64 else "float32", w2_every=args.w2_every, progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result))
    else:
        from madjax.effective import format_result

        print(format_result(result))
    return 0


def _cmd_sweep(args) -> int:
    from madjax.sweeps import sweep_cli

    sweep_cli(args)
    return 0


def _cmd_reproduce(args) -> int:
    from madjax.figures import reproduce

    reproduce(args.figures, preset=args.preset, out=args.out, dry_run=args.dry_run,
              seed=args.seed, progress=not args.quiet)
    return 0


def _cmd_plot(args) -> int:
    from madjax.figures import plot

    for path in plot(args.figure, args.source):
        print(path)
    return 0


def _cmd_train(args) -> int:
    from madjax.deep import train

    train(
        args.model, loop=args.loop, generations=args.generations, lam=args.lam, data=args.data,
        data_dir=args.data_dir, n_ini=args.n_ini, n_real=args.n_real, n_syn=args.n_syn,
        memory=args.memory, accumulate=args.accumulate, save_every=args.save_every,
        seed=args.seed, preset=args.preset, out=args.out, progress=not args.quiet,
    )
    return 0


def _cmd_bench(args) -> int:
    from madjax.bench import bench_cli

    bench_cli(args)
    return 0


_COMMANDS = {
    "simulate": _cmd_simulate,
    "effective-size": _cmd_effective_size,
    "sweep": _cmd_sweep,
    "reproduce": _cmd_reproduce,
    "plot": _cmd_plot,
    "train": _cmd_train,
    "bench": _cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        return _fail(str(err))
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "x64", False):
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        if getattr(args, "distributed", False):
            from madjax.distributed import initialize

            initialize()
        return _COMMANDS[args.command](args)
    except ParameterError as err:
        return _fail(f"{err.option}: {err.message}")
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
