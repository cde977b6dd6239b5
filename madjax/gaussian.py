"""Gaussian models of the self-consuming loop: the exact and the sampled engine.

The model of paper Eq. (1) fits ``G = N(μ̂, Σ̂)`` to n points by the sample
mean and the unbiased covariance ``Σ̂ = scatter / (n − 1)``, and samples with
bias λ from ``N(μ̂, λ Σ̂)``. Three engines implement it behind the
same :class:`~madjax.base.LoopModel` record (DESIGN §2, §6), chosen by a
:class:`GaussianSpec`:

* ``gaussian_exact(dim)`` never draws points. The fitted statistics of n
  samples from ``N(m, S)`` are exactly

      x̄ ~ N(m, S / n),   scatter ~ Wishart(n − 1, S),   independent,

  and the Wishart is drawn by Bartlett's decomposition ``W = (L A)(L A)ᵀ``
  with ``L Lᵀ = S`` and A lower triangular, ``A_ii = sqrt(χ²_{n−1−i})``,
  ``A_ij ~ N(0, 1)`` for j < i (0-based). For n − 1 < d the Wishart is
  singular and only columns ``0 … n−2`` of A are kept (lower-trapezoidal
  Bartlett). The cost is O(d³) per draw whatever n is.
* ``gaussian_sampled(dim, max_points)`` draws the points into a fixed-size,
  masked buffer and fits them (two-pass mean and scatter). It is the ground
  truth the exact engine is tested against.

Both share the fitted-model record :class:`GaussianParams`. Sampling needs any
square root ``L Lᵀ = Σ``; the W2 distance and the log-determinant need the
eigenvalues of Σ. Two factorisations provide them (``factor``):

* ``"eigh"`` (always valid): one ``eigh``, ``Σ = V diag(e) Vᵀ``, gives
  ``L = V diag(sqrt(max(e, 0)))`` and e at once. It is the only choice when Σ
  is singular by construction (rank < d), where Cholesky returns NaN.
* ``"cholesky"`` (for Σ of full analytic rank): the Cholesky factor for
  sampling, and the eigenvalues alone, without eigenvectors, from LAPACK's
  tridiagonal reduction plus bisection (``eigh_tridiagonal``), only when a
  diagnostic asks for them. On a CPU, jax's ``eigh`` always computes the
  eigenvectors, which makes it ~3× the cost of this pair (benchmarks/README.md).
  A Σ that is full rank in exact arithmetic but not numerically positive
  definite in the working precision gets a diagonal jitter of
  ``100·d·eps·max diag Σ`` before Cholesky (a few times the level at which
  ``eigh`` itself clips rounding-negative eigenvalues); such fits are flagged
  in ``GaussianParams.jitter`` and reported as ``underflow``.

* ``"factored"`` (the fully synthetic loop with K = 1 and no accumulation):
  Σ_t is never formed. Its square root is carried as a product of
  triangular factors, ``L_t = sqrt(λ / (n − 1)) · L_{t−1} · A_t`` with A_t the
  Bartlett factor of generation t (:func:`gaussian_factored`), stored as a
  normalised lower-triangular ``root`` times ``exp(log_scale)``, and the
  log-diagonal of ``L_t`` is summed separately (the diagonal of a product of
  lower-triangular matrices is the product of their diagonals). So
  ``log det Σ_t = 2 Σ_k log (L_t)_kk`` is exact in float32 for any
  conditioning and any overall scale, no Cholesky or eigen-solve is needed per
  generation; W2 comes from the eigenvalues of ``root rootᵀ``.

**Accuracy of the diagnostics** (float32 and float64 alike, ``eps`` the
working precision): ``w2²`` to about ``d·sqrt(d·eps·max e)`` absolute (each
eigenvalue is known to ``d·eps·max e``, so its square root to the square root
of that), ``cov_trace`` and
``mean_sq_norm`` to a few ``eps`` relative (or absolutely below the smallest
normal number), ``cov_logdet`` to **0.05 nats**. The factored route meets that
by construction. The pooled routes (``eigh``, ``cholesky``) compute log det
from eigenvalues, each known only to ``δ = d·eps·max e`` (plus the Cholesky
jitter where one was added): where ``Σ_i δ / e_i > 0.05`` -- Σ too badly
conditioned for the working precision -- ``cov_logdet`` is recorded as NaN
and ``logdet_lost`` is set, never a finite wrong value (float64 then helps).

Ranks are tracked analytically: a set of n points spans an affine subspace of
dimension at most ``n − 1``; points sampled from a model of rank r span at
most ``min(n − 1, r)``; the union of groups of points spans at most
``Σ_g (r_g + 1) − 1`` (empty groups count ``r_g = −1``). ``cov_logdet`` is
``−inf`` exactly where this bound is below d, never NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import eigh_tridiagonal

from madjax.base import Array, LoopModel
from madjax.points import PointSet
from madjax.points import subsample as point_subsample
from madjax.validation import ParameterError, check_choice, check_int


class Stats(NamedTuple):
    """Sufficient statistics of a set of points (the exact engine's ``Dataset``).

    Attributes:
      n: ``()`` int32, number of points.
      mean: ``(d,)`` sample mean x̄ (0 when ``n == 0``).
      scatter: ``(d, d)`` ``Σ_i (x_i − x̄)(x_i − x̄)ᵀ``.
      rank: ``()`` int32, upper bound on the affine dimension of the points
        (``−1`` for an empty set).
    """

    n: Array
    mean: Array
    scatter: Array
    rank: Array


class Points(NamedTuple):
    """A masked buffer of points (the sampled engine's ``Dataset``).

    Attributes:
      x: ``(N, d)`` points; rows where ``mask`` is False are ignored.
      mask: ``(N,)`` bool, valid rows.
      rank: ``()`` int32, upper bound on the affine dimension (as in :class:`Stats`).
    """

    x: Array
    mask: Array
    rank: Array


class GaussianParams(NamedTuple):
    """A fitted Gaussian ``N(mean, cov)`` and its eigen-decomposition.

    Attributes:
      mean: ``(d,)`` μ.
      cov: ``(d, d)`` Σ (symmetric, positive semi-definite).
      eigvals: ``(d,)`` eigenvalues of Σ, ascending; the ``d − rank`` smallest
        are set to exactly 0 (the rest may be slightly negative from rounding).
        NaN where the fit used ``factor="cholesky"``, which computes them only
        when :func:`diagnose` asks.
      sqrt: ``(d, d)`` a square root L with ``L Lᵀ = Σ``:
        ``V diag(sqrt(max(e, 0)))`` (``"eigh"``) or lower-triangular (``"cholesky"``).
      rank: ``()`` int32, analytic rank of Σ.
      jitter: ``()`` int32, > 0 where the Cholesky factor needed a diagonal
        jitter or fallback (:func:`cholesky_factor`; always 0 for ``"eigh"``).
    """

    mean: Array
    cov: Array
    eigvals: Array
    sqrt: Array
    rank: Array
    jitter: Array


class FactoredGaussian(NamedTuple):
    """A Gaussian ``N(mean, S Sᵀ)`` with a lower-triangular square root ``S = exp(log_scale) · root``.

    As a fitted model it is ``G = N(μ, Σ)`` with ``Σ = S Sᵀ``; as the
    statistics of n points (:class:`FactoredStats`) the same record holds
    ``x̄`` and the scatter ``S Sᵀ``.

    Attributes:
      mean: ``(d,)`` μ (or x̄).
      root: ``(d, d)`` lower triangular, scaled so that ``max |root| = 1`` (0 for S = 0).
      log_scale: ``()`` log of the scale of S: S underflows in no precision.
      log_diag: ``(d,)`` ``log S_kk``, summed generation by generation with
        Kahan compensation (``−inf`` on the null columns of a singular S).
      log_diag_err: ``(d,)`` the Kahan compensation of ``log_diag``.
      rank: ``()`` int32, analytic rank of S.
    """

    mean: Array
    root: Array
    log_scale: Array
    log_diag: Array
    log_diag_err: Array
    rank: Array


class FactoredStats(NamedTuple):
    """Statistics of n points in factored form: x̄ and ``scatter = S Sᵀ``, fields as in :class:`FactoredGaussian`.

    Attributes:
      n: ``()`` int32, number of points; the other fields as in
        :class:`FactoredGaussian` with ``mean = x̄`` and ``S Sᵀ = scatter``.
    """

    n: Array
    mean: Array
    root: Array
    log_scale: Array
    log_diag: Array
    log_diag_err: Array
    rank: Array


# ----------------------------------------------------------------------------- shared


def union_rank(ranks: Array, dim: int) -> Array:
    """Affine-dimension bound of a union of point groups: ``min(d, Σ (r_g + 1) − 1)``."""
    return jnp.minimum(jnp.sum(ranks + 1), dim + 1).astype(jnp.int32) - 1


FACTORS = ("eigh", "cholesky", "factored")

# Cholesky retry: diagonal jitter 100·d·eps·max(diag Σ).
_JITTER = 100.0


def params_from_moments(mean: Array, cov: Array, rank: Array, factor: str = "eigh") -> GaussianParams:
    """Factorise Σ once into the record used for sampling and diagnostics (module docstring).

    Args:
      mean: ``(d,)`` μ.
      cov: ``(d, d)`` Σ.
      rank: ``()`` analytic rank of Σ.
      factor: ``"eigh"`` or ``"cholesky"`` (static; ``"cholesky"`` assumes rank d).
    """
    cov = 0.5 * (cov + cov.T)  # both factorisations read one triangle: make both agree
    rank = jnp.asarray(rank, jnp.int32)
    if factor == "cholesky":
        sqrt, jitter = cholesky_factor(cov)
        nan = jnp.full(mean.shape, jnp.nan, cov.dtype)
        return GaussianParams(mean=mean, cov=cov, eigvals=nan, sqrt=sqrt, rank=rank, jitter=jitter)
    eigvals, vecs = jnp.linalg.eigh(cov)
    eigvals = _zero_null_space(eigvals, rank)
    sqrt = vecs * jnp.sqrt(jnp.maximum(eigvals, 0.0))[None, :]
    return GaussianParams(mean=mean, cov=cov, eigvals=eigvals, sqrt=sqrt, rank=rank, jitter=jnp.int32(0))


def _zero_null_space(eigvals: Array, rank: Array) -> Array:
    # The d − rank smallest eigenvalues are zero by construction; rounding makes
    # them ±eps·max(e), whose square roots would bias W2 and widen the support.
    dim = eigvals.shape[-1]
    return jnp.where(jnp.arange(dim) < dim - rank, 0.0, eigvals)


def _scale(cov: Array) -> Array:
    """``max diag Σ``, or 1 where Σ = 0: rescaling by it keeps Σ → 0 (λ < 1) out of the subnormals."""
    s = jnp.max(jnp.diagonal(cov))
    return jnp.where(s > 0, s, 1.0)


def cholesky_factor(cov: Array) -> tuple[Array, Array]:
    """Lower-triangular L with ``L Lᵀ = Σ`` (+ jitter where Σ is numerically indefinite).

    Σ is rescaled by ``s = max diag Σ`` first. The factor is that of
    ``Σ/s + δ I`` with ``δ = 0`` where a first Cholesky of ``Σ/s`` succeeds
    and ``δ = 100·d·eps`` where it fails (a non-finite factor): two Cholesky
    calls, cheap next to the rest of a generation, the second fed by the
    outcome of the first (see :func:`symmetric_eigvals` for why every LAPACK
    call here must depend on the previous one).

    Returns:
      ``(L, jitter)``: the factor (0 for Σ = 0) and ``()`` int32: 0 for the
      plain factor, 1 for the jittered one, 2 where that failed too (Σ deep in
      the subnormals) and L is the square root of diag Σ.
    """
    s = _scale(cov)
    c = cov / s
    failed = (~jnp.all(jnp.isfinite(jnp.linalg.cholesky(c)))).astype(jnp.int32)
    chol = jnp.linalg.cholesky(_factorised(c, failed))
    # Past that, Σ has collapsed into the subnormals and its entries have lost
    # their digits: keep the diagonal (a PSD factor; flagged like the jitter).
    failed_again = ~jnp.all(jnp.isfinite(chol))
    chol = jnp.where(failed_again, jnp.sqrt(jnp.maximum(_factorised(c, 2), 0.0)), chol)
    # Σ = 0 exactly (a collapse past the smallest subnormal) has the factor 0.
    zero = jnp.max(jnp.diagonal(cov)) <= 0
    jitter = (failed + failed_again.astype(jnp.int32)) * (~zero).astype(jnp.int32)
    return jnp.where(zero, 0.0, chol * jnp.sqrt(s)), jitter


def _factorised(c: Array, jitter: Array) -> Array:
    """The matrix whose Cholesky factor :func:`cholesky_factor` returns, for rescaled Σ/s = c.

    ``jitter`` 0: c; 1: ``c + 100·d·eps·I``; 2: ``diag c`` (off-diagonal zeros).
    """
    dim = c.shape[-1]
    delta = jnp.where(jitter >= 1, _JITTER * dim * jnp.finfo(c.dtype).eps, 0.0).astype(c.dtype)
    return jnp.where(jitter >= 2, jnp.diag(jnp.diagonal(c)), c + delta * jnp.eye(dim, dtype=c.dtype))


def symmetric_eigvals(cov: Array, jitter: Array) -> Array:
    """Eigenvalues, ascending and without eigenvectors, of the Σ that was factorised.

    That is Σ itself where :func:`cholesky_factor` needed no help (``jitter``
    0), ``Σ + δ s I`` where it added its jitter (1) and ``diag Σ`` where it fell
    back to the diagonal (2). LAPACK's Householder tridiagonalisation
    (``lax.linalg.tridiagonal``) then bisection on Sturm sequences
    (``eigh_tridiagonal(eigvals_only=True)``, to an absolute accuracy of
    eps·‖T‖, the same as ``eigh``). Σ is rescaled by its largest diagonal
    entry ``s`` so tiny Σ stays out of the subnormal range.

    Why the input is chosen by ``jitter``: jaxlib's CPU LAPACK kernels split
    their batch over XLA's intra-op thread pool and block until it is done.
    Two such kernels with no data dependency between them (a Cholesky and a
    tridiagonalisation of the same Σ) may start at once, each on a pool
    thread; on a 2-core machine that leaves no thread for their batch tasks
    and the executable deadlocks (jax 0.10.2: every thread asleep on a
    futex). ``jitter`` is computed from the Cholesky factors, so the
    reduction waits for them, and in the normal case its input is Σ/s
    bit for bit.
    """
    s = _scale(cov)
    _, diag, off, _ = jax.lax.linalg.tridiagonal(_factorised(cov / s, jitter))
    return eigh_tridiagonal(diag, off, eigvals_only=True) * s


def standard_normal_params(dim: int, dtype, spectrum: tuple = ()) -> GaussianParams:
    """The reference distribution ``P_r = N(0, I_d)``, or ``N(0, diag(spectrum))`` (ascending)."""
    if not spectrum:
        eye = jnp.eye(dim, dtype=dtype)
        return GaussianParams(
            mean=jnp.zeros((dim,), dtype), cov=eye, eigvals=jnp.ones((dim,), dtype), sqrt=eye,
            rank=jnp.asarray(dim, jnp.int32), jitter=jnp.int32(0),
        )
    s = jnp.asarray(spectrum, dtype)
    return GaussianParams(mean=jnp.zeros((dim,), dtype), cov=jnp.diag(s), eigvals=s, sqrt=jnp.diag(jnp.sqrt(s)),
                          rank=jnp.asarray(dim, jnp.int32), jitter=jnp.int32(0))


ESTIMATORS = ("unbiased", "mle", "known-cov")
"""Eq. (1)'s unbiased covariance ``scatter/(n − 1)``; the maximum-likelihood ``scatter/n``
(ddof = 0, the peers' choice); or the mean alone with Σ fixed at the reference's Σ₀
(the known-covariance model of Dey & Donoho 2024)."""


def covariance_denominator(n: Array, estimator: str, dtype) -> Array:
    """``n − 1`` (unbiased) or ``n`` (mle), at least 1."""
    return jnp.maximum(n - 1 if estimator == "unbiased" else n, 1).astype(dtype)


def fit_moments(n: Array, mean: Array, scatter: Array, rank: Array, factor: str = "eigh",
                estimator: str = "unbiased", spectrum: tuple = ()) -> GaussianParams:
    """Eq. (1): μ̂ = x̄, Σ̂ = scatter / (n − 1) (requires n ≥ 2); ``scatter / n`` for the
    MLE; Σ̂ = Σ₀ (the reference's) for the known-covariance model."""
    if estimator == "known-cov":
        return standard_normal_params(mean.shape[-1], mean.dtype, spectrum)._replace(mean=mean)
    return params_from_moments(mean, scatter / covariance_denominator(n, estimator, scatter.dtype), rank, factor)


class Weighted(NamedTuple):
    """A training set whose real points weigh w and synthetic points 1 − w (weighted mixing).

    The fit is the moment fit of the weighted empirical measure
    ``w P̂_real + (1 − w) P̂_syn`` with each part's covariance by the estimator:
    ``μ̂ = w x̄_r + (1 − w) x̄_s``,
    ``Σ̂ = w Σ̂_r + (1 − w) Σ̂_s + w (1 − w)(x̄_r − x̄_s)(x̄_r − x̄_s)ᵀ``
    (He, Xu & Cheng 2026). An empty part gives the whole weight to the other.
    """

    real: Any
    synthetic: Any
    weight: Array


def weighted_moments(parts, weight: Array, estimator: str, dim: int):
    """``(mean, cov, rank)`` of a :class:`Weighted` set from its parts' ``(n, mean, scatter, rank)``."""
    (n_r, m_r, s_r, r_r), (n_s, m_s, s_s, r_s) = parts
    dtype = m_r.dtype
    w = jnp.where(n_s == 0, 1.0, jnp.where(n_r == 0, 0.0, weight)).astype(dtype)
    c_r = s_r / covariance_denominator(n_r, estimator, dtype)
    c_s = s_s / covariance_denominator(n_s, estimator, dtype)
    delta = m_r - m_s
    mean = w * m_r + (1 - w) * m_s
    cov = w * c_r + (1 - w) * c_s + w * (1 - w) * jnp.outer(delta, delta)
    rank = jnp.where(w >= 1, r_r, jnp.where(w <= 0, r_s, union_rank(jnp.stack([r_r, r_s]), dim)))
    return mean, cov, rank.astype(jnp.int32)


def tilt_params(params: GaussianParams, lam: Array, beta: Array) -> GaussianParams:
    """The λ-sampler ``N(μ, λΣ)`` tilted by ``exp(−β‖x‖²/2)`` (curation; Ferbach et al. 2024).

    The density ``∝ N(x; μ, λΣ) exp(−β‖x‖²/2)`` is Gaussian with
    ``Σ' = λΣ (I + βλΣ)⁻¹`` and ``μ' = (I − βΣ') μ`` (the reward's maximiser is
    the reference mean, 0). With ``L Lᵀ = λΣ`` and ``C Cᵀ = I + β LᵀL``
    (Cholesky), ``L' = L C⁻ᵀ`` is a square root of Σ' (also for singular Σ, whose
    support the tilt keeps). ``sample(key, tilted, n, 1)`` draws from it.
    """
    dtype = params.mean.dtype
    root = jnp.sqrt(jnp.asarray(lam, dtype)) * params.sqrt
    dim = root.shape[-1]
    c = jnp.linalg.cholesky(jnp.eye(dim, dtype=dtype) + jnp.asarray(beta, dtype) * (root.T @ root))
    tilted = jax.scipy.linalg.solve_triangular(c, root.T, lower=True).T  # L C⁻ᵀ
    cov = tilted @ tilted.T
    mean = params.mean - jnp.asarray(beta, dtype) * (cov @ params.mean)
    return params._replace(mean=mean, cov=cov, sqrt=tilted, eigvals=jnp.full_like(params.eigvals, jnp.nan))


def bartlett_factor(key: Array, df: Array, dim: int, dtype) -> Array:
    """Bartlett factor A with ``A Aᵀ ~ Wishart(df, I_d)``, also for ``df < d``.

    Args:
      key: PRNG key.
      df: ``()`` int, degrees of freedom ``n − 1`` (traced; any value ≥ −1).
      dim: d (static).

    Returns:
      ``(d, d)`` lower-trapezoidal A: ``A_ii = sqrt(χ²_{df−i})``, ``A_ij ~ N(0, 1)``
      for j < i, columns ``j ≥ df`` zero. χ² is drawn with its degrees of
      freedom clipped to ≥ 1 (jax returns garbage for df ≤ 0) and the unused
      columns are masked, so shapes do not depend on df.
    """
    k_chi, k_z = jax.random.split(key)
    idx = jnp.arange(dim)
    shape = jnp.maximum(df - idx, 1).astype(dtype) / 2
    chi2 = 2.0 * jax.random.gamma(k_chi, shape, dtype=dtype)
    # Draw only the d(d−1)/2 strictly-lower entries (random bits dominate the
    # cost after eigh) and gather them into place; slot 0 is a zero.
    rows, cols = np.tril_indices(dim, -1)
    gather = np.zeros((dim, dim), np.int32)
    gather[rows, cols] = np.arange(1, rows.size + 1)
    z = jnp.concatenate([jnp.zeros((1,), dtype), jax.random.normal(k_z, (rows.size,), dtype)])
    a = z[gather] + jnp.diag(jnp.sqrt(chi2))
    return jnp.where(idx[None, :] < df, a, jnp.zeros_like(a))


def sample_reference_stats(key: Array, n: Array, dim: int, dtype, spectrum: tuple = ()) -> Stats:
    """Exact statistics of n points from ``P_r = N(0, D²)``, ``D = diag(sqrt(spectrum))`` (I by default):
    x̄ ~ N(0, D²/n), scatter = D A Aᵀ D."""
    n = jnp.asarray(n, jnp.int32)
    k_mean, k_scatter = jax.random.split(key)
    a = bartlett_factor(k_scatter, n - 1, dim, dtype)
    z = jax.random.normal(k_mean, (dim,), dtype)
    if spectrum:
        d_half = jnp.sqrt(jnp.asarray(spectrum, dtype))
        a, z = d_half[:, None] * a, d_half * z
    mean = jnp.where(n > 0, z / jnp.sqrt(jnp.maximum(n, 1).astype(dtype)), 0.0)
    return Stats(n=n, mean=mean, scatter=a @ a.T, rank=jnp.minimum(n - 1, dim))


def sample_stats(key: Array, params: GaussianParams, n: Array, lam: Array) -> Stats:
    """Exact statistics of n points from ``N(μ, λΣ)`` without drawing them.

    ``x̄ = μ + sqrt(λ / n) L z`` and ``scatter = λ (L A)(L A)ᵀ`` with A from
    :func:`bartlett_factor` (df = n − 1). ``n = 0`` gives an empty group.
    """
    dim = params.mean.shape[-1]
    dtype = params.mean.dtype
    n = jnp.asarray(n, jnp.int32)
    k_mean, k_scatter = jax.random.split(key)
    la = params.sqrt @ bartlett_factor(k_scatter, n - 1, dim, dtype)
    lam = jnp.asarray(lam, dtype)
    nf = jnp.maximum(n, 1).astype(dtype)
    z = jax.random.normal(k_mean, (dim,), dtype)
    mean = jnp.where(n > 0, params.mean + jnp.sqrt(lam / nf) * (params.sqrt @ z), 0.0)
    rank = jnp.minimum(n - 1, params.rank)
    return Stats(n=n, mean=mean, scatter=lam * (la @ la.T), rank=rank)


def pool_stats(parts: Stats) -> Stats:
    """Pool groups stacked along a leading axis (DESIGN §2, the Chan update).

    ``n = Σ n_g``, ``x̄ = Σ n_g x̄_g / n``,
    ``scatter = Σ_g S_g + Σ_g n_g (x̄_g − x̄)(x̄_g − x̄)ᵀ``. Empty groups drop out.
    """
    dim = parts.mean.shape[-1]
    n = jnp.sum(parts.n).astype(jnp.int32)  # int64 under x64 otherwise: the scan carry needs int32
    w = parts.n.astype(parts.mean.dtype)
    mean = jnp.sum(w[:, None] * parts.mean, axis=0) / jnp.maximum(n, 1).astype(parts.mean.dtype)
    delta = parts.mean - mean
    scatter = jnp.sum(parts.scatter, axis=0) + jnp.einsum("g,gi,gj->ij", w, delta, delta)
    return Stats(n=n, mean=mean, scatter=scatter, rank=union_rank(parts.rank, dim))


# ----------------------------------------------------------------------------- engines


def mixture_by_counts(sample, concat):
    """``sample_mixture`` for a model whose draws of n from each slot can be pooled:
    the group sizes are Multinomial(n, uniform over the valid slots) (each sample's
    model is drawn uniformly, DESIGN §1), each slot draws its group, ``concat`` pools them."""

    def sample_mixture(key, history, valid, n, lam):
        k_counts, k_draw = jax.random.split(key)
        slots = valid.shape[0]
        weights = valid.astype(jnp.float32)
        counts = jax.random.multinomial(k_counts, jnp.asarray(n, jnp.float32), weights / jnp.sum(weights))
        keys = jax.random.split(k_draw, slots)
        groups = jax.vmap(sample, in_axes=(0, 0, 0, None))(keys, history, counts.astype(jnp.int32), lam)
        return concat(*(jax.tree.map(lambda x, i=i: x[i], groups) for i in range(slots)))

    return sample_mixture


def _confine(data, first):
    """Fully synthetic loop: every later point lies in G¹'s support, so no rank exceeds G¹'s."""
    return data._replace(rank=jnp.minimum(data.rank, first.rank))


def diagnose_every(params, t, factor: str = "eigh", w2_every: int = 1, spectrum: tuple = ()) -> Diagnostics:
    """Generation ``t``'s :class:`Diagnostics`; the spectral ones only on t = 1, 1 + k, 1 + 2k, …
    (``k = w2_every``), NaN on the others."""
    moments = diagnose_moments(params, factor)
    if w2_every == 1:
        return add_spectrum(moments, params, factor, spectrum)
    # t is the scan's own counter, shared by all chains: under vmap this stays a
    # real branch, so skipped generations skip the eigen-solve.
    return jax.lax.cond(jnp.mod(t - 1, w2_every) == 0,
                        lambda: add_spectrum(moments, params, factor, spectrum), lambda: moments)


def _loop_model(*, init, fit, sample, sample_real, concat, empty, append, size, factor, w2_every, spectrum=(),
                mix=None, subsample=None, tilt=None) -> LoopModel:
    """The :class:`~madjax.base.LoopModel` of a Gaussian engine: ``fit`` returns ``(params, ())``
    (the moment estimator has nothing to report), diagnostics by :func:`diagnose_every`."""

    def fit_info(key, params, data):
        return fit(key, params, data), ()

    def diagnose(key, params, info, t):
        del key, info
        return diagnose_every(params, t, factor, w2_every, spectrum)

    return LoopModel(init=init, fit=fit_info, sample=sample, sample_real=sample_real,
                     sample_mixture=mixture_by_counts(sample, concat), concat=concat, empty=empty, append=append,
                     size=size, confine=_confine, diagnose=diagnose, subsample=subsample, mix=mix, tilt=tilt)


def gaussian_exact(dim: int, dtype="float32", factor: str = "eigh", w2_every: int = 1,
                   estimator: str = "unbiased", spectrum: tuple = ()) -> LoopModel:
    """The exact sufficient-statistic engine (DESIGN §2). ``Dataset`` = :class:`Stats`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> eng = gaussian_exact(3)
      >>> ref = eng.init(jax.random.key(0))
      >>> data = eng.sample(jax.random.key(1), ref, jnp.int32(50), 1.0)
      >>> g, info = eng.fit(jax.random.key(2), ref, data)
      >>> g.cov.shape
      (3, 3)
    """
    dtype = jnp.dtype(dtype)

    def init(key):
        del key
        return standard_normal_params(dim, dtype, spectrum)

    def fit(key, params, data) -> GaussianParams:
        del key, params  # the moment estimator is deterministic and needs no warm start
        if isinstance(data, Weighted):
            mean, cov, rank = weighted_moments([(p.n, p.mean, p.scatter, p.rank) for p in data[:2]], data.weight,
                                               estimator, dim)
            return _fit_weighted(mean, cov, rank, factor, estimator, spectrum)
        return fit_moments(data.n, data.mean, data.scatter, data.rank, factor, estimator, spectrum)

    def concat(*parts: Stats) -> Stats:
        return pool_stats(jax.tree.map(lambda *xs: jnp.stack(xs), *parts))

    def empty(generations: int) -> Stats:
        del generations
        return Stats(jnp.int32(0), jnp.zeros((dim,), dtype), jnp.zeros((dim, dim), dtype), jnp.int32(-1))

    def sample_real(key, n) -> Stats:
        return sample_reference_stats(key, n, dim, dtype, spectrum)

    return _loop_model(init=init, fit=fit, sample=sample_stats, sample_real=sample_real, concat=concat,
                       empty=empty, append=concat, size=lambda data: data.n, factor=factor, w2_every=w2_every,
                       spectrum=spectrum, mix=Weighted, tilt=tilt_params)


def _fit_weighted(mean, cov, rank, factor, estimator, spectrum) -> GaussianParams:
    if estimator == "known-cov":
        return standard_normal_params(mean.shape[-1], mean.dtype, spectrum)._replace(mean=mean)
    return params_from_moments(mean, cov, rank, factor)


def gaussian_sampled(dim: int, max_points: int, dtype="float32", factor: str = "eigh",
                     w2_every: int = 1, estimator: str = "unbiased", spectrum: tuple = ()) -> LoopModel:
    """The sample-based engine: draw the points, fit them by Eq. (1).

    Every draw fills a buffer of ``max_points`` rows (static) of which the
    first n are valid, so n stays traced. ``Dataset`` = :class:`Points`.
    """
    dtype = jnp.dtype(dtype)

    def init(key):
        del key
        return standard_normal_params(dim, dtype, spectrum)

    def moments(data: Points):
        w = data.mask.astype(dtype)
        n = jnp.sum(data.mask).astype(jnp.int32)
        mean = (w @ data.x) / jnp.maximum(n, 1).astype(dtype)
        centred = (data.x - mean) * w[:, None]  # two-pass: centre first
        return n, mean, centred.T @ centred, data.rank

    def sample(key, params: GaussianParams, n, lam) -> Points:
        n = jnp.asarray(n, jnp.int32)
        eps = jax.random.normal(key, (max_points, dim), dtype)
        x = params.mean + jnp.sqrt(jnp.asarray(lam, dtype)) * eps @ params.sqrt.T
        mask = jnp.arange(max_points) < n
        return Points(x=x, mask=mask, rank=jnp.minimum(n - 1, params.rank))

    def fit(key, params, data) -> GaussianParams:
        del key, params
        if isinstance(data, Weighted):
            mean, cov, rank = weighted_moments([moments(p) for p in data[:2]], data.weight, estimator, dim)
            return _fit_weighted(mean, cov, rank, factor, estimator, spectrum)
        return fit_moments(*moments(data), factor, estimator, spectrum)

    def subsample(key, data: Points, n) -> Points:
        mask = point_subsample(key, PointSet(data.x, data.mask), n).mask
        return Points(data.x, mask, jnp.minimum(jnp.sum(mask).astype(jnp.int32) - 1, data.rank))

    def concat(*parts: Points) -> Points:
        ranks = jnp.stack([p.rank for p in parts])
        return Points(
            x=jnp.concatenate([p.x for p in parts]),
            mask=jnp.concatenate([p.mask for p in parts]),
            rank=union_rank(ranks, dim),
        )

    def empty(generations: int) -> Points:
        # (T − 1) appends of max_points rows each, written at the count of valid rows.
        size = max(generations, 1) * max_points
        return Points(jnp.zeros((size, dim), dtype), jnp.zeros((size,), bool), jnp.int32(-1))

    def append(pool: Points, new: Points) -> Points:
        count = jnp.sum(pool.mask).astype(jnp.int32)
        x = jax.lax.dynamic_update_slice(pool.x, new.x, (count, jnp.int32(0)))
        n_new = jnp.sum(new.mask).astype(jnp.int32)
        mask = jnp.arange(pool.mask.shape[0]) < count + n_new
        return Points(x=x, mask=mask, rank=union_rank(jnp.stack([pool.rank, new.rank]), dim))

    def sample_real(key, n) -> Points:
        return sample(key, standard_normal_params(dim, dtype, spectrum), n, 1.0)

    return _loop_model(init=init, fit=fit, sample=sample, sample_real=sample_real, concat=concat, empty=empty,
                       append=append, size=lambda data: jnp.sum(data.mask).astype(jnp.int32), factor=factor,
                       w2_every=w2_every, spectrum=spectrum, mix=Weighted, subsample=subsample, tilt=tilt_params)





def _kahan_add(total: Array, err: Array, x: Array) -> tuple[Array, Array]:
    """``total + x`` with Kahan's compensation ``err``: the log-diagonal of a
    product of T factors stays exact to a few eps whatever T (a plain float32
    running sum drifts by ~sqrt(T)·eps·|total|). ``−inf`` terms (null columns)
    keep a zero compensation instead of NaN."""
    y = x - err
    new = total + y
    err = jnp.where(jnp.isfinite(new), (new - total) - y, 0.0)
    return new, err


def _normalised(prod: Array) -> tuple[Array, Array]:
    """``(prod / m, log m)`` with ``m = max |prod|`` (1 for a zero matrix)."""
    m = jnp.max(jnp.abs(prod))
    m = jnp.where(m > 0, m, 1.0)
    return prod / m, jnp.log(m)


def gaussian_factored(dim: int, dtype="float32", w2_every: int = 1, estimator: str = "unbiased",
                      spectrum: tuple = ()) -> LoopModel:
    """The exact engine in square-root form, for the fully synthetic loop (module docstring).

    ``Dataset`` = :class:`FactoredStats`, params = :class:`FactoredGaussian`.
    Sampling n points from ``N(μ, λ S Sᵀ)`` gives, exactly in law,
    ``x̄ = μ + sqrt(λ / n) S z`` and ``scatter = (sqrt(λ) S A)(sqrt(λ) S A)ᵀ``
    with A the Bartlett factor (df = n − 1): a product of lower-triangular
    matrices, so the square root of the scatter is ``sqrt(λ) S A`` itself and
    ``log diag`` adds ``log diag A + ½ log λ``. Fitting (Eq. 1) divides the
    scatter by ``n − 1``: ``S ← S / sqrt(n − 1)``. Nothing is factorised, and
    statistics cannot be pooled (``concat`` raises): the engine serves the
    fully synthetic loop with memory K = 1 and no accumulation, where each
    generation trains on one sample of the previous model.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> eng = gaussian_factored(3)
      >>> data = eng.sample_real(jax.random.key(0), jnp.int32(50))
      >>> g, _ = eng.fit(jax.random.key(1), None, data)
      >>> g.root.shape, bool(jnp.all(jnp.triu(g.root, 1) == 0))
      ((3, 3), True)
    """
    dtype = jnp.dtype(dtype)

    def init(key) -> FactoredGaussian:
        del key
        zeros = jnp.zeros((dim,), dtype)
        if not spectrum:
            return FactoredGaussian(zeros, jnp.eye(dim, dtype=dtype), jnp.zeros((), dtype), zeros, zeros,
                                    jnp.int32(dim))
        half_log = 0.5 * jnp.log(jnp.asarray(spectrum, dtype))  # S = diag(sqrt(s)) = exp(max half_log) · root
        top = jnp.max(half_log)
        return FactoredGaussian(zeros, jnp.diag(jnp.exp(half_log - top)), top, half_log, zeros, jnp.int32(dim))

    def sample(key, params: FactoredGaussian, n, lam) -> FactoredStats:
        n = jnp.asarray(n, jnp.int32)
        k_mean, k_scatter = jax.random.split(key)
        a = bartlett_factor(k_scatter, n - 1, dim, dtype)
        half_log_lam = 0.5 * jnp.log(jnp.asarray(lam, dtype))
        root, log_m = _normalised(params.root @ a)
        log_diag, err = _kahan_add(params.log_diag, params.log_diag_err,
                                   jnp.log(jnp.diagonal(a)) + half_log_lam)
        nf = jnp.maximum(n, 1).astype(dtype)
        step = jnp.exp(params.log_scale + half_log_lam) / jnp.sqrt(nf)
        z = jax.random.normal(k_mean, (dim,), dtype)
        mean = jnp.where(n > 0, params.mean + step * (params.root @ z), 0.0)
        return FactoredStats(n=n, mean=mean, root=root, log_scale=params.log_scale + half_log_lam + log_m,
                             log_diag=log_diag, log_diag_err=err, rank=jnp.minimum(n - 1, params.rank))

    def fit(key, params, data: FactoredStats) -> FactoredGaussian:
        del key, params  # Eq. (1) is deterministic
        half_log_df = 0.5 * jnp.log(covariance_denominator(data.n, estimator, dtype))
        log_diag, err = _kahan_add(data.log_diag, data.log_diag_err, -half_log_df)
        return FactoredGaussian(mean=data.mean, root=data.root, log_scale=data.log_scale - half_log_df,
                                log_diag=log_diag, log_diag_err=err, rank=data.rank)

    def sample_real(key, n) -> FactoredStats:
        return sample(key, init(key), n, 1.0)

    def concat(*parts):
        raise ValueError("factor: factored statistics cannot be pooled; use factor='eigh' or 'cholesky'")

    def empty(generations: int) -> FactoredStats:
        del generations  # a placeholder: the factored loop keeps no pool
        return FactoredStats(jnp.int32(0), *init(None)[:-1], jnp.int32(-1))

    return _loop_model(init=init, fit=fit, sample=sample, sample_real=sample_real, concat=concat, empty=empty,
                       append=concat, size=lambda data: data.n, factor="factored", w2_every=w2_every,
                       spectrum=spectrum)


# ----------------------------------------------------------------------------- diagnostics


class Diagnostics(NamedTuple):
    """Per-generation diagnostics of the fitted model ``G^t = N(μ_t, Σ_t)``.

    All ``()``; in a simulation each becomes ``(chains, T)``. Accuracies: module docstring.
    """

    w2: Array  # W2(G^t, P_r), P_r = N(0, I) or N(0, diag(spectrum))
    mean_sq_norm: Array  # ‖μ_t − μ₀‖², μ₀ = 0
    cov_trace: Array  # tr Σ_t
    cov_logdet: Array  # log det Σ_t, −inf where rank < d, NaN where not computable to 0.05 nats
    cov_rank: Array  # analytic rank of Σ_t
    underflow: Array  # bool: fewer numerically positive eigenvalues than the rank
    nonfinite: Array  # bool: μ_t or Σ_t holds NaN/inf
    logdet_lost: Array  # bool: log det Σ_t not computable to 0.05 nats in this precision (cov_logdet NaN)


LOGDET_ACCURACY = 0.05
"""Nats: ``cov_logdet`` is recorded where it is known at least this well, NaN elsewhere."""


def diagnose(params, factor: str = "eigh", spectrum: tuple = ()) -> Diagnostics:
    """Distances of the fitted model (not the λ-scaled sampler) to ``P_r = N(0, I_d)``
    (``N(0, diag(spectrum))`` with a spectrum).

    :func:`diagnose_moments` completed by :func:`add_spectrum`.

    Args:
      params: the fitted model (:class:`GaussianParams`, or
        :class:`FactoredGaussian` for ``factor="factored"``).
      factor: how ``params`` was fitted (static; see :func:`add_spectrum`).
    """
    return add_spectrum(diagnose_moments(params, factor), params, factor, spectrum)


def add_spectrum(moments: Diagnostics, params, factor: str = "eigh", spectrum: tuple = ()) -> Diagnostics:
    """``moments`` (from :func:`diagnose_moments`) with the diagnostics that need Σ's spectrum.

    ``W2² = ‖μ‖² + Σ_i (sqrt(e_i) − 1)²`` (the Bures formula with the identity),
    e_i the eigenvalues of Σ clipped at 0. Against ``P_r = N(0, Σ₀)``,
    ``Σ₀ = D² = diag(spectrum)``: ``W2² = ‖μ‖² + tr Σ + tr Σ₀ − 2 Σ_i sqrt(c_i)``
    with c_i the eigenvalues of ``D Σ D`` (those of ``Σ₀^{1/2} Σ Σ₀^{1/2}``), one
    more eigenvalue solve, fed by the first (LAPACK calls stay ordered). ``log det Σ = Σ_i log e_i`` where the
    analytic rank is d and ``−inf`` otherwise. ``underflow`` adds eigenvalues
    lost below the working precision.

    Each eigenvalue is known to ``δ = d·eps·max e`` (plus the Cholesky jitter
    ``100·d·eps·max diag Σ`` where one was added; a diagonal fallback is not
    Σ's spectrum at all), so ``log e_i`` to ``δ / e_i``: where
    ``Σ_i δ / e_i`` exceeds :data:`LOGDET_ACCURACY`, ``cov_logdet`` is NaN and
    ``logdet_lost`` is set.

    Args:
      moments: the moment diagnostics of ``params``.
      params: the fitted model.
      factor: how ``params`` was fitted (static): ``"eigh"`` fits carry their
        eigenvalues, ``"cholesky"`` fits have them computed here
        (:func:`symmetric_eigvals`), ``"factored"`` fits have those of
        ``root rootᵀ`` computed here and an exact log det (:func:`gaussian_factored`).
    """
    if factor == "factored":
        return _add_factored_spectrum(moments, params, spectrum)
    dim = params.mean.shape[-1]
    dtype = params.mean.dtype
    if factor == "eigh":
        e = params.eigvals
    else:
        e = _zero_null_space(symmetric_eigvals(params.cov, params.jitter), params.rank)
    e = jnp.maximum(e, 0.0)
    if spectrum:
        w2 = _w2_to_reference(moments, params.cov, e, spectrum)
    else:
        w2 = jnp.sqrt(moments.mean_sq_norm + jnp.sum((jnp.sqrt(e) - 1.0) ** 2))
    eps, tiny = jnp.finfo(dtype).eps, jnp.finfo(dtype).tiny
    e_max = jnp.max(e)
    # eigh resolves eigenvalues to about d·eps·max(e): below that a value is zero.
    numeric_rank = jnp.sum(e > jnp.maximum(dim * eps * e_max, tiny))
    full = params.rank >= dim
    delta = dim * eps * e_max * (1.0 + _JITTER * (params.jitter >= 1))
    log_error = jnp.sum(delta / jnp.maximum(e, tiny))
    lost = full & ((log_error > LOGDET_ACCURACY) | (params.jitter >= 2))
    logdet = jnp.where(full, jnp.sum(jnp.log(jnp.maximum(e, tiny))), -jnp.inf)
    logdet = jnp.where(lost, jnp.nan, logdet)
    return moments._replace(w2=w2, cov_logdet=logdet.astype(dtype), logdet_lost=lost,
                            underflow=moments.underflow | (numeric_rank < params.rank))


def _w2_to_reference(moments: Diagnostics, cov: Array, e: Array, spectrum: tuple) -> Array:
    """``W2(N(μ, Σ), N(0, diag(spectrum)))`` (:func:`add_spectrum`); ``e`` (Σ's eigenvalues) orders the
    LAPACK call after the one that produced it, and propagates its NaN."""
    s = jnp.asarray(spectrum, cov.dtype)
    d_half = jnp.sqrt(s)
    cross = d_half[:, None] * cov * d_half[None, :]
    cross = jnp.where(jnp.isnan(jnp.sum(e)), jnp.nan, cross)
    c = jnp.maximum(symmetric_eigvals(cross, jnp.int32(0)), 0.0)
    w2_sq = moments.mean_sq_norm + moments.cov_trace + jnp.sum(s) - 2.0 * jnp.sum(jnp.sqrt(c))
    return jnp.sqrt(jnp.maximum(w2_sq, 0.0))


def _add_factored_spectrum(moments: Diagnostics, params: FactoredGaussian, spectrum: tuple = ()) -> Diagnostics:
    """W2 from the eigenvalues of ``root rootᵀ`` (scaled by ``exp(2 log_scale)``); log det exact
    from the summed log-diagonal.

    The eigenvalues come from the tridiagonal reduction and bisection of
    :func:`symmetric_eigvals` (one LAPACK call per generation; an SVD of the
    triangle would be as accurate for W2 but measured ~6× slower at d = 100 on
    a CPU). ``root`` has entries ≤ 1, so ``root rootᵀ`` neither overflows nor
    underflows as a whole.
    """
    dim = params.mean.shape[-1]
    e = symmetric_eigvals(params.root @ params.root.T, jnp.int32(0))
    e = jnp.maximum(_zero_null_space(e, params.rank), 0.0) * jnp.exp(2.0 * params.log_scale)
    if spectrum:
        w2 = _w2_to_reference(moments, params.root @ params.root.T * jnp.exp(2.0 * params.log_scale), e, spectrum)
    else:
        w2 = jnp.sqrt(moments.mean_sq_norm + jnp.sum((jnp.sqrt(e) - 1.0) ** 2))
    logdet = jnp.where(params.rank >= dim, 2.0 * jnp.sum(params.log_diag), -jnp.inf)
    return moments._replace(w2=w2, cov_logdet=logdet.astype(params.mean.dtype))


def diagnose_moments(params, factor: str = "eigh") -> Diagnostics:
    """The diagnostics that need no spectrum; ``w2`` and ``cov_logdet`` are NaN.

    What a loop records on the generations it skips with ``w2_every > 1``;
    ``underflow`` then reports only Cholesky jitter (never anything for
    ``"factored"``, whose state loses nothing).
    """
    dtype = params.mean.dtype
    nan = jnp.asarray(jnp.nan, dtype)
    if factor == "factored":
        finite = (jnp.all(jnp.isfinite(params.mean)) & jnp.all(jnp.isfinite(params.root))
                  & jnp.isfinite(params.log_scale))
        # tr S Sᵀ = exp(2 log_scale)·‖root‖², summed in logs so that it underflows only in the result
        trace = jnp.exp(2.0 * params.log_scale + jnp.log(jnp.sum(params.root**2)))
        underflow = jnp.asarray(False)
    else:
        finite = jnp.all(jnp.isfinite(params.mean)) & jnp.all(jnp.isfinite(params.cov))
        trace = jnp.trace(params.cov)
        underflow = params.jitter > 0
    return Diagnostics(
        w2=nan, mean_sq_norm=jnp.sum(params.mean**2), cov_trace=trace.astype(dtype), cov_logdet=nan,
        cov_rank=params.rank, underflow=underflow, nonfinite=~finite, logdet_lost=jnp.asarray(False),
    )


# ----------------------------------------------------------------------------- the model spec


def resolve_reference(reference, dim: int) -> tuple:
    """The spectrum (ascending eigenvalues of Σ₀) of a user's reference ``P_r = N(μ₀, Σ₀)``; ``()`` for N(0, I).

    ``reference`` is ``"identity"``; ``"power:ALPHA"`` (eigenvalues ``k^(−α)``,
    k = 1 … d, a power-law spectrum); a path to a ``.npy`` or text file holding
    the ``(d,)`` eigenvalues or the ``(d, d)`` covariance, or a ``.npz`` with
    ``cov`` (and ``mean``, which no diagnostic depends on: :class:`GaussianSpec`);
    or such an array. Raises :class:`ParameterError` (``reference``) on anything else.
    """
    if reference is None or (isinstance(reference, str) and reference == "identity"):
        return ()
    if isinstance(reference, str) and reference.startswith("power:"):
        try:
            alpha = float(reference[len("power:"):])
        except ValueError:
            raise ParameterError("reference", f"power:ALPHA needs a number, got {reference!r}") from None
        if not np.isfinite(alpha) or not 0 <= alpha <= 8:
            raise ParameterError("reference", f"power:ALPHA needs 0 <= ALPHA <= 8, got {alpha:g}")
        values = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
    else:
        values = _read_reference(reference) if isinstance(reference, (str, bytes)) or hasattr(reference, "__fspath__") \
            else np.asarray(reference, np.float64)
        if values.shape == (dim, dim):
            if not np.allclose(values, values.T, rtol=1e-10, atol=1e-12 * np.max(np.abs(values))):
                raise ParameterError("reference", "the covariance is not symmetric")
            values = np.linalg.eigvalsh(values)
        elif values.shape != (dim,):
            raise ParameterError("reference", f"needs {dim} eigenvalues or a {dim}x{dim} covariance, "
                                              f"got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ParameterError("reference", "the covariance must be positive definite (eigenvalues > 0)")
    values = np.sort(values)
    return () if np.all(values == 1.0) else tuple(float(v) for v in values)


def _read_reference(path) -> np.ndarray:
    import os

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ParameterError("reference", f"{path}: no such file (identity, power:ALPHA or a .npy/.npz/.txt file)")
    try:
        if path.endswith(".npz"):
            with np.load(path) as f:
                if "cov" not in f:
                    raise ParameterError("reference", f"{path}: a .npz reference needs an array 'cov'")
                return np.asarray(f["cov"], np.float64)
        if path.endswith(".npy"):
            return np.asarray(np.load(path), np.float64)
        return np.atleast_1d(np.loadtxt(path, dtype=np.float64))
    except ParameterError:
        raise
    except Exception as err:  # unreadable: one line naming the option
        raise ParameterError("reference", f"{path}: cannot be read ({type(err).__name__})") from None

ENGINES = ("exact", "sampled")
FACTORED_ONLY = ("factored needs the fully-synthetic loop with memory 1, no accumulate and the exact engine "
                 "(other loops pool real and synthetic data); use eigh, cholesky or auto")


@dataclasses.dataclass(frozen=True)
class GaussianSpec:
    """The Gaussian model of Eq. (1) on the target ``P_r = N(0, I_d)`` (static, hashable).

    Attributes:
      dim: dimension d.
      dtype: ``"float32"`` or ``"float64"``.
      engine: ``"exact"`` (sufficient statistics, :func:`gaussian_exact`) or
        ``"sampled"`` (points, :func:`gaussian_sampled`).
      factor: ``"eigh"`` (always valid), ``"cholesky"`` (valid when every fit
        has full rank by construction) or ``"factored"`` (the square root
        carried as a product of triangles, exact log det; the fully synthetic
        loop with K = 1, no accumulation, exact engine), see
        :func:`choose_factor` and the module docstring.
      max_points: rows per draw of the sampled engine (ignored by exact).
      w2_every: compute the spectral diagnostics (``w2``, ``cov_logdet``,
        ``underflow`` from the spectrum) only on generations 1, 1 + k, 1 + 2k, …
        and record NaN on the others. With ``factor="cholesky"`` nothing else
        needs the spectrum, so the skipped generations cost a Cholesky instead
        of an eigen-solve (benchmarks/README.md).
      estimator: ``"unbiased"`` (Eq. 1), ``"mle"`` or ``"known-cov"`` (:data:`ESTIMATORS`).
      spectrum: the reference ``P_r = N(0, diag(spectrum))``, ascending (empty: N(0, I)).
        A user's ``N(μ₀, Σ₀)`` runs as ``N(0, diag(eig Σ₀))``: every diagnostic
        (W2 to P_r, ‖μ − μ₀‖², tr Σ, log det Σ, rank) and every operator (the
        tilt's reward is centred at μ₀) is invariant under the rigid motion
        ``x ↦ Vᵀ(x − μ₀)`` that maps one onto the other, and so is the loop's law.
    """

    dim: int
    dtype: str = "float32"
    engine: str = "exact"
    factor: str = "eigh"
    max_points: int = 0
    w2_every: int = 1
    estimator: str = "unbiased"
    spectrum: tuple = ()

    name = "gaussian"

    def __post_init__(self):
        check_int("dim", self.dim, minimum=1)
        check_choice("engine", self.engine, ENGINES)
        check_choice("factor", self.factor, FACTORS)
        check_int("w2_every", self.w2_every, minimum=1)
        check_choice("estimator", self.estimator, ESTIMATORS)
        if self.spectrum:
            values = np.asarray(self.spectrum, np.float64)
            if values.shape != (self.dim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise ParameterError("reference", f"needs {self.dim} finite positive eigenvalues")
            if np.any(np.diff(values) < 0):
                raise ParameterError("reference", "the spectrum must be ascending")
        if self.engine == "sampled":
            check_int("max_points", self.max_points, minimum=2)

    @property
    def points(self) -> int:
        """Rows per draw held in memory (0: the exact engine draws none)."""
        return self.max_points if self.engine == "sampled" else 0

    def check_loop(self, loop) -> None:
        if self.factor == "factored" and not factored_loop(loop.kind, memory=loop.memory, accumulate=loop.accumulate,
                                                           engine=self.engine, estimator=self.estimator,
                                                           plain=loop.plain):
            raise ParameterError("factor", FACTORED_ONLY)
        if loop.subsample and self.engine == "exact":
            raise ParameterError("engine", "accumulate-subsample needs --engine sampled: a subsample's statistics "
                                           "depend on the points, not only on the pool's sufficient statistics")

    def build(self) -> LoopModel:
        options = dict(w2_every=self.w2_every, estimator=self.estimator, spectrum=self.spectrum)
        if self.factor == "factored":
            return gaussian_factored(self.dim, self.dtype, **options)
        if self.engine == "exact":
            return gaussian_exact(self.dim, self.dtype, self.factor, **options)
        return gaussian_sampled(self.dim, self.max_points, self.dtype, self.factor, **options)


def full_rank(kind: str, dim: int, *, n_ini, n_real, n_syn) -> bool:
    """Whether every fitted Σ of the loop has rank d by construction, for all cells given.

    A set of n points from a rank-d Gaussian spans d dimensions iff n ≥ d + 1;
    a union of groups spans at least as much as its largest. By induction from
    G¹ (fitted to n_ini points, or to D_r in synthetic augmentation), every
    model has rank d iff each training set holds ≥ d + 1 points: the smallest
    is generation 2's (accumulation and memory only add points or groups).
    Sizes may be scalars or arrays (all cells of a grid).
    """
    n_ini, n_real, n_syn = (np.asarray(v, np.int64) for v in (n_ini, n_real, n_syn))
    first = n_real if kind == "synthetic-augmentation" else n_ini
    later = n_syn if kind == "fully-synthetic" else n_real + n_syn
    return bool(np.all(first >= dim + 1) and np.all(later >= dim + 1))


def factored_loop(kind: str, *, memory: int = 1, accumulate: bool = False, engine: str = "exact",
                  plain: bool = True, estimator: str = "unbiased") -> bool:
    """Whether each generation trains on one sample of one model only, so Σ_t need never be formed.

    That is the fully synthetic loop with K = 1 and no accumulation on the
    exact engine: ``L_t = sqrt(λ / (n_s − 1)) L_{t−1} A_t``
    (:func:`gaussian_factored`). Every other loop pools groups of points,
    whose scatter is a sum, not a product; a tilted sampler's root is no longer
    triangular (``plain`` False: an operator other than a size schedule), and the
    known-covariance model has no Σ to carry.
    """
    return (kind == "fully-synthetic" and memory == 1 and not accumulate and engine == "exact" and plain
            and estimator != "known-cov")


def choose_factor(kind: str, dim: int, *, n_ini, n_real, n_syn, memory: int = 1, accumulate: bool = False,
                  engine: str = "exact", plain: bool = True, estimator: str = "unbiased", weighted: bool = False,
                  subsample: bool = False) -> str:
    """``"factored"`` where :func:`factored_loop` holds; else ``"cholesky"`` where
    :func:`full_rank` holds for every cell (not with weighted mixing, whose weight 0 or 1
    keeps one part only, nor accumulate-subsample, whose subsample may be small); else ``"eigh"``."""
    if factored_loop(kind, memory=memory, accumulate=accumulate, engine=engine, plain=plain, estimator=estimator):
        return "factored"
    if weighted or subsample:
        return "eigh"
    return "cholesky" if full_rank(kind, dim, n_ini=n_ini, n_real=n_real, n_syn=n_syn) else "eigh"
