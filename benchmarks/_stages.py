"""What the stage-timing benchmarks of the deep image loops share (``bench_quick28.py``, ``gpu_deep.py``).

Imported by those scripts as ``_stages`` (they run as ``python benchmarks/NAME.py``, which puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import time

MODEL_NAMES = ("ddpm", "wgan")


def model_list(text: str) -> list[str]:
    """``--models``: a comma list of :data:`MODEL_NAMES`, duplicates dropped, order kept."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or any(m not in MODEL_NAMES for m in names):
        raise argparse.ArgumentTypeError(f"must be a comma list of {', '.join(MODEL_NAMES)}, got {text!r}")
    return list(dict.fromkeys(names))


def checked(convert, ok, expected: str):
    """An argparse ``type``: ``convert(text)`` that must satisfy ``ok``, else "must be {expected}"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    return parse


def timed(fn, *args):
    """``(fn(*args), seconds)``, the result blocked on (JAX dispatches asynchronously)."""
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start
