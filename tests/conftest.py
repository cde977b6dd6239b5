"""Shared fixtures: private caches, x64 switching and the critical value of statistical asserts.

Statistical checks assert ``|estimate − exact| ≤ z · se`` with ``se`` from the
Monte-Carlo chains and ``z`` chosen from a false-fail rate ``alpha`` split
over the ``m`` assertions of a test (Bonferroni), so the whole suite fails by
chance with probability well below 1 %.
"""

import logging

import jax
import numpy as np
import pytest
from scipy import stats


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """The suite never writes the user's ``~/.cache/madjax``: caches live in the
    session's temporary directory, and JAX's persistent compilation cache stays
    off (a command line test would otherwise turn it on for the whole process)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MADJAX_CACHE", str(tmp_path_factory.getbasetemp() / "madjax-cache"))
        mp.setenv("MADJAX_COMPILATION_CACHE", "0")
        yield


@pytest.fixture(autouse=True)
def _madjax_logger_unconfigured():
    """Each test starts with the ``madjax`` logger as a library user finds it: no
    handler of madjax's, level unset, propagating to the root logger. A command
    line test (or a module fixture running one) configures it -- own handler,
    no propagation -- and ``caplog`` in a later test must still see its records."""
    from madjax._progress import log

    def reset():
        log.handlers.clear()
        log.setLevel(logging.NOTSET)
        log.propagate = True

    reset()
    yield
    reset()


def zcrit(m: int = 1, alpha: float = 1e-4) -> float:
    """Two-sided critical value for ``m`` simultaneous normal tests at total level ``alpha``."""
    return float(stats.norm.isf(alpha / (2 * m)))


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32 and in float64 (x64 mode on only for the latter)."""
    if request.param == "float64":
        jax.config.update("jax_enable_x64", True)
        yield "float64"
        jax.config.update("jax_enable_x64", False)
    else:
        yield "float32"


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def assert_close_se(estimate, exact, se, z, what=""):
    estimate, exact, se = (np.asarray(v, dtype=float) for v in (estimate, exact, se))
    dev = np.abs(estimate - exact)
    assert np.all(dev <= z * se), f"{what}: |est - exact| = {dev} > {z:.2f} * se = {z * se} (est {estimate}, exact {exact})"


def figure_texts(fig) -> list[str]:
    """Every text a reader sees on a matplotlib figure: title, caption, panel titles, axis labels
    (colour bars are axes too) and legends."""
    texts = [fig._suptitle.get_text(), fig._supxlabel.get_text()]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend else []
    return texts
