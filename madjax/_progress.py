"""Progress bars: tqdm on a terminal, silent otherwise or when disabled."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*, total: int, desc: str, enabled: bool = True, unit: str = "it"):
    """A tqdm bar (with ETA) shown only when ``enabled`` and stderr is a TTY."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and sys.stderr.isatty()),
                leave=False, dynamic_ncols=True)
