"""Files checked before they are trusted: caches, stores, checkpoints and every input a command reads.

Each corruption case must end in one of two ways: the damaged thing is
rebuilt or recomputed (one warning line) and the numbers equal an undamaged
run bit for bit, or the command stops with one line naming the option and
the file, exit status 2 -- never a traceback, never a finite wrong number.
"""

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest

from madjax import io
from madjax.deep.checkpoint import Checkpointer
from madjax.deep.loop import DeepLoop, run_loop
from madjax.effective import EDistTable, edist_table

from test_deep import _evaluate, _source, _tagging_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path / "cache"))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "madjax" and r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------- item 3: caches

TABLE = dict(dim=2, chains=8, n_max=1000, points=9)


@pytest.fixture(scope="module")
def fresh_table():
    return edist_table(**TABLE, cache=False)


def _plant(table, **kw) -> str:
    """Write ``table`` as the valid cache file of ``TABLE`` (plus ``kw``); return its path."""
    from madjax.effective import table_key, table_path

    args = {**TABLE, "dtype": "float32", "seed": 12345, **kw}
    key = table_key(*(args[k] for k in ("dim", "dtype", "chains", "seed", "n_max", "points")))
    io.save_checked_npz(table_path(key), key, table._asdict())
    return table_path(key)


def _rewrite(path, arrays, *, keep_checksum):
    """Rewrite a checked cache with other arrays: the stored checksum kept (stale) or recomputed (valid)."""
    with np.load(path) as f:
        key, digest = f["_key"], f["_sha256"]
    digest = digest if keep_checksum else np.array(io.array_digest(arrays))
    np.savez(path, _key=key, _sha256=digest, **arrays)


def _edit(table, **arrays):
    return {**table._asdict(), **arrays}


EDIST_DAMAGE = {
    "wrong numbers": lambda p, t: _rewrite(p, _edit(t, mean=t.mean * 1.1), keep_checksum=True),
    "NaN, checksum recomputed": lambda p, t: _rewrite(p, _edit(t, mean=np.where(np.arange(len(t.n)) == 3, np.nan,
                                                                                 t.mean)), keep_checksum=False),
    "reversed column": lambda p, t: _rewrite(p, _edit(t, mean=t.mean[::-1].copy()), keep_checksum=False),
    "truncated table": lambda p, t: _rewrite(p, {k: v[:-2] for k, v in t._asdict().items()}, keep_checksum=False),
    "float32 columns": lambda p, t: _rewrite(p, {k: v.astype(np.float32) for k, v in t._asdict().items()},
                                             keep_checksum=False),
    "other grid": lambda p, t: _rewrite(p, _edit(t, n=t.n + 1), keep_checksum=False),
    "stale algorithm": lambda p, t: io.save_checked_npz(p, {"algorithm": 0}, t._asdict()),
    "truncated file": lambda p, t: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "garbage": lambda p, t: open(p, "wb").write(b"not an npz file"),
    "empty": lambda p, t: open(p, "wb").close(),
    "a directory": lambda p, t: (os.remove(p), os.mkdir(p)),
}


@pytest.mark.parametrize("damage", list(EDIST_DAMAGE))
def test_damaged_edist_cache_is_rebuilt_with_one_warning(damage, fresh_table, tmp_path, caplog):
    path = _plant(fresh_table)
    assert edist_table(**TABLE).mean is not fresh_table.mean  # read from the file
    EDIST_DAMAGE[damage](path, fresh_table)
    caplog.clear()
    table = edist_table(**TABLE)
    for a, b in zip(table, fresh_table):
        np.testing.assert_array_equal(a, b)
    warning, *not_written = _warnings(caplog)
    assert path in warning and "rebuilding" in warning and "\n" not in warning
    if os.path.isdir(path):  # nothing can replace it: the table is computed each time, and said so
        assert [w for w in not_written if "not written" in w] == not_written != []
        return
    assert not_written == []
    caplog.clear()
    reread = edist_table(**TABLE)  # the rebuilt file is valid again: read, no warning
    assert _warnings(caplog) == [] and np.array_equal(reread.mean, fresh_table.mean)


def test_edist_cache_key_names_everything_the_table_depends_on(fresh_table, tmp_path):
    from madjax.effective import table_key, table_problem

    key = table_key(2, "float32", 8, 12345, 1000, 9)
    assert {"madjax_version", "algorithm", "reference", "dim", "dtype", "chains", "seed", "n_max",
            "points"} <= set(key)
    assert table_problem(fresh_table, fresh_table.n) is None
    assert "decrease" in table_problem(EDistTable(fresh_table.n, fresh_table.mean[::-1].copy(), fresh_table.se),
                                       fresh_table.n)
    _plant(fresh_table)
    other = edist_table(**TABLE, seed=1)  # another seed: another file, other numbers
    assert len(glob.glob(str(tmp_path / "cache" / "edist_*.npz"))) == 2
    assert not np.array_equal(other.mean, fresh_table.mean)
