"""Up-front estimates of a run's memory and time: the absurd is refused before any work.

Every command estimates what a request needs before it compiles or writes
anything, and refuses -- with one line giving the estimate and the option that
drives it -- a request that needs more memory than this machine has, more than
six hours of computing, or more than a quarter of an hour of compiling.
``--allow-large`` (``allow_large=True`` in Python) runs it anyway.

The estimates are deliberately optimistic (fast hardware, no overheads), so
that only requests that could not finish in any reasonable time, or could not
fit at all, are refused; ordinary long runs are not. Memory is shapes × dtype:
one chain's working set (the scan carry, a few d×d matrices per ring-buffer
slot; the point buffers of engines that draw points), one compiled chunk of
chains, and the records kept on the host (chains × T × variables, in a few
copies). Time is chain-generations × a per-chain-generation cost that grows
like d³ (the factorisations) and with the points drawn, × K for memory K (K
groups drawn), plus a latency per generation (a scan runs its generations one
after another, so a long burn-in costs time whatever the batch); compilation
grows with K (the K sampling groups are unrolled into the program: about
0.035 s per slot measured on a 2-core CPU). A deep loop (``train``) is
estimated from its largest training set and its generations.
"""

from __future__ import annotations

import os

from madjax.validation import ParameterError

ALLOW_LARGE = "--allow-large"
TIME_LIMIT_S = 6 * 3600.0
COMPILE_LIMIT_S = 15 * 60.0
STEP_S = 1e-4  # latency of one scan step (one generation), whatever the batch: ~2e-4 s measured, 1 chain, CPU
FLOP_S = 1e-11  # seconds per multiply-add: 100 GFLOP/s
CHAIN_GENERATION_MIN_S = 5e-7  # 2·10⁶ chain-generations per second at best (6·10⁴ measured on 2 CPU cores)
COMPILE_SLOT_S = 0.02  # compile seconds per ring-buffer slot (unrolled sampling groups)
NUMPY_GENERATION_S = 1e-5  # one chain-generation of a Python/NumPy loop: ~10 NumPy calls of >= 1 µs
CELL_S = 5e-3  # a sweep writes each cell to its store: 5 ms at the very least
TRAIN_GENERATION_MIN_S = 0.1  # a deep generation fits a network and samples from it: 0.1 s at the very best
RECORD_FIELDS = 8  # per-(chain, generation) values the loop records
HOST_COPIES = 3  # device result, host copy, the Dataset being written
# "Typical" size of each option: the option most times its typical size is named as the cause.
_TYPICAL = {"chains": 1e4, "generations": 1e4, "dim": 1e3, "memory": 1e2, "n_ini": 1e7, "n_real": 1e7, "n_syn": 1e7,
            "naive_chains": 1e2}


def memory_limit() -> int:
    """This machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a large machine
        return 1 << 40


def chain_bytes(dim: int, memory: int, itemsize: int, *, points: int = 0, width: int | None = None,
                pool_rows: int = 0) -> int:
    """Working set of one chain: ``4K + 8`` d×d matrices (the K-slot ring buffer of models and the
    generation's temporaries) and, for engines that draw points, ``3 (K + 2)`` buffers of ``points``
    rows of ``width`` values (default d) plus an accumulated pool of ``pool_rows`` rows."""
    width = dim if width is None else width
    return ((4 * memory + 8) * dim * dim + (3 * (memory + 2) * points + pool_rows) * width) * itemsize


def chain_generation_seconds(dim: int, memory: int = 1, *, points: int = 0, width: int | None = None) -> float:
    """Optimistic seconds per chain-generation: a d³ factorisation and ``points × width × d`` work per
    model drawn from, K models with memory K."""
    width = dim if width is None else width
    return max(CHAIN_GENERATION_MIN_S, FLOP_S * (dim**3 + points * width * dim)) * memory


def cause(**sizes: float) -> str:
    """The option whose value is largest next to its typical size: the one to change."""
    return max(sizes, key=lambda name: sizes[name] / _TYPICAL[name])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def _refuse(param: str, need: str, limit: str) -> ParameterError:
    return ParameterError(param, f"{need}, more than {limit}; lower it, or override with {ALLOW_LARGE} "
                                 "(allow_large=True)")


def check_budget(param: str, *, what: str, nbytes: float = 0.0, seconds: float = 0.0, compile_s: float = 0.0,
                 allow_large: bool = False) -> None:
    """Refuse ``what`` (a description of the request) if it needs more than this machine's memory,
    :data:`TIME_LIMIT_S` of computing or :data:`COMPILE_LIMIT_S` of compiling, unless ``allow_large``."""
    if allow_large:
        return
    limit = memory_limit()
    if nbytes > limit:
        raise _refuse(param, f"{what} needs ~{format_bytes(nbytes)} of memory", f"this machine's "
                                                                                 f"{format_bytes(limit)}")
    if compile_s > COMPILE_LIMIT_S:
        raise _refuse(param, f"{what} would take ~{format_seconds(compile_s)} to compile",
                      format_seconds(COMPILE_LIMIT_S))
    if seconds > TIME_LIMIT_S:
        raise _refuse(param, f"{what} would take at least ~{format_seconds(seconds)}", format_seconds(TIME_LIMIT_S))


def check_chain_run(*, chains: int, generations: int, per_chain_bytes: int, per_chain_gen_s: float, chunk: int,
                    memory: int, sizes: dict, what: str, allow_large: bool) -> None:
    """A batch of independent chains run in compiled chunks of ``chunk`` chains, each chain
    recording :data:`RECORD_FIELDS` values per generation (``simulate``, ``bench``).

    ``sizes``: the options behind the request (``chains``, ``generations``,
    ``dim``, ``memory``, point counts) for naming the cause.
    """
    record = generations * RECORD_FIELDS * 8
    nbytes = chunk * (per_chain_bytes + record) + chains * record * HOST_COPIES
    calls = -(-chains // chunk)
    seconds = calls * generations * STEP_S + chains * generations * per_chain_gen_s
    check_budget(cause(**sizes), what=what, nbytes=nbytes, seconds=seconds, compile_s=memory * COMPILE_SLOT_S,
                 allow_large=allow_large)


def check_train_run(*, generations: int, n_ini: int, points: int, width: int, allow_large: bool) -> None:
    """A deep loop (``train``): its largest training set (``points`` samples of ``width`` float32
    values, in a few copies) must fit in memory, and ``generations`` × :data:`TRAIN_GENERATION_MIN_S`
    in the time limit."""
    check_budget(cause(generations=generations, n_ini=n_ini, n_syn=points),
                 what=f"{generations} generations training on up to {points} samples of {width} values",
                 nbytes=points * width * 4 * HOST_COPIES, seconds=generations * TRAIN_GENERATION_MIN_S,
                 allow_large=allow_large)
