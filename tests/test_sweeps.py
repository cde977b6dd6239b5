"""Resumable sweeps, reproduce and plot for the phase-diagram figures."""

import os

import numpy as np
import pytest
import xarray as xr

from madjax import sweeps
from madjax.cli import main
from madjax.figures import reproduce

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


def test_sweep_cli_and_bad_input(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4,8", "--n-syn", "2", "--lam", "0.9",
            "--chains", "8", "--out", str(out), "--quiet"]
    assert main(args) == 0
    ds = xr.open_dataset(out / "sweep.nc")
    assert ds.n_e_ratio.dims == ("n_real",)
    assert main(args[:-3] + ["--lam", "0.9,1.5", "--out", str(out / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --lam") and err.count("\n") == 1
    assert main(args[:6] + ["--n-real", "4,x", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_reproduce_smoke_writes_figures_and_plot_redraws(tmp_path, capsys):
    reproduce(["fig10", "fig9"], preset="smoke", out=str(tmp_path), progress=False)
    for name in ("fig10.png", "fig10.pdf", "fig10.nc", "fig10_threshold.nc", "fig9.png", "fig9.nc"):
        assert (tmp_path / name).exists(), name
    os.remove(tmp_path / "fig10.png")
    assert main(["plot", "fig10", "--from", str(tmp_path)]) == 0
    assert (tmp_path / "fig10.png").exists()
    ds = xr.open_dataset(tmp_path / "fig10.nc")
    assert set(ds.n_e_ratio.dims) == {"lam", "n_real", "n_syn"}
    traj = xr.open_dataset(tmp_path / "fig9.nc")
    assert set(traj.wd.dims) == {"lam", "n_ini", "generation"}


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
