"""Benchmark: precision/recall (k = 5) of madjax against prdc, and at 10⁵ × 10⁵ alone.

Cases (each in its own subprocess, so peak memory is per case):

* ``madjax``  n × n (default 10⁴, d = 64): compile time (AOT ``lower().compile()``)
  apart from the steady state (median of ``--repeats`` calls, ``block_until_ready``);
* ``prdc``    the same seeded inputs through ``prdc.compute_prdc`` (which
  materialises the three n × n distance matrices; it also returns density and
  coverage from them);
* ``big``     madjax at 10⁵ × 10⁵ (``--big``), one timed call after compiling.

Peak memory is the process's maximum resident set size (``getrusage``),
inputs and the XLA runtime included. Prints a table and writes JSON rows to
``benchmarks/out/precision_recall.json`` (untracked; ``--json
benchmarks/results/precision_recall.json`` replaces the recorded results).

    python benchmarks/bench_precision_recall.py            # 10⁴ vs prdc, then 10⁵
    python benchmarks/bench_precision_recall.py --n 2000 --big 0   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def _data(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, dim), dtype=np.float32)
    fake = (1.1 * rng.standard_normal((n, dim), dtype=np.float32) + 0.1).astype(np.float32)
    return real, fake


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _threads() -> str:
    return (f"nproc={os.cpu_count()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def _case_madjax(n: int, dim: int, k: int, repeats: int, seed: int) -> dict:
    import jax

    from madjax import metrics

    real, fake = (jax.device_put(a) for a in _data(n, dim, seed))
    start = time.perf_counter()
    compiled = metrics._precision_recall.lower(real, fake, k=k, tile=metrics._TILE_ELEMENTS).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        p, r = jax.block_until_ready(compiled(real, fake))
        times.append(time.perf_counter() - start)
    return {"engine": "madjax", "run_s": statistics.median(times), "runs": times, "compile_s": compile_s,
            "precision": float(p), "recall": float(r), "device": jax.devices()[0].device_kind,
            "peak_rss_mb": _peak_rss_mb()}


def _case_prdc(n: int, dim: int, k: int, repeats: int, seed: int) -> dict:
    import prdc

    real, fake = _data(n, dim, seed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            out = prdc.compute_prdc(real, fake, k)
        times.append(time.perf_counter() - start)
    return {"engine": "prdc", "run_s": statistics.median(times), "runs": times, "compile_s": None,
            "precision": float(out["precision"]), "recall": float(out["recall"]), "device": "cpu (numpy/sklearn)",
            "peak_rss_mb": _peak_rss_mb()}


def _run_case(case: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--dim", str(args.dim), "--k", str(args.k),
           "--repeats", str(args.repeats if case != "big" else 1), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(n_real=n, n_fake=n, dim=args.dim, k=args.k, dtype="float32", threads=_threads())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="points per set for the prdc comparison")
    parser.add_argument("--big", type=int, default=100_000, help="points per set for the large case (0: skip)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "out", "precision_recall.json"))
    parser.add_argument("--case", choices=("madjax", "prdc", "big"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # a subprocess: one case, one JSON line
        fn = _case_prdc if args.case == "prdc" else _case_madjax
        print(json.dumps(fn(args.n, args.dim, args.k, args.repeats, args.seed)))
        return

    rows = [_run_case("madjax", args.n, args), _run_case("prdc", args.n, args)]
    mine, ref = rows
    agree = abs(mine["precision"] - ref["precision"]) <= 1 / args.n and abs(mine["recall"] - ref["recall"]) <= 1 / args.n
    mine["speedup_vs_prdc"] = ref["run_s"] / mine["run_s"]
    mine["agrees_with_prdc"] = agree
    if args.big:
        rows.append(_run_case("big", args.big, args))

    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    header = f"{'engine':8} {'n × n':>17} {'d':>3} {'compile s':>9} {'run s':>9} {'peak RSS MB':>11} {'precision':>9} {'recall':>7}"
    print(f"CPU: {cpu}; {_threads()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        comp = "—" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        print(f"{r['engine']:8} {r['n_real']:>8} × {r['n_fake']:<7} {r['dim']:>3} {comp:>9} {r['run_s']:>9.2f} "
              f"{r['peak_rss_mb']:>11.0f} {r['precision']:>9.4f} {r['recall']:>7.4f}")
    print(f"madjax vs prdc at {args.n}: {mine['speedup_vs_prdc']:.1f}× faster (steady state), "
          f"results {'agree' if agree else 'DISAGREE'} (within 1/n)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cpu": cpu, "machine": platform.machine(), "python": platform.python_version(), "rows": rows}, f,
                  indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
