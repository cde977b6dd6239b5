r"""Point models' shared half: masked point buffers, the targets, and the point diagnostics.

A point model (the GMM, the KDE) trains on points. Under ``lax.scan × vmap``
every shape is static and every size traced, so a set of points is a
:class:`PointSet`: a buffer of ``C`` rows (static) and a mask of the valid
ones (``n = Σ mask``, traced). The data algebra of
:class:`~madjax.base.LoopModel` on point sets is written once here:
``concat`` appends buffers (capacities add), the accumulating pool is a
buffer of ``T · C`` rows filled at its count of valid rows, and a mixture of
the last K models draws each row from a uniformly chosen valid slot.

Targets (``P_r``), one per name in :data:`TARGETS`:

* ``"normal"`` -- :math:`\mathcal N(0, I_d)`, any d (the Gaussian loop's target);
* ``"grid"`` -- :math:`\frac1{25}\sum_{a,b}\mathcal N((a, b), \sigma^2 I_2)`,
  :math:`a, b \in \{-4, -2, 0, 2, 4\}`, σ = 0.05, d = 2 (Che et al. 2020;
  Figs 11/12).

Diagnostics of a fitted point model, from an evaluation sample of ``n_eval``
of its points at λ = 1 (they describe the model, not the biased sampler) and
``n_eval`` fresh target points (:func:`point_diagnostics`):

* ``total_variance`` -- trace of the sample covariance (ddof = 1);
* ``recall`` and ``precision`` (k = 5, the target as reference;
  :func:`madjax.metrics.precision_recall`);
* on the grid only: ``modal_variance`` -- each point is assigned to its nearest
  true mode, and the traces of the per-mode sample covariances are averaged
  over modes holding ≥ 2 points; ``modes_covered`` -- modes with at least a
  quarter of their fair share, ``n_eval / 25 / 4``, of the points within 3σ.

The distance ``w2`` that n_e needs is the model's own (the GMM's mixture W2,
the KDE's debiased Sinkhorn W2); each model adds it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from madjax.base import Array
from madjax.metrics import precision_recall

TARGETS = ("normal", "grid")
GRID = (-4.0, -2.0, 0.0, 2.0, 4.0)
SIGMA = 0.05


class PointSet(NamedTuple):
    """A masked buffer of points (a point model's ``Dataset``).

    Attributes:
      x: ``(C, d)`` points; rows where ``mask`` is False are ignored.
      mask: ``(C,)`` bool, valid rows.
    """

    x: Array
    mask: Array


def size(points: PointSet) -> Array:
    """``()`` int32: the number of valid rows."""
    return jnp.sum(points.mask).astype(jnp.int32)


def concat(*parts: PointSet) -> PointSet:
    """Row-wise union of point sets (capacities add; no row is moved)."""
    return PointSet(jnp.concatenate([p.x for p in parts]), jnp.concatenate([p.mask for p in parts]))


def empty(capacity: int, dim: int, dtype) -> PointSet:
    """A point set of ``capacity`` rows, none valid."""
    return PointSet(jnp.zeros((capacity, dim), dtype), jnp.zeros((capacity,), bool))


def compact(points: PointSet, capacity: int) -> PointSet:
    """The valid rows first (in order), in a buffer of ``capacity`` rows; rows beyond it are dropped."""
    order = jnp.argsort(~points.mask, stable=True)[:capacity]
    x, mask = points.x[order], points.mask[order]
    pad = capacity - x.shape[0]
    if pad > 0:
        x = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((pad,), bool)])
    return PointSet(x, mask)


def append(pool: PointSet, new: PointSet) -> PointSet:
    """The pool with ``new``'s valid rows written after its own (the pool's capacity is kept).

    ``new`` is compacted first, so the pool holds its rows contiguously; the
    caller sizes the pool for every append (``T · C`` rows).
    """
    new = compact(new, new.x.shape[0])
    count = size(pool)
    x = jax.lax.dynamic_update_slice(pool.x, new.x, (count, jnp.int32(0)))
    mask = jnp.arange(pool.mask.shape[0]) < count + size(new)
    return PointSet(x, mask)


def subsample(key: Array, points: PointSet, n) -> PointSet:
    """A uniform subsample of ``min(n, size)`` valid rows, without replacement (accumulate-subsample).

    Each valid row gets a uniform key and the n smallest keys are kept: shapes stay static, n traced.
    """
    u = jnp.where(points.mask, jax.random.uniform(key, points.mask.shape), jnp.inf)
    rank = jnp.zeros(points.mask.shape, jnp.int32).at[jnp.argsort(u)].set(
        jnp.arange(points.mask.shape[0], dtype=jnp.int32))
    return PointSet(points.x, points.mask & (rank < n))


class PointModelSpec:
    """What the specs of the point models (:class:`~madjax.gmm.GMMSpec`, :class:`~madjax.kde.KDESpec`)
    share: draws of ``draw_rows`` rows, and every loop variant but the weighted and tilted ones.

    Memory K runs through :func:`mixture_rows`, the accumulating pool through
    :func:`append` (``generations · draw_rows`` rows), accumulate-subsample
    through :func:`subsample`. Weighted mixing and curation need a weighted fit
    and a tilted sampler, which point models do not have: ``check_loop``
    refuses them in one line naming the option.
    """

    name: str  # the model's registry name, in messages

    @property
    def points(self) -> int:
        """Rows per draw held in memory (memory estimates)."""
        return self.draw_rows

    def check_loop(self, loop) -> None:
        from madjax.validation import ParameterError

        if loop.weighted:
            raise ParameterError("real_weight", f"weighted mixing is implemented for the gaussian model, "
                                                f"not {self.name}")
        if loop.tilted:
            raise ParameterError("tilt", f"curation (the exponential tilt) is implemented for the gaussian model, "
                                         f"not {self.name}")


def mixture_rows(draw, capacity: int):
    """``sample_mixture`` for a point model from its fixed-size ``draw(key, params, rows, lam) -> (rows, d)``.

    Every row's model is drawn uniformly among the valid slots, independently
    (DESIGN §1); each slot draws ``capacity`` rows and every row keeps the one
    of its slot. Cost: K_max draws, which for point models is small beside a fit.
    """

    def sample_mixture(key, history, valid, n, lam):
        k_slot, k_draw = jax.random.split(key)
        slots = valid.shape[0]
        draws = jax.vmap(draw, in_axes=(0, 0, None, None))(jax.random.split(k_draw, slots), history, capacity, lam)
        logits = jnp.where(valid, 0.0, -jnp.inf)
        slot = jax.random.categorical(k_slot, logits, shape=(capacity,))
        x = draws[slot, jnp.arange(capacity)]
        return PointSet(x, jnp.arange(capacity) < n)

    return sample_mixture


# ----------------------------------------------------------------------------- targets


def target_dim(target: str, dim: int | None) -> int:
    """The dimension of a target: 2 for the grid, ``dim`` for the normal."""
    return 2 if target == "grid" else dim


def grid_modes(dtype="float32") -> Array:
    """The 25 target means on {−4, −2, 0, 2, 4}², shape ``(25, 2)`` (row-major in x then y)."""
    g = jnp.asarray(GRID, dtype)
    xx, yy = jnp.meshgrid(g, g, indexing="ij")
    return jnp.stack([xx.ravel(), yy.ravel()], axis=1)


def draw_target(key: Array, target: str, rows: int, dim: int, dtype="float32") -> Array:
    """``rows`` points of the target, shape ``(rows, dim)`` (``rows`` static)."""
    if target == "normal":
        return jax.random.normal(key, (rows, dim), dtype)
    k_mode, k_noise = jax.random.split(key)
    modes = grid_modes(dtype)
    idx = jax.random.randint(k_mode, (rows,), 0, modes.shape[0])
    return modes[idx] + SIGMA * jax.random.normal(k_noise, (rows, 2), dtype)


def sample_target(key: Array, target: str, n: Array, capacity: int, dim: int, dtype="float32") -> PointSet:
    """``n`` target points (traced) in a buffer of ``capacity`` rows."""
    return PointSet(draw_target(key, target, capacity, dim, dtype), jnp.arange(capacity) < n)


# ----------------------------------------------------------------------------- diagnostics


def point_diagnostics(key: Array, x: Array, target: str, k: int = 5) -> dict:
    """The point diagnostics of an evaluation sample ``x`` ``(n_eval, d)`` of a fitted model.

    Returns a dict of ``()`` arrays: ``total_variance``, ``recall``,
    ``precision``, and on the grid ``modal_variance`` and ``modes_covered``
    (module docstring). ``key`` draws the ``n_eval`` fresh target points.
    Needs ``n_eval > k`` (and > 25 on the grid, so that some mode can hold 2 points).
    """
    n_eval, dim = x.shape
    dtype = x.dtype
    reference = draw_target(key, target, n_eval, dim, dtype)
    centred = x - jnp.mean(x, axis=0)
    out = {"total_variance": jnp.sum(centred * centred) / (n_eval - 1)}
    out["precision"], out["recall"] = precision_recall(reference, x, k=k)
    if target == "grid":
        modes = grid_modes(dtype)
        d2 = jnp.sum((x[:, None, :] - modes[None]) ** 2, axis=-1)  # (n, 25)
        onehot = jax.nn.one_hot(jnp.argmin(d2, axis=1), modes.shape[0], dtype=dtype)
        counts = jnp.sum(onehot, axis=0)
        local = x - onehot @ modes  # offset from the nearest mode centre
        local_mean = (onehot.T @ local) / jnp.maximum(counts, 1)[:, None]
        dev = local - onehot @ local_mean  # two-pass: centred on the per-mode mean
        ss = onehot.T @ jnp.sum(dev * dev, axis=1)
        ok = counts >= 2
        per_mode = jnp.where(ok, ss / jnp.maximum(counts - 1, 1), 0.0)
        out["modal_variance"] = jnp.sum(per_mode) / jnp.maximum(jnp.sum(ok), 1)
        within = d2 < (3 * SIGMA) ** 2
        out["modes_covered"] = jnp.sum(100 * jnp.sum(within, axis=0) >= n_eval).astype(jnp.int32)
    return out


def finite(tree) -> Array:
    """``()`` bool: every leaf of ``tree`` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))
