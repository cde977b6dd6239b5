"""``madjax.simulate`` / ``madjax simulate``: output format and input validation."""

import json

import jax
import numpy as np
import pytest
import xarray as xr

import madjax
from madjax.cli import main

BASE = ["simulate", "--model", "gaussian", "--loop", "fresh", "--dim", "2", "--n-ini", "4", "--n-real", "3",
        "--n-syn", "5", "--lam", "0.9", "--generations", "3", "--chains", "4"]


def test_cli_writes_a_netcdf_dataset(tmp_path):
    out = tmp_path / "run.nc"
    assert main(BASE + ["--out", str(out), "--quiet"]) == 0
    ds = xr.open_dataset(out)
    assert ds.w2.dims == ("chain", "generation") and ds.w2.shape == (4, 3)
    assert list(ds.generation.values) == [1, 2, 3]
    for name in ("w2", "mean_sq_norm", "cov_trace", "cov_logdet", "n_underflow", "n_nonfinite"):
        assert name in ds
    config = json.loads(ds.attrs["config"])
    assert config["lam"] == 0.9 and config["n_syn"] == 5
    for key in ("madjax_version", "jax_version", "device"):
        assert key in ds.attrs
    same = madjax.simulate(loop="fresh", dim=2, n_ini=4, n_real=3, n_syn=5, lam=0.9, generations=3, chains=4)
    np.testing.assert_array_equal(ds.w2.values, same.w2.values)


def test_real_fraction_resolves_sizes():
    ds = madjax.simulate(loop="fresh", dim=2, n_ini=4, real_fraction=0.25, n_total=10, generations=2, chains=2)
    config = json.loads(ds.attrs["config"])
    assert (config["n_real"], config["n_syn"]) == (2, 8)  # round(2.5) = 2 (half to even), 10 − 2


BAD_CLI = [
    (["--lam", "1.5"], "--lam"),
    (["--lam", "0"], "--lam"),
    (["--n-syn", "-3"], "--n-syn"),
    (["--n-ini", "1"], "--n-ini"),
    (["--chains", "0"], "--chains"),
    (["--generations", "0"], "--generations"),
    (["--memory", "0"], "--memory"),
    (["--loop", "sideways"], "--loop"),
    (["--engine", "magic"], "--engine"),
    (["--model", "vae"], "--model"),
    (["--dim", "0"], "--dim"),
    (["--n-real", "0", "--n-syn", "1"], "--n-syn"),
    (["--real-fraction", "0.5", "--n-total", "10"], "--real-fraction"),  # together with --n-real/--n-syn
    (["--memory", "2", "--accumulate"], "--memory"),
    (["--lam", "abc"], "--lam"),
    (["--factor", "qr"], "--factor"),
    (["--factor", "cholesky", "--n-ini", "2"], "--factor"),  # G¹ from 2 points is singular: no Cholesky factor
    (["--w2-every", "0"], "--w2-every"),
    (["--bogus"], "bogus"),
    (["--x64-typo"], "x64-typo"),
]


@pytest.mark.parametrize("extra,option", BAD_CLI, ids=[" ".join(e) for e, _ in BAD_CLI])
def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys, extra, option):
    out = tmp_path / "run.nc"
    args = BASE + extra + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("madjax: error: ") and option in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_rejects_unwritable_output_before_work(capsys):
    assert main(BASE + ["--out", "/nonexistent-dir/run.nc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --out:") and err.count("\n") == 1


def test_cli_fraction_form_and_loop_specific_sizes(tmp_path, capsys):
    out = tmp_path / "x.nc"
    base = ["simulate", "--loop", "fresh", "--dim", "2", "--n-ini", "4", "--generations", "2", "--out", str(out)]
    assert main(base + ["--real-fraction", "1.5", "--n-total", "10"]) == 2
    assert "--real-fraction: must be in [0, 1]" in capsys.readouterr().err
    aug = ["simulate", "--loop", "synthetic-augmentation", "--dim", "2", "--n-real", "5", "--n-syn", "3",
           "--generations", "2", "--out", str(out)]
    assert main(aug + ["--n-ini", "4"]) == 2
    assert "--n-ini" in capsys.readouterr().err
    full = ["simulate", "--loop", "fully-synthetic", "--dim", "2", "--n-ini", "5", "--n-syn", "3",
            "--generations", "2", "--out", str(out)]
    assert main(full + ["--n-real", "4"]) == 2
    assert "--n-real" in capsys.readouterr().err
    try:
        assert main(full + ["--x64", "--quiet"]) == 0 and out.exists()
    finally:  # --x64 switches the process to x64 mode: restore it for the other tests
        jax.config.update("jax_enable_x64", False)
    assert xr.open_dataset(out).w2.dtype == np.float64


@pytest.mark.parametrize("kwargs,param", [
    (dict(lam=1.5), "lam"), (dict(n_ini=1), "n_ini"), (dict(chains=0), "chains"), (dict(memory=0), "memory"),
    (dict(loop="nope"), "loop"), (dict(engine="nope"), "engine"), (dict(n_syn=-1), "n_syn"),
    (dict(real_fraction=2.0, n_real=None, n_syn=None, n_total=10), "real_fraction"),
    (dict(dtype="float64"), "dtype"),
    (dict(factor="cholesky", n_ini=2), "factor"), (dict(w2_every=0), "w2_every"),
])
def test_python_api_raises_value_error_naming_the_parameter(kwargs, param):
    base = dict(loop="fresh", dim=2, n_ini=4, n_real=3, n_syn=5, generations=2, chains=2)
    base.update(kwargs)
    with pytest.raises(ValueError, match=f"^{param}:"):
        madjax.simulate(**base)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and madjax.__version__ in capsys.readouterr().out
