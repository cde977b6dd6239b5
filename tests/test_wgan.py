"""WGAN-GP: losses in closed form, first-order training steps, the schedule, biased sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from madjax.data import Images, load_images
from madjax.deep.wgan import (
    WGAN_CONFIGS,
    WGANConfig,
    WGANInfo,
    WGANParams,
    conv2d_im2col,
    critic_loss,
    critic_step,
    generator_loss,
    generator_step,
    gradient_penalty,
    wgan,
    wgan_critic,
    wgan_generate,
)
from madjax.validation import ParameterError

SMOKE = WGAN_CONFIGS["smoke"]
# float32 rounding of sums of ~10² terms of order one.
RTOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return wgan(SMOKE)


@pytest.fixture(scope="module")
def digits():
    d = load_images("digits")
    n = 2 * SMOKE.batch_size * SMOKE.n_critic + 7  # two generator steps per epoch and a remainder
    return Images(jnp.asarray(d.x_train[:n]), jnp.asarray(d.y_train[:n]))


@pytest.fixture(scope="module")
def fit_result(model, digits):
    """``(start, params, info)`` of one smoke fit."""
    start = model.init(jax.random.PRNGKey(0))
    return (start, *model.fit(jax.random.PRNGKey(1), start, digits))


@pytest.fixture(scope="module")
def fitted(fit_result):
    start, params, _ = fit_result
    return start, params


def _batch(key, b=6, shape=(8, 8)):
    k1, k2, k3 = jax.random.split(key, 3)
    return (jax.random.uniform(k1, (b, *shape)), jax.random.uniform(k2, (b, *shape)),
            jax.random.uniform(k3, (b,)))


# ------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_gradient_penalty_of_a_linear_critic_is_closed_form(scale):
    # D(x) = <a, x> has gradient a everywhere, so GP = (‖a‖ − 1)² whatever ε.
    x_real, x_fake, eps = _batch(jax.random.PRNGKey(0))
    a = jax.random.normal(jax.random.PRNGKey(1), (8, 8))
    a = scale * a / jnp.linalg.norm(a)
    gp = gradient_penalty(lambda x: jnp.sum(a * x, axis=(1, 2)), x_real, x_fake, eps)
    np.testing.assert_allclose(gp, (scale - 1.0) ** 2, rtol=RTOL, atol=1e-6)


def test_gradient_penalty_vanishes_for_a_unit_gradient_critic():
    # D(x) = ‖x‖₂ has gradient x/‖x‖ of norm 1 at every x ≠ 0.
    x_real, x_fake, eps = _batch(jax.random.PRNGKey(2))
    gp = gradient_penalty(lambda x: jnp.sqrt(jnp.sum(x**2, axis=(1, 2))), x_real, x_fake, eps)
    np.testing.assert_allclose(gp, 0.0, atol=1e-6)


def test_gradient_penalty_interpolates_per_sample():
    # D(x) = ‖x − c‖² has gradient 2(x − c): the penalty is evaluated at x̂_i = ε_i x_i + (1 − ε_i) x̃_i.
    x_real, x_fake, eps = _batch(jax.random.PRNGKey(3))
    c = 0.5
    gp = gradient_penalty(lambda x: jnp.sum((x - c) ** 2, axis=(1, 2)), x_real, x_fake, eps)
    x_hat = eps[:, None, None] * x_real + (1 - eps[:, None, None]) * x_fake
    expected = jnp.mean((2 * jnp.linalg.norm((x_hat - c).reshape(len(eps), -1), axis=1) - 1) ** 2)
    np.testing.assert_allclose(gp, expected, rtol=RTOL)


def test_flat_critic_has_penalty_one_and_finite_parameter_gradient():
    # D_θ(x) = θ·Σx at θ = 0 is flat: ‖∇D‖ = 0, GP = 1; √ at 0 must not poison ∂GP/∂θ with NaN.
    x_real, x_fake, eps = _batch(jax.random.PRNGKey(4))

    def gp(theta):
        return gradient_penalty(lambda x: theta * jnp.sum(x, axis=(1, 2)), x_real, x_fake, eps)

    value, grad = jax.value_and_grad(gp)(0.0)
    np.testing.assert_allclose(value, 1.0, rtol=RTOL)
    assert np.isfinite(grad)


def test_critic_and_generator_loss_sign_conventions():
    x_real, x_fake, eps = _batch(jax.random.PRNGKey(5))
    # A constant critic: no Wasserstein term, penalty 1 -> loss = λ_gp.
    loss, stats = critic_loss(lambda x: jnp.full(x.shape[:1], 3.0), x_real, x_fake, eps, gp_weight=10.0)
    np.testing.assert_allclose([loss, stats.wasserstein, stats.penalty], [10.0, 0.0, 1.0], atol=1e-6)
    # A linear critic: W = <a, mean x_real − mean x_fake>, L_D = −W + λ (‖a‖ − 1)².
    a = jax.random.normal(jax.random.PRNGKey(6), (8, 8))

    def linear(x):
        return jnp.sum(a * x, axis=(1, 2))

    w = jnp.sum(a * (x_real.mean(0) - x_fake.mean(0)))
    loss, stats = critic_loss(linear, x_real, x_fake, eps, gp_weight=2.0)
    np.testing.assert_allclose(stats.wasserstein, w, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(loss, -w + 2.0 * (jnp.linalg.norm(a) - 1) ** 2, rtol=RTOL)
    np.testing.assert_allclose(generator_loss(linear, x_fake), -jnp.mean(linear(x_fake)), rtol=RTOL)


@pytest.mark.parametrize("shape, size, stride", [((3, 8, 8, 2), 3, 1), ((2, 7, 6, 3), 4, 2)])  # even, odd sizes
def test_im2col_convolution_matches_lax(shape, size, stride):
    kx, kw = jax.random.split(jax.random.PRNGKey(7))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (size, size, shape[-1], 5))

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def mine(x, w):
        return conv2d_im2col(x, w, stride)

    @jax.jit
    def value_and_grads(x, w):
        # Values and gradients (the penalty differentiates through the convolutions twice).
        return [(conv(x, w), *jax.grad(lambda x, w, c=conv: jnp.sum(jnp.sin(c(x, w))), argnums=(0, 1))(x, w))
                for conv in (mine, ref)]

    got, expected = value_and_grads(x, w)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_critic_scores_each_image_independently(model):
    # What the per-sample gradient penalty relies on: no batch statistics in D.
    params = model.init(jax.random.PRNGKey(8))
    x = jax.random.uniform(jax.random.PRNGKey(9), (5, *SMOKE.image_shape))
    batch, single = jax.jit(lambda p, x: (
        wgan_critic(SMOKE, p, x), jax.vmap(lambda xi: wgan_critic(SMOKE, p, xi[None])[0])(x)))(params, x)
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- training


def _adam_first_step_decrease(grads, lr):
    """First-order change of a loss after Adam's first step from a fresh state.

    With zero moments the bias-corrected estimates are m̂ = g and v̂ = g², so
    each parameter moves by −lr·g/(|g| + 10⁻⁸) and ΔL ≈ −lr·Σ g²/(|g| + 10⁻⁸).
    """
    return -lr * sum(jnp.sum(g**2 / (jnp.abs(g) + 1e-8)) for g in jax.tree.leaves(grads))


def test_critic_step_lowers_the_critic_loss_as_first_order_predicts(model):
    # A small step so the Taylor remainder (∝ lr²) is small against the first-order term (∝ lr).
    lr = 1e-5
    config = dataclasses.replace(SMOKE, critic_lr=lr)
    params = model.init(jax.random.PRNGKey(10))
    b = SMOKE.batch_size
    x_real = jax.random.uniform(jax.random.PRNGKey(11), (b, *SMOKE.image_shape))
    z = jax.random.normal(jax.random.PRNGKey(12), (b, SMOKE.latent_dim))
    eps = jax.random.uniform(jax.random.PRNGKey(13), (b,))

    @jax.jit
    def run(params):
        x_fake = wgan_generate(config, params, z)

        def loss(critic):
            p = params._replace(critic=critic)
            return critic_loss(lambda x: wgan_critic(config, p, x), x_real, x_fake, eps, config.gp_weight)[0]

        before, grads = jax.value_and_grad(loss)(params.critic)
        new, _ = critic_step(config, params, x_real, z, eps)
        return before, loss(new.critic), _adam_first_step_decrease(grads, lr), new

    before, after, predicted, new = run(params)
    assert predicted < 0
    ratio = float((after - before) / predicted)
    assert 0.5 < ratio < 1.5, (float(before), float(after), float(predicted))
    # Only the critic moved.
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new.generator, params.generator))


def test_generator_step_lowers_the_generator_loss_as_first_order_predicts(model):
    lr = 1e-5
    config = dataclasses.replace(SMOKE, generator_lr=lr)
    params = model.init(jax.random.PRNGKey(14))
    z = jax.random.normal(jax.random.PRNGKey(15), (SMOKE.batch_size, SMOKE.latent_dim))

    @jax.jit
    def run(params):
        def loss(generator):
            p = params._replace(generator=generator)
            return generator_loss(lambda x: wgan_critic(config, p, x), wgan_generate(config, p, z))

        before, grads = jax.value_and_grad(loss)(params.generator)
        new, reported = generator_step(config, params, z)
        return before, reported, loss(new.generator), _adam_first_step_decrease(grads, lr), new

    before, reported, after, predicted, new = run(params)
    np.testing.assert_allclose(reported, before, rtol=RTOL)
    assert predicted < 0
    ratio = float((after - before) / predicted)
    assert 0.5 < ratio < 1.5, (float(before), float(after), float(predicted))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new.critic, params.critic))


def test_fit_runs_the_documented_schedule(fitted, digits):
    start, params = fitted
    assert isinstance(params, WGANParams)
    assert jax.tree.structure(params) == jax.tree.structure(start)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(params))
    # epochs · ⌊n / (B·n_critic)⌋ generator steps, n_critic critic steps each: Adam's step counts.
    steps = SMOKE.epochs * (len(digits.x) // (SMOKE.batch_size * SMOKE.n_critic))
    assert steps == 2 * SMOKE.epochs
    assert int(params.generator_opt[0].count) == steps
    assert int(params.critic_opt[0].count) == SMOKE.n_critic * steps


def test_fit_info_reports_the_last_epoch(fit_result, digits):
    start, params, info = fit_result
    assert isinstance(info, WGANInfo)
    assert all(jnp.shape(v) == () for v in info)
    assert int(info.steps) == int(params.generator_opt[0].count)
    assert not bool(info.nonfinite)
    assert all(np.isfinite(float(v)) for v in (info.wasserstein, info.penalty, info.generator_loss))
    assert float(info.penalty) >= 0


def test_warm_start_flag(fitted, digits):
    start, _ = fitted
    cold = wgan(dataclasses.replace(SMOKE, warm_start=False))
    key = jax.random.PRNGKey(16)
    # Re-initialised from the key: the incoming parameters do not matter.
    a, _ = cold.fit(key, start, digits)
    b, _ = cold.fit(key, cold.init(jax.random.PRNGKey(17)), digits)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    # Warm start continues Adam's count from the incoming state.
    model = wgan(SMOKE)
    warm, _ = model.fit(key, a, digits)
    assert int(warm.generator_opt[0].count) == 2 * int(a.generator_opt[0].count)


def test_fit_rejects_bad_data(model):
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ParameterError) as err:
        model.fit(jax.random.PRNGKey(0), params, jnp.zeros((20, 7, 8)))
    assert err.value.param == "data"
    with pytest.raises(ParameterError) as err:
        model.fit(jax.random.PRNGKey(0), params, jnp.zeros((SMOKE.n_critic - 1, 8, 8)))
    assert err.value.param == "data"


# ------------------------------------------------------------------------------- sampling


def test_sample_is_unconditional_images_in_the_unit_interval(model, fitted):
    _, params = fitted
    s = model.sample(jax.random.PRNGKey(18), params, 37, 0.7)
    assert isinstance(s, Images)
    assert s.x.shape == (37, *SMOKE.image_shape) and s.x.dtype == jnp.float32
    assert s.y.shape == (37,) and s.y.dtype == jnp.int32 and bool(jnp.all(s.y == -1))
    assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
    with pytest.raises(ParameterError) as err:
        model.sample(jax.random.PRNGKey(0), params, 0, 1.0)
    assert err.value.param == "n"


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_sampling_bias_scales_the_latent(fitted, lam):
    # x = G(√λ·ε) with ε = normal(key, (n, m)); a small sample_batch exercises the chunking and its remainder.
    _, params = fitted
    model = wgan(dataclasses.replace(SMOKE, sample_batch=4))
    key, n = jax.random.PRNGKey(19), 10
    eps = jax.random.normal(key, (n, SMOKE.latent_dim), jnp.float32)
    generate = jax.jit(lambda p, z: wgan_generate(SMOKE, p, z))
    direct = jnp.clip(generate(params, jnp.sqrt(lam) * eps), 0.0, 1.0)
    sampled = model.sample(key, params, n, lam).x
    np.testing.assert_allclose(sampled, direct, rtol=1e-5, atol=1e-6)
    if lam == 1.0:  # λ = 1 is the unbiased sampler G(ε)
        np.testing.assert_allclose(sampled, generate(params, eps), rtol=1e-5, atol=1e-6)


def test_sample_jitted_equals_eager(model, fitted):
    _, params = fitted
    key = jax.random.PRNGKey(20)
    jitted = model.sample(key, params, 3, 0.5)
    with jax.disable_jit():
        eager = model.sample(key, params, 3, 0.5)
    np.testing.assert_allclose(jitted.x, eager.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jitted.y, eager.y)


def test_checkpoint_round_trip(tmp_path, fitted):
    from madjax.deep.checkpoint import Checkpointer

    _, params = fitted
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, params=params, history=[], pool=None, metrics=[{"generation": 1}])
    abstract = jax.eval_shape(wgan(SMOKE).init, jax.random.PRNGKey(0))
    restored = ckpt.restore_latest(abstract, sample_shape=SMOKE.image_shape).params
    ckpt.close()
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    for u, v in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("field, value", [
    ("image_shape", (8,)),
    ("image_shape", (8, 6)),  # not divisible by 2^2 with three widths
    ("widths", ()),
    ("widths", (8, 0)),
    ("latent_dim", 0),
    ("epochs", 0),
    ("batch_size", 1.5),
    ("n_critic", 0),
    ("gp_weight", -1.0),
    ("critic_lr", 0.0),
    ("generator_lr", float("nan")),
    ("beta1", 1.0),
    ("beta2", -0.1),
    ("warm_start", "yes"),
    ("sample_batch", 0),
])
def test_config_validation_names_the_field(field, value):
    base = {"image_shape": (8, 8), "widths": (8, 4, 2)}
    base[field] = value
    with pytest.raises(ParameterError) as err:
        WGANConfig(**base)
    assert err.value.param == field


def test_presets():
    assert WGAN_CONFIGS["paper"].image_shape == (28, 28) and WGAN_CONFIGS["quick"].image_shape == (8, 8)
    paper = WGAN_CONFIGS["paper"]
    assert (paper.n_critic, paper.gp_weight, paper.generator_lr, paper.critic_lr, paper.beta2) == (5, 10.0, 1e-4,
                                                                                                 1e-4, 0.9)
    # Lists (from JSON) become tuples, so configs stay hashable (model records are cached per config).
    assert hash(WGANConfig(image_shape=[8, 8], widths=[4, 2])) == hash(WGANConfig(image_shape=(8, 8), widths=(4, 2)))
