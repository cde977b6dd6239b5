"""Closed forms and moment recursions of the Gaussian self-consuming loops.

Every function here is pure and jittable (``t`` may be an array of
generations, sizes and λ may be traced) and gives an *expectation over
chains* that the Monte-Carlo engine estimates; the tests check each one with
a z-test against :func:`madjax.simulate` (``tests/test_theory.py``).

Setting (paper Eq. (1), DESIGN §1–2): the reference is ``P_r = N(μ₀, Σ₀)``
(madjax's engine uses ``N(0, I_d)``: ``trace0 = d``, ``logdet0 = 0``); a
model fitted to n points has ``μ̂ = x̄ ~ N(m, S/n)`` and
``Σ̂ = W/(n − 1)``, ``W ~ Wishart(n − 1, S)``, independent; the sampler of
generation t is ``N(μ_t, λΣ_t)``. G¹ is fitted to ``n_ini`` real points (to
D_r, ``n_r`` points, in synthetic augmentation). Below, ``e_t = μ_t − μ₀``,
``a_t = E tr Σ_t``, ``m_t = E‖e_t‖²``.

**Fully synthetic** (each generation fits ``n_s`` points of the last model).
Conditioning on generation t − 1,

* ``E[Σ_t | Σ_{t−1}] = λ Σ_{t−1}``, so ``E Σ_t = λ^{t−1} Σ₀`` and
  ``a_t = λ^{t−1} tr Σ₀``;
* ``e_t = e_{t−1} + sqrt(λ/n_s) L_{t−1} z``, so
  ``m_t = m_{t−1} + λ a_{t−1}/n_s`` and, with ``m_1 = tr Σ₀ / n_ini``,
  ``m_t = tr Σ₀ · [1/n_ini + (1/n_s) Σ_{j=1}^{t−1} λ^j]``
  (for ``n_ini = n_s = n`` this is ``(tr Σ₀/n) Σ_{s=0}^{t−1} λ^s``);
* by Bartlett, ``log det W = log det S + Σ_{i=0}^{d−1} log χ²_{n−1−i}``
  with independent χ², and ``E log χ²_k = ψ(k/2) + log 2``. So
  ``log det Σ_t`` is a sum of independent terms and
  ``E log det Σ_t = log det Σ₀ + κ(n_ini) + (t − 1)(κ(n_s) + d log λ)``,
  ``κ(n) = Σ_{i=0}^{d−1} ψ((n − 1 − i)/2) + d log(2/(n − 1))`` (n − 1 ≥ d;
  ``−inf`` with certainty below), with variance
  ``v(n_ini) + (t − 1) v(n_s)``, ``v(n) = Σ_i ψ'((n − 1 − i)/2)``;
* the square root ``L_t = sqrt(λ/(n_s − 1)) L_{t−1} A_t`` is a product of
  lower-triangular Bartlett factors (:func:`madjax.gaussian.gaussian_factored`),
  so its k-th diagonal entry (k = 1 … d) is a product of independent
  ``sqrt(χ²_{n−k})`` and ``E log (L_t)_kk`` grows by
  ``½[ψ((n_s − k)/2) + log 2 − log(n_s − 1) + log λ]`` per generation
  (:func:`log_diag_mean`). These are the Lyapunov exponents of the product
  (Newman 1986, "The distribution of Lyapunov exponents: exact results for
  random matrices"): ``(1/t) log e_k(Σ_t) → ψ((n_s − k)/2) − log((n_s − 1)/2) + log λ``
  almost surely (:func:`lyapunov_exponents`), the k-th largest eigenvalue
  e_k. Every eigenvalue decays, so Σ_t → 0 (the paper's collapse).
* d = 1, ``σ² = Σ₀``: ``W2²(G^t, P_r) = e_t² + (s_t − σ)²`` with
  ``s_t = σ · sqrt(χ²_{n_ini−1}/(n_ini−1)) · Π_{s=2}^{t} sqrt(λ χ²_{n_s−1}/(n_s−1))``,
  ``E sqrt(χ²_{n−1}/(n−1)) = c_n = sqrt(2/(n−1)) Γ(n/2)/Γ((n−1)/2)``; so
  ``E W2²_t = m_t + σ² λ^{t−1} − 2σ² c_{n_ini} (sqrt(λ) c_{n_s})^{t−1} + σ²``,
  which at λ = 1 and ``n_ini = n_s = n`` is ``σ² [t/n + 2(1 − c_n^t)]``.

**Fresh data** (``n = n_r + n_s``; ``n_r`` new real points and ``n_s``
points of G^{t−1}; :func:`fresh_moments`). The pooled scatter is
``S_r + S_s + (n_r n_s/n)(x̄_r − x̄_s)(x̄_r − x̄_s)ᵀ`` and
``x̄_r − x̄_s = (x̄_r − μ₀) − e_{t−1} − sqrt(λ/n_s) L_{t−1} z``, so

    a_t = [(n_r − 1 + n_s/n) tr Σ₀ + (n_s − 1 + n_r/n) λ a_{t−1} + (n_r n_s/n) m_{t−1}] / (n − 1)
    m_t = [n_r tr Σ₀ + n_s² m_{t−1} + n_s λ a_{t−1}] / n²

from ``a_1 = tr Σ₀``, ``m_1 = tr Σ₀/n_ini``; ``E μ_t = μ₀`` throughout.

**Synthetic augmentation** (the same D_r every generation; ``r = x̄_r − μ₀``,
``c_t = E⟨r, e_t⟩``; :func:`augmentation_moments`): the real part is no
longer independent of the past, which adds the cross moment

    c_t = [tr Σ₀ + n_s c_{t−1}] / n
    m_t = [n_r tr Σ₀ + n_s² m_{t−1} + 2 n_r n_s c_{t−1} + n_s λ a_{t−1}] / n²
    a_t = [(n_r − 1) tr Σ₀ + (n_s − 1) λ a_{t−1}
           + (n_r n_s/n)(tr Σ₀/n_r − 2 c_{t−1} + m_{t−1} + λ a_{t−1}/n_s)] / (n − 1)

from ``a_1 = tr Σ₀``, ``m_1 = c_1 = tr Σ₀/n_r``.

Both recursions are affine, ``x_t = b + M x_{t−1}``, and converge (the
spectral radius of M is below 1 for ``n_r ≥ 1``) to the fixed point
``(I − M)⁻¹ b`` (:func:`fixed_point`). Memory K > 1 and the accumulating pool
make the group sizes random (multinomial) or growing; no closed form is
offered for them here, and :func:`loop_moments` returns none.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, polygamma

from madjax.base import Array


def _as_float(x):
    return jnp.asarray(x, jnp.result_type(float))


# ----------------------------------------------------------------------------- fully synthetic


def kappa(n, dim: int) -> Array:
    """``E log det(W/(n − 1))``, ``W ~ Wishart(n − 1, I_d)``: ``Σ_i ψ((n−1−i)/2) + d log(2/(n−1))``.

    ``−inf`` where ``n − 1 < d`` (W is singular with certainty).
    """
    n = _as_float(n)
    h = (n - 1 - jnp.arange(dim)) / 2
    value = jnp.sum(digamma(jnp.maximum(h, 0.5))) + dim * jnp.log(2 / jnp.maximum(n - 1, 1))
    return jnp.where(n - 1 >= dim, value, -jnp.inf)


def kappa_var(n, dim: int) -> Array:
    """``Var log det W`` for ``W ~ Wishart(n − 1, I_d)``: ``Σ_i ψ'((n−1−i)/2)`` (0 where singular)."""
    n = _as_float(n)
    h = (n - 1 - jnp.arange(dim)) / 2
    return jnp.where(n - 1 >= dim, jnp.sum(polygamma(1, jnp.maximum(h, 0.5))), 0.0)


def fully_synthetic_trace(t, *, lam, trace0) -> Array:
    """``E tr Σ_t = λ^{t−1} tr Σ₀`` (module docstring)."""
    return _as_float(lam) ** (_as_float(t) - 1) * trace0


def fully_synthetic_mean_sq(t, *, n_ini, n_syn, lam, trace0) -> Array:
    """``E‖μ_t − μ₀‖² = tr Σ₀ [1/n_ini + (1/n_s) Σ_{j=1}^{t−1} λ^j]``."""
    t, lam = _as_float(t), _as_float(lam)
    # Σ_{j=1}^{t−1} λ^j, with its λ = 1 limit t − 1
    geometric = jnp.where(lam < 1, lam * (1 - lam ** (t - 1)) / jnp.where(lam < 1, 1 - lam, 1.0), t - 1)
    return trace0 * (1 / _as_float(n_ini) + geometric / _as_float(n_syn))


def fully_synthetic_logdet(t, *, dim: int, n_ini, n_syn, lam, logdet0=0.0) -> Array:
    """``E log det Σ_t = log det Σ₀ + κ(n_ini) + (t − 1)(κ(n_s) + d log λ)``; ``−inf`` where singular."""
    t = _as_float(t)
    later = kappa(n_syn, dim) + dim * jnp.log(_as_float(lam))
    # t = 1 must not read κ(n_s) (which may be −inf, and 0·inf is NaN)
    return logdet0 + kappa(n_ini, dim) + jnp.where(t > 1, (t - 1) * later, 0.0)


def fully_synthetic_logdet_var(t, *, dim: int, n_ini, n_syn) -> Array:
    """``Var log det Σ_t = v(n_ini) + (t − 1) v(n_s)`` (independent Bartlett χ²)."""
    return kappa_var(n_ini, dim) + (_as_float(t) - 1) * kappa_var(n_syn, dim)


def log_diag_mean(t, *, dim: int, n_ini, n_syn, lam) -> Array:
    """``E log (L_t)_kk`` for k = 1 … d (reference ``N(0, I)``): shape ``t.shape + (d,)``.

    ``(L_t)_kk = sqrt(χ²_{n_ini−k}/(n_ini−1)) Π_{s=2}^{t} sqrt(λ χ²_{n_s−k}/(n_s−1))``.
    """
    t = _as_float(t)[..., None]
    k = jnp.arange(1, dim + 1)

    def rate(n, scale):
        n = _as_float(n)
        return 0.5 * (digamma(jnp.maximum(n - k, 1) / 2) + jnp.log(2.0) - jnp.log(n - 1) + jnp.log(scale))

    return rate(n_ini, 1.0) + (t - 1) * rate(n_syn, _as_float(lam))


def lyapunov_exponents(*, dim: int, n_syn, lam) -> Array:
    """Almost-sure limits ``(1/t) log e_k(Σ_t) → ψ((n_s − k)/2) − log((n_s − 1)/2) + log λ``, k = 1 … d."""
    n, k = _as_float(n_syn), jnp.arange(1, dim + 1)
    return digamma(jnp.maximum(n - k, 1) / 2) - jnp.log((n - 1) / 2) + jnp.log(_as_float(lam))


def chi_mean(n) -> Array:
    """``c_n = E sqrt(χ²_{n−1}/(n−1)) = sqrt(2/(n−1)) Γ(n/2)/Γ((n−1)/2)``."""
    n = _as_float(n)
    return jnp.sqrt(2 / (n - 1)) * jnp.exp(gammaln(n / 2) - gammaln((n - 1) / 2))


def w2_sq_1d(t, *, n_ini, n_syn, lam, sigma2=1.0) -> Array:
    """d = 1, fully synthetic: ``E W2²(G^t, N(μ₀, σ²)) = m_t + σ²λ^{t−1} − 2σ² c_{n_ini}(√λ c_{n_s})^{t−1} + σ²``."""
    t, lam = _as_float(t), _as_float(lam)
    m = fully_synthetic_mean_sq(t, n_ini=n_ini, n_syn=n_syn, lam=lam, trace0=sigma2)
    scale = chi_mean(n_ini) * (jnp.sqrt(lam) * chi_mean(n_syn)) ** (t - 1)
    return m + sigma2 * lam ** (t - 1) - 2 * sigma2 * scale + sigma2


# ----------------------------------------------------------------------------- loops with real data


class Affine(NamedTuple):
    """A moment recursion ``x_t = b + M x_{t−1}`` from ``x_1`` (fields ``(k,)``, ``(k, k)``, ``(k,)``).

    The first two components of x are always ``(a_t, m_t) = (E tr Σ_t, E‖μ_t − μ₀‖²)``.
    """

    b: Array
    M: Array
    x1: Array


def fresh_recursion(*, n_ini, n_real, n_syn, lam, trace0) -> Affine:
    """The fresh-data loop's recursion for ``(a_t, m_t)`` (module docstring)."""
    n_r, n_s, lam = _as_float(n_real), _as_float(n_syn), _as_float(lam)
    n = n_r + n_s
    b = jnp.stack([(n_r - 1 + n_s / n) * trace0 / (n - 1), n_r * trace0 / n**2])
    M = jnp.array([[(n_s - 1 + n_r / n) * lam / (n - 1), n_r * n_s / n / (n - 1)],
                   [n_s * lam / n**2, n_s**2 / n**2]])
    return Affine(b, M, jnp.stack([_as_float(trace0), trace0 / _as_float(n_ini)]))


def augmentation_recursion(*, n_real, n_syn, lam, trace0) -> Affine:
    """The synthetic-augmentation loop's recursion for ``(a_t, m_t, c_t)`` (module docstring)."""
    n_r, n_s, lam = _as_float(n_real), _as_float(n_syn), _as_float(lam)
    n = n_r + n_s
    g = n_r * n_s / n  # weight of the between-group scatter
    b = jnp.stack([((n_r - 1) * trace0 + g * trace0 / n_r) / (n - 1), n_r * trace0 / n**2, trace0 / n])
    M = jnp.array([[((n_s - 1) * lam + g * lam / n_s) / (n - 1), g / (n - 1), -2 * g / (n - 1)],
                   [n_s * lam / n**2, n_s**2 / n**2, 2 * n_r * n_s / n**2],
                   [0.0, 0.0, n_s / n]])
    return Affine(b, M, jnp.stack([_as_float(trace0), trace0 / n_r, trace0 / n_r]))


def iterate(rec: Affine, generations: int) -> Array:
    """``x_1 … x_T`` of an affine recursion: ``(T, k)`` (``generations`` static)."""
    def step(x, _):
        x = rec.b + rec.M @ x
        return x, x

    _, rest = jax.lax.scan(step, rec.x1, None, length=generations - 1)
    return jnp.concatenate([rec.x1[None], rest])


def fixed_point(rec: Affine) -> Array:
    """The limit ``(I − M)⁻¹ b`` of an affine recursion (the loop's stationary moments)."""
    return jnp.linalg.solve(jnp.eye(rec.b.shape[0], dtype=rec.b.dtype) - rec.M, rec.b)


def fresh_moments(generations: int, *, n_ini, n_real, n_syn, lam, trace0) -> tuple[Array, Array]:
    """``(E tr Σ_t, E‖μ_t − μ₀‖²)`` for t = 1 … T in the fresh-data loop, each ``(T,)``."""
    x = iterate(fresh_recursion(n_ini=n_ini, n_real=n_real, n_syn=n_syn, lam=lam, trace0=trace0), generations)
    return x[:, 0], x[:, 1]


def augmentation_moments(generations: int, *, n_real, n_syn, lam, trace0) -> tuple[Array, Array]:
    """``(E tr Σ_t, E‖μ_t − μ₀‖²)`` for t = 1 … T in the synthetic-augmentation loop, each ``(T,)``."""
    x = iterate(augmentation_recursion(n_real=n_real, n_syn=n_syn, lam=lam, trace0=trace0), generations)
    return x[:, 0], x[:, 1]


# ----------------------------------------------------------------------------- per loop


def loop_moments(loop: str, generations: int, *, dim: int, n_ini, n_real, n_syn, lam, memory: int = 1,
                 accumulate: bool = False) -> dict[str, Array]:
    """The expectations over chains that have a closed form here, for reference ``N(0, I_d)``.

    Keys are :func:`madjax.simulate` variable names (values ``(T,)``):
    ``cov_trace``, ``mean_sq_norm`` and, in the fully synthetic loop,
    ``cov_logdet`` and (d = 1) ``w2_sq`` (E W2²; compare with the chains'
    mean of ``w2**2``). Empty for memory K > 1 and the accumulating pool.
    """
    if memory > 1 or accumulate:
        return {}
    t = jnp.arange(1, generations + 1)
    trace0 = float(dim)
    if loop == "fully-synthetic":
        out = {
            "cov_trace": fully_synthetic_trace(t, lam=lam, trace0=trace0),
            "mean_sq_norm": fully_synthetic_mean_sq(t, n_ini=n_ini, n_syn=n_syn, lam=lam, trace0=trace0),
            "cov_logdet": fully_synthetic_logdet(t, dim=dim, n_ini=n_ini, n_syn=n_syn, lam=lam),
        }
        if dim == 1:
            out["w2_sq"] = w2_sq_1d(t, n_ini=n_ini, n_syn=n_syn, lam=lam)
        return out
    if loop == "fresh":
        trace, mean_sq = fresh_moments(generations, n_ini=n_ini, n_real=n_real, n_syn=n_syn, lam=lam,
                                       trace0=trace0)
    else:
        trace, mean_sq = augmentation_moments(generations, n_real=n_real, n_syn=n_syn, lam=lam, trace0=trace0)
    return {"cov_trace": trace, "mean_sq_norm": mean_sq}
