"""Wall-time estimates for ``--dry-run``, from a short calibration run on this machine.

A figure's work is counted in chain-generations (one chain advanced by one
generation), or in training steps for the deep loops. :func:`calibrate` times the compiled function the run will use
on a small batch, twice: the first call compiles and runs, the second only
runs, which gives this machine's rate (chain-generations per second) and
the cost of one compilation. :func:`estimate` scales them to the figure's
work and compilations. It is an estimate: cells that fail the convergence
check rerun with a longer horizon, and a loaded machine is slower.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax

from madjax._progress import format_duration


class Calibration(NamedTuple):
    rate: float  # chain-generations per second, compiled
    compile_s: float  # one compilation
    seconds: float  # what the calibration itself took


def _seconds(run: Callable[[], object], calls: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = run()
    jax.block_until_ready(out)
    return max(time.perf_counter() - start, 1e-9)


def calibrate(run: Callable[[], object], work: int, min_seconds: float = 0.25) -> Calibration:
    """Time ``run()`` (``work`` chain-generations per call): the first call compiles and runs; the
    rate comes from as many further calls as make up ``min_seconds``."""
    first = _seconds(run)
    second = _seconds(run)
    calls = max(1, math.ceil(min_seconds / second)) if second < min_seconds else 0
    per_call = _seconds(run, calls) / calls if calls else second
    return Calibration(rate=work / per_call, compile_s=max(first - per_call, 0.0),
                       seconds=first + second + per_call * calls)


def estimate(work: float, compilations: int, cal: Calibration, unit: str = "chain-generations") -> str:
    """``~3m10s on this machine (...)``: the wall time of ``work`` units and ``compilations``."""
    seconds = work / cal.rate + compilations * cal.compile_s
    return (f"estimated wall time ~{format_duration(seconds)} on this machine (from a {cal.seconds:.1f} s "
            f"calibration run: {cal.rate:.3g} {unit}/s, {cal.compile_s:.1f} s per compilation x "
            f"{compilations})")
