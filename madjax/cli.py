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

from madjax import __version__, compile_cache
from madjax._progress import configure_logging
from madjax.resources import ALLOW_LARGE
from madjax.validation import ParameterError, check_seed

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")
LOOP_ALIASES = ("replace", "accumulate", "accumulate-subsample")  # madjax.loops.LOOP_ALIASES


class _UsageError(Exception):
    """A parser error, reported as one line (no usage banner)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse hook
        """``argument --loop: invalid choice ...`` -> ``--loop: invalid choice ...``: arguments as typed."""
        raise _UsageError(message.removeprefix("argument "))


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help (``(default: 256)``), except where there is none to state."""

    def _get_help_string(self, action):
        # no "(default: …)" for positionals, flags and counters (-v: nargs 0), or options without a default
        if (not action.option_strings or action.nargs == 0
                or any(action.default is v for v in (None, False, argparse.SUPPRESS))):
            return action.help
        return super()._get_help_string(action)


# Deep models of ``train`` (madjax.deep.MODELS; spelled here so that --help does not import flax).
TRAIN_MODELS = ("glow", "ddpm", "wgan")


def _command(sub, name: str, *, help: str, description: str, positionals: dict | None = None):
    """A subcommand; ``positionals`` maps library parameter names to the argument as typed (``figure`` -> FIG)."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=_HelpFormatter)
    p.set_defaults(positionals=positionals or {})
    return p


def _add_run(group, *, seed: bool = True, allow_large: bool = True) -> None:
    """``--seed``, ``--x64``, ``--distributed`` and the override of the up-front resource check."""
    if seed:
        group.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32 - 1")
    if allow_large:
        group.add_argument(ALLOW_LARGE, action="store_true",
                           help="run even what the up-front estimate refuses: more memory than this machine has, "
                                "more than 6 hours of computing or 15 minutes of compiling")
    group.add_argument("--x64", action="store_true", help="enable float64 (jax's x64 mode) at start-up")
    group.add_argument("--distributed", action="store_true",
                       help="multi-host run with jax.distributed (coordinator from MADJAX_COORDINATOR, "
                            "MADJAX_NUM_PROCESSES, MADJAX_PROCESS_ID, or auto-detected on Slurm/MPI/TPU); "
                            "process 0 writes the results")


def _add_talk(group) -> None:
    """``--quiet`` and ``-v``: how much the command says on stderr while it works."""
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars or stage lines (warnings and errors are still shown)")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail on stderr: inner progress (epochs, root-finding stages)")


def _bandwidth(text: str):
    """``--bandwidth``: a rule name or a positive number."""
    if text in ("scott", "silverman"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be scott, silverman or a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be scott, silverman or a positive number, got {text!r}")
    return value


def _add_model(group, models, targets) -> None:
    """``--model`` and the point models' options (DESIGN §10: every command with ``--model``)."""
    group.add_argument("--model", default="gaussian", choices=models,
                       help="gaussian (exact sufficient statistics or sampled), gmm (25-component EM on the 2-D "
                            "grid) or kde (Gaussian kernel density estimate)")
    group.add_argument("--target", default=None, choices=targets,
                       help="target P_r of a point model: normal N(0, I_d) or the 25-mode grid (default: "
                            "the model's own: normal for gaussian and kde, grid for gmm)")
    group.add_argument("--bandwidth", type=_bandwidth, default=None,
                       help="KDE bandwidth: scott, silverman or a number (default scott)")
    group.add_argument("--n-eval", type=int, default=None,
                       help="point models: samples of the fitted model behind total variance, recall, precision "
                            "and modes covered (default 1000 GMM, 512 KDE)")
    _add_gaussian_options(group)


def _model_options(args) -> dict:
    return dict(model=args.model, target=args.target, bandwidth=args.bandwidth, n_eval=args.n_eval,
                estimator=args.estimator, reference=args.reference)


def _add_gaussian_options(group) -> None:
    """The Gaussian's estimator and reference (every command with ``--model``)."""
    group.add_argument("--estimator", default=None, choices=("unbiased", "mle", "known-cov"),
                       help="Gaussian: the covariance estimator: unbiased (Eq. 1, the default), mle (ddof = 0) or "
                            "known-cov (the mean alone, Σ fixed at the reference's)")
    group.add_argument("--reference", default=None, metavar="REF",
                       help="Gaussian: the reference P_r = N(μ₀, Σ₀): identity (default), power:ALPHA "
                            "(eigenvalues k^-ALPHA) or a .npy/.npz/.txt file with Σ₀ or its eigenvalues")


def _add_operators(group, *, scalar: bool = True) -> None:
    """The loop operators (madjax.loops): comma lists where a command sweeps them (``scalar`` False)."""
    number = float if scalar else _float_list
    group.add_argument("--real-weight", type=number, default=None, metavar="W",
                       help="weighted mixing: the fit weighs real points by W and synthetic ones by 1 - W "
                            "(He, Xu & Cheng 2026)")
    group.add_argument("--tilt", type=number, default=None, metavar="BETA",
                       help="curation: draw synthetic samples from the sampler tilted by exp(-BETA |x - μ₀|²/2) "
                            "(Ferbach et al. 2024; Gaussian)")
    group.add_argument("--growth", type=number, default=None, metavar="ALPHA",
                       help="growing sample sizes: generation t draws ceil(n_syn t^ALPHA) synthetic samples "
                            "(Xu, He & Cheng 2025)")


def _add_table(group) -> None:
    group.add_argument("--table-n-max", type=int, default=None,
                       help="largest n of the E-dist table E[W2(G(n), P_r)] (default: as far as the model's cost "
                            "allows: 1e7 Gaussian, 1e5 GMM, 1e4 KDE); beyond it n_e is reported as a bound")


def _groups(p, *titles: str) -> list:
    """Option groups of ``--help`` (loop, sizes, data, run, output)."""
    return [p.add_argument_group(t) for t in titles]


def build_parser() -> argparse.ArgumentParser:
    from madjax.data import DATA_NAMES, FASHION_MNIST_DIR, IMAGE_NAMES
    from madjax.effective import EFFECTIVE_LOOPS
    from madjax.figures import FIGURE_IDS, IMAGE_FIGURES, PRESETS
    from madjax.gaussian import ENGINES, FACTORS
    from madjax.models import MODEL_NAMES
    from madjax.points import TARGETS

    factors = ("auto",) + FACTORS
    parser = _Parser(
        prog="madjax",
        description=(
            "Self-consuming generative loops in JAX: simulate Gaussian / GMM / KDE autophagous loops, "
            "measure the effective sample size n_e, sweep phase diagrams, reproduce the paper's figures. "
            "Compiled functions are cached under $MADJAX_CACHE/jax (MADJAX_COMPILATION_CACHE=0 turns it off)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"madjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # simulate ---------------------------------------------------------------------
    p = _command(sub, "simulate", help="run Monte-Carlo chains of one loop and write a NetCDF file",
                 description="Run C independent chains of a self-consuming loop for T generations and write "
                             "their per-generation diagnostics to RUN.nc (dims chain, generation).")
    loop, sizes, run, output = _groups(p, "loop", "sizes", "run", "output")
    _add_model(loop, MODEL_NAMES, TARGETS)
    loop.add_argument("--loop", required=True, choices=LOOPS + LOOP_ALIASES,
                      help="which self-consuming loop; replace = fully-synthetic, accumulate = "
                           "synthetic-augmentation with --accumulate (real data in the pool), accumulate-subsample "
                           "= accumulate training on a uniform subsample of --n-train points")
    loop.add_argument("--lam", type=float, default=1.0, help="sampling bias λ in (0, 1]")
    loop.add_argument("--memory", type=int, default=1, help="memory K: sample from the last K models")
    loop.add_argument("--accumulate", action="store_true", help="keep every previous generation's synthetic samples")
    _add_operators(loop)
    loop.add_argument("--n-syn-schedule", type=_int_list, default=None, metavar="N2,...,NT",
                      help="synthetic sample sizes of generations 2 ... T (instead of --n-syn and --growth)")
    loop.add_argument("--n-train", type=int, default=None,
                      help="accumulate-subsample: points in each generation's subsample (default: n_real)")
    loop.add_argument("--engine", default=None, choices=ENGINES,
                      help="Gaussian: exact (default): sufficient statistics (Bartlett), any n at O(d³); "
                           "sampled: draw the points")
    loop.add_argument("--factor", default=None, choices=factors,
                      help="Gaussian: how each fitted covariance is factorised (auto, the default: the fastest "
                           "route that is exact for the loop's sizes)")
    sizes.add_argument("--dim", type=int, default=None, help="dimension d (the grid target is 2-D)")
    sizes.add_argument("--n-ini", type=int, default=None, help="real samples of generation 1")
    sizes.add_argument("--n-real", type=int, default=None, help="real samples per generation (t >= 2)")
    sizes.add_argument("--n-syn", type=int, default=None, help="synthetic samples per generation (t >= 2)")
    sizes.add_argument("--real-fraction", type=float, default=None, help="real fraction p of --n-total")
    sizes.add_argument("--n-total", type=int, default=None, help="total training-set size with --real-fraction")
    sizes.add_argument("--generations", type=int, required=True, help="generations T")
    sizes.add_argument("--chains", type=int, default=1,
                       help="independent chains C: one trajectory by default; give hundreds for means and "
                            "standard errors (effective-size and sweep default to 256)")
    run.add_argument("--chunk", type=int, default=None, help="chains per compiled batch (bounds memory)")
    _add_run(run)
    output.add_argument("--out", required=True, help="output NetCDF file (RUN.nc)")
    output.add_argument("--w2-every", type=int, default=None,
                        help="Gaussian, KDE: record w2 (and cov_logdet) every k-th generation only (NaN between; "
                             "default 1)")
    output.add_argument("--theory", action="store_true",
                        help="print, per variable with a closed form (madjax.theory), the largest per-generation "
                             "|z| of the chains' mean against it")
    _add_talk(output)

    # effective-size ---------------------------------------------------------------
    p = _command(sub, "effective-size", help="WD(n_r, n_s, λ), n_e and n_e/n_r of a loop (Eq. 3)",
                 description="Steady-state Wasserstein distance WD of a loop and its effective sample size n_e, "
                             "with standard errors; --threshold finds the admissibility boundary n_s* instead.")
    loop, sizes, run, output = _groups(p, "loop", "sizes", "run", "output")
    _add_model(loop, MODEL_NAMES, TARGETS)
    loop.add_argument("--loop", required=True, choices=EFFECTIVE_LOOPS + LOOP_ALIASES,
                      help="which loop (fresh and synthetic-augmentation have a steady state; the others are refused)")
    loop.add_argument("--lam", type=float, default=1.0, help="sampling bias λ in (0, 1]")
    loop.add_argument("--memory", type=int, default=1, help="memory K: sample from the last K models")
    _add_operators(loop)
    sizes.add_argument("--dim", type=int, default=None, help="dimension d (the grid target is 2-D)")
    sizes.add_argument("--n-real", type=int, required=True, help="real samples per generation n_r")
    sizes.add_argument("--n-syn", type=int, default=None, help="synthetic samples per generation n_s")
    sizes.add_argument("--chains", type=int, default=256,
                       help="chains averaged for WD and its standard error (as sweep; simulate's default is 1)")
    run.add_argument("--threshold", action="store_true",
                     help="find the admissibility boundary n_s* where n_e/n_r = 1 (without --n-syn)")
    run.add_argument("--w2-every", type=int, default=1,
                     help="average W2 over every k-th generation of the steady window only (also with --threshold)")
    _add_table(run)
    _add_run(run)
    output.add_argument("--json", action="store_true", help="print one JSON object")
    _add_talk(output)

    # sweep -------------------------------------------------------------------------
    p = _command(sub, "sweep", help="n_e/n_r over a user grid, resumable (Zarr) and exported (NetCDF)",
                 description="n_e/n_r, WD and their standard errors over your own grid: comma lists (a list of "
                             "one value is fixed, longer lists are swept) or a JSON grid file. Cells are written "
                             "to DIR/NAME.zarr as they finish (rerun the same command to resume) and exported "
                             "to DIR/NAME.nc at the end.")
    loop, sizes, run, output = _groups(p, "loop", "sizes", "run", "output")
    _add_model(loop, MODEL_NAMES, TARGETS)
    loop.add_argument("--loop", required=True, choices=LOOPS + LOOP_ALIASES,
                      help="which loop: fresh or synthetic-augmentation for n_e; any with --trajectory")
    loop.add_argument("--lam", type=_float_list, default=None, help="sampling biases λ in (0, 1], comma list")
    loop.add_argument("--memory", type=_int_list, default=None, help="memories K, comma list")
    _add_operators(loop, scalar=False)
    loop.add_argument("--trajectory", action="store_true",
                      help="record each cell's per-generation means and standard errors of every diagnostic "
                           "instead of n_e (any loop and operator, growth included; needs --generations)")
    loop.add_argument("--generations", type=int, default=None, help="generations T of a --trajectory sweep")
    loop.add_argument("--accumulate", action="store_true", help="--trajectory: the accumulating pool")
    loop.add_argument("--engine", default=None, choices=ENGINES, help="--trajectory, Gaussian: exact or sampled")
    loop.add_argument("--n-train", type=_int_list, default=None,
                      help="--trajectory, accumulate-subsample: points in each generation's subsample, comma list")
    sizes.add_argument("--dim", type=int, default=None, help="dimension d (the grid target is 2-D)")
    sizes.add_argument("--n-ini", type=_int_list, default=None, help="--trajectory: real samples of generation 1")
    sizes.add_argument("--n-real", type=_int_list, default=None, help="real samples per generation n_r, comma list")
    sizes.add_argument("--n-syn", type=_int_list, default=None,
                       help="synthetic samples per generation n_s, comma list")
    sizes.add_argument("--real-fraction", type=_float_list, default=None,
                       help="real fractions p of --n-total, comma list")
    sizes.add_argument("--n-total", type=_int_list, default=None, help="training-set sizes n, comma list")
    sizes.add_argument("--grid", default=None, help="JSON file {param: [values...]} instead of the lists")
    sizes.add_argument("--chains", type=int, default=256,
                       help="chains per cell (as effective-size; simulate's default is 1)")
    _add_table(run)
    _add_run(run)
    output.add_argument("--out", required=True, help="output directory")
    output.add_argument("--name", default="sweep", help="store name: DIR/NAME.zarr and DIR/NAME.nc")
    _add_talk(output)

    # reproduce / plot --------------------------------------------------------------
    figs = "figure ids (" + ", ".join(FIGURE_IDS) + ")"
    p = _command(sub, "reproduce", help="reproduce paper figures", positionals={"figure": "FIG"},
                 description="Run a figure's preset, store its data and draw DIR/FIG.png and DIR/FIG.pdf.")
    p.add_argument("figures", nargs="+", metavar="FIG", choices=FIGURE_IDS + ("all",), help=figs + ", or all")
    run, data, output = _groups(p, "run", "data", "output")
    run.add_argument("--preset", default="quick", choices=PRESETS,
                     help="smoke: seconds; quick: minutes on a laptop; paper: the paper's sizes (GPU-scale)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate, print shapes, work, a memory estimate and the wall time estimated on this "
                          "machine (a short calibration run), without running")
    _add_run(run, allow_large=False)  # fixed presets: nothing to override
    data.add_argument("--data", default=None, choices=IMAGE_NAMES,
                      help=f"images of the image figures ({', '.join(IMAGE_FIGURES)}; with 'all', those only), "
                           "scored by LeNet-FID, precision and recall (default: the preset's own, digits for smoke "
                           "and quick, mnist for paper)")
    data.add_argument("--data-dir", default=None,
                      help="directory of the mnist / fashion-mnist IDX files, raw or .gz (default $MADJAX_DATA for "
                           f"mnist, {FASHION_MNIST_DIR} for fashion-mnist)")
    output.add_argument("--out", required=True, help="output directory")
    _add_talk(output)

    p = _command(sub, "plot", help="redraw a figure from saved data", positionals={"figure": "FIG"},
                 description="Redraw DIR/FIG.png and DIR/FIG.pdf from the data that reproduce stored in DIR. "
                             "Without FIG, draw each sweep DIR/NAME.nc written by `madjax sweep` as "
                             "DIR/NAME.png: a phase diagram over two or three swept parameters, a line plot over one.")
    p.add_argument("figure", metavar="FIG", nargs="?", choices=FIGURE_IDS,
                   help=figs + "; omit it to draw your own sweeps")
    (output,) = _groups(p, "output")
    output.add_argument("--from", dest="source", required=True, help="directory written by reproduce")
    _add_talk(output)

    # train -------------------------------------------------------------------------
    p = _command(
        sub, "train", help="run a deep self-consuming loop (one chain), checkpointed and resumable",
        positionals={"model": "MODEL"},
        description=(
            "Run one chain of a deep self-consuming loop: GLOW on 2-D Rosenbrock points, or a conditional "
            "DDPM / a WGAN-GP on images (the bundled 8x8 digits, or the 28x28 MNIST or Fashion-MNIST IDX files), "
            "scored by LeNet-FID (the Frechet distance in the features of a LeNet trained on the data, not "
            "Inception FID), precision and recall. Writes DIR/metrics.csv "
            "(one row per generation), DIR/samples/gen_<t>.npz and .png, DIR/checkpoints/; run it again "
            "with the same options (and a larger --generations) to resume. "
            "Example: madjax train ddpm --loop fully-synthetic --generations 5 --lam 0.7 --data digits "
            "--preset quick --out runs/ddpm"),
    )
    p.add_argument("model", metavar="MODEL", choices=TRAIN_MODELS,
                   help="glow (on rosenbrock) | ddpm | wgan (on digits, mnist or fashion-mnist)")
    loop, sizes, data, run, output = _groups(p, "loop", "sizes", "data", "run", "output")
    loop.add_argument("--loop", required=True, choices=LOOPS + LOOP_ALIASES, help="which self-consuming loop")
    loop.add_argument("--growth", type=float, default=None, metavar="ALPHA",
                      help="growing sample sizes: generation t draws ceil(n_syn t^ALPHA) synthetic samples")
    loop.add_argument("--n-train", type=int, default=None,
                      help="accumulate-subsample: rows in each generation's subsample (default: n_ini)")
    loop.add_argument("--lam", type=float, default=1.0,
                      help="sampling bias λ in (0, 1]: latent variance (glow, wgan) or guidance w = 1/λ - 1 (ddpm)")
    loop.add_argument("--memory", type=int, default=1, help="memory K: sample from the last K models")
    loop.add_argument("--accumulate", action="store_true", help="keep every previous generation's synthetic samples")
    sizes.add_argument("--generations", type=int, required=True, help="generations T")
    sizes.add_argument("--n-ini", type=int, default=None, help="real samples of generation 1 (default: the preset's)")
    sizes.add_argument("--n-real", type=int, default=None, help="real samples per generation t >= 2")
    sizes.add_argument("--n-syn", type=int, default=None, help="synthetic samples per generation t >= 2")
    sizes.add_argument("--real-fraction", type=float, default=None, help="real fraction p of --n-total")
    sizes.add_argument("--n-total", type=int, default=None, help="training-set size with --real-fraction")
    data.add_argument("--data", required=True, choices=DATA_NAMES, help="training data")
    data.add_argument("--data-dir", default=None,
                      help="directory of the mnist / fashion-mnist IDX files, raw or .gz (default $MADJAX_DATA for "
                           f"mnist, {FASHION_MNIST_DIR} for fashion-mnist)")
    run.add_argument("--preset", default="quick", choices=PRESETS,
                     help="model and training sizes (paper: 60 000 MNIST / Fashion-MNIST images, a GPU)")
    _add_run(run)
    output.add_argument("--out", required=True, help="output directory")
    output.add_argument("--save-every", type=int, default=1,
                        help="write sample files every K generations (and at 1 and T)")
    _add_talk(output)

    # bench -------------------------------------------------------------------------
    p = _command(sub, "bench", help="time the exact engine's chain throughput", positionals={"what": "WHAT"},
                 description="Chain throughput of the exact engine against a naive NumPy loop and the "
                             "eigvalsh + Cholesky floor, on the same shapes; prints a table (or --json).")
    p.add_argument("what", metavar="WHAT", choices=("chains",), help="what to time: chains")
    loop, sizes, run, output = _groups(p, "loop", "sizes", "run", "output")
    loop.add_argument("--loop", default="fresh", choices=("fresh",), help="the loop timed")
    loop.add_argument("--lam", type=float, default=0.9, help="sampling bias λ in (0, 1]")
    sizes.add_argument("--dim", type=_int_list, default="100", help="dimensions d, comma list")
    sizes.add_argument("--n-real", type=int, default=1000, help="real samples per generation n_r")
    sizes.add_argument("--n-syn", type=_int_list, default="10000", help="synthetic samples n_s, comma list")
    sizes.add_argument("--chains", type=_int_list, default="1000",
                       help="chains per timed call, comma list (1000: the size the speed goals are stated for)")
    sizes.add_argument("--generations", type=int, default=20, help="generations per timed call")
    sizes.add_argument("--naive-chains", type=int, default=4, help="chains timed for the naive NumPy loop")
    run.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                     help="dtype of the madjax rows (float64 needs --x64)")
    run.add_argument("--factor", type=_str_list, default="auto",
                     help=f"madjax factorisations to time, comma list of {', '.join(factors)}")
    run.add_argument("--w2-every", type=_int_list, default="1", help="W2 every k-th generation, comma list")
    _add_run(run)
    output.add_argument("--json", action="store_true", help="print one JSON object with a list of rows")
    _add_talk(output)
    return parser


def _cmd_simulate(args) -> int:
    from madjax.simulate import simulate_to_file, theory_table

    ds = simulate_to_file(
        args.out, model=args.model, loop=args.loop, dim=args.dim, n_ini=args.n_ini, n_real=args.n_real,
        n_syn=args.n_syn, lam=args.lam, generations=args.generations, chains=args.chains,
        memory=args.memory, accumulate=args.accumulate, real_fraction=args.real_fraction,
        n_total=args.n_total, engine=args.engine, dtype="float64" if args.x64 else "float32",
        seed=args.seed, factor=args.factor, w2_every=args.w2_every, chunk=args.chunk, progress=not args.quiet,
        allow_large=args.allow_large, target=args.target, bandwidth=args.bandwidth, n_eval=args.n_eval,
        estimator=args.estimator, reference=args.reference, n_train=args.n_train, real_weight=args.real_weight,
        tilt=args.tilt, growth=args.growth, n_syn_schedule=args.n_syn_schedule,
    )
    if args.theory:
        print(theory_table(ds))
    return 0


def _effective_size_command(*, loop, dim, n_real, n_syn, lam, memory, chains, seed, threshold, dtype, w2_every=1,
                            progress=True, allow_large=False, model="gaussian", target=None, bandwidth=None,
                            n_eval=None, table_n_max=None, estimator=None, reference=None, real_weight=None,
                            tilt=None, growth=None) -> dict:
    """``madjax effective-size``: validation first, then one computation, or with ``threshold`` two (n_s*, then
    n_e at n_s* rounded); returns the JSON record of DESIGN §10."""
    from madjax._progress import log
    from madjax.effective import admissibility_threshold, choose_model, effective_size, validate_inputs

    from madjax.effective import operator_values

    choice = choose_model(model, dim=dim, dtype=dtype, target=target, w2_every=w2_every, bandwidth=bandwidth,
                          n_eval=n_eval, estimator=estimator, reference=reference)
    validate_inputs(loop, dim, n_real, n_syn, lam, memory, chains, seed, dtype, choice)
    ops = dict(real_weight=real_weight, tilt=tilt, growth=growth)
    operator_values(**ops)
    if threshold and n_syn is not None:
        raise ParameterError("threshold", "searches n_s itself: omit --n-syn")
    if not threshold and n_syn is None:
        raise ParameterError("n_syn", "is required (or use --threshold)")
    if threshold:
        found = admissibility_threshold(loop=loop, n_real=n_real, lam=lam, memory=memory, chains=chains,
                                        seed=seed, progress=progress, allow_large=allow_large, model=choice,
                                        table_n_max=table_n_max, **ops)
        star = found["n_syn_star"]
        n_syn_eval = int(round(star)) if star is not None else int(found["n_syn_star_lo"])
        log.info("evaluating n_e at n_s = %d (n_s* rounded)", n_syn_eval)
        result = effective_size(loop=loop, n_real=n_real, n_syn=n_syn_eval, lam=lam, memory=memory,
                                chains=chains, seed=seed, allow_large=allow_large, model=choice,
                                table_n_max=table_n_max, **ops)
        result["n_syn"] = n_syn_eval
        result.update({k: found[k] for k in ("n_syn_star", "n_syn_star_lo", "n_syn_star_hi")})
        return result
    return effective_size(loop=loop, n_real=n_real, n_syn=n_syn, lam=lam, memory=memory, chains=chains,
                          seed=seed, allow_large=allow_large, model=choice, table_n_max=table_n_max, **ops)


def _cmd_effective_size(args) -> int:
    result = _effective_size_command(
        loop=args.loop, dim=args.dim, n_real=args.n_real, n_syn=args.n_syn, lam=args.lam,
        memory=args.memory, chains=args.chains, seed=args.seed, threshold=args.threshold,
        dtype="float64" if args.x64 else "float32", w2_every=args.w2_every, progress=not args.quiet,
        allow_large=args.allow_large, table_n_max=args.table_n_max, real_weight=args.real_weight, tilt=args.tilt,
        growth=args.growth, **_model_options(args),
    )
    if args.json:
        print(json.dumps(result))
    else:
        from madjax.effective import format_result

        print(format_result(result))
    return 0


def _sweep_command(*, values: dict, grid_file: str | None, out: str, name: str, loop: str, dim: int, chains: int,
                   seed: int, dtype: str, progress: bool, allow_large: bool, model="gaussian", target=None,
                   bandwidth=None, n_eval=None, table_n_max=None, estimator=None, reference=None,
                   trajectory: bool = False, generations: int | None = None, accumulate: bool = False,
                   engine=None):
    """``madjax sweep``: ``values`` (a list per parameter, None where not given) or a JSON ``grid_file``;
    lists with one value are fixed, longer lists are swept. Prints the exported file unless quiet.
    With ``trajectory``, per-generation means and standard errors instead of n_e
    (:func:`madjax.sweeps.run_trajectory_sweep`)."""
    import os

    from madjax.sweeps import read_grid_file, run_effective_sweep, run_trajectory_sweep

    if grid_file is not None:
        values = read_grid_file(grid_file)
    else:
        values = {k: v for k, v in values.items() if v is not None}
    grid = {k: v for k, v in values.items() if len(v) > 1}
    fixed = {k: v[0] for k, v in values.items() if len(v) == 1}
    if not grid:  # a single cell is a grid of one
        first = next(iter(fixed), None)
        if first is None:
            raise ParameterError("n_real", "no grid given")
        grid = {first: [fixed.pop(first)]}
    if trajectory:
        if generations is None:
            raise ParameterError("generations", "is required with --trajectory")
        ds = run_trajectory_sweep(out, name, loop=loop, grid=grid, fixed=fixed, generations=generations,
                                  chains=chains, seed=seed, progress=progress, allow_large=allow_large, dim=dim,
                                  dtype=dtype, model=model, target=target, bandwidth=bandwidth, n_eval=n_eval,
                                  estimator=estimator, reference=reference, accumulate=accumulate, engine=engine)
    else:
        for option, value in (("generations", generations), ("accumulate", accumulate or None), ("engine", engine)):
            if value is not None:
                raise ParameterError(option, "is an option of --trajectory sweeps")
        ds = run_effective_sweep(out, name, loop=loop, dim=dim, grid=grid, fixed=fixed, chains=chains, seed=seed,
                                 dtype=dtype, progress=progress, allow_large=allow_large, model=model,
                                 target=target, bandwidth=bandwidth, n_eval=n_eval, table_n_max=table_n_max,
                                 estimator=estimator, reference=reference)
    if progress:
        print(os.path.join(out, f"{name}.nc"))
    return ds


def _cmd_sweep(args) -> int:
    from madjax.sweeps import SWEEP_PARAMS, TRAJECTORY_PARAMS

    names = TRAJECTORY_PARAMS if args.trajectory else [k for k in SWEEP_PARAMS if k != "n_ini"] + ["growth"]
    _sweep_command(values={k: getattr(args, k, None) for k in names}, grid_file=args.grid,
                   out=args.out, name=args.name, loop=args.loop, dim=args.dim, chains=args.chains, seed=args.seed,
                   dtype="float64" if args.x64 else "float32", progress=not args.quiet, allow_large=args.allow_large,
                   table_n_max=args.table_n_max, trajectory=args.trajectory, generations=args.generations,
                   accumulate=args.accumulate, engine=args.engine, **_model_options(args))
    return 0


def _cmd_reproduce(args) -> int:
    from madjax.figures import reproduce

    reproduce(args.figures, preset=args.preset, out=args.out, dry_run=args.dry_run,
              seed=args.seed, progress=not args.quiet, data=args.data, data_dir=args.data_dir)
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
        memory=args.memory, accumulate=args.accumulate, real_fraction=args.real_fraction, n_total=args.n_total,
        n_train=args.n_train, growth=args.growth, save_every=args.save_every,
        seed=args.seed, preset=args.preset, out=args.out, progress=not args.quiet, allow_large=args.allow_large,
    )
    return 0


def _bench_command(*, what: str, dim: list, n_real: int, n_syn: list, chains: list, lam: float, loop: str,
                   generations: int, dtype: str, naive_chains: int, factor: list, w2_every: list, json_out: bool,
                   allow_large: bool) -> dict:
    """``madjax bench chains``: validate, time, print a table (or one JSON object); returns the result."""
    from madjax.bench import bench_chains, format_table
    from madjax.validation import check_choice

    check_choice("what", what, ("chains",))
    result = bench_chains(dim=dim, n_real=n_real, n_syn=n_syn, chains=chains, lam=lam, loop=loop,
                          generations=generations, dtype=dtype, naive_chains=naive_chains, factor=factor,
                          w2_every=w2_every, allow_large=allow_large)
    print(json.dumps(result) if json_out else format_table(result["rows"]))
    return result


def _cmd_bench(args) -> int:
    _bench_command(what=args.what, dim=args.dim, n_real=args.n_real, n_syn=args.n_syn, chains=args.chains,
                   lam=args.lam, loop=args.loop, generations=args.generations,
                   dtype="float64" if args.x64 else args.dtype, naive_chains=args.naive_chains, factor=args.factor,
                   w2_every=args.w2_every, json_out=args.json, allow_large=args.allow_large)
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
    configure_logging(args.verbose, args.quiet)
    compile_cache.configure()
    if getattr(args, "x64", False):
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        if hasattr(args, "seed"):  # every command that takes a seed: one range, checked before anything
            check_seed(args.seed)
        if getattr(args, "distributed", False):
            from madjax.distributed import initialize

            initialize()
        return _COMMANDS[args.command](args)
    except ParameterError as err:
        return _fail(f"{args.positionals.get(err.param, err.option)}: {err.message}")
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
