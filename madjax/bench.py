"""Chain throughput of the exact engine against a naive NumPy loop and a LAPACK floor.

Three engines, timed in one run on the same shapes (DESIGN §10 ``bench chains``):

* ``madjax``: the compiled fresh loop (:func:`madjax.loops.run_chains_jit`),
  chains × T chain-generations, with the factorisation the simulator picks
  (``factor``: Cholesky + eigenvalues where every Σ has full rank, else
  ``eigh``; rows may also time ``eigh`` for comparison) and W2 every
  generation, or every k-th (``w2_every``). Compilation is timed apart
  (first call minus the steady-state median); every timing calls
  ``block_until_ready``.
* ``numpy-naive``: what a user would write without the sufficient statistics
  -- draw the points, ``np.cov``, ``eigh`` for the square root and W2 --
  one chain at a time (:func:`naive_chain_generations`, pinned here).
* ``floor``: one batched ``eigvalsh`` plus one batched Cholesky on the same
  (chains, d, d) shapes: the decomposition work any exact engine must do.

Rows hold ``engine, loop, dim, n_real, n_syn, lam, chains, dtype, device,
threads, chain_gen_per_s, compile_s`` (``compile_s`` is None where nothing
compiles) and, for ``madjax`` rows, ``factor`` and ``w2_every``.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from madjax.gaussian import FACTORS
from madjax.gaussian import GaussianSpec, choose_factor
from madjax.loops import LoopParams, LoopSpec, run_chains_jit
from madjax.resources import (
    FLOP_S,
    HOST_COPIES,
    NUMPY_GENERATION_S,
    cause,
    chain_bytes,
    chain_generation_seconds,
    check_budget,
    check_chain_run,
)
from madjax.validation import (
    ParameterError,
    check_choice,
    check_dtype,
    check_int,
    check_lam,
    check_loop_sizes,
)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
REPEATS = 3  # timed calls after the first (which includes compilation)
NAIVE_GENERATIONS = 3  # generations per chain of the naive NumPy loop


def machine() -> dict:
    """Thread settings, core count and load: recorded beside every benchmark."""
    info = {k: os.environ.get(k) for k in THREAD_VARS}
    info["cpu_count"] = os.cpu_count()
    info["loadavg"] = os.getloadavg()
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = None
    info["device"] = device_name()
    return info


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind}"


def _threads() -> str:
    return os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or f"default({os.cpu_count()})"


def _timed(fn, repeats: int):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    steady = statistics.median(times)
    return steady, max(first - steady, 0.0)


def time_madjax(*, dim, n_real, n_syn, lam, chains, generations, dtype, loop="fresh", factor="auto", w2_every=1,
                repeats=REPEATS):
    if factor == "auto":
        factor = choose_factor(loop, dim, n_ini=n_real, n_real=n_real, n_syn=n_syn)
    spec = LoopSpec(kind=loop, model=GaussianSpec(dim=dim, dtype=dtype, factor=factor, w2_every=w2_every))
    params = LoopParams.create(n_ini=n_real, n_real=n_real, n_syn=n_syn, lam=lam, dtype=dtype)
    ids = jnp.arange(chains, dtype=jnp.uint32)
    key = jax.random.key(0)
    steady, compile_s = _timed(lambda: run_chains_jit(key, ids, params, spec, generations), repeats)
    return chains * generations / steady, compile_s


# Two executables, run one after the other: in one executable the two
# independent LAPACK calls may run at once, which deadlocks jaxlib's CPU
# kernels (madjax.gaussian.symmetric_eigvals).
_eigvalsh = jax.jit(jnp.linalg.eigvalsh)
_cholesky = jax.jit(jnp.linalg.cholesky)


def time_floor(*, dim, chains, dtype, repeats=REPEATS):
    """One batched ``eigvalsh`` plus one batched Cholesky of ``(chains, d, d)`` SPD matrices."""
    x = jax.random.normal(jax.random.key(0), (chains, dim, dim), dtype)
    s = x @ jnp.swapaxes(x, 1, 2) / dim + jnp.eye(dim, dtype=dtype)
    steady, compile_s = _timed(lambda: (jax.block_until_ready(_eigvalsh(s)), _cholesky(s)), repeats)
    return chains / steady, compile_s


def naive_chain_generations(rng, *, dim, n_ini, n_real, n_syn, lam, generations, dtype=np.float32):
    """The per-chain NumPy loop a user would write: points, np.cov, eigh. Returns W2 per generation."""
    mean = np.zeros(dim)
    cov = np.eye(dim)
    w2 = []
    for t in range(1, generations + 1):
        if t == 1:
            x = rng.standard_normal((n_ini, dim)).astype(dtype)
        else:
            e, v = np.linalg.eigh(cov)
            root = v * np.sqrt(np.clip(e, 0, None))
            syn = mean + np.sqrt(lam) * rng.standard_normal((n_syn, dim)).astype(dtype) @ root.T
            x = np.concatenate([rng.standard_normal((n_real, dim)).astype(dtype), syn.astype(dtype)])
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False)
        e = np.clip(np.linalg.eigvalsh(cov), 0, None)
        w2.append(np.sqrt(mean @ mean + np.sum((np.sqrt(e) - 1) ** 2)))
    return np.array(w2)


def time_naive(*, dim, n_real, n_syn, lam, chains, generations, dtype):
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(chains):
        # n_ini = n_r + n_s: generation 1 costs what every later one does
        naive_chain_generations(rng, dim=dim, n_ini=n_real + n_syn, n_real=n_real, n_syn=n_syn, lam=lam,
                                generations=generations, dtype=np.dtype(dtype))
    return chains * generations / (time.perf_counter() - start)


def bench_rows(*, dims, n_real, n_syns, lam, chains_list, generations, dtype, naive_chains=2,
               naive_generations=NAIVE_GENERATIONS, loop="fresh", factors=("auto",), w2_every=(1,),
               progress=None) -> list[dict]:
    """Rows of the three engines; one ``madjax`` row per (n_s, factor, w2_every)."""
    rows = []
    for dim in dims:
        for chains in chains_list:
            base = dict(loop=loop, dim=dim, n_real=n_real, lam=lam, chains=chains, dtype=dtype,
                        device=device_name(), threads=_threads())
            rate, comp = time_floor(dim=dim, chains=chains, dtype=dtype)
            rows.append(dict(base, engine="floor", n_syn=None, chain_gen_per_s=rate, compile_s=comp))
            for n_syn in n_syns:
                for factor in factors:
                    if factor == "auto":
                        factor = choose_factor(loop, dim, n_ini=n_real, n_real=n_real, n_syn=n_syn)
                    for every in w2_every:
                        rate, comp = time_madjax(dim=dim, n_real=n_real, n_syn=n_syn, lam=lam, chains=chains,
                                                 generations=generations, dtype=dtype, loop=loop, factor=factor,
                                                 w2_every=every)
                        rows.append(dict(base, engine="madjax", n_syn=n_syn, factor=factor, w2_every=every,
                                         chain_gen_per_s=rate, compile_s=comp))
                        if progress:
                            progress(rows[-1])
                if naive_chains > 0:
                    rate = time_naive(dim=dim, n_real=n_real, n_syn=n_syn, lam=lam, chains=naive_chains,
                                      generations=naive_generations, dtype=dtype)
                    rows.append(dict(base, engine="numpy-naive", n_syn=n_syn, chains=naive_chains,
                                     chain_gen_per_s=rate, compile_s=None))
                    if progress:
                        progress(rows[-1])
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'engine':<12} {'factor':<9} {'w2 every':>8} {'dim':>4} {'n_syn':>8} {'chains':>7} {'dtype':<8} "
            f"{'chain-gen/s':>12} {'compile s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        n_syn = "-" if r["n_syn"] is None else str(r["n_syn"])
        lines.append(f"{r['engine']:<12} {r.get('factor', '-'):<9} {r.get('w2_every', '-')!s:>8} {r['dim']:>4} "
                     f"{n_syn:>8} {r['chains']:>7} {r['dtype']:<8} {r['chain_gen_per_s']:>12.4g} {comp:>9}")
    return "\n".join(lines)


def check_bench_resources(*, dims, n_real, n_syns, chains_list, generations, dtype, naive_chains, runs,
                          allow_large) -> None:
    """Refuse absurd benchmark shapes before timing anything (:mod:`madjax.resources`): every madjax row
    runs all its chains at once, ``1 + repeats`` times per factorisation and W2 period (``runs``), and
    the naive loop draws all n_r + n_s points of a generation in float64."""
    for n_syn in n_syns:
        check_loop_sizes(n_ini=n_real, n_real=n_real, n_syn=n_syn, generations=generations)
    itemsize = np.dtype(dtype).itemsize
    for dim in dims:
        for chains in chains_list:
            for n_syn in n_syns:
                check_chain_run(chains=chains, generations=generations * (1 + REPEATS) * runs,
                                per_chain_bytes=chain_bytes(dim, 1, itemsize),
                                per_chain_gen_s=chain_generation_seconds(dim),
                                chunk=chains, memory=1, sizes=dict(chains=chains, generations=generations, dim=dim),
                                what=f"bench rows of {chains} chains x {generations} generations at d = {dim}",
                                allow_large=allow_large)
                points = n_real + n_syn
                check_budget(cause(n_syn=points, naive_chains=naive_chains),
                             what=f"the naive NumPy loop: {naive_chains} chains at n_r + n_s = {points}, d = {dim}",
                             nbytes=points * dim * 8 * HOST_COPIES,
                             seconds=naive_chains * NAIVE_GENERATIONS * max(NUMPY_GENERATION_S,
                                                                            points * dim * dim * FLOP_S),
                             allow_large=allow_large)


def bench_chains(*, dim: list, n_real: int, n_syn: list, chains: list, lam: float, loop: str = "fresh",
                 generations: int, dtype: str = "float32", naive_chains: int, factor: list = ("auto",),
                 w2_every: list = (1,), allow_large: bool = False) -> dict:
    """Validate, refuse absurd shapes (:func:`check_bench_resources`), then time every row.

    ``dim``, ``n_syn``, ``chains``, ``factor`` and ``w2_every`` are lists (one row per combination); a bad
    value raises :class:`~madjax.validation.ParameterError` naming the parameter, before anything is timed.

    Returns:
      ``{"rows": [...], "machine": {...}}``: the rows of :func:`bench_rows` and :func:`machine`.
    """
    dims = [check_int("dim", d, minimum=1) for d in dim]
    n_syns = [check_int("n_syn", n, minimum=0) for n in n_syn]
    chains_list = [check_int("chains", c, minimum=1) for c in chains]
    n_real = check_int("n_real", n_real, minimum=0)
    if n_real + min(n_syns) < 2:
        raise ParameterError("n_syn", "a training set needs at least 2 points")
    lam = check_lam(lam)
    check_choice("loop", loop, ("fresh",))
    generations = check_int("generations", generations, minimum=1)
    dtype = check_dtype(dtype)
    naive = check_int("naive_chains", naive_chains, minimum=0)
    factors = [check_choice("factor", f, ("auto",) + FACTORS) for f in factor]
    every = [check_int("w2_every", k, minimum=1) for k in w2_every]
    check_bench_resources(dims=dims, n_real=n_real, n_syns=n_syns, chains_list=chains_list, generations=generations,
                          dtype=dtype, naive_chains=naive, runs=len(factors) * len(every),
                          allow_large=allow_large)
    rows = bench_rows(dims=dims, n_real=n_real, n_syns=n_syns, lam=lam, chains_list=chains_list,
                      generations=generations, dtype=dtype, naive_chains=naive, factors=factors, w2_every=every)
    return {"rows": rows, "machine": machine()}
