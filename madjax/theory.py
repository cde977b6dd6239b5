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
import numpy as np
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


# ----------------------------------------------------------------------------- loop operators
#
# The operators of :mod:`madjax.loops` change the recursions above in ways that
# stay exact in expectation (conditioning on generation t − 1, every new term is
# linear in (a_{t−1}, m_{t−1})), with time-varying sizes n_t (growth, schedules)
# and pool sizes N_t. ``c(n)`` is the estimator's factor E tr Σ̂ / tr Σ:
# 1 (unbiased), (n − 1)/n (mle); the known-covariance model fixes Σ_t = Σ₀.


def estimator_factor(n, estimator: str) -> Array:
    """``c(n) = E tr Σ̂ / tr Σ`` for n points: 1 (unbiased), ``(n − 1)/n`` (mle), 1 (known-cov)."""
    n = _as_float(n)
    return (n - 1) / n if estimator == "mle" else jnp.ones_like(n)


def _scan_sizes(step, x1, sizes) -> Array:
    """``x_1 … x_T`` of ``x_t = step(x_{t−1}, n_t, t)`` over the sizes ``(T − 1,)`` of generations 2 … T."""
    sizes = _as_float(sizes)
    ts = jnp.arange(2, sizes.shape[0] + 2)

    def body(x, nt):
        x = step(x, nt[0], nt[1])
        return x, x

    _, rest = jax.lax.scan(body, x1, jnp.stack([sizes, _as_float(ts)], axis=1))
    return jnp.concatenate([x1[None], rest])


def replace_moments(sizes, *, n_ini, lam, trace0, estimator: str = "unbiased") -> tuple[Array, Array]:
    """Replace (fully synthetic, one model per generation) with sizes n_t: ``(a_t, m_t)``, each ``(T,)``.

    ``a_t = λ c(n_t) a_{t−1}`` (a constant ``tr Σ₀`` for known-cov, whose sampler
    is ``N(μ, λΣ₀)``), ``m_t = m_{t−1} + λ a_{t−1} / n_t``, from
    ``a_1 = c(n_ini) tr Σ₀``, ``m_1 = tr Σ₀ / n_ini``. At λ = 1 the mean's error
    grows by ``tr Σ₀ / n_t`` per generation: linearly in t for constant n
    (Shumailov et al. 2024), and it stays bounded iff ``Σ 1/n_t < ∞`` (Xu, He &
    Cheng 2025: ``n_t = ⌈n t^α⌉`` with α > 1).
    """
    lam = _as_float(lam)
    known = estimator == "known-cov"

    def step(x, n, t):
        a, m = x
        a_next = jnp.where(known, trace0, lam * estimator_factor(n, estimator) * a)
        return jnp.stack([a_next, m + lam * a / n])

    x1 = jnp.stack([_as_float(trace0) * estimator_factor(n_ini, estimator), trace0 / _as_float(n_ini)])
    x = _scan_sizes(step, x1, sizes)
    return x[:, 0], x[:, 1]


def replace_logdet(sizes, *, dim: int, n_ini, lam, logdet0=0.0, estimator: str = "unbiased") -> Array:
    """``E log det Σ_t = log det Σ₀ + κ_e(n_ini) + Σ_{s=2}^{t} (κ_e(n_s) + d log λ)`` with
    ``κ_e(n) = κ(n) + d log(c(n))``; ``−inf`` where singular; ``log det Σ₀`` for known-cov."""
    def kappa_e(n):
        return kappa(n, dim) + dim * jnp.log(estimator_factor(n, estimator))

    if estimator == "known-cov":
        return jnp.full((jnp.shape(sizes)[0] + 1,), logdet0, jnp.result_type(float))
    steps = jax.vmap(kappa_e)(_as_float(sizes)) + dim * jnp.log(_as_float(lam))
    return logdet0 + kappa_e(n_ini) + jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(steps)])


def accumulate_moments(sizes, *, n_first, lam, trace0, estimator: str = "unbiased",
                       with_first: bool = True) -> tuple[Array, Array]:
    """Accumulate: each generation trains on the whole pool, ``(a_t, m_t)`` each ``(T,)``.

    ``with_first`` (Gerstgrasser et al. 2024, ``synthetic-augmentation`` +
    accumulate): the pool starts with the n_r = ``n_first`` real points of G¹,
    ``N_t = n_r + Σ_{s≤t} n_s``; else (fully synthetic + accumulate) it starts
    with generation 2's sample. The pool's mean is μ_{t−1}, so with the new
    group's mean ``x̄ ~ N(μ_{t−1}, λΣ_{t−1}/n_t)`` (Chan's update)

        μ_t = μ_{t−1} + (n_t/N_t)(x̄ − μ_{t−1}):  m_t = m_{t−1} + n_t λ a_{t−1} / N_t²
        W_t = W_{t−1} + S_new + (N_{t−1} n_t / N_t)(x̄ − μ_{t−1})(…)ᵀ:
        E tr W_t = E tr W_{t−1} + λ a_{t−1} (n_t − 1 + N_{t−1}/N_t)

    and ``a_t = E tr W_t / (N_t − 1)`` (``/N_t`` for mle; ``tr Σ₀`` for known-cov).
    For known-cov and ``n_t = n_r = n``: ``m_t = (tr Σ₀/n)(1 + Σ_{s=2}^{t} 1/s²)
    → (π²/6) m_1`` (Dey & Donoho 2024; :func:`accumulate_known_cov_ratio`).
    """
    lam = _as_float(lam)
    known = estimator == "known-cov"
    den = (lambda n: n) if estimator == "mle" else (lambda n: n - 1)
    n_first = _as_float(n_first)

    def step(x, n, t):
        a, m, w, pool = x
        fresh_pool = (~jnp.asarray(with_first)) & (t == 2)  # fully synthetic: generation 2 is a replace step
        new_pool = jnp.where(fresh_pool, n, pool + n)
        m_next = jnp.where(fresh_pool, m + lam * a / n, m + n * lam * a / new_pool**2)
        w_next = jnp.where(fresh_pool, lam * a * (n - 1), w + lam * a * (n - 1 + pool / new_pool))
        a_next = jnp.where(known, trace0, w_next / den(new_pool))
        return jnp.stack([a_next, m_next, w_next, new_pool])

    a1 = _as_float(trace0) * estimator_factor(n_first, estimator)
    x1 = jnp.stack([a1, trace0 / n_first, (n_first - 1) * trace0, n_first])
    x = _scan_sizes(step, x1, sizes)
    return x[:, 0], x[:, 1]


def accumulate_known_cov_ratio(t) -> Array:
    """``m_t / m_1 = 1 + Σ_{s=2}^{t} 1/s²`` of the accumulating known-covariance mean with equal sizes
    (Dey & Donoho 2024), → π²/6 ≈ 1.645; replace gives t."""
    t = jnp.asarray(t)
    s = jnp.arange(2, jnp.max(t) + 1)
    partial = jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(1.0 / _as_float(s) ** 2)])
    return 1.0 + partial[t - 1]


def weighted_moments(generations: int, *, n_ini, n_real, n_syn, lam, trace0, weight,
                     estimator: str = "unbiased") -> tuple[Array, Array]:
    """Fresh data weighted by w, synthetic by 1 − w (He, Xu & Cheng 2026): ``(a_t, m_t)``, each ``(T,)``.

    Each generation draws n_r = ``n_real`` new real points and n_s = ``n_syn``
    points of G^{t−1}; the fit is the moment fit of ``w P̂_r + (1 − w) P̂_s``
    (:class:`madjax.gaussian.Weighted`). With δ = x̄_r − x̄_s,

        m_t = w² tr Σ₀/n_r + (1 − w)² (m_{t−1} + λ a_{t−1}/n_s)
        a_t = w c(n_r) tr Σ₀ + (1 − w) c(n_s) λ a_{t−1} + w(1 − w)(tr Σ₀/n_r + m_{t−1} + λ a_{t−1}/n_s)

    (``a_t = tr Σ₀`` for known-cov), an affine recursion from
    ``a_1 = c(n_ini) tr Σ₀``, ``m_1 = tr Σ₀/n_ini``.
    """
    n_r, n_s, lam, w = _as_float(n_real), _as_float(n_syn), _as_float(lam), _as_float(weight)
    tr = _as_float(trace0)
    if estimator == "known-cov":
        b = jnp.stack([tr, w**2 * tr / n_r + (1 - w) ** 2 * lam * tr / n_s])
        M = jnp.stack([jnp.zeros(2), jnp.stack([jnp.zeros(()), (1 - w) ** 2])])
    else:
        c_r, c_s = estimator_factor(n_r, estimator), estimator_factor(n_s, estimator)
        b = jnp.stack([w * c_r * tr + w * (1 - w) * tr / n_r, w**2 * tr / n_r])
        M = jnp.stack([jnp.stack([(1 - w) * c_s * lam + w * (1 - w) * lam / n_s, w * (1 - w)]),
                       jnp.stack([(1 - w) ** 2 * lam / n_s, (1 - w) ** 2])])
    x1 = jnp.stack([tr * estimator_factor(n_ini, estimator), tr / _as_float(n_ini)])
    x = iterate(Affine(b, M, x1), generations)
    return x[:, 0], x[:, 1]


def weighted_variance(weight, *, n_real, n_syn, lam=1.0, trace0=1.0) -> Array:
    """Stationary ``V(w) = lim E‖μ_t − μ₀‖²`` of the known-covariance weighted loop:
    ``V(w) = tr Σ₀ [w²/n_r + (1 − w)² λ/n_s] / (1 − (1 − w)²)`` (w ∈ (0, 1])."""
    w = _as_float(weight)
    return _as_float(trace0) * (w**2 / _as_float(n_real) + (1 - w) ** 2 * _as_float(lam) / _as_float(n_syn)) / (
        1 - (1 - w) ** 2)


def optimal_real_weight(*, n_real, n_syn, lam=1.0) -> Array:
    """The w minimising :func:`weighted_variance`: with ``ρ = n_r λ / n_s`` (a = 1/n_r, b = λ/n_s), the
    root in (0, 1] of ``a u² − (2a + b) u + a = 0`` for u = 1 − w gives
    ``w* = (sqrt(ρ² + 4ρ) − ρ) / 2``; ``(√5 − 1)/2 ≈ 0.618`` for n_r = n_s, λ = 1
    (the golden ratio's reciprocal, He, Xu & Cheng 2026)."""
    rho = _as_float(n_real) * _as_float(lam) / _as_float(n_syn)
    return (jnp.sqrt(rho**2 + 4 * rho) - rho) / 2


def tilted_known_cov_mean_sq(sizes, *, n_ini, lam, tilt, spectrum, n_real=0) -> Array:
    """Curation with Σ fixed at Σ₀ = diag(s): ``E‖μ_t − μ₀‖²``, ``(T,)``.

    The tilted sampler of ``N(μ, λΣ₀)`` is ``N(ρ ⊙ μ, diag(s'))`` with
    ``s' = λs/(1 + βλs)``, ``ρ = 1/(1 + βλs)``, so per coordinate
    ``v_t = [n_r s + n_t² ρ² v_{t−1} + n_t s'] / (n_r + n_t)²`` (n_r = 0:
    replace; fresh with n_r new real points), ``v_1 = s/n_ini``. Curation pulls
    the mean to the reward's maximiser μ₀ (Ferbach et al. 2024).
    """
    s = _as_float(jnp.asarray(spectrum))
    lam, beta, n_r = _as_float(lam), _as_float(tilt), _as_float(n_real)
    rho = 1 / (1 + beta * lam * s)
    s_t = lam * s * rho

    def step(v, n, t):
        return (n_r * s + n**2 * rho**2 * v + n * s_t) / (n_r + n) ** 2

    v = _scan_sizes(step, s / _as_float(n_ini), sizes)
    return jnp.sum(v, axis=-1)


def tilted_limit(generations: int, *, lam, tilt, spectrum) -> tuple[Array, Array]:
    """The n → ∞ limit of the curated replace loop (unbiased fits): per eigen-direction
    ``σ²_t = λσ²_{t−1}/(1 + βλσ²_{t−1})``, i.e. ``1/σ²_t = 1/(λσ²_{t−1}) + β`` -- at λ = 1 the
    precision grows by β per generation and the model collapses onto the reward's
    maximiser (Ferbach et al. 2024). Returns ``(tr Σ_t, log det Σ_t)``, each ``(T,)``."""
    s = _as_float(jnp.asarray(spectrum))
    lam, beta = _as_float(lam), _as_float(tilt)

    def body(v, _):
        v = lam * v / (1 + beta * lam * v)
        return v, v

    _, rest = jax.lax.scan(body, s, None, length=generations - 1)
    v = jnp.concatenate([s[None], rest])
    return jnp.sum(v, axis=-1), jnp.sum(jnp.log(v), axis=-1)


# ----------------------------------------------------------------------------- per loop


def loop_moments(loop: str, generations: int, *, dim: int, n_ini, n_real, n_syn, lam, memory: int = 1,
                 accumulate: bool = False, estimator: str = "unbiased", spectrum: tuple = (),
                 sizes=None, subsample: bool = False, weighted: bool = False, real_weight=0.5,
                 tilted: bool = False, tilt=0.0) -> dict[str, Array]:
    """The expectations over chains that have a closed form here.

    Keys are :func:`madjax.simulate` variable names (values ``(T,)``):
    ``cov_trace``, ``mean_sq_norm`` and, in the fully synthetic loop,
    ``cov_logdet`` and (d = 1, N(0, 1), unbiased) ``w2_sq`` (E W2²; compare with
    the chains' mean of ``w2**2``). ``sizes``: the synthetic sizes of
    generations 2 … T (growth, schedules; default n_s). Empty where madjax
    has no closed form: memory K > 1, accumulate-subsample, the accumulating
    pool of the fresh loop, weighted mixing outside the fresh loop, curation
    of a refitted covariance (:func:`tilted_limit` is its n → ∞ limit only),
    size schedules outside replace and accumulate.
    """
    if memory > 1 or subsample:
        return {}
    t = jnp.arange(1, generations + 1)
    spectrum = tuple(spectrum) or (1.0,) * dim
    trace0, logdet0 = float(sum(spectrum)), float(np.sum(np.log(spectrum)))
    constant = sizes is None
    sizes = jnp.full((generations - 1,), n_syn) if sizes is None else jnp.asarray(sizes)
    if tilted:
        if estimator != "known-cov" or weighted or accumulate or loop == "synthetic-augmentation":
            return {}
        real = n_real if loop == "fresh" else 0
        return {"cov_trace": jnp.full((generations,), trace0),
                "mean_sq_norm": tilted_known_cov_mean_sq(sizes, n_ini=n_ini, lam=lam, tilt=tilt, spectrum=spectrum,
                                                         n_real=real)}
    if weighted:
        if loop != "fresh" or accumulate or not constant:
            return {}
        trace, mean_sq = weighted_moments(generations, n_ini=n_ini, n_real=n_real, n_syn=n_syn, lam=lam,
                                          trace0=trace0, weight=real_weight, estimator=estimator)
        return {"cov_trace": trace, "mean_sq_norm": mean_sq}
    if accumulate:
        if loop == "fresh":
            return {}
        first = n_real if loop == "synthetic-augmentation" else n_ini
        trace, mean_sq = accumulate_moments(sizes, n_first=first, lam=lam, trace0=trace0, estimator=estimator,
                                            with_first=loop == "synthetic-augmentation")
        return {"cov_trace": trace, "mean_sq_norm": mean_sq}
    if loop == "fully-synthetic":
        trace, mean_sq = replace_moments(sizes, n_ini=n_ini, lam=lam, trace0=trace0, estimator=estimator)
        out = {"cov_trace": trace, "mean_sq_norm": mean_sq,
               "cov_logdet": replace_logdet(sizes, dim=dim, n_ini=n_ini, lam=lam, logdet0=logdet0,
                                            estimator=estimator)}
        if dim == 1 and constant and estimator == "unbiased" and spectrum == (1.0,):
            out["w2_sq"] = w2_sq_1d(t, n_ini=n_ini, n_syn=n_syn, lam=lam)
        return out
    if not constant or estimator != "unbiased":
        return {}
    if loop == "fresh":
        trace, mean_sq = fresh_moments(generations, n_ini=n_ini, n_real=n_real, n_syn=n_syn, lam=lam,
                                       trace0=trace0)
    else:
        trace, mean_sq = augmentation_moments(generations, n_real=n_real, n_syn=n_syn, lam=lam, trace0=trace0)
    return {"cov_trace": trace, "mean_sq_norm": mean_sq}
