"""The Gaussian KDE loop model: bandwidths, sampling moments, masking, w2's monotonicity, the executor.

Closed forms (module docstring of madjax.kde), for n points with ddof = 1
covariance Σ̂ and the λ-sampler y = x_I + sqrt(λ) h ε, I uniform:
  E y = x̄,   Cov y = (n − 1)/n Σ̂ + λ h² I.
Fully synthetic loop with a fixed h, S_t = tr Σ̂ of generation t's training
set (n_1 = n_ini, n_t = n_s after), a = (n_s − 1)/n_s, c = λ h² d:
  E S_1 = d (target N(0, I_d)),  E S_2 = (n_1 − 1)/n_1 · d + c,  E S_{t+1} = a E S_t + c,
and the fitted model's total variance (the λ = 1 diagnostic) has
  E TV_t = (n_t − 1)/n_t · E S_t + h² d.
With Scott's rule h_t² d = f(n_t)² S_t, so E S_{t+1} = ((n_t − 1)/n_t + λ f(n_t)²) E S_t
and E TV_t = ((n_t − 1)/n_t + f(n_t)²) E S_t.

Statistical asserts use |est − exact| ≤ z·se with z from conftest.zcrit
(false-fail rate 1e-4 split over the asserts of a test), and each checks that
its se is small enough to tell the closed form from a plausible bug.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from scipy import stats

from madjax import points
from madjax.kde import KDESpec, bandwidth_factor, draw, fit_kde, pooled_variance
from madjax.loops import LoopParams, LoopSpec, run_chains_jit
from madjax.points import PointSet
from madjax.validation import ParameterError

# ----------------------------------------------------------------------------- compiled helpers (shared)

_fit = jax.jit(fit_kde, static_argnames=("capacity", "bandwidth"))
_draw = jax.jit(draw, static_argnames=("rows",))


def _pointset(x, mask):
    return PointSet(jnp.asarray(x, jnp.float32), jnp.asarray(mask, bool))


# ----------------------------------------------------------------------------- spec


@pytest.mark.parametrize("kwargs, field", [
    (dict(bandwidth=-1.0), "bandwidth"),
    (dict(bandwidth=0), "bandwidth"),
    (dict(bandwidth=float("nan")), "bandwidth"),
    (dict(bandwidth=True), "bandwidth"),
    (dict(bandwidth="normal"), "bandwidth"),
    (dict(target="moons"), "target"),
    (dict(target="grid", dim=3), "dim"),
    (dict(draw_rows=0), "draw_rows"),
    (dict(capacity=1), "capacity"),
    (dict(dim=0), "dim"),
    (dict(n_eval=5), "n_eval"),
    (dict(target="grid", n_eval=25), "n_eval"),
    (dict(n_wd=1), "n_wd"),
    (dict(w2_every=0), "w2_every"),
    (dict(dtype="int32"), "dtype"),
])
def test_spec_refuses_bad_fields(kwargs, field):
    base = dict(draw_rows=8, capacity=16, dim=2)
    with pytest.raises(ParameterError) as err:
        KDESpec(**{**base, **kwargs})
    assert err.value.param == field


def test_spec_fields():
    spec = KDESpec(draw_rows=8, capacity=16, dim=2, bandwidth=1)
    assert spec.bandwidth == 1.0 and isinstance(spec.bandwidth, float)
    assert spec.points == 8 and KDESpec.name == "kde"
    assert hash(spec) == hash(KDESpec(draw_rows=8, capacity=16, dim=2, bandwidth=1.0))
    for kind in ("fully-synthetic", "synthetic-augmentation", "fresh"):
        LoopSpec(kind=kind, model=spec, memory=3)
        LoopSpec(kind=kind, model=spec, accumulate=True)


# ----------------------------------------------------------------------------- fit


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("rule", ["scott", "silverman"])
def test_bandwidth_matches_scipy(rule, dim):
    """1-D: h = scipy's factor × std (ddof = 1). d > 1: scipy's kernel covariance is
    f² Σ̂; ours is isotropic with the same trace, h² = tr(f² Σ̂)/d."""
    rng = np.random.default_rng(3)
    n, cap = 37, 64
    x = rng.normal(size=(cap, dim)) * np.arange(1, dim + 1) + 5.0
    mask = np.zeros(cap, bool)
    mask[rng.choice(cap, n, replace=False)] = True
    params, info = _fit(_pointset(x, mask), capacity=cap, bandwidth=rule)
    kde = stats.gaussian_kde(x[mask].T.astype(np.float64), bw_method=rule)
    np.testing.assert_allclose(bandwidth_factor(rule, n, dim), kde.factor, rtol=1e-6)
    if dim == 1:
        np.testing.assert_allclose(info.bandwidth, kde.factor * x[mask].std(ddof=1), rtol=1e-5)
    np.testing.assert_allclose(info.bandwidth ** 2, np.trace(kde.covariance) / dim, rtol=1e-5)
    assert int(info.n) == n and int(info.dropped) == 0
    np.testing.assert_array_equal(params.points.x[:n], x[mask].astype(np.float32))


def test_masked_fit_ignores_invalid_rows_bitwise():
    rng = np.random.default_rng(4)
    cap, n = 32, 11
    valid = rng.normal(size=(n, 2))
    outs = []
    for trial in range(3):
        x = rng.normal(size=(cap, 2)) * 100
        if trial == 2:
            x[::3] = np.nan
            x[1::3] = np.inf
        mask = np.zeros(cap, bool)
        mask[np.sort(rng.choice(cap, n, replace=False))] = True
        x[mask] = valid  # same valid rows, same order, other positions and garbage around them
        for rule in ("scott", 0.3):
            outs.append((rule, jax.device_get(_fit(_pointset(x, mask), capacity=cap, bandwidth=rule))))
    for rule in ("scott", 0.3):
        same = [o for r, o in outs if r == rule]
        for other in same[1:]:
            jax.tree.map(np.testing.assert_array_equal, same[0], other)


def test_overflow_is_counted():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    params, info = _fit(_pointset(x, np.ones(10, bool)), capacity=4, bandwidth="scott")
    assert int(info.n) == 4 and int(info.dropped) == 6
    np.testing.assert_array_equal(params.points.x, x[:4])


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("bandwidth", ["silverman", 0.7])
def test_sample_moments(bandwidth):
    """Mean x̄ and Cov (n−1)/n Σ̂ + λh²I of the λ-sampler, entry by entry within z·se."""
    n, rows, lam = 10, 200_000, 0.6
    x = np.random.default_rng(5).normal(size=(n, 2)) * [1.0, 2.0]
    params, info = _fit(_pointset(x, np.ones(n, bool)), capacity=16, bandwidth=bandwidth)
    y = np.asarray(_draw(jax.random.key(0), params, rows, lam), np.float64)
    h2 = float(info.bandwidth) ** 2
    xbar = x.mean(0)
    sigma = np.cov(x.T, ddof=1)
    exact = (n - 1) / n * sigma + lam * h2 * np.eye(2)
    z = zcrit(m=5)
    assert_close_se(y.mean(0), xbar, np.sqrt(np.diag(exact) / rows), z, "mean")
    prods = {(j, k): (y[:, j] - xbar[j]) * (y[:, k] - xbar[k]) for j, k in ((0, 0), (1, 1), (0, 1))}
    for (j, k), p in prods.items():
        se = p.std(ddof=1) / np.sqrt(rows)
        assert_close_se(p.mean(), exact[j, k], se, z, f"cov[{j},{k}]")
        if j == k:  # power: a missing λ or a missing (n−1)/n would be caught
            assert (1 - lam) * h2 > 2 * z * se and sigma[j, j] / n > 2 * z * se


def test_sample_mask_and_valid_points_only():
    spec = KDESpec(draw_rows=256, capacity=16, dim=2, bandwidth=1e-3)
    model = spec.build()
    x = np.full((16, 2), 1e3, np.float32)
    mask = np.zeros(16, bool)
    mask[[1, 4, 9]] = True
    x[mask] = [[1, 1], [2, 2], [3, 3]]
    params, _ = model.fit(None, model.init(None), _pointset(x, mask))
    out = jax.jit(model.sample)(jax.random.key(1), params, jnp.int32(100), jnp.float32(1.0))
    np.testing.assert_array_equal(out.mask, np.arange(256) < 100)
    nearest = np.abs(np.asarray(out.x)[:, None, :] - x[mask][None]).max(-1).min(-1)
    assert nearest.max() < 0.01


def test_mixture_draws_only_valid_slots():
    spec = KDESpec(draw_rows=512, capacity=8, dim=2, bandwidth=1e-3)
    model = spec.build()
    rng = np.random.default_rng(6)
    slots = []
    for k in range(3):
        x = 10.0 * (k + 1) + rng.normal(size=(8, 2)).astype(np.float32)
        x[5:] = 1e3  # invalid rows
        slots.append(model.fit(None, None, _pointset(x, np.arange(8) < 5))[0])
    history = jax.tree.map(lambda *a: jnp.stack(a), *slots)
    valid = jnp.array([True, False, True])
    out = jax.jit(model.sample_mixture)(jax.random.key(2), history, valid, jnp.int32(300), jnp.float32(1.0))
    np.testing.assert_array_equal(out.mask, np.arange(512) < 300)
    allowed = np.concatenate([np.asarray(slots[0].points.x[:5]), np.asarray(slots[2].points.x[:5])])
    y = np.asarray(out.x)
    assert np.abs(y[:, None, :] - allowed[None]).max(-1).min(-1).max() < 0.01
    share = np.mean(y[:, 0] < 20)  # slot 0 sits near 10, slot 2 near 30
    assert abs(share - 0.5) <= zcrit() * np.sqrt(0.25 / 512)


# ----------------------------------------------------------------------------- w2 decreases in n


@functools.lru_cache(maxsize=None)
def _w2_table(ns: tuple, n_wd: int, chains: int, seed: int) -> np.ndarray:
    """w2 of a KDE fitted to the first n of one chain's target draw, for each n: ``(chains, len(ns))``.

    Training sets are nested and the diagnose key is shared across n (common
    random numbers). ``lax.map``, not ``vmap``: a batched Sinkhorn runs every
    chain to the slowest one's iteration count.
    """
    cap = max(ns)
    model = KDESpec(draw_rows=cap, capacity=cap, dim=2, n_wd=n_wd, n_eval=8).build()

    def chain(key):
        k_data, k_diag = jax.random.split(key)
        data = model.sample_real(k_data, jnp.int32(cap))

        def at(n):
            params, info = model.fit(k_data, None, data._replace(mask=jnp.arange(cap) < n))
            return model.diagnose(k_diag, params, info, jnp.int32(1))["w2"]

        return jax.lax.map(at, jnp.asarray(ns, jnp.int32))

    keys = jax.random.split(jax.random.key(seed), chains)
    return np.asarray(jax.jit(lambda k: jax.lax.map(chain, k))(keys), np.float64)


def _assert_decreasing(w):
    diff = w[:, :-1] - w[:, 1:]
    se = diff.std(0, ddof=1) / np.sqrt(w.shape[0])
    assert np.all(diff.mean(0) > 4 * se), (w.mean(0), diff.mean(0), se)


def test_w2_decreases_in_n():
    """E[w2(KDE of n target points)] falls with n: the E-dist table of n_e is invertible.

    Steps of 8× in n keep the expected z of every step ≈ 8 at this cost; the
    paper-like ladder 16 … 1024 is the slow test below."""
    _assert_decreasing(_w2_table((4, 32, 256), 128, 48, 0))


@pytest.mark.slow
def test_w2_decreases_in_n_to_1024():
    _assert_decreasing(_w2_table((16, 64, 256, 1024), 256, 256, 1))


# ----------------------------------------------------------------------------- the executor




@pytest.mark.parametrize("kind, memory, accumulate, sizes, expect_n, model", [
    ("fresh", 2, False, dict(n_ini=64, n_real=32, n_syn=32), [64, 64, 64],
     dict(draw_rows=64, capacity=128, dim=2, n_eval=64, n_wd=64)),
    ("synthetic-augmentation", 1, True, dict(n_ini=32, n_real=32, n_syn=32), [32, 64, 96],
     dict(draw_rows=32, capacity=96, dim=2, n_eval=32, n_wd=16, target="grid")),
])
def test_executor_runs_kde(kind, memory, accumulate, sizes, expect_n, model):
    """Every loop kind (fully synthetic: the closed-form test below), memory K = 2 and accumulation."""
    spec = LoopSpec(kind=kind, model=KDESpec(**model), memory=memory, accumulate=accumulate)
    ids = jnp.arange(4, dtype=jnp.uint32)
    for k in range(1, memory + 1):  # the traced K reuses the executable
        rec = jax.device_get(run_chains_jit(jax.random.key(0), ids, LoopParams.create(**sizes, lam=0.8, memory=k),
                                            spec, 3))
        assert set(rec) >= {"w2", "total_variance", "precision", "recall", "bandwidth", "nonfinite", "n", "dropped"}
        for name, value in rec.items():
            assert value.shape == (4, 3), name
        assert not rec["nonfinite"].any() and not rec["dropped"].any()
        np.testing.assert_array_equal(rec["n"], np.broadcast_to(expect_n, (4, 3)))
        assert np.all(rec["w2"] > 0) and np.all(rec["bandwidth"] > 0)


def _fully_synthetic_closed_form(n_ini, n_syn, lam, dim, gens, h2=None, rule=None):
    """(E S_t, E TV_t), t = 1 … T (module docstring): fixed h² = ``h2`` or ``rule``."""
    n = np.array([n_ini] + [n_syn] * (gens - 1), float)
    f2 = np.zeros(gens) if rule is None else np.array([float(bandwidth_factor(rule, m, dim)) ** 2 for m in n])
    s = [float(dim)]
    for t in range(gens - 1):
        keep = (n[t] - 1) / n[t]
        s.append(keep * s[-1] + lam * h2 * dim if rule is None else (keep + lam * f2[t]) * s[-1])
    s = np.array(s)
    tv = (n - 1) / n * s + (h2 * dim if rule is None else f2 * s)
    return s, tv


def test_fully_synthetic_closed_form_through_executor():
    """Fixed h: E total_variance of the fitted KDE (λ = 1 draws) every generation; w2 only at t = 1."""
    n_ini, n_syn, lam, dim, gens, chains, h = 16, 8, 0.5, 2, 5, 192, 1.0
    model = KDESpec(draw_rows=16, capacity=16, dim=dim, bandwidth=h, n_eval=64, n_wd=8, w2_every=gens)
    spec = LoopSpec(kind="fully-synthetic", model=model)
    rec = jax.device_get(run_chains_jit(jax.random.key(7), jnp.arange(chains, dtype=jnp.uint32),
                                        LoopParams.create(n_ini=n_ini, n_syn=n_syn, lam=lam), spec, gens))
    assert np.isfinite(rec["w2"][:, 0]).all() and np.isnan(rec["w2"][:, 1:]).all() and not rec["nonfinite"].any()
    np.testing.assert_array_equal(rec["n"], np.broadcast_to([n_ini] + [n_syn] * (gens - 1), (chains, gens)))
    tv = np.asarray(rec["total_variance"], np.float64)
    _, exact = _fully_synthetic_closed_form(n_ini, n_syn, lam, dim, gens, h2=h * h)
    se = tv.std(0, ddof=1) / np.sqrt(chains)
    z = zcrit(m=gens)
    assert_close_se(tv.mean(0), exact, se, z, "E total_variance")
    # power: an unscaled kernel (λ = 1) or a sampler without the (n−1)/n loss would end outside the band
    _, no_lam = _fully_synthetic_closed_form(n_ini, n_syn, 1.0, dim, gens, h2=h * h)
    _, no_loss = _fully_synthetic_closed_form(10**9, 10**9, lam, dim, gens, h2=h * h)
    assert min(abs(no_lam[-1] - exact[-1]), abs(no_loss[-1] - exact[-1])) > 2 * z * se[-1]


@functools.lru_cache(maxsize=None)
def _scott_chains(n_ini, n_syn, lam, dim, gens, chains):
    """S_t = tr Σ̂ of each generation's training set, fully synthetic, Scott's rule: ``(chains, T)``."""
    model = KDESpec(draw_rows=max(n_ini, n_syn), capacity=max(n_ini, n_syn), dim=dim).build()

    def chain(key):
        def train_var(params):
            return points.size(params.points), dim * pooled_variance(params.points)

        params, _ = model.fit(key, None, model.sample_real(jax.random.fold_in(key, 0), jnp.int32(n_ini)))

        def step(params, t):
            data = model.sample(jax.random.fold_in(key, t), params, jnp.int32(n_syn), jnp.float32(lam))
            params, _ = model.fit(key, params, data)
            return params, train_var(params)

        _, (n, s) = jax.lax.scan(step, params, jnp.arange(1, gens))
        n0, s0 = train_var(params)
        return jnp.concatenate([n0[None], n]), jnp.concatenate([s0[None], s])

    keys = jax.random.split(jax.random.key(8), chains)
    return jax.device_get(jax.jit(jax.vmap(chain))(keys))


def test_fully_synthetic_closed_form_scott():
    """Scott's rule: E S_{t+1} = ((n_t − 1)/n_t + λ f(n_t)²) E S_t -- the KDE loop inflates variance."""
    n_ini, n_syn, lam, dim, gens, chains = 16, 8, 0.5, 2, 5, 4000
    n, s = _scott_chains(n_ini, n_syn, lam, dim, gens, chains)
    np.testing.assert_array_equal(n, np.broadcast_to([n_ini] + [n_syn] * (gens - 1), (chains, gens)))
    exact, _ = _fully_synthetic_closed_form(n_ini, n_syn, lam, dim, gens, rule="scott")
    s = np.asarray(s, np.float64)
    se = s.std(0, ddof=1) / np.sqrt(chains)
    z = zcrit(m=gens)
    assert_close_se(s.mean(0), exact, se, z, "E S_t (scott)")
    wrong, _ = _fully_synthetic_closed_form(n_ini, n_syn, 1.0, dim, gens, rule="scott")
    assert abs(wrong[-1] - exact[-1]) > 2 * z * se[-1]
