"""Input validation shared by the Python API and the command line.

Every public entry point validates its arguments *before* any expensive work
and raises :class:`ParameterError` -- a ``ValueError`` that names the
parameter. The command line turns it into exactly one line on stderr,
``madjax: error: --lam: must be in (0, 1], got 1.5``, and exit status 2
(DESIGN §10). Python keyword names mirror the options (``n_real`` <-> ``--n-real``).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Iterable


# Sizes reach the device as int32 (counts, generation indices, chain ids), and a
# JAX PRNG key is made from the low 32 bits of a seed: larger values would wrap
# silently, so they are refused up front.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1


class ParameterError(ValueError):
    """A bad value for a named parameter (``param``), e.g. ``lam``."""

    def __init__(self, param: str, message: str):
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")

    @property
    def option(self) -> str:
        """The command-line spelling of the parameter (``n_real`` -> ``--n-real``)."""
        return "--" + self.param.replace("_", "-")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def check_int(param: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``param``."""
    if not _is_int(value):
        raise ParameterError(param, f"must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParameterError(param, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParameterError(param, f"must be <= {maximum}, got {value}")
    return value


def check_seed(value: Any, param: str = "seed") -> int:
    """A seed in [0, 2**32 - 1]: a JAX PRNG key keeps 32 bits, so a larger seed would repeat a smaller one."""
    if not _is_int(value) or not 0 <= int(value) <= SEED_MAX:
        raise ParameterError(param, f"must be an integer in [0, 2**32 - 1] (a JAX key holds 32 bits), got {value!r}")
    return int(value)


def check_int32(param: str, value: int, what: str | None = None) -> int:
    """A size, or a sum of sizes (``what`` names it), that becomes an int32 on the device."""
    if value > INT32_MAX:
        raise ParameterError(param, f"{what or param} = {value} exceeds 2**31 - 1, the largest size the device's "
                                    "int32 counters hold")
    return value


def check_loop_sizes(*, n_ini: int, n_real: int, n_syn: int, generations: int, accumulate: bool = False) -> None:
    """Every int32 a loop derives from its sizes: the training sets of generation 1 and t ≥ 2
    (``n_real + n_syn``, or the accumulated pool ``(T - 1) n_s + n_r``) and the generation counter."""
    check_int32("n_ini", n_ini)
    check_int32("n_real", n_real)
    check_int32("generations", generations + 1, "generations + 1")
    later = n_real + n_syn * (generations - 1 if accumulate else 1)
    check_int32("n_syn", later, "the accumulated pool (T - 1) n_syn + n_real" if accumulate else "n_real + n_syn")


def check_name(param: str, name: Any) -> str:
    """A file name that stays inside its output directory: not empty, no path separator, not '.' or '..'."""
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name \
            or any(sep and sep in name for sep in (os.sep, os.altsep, "/")):
        raise ParameterError(param, f"must be a plain file name inside the output directory (no '/', not '.' "
                                    f"or '..', not empty), got {name!r}")
    return name


def check_float(param: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(param, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(param, f"must be finite, got {value}")
    return value


def check_lam(value: Any, param: str = "lam") -> float:
    """λ ∈ (0, 1]: the sampling bias."""
    value = check_float(param, value)
    if not 0.0 < value <= 1.0:
        raise ParameterError(param, f"must be in (0, 1], got {value:g}")
    return value


def check_nonnegative(param: str, value: Any, maximum: float) -> float:
    """A finite number in [0, maximum]."""
    value = check_float(param, value)
    if not 0.0 <= value <= maximum:
        raise ParameterError(param, f"must be in [0, {maximum:g}], got {value:g}")
    return value


def check_fraction(value: Any, param: str = "real_fraction") -> float:
    """p ∈ [0, 1]."""
    value = check_float(param, value)
    if not 0.0 <= value <= 1.0:
        raise ParameterError(param, f"must be in [0, 1], got {value:g}")
    return value


def check_choice(param: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ParameterError(param, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_dtype(value: Any, param: str = "dtype") -> str:
    """'float32' or 'float64'; float64 needs jax's x64 mode (``--x64``)."""
    import jax
    import numpy as np

    try:
        name = np.dtype(value).name
    except TypeError:
        raise ParameterError(param, f"must be float32 or float64, got {value!r}") from None
    check_choice(param, name, ("float32", "float64"))
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ParameterError(
            param, "float64 needs jax's x64 mode (--x64, or jax.config.update('jax_enable_x64', True))"
        )
    return name


def check_writable(param: str, path: str | os.PathLike, *, directory: bool = False) -> str:
    """An output path whose parent exists and is writable (nothing is created)."""
    path = os.fspath(path)
    if not path:
        raise ParameterError(param, "must not be empty")
    if directory:
        target = path
        while not os.path.exists(target):
            parent = os.path.dirname(os.path.abspath(target))
            if parent == target:
                break
            target = parent
        if not os.path.isdir(target) or not os.access(target, os.W_OK):
            raise ParameterError(param, f"cannot write to {path!r}")
        return path
    if os.path.isdir(path):
        raise ParameterError(param, f"{path!r} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ParameterError(param, f"directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ParameterError(param, f"cannot write to {path!r}")
    return path


def resolve_loop_sizes(loop: str, n_ini, n_real):
    """Sizes per loop (DESIGN §10): returns ``(n_ini, n_real)``; ``n_ini`` may stay None.

    fully-synthetic has no real part (``n_real`` omitted or 0); the other
    loops need ``n_real``; synthetic-augmentation fits G¹ on D_r itself, so
    ``n_ini`` is omitted or equals ``n_real``.
    """
    if loop == "fully-synthetic":
        if n_real not in (None, 0):
            raise ParameterError("n_real", f"must be omitted or 0 in the fully-synthetic loop, got {n_real}")
        n_real = 0
    elif n_real is None:
        raise ParameterError("n_real", f"is required for the {loop} loop")
    else:
        n_real = check_int("n_real", n_real, minimum=0)
    if loop == "synthetic-augmentation":
        if n_ini is not None and n_ini != n_real:
            raise ParameterError("n_ini", f"must be omitted or equal n_real ({n_real}) in the "
                                          f"synthetic-augmentation loop, got {n_ini}")
        n_ini = n_real
    return n_ini, n_real
