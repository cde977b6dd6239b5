"""Resumable sweeps, reproduce and plot for the phase-diagram figures."""

import json
import os

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import figure_texts

import madjax
from madjax import sweeps
from madjax.cli import main
from madjax.figures import reproduce
from madjax.io import SCHEMA_VERSION, provenance

GRID = {"n_real": [4, 8], "n_syn": [2, 16]}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path_factory.getbasetemp() / "madjax-cache"))


def _sweep(out, **kw):
    return sweeps.run_effective_sweep(str(out), "s", loop="fresh", dim=2, grid=GRID, fixed={"lam": 0.8},
                                      chains=16, seed=0, batch=2, progress=False, **kw)


def test_killed_sweep_resumes_with_identical_numbers(tmp_path, monkeypatch):
    full = _sweep(tmp_path / "a")
    assert full.n_e_ratio.dims == ("n_real", "n_syn") and np.isfinite(full.n_e_ratio).all()
    writes = {"n": 0}
    original = sweeps.CellStore.write

    def dying_write(self, index, values):
        if writes["n"] == 2:  # the first batch of two cells is stored, then the process "dies"
            raise KeyboardInterrupt
        writes["n"] += 1
        original(self, index, values)

    monkeypatch.setattr(sweeps.CellStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path / "b")
    partial = xr.open_zarr(tmp_path / "b" / "s.zarr", consolidated=False)
    assert int(partial.done.sum()) == 2 and not (tmp_path / "b" / "s.nc").exists()
    monkeypatch.setattr(sweeps.CellStore, "write", original)
    resumed = _sweep(tmp_path / "b")
    for name in ("wd", "n_e_ratio", "n_e_ratio_se"):
        np.testing.assert_array_equal(full[name].values, resumed[name].values)
    assert xr.open_dataset(tmp_path / "b" / "s.nc").n_e_ratio.shape == (2, 2)


def test_plot_draws_a_user_sweep_by_its_dims(tmp_path, monkeypatch):
    """Two swept sizes: a phase diagram on (n_s, n_r), the fixed λ in the caption; one: a line plot."""
    from madjax.figures import phase

    two = xr.Dataset({"n_e_ratio": (("n_real", "n_syn"), [[1.5, 0.5], [2.0, 0.9]]),
                      "n_e_ratio_se": (("n_real", "n_syn"), [[0.1, 0.05], [0.2, 0.1]])},
                     coords={"n_real": [4, 8], "n_syn": [2, 16], "lam": 0.8},
                     attrs=provenance({"loop": "fresh", "dim": 2, "chains": 16}))
    two.to_netcdf(tmp_path / "two.nc")
    two.isel(n_syn=0).to_netcdf(tmp_path / "one.nc")
    drawn = []
    for name in ("phase_diagram", "line_plot"):
        original = getattr(phase, name)
        monkeypatch.setattr(phase, name, lambda *a, _f=original, _n=name, **k: drawn.append((_n, k)) or _f(*a, **k))
    assert main(["plot", "--from", str(tmp_path)]) == 0
    assert [n for n, _ in drawn] == ["line_plot", "phase_diagram"]  # one.nc, then two.nc
    kw = drawn[1][1]
    assert (kw["x"], kw["y"], kw["panel"]) == ("n_syn", "n_real", None)
    assert r"$\lambda$ = 0.8" in kw["caption_text"] and "$n_s$" in kw["headline"]
    assert (tmp_path / "two.png").exists() and (tmp_path / "one.pdf").exists()


def _describes_itself(ds):
    """Schema, versions and config in the attributes; a long_name on every variable and coordinate."""
    assert ds.attrs["schema_version"] == SCHEMA_VERSION
    assert ds.attrs["madjax_version"] == madjax.__version__ and ds.attrs["jax_version"]
    assert isinstance(json.loads(ds.attrs["config"]), dict)
    for name in ds.variables:
        assert ds[name].attrs.get("long_name"), name


def test_sweep_cli_and_bad_input(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4,8", "--n-syn", "2", "--lam", "0.9",
            "--chains", "8", "--out", str(out), "--quiet"]
    assert main(args) == 0
    ds = xr.open_dataset(out / "sweep.nc")
    assert ds.n_e_ratio.dims == ("n_real",)
    _describes_itself(ds)
    assert ds.lam.ndim == 0 and float(ds.lam) == 0.9 and ds.n_syn.ndim == 0  # fixed values: scalar coordinates
    assert ds.n_real.attrs["units"] == "samples" and "n_e" in ds.n_e_ratio.attrs["long_name"]
    capsys.readouterr()
    assert main(["plot", "--from", str(out)]) == 0  # one swept dim: a line plot
    assert capsys.readouterr().out.split() == [str(out / "sweep.png"), str(out / "sweep.pdf")]
    # A store of an older schema is refused with one line that says what to do.
    zarr.open_group(str(out / "sweep.zarr"), mode="r+").attrs["schema_version"] = 1
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"madjax: error: --out: {out / 'sweep.zarr'} was written by an older madjax (schema 1); "
                   "move it away or rerun into a new --out\n")
    assert main(args[:-3] + ["--lam", "0.9,1.5", "--out", str(out / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --lam") and err.count("\n") == 1
    assert main(args[:6] + ["--n-real", "4,x", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_reproduce_smoke_writes_figures_and_plot_redraws(tmp_path, capsys, monkeypatch):
    reproduce(["fig10", "fig9"], preset="smoke", out=str(tmp_path), progress=False)
    for name in ("fig10.png", "fig10.pdf", "fig10.nc", "fig10_threshold.nc", "fig9.png", "fig9.nc"):
        assert (tmp_path / name).exists(), name
    os.remove(tmp_path / "fig10.png")
    from madjax.figures import phase

    drawn = []
    monkeypatch.setattr(phase, "save", lambda fig, out, name: drawn.append(figure_texts(fig)) or [name])
    assert main(["plot", "fig10", "--from", str(tmp_path)]) == 0
    texts = drawn[0]
    assert "$n_r$" in texts[0] and "$n_s$" in texts[0] and r"$\lambda$ = 0.7" in texts
    assert "smoke preset" in texts[1] and "32 chains per cell" in texts[1] and "Fig. 10" in texts[1]
    assert not any(code in t for t in texts for code in ("n_real", "n_syn", "lam ="))
    monkeypatch.undo()
    assert main(["plot", "fig10", "--from", str(tmp_path)]) == 0 and (tmp_path / "fig10.png").exists()
    ds = xr.open_dataset(tmp_path / "fig10.nc")
    assert set(ds.n_e_ratio.dims) == {"lam", "n_real", "n_syn"}
    thr = xr.open_dataset(tmp_path / "fig10_threshold.nc")
    assert thr.n_syn_star.dims == ("lam", "n_real") and list(thr.lam.values) == [0.7]
    traj = xr.open_dataset(tmp_path / "fig9.nc")
    assert set(traj.wd.dims) == {"lam", "n_ini", "generation"} and int(traj.n_real) == 4  # fixed n_r: scalar
    for each in (ds, thr, traj):
        _describes_itself(each)
    # Data of an older schema is not redrawn.
    ds.close()
    older = xr.load_dataset(tmp_path / "fig10.nc")
    del older.attrs["schema_version"]
    older.to_netcdf(tmp_path / "fig10.nc")
    capsys.readouterr()
    assert main(["plot", "fig10", "--from", str(tmp_path)]) == 2
    assert "was written by an older madjax (schema 1)" in capsys.readouterr().err


@pytest.mark.parametrize("fig", ["fig10", "fig33", "fig11", "fig15", "fig13", "fig4", None])
def test_plot_without_data_is_one_line(tmp_path, capsys, fig):
    assert main(["plot", *([fig] if fig else []), "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --from: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("args,option", [
    (["reproduce", "fig99", "--preset", "smoke"], "FIG"),
    (["reproduce", "fig10", "--preset", "huge"], "--preset"),
    (["plot", "fig10", "--from", "/nonexistent"], "--from"),
])
def test_reproduce_bad_input(tmp_path, capsys, args, option):
    if args[0] == "reproduce":
        args = args + ["--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err, err
    assert not (tmp_path / "o").exists()


def test_fig10_paper_preset_passes_dry_run(tmp_path, capsys):
    assert main(["reproduce", "fig10", "--preset", "paper", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "compiled OK" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_all_paper_presets_pass_dry_run(tmp_path, capsys):
    figs = ["fig9", "fig10", "fig30", "fig31", "fig32", "fig33", "fig34"]
    assert main(["reproduce", *figs, "--preset", "paper", "--dry-run", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("compiled OK") == len(figs)


def test_a_sweep_compiles_once_per_horizon_level_and_group_not_per_cell(tmp_path):
    """The trace-count guard: 8 cells, all swept values traced. Cells share one executable per
    (horizon level, factorisation); a cell that fails the convergence check reruns its group at
    twice the horizon (at most ``extend = 2`` times)."""
    from madjax.effective import burn_in, cell_factor, edist_table, horizon_level
    from madjax.loops import TRACES

    edist_table(2)  # the table's own compilation is not the sweep's
    grid = {"n_real": [4, 8], "n_syn": [2, 3], "lam": [1.0, 0.8]}
    groups = {(horizon_level(burn_in(r, s)), cell_factor("fresh", 2, dict(n_real=r, n_syn=s)))
              for r in grid["n_real"] for s in grid["n_syn"]}
    before = sum(TRACES.values())
    ds = sweeps.run_effective_sweep(str(tmp_path), "g", loop="fresh", dim=2, grid=grid, chains=8, seed=0,
                                    progress=False)
    traces = sum(TRACES.values()) - before
    assert len(groups) <= traces <= 3 * len(groups) < ds.n_e_ratio.size
