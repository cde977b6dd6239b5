"""n_e (Eq. 3): known answers, the E-dist table, burn-in, inversion, the threshold."""

import json

import numpy as np
import pytest
from conftest import zcrit

from madjax.cli import main
from madjax.effective import EDistTable, burn_in, contraction, edist_table, effective_size, invert, steady_wd_cells

DIM = 3


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path_factory.getbasetemp() / "madjax-cache"))


def test_no_synthetic_data_gives_n_e_equal_n_r():
    """n_s = 0: every generation is a fresh fit of n_r real points, so WD = E[W2(G(n_r))]."""
    r = effective_size(dim=DIM, n_real=10, n_syn=0, chains=512, seed=1)
    assert r["n_e_bound"] is None and r["converged"]
    assert abs(r["n_e_ratio"] - 1.0) <= zcrit() * r["n_e_ratio_se"], r
    assert r["n_e_ratio_se"] < 0.05  # and the test can see a 20 % error


def test_edist_curve_is_strictly_decreasing_and_cached():
    table = edist_table(DIM)
    # strictly decreasing means the monotone envelope changed nothing
    assert np.all(np.diff(table.mean) < 0)
    assert table.n[0] == 2 and table.n[-1] >= 1e6
    again = edist_table(DIM)
    np.testing.assert_array_equal(table.mean, again.mean)


def test_inversion_bounds_instead_of_extrapolation():
    table = EDistTable(np.array([2.0, 10.0, 100.0]), np.array([2.0, 1.0, 0.3]), np.array([0.01, 0.01, 0.01]))
    assert invert(table, 5.0, 0.1).bound == "upper"
    assert invert(table, 0.1, 0.01).bound == "lower"
    mid = invert(table, 1.0, 0.0)
    assert mid.bound is None and mid.n_e == pytest.approx(10.0)


def test_burn_in_from_contraction():
    assert contraction(10, 90) == pytest.approx(0.9)
    assert burn_in(10, 90) == int(np.ceil(np.log(1e-3) / np.log(0.9)))
    slower = contraction(10, 90, memory=4)
    assert 0.9 < slower < 1.0


def test_limit_does_not_depend_on_the_start():
    """Started far from (n_ini = 2) and near (n_ini = 200) its limit, the loop gives the same WD."""
    cells = [dict(n_ini=2, n_real=5, n_syn=20, lam=0.8), dict(n_ini=200, n_real=5, n_syn=20, lam=0.8)]
    far, near = steady_wd_cells(cells, loop="fresh", dim=DIM, chains=512, seed=4)
    assert far.converged and near.converged
    assert abs(far.wd - near.wd) <= zcrit() * np.hypot(far.wd_se, near.wd_se)


def test_effective_size_cli_json_and_threshold(capsys):
    args = ["effective-size", "--loop", "fresh", "--dim", str(DIM), "--n-real", "8", "--lam", "0.7",
            "--chains", "64", "--json", "--quiet"]
    assert main(args + ["--n-syn", "16"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("wd", "wd_se", "n_e", "n_e_se", "n_e_ratio", "n_e_ratio_se", "n_e_bound", "converged", "burn_in",
                "generations", "chains"):
        assert key in r
    assert main(args + ["--threshold"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["n_syn_star"] is not None and t["n_syn_star_lo"] <= t["n_syn_star"] <= t["n_syn_star_hi"]


@pytest.mark.parametrize("extra,option", [
    (["--n-syn", "5", "--lam", "2"], "--lam"),
    (["--n-syn", "5", "--loop", "fully-synthetic"], "--loop"),
    (["--n-syn", "5", "--threshold"], "--threshold"),
    ([], "--n-syn"),
    (["--n-syn", "5", "--chains", "1"], "--chains"),
])
def test_effective_size_bad_input(capsys, extra, option):
    base = ["effective-size", "--loop", "fresh", "--dim", "2", "--n-real", "5"]
    if "--loop" in extra:
        base = base[:1] + base[3:]
    assert main(base + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("madjax: error: ") and option in err, err
