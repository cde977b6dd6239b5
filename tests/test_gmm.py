"""The GMM model (madjax.gmm): masked EM, sampling, the mixture distance, diagnostics, and its loops.

Statistical asserts are ``|estimate − truth| ≤ z · se`` with ``se`` from the
sampling distribution of the estimator and ``z = zcrit(m)`` for the ``m``
asserts of the test (conftest). Compiled configurations are shared through
module-level cached helpers (one compilation each per session).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.linalg
from conftest import zcrit

from madjax import gmm as G
from madjax.gmm import distance as D
from madjax.loops import LoopParams, LoopSpec, run_chains_jit
from madjax.points import SIGMA, PointSet, grid_modes, sample_target
from madjax.validation import ParameterError

THREE = G.GMMSpec(draw_rows=600, n_components=3)


def _three_component_truth(dtype):
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.4]], [[0.6, -0.2], [-0.2, 0.3]]])
    return G.GMMParams(*(jnp.asarray(a, dtype) for a in (weights, means, covs)))


_fit = jax.jit(G.fit_em, static_argnums=2)


# ----------------------------------------------------------------------------- EM


def test_em_recovers_a_well_separated_mixture(dtype):
    truth = _three_component_truth(dtype)
    n = 4000
    x = G.sample_gmm(jax.random.key(0), truth, n, 1.0)
    spec = G.GMMSpec(draw_rows=n, n_components=3, dtype=dtype)
    fitted, info = _fit(jax.random.key(1), PointSet(x, jnp.ones(n, bool)), spec)
    assert fitted.means.dtype == jnp.dtype(dtype)
    assert bool(info.converged) and int(info.iterations) < spec.max_iter
    order = [int(jnp.argmin(jnp.sum((fitted.means - m) ** 2, axis=1))) for m in truth.means]
    assert sorted(order) == [0, 1, 2]
    w, mu, cov = (np.asarray(a, float)[order] for a in fitted)
    tw, tmu, tcov = (np.asarray(a, float) for a in truth)
    z = zcrit(m=3 * (1 + 2 + 3))
    nk = n * tw
    # weights: multinomial proportions
    assert np.all(np.abs(w - tw) <= z * np.sqrt(tw * (1 - tw) / n))
    # means: se of a mean of n_k points (n_k itself random: a second-order effect)
    var = np.diagonal(tcov, axis1=1, axis2=2)
    assert np.all(np.abs(mu - tmu) <= z * np.sqrt(var / nk[:, None]))
    # covariances (MLE, E = (1 − 1/n_k) Σ + floor): Var s_ij = (σ_ii σ_jj + σ_ij²) / n_k
    expected = tcov * (1 - 1 / nk)[:, None, None] + spec.reg_covar * np.eye(2)
    se = np.sqrt((var[:, :, None] * var[:, None, :] + tcov**2) / nk[:, None, None])
    iu = np.triu_indices(2)
    assert np.all(np.abs(cov - expected)[:, iu[0], iu[1]] <= z * se[:, iu[0], iu[1]])


def test_masked_fit_is_the_fit_of_the_valid_rows():
    """C = 600 rows, n = 400 valid: the fit of the valid rows alone (same key stream), whatever
    the invalid rows hold (bitwise) and wherever the valid rows sit (same order)."""
    n, cap = 400, THREE.draw_rows
    x = G.sample_gmm(jax.random.key(2), _three_component_truth("float32"), n, 1.0)
    key = jax.random.key(3)
    alone, info_alone = _fit(key, PointSet(x, jnp.ones(n, bool)), G.GMMSpec(draw_rows=n, n_components=3))

    def buffer(garbage, rows):
        buf = jnp.full((cap, 2), garbage, jnp.float32).at[rows].set(x)
        return PointSet(buf, jnp.zeros(cap, bool).at[rows].set(True))

    first = jnp.arange(n)
    masked, info = _fit(key, buffer(1e6, first), THREE)
    for a, b in zip(masked, alone):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(info.log_likelihood), float(info_alone.log_likelihood), rtol=1e-5)
    assert int(info.iterations) == int(info_alone.iterations)
    for garbage in (np.nan, -np.inf, 3.0):
        other, other_info = _fit(key, buffer(garbage, first), THREE)
        for a, b in zip((*other, *other_info), (*masked, *info)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    scattered = jnp.sort(jax.random.choice(jax.random.key(4), cap, (n,), replace=False))
    spread, _ = _fit(key, buffer(1e6, scattered), THREE)
    for a, b in zip(spread, alone):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_kmeans_plusplus_never_seeds_on_an_invalid_row():
    x = jnp.concatenate([jnp.zeros((3, 2)), jnp.full((50, 2), 100.0)])  # 3 valid (identical) rows
    mask = jnp.arange(53) < 3
    centres = jax.jit(G.kmeans_plusplus, static_argnums=2)(jax.random.key(5), PointSet(x, mask), 5)
    np.testing.assert_array_equal(np.asarray(centres), 0.0)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_sampling_scales_component_covariances_by_lambda(lam):
    """One component: the sample covariance estimates λΣ; a second checks the component draw."""
    cov = jnp.array([[[2.0, 0.6], [0.6, 1.0]], [[0.5, 0.0], [0.0, 0.5]]])
    params = G.GMMParams(jnp.array([0.7, 0.3]), jnp.array([[1.0, -1.0], [20.0, 20.0]]), cov)
    n = 20000
    x = np.asarray(jax.jit(G.sample_gmm, static_argnums=2)(jax.random.key(2), params, n, jnp.float32(lam)), float)
    first = x[:, 0] < 10
    z = zcrit(m=1 + 3 + 2)
    assert abs(first.mean() - 0.7) <= z * np.sqrt(0.7 * 0.3 / n)
    xs = x[first]
    s = np.cov(xs, rowvar=False)
    target = lam * np.asarray(cov[0])
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / len(xs))
    assert np.all(np.abs(s - target) <= z * se)
    assert np.all(np.abs(xs.mean(0) - np.array([1.0, -1.0])) <= z * np.sqrt(np.diag(target) / len(xs)))


def test_sample_masks_the_first_n_rows_and_memory_draws_from_valid_slots_only():
    model = G.GMMSpec(draw_rows=4000, n_components=2).build()
    one = lambda c: G.GMMParams(jnp.array([0.5, 0.5]), jnp.array([c, c]), 0.01 * jnp.stack([jnp.eye(2)] * 2))  # noqa: E731
    centres = jnp.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    history = jax.tree.map(lambda *a: jnp.stack(a), *(one(c) for c in centres))
    valid = jnp.array([True, False, True])
    n = 3000
    out = jax.jit(model.sample_mixture)(jax.random.key(6), history, valid, jnp.int32(n), jnp.float32(1.0))
    np.testing.assert_array_equal(np.asarray(out.mask), np.arange(4000) < n)
    x = np.asarray(out.x)
    slot = np.argmin(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
    assert not np.any(slot == 1)  # every row (valid or not) from a valid slot
    z = zcrit(m=1)
    assert abs(np.mean(slot[:n] == 0) - 0.5) <= z * np.sqrt(0.25 / n)
    drawn = jax.jit(model.sample)(jax.random.key(7), one(centres[0]), jnp.int32(17), jnp.float32(0.5))
    np.testing.assert_array_equal(np.asarray(drawn.mask), np.arange(4000) < 17)


# ----------------------------------------------------------------------------- the mixture distance


def _random_mixture(rng, k, dim=2):
    a = rng.normal(size=(k, dim, dim)) * rng.uniform(0.02, 0.7, (k, 1, 1))
    covs = a @ np.swapaxes(a, 1, 2) + 1e-3 * np.eye(dim)
    return G.GMMParams(rng.dirichlet(np.ones(k)), rng.uniform(-4, 4, (k, dim)), covs)


def _perturbed_grid(rng):
    """A fitted-looking grid mixture: weights off 1/25, means jittered, three components misplaced."""
    means = np.asarray(grid_modes(), float) + 0.03 * rng.normal(size=(25, 2))
    means[rng.choice(25, 3, replace=False)] += rng.choice([-2.0, 2.0], size=(3, 2))
    covs = SIGMA**2 * rng.uniform(0.5, 1.5, (25, 1, 1)) * np.eye(2)
    return G.GMMParams(rng.dirichlet(np.full(25, 40.0)), means, covs)


def _bures(m1, s1, m2, s2):
    root = scipy.linalg.sqrtm(s1)
    cross = np.real(np.trace(scipy.linalg.sqrtm(root @ s2 @ root)))
    return np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross


_w2sq = jax.jit(D.mixture_w2_squared, static_argnames="solver")


@pytest.mark.parametrize("solver", D.SOLVERS)
def test_mixture_w2_matches_an_exact_lp_solver(dtype, solver):
    """Both solvers against POT's network simplex called directly in float64 (for ``"jax"`` an
    independent implementation), to the documented accuracy; also symmetric, and the component
    costs against an independent float64 Bures formula (scipy's sqrtm)."""
    rng = np.random.default_rng(0)
    eps = float(jnp.finfo(dtype).eps)
    target = jax.tree.map(np.asarray, G.grid_target_params())
    pairs = [(_random_mixture(rng, 25), _random_mixture(rng, 25)) for _ in range(3)]
    pairs += [(_perturbed_grid(rng), target) for _ in range(3)]
    for p, q in pairs:
        p, q = (jax.tree.map(lambda a: jnp.asarray(a, dtype), g) for g in (p, q))
        cost = np.asarray(D.component_costs(p, q), float)
        pn, qn = (jax.tree.map(lambda a: np.asarray(a, float), g) for g in (p, q))
        exact_cost = np.array([[_bures(pn.means[k], pn.covs[k], qn.means[l], qn.covs[l])
                                for l in range(len(qn.weights))] for k in range(len(pn.weights))])
        np.testing.assert_allclose(cost, exact_cost, rtol=0, atol=64 * eps * exact_cost.max())
        exact = ot.emd2(pn.weights / pn.weights.sum(), qn.weights / qn.weights.sum(), cost)
        tol = D.ACCURACY_FACTOR * eps * cost.max()
        got = float(_w2sq(p, q, solver))
        assert abs(got - exact) <= tol, (got, exact, tol)
        assert abs(float(_w2sq(q, p, solver)) - got) <= 2 * tol
    target = G.grid_target_params(dtype)
    assert float(_w2sq(target, target, solver)) <= D.ACCURACY_FACTOR * eps * 128.0


def test_mixture_w2_pot_callback_under_vmap_matches_one_call_at_a_time():
    """The host callback sees batched leading dims under vmap (and broadcasts an unbatched target)."""
    rng = np.random.default_rng(3)
    ps = [jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _perturbed_grid(rng)) for _ in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    target = G.grid_target_params()
    batched = jax.jit(jax.vmap(lambda p: D.mixture_w2_squared(p, target)))(stacked)
    single = [float(_w2sq(p, target, "pot")) for p in ps]
    # the batched cost matrices may round differently (vectorised einsums): the documented accuracy
    tol = D.ACCURACY_FACTOR * float(jnp.finfo(jnp.float32).eps) * 128.0
    np.testing.assert_allclose(np.asarray(batched), single, rtol=0, atol=tol)


def test_mixture_w2_of_a_dimension_other_than_two():
    """d = 3 (eigh square roots) and K ≠ L."""
    rng = np.random.default_rng(1)
    p, q = _random_mixture(rng, 3, dim=3), _random_mixture(rng, 4, dim=3)
    pj, qj = (jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g) for g in (p, q))
    exact_cost = np.array([[_bures(p.means[k], p.covs[k], q.means[l], q.covs[l]) for l in range(4)] for k in range(3)])
    np.testing.assert_allclose(np.asarray(D.component_costs(pj, qj)), exact_cost, atol=1e-4 * exact_cost.max())
    exact = ot.emd2(p.weights / p.weights.sum(), q.weights / q.weights.sum(), exact_cost)
    assert abs(float(G.mixture_w2(pj, qj)) ** 2 - exact) <= 1e-4 * exact_cost.max()


def test_mixture_w2_of_a_fit_decreases_with_the_number_of_real_points():
    """E[MW2(G(n), P_r)] for EM fits to n grid points, n = 100, 300, 1000, 3000 (what n_e inverts).

    One buffer of 3000 rows serves every n (traced), 24 fits per n; consecutive
    means must differ by more than 4 standard errors of the difference.
    """
    ns = jnp.array([100, 300, 1000, 3000], jnp.int32)
    spec = G.GMMSpec(draw_rows=3000, max_iter=50)
    target = G.grid_target_params()

    def one(key, n):
        k_data, k_fit = jax.random.split(key)
        params, _ = G.fit_em(k_fit, sample_target(k_data, "grid", n, spec.draw_rows, 2), spec)
        return G.mixture_w2(params, target)

    keys = jax.random.split(jax.random.key(8), (ns.shape[0], 24))
    w2 = np.asarray(jax.jit(jax.vmap(jax.vmap(one, (0, None))))(keys, ns), float)
    mean, se = w2.mean(axis=1), w2.std(axis=1, ddof=1) / np.sqrt(w2.shape[1])
    assert np.all(np.isfinite(w2))
    assert np.all(mean[:-1] - mean[1:] > 4 * np.hypot(se[:-1], se[1:])), (mean, se)


# ----------------------------------------------------------------------------- diagnostics


def test_diagnostics_of_the_target_itself():
    n_eval = 1000
    model = G.GMMSpec(draw_rows=32, n_eval=n_eval).build()
    info = G.EMInfo(jnp.int32(7), jnp.array(True), jnp.float32(0.0))
    d = jax.jit(model.diagnose)(jax.random.key(3), G.grid_target_params(), info, jnp.int32(1))
    assert set(d) == {"w2", "total_variance", "recall", "precision", "modal_variance", "modes_covered",
                      "em_iterations", "em_converged", "nonfinite"}
    assert all(v.shape == () for v in d.values())
    z = zcrit(m=2)
    # total variance: each coordinate is uniform on {−4, …, 4} plus N(0, σ²):
    # E tr = 2 (8 + σ²); Var of a sample variance ≈ Var(v²)/n = (108.8 − 64)/n per coordinate.
    assert abs(float(d["total_variance"]) - 2 * (8 + SIGMA**2)) <= z * np.sqrt(2 * 44.8 / n_eval)
    # modal variance: 25 modes × tr of a 2-D sample covariance of ~n/25 points, Var tr = 2 · 2σ⁴/(n_k − 1)
    nk = n_eval / 25
    assert abs(float(d["modal_variance"]) - 2 * SIGMA**2) <= z * np.sqrt(4 * SIGMA**4 / (nk - 1) / 25)
    # ~40 points per mode, 98.9 % of them within 3σ: far above the 10-point threshold
    assert int(d["modes_covered"]) == 25
    # model = target: a target point misses every fake k-NN ball only when it is an outlier of its mode
    assert float(d["recall"]) > 0.8 and float(d["precision"]) > 0.8
    assert float(d["w2"]) <= np.sqrt(D.ACCURACY_FACTOR * float(jnp.finfo(jnp.float32).eps) * 128.0)
    assert int(d["em_iterations"]) == 7 and bool(d["em_converged"]) and not bool(d["nonfinite"])
    assert d["modes_covered"].dtype == jnp.int32 and d["em_iterations"].dtype == jnp.int32


# ----------------------------------------------------------------------------- spec and loops


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(target="normal"), "target"),
        (dict(dim=3), "dim"),
        (dict(draw_rows=10), "draw_rows"),
        (dict(n_eval=20), "n_eval"),
        (dict(tol=0.0), "tol"),
        (dict(reg_covar=-1.0), "reg_covar"),
        (dict(max_iter=0), "max_iter"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_spec_validates_naming_the_field(kwargs, param):
    with pytest.raises(ParameterError) as err:
        G.GMMSpec(**(dict(draw_rows=128) | kwargs))
    assert err.value.param == param


LOOP_MODEL = G.GMMSpec(draw_rows=128, n_eval=64, max_iter=20)
CHAINS, T = 4, 3


@functools.cache
def _loop(kind: str, memory: int, accumulate: bool, lam: float = 0.9) -> dict:
    spec = LoopSpec(kind=kind, model=LOOP_MODEL, memory=memory, accumulate=accumulate)
    params = LoopParams.create(n_ini=100, n_real=50, n_syn=60, lam=lam, memory=memory)
    out = run_chains_jit(jax.random.key(0), jnp.arange(CHAINS, dtype=jnp.uint32), params, spec, T)
    return jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("kind,memory,accumulate", [
    ("fully-synthetic", 1, False),
    ("fresh", 3, False),
    ("synthetic-augmentation", 1, True),
])
def test_loops_run_through_the_executor(kind, memory, accumulate):
    out = _loop(kind, memory, accumulate)
    assert set(out) >= {"w2", "total_variance", "modal_variance", "recall", "precision", "modes_covered",
                        "em_iterations", "em_converged", "nonfinite"}
    for value in out.values():
        assert value.shape == (CHAINS, T)
    assert out["modes_covered"].dtype == np.int32 and out["em_iterations"].dtype == np.int32
    assert not out["nonfinite"].any()
    assert np.all(np.isfinite(out["w2"])) and np.all(out["w2"] > 0)
    assert np.all((out["modes_covered"] >= 0) & (out["modes_covered"] <= 25))
    assert np.all((out["em_iterations"] >= 1) & (out["em_iterations"] <= LOOP_MODEL.max_iter))


def test_lambda_is_traced_not_static():
    before = _loop("fully-synthetic", 1, False)
    size = run_chains_jit._cache_size()
    after = _loop("fully-synthetic", 1, False, lam=0.5)
    assert run_chains_jit._cache_size() == size
    # generation 1 is fitted to real data only: λ cannot change it
    np.testing.assert_array_equal(after["w2"][:, 0], before["w2"][:, 0])
    assert not np.array_equal(after["total_variance"][:, 1:], before["total_variance"][:, 1:])

