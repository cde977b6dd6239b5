"""The Gaussian engines: Bartlett Wishart, exact statistics, pooling, diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import assert_close_se, zcrit

from madjax.gaussian import (
    Points,
    cholesky_factor,
    diagnose,
    gaussian_exact,
    gaussian_sampled,
    params_from_moments,
    pool_stats,
    sample_stats,
    symmetric_eigvals,
)


def _spd(dim, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    return (a @ a.T / dim + 0.5 * np.eye(dim)).astype(dtype)


@pytest.mark.parametrize("n", [12, 3], ids=["n-1>=d", "n-1<d (singular)"])
def test_bartlett_wishart_first_two_moments(n, dtype):
    """scatter ~ Wishart(n − 1, λS): E = (n−1)λS, Var W_ij = (n−1)λ²(S_ij² + S_ii S_jj)."""
    dim, draws, lam = 4, 20000, 0.7
    s = _spd(dim)
    params = params_from_moments(jnp.zeros(dim, dtype), jnp.asarray(s, dtype), jnp.int32(dim))
    keys = jax.random.split(jax.random.key(1), draws)
    stats = jax.jit(jax.vmap(sample_stats, in_axes=(0, None, None, None)))(keys, params, n, lam)
    w = np.asarray(stats.scatter, np.float64)
    df = n - 1
    mean_exact = df * lam * s
    var_exact = df * lam**2 * (s**2 + np.outer(np.diag(s), np.diag(s)))
    z = zcrit(m=2 * dim * dim)
    assert_close_se(w.mean(0), mean_exact, np.sqrt(var_exact / draws), z, "E W")
    # Var estimate: se of a sample variance from the fourth central moment.
    centred = w - w.mean(0)
    m4 = (centred**4).mean(0)
    var_hat = centred.var(0, ddof=1)
    assert_close_se(var_hat, var_exact, np.sqrt(np.maximum(m4 - var_hat**2, 1e-30) / draws), z, "Var W")
    # the mean: x̄ ~ N(0, λS/n)
    xbar = np.asarray(stats.mean, np.float64)
    cov_exact = lam * s / n
    assert_close_se(np.cov(xbar.T), cov_exact, np.sqrt((cov_exact**2 + np.outer(np.diag(cov_exact), np.diag(cov_exact))) / draws), z, "Cov x̄")
    # rank: a Wishart with n − 1 < d has rank n − 1 exactly
    eps = np.finfo(dtype).eps
    ranks = np.array([np.linalg.matrix_rank(m, tol=dim * eps * np.abs(m).max() * 10) for m in w[:50]])
    assert np.all(ranks == min(df, dim))
    assert np.all(np.asarray(stats.rank) == min(df, dim))


def test_bartlett_mean_log_det_closed_form():
    """E log det W = Σ_i ψ((df − i)/2) + d log 2 for W ~ Wishart(df, I) (TFP's mean_log_det)."""
    from scipy.special import polygamma, psi

    dim, df, draws = 5, 9, 20000
    eng = gaussian_exact(dim)
    keys = jax.random.split(jax.random.key(3), draws)
    stats = jax.vmap(sample_stats, in_axes=(0, None, None, None))(keys, eng.init(None), df + 1, 1.0)
    logdet = np.linalg.slogdet(np.asarray(stats.scatter, np.float64))[1]
    halves = (df - np.arange(dim)) / 2
    exact = psi(halves).sum() + dim * np.log(2)
    var = polygamma(1, halves).sum()
    assert_close_se(logdet.mean(), exact, np.sqrt(var / draws), zcrit(), "E log det")


def test_pooling_equals_statistics_of_the_concatenation():
    """Chan pooling of group statistics is the statistics of all points together."""
    rng = np.random.default_rng(0)
    dim = 3
    groups = [rng.normal(loc=i, size=(n, dim)) for i, n in enumerate([5, 1, 0, 7])]

    def stats_of(x):
        n = len(x)
        mean = x.mean(0) if n else np.zeros(dim)
        c = x - mean
        return n, mean, c.T @ c

    parts = [stats_of(g) for g in groups]
    stacked = jax.tree.map(jnp.asarray, (
        np.array([p[0] for p in parts], np.int32), np.stack([p[1] for p in parts]),
        np.stack([p[2] for p in parts]), np.array([min(p[0] - 1, dim) for p in parts], np.int32)))
    from madjax.gaussian import Stats

    pooled = pool_stats(Stats(*stacked))
    n, mean, scatter = stats_of(np.concatenate(groups))
    assert int(pooled.n) == n
    np.testing.assert_allclose(pooled.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled.scatter, scatter, rtol=1e-4, atol=1e-4)
    # 4 + 0 + (-1) + 3 → (5 + 1 + 0 + 4) − 1 = 9 capped at d
    assert int(pooled.rank) == dim


def test_sampled_engine_fits_eq1_two_pass():
    """Masked fit = NumPy's mean and np.cov(ddof=1) of the valid rows, even with a large offset."""
    eng = gaussian_sampled(3, 8)
    rng = np.random.default_rng(1)
    x = (1e4 + rng.normal(size=(8, 3))).astype(np.float32)
    mask = np.arange(8) < 6
    fit, _ = eng.fit(None, None, Points(jnp.asarray(x), jnp.asarray(mask), jnp.int32(3)))
    np.testing.assert_allclose(fit.mean, x[:6].mean(0), rtol=1e-6)
    np.testing.assert_allclose(fit.cov, np.cov(x[:6].astype(np.float64).T), rtol=2e-3, atol=2e-3)


def test_diagnostics_match_bures_formula_and_flag_singularity():
    dim = 4
    s = _spd(dim, seed=2)
    mu = np.array([0.5, -1.0, 0.0, 2.0])
    p = params_from_moments(jnp.asarray(mu, jnp.float32), jnp.asarray(s, jnp.float32), jnp.int32(dim))
    d = diagnose(p)
    root = scipy.linalg.sqrtm(s).real
    w2_exact = np.sqrt(mu @ mu + np.trace(s) + dim - 2 * np.trace(root))
    np.testing.assert_allclose(d.w2, w2_exact, rtol=1e-5)
    np.testing.assert_allclose(d.cov_logdet, np.linalg.slogdet(s)[1], rtol=1e-5)
    np.testing.assert_allclose(d.cov_trace, np.trace(s), rtol=1e-6)
    assert not bool(d.underflow) and not bool(d.nonfinite)
    # A rank-2 covariance: logdet is −inf by construction, W2 still finite, no NaN.
    v = np.random.default_rng(0).normal(size=(dim, 2))
    sing = params_from_moments(jnp.zeros(dim), jnp.asarray(v @ v.T, jnp.float32), jnp.int32(2))
    ds = diagnose(sing)
    assert np.isneginf(ds.cov_logdet)
    e = np.clip(np.linalg.eigvalsh(v @ v.T), 0, None)
    np.testing.assert_allclose(ds.w2, np.sqrt(np.sum((np.sqrt(e) - 1) ** 2)), rtol=1e-4)
    # A collapsed covariance (underflow in float32) is flagged, never NaN.
    tiny = params_from_moments(jnp.zeros(dim), jnp.eye(dim) * 1e-40, jnp.int32(dim))
    dt = diagnose(tiny)
    assert bool(dt.underflow) and np.isfinite(dt.w2) and not np.isnan(dt.cov_logdet)


# --------------------------------------------------------------------------- Cholesky route


@pytest.mark.parametrize("dim", [1, 7, 40])
def test_symmetric_eigvals_match_lapack(dim, dtype):
    """Tridiagonal + bisection eigenvalues vs NumPy's eigvalsh in float64.

    Both are backward stable: each eigenvalue is within ~c·d·eps·‖Σ‖ of the
    truth (Weyl), so the bound below is 4·d·eps·‖Σ‖₂.
    """
    s = _spd(dim, seed=dim) * 3.0
    cov = jnp.asarray(s, dtype)
    got = np.asarray(symmetric_eigvals(cov, jnp.int32(0)), np.float64)
    exact = np.linalg.eigvalsh(s)
    bound = 4 * dim * np.finfo(dtype).eps * exact.max()
    np.testing.assert_array_less(np.abs(got - exact), bound)


def test_cholesky_factor_is_a_square_root_with_jitter_only_when_needed():
    dim = 6
    s = _spd(dim, seed=3)
    chol, jitter = cholesky_factor(jnp.asarray(s, jnp.float32))
    chol = np.asarray(chol, np.float64)
    assert int(jitter) == 0 and np.allclose(chol, np.tril(chol))
    np.testing.assert_allclose(chol @ chol.T, s, atol=8 * dim * np.finfo(np.float32).eps * np.abs(s).max())
    # Rank 2 < d: not positive definite in any precision -> jittered, finite, flagged by diagnose.
    v = np.random.default_rng(1).normal(size=(dim, 2))
    sing = jnp.asarray(v @ v.T, jnp.float32)
    chol, jitter = cholesky_factor(sing)
    assert int(jitter) == 1 and np.all(np.isfinite(chol))
    delta = 100 * dim * np.finfo(np.float32).eps * float(np.max(np.diag(v @ v.T)))
    np.testing.assert_allclose(np.asarray(chol @ chol.T, np.float64), v @ v.T + delta * np.eye(dim),
                               atol=8 * dim * np.finfo(np.float32).eps * np.abs(v @ v.T).max())
    p = params_from_moments(jnp.zeros(dim), sing, jnp.int32(dim), factor="cholesky")
    assert bool(diagnose(p, "cholesky").underflow)
    # Σ = 0 (a collapse past the subnormals) has the factor 0, not NaN.
    chol, jitter = cholesky_factor(jnp.zeros((dim, dim), jnp.float32))
    assert int(jitter) == 0 and np.all(np.asarray(chol) == 0)


def test_cholesky_route_diagnostics_equal_eigh_route():
    """Same Σ, either factorisation: the same W2, log det, trace (to rounding)."""
    dim = 5
    s = _spd(dim, seed=4)
    mu = jnp.asarray([0.3, -0.2, 0.0, 1.0, 0.5], jnp.float32)
    by_eigh = diagnose(params_from_moments(mu, jnp.asarray(s, jnp.float32), jnp.int32(dim)))
    by_chol = diagnose(params_from_moments(mu, jnp.asarray(s, jnp.float32), jnp.int32(dim), "cholesky"), "cholesky")
    for name in ("w2", "cov_logdet", "cov_trace", "mean_sq_norm"):
        np.testing.assert_allclose(getattr(by_chol, name), getattr(by_eigh, name), rtol=1e-5, err_msg=name)
    # A subnormal Σ: rescaling keeps the factor finite; underflow is reported as with eigh.
    tiny = params_from_moments(jnp.zeros(dim), jnp.eye(dim) * 1e-40, jnp.int32(dim), "cholesky")
    assert np.all(np.isfinite(tiny.sqrt)) and bool(diagnose(tiny, "cholesky").underflow)


@pytest.mark.parametrize("factor", ["eigh", "cholesky"])
def test_log_det_is_accurate_to_its_stated_bound_or_missing(factor):
    """float32 log det from eigenvalues: within 0.05 nats of the float64 value of the same
    matrix wherever it is recorded, NaN with ``logdet_lost`` wherever it cannot be.

    Matrices ``Q diag(e) Qᵀ`` with condition numbers 10⁰ … 10¹⁰ cover both sides of the bound.
    """
    from madjax.gaussian import LOGDET_ACCURACY

    dim = 6
    rng = np.random.default_rng(4)
    recorded = lost = 0
    for cond in 10.0 ** np.arange(0, 11, 0.5):
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        e = np.geomspace(1.0, 1.0 / cond, dim)
        sigma = ((q * e) @ q.T).astype(np.float32)
        p = params_from_moments(jnp.zeros(dim, jnp.float32), jnp.asarray(sigma), jnp.int32(dim), factor)
        d = diagnose(p, factor)
        exact = np.linalg.slogdet(0.5 * (sigma + sigma.T).astype(np.float64))[1]
        if bool(d.logdet_lost):
            lost += 1
            assert np.isnan(float(d.cov_logdet))
        else:
            recorded += 1
            assert abs(float(d.cov_logdet) - exact) <= LOGDET_ACCURACY, (cond, float(d.cov_logdet), exact)
    assert recorded >= 5 and lost >= 5  # both sides of the bound were exercised
