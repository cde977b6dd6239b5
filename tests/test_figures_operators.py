"""The loop-operator figures (madjax.figures.operators): smoke presets run, their data and |z| records, redraws,
and the paper presets' dry runs. One reproduce call of the four smoke presets serves every test."""

import json
import math
import os

import numpy as np
import pytest
import xarray as xr

import madjax
from conftest import figure_texts, zcrit
from madjax.cli import main
from madjax.figures import FIGURE_IDS, get_figure, reproduce
from madjax.figures.operators import FIGURE_IDS as OPERATORS
from madjax.figures.operators import get_config, golden_burn_in, max_abs_z
from madjax.io import SCHEMA_VERSION
from madjax.loops import synthetic_sizes
from madjax.validation import ParameterError


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("operators")
    reproduce(list(OPERATORS), preset="smoke", out=str(out), progress=False)
    return out


def _compared_points(summary: dict) -> int:
    """Bonferroni m: every (law, generation or weight) compared in a figure's z records."""
    return sum(1 for r in summary["records"] if r["max_abs_z"] is not None)


def test_registered():
    for fig in OPERATORS:
        assert fig in FIGURE_IDS and get_figure(fig).name == fig


def test_smoke_writes_figures_data_and_z(smoke):
    for fig in OPERATORS:
        for name in (f"{fig}.png", f"{fig}.pdf", f"{fig}.nc", f"{fig}_z.json"):
            assert (smoke / name).exists(), name
        ds = xr.open_dataset(smoke / f"{fig}.nc")
        assert ds.attrs["schema_version"] == SCHEMA_VERSION and ds.attrs["madjax_version"] == madjax.__version__
        assert json.loads(ds.attrs["config"])["fig"] == fig
        for name in ds.variables:
            assert ds[name].attrs.get("long_name"), (fig, name)
        summary = json.loads((smoke / f"{fig}_z.json").read_text())
        assert summary == json.loads(ds.attrs["max_abs_z"])
        laws = [r for r in summary["records"] if not r["law"].startswith("madjax.")]
        assert laws and all(r["max_abs_z"] is not None for r in laws), fig
        # the Monte-Carlo agrees with every closed form: Bonferroni over the records' generations
        generations = get_config(fig, "smoke").generations
        m = max(1, _compared_points(summary)) * generations
        assert summary["max_abs_z"] == max(r["max_abs_z"] for r in laws)
        assert summary["max_abs_z"] < zcrit(m), (fig, summary["max_abs_z"])
        ds.close()


def test_smoke_laws(smoke):
    rva = xr.open_dataset(smoke / "replace-vs-accumulate.nc")
    last = rva.isel(generation=-1)
    t = int(rva.generation[-1])
    for est in ("known-cov", "unbiased"):
        rep, acc = last.sel(estimator=est, loop="replace"), last.sel(estimator=est, loop="accumulate")
        # replace grows like t (also with a refitted covariance: E tr Sigma_t stays tr Sigma_0), accumulate
        # stays bounded
        assert float(rep.mean_sq_ratio_theory) == pytest.approx(t, rel=1e-5)
        assert float(acc.mean_sq_ratio_theory) < 2
    rep, acc = last.sel(estimator="known-cov", loop="replace"), last.sel(estimator="known-cov", loop="accumulate")
    gap = float(rep.mean_sq_ratio - acc.mean_sq_ratio)  # the refitted replace's mean is heavy-tailed: known-cov
    assert gap > 4 * math.hypot(float(rep.mean_sq_ratio_se), float(acc.mean_sq_ratio_se))
    known = last.sel(estimator="known-cov", loop="accumulate")
    assert float(known.mean_sq_ratio_theory) < float(rva.limit) == pytest.approx(math.pi**2 / 6)
    assert np.isnan(rva.mean_sq_ratio_theory.sel(loop="accumulate-subsample")).all()  # no closed form

    golden = xr.open_dataset(smoke / "golden-ratio-weighting.nc")
    equal = golden.sel(n_syn=int(golden.n_real))
    assert float(equal.optimal_weight) == pytest.approx((math.sqrt(5) - 1) / 2)
    w = golden.w.values
    star = w[np.argmin(equal.stationary_mean_sq.values)]
    assert star == pytest.approx((math.sqrt(5) - 1) / 2, abs=1e-6)  # the optimum is on the grid

    growth = xr.open_dataset(smoke / "growing-sample-sizes.nc")
    cfg = get_config("growing-sample-sizes", "smoke")
    for alpha in growth.growth.values:
        sizes = synthetic_sizes(cfg.n, float(alpha), (), cfg.generations)[: cfg.generations - 1]
        assert list(growth.n_syn_t.sel(growth=alpha).values[1:]) == list(sizes)
    increments = growth.mean_sq_norm_theory.diff("generation").isel(generation=-1)
    assert list(increments.values) == sorted(increments.values, reverse=True)  # faster growth, smaller steps

    tilt = xr.open_dataset(smoke / "curation-tilt.nc")
    cfg = get_config("curation-tilt", "smoke")
    tr = tilt.cov_trace_theory.isel(generation=-1).values
    assert list(tr) == sorted(tr, reverse=True) and tr[0] == pytest.approx(cfg.dim)  # beta = 0 keeps tr = d
    for each in (rva, golden, growth, tilt):
        each.close()


def test_plot_redraws_from_data(smoke, monkeypatch):
    from madjax.figures import operators

    for fig in OPERATORS:
        os.remove(smoke / f"{fig}.png")
        assert main(["plot", fig, "--from", str(smoke)]) == 0 and (smoke / f"{fig}.png").exists(), fig
    drawn = {}
    monkeypatch.setattr(operators, "save", lambda f, out, name: drawn.setdefault(name, figure_texts(f)) and [name])
    for fig in OPERATORS:
        assert main(["plot", fig, "--from", str(smoke)]) == 0
        texts = drawn[fig]
        assert "smoke preset" in texts[1] and "chains per run" in texts[1] and "largest |z|" in texts[1], fig
        assert not any(code in t for t in texts for code in ("n_real", "n_syn", "lam =", "n_ini =")), (fig, texts)
    assert r"$w^*$ = 0.618" in " ".join(drawn["golden-ratio-weighting"])


def test_plot_without_data_is_one_line(tmp_path, capsys):
    for fig in OPERATORS:
        assert main(["plot", fig, "--from", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("madjax: error: --from: ") and err.count("\n") == 1, err


def test_paper_presets_pass_dry_run(tmp_path, capsys):
    assert main(["reproduce", *OPERATORS, "--preset", "paper", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("[paper]") == len(OPERATORS) and "compiled loops" in out and list(tmp_path.iterdir()) == []


def test_helpers():
    assert golden_burn_in(1.0) == 1
    assert (1 - 0.1) ** (2 * golden_burn_in(0.1)) <= 1e-4 < (1 - 0.1) ** (2 * (golden_burn_in(0.1) - 1))
    with pytest.raises(ParameterError):
        golden_burn_in(0.0)
    rec = max_abs_z([1.0, 2.0, np.nan], [0.5, 0.0, 1.0], [0.0, 0.0, 0.0], coords=[1, 2, 3])
    assert rec == {"max_abs_z": 2.0, "at": 1}  # se = 0 and NaN entries are left out
    assert max_abs_z([np.nan], [1.0], [0.0]) == {"max_abs_z": None, "at": None}
    for fig in OPERATORS:
        for preset in ("smoke", "quick", "paper"):
            assert get_config(fig, preset).fig == fig
