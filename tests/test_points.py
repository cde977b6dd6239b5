"""The point models' shared half: masked buffers, the memory-K mixture, the targets, the diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import zcrit

from madjax import points as P


def _set(rows, valid):
    x = jnp.arange(rows * 2, dtype=jnp.float32).reshape(rows, 2)
    return P.PointSet(x, jnp.arange(rows) < valid)


def test_append_writes_valid_rows_contiguously_and_ignores_the_rest():
    pool = P.empty(12, 2, jnp.float32)
    a = P.PointSet(jnp.ones((4, 2)), jnp.array([True, False, True, False]))
    b = P.PointSet(2 * jnp.ones((4, 2)), jnp.array([False, True, True, True]))
    pool = P.append(P.append(pool, a), b)
    assert int(P.size(pool)) == 5
    np.testing.assert_array_equal(np.asarray(pool.mask), [True] * 5 + [False] * 7)
    np.testing.assert_array_equal(np.asarray(pool.x[:5, 0]), [1, 1, 2, 2, 2])


def test_compact_keeps_order_and_pads():
    s = P.PointSet(jnp.arange(5.0)[:, None], jnp.array([False, True, False, True, True]))
    c = P.compact(s, 7)
    assert c.x.shape == (7, 1)
    np.testing.assert_array_equal(np.asarray(c.x[:3, 0]), [1, 3, 4])
    np.testing.assert_array_equal(np.asarray(c.mask), [True] * 3 + [False] * 4)


def test_concat_adds_capacities():
    c = P.concat(_set(3, 2), _set(4, 1))
    assert c.x.shape == (7, 2) and int(P.size(c)) == 3


def test_mixture_rows_draws_each_row_from_a_valid_slot_uniformly():
    """Slot s draws the constant s: each row's value is its slot; only valid slots appear,
    each with probability 1/K (binomial standard error)."""

    def draw(key, params, rows, lam):
        return jnp.full((rows, 1), params, jnp.float32)

    mixture = P.mixture_rows(draw, 4000)
    history = jnp.arange(4.0)
    valid = jnp.array([True, False, True, True])
    out = mixture(jax.random.key(0), history, valid, jnp.int32(3000), 1.0)
    x = np.asarray(out.x[:, 0])[np.asarray(out.mask)]
    assert len(x) == 3000 and set(np.unique(x)) <= {0.0, 2.0, 3.0}
    share = np.array([(x == s).mean() for s in (0.0, 2.0, 3.0)])
    se = np.sqrt((1 / 3) * (2 / 3) / len(x))
    assert np.all(np.abs(share - 1 / 3) <= zcrit(3) * se), share


def test_grid_target_diagnostics_of_the_target_itself():
    """Target draws: every mode covered; modal variance 2σ² (the per-mode trace, ddof = 1)
    within its se; total variance 16 + 2σ² (modes on {−4, …, 4}², variance 8 per axis, and
    Var x² = E x⁴ − 8² = 44.8 per axis gives its se)."""
    x = P.draw_target(jax.random.key(1), "grid", 5000, 2)
    d = jax.jit(P.point_diagnostics, static_argnums=2)(jax.random.key(2), x, "grid")
    assert int(d["modes_covered"]) == 25
    sigma2 = P.SIGMA**2
    # per mode ~200 points: trace of a 2-D sample covariance has sd ≈ 2σ²·sqrt(1/(n−1)) per mode
    se = 2 * sigma2 * np.sqrt(1 / (5000 / 25 - 1)) / 5
    assert abs(float(d["modal_variance"]) - 2 * sigma2) <= zcrit() * se
    assert abs(float(d["total_variance"]) - (16 + 2 * sigma2)) <= zcrit() * np.sqrt(2 * 44.8 / 5000)
    assert float(d["recall"]) > 0.9 and float(d["precision"]) > 0.9


def test_normal_target_has_no_grid_diagnostics():
    x = P.draw_target(jax.random.key(1), "normal", 200, 3)
    d = P.point_diagnostics(jax.random.key(2), x, "normal")
    assert set(d) == {"total_variance", "recall", "precision"}
