"""The Rosenbrock source: exact sampler, normalised density, registry errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from jax.scipy.stats import norm

from madjax.data import (ROSENBROCK_MEAN, ROSENBROCK_TAIL_MASS, ROSENBROCK_VAR, get_source, rosenbrock_log_density,
                         rosenbrock_sample)
from madjax.validation import ParameterError

# Central moments of x₂ − 1 = (x₁² − 1) + ε/√2 (a = x₁² − 1, b = ε/√2):
# E a⁴ = 60, E a² = 2, E b² = 1/2, E b⁴ = 3/4  =>  μ₄ = 60 + 6·2·½ + ¾ = 66.75.
# The sample variance then has Var(s²) ≈ (μ₄ − σ⁴)/n = (66.75 − 6.25)/n.
_MU4_X2 = 66.75


def test_rosenbrock_moments_match_closed_form():
    n = 200_000
    x = np.asarray(rosenbrock_sample(jax.random.PRNGKey(0), n), np.float64)
    assert x.shape == (n, 2)
    z = zcrit(m=5)
    var = np.array(ROSENBROCK_VAR)
    assert_close_se(x.mean(0), ROSENBROCK_MEAN, np.sqrt(var / n), z, "means")
    assert_close_se(x[:, 0].var(ddof=1), 1.0, np.sqrt(2.0 / n), z, "Var x1")  # μ₄ − σ⁴ = 3 − 1
    assert_close_se(x[:, 1].var(ddof=1), 2.5, np.sqrt((_MU4_X2 - 2.5**2) / n), z, "Var x2")
    p = ROSENBROCK_TAIL_MASS
    assert_close_se(np.mean(np.abs(x[:, 0]) > 2), p, np.sqrt(p * (1 - p) / n), z, "tail mass")


def test_rosenbrock_density_is_the_normalised_product_of_its_conditionals():
    x = rosenbrock_sample(jax.random.PRNGKey(1), 64)
    # p(x₁, x₂) = N(x₁; 0, 1)·N(x₂; x₁², ½) exactly.
    expected = norm.logpdf(x[:, 0]) + norm.logpdf(x[:, 1], x[:, 0] ** 2, jnp.sqrt(0.5))
    np.testing.assert_allclose(rosenbrock_log_density(x), expected, rtol=1e-5, atol=1e-5)


def test_get_source_names_the_parameter():
    assert get_source("rosenbrock").shape == (2,)
    with pytest.raises(ParameterError, match="must be one of") as err:
        get_source("cifar")
    assert err.value.param == "data"
