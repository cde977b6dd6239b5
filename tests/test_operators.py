"""The loop operators of the literature (``madjax.loops``) against the law each paper states.

Every law is a closed form of ``madjax.theory`` checked against the engine with
a z-test (``|mean − theory| ≤ z · se``, ``se`` from the chains, ``z`` from a
false-fail rate split over all generations and variables of a test), or an
ordering checked with the standard error of the difference. Independent
second implementations: NumPy/SciPy for the tilted density, the Bures W2 to
a general reference and the rotated-reference loop.

Sizes are small (d = 2, n ≈ 8, T = 8) so each configuration compiles once in
a few seconds; values of the traced operators (w, β, α) reuse the compilation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import xarray as xr
from conftest import zcrit

import madjax
from madjax import loops, theory
from madjax.cli import main
from madjax.gaussian import diagnose, params_from_moments, resolve_reference, tilt_params
from madjax.simulate import theory_z
from madjax.validation import ParameterError

T = 8
CHAINS = 4000
N = 8
GOLDEN = (math.sqrt(5) - 1) / 2


def _sim(**kw):
    kw.setdefault("dim", 2)
    return madjax.simulate(generations=T, chains=CHAINS, seed=3, **kw)


def _assert_theory(ds, names, m=None):
    """Every ``<name>_theory`` of ``names`` within z · se at every generation."""
    z = theory_z(ds)
    crit = zcrit(m=(m or len(names)) * ds.sizes["generation"])
    for name in names:
        assert name in z, f"{name}: no closed form attached"
        assert z[name][0] <= crit, f"{name}: |z| = {z[name][0]:.2f} at t = {z[name][1]} > {crit:.2f}"


@pytest.fixture(scope="module")
def known_cov_loops():
    """Replace, accumulate and accumulate-subsample with known covariance, n_s = n_r = 8."""
    return {
        "replace": _sim(loop="replace", n_ini=N, n_syn=N, estimator="known-cov"),
        "accumulate": _sim(loop="accumulate", n_real=N, n_syn=N, estimator="known-cov"),
        "subsample": _sim(loop="accumulate-subsample", n_real=N, n_syn=N, estimator="known-cov", engine="sampled"),
    }


# --------------------------------------------------------------------------- replace, accumulate, subsample


def test_replace_grows_linearly_and_accumulate_tends_to_pi_squared_over_six(known_cov_loops):
    """Shumailov et al. (replace: m_t = t · tr Σ₀/n) and Dey & Donoho 2024 (accumulate:
    m_t = (tr Σ₀/n)(1 + Σ_{s=2}^t 1/s²) → (π²/6) m_1), each against the engine."""
    t = np.arange(1, T + 1)
    m1 = 2 / N
    replace, accumulate = known_cov_loops["replace"], known_cov_loops["accumulate"]
    np.testing.assert_allclose(replace.mean_sq_norm_theory, m1 * t, rtol=1e-6)
    np.testing.assert_allclose(accumulate.mean_sq_norm_theory, m1 * np.asarray(theory.accumulate_known_cov_ratio(t)),
                               rtol=1e-6)
    _assert_theory(replace, ["mean_sq_norm"], m=2)
    _assert_theory(accumulate, ["mean_sq_norm"], m=2)
    assert abs(float(theory.accumulate_known_cov_ratio(np.array([10**5]))[0]) - math.pi**2 / 6) < 1e-4


def test_accumulate_subsample_lies_between_accumulate_and_replace(known_cov_loops):
    """Kazdan, Schaeffer et al. 2025: the fixed-size subsample of the accumulated pool degrades,
    but less than replacing. One-sided z-tests at every generation t ≥ 3."""
    m = {k: ds.mean_sq_norm.values.astype(np.float64)[:, 2:] for k, ds in known_cov_loops.items()}
    se = {k: v.std(0, ddof=1) / math.sqrt(CHAINS) for k, v in m.items()}
    z = zcrit(m=2 * (T - 2))
    lower = (m["subsample"].mean(0) - m["accumulate"].mean(0)) / np.hypot(se["subsample"], se["accumulate"])
    upper = (m["replace"].mean(0) - m["subsample"].mean(0)) / np.hypot(se["replace"], se["subsample"])
    assert np.all(lower > z) and np.all(upper > z), (lower, upper)


def test_accumulate_with_a_refitted_covariance_follows_its_recursion():
    """Full model (unbiased Σ̂, reference with power-law spectrum): E tr Σ_t and E‖μ_t‖² of
    the accumulating pool (``theory.accumulate_moments``), and of fully synthetic + accumulate."""
    _assert_theory(_sim(loop="accumulate", n_real=N, n_syn=N, reference="power:1"), ["cov_trace", "mean_sq_norm"])
    _assert_theory(_sim(loop="fully-synthetic", accumulate=True, n_ini=N, n_syn=6), ["cov_trace", "mean_sq_norm"])


# --------------------------------------------------------------------------- growing sizes, estimator


def test_growing_sizes_with_the_mle_follow_the_replace_recursion():
    """n_t = ⌈n t^α⌉ (Xu, He & Cheng 2025) and the MLE: E tr Σ_t, E‖μ_t‖², E log det Σ_t."""
    ds = _sim(loop="replace", n_ini=N, n_syn=5, growth=1.5, estimator="mle")
    _assert_theory(ds, ["cov_trace", "mean_sq_norm", "cov_logdet"])


def test_growing_sizes_bounded_iff_sum_of_inverse_sizes_converges():
    """At λ = 1 the mean's error grows by tr Σ₀/n_t: bounded for α = 2 (Σ 1/n_t < ∞), not for α = 1/2."""
    sizes = lambda a: loops.synthetic_sizes(10, a, (), 4000)  # noqa: E731
    m = {a: np.asarray(theory.replace_moments(sizes(a), n_ini=10, lam=1.0, trace0=1.0)[1]) for a in (0.5, 2.0)}
    assert m[2.0][-1] - m[2.0][1999] < 1e-4 and m[0.5][-1] - m[0.5][1999] > 2.0
    np.testing.assert_allclose(m[2.0][-1], 0.1 + sum(1 / math.ceil(10 * t**2) for t in range(2, 4001)), rtol=2e-5)


def test_synthetic_sizes_are_exact_ceilings():
    """float32 rounding never adds a point where n t^α is an integer; schedules pass through."""
    got = loops.synthetic_sizes(np.array([100, 7]), np.array([1.0, 0.5]), (), 9)
    want = np.array([[100 * t for t in range(2, 10)], [math.ceil(7 * t**0.5) for t in range(2, 10)]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loops.synthetic_sizes(5, 0.0, (3, 4), 3), [3, 4])
    traced = jax.jit(lambda n, a, t: loops.grown_size(n, a, t))(jnp.int32(100), jnp.float32(2.0), jnp.int32(3))
    assert int(traced) == 900


# --------------------------------------------------------------------------- weighted mixing


def test_golden_ratio_is_the_optimal_real_weight():
    """He, Xu & Cheng 2026: V(w) = tr Σ₀ [w²/n_r + (1 − w)²/n_s]/(1 − (1 − w)²), minimised at
    (√5 − 1)/2 for n_r = n_s; the closed-form optimum for other ratios against a fine grid; and
    the recursion's limit is V(w)."""
    w = np.linspace(1e-3, 1, 200001)
    for n_r, n_s in ((10, 10), (5, 20), (30, 7)):
        v = np.asarray(theory.weighted_variance(w, n_real=n_r, n_syn=n_s))
        assert abs(float(theory.optimal_real_weight(n_real=n_r, n_syn=n_s)) - w[np.argmin(v)]) < 1e-4
    assert abs(float(theory.optimal_real_weight(n_real=10, n_syn=10)) - GOLDEN) < 1e-6  # float32
    _, m = theory.weighted_moments(400, n_ini=10, n_real=10, n_syn=10, lam=1.0, trace0=2.0, weight=GOLDEN,
                                   estimator="known-cov")
    np.testing.assert_allclose(m[-1], theory.weighted_variance(GOLDEN, n_real=10, n_syn=10, trace0=2.0), rtol=1e-5)


def test_weighted_mixing_follows_its_variance_law():
    """The engine's weighted fit (known covariance at w* and 0.3; refitted covariance) against
    ``theory.weighted_moments``; one compilation serves both weights."""
    for w in (GOLDEN, 0.3):
        _assert_theory(_sim(loop="fresh", n_ini=N, n_real=N, n_syn=N, real_weight=w, estimator="known-cov"),
                       ["mean_sq_norm"], m=2)
    _assert_theory(_sim(loop="fresh", n_ini=N, n_real=6, n_syn=9, real_weight=0.3), ["cov_trace", "mean_sq_norm"])


def test_weighted_effective_size_matches_the_stationary_law():
    """effective-size with real_weight: the steady WD of the known-covariance loop is ‖μ − μ₀‖ with
    μ − μ₀ ~ N(0, (V/d) I), so in d = 2 its mean is sqrt(π V / 4), V = V(w). A fit to n real points
    has μ − μ₀ ~ N(0, I/n): n_e = d / V exactly, and n_e's se carries the E-dist table's se."""
    r = madjax.effective_size(loop="fresh", dim=2, n_real=10, n_syn=10, real_weight=GOLDEN, estimator="known-cov",
                              chains=256, seed=1, table_n_max=100)
    trace = float(theory.weighted_variance(GOLDEN, n_real=10, n_syn=10, trace0=2.0))
    exact = math.sqrt(math.pi * trace / 4)
    assert abs(r["wd"] - exact) <= zcrit(2) * r["wd_se"], (r["wd"], exact, r["wd_se"])
    ratio = 2 / trace / 10  # the golden ratio (1 + √5)/2 for n_r = n_s
    assert abs(r["n_e_ratio"] - ratio) <= zcrit(2) * r["n_e_ratio_se"], (r["n_e_ratio"], ratio, r["n_e_ratio_se"])
    with pytest.raises(ParameterError, match="growth"):
        madjax.effective_size(loop="fresh", dim=2, n_real=10, n_syn=10, growth=1.0)


# --------------------------------------------------------------------------- curation


def test_tilted_sampler_is_the_tilted_density(x64):
    """tilt_params: log N(x; μ', Σ') − [log N(x; μ, λΣ) − β‖x‖²/2] is constant in x (SciPy), also
    for a singular Σ restricted to its support."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    mean, cov = rng.normal(size=3), a @ a.T + 0.1 * np.eye(3)
    lam, beta = 0.8, 0.7
    p = params_from_moments(jnp.asarray(mean), jnp.asarray(cov), jnp.int32(3))
    q = tilt_params(p, lam, beta)
    mu_t, cov_t = np.asarray(q.mean), np.asarray(q.sqrt @ q.sqrt.T)
    x = rng.normal(size=(50, 3))
    diff = (scipy.stats.multivariate_normal(mu_t, cov_t).logpdf(x)
            - scipy.stats.multivariate_normal(mean, lam * cov).logpdf(x) + beta * np.sum(x**2, 1) / 2)
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)
    np.testing.assert_allclose(cov_t, lam * cov @ np.linalg.inv(np.eye(3) + beta * lam * cov), atol=1e-12)


def test_curation_follows_its_laws():
    """Known covariance: E‖μ_t‖² of the curated replace and fresh loops (exact recursion).
    Refitted covariance, n = 10⁵: tr Σ_t follows the n → ∞ limit 1/σ²_t = 1/(λσ²_{t−1}) + β
    (Ferbach et al. 2024: the loop collapses onto the reward's maximiser)."""
    _assert_theory(_sim(loop="replace", n_ini=N, n_syn=N, estimator="known-cov", tilt=0.7, reference="power:1"),
                   ["mean_sq_norm"], m=2)
    _assert_theory(_sim(loop="fresh", n_ini=N, n_real=5, n_syn=N, estimator="known-cov", tilt=0.7), ["mean_sq_norm"],
                   m=2)
    big = 10**5
    ds = madjax.simulate(loop="replace", dim=2, n_ini=big, n_syn=big, tilt=0.5, reference="power:1", generations=T,
                         chains=64, seed=1)
    trace, _ = theory.tilted_limit(T, lam=1.0, tilt=0.5, spectrum=(0.5, 1.0))
    x = ds.cov_trace.values.astype(np.float64)
    se = x.std(0, ddof=1) / math.sqrt(x.shape[0])
    assert np.all(np.abs(x.mean(0) - np.asarray(trace)) <= zcrit(m=T) * se + 1e-5 * np.asarray(trace))
    assert np.asarray(trace)[-1] < 0.3 * np.asarray(trace)[0]  # the collapse is visible at T


# --------------------------------------------------------------------------- reference


def test_w2_to_a_general_reference_against_scipy(x64):
    """Bures W2 to N(0, diag s) against SciPy's sqrtm, float64."""
    rng = np.random.default_rng(1)
    s = np.sort(rng.uniform(0.2, 3.0, size=4))
    a = rng.normal(size=(4, 4))
    mean, cov = rng.normal(size=4), a @ a.T
    half = np.diag(np.sqrt(s))
    exact = np.sqrt(mean @ mean + np.trace(cov) + s.sum() - 2 * np.trace(scipy.linalg.sqrtm(half @ cov @ half)).real)
    for factor in ("eigh", "cholesky"):
        p = params_from_moments(jnp.asarray(mean), jnp.asarray(cov), jnp.int32(4), factor)
        assert abs(float(diagnose(p, factor, tuple(s)).w2) - exact) < 1e-9


def test_reference_from_a_rotated_covariance_matches_a_numpy_loop(tmp_path):
    """P_r = N(μ₀, Σ₀) with a full Σ₀ from a file runs as its spectrum (rigid-motion invariance):
    the fresh loop's mean W2 at T = 3 against a NumPy loop in the original coordinates."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    cov0 = q @ np.diag([0.3, 2.0]) @ q.T
    np.savez(tmp_path / "ref.npz", cov=cov0, mean=np.array([5.0, -1.0]))
    assert resolve_reference(str(tmp_path / "ref.npz"), 2) == pytest.approx((0.3, 2.0))
    chains, n, gens = 3000, 6, 3
    ds = madjax.simulate(loop="fresh", dim=2, n_ini=n, n_real=n, n_syn=n, generations=gens, chains=chains, seed=0,
                         reference=str(tmp_path / "ref.npz"), engine="sampled")
    mu0, root0 = np.array([5.0, -1.0]), np.linalg.cholesky(cov0)
    w2 = np.empty(chains)
    for c in range(chains):
        x = mu0 + rng.normal(size=(n, 2)) @ root0.T
        mu, cov = x.mean(0), np.cov(x.T)
        for _ in range(gens - 1):
            syn = rng.multivariate_normal(mu, cov, size=n)
            x = np.concatenate([mu0 + rng.normal(size=(n, 2)) @ root0.T, syn])
            mu, cov = x.mean(0), np.cov(x.T)
        r = scipy.linalg.sqrtm(scipy.linalg.sqrtm(cov0) @ cov @ scipy.linalg.sqrtm(cov0)).real
        w2[c] = np.sqrt(np.sum((mu - mu0) ** 2) + np.trace(cov) + np.trace(cov0) - 2 * np.trace(r))
    ours = ds.w2.values[:, -1].astype(np.float64)
    se = math.hypot(ours.std(ddof=1), w2.std(ddof=1)) / math.sqrt(chains)
    assert abs(ours.mean() - w2.mean()) <= zcrit() * se


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kw, param", [
    (dict(loop="fresh", n_ini=8, n_real=8, n_syn=8, real_weight=1.5), "real_weight"),
    (dict(loop="replace", n_ini=8, n_syn=8, real_weight=0.5), "real_weight"),
    (dict(loop="replace", n_ini=8, n_syn=8, tilt=-1.0), "tilt"),
    (dict(loop="replace", n_ini=8, n_syn=8, growth=1.0, n_syn_schedule=(8,) * 3), "n_syn_schedule"),
    (dict(loop="replace", n_ini=8, n_syn=8, n_syn_schedule=(8, 8)), "n_syn_schedule"),
    (dict(loop="fresh", n_ini=8, n_real=8, n_syn=8, n_train=4), "n_train"),
    (dict(loop="accumulate-subsample", n_real=8, n_syn=8), "engine"),
    (dict(loop="fresh", n_ini=8, n_real=8, n_syn=8, estimator="ddof"), "estimator"),
    (dict(loop="replace", n_ini=8, n_syn=8, reference="power:x"), "reference"),
    (dict(loop="replace", n_ini=8, n_syn=8, reference=[[1.0, 2.0], [0.0, 1.0]]), "reference"),
    (dict(loop="replace", n_ini=8, n_syn=8, reference="/nonexistent.npy"), "reference"),
    (dict(loop="replace", n_ini=8, n_syn=8, tilt=0.5, factor="factored"), "factor"),
    (dict(model="kde", loop="fresh", n_ini=8, n_real=8, n_syn=8, real_weight=0.5), "real_weight"),
    (dict(model="gmm", loop="replace", n_ini=30, n_syn=30, tilt=0.5), "tilt"),
    (dict(model="gmm", loop="replace", n_ini=30, n_syn=30, reference="power:1"), "reference"),
])
def test_bad_operator_values_name_their_parameter(kw, param):
    kw.setdefault("dim", None if kw.get("model") == "gmm" else 2)
    with pytest.raises(ParameterError) as err:
        madjax.simulate(generations=4, chains=2, **kw)
    assert err.value.param == param


@pytest.mark.parametrize("argv, option", [
    (["simulate", "--loop", "replace", "--n-ini", "8", "--n-syn", "8", "--tilt", "-1"], "--tilt"),
    (["simulate", "--loop", "fresh", "--n-ini", "8", "--n-real", "8", "--n-syn", "8", "--real-weight", "x"],
     "--real-weight"),
    (["effective-size", "--loop", "fresh", "--n-real", "8", "--n-syn", "8", "--growth", "1"], "--growth"),
    (["sweep", "--loop", "fresh", "--n-real", "8", "--n-syn", "8,16", "--growth", "0,1"], "--growth"),
    (["sweep", "--loop", "fresh", "--n-real", "8", "--n-syn", "8,16", "--real-weight", "0,0.5"], "--real-weight"),
])
def test_bad_operator_options_are_one_line(tmp_path, capsys, argv, option):
    assert main(argv + ["--dim", "2", "--generations", "3", "--out", str(tmp_path / "o")] if argv[0] == "simulate"
                else argv + ["--dim", "2", "--out", str(tmp_path / "o")] if argv[0] == "sweep"
                else argv + ["--dim", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"madjax: error: {option}"), err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- trajectory sweeps


def test_trajectory_sweep_over_growth_compiles_once_and_resumes(tmp_path):
    """A growth grid is one compilation (α is a traced leaf); a rerun reads the store, bit for bit."""
    argv = ["sweep", "--trajectory", "--loop", "replace", "--dim", "2", "--n-ini", "8", "--n-syn", "8",
            "--growth", "0,1,2", "--generations", "5", "--chains", "16", "--estimator", "known-cov",
            "--out", str(tmp_path), "--quiet"]
    before = sum(loops.TRACES.values())
    assert main(argv) == 0
    assert sum(loops.TRACES.values()) - before <= 2  # eval_shape's trace and the compilation's
    first = xr.load_dataset(tmp_path / "sweep.nc")
    assert first.mean_sq_norm_mean.dims == ("growth", "generation")
    exact = np.stack([np.asarray(theory.replace_moments(loops.synthetic_sizes(8, a, (), 5), n_ini=8, lam=1.0,
                                                        trace0=2.0, estimator="known-cov")[1]) for a in (0, 1, 2)])
    z = np.abs(first.mean_sq_norm_mean.values - exact) / first.mean_sq_norm_se.values
    assert np.all(z <= zcrit(m=15)), z
    (tmp_path / "sweep.nc").unlink()
    assert main(argv) == 0
    second = xr.load_dataset(tmp_path / "sweep.nc")
    np.testing.assert_array_equal(first.mean_sq_norm_mean.values, second.mean_sq_norm_mean.values)


# --------------------------------------------------------------------------- the deep executor


def test_host_loop_runs_accumulate_subsample_and_growth():
    """The host executor's step (pytrees of rows): the pool grows by ⌈n_s t^α⌉ rows per generation and
    each generation trains on n_train distinct rows of it (D_r included)."""
    from madjax.base import GenerativeModel
    from madjax.data import DataSource
    from madjax.deep.loop import DeepLoop, host_model
    from madjax.deep.runner import loop_sizes

    # each row records where it came from: real rows are negative, synthetic rows carry the model's tag
    source = DataSource("test", (1,), lambda key, n: -1.0 - jnp.arange(n, dtype=jnp.float32)[:, None])
    model = GenerativeModel(init=lambda key: 0.0, fit=lambda key, p, data: (p + 1.0, ()),
                            sample=lambda key, p, n, lam: jnp.full((n, 1), p, jnp.float32))
    loop = loop_sizes("accumulate-subsample", 10, n_syn=4, n_train=6, growth=1.0)
    assert loop == DeepLoop("synthetic-augmentation", 10, 10, 4, accumulate=True, subsample=True, n_train=6,
                            growth=1.0)
    assert [loop.training_size(t) for t in (1, 2, 3)] == [10, 6, 6]
    host = host_model(model, source)
    sizes = madjax.LoopParams(n_ini=10, n_real=10, n_syn=4, lam=1.0, memory=1, n_train=6, growth=1.0)
    real = host.sample_real(jax.random.key(0), 10)
    pool, params = host.empty(4), 1.0
    for t in (2, 3, 4):
        train, pool = loops.training_set(loops.generation_keys(jax.random.key(1), t), t, loop, host, sizes,
                                         history=params, valid=None, real=real, pool=pool)
        assert pool.shape[0] == sum(4 * s for s in range(2, t + 1))
        assert train.shape == (6, 1)
        rows = np.concatenate([np.asarray(real), np.asarray(pool)])[:, 0]
        assert np.all(np.isin(np.asarray(train)[:, 0], rows))
        params += 1.0
