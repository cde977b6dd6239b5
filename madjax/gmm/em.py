r"""EM for a full-covariance Gaussian mixture on a masked point buffer (DESIGN §4).

The training set is a :class:`~madjax.points.PointSet`: ``C`` rows (static)
of which those where ``mask`` is True are the data, ``n = Σ mask`` (traced).
Every step below weights row i by its mask :math:`w_i \in \{0, 1\}`; invalid
rows are replaced by zeros on entry, so the fit does not depend on what they
hold (bitwise), and with ``mask`` = the first n rows it is the fit of those n
points.

Seeding
    Greedy k-means++ (Arthur & Vassilvitskii, 2007; ``2 + ⌊ln K⌋`` candidates
    per centre as in scikit-learn) over the valid rows: the first centre is
    uniform among them, each next one the best (lowest potential
    :math:`\sum_i w_i \min_c |x_i - c|^2`) of the candidates drawn with
    probability :math:`\propto w_i \min_c |x_i - c|^2` (uniform over the
    valid rows when every such weight is 0). An invalid row has probability 0
    and is never picked. One hard-assignment M-step (each valid row to its
    nearest centre) gives the starting mixture.

EM
    Until the mean log-likelihood per valid point improves by less than
    ``tol`` or ``max_iter`` iterations have run (``lax.while_loop``):

    .. math::

        r_{ik} = w_i\,\frac{\pi_k \mathcal N(x_i \mid \mu_k, \Sigma_k)}
                           {\sum_j \pi_j \mathcal N(x_i \mid \mu_j, \Sigma_j)},\qquad
        N_k = \sum_i r_{ik},\quad \pi_k = N_k / n,\quad
        \mu_k = \frac{1}{N_k}\sum_i r_{ik} x_i,

    .. math::

        \Sigma_k = \frac{1}{N_k}\sum_i r_{ik}(x_i - \mu_k)(x_i - \mu_k)^\top
                   + \text{reg\_covar}\cdot I,

    two-pass (centred on μ_k first) with :math:`N_k` floored at ``10 eps`` as
    in scikit-learn, so an empty component keeps a finite mean and the
    covariance floor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from madjax.base import Array
from madjax.points import PointSet

if TYPE_CHECKING:  # pragma: no cover
    from madjax.gmm.model import GMMSpec

__all__ = ["GMMParams", "EMInfo", "kmeans_plusplus", "fit_em", "log_gauss"]


class GMMParams(NamedTuple):
    """A Gaussian mixture. Shapes for K components in d dimensions."""

    weights: Array  # (K,)      mixing proportions, sum 1
    means: Array  # (K, d)
    covs: Array  # (K, d, d)  each symmetric positive definite (≥ reg_covar · I)


class EMInfo(NamedTuple):
    """Diagnostics of one EM fit (scalars; stacked by the loop executor)."""

    iterations: Array  # ()  int32, EM iterations run (after the hard-assignment start)
    converged: Array  # ()  bool: stopped on the tolerance, not the cap
    log_likelihood: Array  # ()  final mean log-likelihood per valid point


def log_gauss(x: Array, params: GMMParams) -> Array:
    """log N(x_i | μ_k, Σ_k), shape ``(n, K)``.

    In 2-D the 2 × 2 inverse and determinant are written out (elementwise
    work on ``(K, n)`` arrays, much faster on CPU than batched triangular
    solves, and no LAPACK call); otherwise Cholesky factors are used.
    """
    n, d = x.shape
    if d == 2:
        a, b, c = params.covs[:, 0, 0], params.covs[:, 0, 1], params.covs[:, 1, 1]
        det = a * c - b * b  # > 0: Σ_k ⪰ reg_covar · I
        dx = x[None, :, 0] - params.means[:, 0, None]  # (K, n)
        dy = x[None, :, 1] - params.means[:, 1, None]
        maha = (c[:, None] * dx * dx - 2.0 * b[:, None] * dx * dy + a[:, None] * dy * dy) / det[:, None]
        logdet = jnp.log(det)
    else:
        chol = jnp.linalg.cholesky(params.covs)  # (K, d, d)
        diff = x[None, :, :] - params.means[:, None, :]  # (K, n, d)
        z = jax.scipy.linalg.solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)  # (K, d, n)
        maha = jnp.sum(z * z, axis=1)  # (K, n)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)  # (K,)
    return (-0.5 * (d * math.log(2 * math.pi) + logdet[:, None] + maha)).T


def _count(mask: Array, dtype) -> Array:
    """n = Σ mask as a float ≥ 1 (an empty buffer gives finite garbage, never NaN)."""
    return jnp.maximum(jnp.sum(mask), 1).astype(dtype)


def _e_step(x: Array, mask: Array, params: GMMParams) -> tuple[Array, Array]:
    """Responsibilities ``(C, K)`` (zero on invalid rows) and the mean log-likelihood per valid point."""
    tiny = jnp.finfo(x.dtype).tiny
    logp = log_gauss(x, params) + jnp.log(jnp.maximum(params.weights, tiny))[None, :]
    lse = jax.scipy.special.logsumexp(logp, axis=1, keepdims=True)
    resp = jnp.where(mask[:, None], jnp.exp(logp - lse), 0.0)
    return resp, jnp.sum(jnp.where(mask, lse[:, 0], 0.0)) / _count(mask, x.dtype)


def _m_step(x: Array, mask: Array, resp: Array, reg_covar: float) -> GMMParams:
    """Weighted means and covariances (two-pass: centre on μ_k first), floor ``reg_covar · I``.

    ``resp`` is zero on invalid rows, so they drop out of every sum.
    """
    n, d = x.shape
    nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(x.dtype).eps  # (K,), as scikit-learn
    means = (resp.T @ x) / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]  # (K, C, d)
    rT = resp.T[:, :, None]  # (K, C, 1)
    covs = jnp.stack([jnp.sum(rT * diff * diff[:, :, i, None], axis=1) for i in range(d)], axis=1)
    covs = covs / nk[:, None, None]
    covs = 0.5 * (covs + jnp.swapaxes(covs, 1, 2)) + reg_covar * jnp.eye(d, dtype=x.dtype)
    return GMMParams(nk / _count(mask, x.dtype), means, covs)


def _sq_to(x: Array, c: Array) -> Array:
    """|x_i − c|² for all i; ``x`` (C, d), ``c`` (d,)."""
    diff = x - c
    return jnp.sum(diff * diff, axis=1)


def _rank(cdf: Array, v: Array) -> Array:
    """``searchsorted(cdf, v, side="right")`` for a non-decreasing ``cdf`` ``(C,)`` and any ``v``:
    the number of entries ≤ v (comparisons only: cheaper to compile than a search for these sizes)."""
    return jnp.sum(cdf <= jnp.expand_dims(v, -1), axis=-1).astype(jnp.int32)


def _valid_row(mask: Array, j: Array) -> Array:
    """Index of the j-th valid row (0-based; j < Σ mask)."""
    return _rank(jnp.cumsum(mask.astype(jnp.int32)), j)


def kmeans_plusplus(key: Array, points: PointSet, n_clusters: int) -> Array:
    r"""Greedy k-means++ seeding over the valid rows; returns ``(n_clusters, d)`` centres among them.

    The first centre is uniform among the valid rows; each next one is the
    best (lowest potential :math:`\sum_i w_i \min_c |x_i - c|^2`) of
    ``2 + ⌊ln K⌋`` candidates drawn with probability ∝ the current squared
    distance of the valid rows (uniform over them if all are 0). Invalid rows
    have probability 0. ``n_clusters`` is static; ``Σ mask ≥ 1`` is assumed.
    """
    x = jnp.where(points.mask[:, None], points.x, 0.0)
    mask = points.mask
    size, d = x.shape
    count = jnp.sum(mask).astype(jnp.int32)
    trials = 2 + int(math.log(n_clusters))
    k_first, k_rest = jax.random.split(key)
    first = x[_valid_row(mask, jax.random.randint(k_first, (), 0, jnp.maximum(count, 1)))]
    d2 = jnp.where(mask, _sq_to(x, first), 0.0)
    centres = jnp.zeros((n_clusters, d), x.dtype).at[0].set(first)

    def body(i, carry):
        centres, d2 = carry
        # inverse-CDF draws ∝ d2 (uniform over valid rows when every d2 is 0): `trials` uniforms per step.
        # Invalid rows add 0 to the CDF, and side="right" never lands on a flat step.
        cdf = jnp.cumsum(d2)
        u = jax.random.uniform(jax.random.fold_in(k_rest, i), (trials,), x.dtype)
        by_d2 = _rank(cdf, u * cdf[-1])
        uniform = _valid_row(mask, jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1))
        cand = jnp.clip(jnp.where(cdf[-1] > 0, by_d2, uniform), 0, size - 1)
        cand_d2 = jnp.minimum(d2[None, :], jax.vmap(lambda c: _sq_to(x, x[c]))(cand))  # (trials, C)
        cand_d2 = jnp.where(mask[None, :], cand_d2, 0.0)
        best = jnp.argmin(jnp.sum(cand_d2, axis=1))
        return centres.at[i].set(x[cand[best]]), cand_d2[best]

    centres, _ = lax.fori_loop(1, n_clusters, body, (centres, d2))
    return centres


def fit_em(key: Array, points: PointSet, spec: "GMMSpec") -> tuple[GMMParams, EMInfo]:
    """Fit a K-component full-covariance mixture to the valid rows of ``points`` by EM (module docstring).

    Args:
      key: PRNG key of the k-means++ seeding.
      points: :class:`~madjax.points.PointSet` with ``x`` ``(C, d)`` and
        ``mask`` ``(C,)``; n = Σ mask (traced, ≥ 1; meaningful for n ≥ K).
      spec: static settings with ``n_components``, ``max_iter``, ``tol`` and
        ``reg_covar`` (a :class:`~madjax.gmm.GMMSpec`).

    Returns:
      ``(params, info)``: :class:`GMMParams` in ``x``'s dtype and an
      :class:`EMInfo`. Pure and jittable; C and K are static, n traced.
    """
    mask = points.mask
    x = jnp.where(mask[:, None], points.x, 0.0)  # invalid rows never reach a sum, not even as 0 · inf
    points = PointSet(x, mask)
    centres = kmeans_plusplus(key, points, spec.n_components)
    nearest = jnp.argmin(jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1), axis=1)
    resp0 = jnp.where(mask[:, None], jax.nn.one_hot(nearest, spec.n_components, dtype=x.dtype), 0.0)
    params0 = _m_step(x, mask, resp0, spec.reg_covar)

    def cond(state):
        _, it, delta, _ = state
        return (it < spec.max_iter) & (delta >= spec.tol)

    def body(state):
        params, it, _, ll_old = state
        resp, ll = _e_step(x, mask, params)
        return _m_step(x, mask, resp, spec.reg_covar), it + 1, jnp.abs(ll - ll_old), ll

    inf = jnp.array(jnp.inf, x.dtype)
    params, it, delta, ll = lax.while_loop(cond, body, (params0, jnp.array(0, jnp.int32), inf, -inf))
    return params, EMInfo(it, delta < spec.tol, ll)
