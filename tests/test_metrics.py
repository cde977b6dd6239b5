"""madjax.metrics against independent implementations: SciPy, prdc, POT.

Reference values are computed in float64 by the independent library on the
same (seeded) inputs. Where a tolerance is needed it is derived from the
floating-point unit round-off of the dtype under test (``eps``) and the size
of the quantities involved, or from a proven approximation bound (Sinkhorn),
never copied from a run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import prdc
import pytest
import scipy.linalg

from madjax import metrics
from madjax.validation import ParameterError


def _eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def _prdc(real, fake, k=5):
    out = prdc.compute_prdc(np.asarray(real, np.float64), np.asarray(fake, np.float64), k)
    return float(out["precision"]), float(out["recall"])


def _counts(pr, n_real, n_fake):
    """(precision, recall) as integer counts of fake / real points."""
    return round(float(pr[0]) * n_fake), round(float(pr[1]) * n_real)


def _spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def _scipy_fd(mu1, s1, mu2, s2):
    """The textbook formula with scipy.linalg.sqrtm (float64)."""
    root1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(root1 @ s2 @ root1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


# ----------------------------------------------------------------------------- Fréchet


@pytest.mark.parametrize("jit", [False, True])
def test_frechet_matches_scipy_sqrtm(dtype, jit):
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    expected = _scipy_fd(mu1, s1, mu2, s2)
    # the usual form tr sqrtm(S1 S2) agrees (eigenvalues of S1 S2 are real, >= 0)
    assert np.isclose(expected, np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2)
                      - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real), rtol=1e-8)
    args = [jnp.asarray(a, dtype) for a in (mu1, s1, mu2, s2)]
    fn = jax.jit(metrics.frechet_distance) if jit else metrics.frechet_distance
    got = fn(*args)
    assert got.dtype == jnp.dtype(dtype)
    # rounding: O(d) eigen-solves on matrices of norm ~ tr S, a few eps each
    scale = np.trace(s1) + np.trace(s2) + np.sum((mu1 - mu2) ** 2)
    assert abs(float(got) - expected) <= 50 * d * _eps(dtype) * scale
    w2 = metrics.gaussian_w2(*args)
    assert abs(float(w2) ** 2 - float(got)) <= 10 * _eps(dtype) * scale


def test_frechet_singular_and_commuting_closed_form(dtype):
    # Diagonal (commuting) covariances, some variances exactly 0:
    # d_F^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    a = np.array([0.0, 0.0, 1.0, 4.0, 2.25])
    b = np.array([0.0, 9.0, 0.0, 1.0, 2.25])
    mu1 = np.array([1.0, 0.0, -1.0, 0.5, 0.0])
    mu2 = np.zeros(5)
    rot = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))[0]
    s1, s2 = rot @ np.diag(a) @ rot.T, rot @ np.diag(b) @ rot.T  # rotated: still commuting
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(*(jnp.asarray(v, dtype) for v in (mu1, s1, mu2, s2)))
    assert np.isfinite(float(got))
    # sqrt of a round-off eigenvalue ~eps*|S| contributes up to sqrt(eps*|S|)
    assert abs(float(got) - expected) <= 20 * np.sqrt(_eps(dtype) * 9.0) * 5


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm of the singular reference
def test_frechet_rank_deficient_against_scipy(dtype):
    rng = np.random.default_rng(2)
    d = 5
    s1, s2 = _spd(rng, d, rank=2), _spd(rng, d, rank=3)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = _scipy_fd(mu1, s1, mu2, s2)
    got = float(metrics.frechet_distance(*(jnp.asarray(v, dtype) for v in (mu1, s1, mu2, s2))))
    scale = np.trace(s1) + np.trace(s2)
    assert abs(got - expected) <= 20 * d * np.sqrt(_eps(dtype)) * scale


def test_frechet_identical_and_swapped(dtype):
    rng = np.random.default_rng(3)
    mu, s = rng.standard_normal(4), _spd(rng, 4)
    mu2, s2 = rng.standard_normal(4), _spd(rng, 4)
    args = [jnp.asarray(v, dtype) for v in (mu, s, mu2, s2)]
    assert float(metrics.frechet_distance(args[0], args[1], args[0], args[1])) <= 100 * _eps(dtype) * np.trace(s)
    ab = float(metrics.frechet_distance(*args))
    ba = float(metrics.frechet_distance(args[2], args[3], args[0], args[1]))
    assert abs(ab - ba) <= 200 * _eps(dtype) * (np.trace(s) + np.trace(s2) + ab)


def test_fid_from_features_two_pass_with_large_offset():
    """float32 features offset by 1e4: two-pass after a reference shift loses nothing."""
    rng = np.random.default_rng(4)
    n, d = 2000, 8
    # Quarter-integers plus 1e4 are exact in float32 (ulp(1e4) = 2^-10).
    real = (1e4 + 0.25 * rng.integers(-8, 9, (n, d))).astype(np.float32)
    fake = (1e4 + 0.5 + 0.25 * rng.integers(-6, 7, (n, d))).astype(np.float32)
    r64, f64 = real.astype(np.float64) - 1e4, fake.astype(np.float64) - 1e4
    expected = _scipy_fd(r64.mean(0), np.cov(r64, rowvar=False), f64.mean(0), np.cov(f64, rowvar=False))
    got = float(metrics.fid_from_features(real, fake))
    # after the exact shift the data are O(1): round-off ~ n * eps * tr S (sums),
    # nowhere near the 1e8 * eps = 12 error of the one-pass form.
    scale = np.trace(np.cov(r64, rowvar=False)) + np.trace(np.cov(f64, rowvar=False)) + expected
    assert abs(got - expected) <= 100 * d * _eps(np.float32) * scale
    assert float(metrics.fid_from_features(real, real)) <= 100 * d * _eps(np.float32) * scale


# ----------------------------------------------------------------------------- precision / recall


@pytest.mark.parametrize(
    "n,m,d,tile",
    [
        (300, 200, 64, 1 << 19),  # matmul path, one block
        (300, 200, 64, 64),  # many row blocks, column chunks and padding
        (257, 301, 2, 64),  # explicit-difference path (d <= 4), blocked
    ],
)
def test_precision_recall_matches_prdc(n, m, d, tile):
    rng = np.random.default_rng(n + m + d)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (1.2 * rng.standard_normal((m, d)) + 0.3).astype(np.float32)
    p, r = metrics.precision_recall(real, fake, k=5, tile=tile)
    ep, er = _prdc(real, fake)
    # Continuous data: a distance within round-off of a radius has probability
    # ~0; allow one point of disagreement per set for such a near-tie.
    assert abs(float(p) - ep) <= 1.0 / m
    assert abs(float(r) - er) <= 1.0 / n


def test_precision_recall_swapped_arguments():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((150, 16)).astype(np.float32)
    b = (0.5 * rng.standard_normal((180, 16)) + 0.2).astype(np.float32)
    p_ab, r_ab = (float(v) for v in metrics.precision_recall(a, b, k=5))
    p_ba, r_ba = (float(v) for v in metrics.precision_recall(b, a, k=5))
    assert (p_ab, r_ab) == (r_ba, p_ba)
    ep, er = _prdc(b, a)
    assert abs(p_ba - ep) <= 1 / 150 and abs(r_ba - er) <= 1 / 180
    assert p_ab != r_ab  # the two roles are genuinely different on these sets


@pytest.mark.parametrize("d", [3, 8])
def test_precision_recall_exact_ties_match_prdc(d):
    """Integer grids: many distances equal a radius exactly; '<' decides them."""
    rng = np.random.default_rng(d)
    real = rng.integers(0, 3, (240, d)).astype(np.float32)
    fake = rng.integers(0, 4, (200, d)).astype(np.float32)
    got = metrics.precision_recall(real, fake, k=5, tile=256)
    assert _counts(got, 240, 200) == _counts(_prdc(real, fake), 240, 200)


def test_precision_recall_large_offset_float32():
    """Offset 1e4 in float32 (|x|^2 ~ 6e9): exact after the reference shift."""
    rng = np.random.default_rng(6)
    real_i = rng.integers(-6, 7, (220, 64))
    fake_i = rng.integers(-5, 8, (180, 64))
    real = (1e4 + 0.25 * real_i).astype(np.float32)
    fake = (1e4 + 0.25 * fake_i).astype(np.float32)
    got = metrics.precision_recall(real, fake, k=5)
    assert _counts(got, 220, 180) == _counts(_prdc(0.25 * real_i, 0.25 * fake_i), 220, 180)


def test_precision_recall_identical_sets_and_float64(x64):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 10))
    p, r = metrics.precision_recall(jnp.asarray(x), jnp.asarray(x), k=5)
    assert p.dtype == jnp.float64 and float(p) == 1.0 and float(r) == 1.0
    y = 0.8 * rng.standard_normal((90, 10))
    p, r = jax.jit(metrics.precision_recall, static_argnames="k")(x, y, k=3)
    ep, er = _prdc(x, y, k=3)
    assert abs(float(p) - ep) <= 1 / 90 and abs(float(r) - er) <= 1 / 120


def test_precision_recall_duplicates_count_as_neighbours():
    """A point repeated k+1 times has radius 0: nothing is strictly inside its ball."""
    real = np.repeat(np.eye(3, dtype=np.float32), 6, axis=0)  # 3 points x 6 copies
    fake = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0]]
    p, r = metrics.precision_recall(real, fake, k=5)
    assert (float(p), float(r)) == _prdc(real, fake)
    assert float(p) == 0.0  # every real radius is 0
    assert float(r) == 1.0  # fake radii are sqrt(2): each real point sits on a fake one


def test_precision_recall_vmaps():
    rng = np.random.default_rng(8)
    real = jnp.asarray(rng.standard_normal((3, 60, 2)), jnp.float32)
    fake = jnp.asarray(rng.standard_normal((3, 70, 2)) * 0.5, jnp.float32)
    p, r = jax.vmap(lambda a, b: metrics.precision_recall(a, b, k=5))(real, fake)
    for i in range(3):
        ep, er = _prdc(real[i], fake[i])
        assert abs(float(p[i]) - ep) <= 1 / 70 and abs(float(r[i]) - er) <= 1 / 60


# ----------------------------------------------------------------------------- W2


@pytest.mark.parametrize("n,m", [(40, 40), (30, 45), (37, 23)])
def test_wasserstein2_matches_pot(dtype, n, m):
    rng = np.random.default_rng(n * m)
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((m, 3)) * 1.5 + 1.0
    expected = np.sqrt(ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), ot.dist(x, y)))
    xs, ys = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    got = jax.jit(metrics.wasserstein2)(xs, ys)
    assert got.dtype == jnp.dtype(dtype)
    # inputs rounded to dtype move W2 by at most ~eps*|x|; the LP is solved to ~1e-9
    assert abs(float(got) - expected) <= 10 * _eps(dtype) * 10 + 1e-7 * expected
    assert float(metrics.wasserstein2(ys, xs)) == pytest.approx(float(got), rel=1e-6)


def test_wasserstein2_identical_and_vmap():
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.standard_normal((3, 25, 2)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((3, 25, 2)), jnp.float32)
    assert float(metrics.wasserstein2(x[0], x[0])) == 0.0
    got = jax.vmap(metrics.wasserstein2)(x, y)
    for i in range(3):
        expected = np.sqrt(ot.emd2([], [], ot.dist(np.asarray(x[i], np.float64), np.asarray(y[i], np.float64))))
        assert float(got[i]) == pytest.approx(expected, rel=1e-5)


def _sinkhorn_bound(x, y, eps):
    """|S_eps - W2^2| <= eps log max(n, m), plus the stopping tolerance
    (marginal error 1e-5 times the largest cost)."""
    return eps * np.log(max(len(x), len(y))) + 1e-5 * ot.dist(x, y).max()


def test_sinkhorn_w2_within_entropic_bound(dtype):
    rng = np.random.default_rng(11)
    n, m = 50, 80
    x = rng.standard_normal((n, 2))
    y = 0.7 * rng.standard_normal((m, 2)) + 0.5
    w2sq = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), ot.dist(x, y))
    eps = 1e-2 * np.mean(ot.dist(x, y))  # the documented default
    xs, ys = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    got = float(jax.jit(metrics.sinkhorn_w2)(xs, ys))
    assert abs(got**2 - w2sq) <= _sinkhorn_bound(x, y, eps) + 10 * _eps(dtype) * w2sq
    explicit = float(metrics.sinkhorn_w2(xs, ys, epsilon=eps))
    assert abs(explicit**2 - got**2) <= 2 * _sinkhorn_bound(x, y, eps)


def test_sinkhorn_w2_identical_measures_and_large_offset_float32():
    # Same shapes (50, 80) as above: one compiled solver.
    rng = np.random.default_rng(10)
    x = rng.standard_normal((50, 2))
    y = rng.standard_normal((80, 2)) + 1.0
    w2sq = ot.emd2(np.full(50, 1 / 50), np.full(80, 1 / 80), ot.dist(x, y))
    bound = _sinkhorn_bound(x, y, 1e-2 * np.mean(ot.dist(x, y)))
    off = float(metrics.sinkhorn_w2(jnp.asarray(x + 1e4, jnp.float32), jnp.asarray(y + 1e4, jnp.float32)))
    # inputs rounded at ulp(1e4) ~ 1e-3 move each cost by <= 4e-3 |x - y|
    assert abs(off**2 - w2sq) <= bound + 4e-3 * np.sqrt(ot.dist(x, y).max())
    # 10 points with 5 copies vs the same 10 points with 8 copies: one measure.
    base = rng.standard_normal((10, 2))
    a, b = np.tile(base, (5, 1)), np.tile(base, (8, 1))
    same = float(metrics.sinkhorn_w2(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    assert same**2 <= _sinkhorn_bound(a, b, 1e-2 * np.mean(ot.dist(a, b)))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call,param",
    [
        (lambda: metrics.precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0), "k"),
        (lambda: metrics.precision_recall(np.zeros((5, 2)), np.zeros((10, 2)), k=5), "real"),
        (lambda: metrics.precision_recall(np.zeros((10, 2)), np.zeros((10, 3))), "fake"),
        (lambda: metrics.precision_recall(np.zeros(10), np.zeros((10, 2))), "real"),
        (lambda: metrics.fid_from_features(np.zeros((1, 2)), np.zeros((5, 2))), "real"),
        (lambda: metrics.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "sigma1"),
        (lambda: metrics.wasserstein2(np.zeros((3, 2)), np.zeros((3, 1))), "y"),
        (lambda: metrics.sinkhorn_w2(np.zeros((3, 2)), np.ones((3, 2)), epsilon=-1.0), "epsilon"),
    ],
)
def test_validation_names_the_parameter(call, param):
    with pytest.raises(ParameterError) as err:
        call()
    assert err.value.param == param
