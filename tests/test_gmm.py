"""The GMM model, its diagnostics and the GMM loop (madjax.gmm, Figs 11/12).

Statistical asserts are ``|estimate − truth| ≤ z · se`` with ``se`` from the
sampling distribution of the estimator and ``z = zcrit(m)`` for the ``m``
asserts of the test (conftest).
"""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import zcrit

from madjax import gmm as G
from madjax.figures import gmm as F
from madjax.validation import ParameterError

# One shape for every loop test (and the smoke preset): compiled once per session.
SMALL = dict(n_ini=200, n_syn=200, n_eval=200, generations=10)


def _three_component_truth(dtype):
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.4]], [[0.6, -0.2], [-0.2, 0.3]]])
    return G.GMMParams(*(jnp.asarray(a, dtype) for a in (weights, means, covs)))


def test_em_recovers_a_well_separated_mixture(dtype):
    truth = _three_component_truth(dtype)
    n = 4000
    x = G.sample_gmm(jax.random.key(0), truth, n, jnp.asarray(1.0, dtype))
    spec = G.GMMSpec(n_components=3)
    fitted, info = jax.jit(G.fit_em, static_argnums=2)(jax.random.key(1), x, spec)
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


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_sampling_scales_component_covariances_by_lambda(lam):
    """One component: the sample covariance estimates λΣ; a second checks the component draw."""
    cov = jnp.array([[[2.0, 0.6], [0.6, 1.0]], [[0.5, 0.0], [0.0, 0.5]]])
    params = G.GMMParams(jnp.array([0.7, 0.3]), jnp.array([[1.0, -1.0], [20.0, 20.0]]), cov)
    n = 20000
    x = np.asarray(G.sample_gmm(jax.random.key(2), params, n, jnp.asarray(lam)), float)
    first = x[:, 0] < 10
    z = zcrit(m=1 + 3 + 2)
    assert abs(first.mean() - 0.7) <= z * np.sqrt(0.7 * 0.3 / n)
    xs = x[first]
    s = np.cov(xs, rowvar=False)
    target = lam * np.asarray(cov[0])
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / len(xs))
    assert np.all(np.abs(s - target) <= z * se)
    assert np.all(np.abs(xs.mean(0) - np.array([1.0, -1.0])) <= z * np.sqrt(np.diag(target) / len(xs)))


def _grid_params(var=G.SIGMA**2, weights=None):
    modes = G.grid_modes()
    w = jnp.full((25,), 1 / 25) if weights is None else jnp.asarray(weights)
    return G.GMMParams(w, modes, jnp.broadcast_to(var * jnp.eye(2), (25, 2, 2)))


_diagnose = jax.jit(G.diagnose, static_argnums=2)


def test_diagnostics_of_the_target_itself():
    n_eval = 1000
    d = _diagnose(jax.random.key(3), _grid_params(), n_eval)
    z = zcrit(m=2)
    # total variance: each coordinate is uniform on {−4, …, 4} plus N(0, σ²):
    # E tr = 2 (8 + σ²); Var of a sample variance ≈ Var(v²)/n = (108.8 − 64)/n per coordinate.
    assert abs(float(d.total_variance) - 2 * (8 + G.SIGMA**2)) <= z * np.sqrt(2 * 44.8 / n_eval)
    # modal variance: 25 modes × tr of a 2-D sample covariance of ~n/25 points,
    # Var tr = 2 · 2σ⁴/(n_k − 1) per mode.
    nk = n_eval / 25
    assert abs(float(d.modal_variance) - 2 * G.SIGMA**2) <= z * np.sqrt(4 * G.SIGMA**4 / (nk - 1) / 25)
    # ~40 points per mode, 98.9 % of them within 3σ: far above the 10-point threshold
    assert int(d.modes_covered) == 25
    assert 0.0 < float(d.recall) <= 1.0 and 0.0 < float(d.precision) <= 1.0


def test_diagnostics_of_lost_and_collapsed_modes():
    n_eval = 1000
    weights = np.full(25, 1 / 20)
    weights[[0, 6, 12, 18, 24]] = 0.0  # the diagonal modes are gone
    d = _diagnose(jax.random.key(4), _grid_params(weights=weights), n_eval)
    assert int(d.modes_covered) == 20
    collapsed = _diagnose(jax.random.key(5), _grid_params(var=1e-6), n_eval)
    assert int(collapsed.modes_covered) == 25
    # modal variance: 2e-6 per mode, sampling error a few %
    assert abs(float(collapsed.modal_variance) - 2e-6) <= 0.2 * 2e-6
    # fake balls have radii ~1e-3; a target point (σ = 0.05) falls in one with
    # probability ~ (1e-3)² / (2σ²) · 5 ≈ 1e-3 -- recall collapses
    assert float(collapsed.recall) < 0.05
    # fake points sit at the mode centres, inside the target's k-NN balls
    assert float(collapsed.precision) > 0.9


def test_simulate_gmm_dataset_and_chunk_invariance():
    ds = G.simulate_gmm(chains=3, chunk=2, seed=7, snapshots=(1, 10), **SMALL)
    assert ds.recall.dims == ("chain", "generation")
    assert list(ds.generation.values) == list(range(1, 11))
    for name in ("total_variance", "modal_variance", "recall", "precision", "modes_covered", "em_iterations"):
        assert ds[name].shape == (3, 10)
    assert ds.n_nonfinite.dims == ("chain",) and int(ds.n_nonfinite.sum()) == 0
    assert ds.modes_covered.dtype == np.int32 and ds.modes_covered.max() <= 25
    assert int(ds.modes_covered[:, 0].min()) >= 20  # G¹ fitted to 200 target points
    assert ds.snap_samples.shape == (3, 2, 200, 2) and ds.snap_weights.shape == (3, 2, 25)
    config = json.loads(ds.attrs["config"])
    assert config["loop"] == "fully-synthetic" and config["n_syn"] == 200 and config["lam"] == 1.0
    # chains 1 and 2 again, as one batch starting at chain 1: identical numbers
    again = G.simulate_gmm(chains=2, chunk=2, seed=7, first_chain=1, snapshots=(1, 10), **SMALL)
    for name in ("recall", "total_variance", "modes_covered", "snap_samples"):
        np.testing.assert_array_equal(again[name].values, ds[name].values[1:])
    np.testing.assert_array_equal(again.chain.values, [1, 2])


def test_lambda_is_traced_not_static():
    params = _three_component_truth("float32")
    sample = jax.jit(chex.assert_max_traces(G.sample_gmm, n=1), static_argnums=2)
    sample(jax.random.key(0), params, 10, jnp.float32(1.0))
    sample(jax.random.key(0), params, 10, jnp.float32(0.5))
    # the compiled loop driver behind simulate_gmm serves both λ
    G.simulate_gmm(chains=2, lam=1.0, **SMALL)
    size = G._segment_chains._cache_size()
    G.simulate_gmm(chains=2, lam=0.6, **SMALL)
    assert G._segment_chains._cache_size() == size


def test_other_loops_and_memory_run():
    ds = G.simulate_gmm(loop="fresh", n_real=100, n_ini=200, n_syn=100, memory=3, chains=2, n_eval=200,
                        generations=3)
    assert ds.recall.shape == (2, 3) and int(ds.n_nonfinite.sum()) == 0
    # fresh real data keeps every mode in the training set
    assert int(ds.modes_covered.min()) >= 20


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(lam=1.5), "lam"),
        (dict(loop="bogus"), "loop"),
        (dict(accumulate=True), "accumulate"),
        (dict(n_ini=10), "n_ini"),
        (dict(n_real=5), "n_real"),
        (dict(loop="fresh"), "n_real"),
        (dict(snapshots=(0,)), "snapshots"),
        (dict(chains=0), "chains"),
        (dict(n_eval=20), "n_eval"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_simulate_gmm_validates_before_work(kwargs, param):
    args = dict(generations=2, chains=1) | kwargs
    with pytest.raises(ParameterError) as err:
        G.simulate_gmm(**args)
    assert err.value.param == param


def test_figure_presets_and_smoke_run(tmp_path):
    for preset in ("smoke", "quick", "paper"):
        config = F.get_config(preset)
        assert config.snapshots[-1] == config.generations
    smoke = F.get_config("smoke")
    assert (smoke.n, smoke.n_eval, smoke.generations) == (SMALL["n_ini"], SMALL["n_eval"], SMALL["generations"])
    assert "compiled" in F.dry_run(smoke)
    fig11, fig12 = F.FIGURES["fig11"], F.FIGURES["fig12"]
    fig11.run(smoke, str(tmp_path), seed=0, progress=False)
    fig12.run(smoke, str(tmp_path), seed=0, progress=False)  # reuses the stored run
    paths = fig11.plot(str(tmp_path)) + fig12.plot(str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["fig11.pdf", "fig11.png", "fig12.pdf", "fig12.png"]
    with pytest.raises(ParameterError) as err:  # another preset into the same directory
        fig11.run(F.get_config("quick"), str(tmp_path), seed=0, progress=False)
    assert err.value.param == "out"
