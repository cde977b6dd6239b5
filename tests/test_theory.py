"""``madjax.theory`` against the Monte-Carlo engine (z-tests) and against itself (limits).

Each closed form is compared with the chains' mean at every generation,
``|mean − theory| ≤ z · se`` with ``se`` from the chains and ``z`` from a
false-fail rate split over all generations and variables of a test
(``conftest.zcrit``). Where the theory gives the variance too (log det),
that variance is used, and the test also checks that the standard error is
small enough to see a 5 % error.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from scipy.special import gammaln, psi

import madjax
from madjax import theory
from madjax.figures.theory import RATE_CHAINS, log_diag_chains
from madjax.gaussian import gaussian_factored

CHAINS = 2000  # as the smoke preset of the moment figures, which reuse these compilations
T = 12


def _sim(dtype="float32", **kw):
    ds = madjax.simulate(generations=T, chains=CHAINS, seed=5, dtype=dtype, **kw)
    return ds, np.arange(1, T + 1)


def _check(ds, name, exact, z, values=None):
    x = (ds[name] if values is None else values).values.astype(np.float64)
    assert_close_se(x.mean(0), np.asarray(exact, np.float64), x.std(0, ddof=1) / np.sqrt(x.shape[0]), z, name)


# --------------------------------------------------------------------------- fully synthetic


def test_kappa_against_scipy():
    d, n = 4, 9
    expected = sum(psi((n - 1 - i) / 2) for i in range(d)) + d * np.log(2 / (n - 1))
    assert float(theory.kappa(n, d)) == pytest.approx(expected, rel=1e-5)
    assert np.isneginf(float(theory.kappa(3, d)))  # n − 1 < d: singular with certainty


def test_chi_mean_and_one_dimensional_w2_at_lambda_one():
    """c_n by scipy's Γ, and the issue's form σ²[t/n + 2(1 − c_nᵗ)] at λ = 1, n_ini = n_s = n."""
    n, t = 7, np.arange(1, 9)
    c = np.sqrt(2 / (n - 1)) * np.exp(gammaln(n / 2) - gammaln((n - 1) / 2))
    assert float(theory.chi_mean(n)) == pytest.approx(c, rel=1e-5)
    np.testing.assert_allclose(theory.w2_sq_1d(t, n_ini=n, n_syn=n, lam=1.0), t / n + 2 * (1 - c**t), rtol=1e-5)


def test_fully_synthetic_mean_reduces_to_geometric_sum():
    """For n_ini = n_s = n: E‖μ_t‖² = (tr Σ₀/n) Σ_{s=0}^{t−1} λ^s."""
    t, n, lam = np.arange(1, 10), 6, 0.6
    expected = 3 / n * np.array([sum(lam**s for s in range(k)) for k in t])
    got = theory.fully_synthetic_mean_sq(t, n_ini=n, n_syn=n, lam=lam, trace0=3.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(theory.fully_synthetic_mean_sq(t, n_ini=n, n_syn=n, lam=1.0, trace0=3.0), 3 * t / n,
                               rtol=1e-5)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_theory_functions_jit(jit):
    """Pure functions of traced values: jitted and eager agree."""
    f = functools.partial(theory.loop_moments, "fresh", 6, dim=3)
    g = jax.jit(lambda n, lam: f(n_ini=n, n_real=n, n_syn=2 * n, lam=lam)) if jit else (
        lambda n, lam: f(n_ini=n, n_real=n, n_syn=2 * n, lam=lam))
    out = g(jnp.int32(5), jnp.float32(0.8))
    ref = f(n_ini=5, n_real=5, n_syn=10, lam=0.8)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6)


def test_fully_synthetic_against_engine(dtype):
    """E tr Σ_t, E‖μ_t‖², E log det Σ_t on the factored route, float32 and float64."""
    d, n_ini, n_syn, lam = 3, 12, 9, 0.7
    ds, t = _sim(dtype, loop="fully-synthetic", dim=d, n_ini=n_ini, n_syn=n_syn, lam=lam)
    assert "factored" in ds.attrs["config"]
    z = zcrit(m=3 * T)
    _check(ds, "cov_trace", theory.fully_synthetic_trace(t, lam=lam, trace0=d), z)
    _check(ds, "mean_sq_norm", theory.fully_synthetic_mean_sq(t, n_ini=n_ini, n_syn=n_syn, lam=lam, trace0=d), z)
    exact = np.asarray(theory.fully_synthetic_logdet(t, dim=d, n_ini=n_ini, n_syn=n_syn, lam=lam))
    sd = np.sqrt(np.asarray(theory.fully_synthetic_logdet_var(t, dim=d, n_ini=n_ini, n_syn=n_syn)))
    assert_close_se(ds.cov_logdet.values.astype(float).mean(0), exact, sd / np.sqrt(CHAINS), z, "E log det")
    # the chains' own spread matches the theory's (a wrong variance would hide errors)
    np.testing.assert_allclose(ds.cov_logdet.values.std(0), sd, rtol=0.1)
    assert z * sd[-1] / np.sqrt(CHAINS) < 0.05 * abs(exact[-1])
    np.testing.assert_allclose(ds.cov_logdet_theory, exact, rtol=1e-6)  # stored in the run's dtype


def test_one_dimensional_w2_against_engine():
    """d = 1: E W2²_t for λ < 1 and n_ini ≠ n_s (the general form derived in madjax.theory)."""
    n_ini, n_syn, lam = 6, 4, 0.8
    ds, t = _sim(loop="fully-synthetic", dim=1, n_ini=n_ini, n_syn=n_syn, lam=lam)
    _check(ds, "w2_sq", theory.w2_sq_1d(t, n_ini=n_ini, n_syn=n_syn, lam=lam), zcrit(m=T), values=ds.w2**2)
    assert "w2_sq_theory" in ds


def test_per_eigenvalue_rates_through_the_bartlett_diagonal():
    """E log (L_t)_kk grows by ½[ψ((n_s − k)/2) + log 2 − log(n_s − 1) + log λ] per generation, k = 1 … d.

    The Lyapunov exponents are twice these increments (drawn as asymptotes, not tested as limits).
    """
    d, n_ini, n_syn, lam, chains = 3, 10, 7, 0.6, RATE_CHAINS
    x = log_diag_chains(jax.random.key(2), dim=d, n_ini=n_ini, n_syn=n_syn, lam=lam, chains=chains, generations=T)
    t = np.arange(1, T + 1)
    exact = np.asarray(theory.log_diag_mean(t, dim=d, n_ini=n_ini, n_syn=n_syn, lam=lam))
    se = x.std(0, ddof=1) / np.sqrt(chains)
    assert_close_se(x.mean(0), exact, se, zcrit(m=T * d), "E log L_kk")
    assert np.all(zcrit(m=T * d) * se[-1] < 0.1 * np.abs(exact[-1]))  # power: a 10 % error in the rate shows
    step = exact[1] - exact[0]
    np.testing.assert_allclose(2 * step, theory.lyapunov_exponents(dim=d, n_syn=n_syn, lam=lam), rtol=1e-5)
    k = np.arange(1, d + 1)
    np.testing.assert_allclose(2 * step, psi((n_syn - k) / 2) - np.log((n_syn - 1) / 2) + np.log(lam), rtol=1e-5)


def test_factored_log_det_is_exact_in_float32():
    """The summed log-diagonal equals log det of the carried factor, computed in float64, to 0.05 nats."""
    d, n = 5, 8
    eng = gaussian_factored(d)
    g, _ = eng.fit(None, None, eng.sample_real(jax.random.key(0), n))
    for t in range(2, 8):
        g, _ = eng.fit(None, None, eng.sample(jax.random.key(t), g, n, 0.9))
    root = np.asarray(g.root, np.float64) * np.exp(float(g.log_scale))
    sign, logdet = np.linalg.slogdet(root @ root.T)
    assert sign > 0 and 2 * float(jnp.sum(g.log_diag)) == pytest.approx(logdet, abs=0.05)


def test_factored_log_det_far_below_float32_range():
    """2000 generations at λ = 0.5 (Σ_t ~ 10⁻³⁰⁰ I): E log det Σ_t still within 4 se of its closed form."""
    d, n, lam, gens, chains = 3, 6, 0.5, 2000, 400
    x = log_diag_chains(jax.random.key(3), dim=d, n_ini=n, n_syn=n, lam=lam, chains=chains, generations=gens)
    logdet = 2 * x[:, -1].sum(-1)
    exact = float(theory.fully_synthetic_logdet(gens, dim=d, n_ini=n, n_syn=n, lam=lam))
    sd = float(np.sqrt(theory.fully_synthetic_logdet_var(gens, dim=d, n_ini=n, n_syn=n)))
    assert exact < -2000
    assert_close_se(logdet.mean(), exact, sd / np.sqrt(chains), zcrit(), "E log det Σ_2000")


def test_kahan_sum_keeps_float32_exact():
    """10⁵ float32 additions of log-sized terms: compensated sum within 1e-3 of float64 (a plain sum drifts)."""
    from madjax.gaussian import _kahan_add

    terms = np.asarray(np.random.default_rng(0).normal(-0.35, 0.5, size=(100_000, 1)), np.float32)

    def step(carry, x):
        return _kahan_add(*carry, x), None

    (total, err), _ = jax.jit(lambda xs: jax.lax.scan(step, (jnp.zeros(1), jnp.zeros(1)), xs))(terms)
    exact = terms.astype(np.float64).sum()
    ulp = abs(float(np.spacing(np.float32(exact))))
    assert abs(float(total[0]) - exact) <= ulp  # the float32 result is correctly rounded
    assert abs(float(total[0]) - float(err[0]) - exact) < 1e-3  # and the compensation holds the rest
    assert abs(float(np.cumsum(terms[:, 0], dtype=np.float32)[-1]) - exact) > 10 * ulp  # a plain sum drifts


# --------------------------------------------------------------------------- loops with real data


@pytest.mark.parametrize("loop", ["fresh", "synthetic-augmentation"])
def test_real_data_recursions_against_engine(loop):
    """E tr Σ_t and E‖μ_t‖² of the fresh and synthetic-augmentation recursions at λ < 1."""
    d, n_real, n_syn, lam = 3, 6, 9, 0.7
    sizes = dict(n_ini=11) if loop == "fresh" else {}
    ds, t = _sim(loop=loop, dim=d, n_real=n_real, n_syn=n_syn, lam=lam, **sizes)
    th = theory.loop_moments(loop, T, dim=d, n_ini=sizes.get("n_ini", n_real), n_real=n_real, n_syn=n_syn, lam=lam)
    z = zcrit(m=2 * T)
    for name in ("cov_trace", "mean_sq_norm"):
        _check(ds, name, th[name], z)
        assert f"{name}_theory" in ds


@pytest.mark.parametrize("recursion", [
    theory.fresh_recursion(n_ini=5, n_real=4, n_syn=30, lam=0.8, trace0=3.0),
    theory.augmentation_recursion(n_real=4, n_syn=30, lam=0.8, trace0=3.0),
    theory.fresh_recursion(n_ini=5, n_real=1, n_syn=2, lam=1.0, trace0=1.0),
], ids=["fresh", "augmentation", "fresh-n_r=1"])
def test_fixed_points_are_the_recursions_limits(recursion):
    """(I − M)⁻¹ b is where the iteration goes, and it is a fixed point."""
    fp = np.asarray(theory.fixed_point(recursion))
    np.testing.assert_allclose(np.asarray(theory.iterate(recursion, 3000))[-1], fp, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(recursion.b + recursion.M @ fp), fp, rtol=1e-5)


def test_no_real_data_limits():
    """n_r → 0 in the fresh recursion gives the fully synthetic moments (same n_ini, n_s)."""
    t = np.arange(1, 8)
    a, m = theory.fresh_moments(7, n_ini=10, n_real=1e-9, n_syn=6, lam=0.7, trace0=2.0)
    np.testing.assert_allclose(a, theory.fully_synthetic_trace(t, lam=0.7, trace0=2.0), rtol=1e-4)
    np.testing.assert_allclose(m, theory.fully_synthetic_mean_sq(t, n_ini=10, n_syn=6, lam=0.7, trace0=2.0),
                               rtol=1e-4)


def test_no_closed_form_for_memory_and_the_fresh_pool():
    """Memory K > 1 and the fresh loop's accumulating pool have none (the accumulating replace and
    synthetic-augmentation loops have one: tests/test_operators.py)."""
    assert theory.loop_moments("fresh", 4, dim=2, n_ini=5, n_real=3, n_syn=3, lam=1.0, memory=2) == {}
    assert theory.loop_moments("fresh", 4, dim=2, n_ini=5, n_real=3, n_syn=3, lam=1.0, accumulate=True) == {}
    assert set(theory.loop_moments("fully-synthetic", 4, dim=2, n_ini=5, n_real=0, n_syn=3, lam=1.0,
                                   accumulate=True)) == {"cov_trace", "mean_sq_norm"}


def test_moment_figures_smoke(tmp_path):
    """Both theory figures run, store mean, se and theory per λ, and redraw from the saved data."""
    import xarray as xr

    from madjax.figures import plot, reproduce

    reproduce(["moments-synthetic", "moments-fresh"], preset="smoke", out=str(tmp_path), progress=False)
    syn = xr.load_dataset(tmp_path / "moments-synthetic.nc")
    for name in ("cov_trace", "mean_sq_norm", "cov_logdet", "w2_sq"):
        assert {name, f"{name}_se", f"{name}_theory"} <= set(syn.data_vars)
    assert syn.lam.size == 3 and syn.rate.dims == ("lam", "generation", "k")
    fresh = xr.load_dataset(tmp_path / "moments-fresh.nc")
    assert list(fresh.loop.values) == ["fresh", "synthetic-augmentation"]
    assert "cov_trace_limit" in fresh and fresh.attrs["schema_version"]
    for fig in ("moments-synthetic", "moments-fresh"):
        (tmp_path / f"{fig}.png").unlink()
        assert plot(fig, str(tmp_path))[0].endswith(f"{fig}.png") and (tmp_path / f"{fig}.png").exists()


def test_simulate_theory_table_from_the_command_line(tmp_path, capsys):
    """``madjax simulate --theory`` stores <name>_theory and prints max |z| per variable (sizes as above)."""
    import xarray as xr

    from madjax.cli import main

    out = tmp_path / "run.nc"
    assert main(["simulate", "--model", "gaussian", "--loop", "fully-synthetic", "--dim", "3", "--n-ini", "12",
                 "--n-syn", "9", "--lam", "0.7", "--generations", str(T), "--chains", str(CHAINS), "--seed", "5",
                 "--out", str(out), "--theory", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["variable", "max", "|z|"]
    rows = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    assert set(rows) == {"cov_trace", "mean_sq_norm", "cov_logdet"}
    assert max(rows.values()) < zcrit(m=3 * T)
    ds = xr.load_dataset(out)
    assert ds.cov_trace_theory.dims == ("generation",) and ds.cov_logdet_status.attrs["flag_meanings"]
