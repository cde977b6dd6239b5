"""Progress and stage lines: a tqdm bar on a terminal, log lines everywhere else.

Everything madjax says while it works goes through one logger, ``madjax``:
stage lines (``building the E-dist table ...``), progress lines when stderr
is not a terminal (a script, CI, a notebook: ``fig10: 16/48 cells, 35% of
the work, 1m05s elapsed, ~2m left``) and warnings. The library only emits;
the command line configures the logger (:func:`configure_logging`: ``-v``
adds the inner bars, ``--quiet`` keeps warnings only). Unconfigured (Python
scripts, notebooks) the INFO lines stay silent, as Python's logging does.

Bars use ``tqdm.std`` rather than ``tqdm.auto``: on a terminal they are the
same, and in a notebook without ipywidgets ``tqdm.auto`` warns on import.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

from tqdm import tqdm

log = logging.getLogger("madjax")

LOG_EVERY_FRACTION = 0.1  # a progress line per 10 % of the work ...
LOG_EVERY_SECONDS = 60.0  # ... or per minute, whichever comes first


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _LogBar:
    """tqdm's interface (``update``, ``set_postfix``, ``disable``, ``close``) as log lines.

    A line at most every ``LOG_EVERY_FRACTION`` of the work or
    ``LOG_EVERY_SECONDS``, and one at the end; time left extrapolates the
    rate of the work done in this run (``initial``, work done before a
    resume, does not count towards the rate). ``set_postfix_str`` replaces
    the count (``16/48 cells`` for :class:`WeightedProgress`); ``set_postfix``
    appends values (a generation's metrics).
    """

    def __init__(self, *, total: float, desc: str, unit: str, initial: float, level: int, enabled: bool):
        self.total, self.desc, self.unit, self.level = total, desc, unit, level
        self.n = self.initial = initial
        self.disable = not (enabled and log.isEnabledFor(level))
        self._count = self._values = ""
        self._start = self._last_time = time.monotonic()
        self._last_n = initial

    def update(self, n: float = 1) -> None:
        if self.disable:
            return
        self.n += n
        now = time.monotonic()
        if (self.n >= self.total or self.n - self._last_n >= LOG_EVERY_FRACTION * self.total
                or now - self._last_time >= LOG_EVERY_SECONDS):
            self._last_n, self._last_time = self.n, now
            log.log(self.level, "%s: %s", self.desc, self._line(now))

    def _line(self, now: float) -> str:
        parts = [self._count or f"{self.n:g}/{self.total:g} {self.unit}",
                 f"{100 * self.n / self.total:.0f}% of the work" if self.total else "done"]
        elapsed = now - self._start
        parts.append(f"{format_duration(elapsed)} elapsed")
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.n < self.total and rate > 0:
            parts.append(f"~{format_duration((self.total - self.n) / rate)} left")
        return ", ".join(parts + ([self._values] if self._values else []))

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._count = s

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self._values = " ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(*, total: float, desc: str, enabled: bool = True, unit: str = "it", initial: float = 0,
                 nested: bool = False):
    """A progress reporter with tqdm's interface.

    On a terminal (stderr a TTY) a tqdm bar with time left; elsewhere log
    lines on the ``madjax`` logger (:class:`_LogBar`). ``nested`` marks a bar
    inside another one (the epochs of one generation): its log lines are
    DEBUG (``-v``). ``enabled=False`` shows nothing.
    """
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=False, dynamic_ncols=True,
                    unit_scale=total >= 10_000)
    return _LogBar(total=total, desc=desc, unit=unit, initial=initial, enabled=enabled,
                   level=logging.DEBUG if nested else logging.INFO)


class WeightedProgress:
    """Progress over items of unequal cost (sweep cells): the bar, and so its
    time left, counts their weights (chain-generations); the line also counts
    the items (``16/48 cells``). A slow cell therefore moves the estimate by
    its own cost, not by one cell's share."""

    def __init__(self, weights: Sequence[float], *, done: Sequence[int] = (), desc: str, enabled: bool = True,
                 item: str = "cells", weight_unit: str = "chain-gen"):
        self.weights, self.item = [float(w) for w in weights], item
        self.count = len(done)
        self.bar = progress_bar(total=sum(self.weights), initial=sum(self.weights[i] for i in done), desc=desc,
                                enabled=enabled, unit=weight_unit)
        self.bar.set_postfix_str(self._counts(), refresh=False)

    def _counts(self) -> str:
        return f"{self.count}/{len(self.weights)} {self.item}"

    def advance(self, items: Sequence[int]) -> None:
        """Mark ``items`` (indices into ``weights``) done."""
        self.count += len(items)
        self.bar.set_postfix_str(self._counts(), refresh=False)
        self.bar.update(sum(self.weights[i] for i in items))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


class _Handler(logging.Handler):
    """Writes through ``tqdm.write`` (bars stay intact) to the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: never raise from emit
            self.handleError(record)


class _Formatter(logging.Formatter):
    """``HH:MM:SS message`` for progress and stages; ``madjax: warning: message`` for warnings."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"madjax: {record.levelname.lower()}: {record.getMessage()}"
        return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"


def configure_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """Route the ``madjax`` logger to stderr: INFO (stages, progress), DEBUG with
    ``verbosity >= 1``, WARNING only when ``quiet``. Idempotent.

    The logger then stops propagating to the root logger: absl (imported with
    orbax) calls ``logging.basicConfig()`` on its first log call, and the
    root handler that leaves would print every line a second time.
    """
    for handler in [h for h in log.handlers if isinstance(h, _Handler)]:
        log.removeHandler(handler)
    handler = _Handler()
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbosity > 0 else logging.INFO)
