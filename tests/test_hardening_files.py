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


def _lenet_arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if not k.startswith("_")}


LENET_DAMAGE = {
    "wrong numbers": lambda p, a: _rewrite(p, {**a, "leaf_0": a["leaf_0"] + 1}, keep_checksum=True),
    "NaN weights": lambda p, a: _rewrite(p, {**a, "leaf_0": a["leaf_0"] * np.nan}, keep_checksum=False),
    "wrong shape": lambda p, a: _rewrite(p, {**a, "leaf_0": a["leaf_0"][:1]}, keep_checksum=False),
    "impossible accuracy": lambda p, a: _rewrite(p, {**a, "accuracy": np.float64(2.0)}, keep_checksum=False),
    "other version": lambda p, a: io.save_checked_npz(p, {"madjax_version": "0.0.0"}, a),
    "truncated file": lambda p, a: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "garbage": lambda p, a: open(p, "wb").write(b"PK\x03\x04 not a zip"),
}


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """An (untrained) LeNet written to a cache as training would write it, its digest, the file's bytes."""
    from flax import nnx

    from madjax.deep import features as F

    import jax

    config = F.LENET_CONFIGS["digits"]
    _, template = nnx.split(nnx.eval_shape(lambda: F.LeNet(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), template)
    path = str(tmp_path_factory.mktemp("lenet") / "lenet.npz")
    F._save(path, state, 0.5, "d" * 64, 1.0)
    with open(path, "rb") as f:
        return config, state, f.read()


@pytest.mark.parametrize("damage", [None, *LENET_DAMAGE])
def test_damaged_lenet_cache_is_refused(damage, lenet, tmp_path):
    from madjax.deep import features as F

    config, state, good = lenet
    path = str(tmp_path / "lenet.npz")
    with open(path, "wb") as f:
        f.write(good)
    if damage is None:
        restored, accuracy, _ = F._restore(path, config, "d" * 64)
        assert accuracy == 0.5 and all(np.array_equal(a, b) for a, b in zip(_leaves(restored), _leaves(state)))
        return
    LENET_DAMAGE[damage](path, _lenet_arrays(path))
    with pytest.raises(io.StaleCache):
        F._restore(path, config, "d" * 64)


def test_damaged_lenet_cache_is_retrained_with_one_warning(lenet, tmp_path, monkeypatch, caplog):
    from madjax.deep import features as F

    config, state, _ = lenet
    monkeypatch.setattr(F, "train_lenet", lambda config, data, progress: (state, 0.5))  # training is not the point
    F._extractor.cache_clear()
    first = F.lenet_features("digits", cache_dir=tmp_path)
    LENET_DAMAGE["NaN weights"](first.path, _lenet_arrays(first.path))
    F._extractor.cache_clear()
    caplog.clear()
    again = F.lenet_features("digits", cache_dir=tmp_path)
    (warning,) = _warnings(caplog)
    assert first.path in warning and "non-finite" in warning and not again.from_cache
    F._extractor.cache_clear()
    assert F.lenet_features("digits", cache_dir=tmp_path).from_cache  # the retrained file is whole again
    F._extractor.cache_clear()


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- item 8: checkpoints

LOOP = DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=5, accumulate=True)


def _train(out, generations):
    calls = []
    rows = run_loop(_tagging_model(calls), _source(), LOOP, lam=0.7, generations=generations, seed=3, out=str(out),
                    evaluate=_evaluate, n_eval=4, n_ref=4, progress=False)
    return calls, rows


def _each_file(pattern, change):
    files = glob.glob(pattern, recursive=True)
    assert files, pattern
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        with open(f, "wb") as fh:
            fh.write(change(data))


def _set_meta(step_dir, **fields):
    path = os.path.join(step_dir, "meta", "metadata")
    with open(path) as f:
        meta = json.load(f)
    with open(path, "w") as f:
        json.dump({**meta, **fields}, f)


CHECKPOINT_DAMAGE = {
    "truncated arrays": lambda s: _each_file(f"{s}/state/**/d/*", lambda b: b[: len(b) // 2]),
    "garbage arrays": lambda s: _each_file(f"{s}/state/**/d/*", lambda b: bytes(255 - x for x in b)),
    "garbage metadata": lambda s: _each_file(f"{s}/meta/metadata", lambda b: b"\x00garbage"),
    "wrong generation": lambda s: _set_meta(s, generation=int(os.path.basename(s)) + 1),
    "metric rows missing": lambda s: _set_meta(s, metrics=[]),
    "state missing": lambda s: shutil.rmtree(f"{s}/state"),
    "emptied": lambda s: (shutil.rmtree(s), os.mkdir(s)),
}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("straight"), 3)


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_one_before(damage, straight, tmp_path, caplog):
    _train(tmp_path, 2)  # keeps the checkpoints of generations 1 and 2
    CHECKPOINT_DAMAGE[damage](str(tmp_path / "checkpoints" / "2"))
    caplog.clear()
    calls, rows = _train(tmp_path, 3)
    (warning,) = _warnings(caplog)
    assert "generation 2 unusable" in warning and "resuming from generation 1" in warning and "\n" not in warning
    assert len(calls) == 2 and rows == straight[1]  # generations 2 and 3 redone, bit for bit
    for a, b in zip(calls, straight[0][1:]):
        np.testing.assert_array_equal(a, b)
    assert Checkpointer(str(tmp_path / "checkpoints")).latest() == 3


def test_arrays_that_decode_but_were_not_saved_there_are_caught(tmp_path, caplog):
    """Generation 1's state files copied into generation 2: orbax restores them (same shapes), and only
    the checksum in generation 2's metadata tells; the run falls back to generation 1."""
    import jax

    ckpt = Checkpointer(str(tmp_path))
    params = {1: {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, 2: {"w": np.ones((2, 3), np.float32)}}
    for t in (1, 2):
        ckpt.save(t, params=params[t], history=[], pool=None, metrics=[{"generation": g} for g in range(1, t + 1)])
    shutil.rmtree(tmp_path / "2" / "state")
    shutil.copytree(tmp_path / "1" / "state", tmp_path / "2" / "state")
    caplog.clear()
    restored = Checkpointer(str(tmp_path)).restore_latest(jax.eval_shape(lambda: params[1]))
    (warning,) = _warnings(caplog)
    assert "generation 2 unusable (its arrays differ from the ones saved (checksum))" in warning, warning
    assert restored.generation == 1 and np.array_equal(restored.params["w"], params[1]["w"])


def test_no_usable_checkpoint_starts_again(straight, tmp_path, caplog):
    _train(tmp_path, 2)
    for step in ("1", "2"):
        CHECKPOINT_DAMAGE["wrong generation"](str(tmp_path / "checkpoints" / step))
    caplog.clear()
    calls, rows = _train(tmp_path, 3)
    (warning,) = _warnings(caplog)
    assert "starting from generation 1" in warning
    assert len(calls) == 3 and rows == straight[1]


# ----------------------------------------------------------------------------- items 4, 5, 6: stores

GRID = {"n_real": [4, 8], "n_syn": [2, 16]}  # the sizes of tests/test_sweeps.py: compiled once for both


def _sweep(out):
    from madjax import sweeps

    return sweeps.run_effective_sweep(str(out), "s", loop="fresh", dim=2, grid=GRID, fixed={"lam": 0.8}, chains=16,
                                      seed=0, batch=2, progress=False)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished sweep's directory (store and export) and its exported numbers."""
    out = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("MADJAX_CACHE", str(out / "cache"))
    ds = _sweep(out)
    mp.undo()
    return out, ds


def _chunk(store, name, index):
    """The file of one cell's chunk of variable ``name`` (Zarr v3 layout, one cell per chunk)."""
    import zarr

    array = zarr.open_group(store, mode="r")[name]
    return os.path.join(store, name, array.metadata.encode_chunk_key(index + (0,) * (array.ndim - len(index))))


def _set_cell(store, name, index, value):
    """Overwrite one cell's value of a one-value-per-cell variable of a store."""
    import xarray as xr

    stored = xr.open_zarr(store, consolidated=False)[name]
    region = {d: slice(i, i + 1) for d, i in zip(stored.dims, index)}
    ds = xr.Dataset({name: (stored.dims, np.full((1,) * len(index), value, stored.dtype))})
    io.write_region(store, ds, region)


STORE_DAMAGE = {  # each leaves cell (1, 0) marked done with values that cannot be trusted
    "NaN value marked done": lambda z: _set_cell(z, "wd", (1, 0), np.nan),
    "missing value chunk": lambda z: os.remove(_chunk(z, "n_e_ratio", (1, 0))),
    "missing integer chunk": lambda z: os.remove(_chunk(z, "converged", (1, 0))),
    "corrupt value chunk": lambda z: open(_chunk(z, "wd", (1, 0)), "wb").write(b"\x00garbage"),
    "invalid integer code": lambda z: _set_cell(z, "burn_in", (1, 0), -1),
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_untrustworthy_done_cells_are_recomputed(damage, finished_sweep, tmp_path, caplog):
    src, full = finished_sweep
    shutil.copytree(src / "s.zarr", tmp_path / "s.zarr")
    STORE_DAMAGE[damage](str(tmp_path / "s.zarr"))
    caplog.clear()
    resumed = _sweep(tmp_path)
    (warning,) = [w for w in _warnings(caplog) if "recomputing" in w]
    assert "1 cell(s)" in warning
    for name in ("wd", "wd_se", "n_e_ratio", "n_e_ratio_se", "converged", "burn_in", "n_e_bound"):
        np.testing.assert_array_equal(full[name].values, resumed[name].values)


def test_a_store_is_not_exported_before_every_cell_is_trusted(finished_sweep, tmp_path):
    from madjax.sweeps import CellStore

    src, _ = finished_sweep
    shutil.copytree(src / "s.zarr", tmp_path / "s.zarr")
    STORE_DAMAGE["NaN value marked done"](str(tmp_path / "s.zarr"))
    store = CellStore.__new__(CellStore)  # the store as it was opened before the damage
    store.path, store.grid, store.dims, store.shape = str(tmp_path / "s.zarr"), GRID, tuple(GRID), (2, 2)
    store.checks = {"wd": None}
    with pytest.raises(ValueError, match="1 of 4 cells are not finished"):
        store.export(str(tmp_path / "s.nc"))
    assert not (tmp_path / "s.nc").exists()


def _strip(z, keep=("zarr.json",)):
    for name in os.listdir(z):
        path = os.path.join(z, name)
        if name not in keep:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


UNFINISHED = {  # what a creation killed at some point (by a program without atomic creation) leaves
    "empty directory": lambda z: _strip(z, keep=()),
    "group metadata only": _strip,
    "a variable missing": lambda z: shutil.rmtree(os.path.join(z, "wd")),
    "garbage group metadata": lambda z: open(os.path.join(z, "zarr.json"), "w").write("{garbage"),
}


@pytest.mark.parametrize("damage", list(UNFINISHED))
def test_an_unfinished_store_is_created_again(damage, finished_sweep, tmp_path, caplog):
    src, full = finished_sweep
    shutil.copytree(src / "s.zarr", tmp_path / "s.zarr")
    for index in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        _set_cell(str(tmp_path / "s.zarr"), "done", index, 0)
    UNFINISHED[damage](str(tmp_path / "s.zarr"))
    caplog.clear()
    resumed = _sweep(tmp_path)
    assert any("unfinished store" in w for w in _warnings(caplog))
    np.testing.assert_array_equal(full.n_e_ratio.values, resumed.n_e_ratio.values)


def test_creation_that_fails_leaves_nothing_behind(finished_sweep, tmp_path, monkeypatch):
    import xarray as xr

    src, full = finished_sweep
    real = xr.Dataset.to_zarr

    def disk_full(self, store, *args, **kw):
        real(self, store, *args, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", disk_full)
    with pytest.raises(OSError):
        _sweep(tmp_path)
    monkeypatch.undo()
    assert [p for p in os.listdir(tmp_path) if "s.zarr" in p] == []
    np.testing.assert_array_equal(full.n_e_ratio.values, _sweep(tmp_path).n_e_ratio.values)


@pytest.mark.parametrize("damage", ["a variable missing", "a file in the way"])
def test_a_damaged_store_with_finished_cells_is_refused_in_one_line(damage, finished_sweep, tmp_path, capsys):
    from madjax.cli import main

    src, _ = finished_sweep
    out = tmp_path / "o"
    store = out / "sweep.zarr"
    if damage == "a file in the way":
        out.mkdir()
        store.write_text("not a store")
    args = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4,8", "--n-syn", "2,16", "--lam", "0.8",
            "--chains", "16", "--out", str(out), "--quiet"]
    if damage == "a variable missing":
        out.mkdir()
        shutil.copytree(src / "s.zarr", store)  # another sweep's store, finished: damaged, not unfinished
        shutil.rmtree(store / "wd")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --out: ") and str(store) in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def fig9(tmp_path_factory):
    """``reproduce fig9 --preset smoke`` run once, uninterrupted: its directory and data."""
    import xarray as xr

    from madjax.cli import main

    out = tmp_path_factory.mktemp("fig9")
    mp = pytest.MonkeyPatch()
    mp.setenv("MADJAX_CACHE", str(out / "cache"))
    assert main(["reproduce", "fig9", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    mp.undo()
    return out, xr.load_dataset(out / "fig9.nc")


@pytest.mark.parametrize("undone", [[(0, 0)], [(0, 1), (1, 0)], [(0, 0), (0, 1), (1, 0), (1, 1)]])
def test_interrupted_fig9_resumes_bit_identically(undone, fig9, tmp_path):
    """Cells left undone by a kill (some of a factorisation group, or all) are recomputed exactly."""
    import xarray as xr

    from madjax.cli import main

    src, full = fig9
    shutil.copytree(src / "fig9.zarr", tmp_path / "fig9.zarr")
    for index in undone:
        _set_cell(str(tmp_path / "fig9.zarr"), "done", index, 0)
    assert main(["reproduce", "fig9", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    resumed = xr.load_dataset(tmp_path / "fig9.nc")
    for name in ("wd", "wd_se"):
        np.testing.assert_array_equal(full[name].values, resumed[name].values)


# ----------------------------------------------------------------------------- item 9: input files


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


def _drop_variable(path, name):
    import xarray as xr

    ds = xr.load_dataset(path).drop_vars(name)
    os.remove(path)
    ds.to_netcdf(path)


PLOT_DAMAGE = {  # file damaged -> what the one line must name
    "truncated NetCDF": ("fig9.nc", _truncate),
    "garbage NetCDF": ("fig9.nc", lambda p: open(p, "wb").write(b"\x89HDF garbage" * 10)),
    "empty NetCDF": ("fig9.nc", lambda p: open(p, "wb").close()),
    "wrong kind of file": ("fig9.nc", lambda p: shutil.copy(os.path.join(os.path.dirname(p), "fig9.png"), p)),
    "a directory": ("fig9.nc", lambda p: (os.remove(p), os.mkdir(p))),
    "missing variable": ("fig9.nc", lambda p: _drop_variable(p, "wd_se")),
    "garbage config": ("fig9_config.json", lambda p: open(p, "wb").write(b"\xff\xfe{not json")),
    "config of another kind": ("fig9_config.json", lambda p: open(p, "w").write('{"schema_version": 2, "x": 1}')),
    "config not an object": ("fig9_config.json", lambda p: open(p, "w").write("[1, 2]")),
    "empty directory": ("", lambda p: [os.remove(os.path.join(p, f)) for f in os.listdir(p)
                                       if os.path.isfile(os.path.join(p, f))]),
}


@pytest.mark.parametrize("damage", list(PLOT_DAMAGE))
def test_plot_from_a_damaged_file_is_one_line_naming_it(damage, fig9, tmp_path, capsys):
    from madjax.cli import main

    src, _ = fig9
    out = tmp_path / "d"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.zarr", "cache"))
    name, harm = PLOT_DAMAGE[damage]
    harm(str(out / name))
    capsys.readouterr()
    assert main(["plot", "fig9", "--from", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --from: ") and err.count("\n") == 1, err
    assert str(out / name) in err or (name == "" and str(out) in err), err


NPZ_DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"garbage, not a zip archive"),
    "truncated": lambda p: (np.savez(p, x=np.zeros((50, 2), np.float32)), _truncate(p)),
    "empty": lambda p: p.write_bytes(b""),
    "a single .npy array": lambda p: np.save(open(p, "wb"), np.zeros(3)),
    "pickled objects": lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)),
    "no x": lambda p: np.savez(p, y=np.zeros(3)),
    "a directory": lambda p: p.mkdir(),
    "missing": lambda p: None,
}


@pytest.mark.parametrize("damage", list(NPZ_DAMAGE))
def test_sample_files_are_read_or_refused_in_one_line(damage, tmp_path):
    path = tmp_path / "gen_3.npz"
    NPZ_DAMAGE[damage](path)
    with pytest.raises(ValueError) as err:
        io.read_npz(str(path), "from")
    assert err.value.param == "from" and str(path) in err.value.message and "\n" not in err.value.message
    np.savez(tmp_path / "good.npz", x=np.ones((2, 2), np.float32))
    assert io.read_npz(str(tmp_path / "good.npz"), "from")["x"].shape == (2, 2)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage", b"[1, 2]", b'{"loop": '])
def test_a_damaged_run_config_is_one_line_naming_it(content, tmp_path, capsys):
    from madjax.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(content)
    argv = ["train", "glow", "--loop", "fully-synthetic", "--generations", "1", "--data", "rosenbrock",
            "--preset", "smoke", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --out: ") and str(out / "config.json") in err and err.count("\n") == 1


@pytest.mark.parametrize("content", ["", "generation,fid\n1,abc\n", "x\n1\n", "\x00\x01garbage"])
def test_a_damaged_metrics_table_is_one_line_naming_it(content, tmp_path):
    from madjax.deep.loop import read_metrics

    (tmp_path / "metrics.csv").write_text(content)
    if content == "":
        assert read_metrics(str(tmp_path)) == []  # a run stopped before its first generation
        return
    with pytest.raises(ValueError) as err:
        read_metrics(str(tmp_path))
    assert err.value.param == "from" and str(tmp_path / "metrics.csv") in err.value.message


def test_a_damaged_chain_batch_is_computed_again(tmp_path, caplog):
    from madjax.figures.gmm import _saved_attrs

    path = tmp_path / "chains_00000-00001.nc"
    assert _saved_attrs(str(path)) is None
    path.write_bytes(b"CDF\x01 truncated")
    caplog.clear()
    assert _saved_attrs(str(path)) is None
    (warning,) = _warnings(caplog)
    assert str(path) in warning and "computing it again" in warning


@pytest.mark.parametrize("damage", ["transposed", "variable missing"])
def test_a_gmm_file_with_other_dimensions_is_one_line_naming_it(damage, tmp_path, capsys):
    """The GMM plots average over axis 0 as chains: a file laid out otherwise would plot wrong numbers."""
    import xarray as xr

    from madjax.cli import main
    from madjax.figures.gmm import PLOTTED
    from madjax.io import provenance

    sizes = {"chain": 2, "generation": 3, "snapshot": 1, "point": 4, "xy": 2}
    ds = xr.Dataset({name: (dims, np.ones([sizes[d] for d in dims], np.float32)) for name, dims in PLOTTED.items()},
                    coords={"chain": [0, 1], "generation": [1, 2, 3], "snapshot": [1]}, attrs=provenance({}))
    ds = ds.transpose("generation", "chain", ...) if damage == "transposed" else ds.drop_vars("recall")
    ds.to_netcdf(tmp_path / "fig11_12.nc")
    assert main(["plot", "fig12", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"madjax: error: --from: {tmp_path / 'fig11_12.nc'}: ") and err.count("\n") == 1, err
    assert ("dimensions" if damage == "transposed" else "missing variable(s) recall") in err


@pytest.mark.slow
def test_kill_9_during_store_creation_leaves_a_store_the_rerun_accepts(tmp_path):
    import subprocess
    import sys

    from madjax.cli import main

    out = tmp_path / "o"
    args = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4,8", "--n-syn", "2,16", "--lam", "0.8",
            "--chains", "16", "--out", str(out), "--quiet"]
    dying = """
import os, signal, sys
import xarray as xr
real = xr.Dataset.to_zarr
def to_zarr(self, store, *args, **kw):
    if kw.get("mode") == "w-":  # creating the store: write some of it, then die as kill -9 would
        keep = list(self.data_vars)[:3]
        real(self[keep], store, *args, **{**kw, "encoding": {k: kw["encoding"][k] for k in keep}})
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, store, *args, **kw)
xr.Dataset.to_zarr = to_zarr
from madjax.cli import main
sys.exit(main(ARGS))
""".replace("ARGS", repr(args))
    env = {**os.environ, "MADJAX_CACHE": str(tmp_path / "cache")}
    assert subprocess.run([sys.executable, "-c", dying], env=env).returncode == -9
    assert not (out / "sweep.zarr").exists() and [p for p in os.listdir(out) if "sweep.zarr" in p] != []
    assert main(args) == 0
    assert sorted(os.listdir(out)) == ["sweep.nc", "sweep.zarr"]  # the dead creation's leftover is cleared


def test_a_store_of_another_grid_is_named_a_different_sweep(finished_sweep, tmp_path, capsys):
    from madjax.cli import main

    src, _ = finished_sweep
    (tmp_path / "o").mkdir()
    shutil.copytree(src / "s.zarr", tmp_path / "o" / "sweep.zarr")
    args = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4,8,16", "--n-syn", "2,16", "--lam", "0.8",
            "--chains", "16", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a different sweep" in err and err.count("\n") == 1


def test_plot_of_user_sweeps_names_a_damaged_file(tmp_path, capsys):
    from madjax.cli import main

    (tmp_path / "mine.nc").write_bytes(b"CDF\x01 garbage")
    assert main(["plot", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --from: ") and str(tmp_path / "mine.nc") in err and err.count("\n") == 1


def test_a_run_from_an_older_madjax_is_refused_in_one_line(tmp_path, capsys):
    """A run directory whose config.json has no schema_version (written before schema 2) is not resumed."""
    from madjax.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"loop": {"kind": "fully-synthetic"}}')
    argv = ["train", "glow", "--loop", "fully-synthetic", "--generations", "1", "--data", "rosenbrock",
            "--preset", "smoke", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by an older madjax (schema 1)" in err and "--out" in err
