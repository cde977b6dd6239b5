r"""The GMM as a :class:`~madjax.base.LoopModel`: spec, sampler, data algebra and diagnostics.

A :class:`GMMSpec` is static and hashable; :meth:`GMMSpec.build` returns the
record of pure functions the generation step and the ``scan × vmap`` executor
of :mod:`madjax.loops` call (DESIGN §6). Its ``Dataset`` is a masked point
buffer (:class:`~madjax.points.PointSet`): every draw, real or synthetic,
fills ``draw_rows`` rows (static) of which the first n (traced) are valid,
so one compilation serves every size.

Sampling with bias λ draws a component from π and then
:math:`\mathcal N(\mu_k, \lambda\Sigma_k)` -- each component's covariance
scaled by λ (DESIGN §1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from madjax import points
from madjax.base import Array, LoopModel
from madjax.gmm.distance import SOLVERS, grid_target_params, mixture_w2
from madjax.gmm.em import EMInfo, GMMParams, fit_em
from madjax.points import PointSet
from madjax.validation import ParameterError, check_choice, check_float, check_int

__all__ = ["GMMSpec", "sample_gmm", "gmm_loop_model"]

TARGET = "grid"


def _categorical(key: Array, weights: Array, n: int) -> Array:
    """``n`` draws from the categorical ``weights`` ``(K,)`` by inverse CDF (no normalisation needed)."""
    cdf = jnp.cumsum(weights)
    u = jax.random.uniform(key, (n,), weights.dtype) * cdf[-1]
    return jnp.clip(jnp.sum(cdf <= u[:, None], axis=1), 0, weights.shape[0] - 1)


def _cholesky(covs: Array) -> Array:
    """Lower Cholesky factors of ``(K, d, d)`` SPD matrices; written out in 2-D (no LAPACK call)."""
    if covs.shape[-1] != 2:
        return jnp.linalg.cholesky(covs)
    a, b, c = covs[:, 0, 0], covs[:, 1, 0], covs[:, 1, 1]
    l11 = jnp.sqrt(a)
    l21 = b / l11
    l22 = jnp.sqrt(jnp.maximum(c - l21 * l21, 0.0))
    zero = jnp.zeros_like(a)
    return jnp.stack([jnp.stack([l11, zero], -1), jnp.stack([l21, l22], -1)], -2)


def sample_gmm(key: Array, params: GMMParams, rows: int, lam) -> Array:
    r"""``rows`` points (static) from :math:`\sum_k \pi_k \mathcal N(\mu_k, \lambda \Sigma_k)`, shape ``(rows, d)``.

    ``lam`` may be traced. This is the model's fixed-size ``draw``: the
    loop's ``sample`` masks its first n rows, ``sample_mixture`` and the
    diagnostics call it directly.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [5.0, 5.0]]), jnp.stack([jnp.eye(2)] * 2))
      >>> sample_gmm(jax.random.key(0), p, 4, 0.5).shape
      (4, 2)
    """
    k_comp, k_noise = jax.random.split(key)
    comp = _categorical(k_comp, params.weights, rows)
    chol = _cholesky(params.covs)
    eps = jax.random.normal(k_noise, (rows, params.means.shape[-1]), params.means.dtype)
    scale = jnp.sqrt(jnp.asarray(lam, params.means.dtype))
    return params.means[comp] + scale * jnp.einsum("nij,nj->ni", chol[comp], eps)


@dataclasses.dataclass(frozen=True)
class GMMSpec(points.PointModelSpec):
    """The K-component full-covariance GMM on the 25-mode grid (static, hashable; DESIGN §4).

    Attributes:
      draw_rows: C, the capacity of every draw (real and synthetic); the
        executor passes a traced n ≤ C. Training sets are concatenations of
        draws (fresh: 2C rows; accumulation: a pool of ``generations · C``).
      dim: d; the grid target is 2-D.
      dtype: ``"float32"`` or ``"float64"`` (x64 mode).
      target: the real distribution P_r; only ``"grid"``.
      n_components: K (25 for the grid).
      max_iter: EM iteration cap.
      tol: EM stops when the mean log-likelihood per point improves by less.
      reg_covar: covariance floor added to every Σ_k (× I).
      n_eval: model draws (and fresh target draws) behind the point diagnostics.
      transport: the solver of MW2's small transport problem, ``"pot"`` (a host
        callback to POT's network simplex) or ``"jax"`` (in the graph);
        :mod:`madjax.gmm.distance`.
    """

    draw_rows: int
    dim: int = 2
    dtype: str = "float32"
    target: str = TARGET
    n_components: int = 25
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6
    n_eval: int = 1000
    transport: str = "pot"

    name = "gmm"

    def __post_init__(self):
        if self.target != TARGET:
            raise ParameterError("target", f"the GMM supports only the {TARGET!r} target (25 modes, "
                                           f"sigma = {points.SIGMA}), got {self.target!r}")
        if check_int("dim", self.dim) != 2:
            raise ParameterError("dim", f"the grid target is 2-D, got {self.dim}")
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_int("n_components", self.n_components, minimum=1)
        check_int("draw_rows", self.draw_rows, minimum=self.n_components)
        check_int("max_iter", self.max_iter, minimum=1)
        for field in ("tol", "reg_covar"):
            if check_float(field, getattr(self, field)) <= 0:
                raise ParameterError(field, f"must be > 0, got {getattr(self, field)!r}")
        # point_diagnostics: > k = 5 points for recall, and > 25 so that some mode can hold 2
        check_int("n_eval", self.n_eval, minimum=26)
        check_choice("transport", self.transport, SOLVERS)

    def build(self) -> LoopModel:
        return gmm_loop_model(self)


def gmm_loop_model(spec: GMMSpec) -> LoopModel:
    """The :class:`~madjax.base.LoopModel` of a :class:`GMMSpec`.

    * ``init(key)``: equal weights, zero means, identity covariances (in ``dtype``).
    * ``fit(key, params, data) -> (params, EMInfo)``: EM from scratch on the
      valid rows (``params`` only fixes the structure; :func:`~madjax.gmm.fit_em`).
    * ``sample(key, params, n, lam)``: a :class:`~madjax.points.PointSet` of
      ``draw_rows`` rows, the first n valid.
    * ``sample_real(key, n)``: n grid points in ``draw_rows`` rows.
    * ``sample_mixture``: :func:`~madjax.points.mixture_rows` of the draw.
    * ``concat`` / ``empty(generations)`` / ``append`` / ``size``: the point
      algebra of :mod:`madjax.points`; ``confine`` is the identity.
    * ``diagnose(key, params, info, t)``: a dict of ``()`` arrays --
      ``w2`` (MW2 to the grid target, :func:`~madjax.gmm.mixture_w2`: the
      distance n_e is computed from), the point diagnostics of ``n_eval``
      draws at λ = 1 (``total_variance``, ``recall``, ``precision``,
      ``modal_variance``, ``modes_covered``), ``em_iterations`` (int32),
      ``em_converged`` (bool) and ``nonfinite`` (bool: non-finite parameters
      or diagnostics).
    """
    dtype = jnp.dtype(spec.dtype)
    rows, dim, k = spec.draw_rows, spec.dim, spec.n_components

    def init(key: Array) -> GMMParams:
        del key
        return GMMParams(jnp.full((k,), 1.0 / k, dtype), jnp.zeros((k, dim), dtype),
                         jnp.broadcast_to(jnp.eye(dim, dtype=dtype), (k, dim, dim)))

    def fit(key: Array, params: GMMParams, data: PointSet) -> tuple[GMMParams, EMInfo]:
        del params  # every generation is fitted from scratch (the paper's protocol)
        return fit_em(key, data, spec)

    def sample(key: Array, params: GMMParams, n, lam) -> PointSet:
        return PointSet(sample_gmm(key, params, rows, lam), jnp.arange(rows) < n)

    def sample_real(key: Array, n) -> PointSet:
        return points.sample_target(key, spec.target, n, rows, dim, dtype)

    def empty(generations: int) -> PointSet:
        return points.empty(max(generations, 1) * rows, dim, dtype)

    def diagnose(key: Array, params: GMMParams, info: EMInfo, t) -> dict:
        del t
        k_eval, k_target = jax.random.split(key)
        x = sample_gmm(k_eval, params, spec.n_eval, jnp.asarray(1.0, dtype))
        out = {"w2": mixture_w2(params, grid_target_params(dtype), spec.transport)}
        out.update(points.point_diagnostics(k_target, x, spec.target))
        out["nonfinite"] = ~(points.finite(params) & points.finite(out))
        out["em_iterations"] = info.iterations.astype(jnp.int32)
        out["em_converged"] = info.converged
        return out

    return LoopModel(init=init, fit=fit, sample=sample, sample_real=sample_real,
                     sample_mixture=points.mixture_rows(sample_gmm, rows), concat=points.concat, empty=empty,
                     append=points.append, size=points.size, confine=lambda data, first: data, diagnose=diagnose,
                     subsample=points.subsample)
