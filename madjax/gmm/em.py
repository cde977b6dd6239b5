r"""Gaussian-mixture models in self-consuming loops (paper App. C.1, Figs 11/12; DESIGN §4).

Target
    :math:`P_r = \frac{1}{25}\sum_{a,b} \mathcal N\bigl((a, b), \sigma^2 I_2\bigr)`,
    :math:`a, b \in \{-4, -2, 0, 2, 4\}`, :math:`\sigma = 0.05` -- the 5 × 5
    grid of Che et al. (2020).

Model
    A K-component (K = 25) full-covariance mixture
    :math:`G = \sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` fitted by EM from
    scratch every generation (the paper trains each generation from scratch):
    greedy k-means++ seeding (Arthur & Vassilvitskii, 2007; ``2 + ⌊ln K⌋``
    candidates per centre as in scikit-learn), one hard-assignment M-step,
    then EM until the mean log-likelihood improves by less than ``tol`` or
    ``max_iter`` iterations (``lax.while_loop``). M-step:

    .. math::

        N_k = \sum_i r_{ik},\quad \pi_k = N_k / n,\quad
        \mu_k = \frac{1}{N_k}\sum_i r_{ik} x_i,\quad
        \Sigma_k = \frac{1}{N_k}\sum_i r_{ik}(x_i - \mu_k)(x_i - \mu_k)^\top + 10^{-6} I.

    Sampling with bias λ draws a component from π and then
    :math:`\mathcal N(\mu_k, \lambda\Sigma_k)` (each component's covariance
    scaled by λ; DESIGN §1).

Loop
    Generation 1 is fitted to ``n_ini`` target samples (to the fixed real set
    :math:`D_r` in the synthetic-augmentation loop); for t ≥ 2 the training
    set is ``n_syn`` samples from :math:`G^{t-1}` (from a model drawn
    uniformly among the last K that exist with memory K) plus, for the fresh
    loop, ``n_real`` new target samples, or, for synthetic augmentation,
    :math:`D_r`. One chain is a ``lax.scan`` over generations, chains are
    ``vmap``-ed, chain c uses ``fold_in(key(seed), c)`` and generation t
    ``fold_in(chain_key, t)``, so no number depends on chunking.

    The paper does not state the synthetic sample size. The default here is
    ``n_ini = n_syn = 1000`` (40 points per mode). The dynamics are
    functions of t/n: a mode's weight performs a Wright–Fisher-like random
    walk with per-generation variance :math:`\pi(1-\pi)/n`, and each mode's
    covariance shrinks by about :math:`1 - 25/n` per generation (the MLE
    divides by :math:`n_k`). With n = 1000 a few modes are lost by t ≈ 20 and
    most by t ≈ 200; the ``paper`` preset of Figs 11/12 uses n = 10⁴, which
    stretches the same picture over the paper's 2,000 generations
    (:mod:`madjax.figures.gmm`).

Diagnostics of :math:`G^t` (an evaluation sample of ``n_eval`` points from
the fitted model, λ = 1 -- diagnostics describe the model, not the biased
sampler):

* ``total_variance`` -- trace of the sample covariance (ddof = 1);
* ``modal_variance`` -- each point is assigned to its nearest true mode; the
  traces of the per-mode sample covariances are averaged over modes holding
  ≥ 2 points;
* ``recall`` (and ``precision``) with k = 5 against ``n_eval`` fresh target
  samples (:func:`madjax.metrics.precision_recall`, target = reference);
* ``modes_covered`` -- modes with at least a quarter of their fair share,
  ``n_eval / 25 / 4``, of the points within 3σ of the mode's centre.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax import lax

from madjax.base import Array, GenerativeModel
from madjax.io import describe, provenance
from madjax.metrics import precision_recall
from madjax.validation import (
    ParameterError,
    check_choice,
    check_dtype,
    check_int,
    check_lam,
    check_seed,
    resolve_loop_sizes,
)

__all__ = [
    "GMMParams",
    "GMMSpec",
    "GMMDiagnostics",
    "EMInfo",
    "LoopConfig",
    "gmm",
    "kmeans_plusplus",
    "grid_modes",
    "sample_target",
    "fit_em",
    "sample_gmm",
    "diagnose",
    "run_chain",
    "run_chains",
    "simulate_gmm",
    "DEFAULT_N",
]

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")
GRID = (-4.0, -2.0, 0.0, 2.0, 4.0)
SIGMA = 0.05
DEFAULT_N = 1000  # default n_ini = n_syn (points per generation) and n_eval; see the module docstring

# Stream ids for fold_in(generation_key, stream): one independent key per use.
_REAL, _FIT, _SYN, _EVAL, _TARGET = range(5)


# ----------------------------------------------------------------------------- target


def grid_modes(dtype="float32") -> Array:
    """The 25 target means on {−4, −2, 0, 2, 4}², shape ``(25, 2)`` (row-major in x then y)."""
    g = jnp.asarray(GRID, dtype)
    xx, yy = jnp.meshgrid(g, g, indexing="ij")
    return jnp.stack([xx.ravel(), yy.ravel()], axis=1)


def sample_target(key: Array, n: int, dtype="float32") -> Array:
    """``n`` samples of the 25-mode grid mixture (equal weights, σ = 0.05), shape ``(n, 2)``."""
    k_mode, k_noise = jax.random.split(key)
    modes = grid_modes(dtype)
    idx = jax.random.randint(k_mode, (n,), 0, modes.shape[0])
    return modes[idx] + SIGMA * jax.random.normal(k_noise, (n, 2), dtype)


# ----------------------------------------------------------------------------- model


class GMMParams(NamedTuple):
    """A Gaussian mixture. Shapes for K components in d dimensions."""

    weights: Array  # (K,)      mixing proportions, sum 1
    means: Array  # (K, d)
    covs: Array  # (K, d, d)  each symmetric positive definite (≥ reg_covar · I)


class EMInfo(NamedTuple):
    iterations: Array  # ()  EM iterations run
    converged: Array  # ()  bool: stopped on the tolerance, not the cap
    log_likelihood: Array  # ()  final mean log-likelihood per point


@dataclasses.dataclass(frozen=True)
class GMMSpec:
    """Static configuration of the mixture model and its EM fit.

    Attributes:
      n_components: K (25 for the grid).
      dim: d (2 for the grid).
      max_iter: EM iteration cap.
      tol: stop when the mean log-likelihood per point improves by less.
      reg_covar: covariance floor added to every Σ_k (× I).
    """

    n_components: int = 25
    dim: int = 2
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6

    def __post_init__(self):
        check_int("n_components", self.n_components, minimum=1)
        check_int("dim", self.dim, minimum=1)
        check_int("max_iter", self.max_iter, minimum=1)
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ParameterError("tol", f"must be a positive number, got {self.tol!r}")
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar > 0):
            raise ParameterError("reg_covar", f"must be a positive number, got {self.reg_covar!r}")


def _log_gauss(x: Array, params: GMMParams) -> Array:
    """log N(x_i | μ_k, Σ_k), shape ``(n, K)``.

    In 2-D the 2 × 2 inverse and determinant are written out (elementwise
    work on ``(K, n)`` arrays, much faster on CPU than batched triangular
    solves); otherwise Cholesky factors are used.
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


def _e_step(x: Array, params: GMMParams) -> tuple[Array, Array]:
    """Responsibilities ``(n, K)`` and the mean log-likelihood per point."""
    tiny = jnp.finfo(x.dtype).tiny
    logp = _log_gauss(x, params) + jnp.log(jnp.maximum(params.weights, tiny))[None, :]
    lse = jax.scipy.special.logsumexp(logp, axis=1, keepdims=True)
    return jnp.exp(logp - lse), jnp.mean(lse)


def _m_step(x: Array, resp: Array, reg_covar: float) -> GMMParams:
    """Weighted means and covariances (two-pass: centre on μ_k first), floor ``reg_covar · I``."""
    n, d = x.shape
    nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(x.dtype).eps  # (K,), as scikit-learn
    means = (resp.T @ x) / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]  # (K, n, d)
    rT = resp.T[:, :, None]  # (K, n, 1)
    covs = jnp.stack([jnp.sum(rT * diff * diff[:, :, i, None], axis=1) for i in range(d)], axis=1)
    covs = covs / nk[:, None, None]
    covs = 0.5 * (covs + jnp.swapaxes(covs, 1, 2)) + reg_covar * jnp.eye(d, dtype=x.dtype)
    return GMMParams(nk / n, means, covs)


def _sq_to(x: Array, c: Array) -> Array:
    """|x_i − c|² for all i; ``x`` (n, d), ``c`` (d,)."""
    diff = x - c
    return jnp.sum(diff * diff, axis=1)


def kmeans_plusplus(key: Array, x: Array, n_clusters: int) -> Array:
    r"""Greedy k-means++ seeding; returns ``(n_clusters, d)`` centres chosen among ``x``.

    The first centre is uniform; each next one is the best (lowest potential
    :math:`\sum_i \min_c |x_i - c|^2`) of ``2 + ⌊ln K⌋`` candidates drawn with
    probability ∝ the current squared distance (uniform if all are 0).
    """
    n, d = x.shape
    trials = 2 + int(math.log(n_clusters))
    k_first, k_rest = jax.random.split(key)
    first = x[jax.random.randint(k_first, (), 0, n)]
    d2 = _sq_to(x, first)
    centres = jnp.zeros((n_clusters, d), x.dtype).at[0].set(first)

    def body(i, carry):
        centres, d2 = carry
        # inverse-CDF draws ∝ d2 (uniform when every d2 is 0): `trials` uniforms per step
        cdf = jnp.cumsum(d2)
        u = jax.random.uniform(jax.random.fold_in(k_rest, i), (trials,), x.dtype)
        by_d2 = jnp.searchsorted(cdf, u * cdf[-1], side="right")
        uniform = jnp.floor(u * n).astype(by_d2.dtype)
        cand = jnp.clip(jnp.where(cdf[-1] > 0, by_d2, uniform), 0, n - 1)
        cand_d2 = jnp.minimum(d2[None, :], jax.vmap(lambda c: _sq_to(x, x[c]))(cand))  # (trials, n)
        best = jnp.argmin(jnp.sum(cand_d2, axis=1))
        return centres.at[i].set(x[cand[best]]), cand_d2[best]

    centres, _ = lax.fori_loop(1, n_clusters, body, (centres, d2))
    return centres


def fit_em(key: Array, x: Array, spec: GMMSpec = GMMSpec()) -> tuple[GMMParams, EMInfo]:
    """Fit a K-component full-covariance mixture to ``x`` (n, d) by EM from a k-means++ start.

    Returns the parameters and an :class:`EMInfo`. Pure and jittable; n and
    K are static, everything else traced.
    """
    centres = kmeans_plusplus(key, x, spec.n_components)
    nearest = jnp.argmin(jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1), axis=1)
    resp0 = jax.nn.one_hot(nearest, spec.n_components, dtype=x.dtype)
    params0 = _m_step(x, resp0, spec.reg_covar)

    def cond(state):
        _, it, delta, _ = state
        return (it < spec.max_iter) & (delta >= spec.tol)

    def body(state):
        params, it, _, ll_old = state
        resp, ll = _e_step(x, params)
        return _m_step(x, resp, spec.reg_covar), it + 1, jnp.abs(ll - ll_old), ll

    inf = jnp.array(jnp.inf, x.dtype)
    params, it, delta, ll = lax.while_loop(cond, body, (params0, jnp.array(0, jnp.int32), inf, -inf))
    return params, EMInfo(it, delta < spec.tol, ll)


def _categorical(key: Array, weights: Array, n: int) -> Array:
    """``n`` draws from the categorical ``weights`` (K,) (or (n, K), one row per draw) by inverse CDF."""
    cdf = jnp.cumsum(weights, axis=-1)
    u = jax.random.uniform(key, (n,), weights.dtype) * cdf[..., -1]
    if weights.ndim == 1:
        idx = jnp.searchsorted(cdf, u, side="right")
    else:
        idx = jnp.sum(cdf <= u[:, None], axis=-1)
    return jnp.clip(idx, 0, weights.shape[-1] - 1)


def sample_gmm(key: Array, params: GMMParams, n: int, lam) -> Array:
    r"""``n`` points from :math:`\sum_k \pi_k \mathcal N(\mu_k, \lambda \Sigma_k)`, shape ``(n, d)``."""
    k_comp, k_noise = jax.random.split(key)
    comp = _categorical(k_comp, params.weights, n)
    chol = jnp.linalg.cholesky(params.covs)
    eps = jax.random.normal(k_noise, (n, params.means.shape[-1]), params.means.dtype)
    return params.means[comp] + jnp.sqrt(lam) * jnp.einsum("nij,nj->ni", chol[comp], eps)


def gmm(spec: GMMSpec = GMMSpec()) -> GenerativeModel:
    """The mixture behind the generation-step interface (DESIGN §6).

    ``init(key)`` gives equal weights, zero means and identity covariances;
    ``fit(key, params, x)`` refits from scratch (``params`` only fixes the
    structure); ``sample(key, params, n, lam)`` draws ``(n, d)`` points with
    component covariances scaled by λ.

    Example:
      >>> import jax
      >>> model = gmm(GMMSpec(n_components=2, dim=1))
      >>> x = jax.numpy.concatenate([jax.numpy.zeros((5, 1)), jax.numpy.ones((5, 1))])
      >>> p = model.fit(jax.random.key(0), model.init(jax.random.key(1)), x)
      >>> sorted(round(float(m), 3) for m in p.means[:, 0])
      [0.0, 1.0]
    """

    def init(key: Array) -> GMMParams:
        del key
        k, d = spec.n_components, spec.dim
        return GMMParams(jnp.full((k,), 1.0 / k), jnp.zeros((k, d)), jnp.broadcast_to(jnp.eye(d), (k, d, d)))

    def fit(key: Array, params: GMMParams, data: Array) -> GMMParams:
        del params
        return fit_em(key, data, spec)[0]

    return GenerativeModel(init=init, fit=fit, sample=sample_gmm)


# ----------------------------------------------------------------------------- diagnostics


class GMMDiagnostics(NamedTuple):
    """Per-generation record (scalars per chain; ``(chains, T)`` after the loop)."""

    total_variance: Array
    modal_variance: Array
    recall: Array
    precision: Array
    modes_covered: Array  # int32
    em_iterations: Array  # int32
    em_converged: Array  # bool
    nonfinite: Array  # bool: non-finite parameters or diagnostics


def diagnose(key: Array, params: GMMParams, n_eval: int, k: int = 5) -> GMMDiagnostics:
    """Diagnostics of a fitted grid model from ``n_eval`` of its samples (λ = 1).

    Needs ``n_eval > 25`` (so that some mode holds ≥ 2 points) and ``n_eval > k``.
    """
    dtype = params.means.dtype
    x = sample_gmm(jax.random.fold_in(key, _EVAL), params, n_eval, jnp.asarray(1.0, dtype))
    target = sample_target(jax.random.fold_in(key, _TARGET), n_eval, dtype)
    modes = grid_modes(dtype)
    n_modes = modes.shape[0]

    centred = x - jnp.mean(x, axis=0)
    total_var = jnp.sum(centred * centred) / (n_eval - 1)

    d2 = jnp.sum((x[:, None, :] - modes[None]) ** 2, axis=-1)  # (n, 25)
    onehot = jax.nn.one_hot(jnp.argmin(d2, axis=1), n_modes, dtype=dtype)  # (n, 25)
    counts = jnp.sum(onehot, axis=0)
    local = x - onehot @ modes  # offset from the nearest mode centre
    local_mean = (onehot.T @ local) / jnp.maximum(counts, 1)[:, None]  # (25, 2)
    dev = local - onehot @ local_mean  # two-pass: centred on the per-mode mean
    ss = onehot.T @ jnp.sum(dev * dev, axis=1)
    ok = counts >= 2
    per_mode = jnp.where(ok, ss / jnp.maximum(counts - 1, 1), 0.0)
    modal_var = jnp.sum(per_mode) / jnp.maximum(jnp.sum(ok), 1)

    within = d2 < (3 * SIGMA) ** 2
    covered = jnp.sum(100 * jnp.sum(within, axis=0) >= n_eval).astype(jnp.int32)

    prec, rec = precision_recall(target, x, k=k)
    return GMMDiagnostics(total_var, modal_var, rec, prec, covered, jnp.array(0, jnp.int32),
                          jnp.array(True), jnp.array(False))


def _finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


# ----------------------------------------------------------------------------- loop


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Static part of a GMM loop (shapes and code paths); λ is traced.

    Attributes:
      loop: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      n_ini: real points of generation 1 (``n_real`` in synthetic augmentation).
      n_real: real points per generation t ≥ 2 (0 in the fully synthetic loop).
      n_syn: synthetic points per generation t ≥ 2.
      memory: K, models sampled from (the last K that exist).
      n_eval: points of the evaluation sample (and of the fresh target sample).
      model: the mixture and its EM settings.
      dtype: ``"float32"`` or ``"float64"``.
    """

    loop: str = "fully-synthetic"
    n_ini: int = DEFAULT_N
    n_real: int = 0
    n_syn: int = DEFAULT_N
    memory: int = 1
    n_eval: int = DEFAULT_N
    model: GMMSpec = GMMSpec()
    dtype: str = "float32"

    def __post_init__(self):
        check_choice("loop", self.loop, LOOPS)
        check_int("n_ini", self.n_ini, minimum=self.model.n_components)
        check_int("n_real", self.n_real, minimum=0)
        check_int("n_syn", self.n_syn, minimum=0)
        check_int("memory", self.memory, minimum=1)
        check_int("n_eval", self.n_eval, minimum=self.model.n_components + 1)
        if self.loop == "fully-synthetic" and self.n_real != 0:
            raise ParameterError("n_real", f"must be 0 in the fully-synthetic loop, got {self.n_real}")
        if self.loop == "synthetic-augmentation" and self.n_ini != self.n_real:
            raise ParameterError("n_ini", "must equal n_real in the synthetic-augmentation loop")
        if self.n_real + self.n_syn < self.model.n_components:
            raise ParameterError(
                "n_syn", f"a training set needs at least {self.model.n_components} points (one per component), "
                         f"got n_real + n_syn = {self.n_real + self.n_syn}")
        check_choice("dtype", self.dtype, ("float32", "float64"))


class ChainState(NamedTuple):
    models: GMMParams  # leaves with a leading (memory,) axis; slot 0 = newest
    real: Array  # (n_real, 2) the fixed D_r (synthetic augmentation), else (0, 2)


class _Record(NamedTuple):
    diag: GMMDiagnostics
    params: GMMParams


def _fit_and_diagnose(key: Array, x: Array, cfg: LoopConfig) -> _Record:
    params, info = fit_em(jax.random.fold_in(key, _FIT), x, cfg.model)
    diag = diagnose(key, params, cfg.n_eval)
    bad = ~(_finite(params) & _finite(diag[:4]))
    diag = diag._replace(em_iterations=info.iterations, em_converged=info.converged, nonfinite=bad)
    return _Record(diag, params)


def _synthetic(key: Array, models: GMMParams, t: Array, lam: Array, cfg: LoopConfig) -> Array:
    """``n_syn`` points, each from a model drawn uniformly among the last min(K, t − 1) (slot 0 newest)."""
    if cfg.memory == 1:
        return sample_gmm(key, jax.tree.map(lambda a: a[0], models), cfg.n_syn, lam)
    k_slot, k_comp, k_noise = jax.random.split(key, 3)
    available = jnp.minimum(cfg.memory, t - 1)
    slot = jax.random.randint(k_slot, (cfg.n_syn,), 0, available)
    comp = _categorical(k_comp, models.weights[slot], cfg.n_syn)  # (n,) from each point's model
    chol = jnp.linalg.cholesky(models.covs)  # (memory, K, d, d)
    eps = jax.random.normal(k_noise, (cfg.n_syn, models.means.shape[-1]), models.means.dtype)
    return models.means[slot, comp] + jnp.sqrt(lam) * jnp.einsum("nij,nj->ni", chol[slot, comp], eps)


def _init_state(chain_key: Array, cfg: LoopConfig) -> ChainState:
    """Before generation 1: D_r (synthetic augmentation) and a buffer of placeholder models."""
    dtype = jnp.dtype(cfg.dtype)
    if cfg.loop == "synthetic-augmentation":
        real = sample_target(jax.random.fold_in(chain_key, 0), cfg.n_real, dtype)
    else:
        real = jnp.zeros((0, 2), dtype)
    k, d = cfg.model.n_components, cfg.model.dim
    placeholder = GMMParams(jnp.full((k,), 1.0 / k, dtype), jnp.zeros((k, d), dtype),
                            jnp.broadcast_to(jnp.eye(d, dtype=dtype), (k, d, d)))
    models = jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.memory,) + a.shape), placeholder)
    return ChainState(models, real)


def _first_training_set(gen_key: Array, state: ChainState, cfg: LoopConfig) -> Array:
    if cfg.loop == "synthetic-augmentation":
        return state.real
    return sample_target(jax.random.fold_in(gen_key, _REAL), cfg.n_ini, jnp.dtype(cfg.dtype))


def _later_training_set(gen_key: Array, state: ChainState, t: Array, lam: Array, cfg: LoopConfig) -> Array:
    parts = []
    if cfg.loop == "fresh" and cfg.n_real > 0:
        parts.append(sample_target(jax.random.fold_in(gen_key, _REAL), cfg.n_real, jnp.dtype(cfg.dtype)))
    elif cfg.loop == "synthetic-augmentation":
        parts.append(state.real)
    if cfg.n_syn > 0:
        parts.append(_synthetic(jax.random.fold_in(gen_key, _SYN), state.models, t, lam, cfg))
    return jnp.concatenate(parts, axis=0)


def _step(chain_key: Array, state: ChainState, t: Array, lam: Array, cfg: LoopConfig, first: bool | None):
    """Generation t: build the training set, fit, diagnose, push the model into the buffer.

    ``first`` is True/False for a generation known statically to be / not to
    be the first; None when one compiled step serves all t (the two training
    sets then have the same size and are selected with ``where``).
    """
    gen_key = jax.random.fold_in(chain_key, t)
    if first is True:
        x = _first_training_set(gen_key, state, cfg)
    elif first is False:
        x = _later_training_set(gen_key, state, t, lam, cfg)
    else:
        x = jnp.where(t == 1, _first_training_set(gen_key, state, cfg),
                      _later_training_set(gen_key, state, t, lam, cfg))
    rec = _fit_and_diagnose(gen_key, x, cfg)
    models = jax.tree.map(lambda buf, new: jnp.concatenate([new[None], buf[:-1]], axis=0), state.models, rec.params)
    return ChainState(models, state.real), rec


def _one_step_serves_all(cfg: LoopConfig) -> bool:
    return cfg.loop != "synthetic-augmentation" and cfg.n_ini == cfg.n_real + cfg.n_syn


def _segment(chain_key: Array, state: ChainState, t0: Array, lam: Array, cfg: LoopConfig, length: int):
    """Generations t0 .. t0 + length − 1 as one ``lax.scan`` (a single chain)."""
    first = None if _one_step_serves_all(cfg) else False

    def step(state, t):
        return _step(chain_key, state, t, lam, cfg, first)

    return lax.scan(step, state, t0 + jnp.arange(length, dtype=jnp.int32))


def _first(chain_key: Array, state: ChainState, lam: Array, cfg: LoopConfig):
    """Generation 1 alone (when its training set differs in size from later ones)."""
    state, rec = _step(chain_key, state, jnp.asarray(1, jnp.int32), lam, cfg, True)
    return state, jax.tree.map(lambda a: a[None], rec)


def run_chain(chain_key: Array, lam: Array, cfg: LoopConfig, generations: int) -> _Record:
    """One chain of T generations as a ``lax.scan``; leaves of the result have a leading ``(T,)`` axis."""
    state = _init_state(chain_key, cfg)
    if _one_step_serves_all(cfg):
        return _segment(chain_key, state, jnp.asarray(1, jnp.int32), lam, cfg, generations)[1]
    state, first = _first(chain_key, state, lam, cfg)
    if generations == 1:
        return first
    _, rest = _segment(chain_key, state, jnp.asarray(2, jnp.int32), lam, cfg, generations - 1)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), first, rest)


@jax.jit
def _chain_keys(seed_key: Array, chain_ids: Array) -> Array:
    return jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(chain_ids)


_init_chains = jax.jit(jax.vmap(_init_state, in_axes=(0, None)), static_argnums=1)
_first_chains = jax.jit(jax.vmap(_first, in_axes=(0, 0, None, None)), static_argnums=3)
_segment_chains = jax.jit(jax.vmap(_segment, in_axes=(0, 0, None, None, None, None)), static_argnums=(4, 5))


@functools.partial(jax.jit, static_argnums=(3, 4))
def run_chains(seed_key: Array, chain_ids: Array, lam: Array, cfg: LoopConfig, generations: int) -> _Record:
    """vmap of :func:`run_chain` over chains ``fold_in(seed_key, chain_id)``; leaves ``(chains, T, ...)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(chain_ids)
    return jax.vmap(run_chain, in_axes=(0, None, None, None))(keys, lam, cfg, generations)


# ----------------------------------------------------------------------------- simulate


def _validate(*, loop, n_ini, n_real, n_syn, lam, generations, chains, seed, dtype, chunk, memory, accumulate,
              n_eval, snapshots) -> tuple[LoopConfig, dict]:
    loop = check_choice("loop", loop, LOOPS)
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    chains = check_int("chains", chains, minimum=1)
    seed = check_seed(seed)
    dtype = check_dtype(dtype)
    memory = check_int("memory", memory, minimum=1)
    if accumulate:
        raise ParameterError("accumulate", "the accumulating pool is not supported for the GMM (its size grows "
                                           "with t); use memory K instead")
    if chunk is not None:
        chunk = check_int("chunk", chunk, minimum=1)
    n_ini, n_real = resolve_loop_sizes(loop, n_ini, n_real)
    n_ini = DEFAULT_N if n_ini is None else n_ini
    n_syn = DEFAULT_N if n_syn is None else n_syn
    name = "n_real" if loop == "synthetic-augmentation" else "n_ini"
    check_int(name, n_ini, minimum=25)
    check_int("n_syn", n_syn, minimum=0)
    n_eval = check_int("n_eval", n_eval, minimum=26)
    snaps = tuple(sorted({check_int("snapshots", s, minimum=1, maximum=generations) for s in snapshots}))
    cfg = LoopConfig(loop=loop, n_ini=int(n_ini), n_real=int(n_real), n_syn=int(n_syn), memory=memory,
                     n_eval=n_eval, dtype=dtype)
    run = dict(lam=lam, generations=generations, chains=chains, seed=seed, chunk=chunk, snapshots=snaps)
    return cfg, run


def simulate_gmm(*, loop: str = "fully-synthetic", n_ini: int | None = None, n_syn: int | None = None,
                 lam: float = 1.0, generations: int, chains: int = 1, seed: int = 0, dtype: str = "float32",
                 progress: bool = False, chunk: int | None = None, memory: int = 1, accumulate: bool = False,
                 n_real: int | None = None, n_eval: int = DEFAULT_N, snapshots=(),
                 first_chain: int = 0) -> xr.Dataset:
    """Simulate ``chains`` independent GMM loops on the 25-mode grid (Figs 11/12).

    Args:
      loop: ``"fully-synthetic"`` (the figures), ``"fresh"`` or
        ``"synthetic-augmentation"``.
      n_ini: target samples of generation 1 (default 1000; ≥ 25).
      n_syn: synthetic samples per generation t ≥ 2 (default 1000 -- the
        paper does not state it; the dynamics scale with t/n, see the module
        docstring).
      lam: sampling bias λ ∈ (0, 1] (component covariances scaled by λ).
      generations: T.
      chains: independent chains C; chain c uses ``fold_in(key(seed), c)``.
      seed: random seed.
      dtype: ``"float32"`` or ``"float64"`` (x64 mode).
      progress: show a progress bar (terminal only).
      chunk: chains per compiled call (memory bound); results do not depend on it.
      memory: K, synthetic samples come from the last K models.
      accumulate: not supported for the GMM (error).
      n_real: real samples per generation (fresh) or |D_r| (synthetic augmentation).
      n_eval: size of the evaluation and fresh-target samples (default 1000).
      snapshots: generations whose fitted parameters and evaluation-size
        samples are kept (for Fig. 11).
      first_chain: index of the first chain: chains ``first_chain …
        first_chain + chains − 1`` are run (resumable batches give the same
        numbers as one call).

    Returns:
      ``xarray.Dataset`` with dims ``(chain, generation)``, generation = 1..T:
      ``total_variance``, ``modal_variance``, ``recall``, ``precision``,
      ``modes_covered``, ``em_iterations``; per chain ``n_nonfinite`` and
      ``n_em_unconverged``; with ``snapshots``, ``snap_weights``
      ``(chain, snapshot, component)``, ``snap_means``/``snap_covs`` and
      ``snap_samples`` ``(chain, snapshot, point, xy)``. Attributes ``config``
      (JSON), ``madjax_version``, ``jax_version``, ``device``.

    Raises:
      ValueError (:class:`~madjax.validation.ParameterError`) naming the
      parameter, before any work.
    """
    cfg, run = _validate(loop=loop, n_ini=n_ini, n_real=n_real, n_syn=n_syn, lam=lam, generations=generations,
                         chains=chains, seed=seed, dtype=dtype, chunk=chunk, memory=memory,
                         accumulate=accumulate, n_eval=n_eval, snapshots=snapshots)
    first_chain = check_int("first_chain", first_chain, minimum=0)
    from madjax._progress import progress_bar

    T, C = run["generations"], run["chains"]
    chunk = min(run["chunk"] or C, C)
    dt = jnp.dtype(cfg.dtype)
    lam_arr = jnp.asarray(run["lam"], dt)
    seed_key = jax.random.key(run["seed"])
    snaps = np.asarray(run["snapshots"], dtype=np.int64)
    # Generations per compiled segment: ~20 progress updates, the last segment
    # padded (extra generations computed and dropped; keys depend only on t).
    single = _one_step_serves_all(cfg)
    t_first = 1 if single else 2
    remaining = T - t_first + 1
    seg = max(1, -(-remaining // 20)) if progress else max(1, remaining)
    n_seg = -(-remaining // seg) if remaining > 0 else 0
    diags, snap_params, snap_x = [], [], []
    with progress_bar(total=(-(-C // chunk)) * T, desc="GMM chain-generations", enabled=progress,
                      unit="gen") as bar:
        for start in range(0, C, chunk):
            ids = first_chain + jnp.arange(start, start + chunk, dtype=jnp.uint32)  # the last chunk is padded
            keys = _chain_keys(seed_key, ids)
            state = _init_chains(keys, cfg)
            recs = []
            if not single:
                state, first = _first_chains(keys, state, lam_arr, cfg)
                recs.append(jax.device_get(first))
                bar.update(1)
            for s in range(n_seg):
                t0 = t_first + s * seg
                state, out = _segment_chains(keys, state, jnp.asarray(t0, jnp.int32), lam_arr, cfg, seg)
                recs.append(jax.device_get(out))
                bar.update(min(seg, T + 1 - t0))
            rec = jax.tree.map(lambda *a: np.concatenate(a, axis=1)[:, :T], *recs)
            diags.append(rec.diag)
            if snaps.size:
                snap_params.append(jax.tree.map(lambda a: a[:, snaps - 1], rec.params))
                # evaluation-size samples of each snapshot model, keyed like the diagnostics
                gen_keys = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(jnp.asarray(snaps)))(keys)
                snap_x.append(np.asarray(_snapshot_samples(gen_keys, jax.tree.map(jnp.asarray, snap_params[-1]),
                                                           cfg.n_eval)))
    diag = jax.tree.map(lambda *a: np.concatenate(a, axis=0)[:C], *diags)
    run["first_chain"] = first_chain
    return _to_dataset(cfg, run, diag,
                       jax.tree.map(lambda *a: np.concatenate(a, axis=0)[:C], *snap_params) if snaps.size else None,
                       np.concatenate(snap_x, axis=0)[:C] if snaps.size else None)


@functools.partial(jax.jit, static_argnums=2)
def _snapshot_samples(gen_keys: Array, params: GMMParams, n_eval: int) -> Array:
    """The evaluation samples of snapshot models (same keys as :func:`diagnose`); ``(C, S, n_eval, 2)``."""

    def one(key, p):
        return sample_gmm(jax.random.fold_in(key, _EVAL), p, n_eval, jnp.asarray(1.0, p.means.dtype))

    return jax.vmap(jax.vmap(one))(gen_keys, params)


def _to_dataset(cfg: LoopConfig, run: dict, diag: GMMDiagnostics, snap_params, snap_x) -> xr.Dataset:
    T, C = run["generations"], run["chains"]
    dims = ("chain", "generation")
    coords = {"chain": run.get("first_chain", 0) + np.arange(C), "generation": np.arange(1, T + 1)}
    data = {
        "total_variance": (dims, diag.total_variance, {"description": "trace of the covariance of an evaluation "
                                                                     "sample of G^t"}),
        "modal_variance": (dims, diag.modal_variance, {"description": "mean over true modes (>= 2 points) of the "
                                                                     "trace of the per-mode covariance"}),
        "recall": (dims, diag.recall, {"description": "recall (k=5) vs fresh target samples (reference)"}),
        "precision": (dims, diag.precision, {"description": "precision (k=5) vs fresh target samples"}),
        "modes_covered": (dims, diag.modes_covered.astype(np.int32),
                          {"description": "modes with >= n_eval/100 evaluation points within 3 sigma"}),
        "em_iterations": (dims, diag.em_iterations.astype(np.int32), {"description": "EM iterations"}),
        "n_nonfinite": (("chain",), diag.nonfinite.sum(axis=1).astype(np.int32),
                        {"description": "generations with non-finite parameters or diagnostics"}),
        "n_em_unconverged": (("chain",), (~diag.em_converged).sum(axis=1).astype(np.int32),
                             {"description": "generations whose EM stopped at max_iter"}),
    }
    if snap_params is not None:
        coords["snapshot"] = np.asarray(run["snapshots"])
        coords["component"] = np.arange(cfg.model.n_components)
        coords["xy"] = ["x", "y"]
        coords["xy2"] = ["x", "y"]
        data["snap_weights"] = (("chain", "snapshot", "component"), np.asarray(snap_params.weights))
        data["snap_means"] = (("chain", "snapshot", "component", "xy"), np.asarray(snap_params.means))
        data["snap_covs"] = (("chain", "snapshot", "component", "xy", "xy2"), np.asarray(snap_params.covs))
        data["snap_samples"] = (("chain", "snapshot", "point", "xy"), snap_x)
    ds = xr.Dataset(data, coords=coords)
    config = dataclasses.asdict(cfg)
    config.update(model_name="gmm", lam=run["lam"], generations=T, chains=C, seed=run["seed"],
                  snapshots=list(run["snapshots"]), accumulate=False, sigma=SIGMA, grid=list(GRID))
    ds.attrs.update(provenance(config))
    return describe(ds)
