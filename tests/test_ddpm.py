"""Conditional DDPM: schedule, loss and guidance closed forms, training, both samplers.

Statistical checks assert |estimate − exact| ≤ z·se with z from ``zcrit``
(Bonferroni over the assertions of a test). The expensive compilations (one
smoke model, one tiny model) are shared through module-scoped fixtures.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from jax.flatten_util import ravel_pytree

from madjax.data import Images, load_images
from madjax.deep.ddpm import (
    DDPM_CONFIGS,
    DDPMConfig,
    DDPMInfo,
    DDPMParams,
    ancestral_sample,
    balanced_labels,
    continuous_alpha_bar,
    ddpm,
    ddpm_eps,
    ddpm_ode_sample,
    guided_eps,
    loss,
    ode_sample,
    q_sample,
    sample_keys,
    schedule,
)
from madjax.validation import ParameterError

SMOKE = DDPM_CONFIGS["smoke"]
# A 10-step chain and a one-resolution 4-channel net, cheap enough to run with
# jax.disable_jit; sampled in chunks of 4 (one compiled shape serves every n).
TINY = DDPMConfig(image_shape=(8, 8), timesteps=10, beta_start=0.1, beta_end=0.6, channels=(4,), blocks=1,
                  embed_dim=8, epochs=1, batch_size=16, learning_rate=1e-3, ema_decay=0.0, sample_chunk=4)


@jax.jit
def _perturbed(params: DDPMParams, key, scale=0.3) -> DDPMParams:
    """Every weight perturbed (a fresh net predicts ε ≡ 0 through its zero output conv); one normal draw."""
    flat, unravel = ravel_pytree(params.params)
    weights = unravel(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))
    return DDPMParams(weights, weights, params.opt_state, params.step)


@pytest.fixture(scope="module")
def digits():
    d = load_images("digits")
    return Images(jnp.asarray(d.x_train), jnp.asarray(d.y_train))


@pytest.fixture(scope="module")
def smoke_fit(digits):
    """The smoke model after one generation's fit on 256 digits (compiles fit once)."""
    model = ddpm(SMOKE)
    params0 = model.init(jax.random.PRNGKey(0))
    data = Images(digits.x[:256], digits.y[:256])
    params1, info = model.fit(jax.random.PRNGKey(1), params0, data)
    return model, params0, params1, data, info


@pytest.fixture(scope="module")
def tiny_params():
    return _perturbed(ddpm(TINY).init(jax.random.PRNGKey(5)), jax.random.PRNGKey(6))


# --------------------------------------------------------------------------- configuration


def test_config_validation_names_the_field():
    for kwargs, field in [
        ({"timesteps": 1}, "timesteps"),
        ({"timesteps": 50}, "beta_end"),  # the paper's β over 50 steps keeps ᾱ_T ≈ 0.6
        ({"image_shape": (28, 28), "channels": (8, 16, 32, 64)}, "image_shape"),  # 28 not divisible by 8
        ({"image_shape": (8,)}, "image_shape"),
        ({"channels": ()}, "channels"),
        ({"label_dropout": 1.0}, "label_dropout"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"beta_start": 0.0}, "beta_start"),
        ({"beta_start": 0.03, "beta_end": 0.02}, "beta_end"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"embed_dim": 15}, "embed_dim"),
        ({"warm_start": 1}, "warm_start"),
    ]:
        with pytest.raises(ParameterError) as err:
            DDPMConfig(**kwargs)
        assert err.value.param == field, (kwargs, err.value)


def test_presets():
    paper = DDPM_CONFIGS["paper"]
    assert (paper.image_shape, paper.num_classes, paper.timesteps, paper.label_dropout) == ((28, 28), 10, 500, 0.1)
    assert (paper.beta_start, paper.beta_end) == (1e-4, 0.02) and not paper.warm_start
    for name in ("smoke", "quick"):
        assert DDPM_CONFIGS[name].image_shape == (8, 8) and DDPM_CONFIGS[name].label_dropout == 0.1
    assert DDPM_CONFIGS["quick"].timesteps >= 100


# --------------------------------------------------------------------------- schedule and forward process


@pytest.mark.parametrize("config", [SMOKE, DDPM_CONFIGS["paper"]], ids=["smoke", "paper"])
def test_schedule_matches_float64(config):
    betas, alphas, alpha_bars = schedule(config)
    T = config.timesteps
    ref_betas = config.beta_start + (config.beta_end - config.beta_start) * np.arange(T) / (T - 1)
    ref_bars = np.cumprod(1.0 - ref_betas)  # float64
    assert betas.shape == alphas.shape == alpha_bars.shape == (T,) and alpha_bars.dtype == jnp.float32
    # One float32 rounding of a float64 value: relative error ≤ 2⁻²⁴.
    rel = 2.0**-23
    np.testing.assert_allclose(betas, ref_betas, rtol=rel)
    np.testing.assert_allclose(alphas, 1.0 - ref_betas, rtol=rel)
    np.testing.assert_allclose(alpha_bars, ref_bars, rtol=rel)
    assert np.all(np.diff(np.asarray(betas, np.float64)) > 0) and np.all(np.diff(np.asarray(alpha_bars)) < 0)
    assert float(alpha_bars[-1]) <= 0.02


def test_q_sample_moments():
    """x_t | x₀ ~ N(√ᾱ_t x₀, (1 − ᾱ_t) I): per-pixel mean and variance over 20 000 draws."""
    sched = schedule(SMOKE)
    n = 20_000
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (8, 8), minval=-1.0, maxval=1.0)
    ts = [1, SMOKE.timesteps // 2, SMOKE.timesteps]
    z = zcrit(m=2 * 64 * len(ts))
    for j, t in enumerate(ts):
        eps = jax.random.normal(jax.random.PRNGKey(10 + j), (n, 8, 8))
        xt = np.asarray(q_sample(sched, jnp.broadcast_to(x0, (n, 8, 8)), jnp.full((n,), t), eps), np.float64)
        a = float(np.cumprod(1.0 - np.linspace(SMOKE.beta_start, SMOKE.beta_end, SMOKE.timesteps))[t - 1])
        var = 1.0 - a
        assert_close_se(xt.mean(0), np.sqrt(a) * np.asarray(x0, np.float64), np.sqrt(var / n), z, f"mean t={t}")
        assert_close_se(xt.var(0, ddof=1), np.full((8, 8), var), np.sqrt(2 * var**2 / (n - 1)), z, f"var t={t}")


# --------------------------------------------------------------------------- loss


def test_loss_closed_forms():
    sched = schedule(DDPM_CONFIGS["paper"])
    null, d, n = 10, 64, 4096
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (n, 8, 8), minval=-1.0, maxval=1.0)
    y = jax.random.randint(jax.random.PRNGKey(1), (n,), 0, 10)
    key = jax.random.PRNGKey(2)
    z = zcrit(m=3)

    # ε_θ = the exact noise, recovered from x_t: the loss is 0 up to float32 rounding,
    # |ε̂ − ε| ≲ 8·2⁻²⁴·(|x₀| + |ε|)/√(1 − ᾱ_1) per pixel with 1 − ᾱ_1 = β_1.
    def exact(xt, t, labels):
        i = t.astype(jnp.int32) - 1
        a = sched.alpha_bars[i][:, None, None]
        return (xt - jnp.sqrt(a) * x0) / jnp.sqrt(-jnp.expm1(jnp.cumsum(jnp.log1p(-sched.betas)))[i][:, None, None])

    bound = d * (8 * 2.0**-24 * (1.0 + 6.0) / np.sqrt(sched.betas[0])) ** 2
    assert float(loss(key, exact, sched, x0, y, null_label=null)) <= bound

    # ε_θ ≡ 0: ||ε||² ~ χ²_d, mean d, variance 2d.
    value = float(loss(key, lambda xt, t, labels: jnp.zeros_like(xt), sched, x0, y, null_label=null))
    assert_close_se(value, d, np.sqrt(2 * d / n), z, "zero network")

    # ε_θ = 1·[label is ∅]: E = d(1 + p); Var = 2d(1−p) + 6dp + d²p(1−p) (χ²_d or noncentral χ²_d(d)).
    p = 0.1
    def indicator(xt, t, labels):
        return jnp.broadcast_to((labels == null)[:, None, None], xt.shape).astype(xt.dtype)

    value = float(loss(key, indicator, sched, x0, y, null_label=null, label_dropout=p))
    var = 2 * d * (1 - p) + 6 * d * p + d**2 * p * (1 - p)
    assert_close_se(value, d * (1 + p), np.sqrt(var / n), z, "label dropout")
    # Unconditional training data (y = −1) always goes to ∅: E = 2d exactly in expectation.
    value = float(loss(key, indicator, sched, x0, jnp.full((n,), -1), null_label=null, label_dropout=p))
    assert_close_se(value, 2 * d, np.sqrt(6 * d / n), zcrit(m=1), "y = -1")


# --------------------------------------------------------------------------- guidance


def test_guidance_weights(tiny_params):
    net = ddpm_eps(TINY, tiny_params.ema)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8))
    t = jnp.arange(1.0, 7.0)
    y = jnp.array([0, 1, 2, 3, 4, 5], jnp.int32)

    @jax.jit
    def run(x):
        cond, uncond = net(x, t, y), net(x, t, jnp.full_like(y, TINY.num_classes))
        guide = [guided_eps(net, x, t, y, w, null_label=TINY.num_classes) for w in (0.0, 1.5)]
        return cond, uncond, *guide

    cond, uncond, guided0, guided15 = run(x)
    assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-2  # the labels matter in this net
    # w = 0: the conditional network alone (equal up to float32 rounding of a differently fused program).
    np.testing.assert_allclose(guided0, cond, rtol=0, atol=8 * 2.0**-23 * float(jnp.max(jnp.abs(cond))))
    np.testing.assert_allclose(guided15, 2.5 * cond - 1.5 * uncond, rtol=1e-5, atol=1e-5)


def test_lambda_one_samples_the_conditional_model(tiny_params):
    """Ancestral sampling with λ = 1 is sampling ε(x, t, c) itself: the same images from one key."""
    sched, null = schedule(TINY), TINY.num_classes
    net = ddpm_eps(TINY, tiny_params.ema)
    keys = sample_keys(jax.random.PRNGKey(3), 5)
    y = jnp.array([0, 3, 3, 7, 9], jnp.int32)

    @jax.jit  # one program, three chains; λ traced as in the model's sampler
    def run(lam_a, lam_b):
        def guided(lam):
            w = 1.0 / lam - 1.0
            return ancestral_sample(keys, lambda x, t: guided_eps(net, x, t, y, w, null_label=null), sched, (8, 8))

        return guided(lam_a), guided(lam_b), ancestral_sample(keys, lambda x, t: net(x, t, y), sched, (8, 8))

    lam_one, lam_half, conditional = run(1.0, 0.5)
    # Same noise, same ε: equal up to float32 rounding (the fused programs
    # differ), budgeted at 8 ulp of the largest value per step.
    scale = float(jnp.max(jnp.abs(conditional)))
    rounding = TINY.timesteps * 8 * 2.0**-23 * scale
    np.testing.assert_allclose(lam_one, conditional, rtol=0, atol=rounding)
    assert float(jnp.max(jnp.abs(lam_half - conditional))) > 1e3 * rounding


def test_ancestral_sampler_implements_its_recursion():
    """With the exact ε of pixel-wise N(m, s0²) data every step is affine-Gaussian:

    ε* = √(1−ᾱ_t)(x − √ᾱ_t m)/v_t, v_t = ᾱ_t s0² + 1 − ᾱ_t, so
    x_{t−1} = A_t x_t + B_t + σ_t z with A_t = (1 − β_t/v_t)/√α_t,
    B_t = β_t √ᾱ_t m/(v_t √α_t), σ_t² = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t). Starting
    from N(0, 1) the output is N(μ_0, V_0) with μ' = Aμ + B, V' = A²V + σ²,
    run here in float64; the sampler's per-pixel mean and variance over 4096
    chains must match.
    """
    config = DDPM_CONFIGS["paper"]
    sched = schedule(config)
    s0, n = 0.5, 4096
    m = jax.random.uniform(jax.random.PRNGKey(0), (8, 8), minval=-0.8, maxval=0.8)

    def eps_fn(x, t):
        a = sched.alpha_bars[t.astype(jnp.int32) - 1][:, None, None]
        return jnp.sqrt(1.0 - a) * (x - jnp.sqrt(a) * m) / (a * s0**2 + 1.0 - a)

    x = np.asarray(jax.jit(lambda k: ancestral_sample(sample_keys(k, n), eps_fn, sched, (8, 8)))(
        jax.random.PRNGKey(1)), np.float64)
    betas = np.linspace(config.beta_start, config.beta_end, config.timesteps)
    bars = np.cumprod(1.0 - betas)
    bars_prev = np.concatenate([[1.0], bars[:-1]])
    mu, var = np.zeros((8, 8)), np.ones((8, 8))
    m64 = np.asarray(m, np.float64)
    for t in range(config.timesteps - 1, -1, -1):
        v = bars[t] * s0**2 + 1.0 - bars[t]
        A = (1.0 - betas[t] / v) / np.sqrt(1.0 - betas[t])
        B = betas[t] * np.sqrt(bars[t]) * m64 / (v * np.sqrt(1.0 - betas[t]))
        mu, var = A * mu + B, A**2 * var + betas[t] * (1.0 - bars_prev[t]) / (1.0 - bars[t])
    z = zcrit(m=2 * 64)
    assert_close_se(x.mean(0), mu, np.sqrt(var / n), z, "mean")
    assert_close_se(x.var(0, ddof=1), var, np.sqrt(2 * var**2 / (n - 1)), z, "variance")
    # And the chain does what it is for: its mean lands on m, up to the start's
    # mismatch (N(0, 1) instead of N(√ᾱ_T m, v_T)), which the chain only contracts.
    assert np.all(np.abs(mu - m64) <= np.sqrt(bars[-1]) * np.abs(m64))


# --------------------------------------------------------------------------- training


def test_fit_lowers_the_loss(smoke_fit):
    """The loss on the training set before and after one fit, on the same (t, ε, dropout) draws.

    16 groups of 256 images × their own draws give 16 paired differences;
    their mean must exceed z standard errors.
    """
    _, params0, params1, data, info = smoke_fit
    sched = schedule(SMOKE)
    x0, y = 2.0 * data.x - 1.0, data.y

    @jax.jit
    def value(weights, key):
        return loss(key, ddpm_eps(SMOKE, weights), sched, x0, y, null_label=SMOKE.num_classes,
                    label_dropout=SMOKE.label_dropout)

    keys = jax.random.split(jax.random.PRNGKey(9), 16)
    before = np.array([float(value(params0.params, k)) for k in keys])
    after = np.array([float(value(params1.params, k)) for k in keys])
    # An untrained net predicts ε = 0: E = d = 64, se √(2d/(16·256)).
    assert_close_se(before.mean(), 64.0, np.sqrt(2 * 64 / before.size / 256), zcrit(m=2), "untrained loss")
    drop = before - after
    assert drop.mean() > zcrit(m=2) * drop.std(ddof=1) / np.sqrt(drop.size), (before.mean(), after.mean())
    assert int(params1.step) == SMOKE.epochs * (256 // SMOKE.batch_size)
    # The fit's info: the last epoch's mean loss, this fit's optimiser steps, no non-finite loss.
    assert isinstance(info, DDPMInfo) and all(jnp.shape(v) == () for v in info)
    assert int(info.steps) == int(params1.step) and not bool(info.nonfinite)
    assert np.isfinite(float(info.loss)) and float(info.loss) > 0


def test_fit_validates_data(smoke_fit):
    model, params0, _, data, _ = smoke_fit
    key = jax.random.PRNGKey(0)
    for bad in (Images(data.x[:, :7], data.y), Images(data.x, data.y[:-1]), Images(data.x, data.y + 1),
                data.x):
        with pytest.raises(ParameterError) as err:
            model.fit(key, params0, bad)
        assert err.value.param == "data"


def test_warm_start_flag(smoke_fit):
    """warm_start=True continues from the given weights; False re-initialises from the fit key."""
    model, params0, params1, data, _ = smoke_fit
    key = jax.random.PRNGKey(8)
    (warm_a, _), (warm_b, info_b) = model.fit(key, params0, data), model.fit(key, params1, data)
    assert int(info_b.steps) == int(params1.step)  # this fit's steps, not the running count
    assert int(warm_b.step) == 2 * int(params1.step)
    assert any(not np.allclose(u, v) for u, v in zip(jax.tree.leaves(warm_a.params), jax.tree.leaves(warm_b.params)))
    cold = ddpm(dataclasses.replace(SMOKE, warm_start=False))  # shares the smoke model's executables
    (cold_a, _), (cold_b, _) = cold.fit(key, params0, data), cold.fit(key, params1, data)
    for u, v in zip(jax.tree.leaves(cold_a), jax.tree.leaves(cold_b)):
        np.testing.assert_array_equal(u, v)
    assert int(cold_b.step) == int(params1.step)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_sample_shapes_range_and_balanced_labels(tiny_params, lam):
    n = 23
    s = ddpm(TINY).sample(jax.random.PRNGKey(4), tiny_params, n, lam)
    assert s.x.shape == (n, 8, 8) and s.x.dtype == jnp.float32
    assert s.y.shape == (n,) and s.y.dtype == jnp.int32
    assert np.all(np.isfinite(s.x)) and float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
    counts = np.bincount(np.asarray(s.y), minlength=10)
    assert sorted(counts) == [2] * 7 + [3] * 3  # 23 = 10·2 + 3 distinct extra classes


def test_sample_validates_arguments(tiny_params):
    model, params = ddpm(TINY), tiny_params
    for n, lam, field in [(0, 1.0, "n"), (2.5, 1.0, "n"), (4, 1.5, "lam"), (4, 0.0, "lam")]:
        with pytest.raises(ParameterError) as err:
            model.sample(jax.random.PRNGKey(0), params, n, lam)
        assert err.value.param == field


def test_balanced_labels():
    for n in (1, 9, 10, 37):
        y = np.asarray(balanced_labels(jax.random.PRNGKey(n), n, 10))
        counts = np.bincount(y, minlength=10)
        assert y.shape == (n,) and counts.max() - counts.min() <= 1 and counts.min() == n // 10


def test_sample_jit_equals_eager_and_ignores_chunking(tiny_params):
    model, n, lam = ddpm(TINY), 7, 0.7  # chunks of 4: one full chunk and one padded
    key = jax.random.PRNGKey(11)
    jitted = model.sample(key, tiny_params, n, lam)
    with jax.disable_jit():
        eager = model.sample(key, tiny_params, n, lam)
    np.testing.assert_array_equal(jitted.y, eager.y)
    np.testing.assert_allclose(jitted.x, eager.x, atol=1e-5)
    # The documented key contract: all 7 in one batch give the chunked images.
    k_labels, k_noise = jax.random.split(key)
    np.testing.assert_array_equal(jitted.y, balanced_labels(k_labels, n, TINY.num_classes))
    net = ddpm_eps(TINY, tiny_params.ema)
    w = 1.0 / lam - 1.0
    whole = jax.jit(lambda: ancestral_sample(
        sample_keys(k_noise, n), lambda x, t: guided_eps(net, x, t, jitted.y, w, null_label=TINY.num_classes),
        schedule(TINY), TINY.image_shape))()
    np.testing.assert_allclose(jitted.x, jnp.clip((whole + 1) / 2, 0, 1), atol=1e-5)
    assert not np.allclose(jitted.x, model.sample(key, tiny_params, n, 1.0).x)


# --------------------------------------------------------------------------- probability-flow ODE


def _gaussian_eps(sched, m, s0):
    """The exact ε* = √(1−ᾱ)(x − √ᾱ m)/(ᾱ s0² + 1 − ᾱ) of pixel-wise N(m, s0²) data (a point mass at s0 = 0)."""
    T = sched.betas.shape[0]

    def eps_fn(x, t):
        log_a, _ = continuous_alpha_bar(sched, t[0] / T)
        a = jnp.exp(log_a)
        return jnp.sqrt(-jnp.expm1(log_a)) * (x - jnp.sqrt(a) * m) / (a * s0**2 - jnp.expm1(log_a))

    return eps_fn


_ODE_TOL = 1e-5


@functools.partial(jax.jit, static_argnames="denoise")
def _flow(x_T, m, s0, denoise=False):
    sched = schedule(DDPM_CONFIGS["paper"])
    return ode_sample(x_T, _gaussian_eps(sched, m, s0), sched, rtol=_ODE_TOL, atol=_ODE_TOL, denoise=denoise)


@pytest.mark.parametrize("s0", [0.0, 0.5])
def test_ode_follows_the_exact_flow(s0):
    """For N(m, s0²) data u = (x − √ᾱ m)/√(ᾱ s0² + 1 − ᾱ) is constant along the probability flow.

    So x(1/T) = √ᾱ_1 m + √v_1 · (x_T − √ᾱ_T m)/√v_T exactly. The adaptive
    solve keeps each step's local error under atol + rtol·|x|, and the flow
    contracts deviations (v decreases), so the end point is within
    steps·(atol + rtol·max|x|) of it.
    """
    config = DDPM_CONFIGS["paper"]
    m = jax.random.uniform(jax.random.PRNGKey(0), (8, 8), minval=-1.0, maxval=1.0)
    x_T = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8))
    rtol = atol = _ODE_TOL
    sol = _flow(x_T, m, jnp.float32(s0))
    ab = np.cumprod(1.0 - np.linspace(config.beta_start, config.beta_end, config.timesteps))
    v = ab * s0**2 + 1.0 - ab
    m64 = np.asarray(m, np.float64)
    u = (np.asarray(x_T, np.float64) - np.sqrt(ab[-1]) * m64) / np.sqrt(v[-1])
    expected = np.sqrt(ab[0]) * m64 + np.sqrt(v[0]) * u
    steps = int(sol.steps)
    assert 0 < steps < 4096
    err = np.max(np.abs(np.asarray(sol.x, np.float64) - expected))
    assert err <= steps * (atol + rtol * np.max(np.abs(expected))), (err, steps)
    # Denoising a point mass's x_{1/T} with its exact ε returns x₀ = m.
    if s0 == 0.0:
        x0 = _flow(x_T, m, jnp.float32(0.0), denoise=True).x
        np.testing.assert_allclose(x0, jnp.broadcast_to(m, x0.shape), atol=1e-4)


def test_ddpm_ode_sample_is_deterministic(tiny_params):
    # The fixed-step Heun path (the adaptive one is tested against the exact flow above).
    params = tiny_params
    y = jnp.array([0, 1, 2, 9], jnp.int32)
    a = ddpm_ode_sample(TINY, params, jax.random.PRNGKey(5), y, 0.5, steps=8)
    b = ddpm_ode_sample(TINY, params, jax.random.PRNGKey(5), y, 0.5, steps=8)
    c = ddpm_ode_sample(TINY, params, jax.random.PRNGKey(6), y, 0.5, steps=8)
    assert a.shape == (4, 8, 8) and a.dtype == jnp.float32 and np.all(np.isfinite(a))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for kwargs, field in [({"y": jnp.array([10])}, "y"), ({"lam": 2.0}, "lam"), ({"steps": 0}, "steps"),
                          ({"rtol": 0.0}, "rtol")]:
        args = {"y": y, "lam": 0.5, **kwargs}
        with pytest.raises(ParameterError) as err:
            ddpm_ode_sample(TINY, params, jax.random.PRNGKey(5), args.pop("y"), args.pop("lam"), **args)
        assert err.value.param == field
