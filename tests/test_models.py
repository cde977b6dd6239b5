"""The registry of jittable models: every command that takes --model runs each model, or refuses
an option it does not have in one line; the model choice validates before any work."""

import json

import numpy as np
import pytest
import xarray as xr

from madjax.cli import main
from madjax.models import MODELS, ModelChoice, capacity_level
from madjax.validation import ParameterError


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path_factory.getbasetemp() / "madjax-cache"))


@pytest.mark.parametrize("name,kwargs,param", [
    ("gmm", dict(target="normal"), "target"),
    ("gmm", dict(dim=3), "dim"),
    ("gaussian", dict(bandwidth="scott", dim=2), "bandwidth"),
    ("gaussian", dict(), "dim"),
    ("kde", dict(dim=2, engine="exact"), "engine"),
    ("kde", dict(dim=2, bandwidth=-1.0), "bandwidth"),
    ("nope", dict(dim=2), "model"),
])
def test_a_bad_model_choice_names_the_option(name, kwargs, param):
    with pytest.raises(ParameterError) as err:
        ModelChoice.create(name, **kwargs).spec(draw_rows=32, train_rows=64)
    assert err.value.param == param


def test_capacity_levels_bound_the_padding():
    levels = [capacity_level(n) for n in range(1, 5000)]
    assert set(levels) == {256, 1024, 4096, 16384}
    assert all(lv >= n and (lv <= 4 * n or lv == 256) for n, lv in zip(range(1, 5000), levels))


def test_every_registered_model_builds_and_has_a_table_range():
    for name, entry in MODELS.items():
        choice = ModelChoice.create(name, dim=2)
        spec = choice.group_spec(choice.group_key("fresh", dict(n_real=30, n_syn=40)))
        assert spec.dim == 2 and spec.build().fit is not None
        for dim in (1, 2, 3, 16, 100):
            n_min, n_max, chains, points = ModelChoice.create(name, dim=dim if name != "gmm" else 2).table
            assert 2 <= n_min < n_max and chains >= 2 and points >= 2


def test_kde_runs_in_every_command_that_takes_model(tmp_path, capsys, monkeypatch):
    """simulate, effective-size and sweep with --model kde (tiny sizes; an E-dist table of 8 sizes up to
    n = 64 with 16 chains: this test is about the plumbing, test_kde.py about the numbers)."""
    monkeypatch.setitem(MODELS, "kde", MODELS["kde"]._replace(table=(2, 64, 16, 8)))
    out = str(tmp_path / "kde.nc")
    assert main(["simulate", "--model", "kde", "--loop", "fresh", "--dim", "2", "--n-ini", "16", "--n-real", "8",
                 "--n-syn", "8", "--generations", "3", "--chains", "3", "--out", out, "--quiet"]) == 0
    ds = xr.open_dataset(out)
    assert ds.w2.shape == (3, 3) and "bandwidth" in ds and int(ds.n_nonfinite.sum()) == 0
    common = ["--model", "kde", "--loop", "fresh", "--dim", "2", "--chains", "4", "--table-n-max", "64", "--quiet"]
    assert main(["effective-size", *common, "--n-real", "8", "--n-syn", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite(result["wd"]) and result["chains"] == 4
    assert main(["sweep", *common, "--n-real", "8", "--n-syn", "4,8", "--out", str(tmp_path / "sw")]) == 0
    sweep = xr.open_dataset(tmp_path / "sw" / "sweep.nc")
    assert sweep.n_e_ratio.shape == (2,) and json.loads(sweep.attrs["config"])["model"] == "kde"


@pytest.mark.parametrize("args,option", [
    (["simulate", "--model", "gmm", "--target", "normal", "--dim", "2"], "--target"),
    (["simulate", "--model", "gmm", "--n-ini", "10"], "--n-ini"),
    (["simulate", "--model", "kde", "--engine", "sampled", "--dim", "2"], "--engine"),
    (["simulate", "--model", "kde", "--dim", "2", "--bandwidth", "wide"], "--bandwidth"),
])
def test_model_options_are_checked_in_one_line(tmp_path, capsys, args, option):
    base = ["--loop", "fresh", "--n-real", "30", "--n-syn", "30", "--generations", "2", "--out",
            str(tmp_path / "x.nc")]
    if "--n-ini" not in args:
        base += ["--n-ini", "30"]
    assert main(args + base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"madjax: error: {option}:"), err
    assert not (tmp_path / "x.nc").exists()
