"""The registry of jittable models: what ``--model`` may name, and how a request becomes a spec.

A jittable model is one module (its :class:`~madjax.base.ModelSpec` and
:class:`~madjax.base.LoopModel`) plus one entry here: :data:`MODELS` maps its
name to a :class:`Entry` -- how to build its spec from the sizes of a request,
the targets it runs on, the fewest points a training set may hold, and its
per-chain working set and cost for the up-front estimates
(:mod:`madjax.resources`). ``simulate``, ``effective-size`` and ``sweep`` take
``--model`` from this table and need no other change.

Sizes of point models are traced: every draw fills a buffer of ``draw_rows``
rows (the largest of n_ini, n_r, n_s over the run or grid), and the KDE keeps
``train_rows`` rows (the largest training set the loop builds).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from madjax.base import ModelSpec
from madjax.points import TARGETS, target_dim
from madjax.resources import chain_bytes, chain_generation_seconds
from madjax.validation import ParameterError, check_choice, check_dtype, check_int


class Entry(NamedTuple):
    """One registered model.

    ``table`` gives the E-dist table's defaults ``(n_min, n_max, chains, points)``:
    n from the fewest points a fit takes to as far as the model's cost allows;
    ``chains`` is a number or a function of d (:attr:`ModelChoice.table`).

    Attributes:
      build: ``build(dim=, dtype=, draw_rows=, train_rows=, **options) -> ModelSpec``.
      targets: the targets it runs on (first = default).
      min_points: the fewest points a training set may hold.
      options: the model's own keyword options (``engine``, ``bandwidth``, …)
        with their defaults.
      cost: ``cost(spec, memory, generations, accumulate) -> (bytes, seconds)``
        per chain and per chain-generation.
    """

    build: Callable[..., ModelSpec]
    targets: tuple
    min_points: Callable[[dict], int]
    options: dict
    cost: Callable
    table: tuple


def _gaussian(*, dim, dtype, draw_rows, train_rows, target="normal", engine="exact", factor="eigh", w2_every=1,
              estimator="unbiased", spectrum=()):
    from madjax.gaussian import GaussianSpec

    del train_rows, target
    return GaussianSpec(dim=dim, dtype=dtype, engine=engine, factor=factor,
                        max_points=draw_rows if engine == "sampled" else 0, w2_every=w2_every,
                        estimator=estimator, spectrum=tuple(spectrum))


def _gaussian_cost(spec, memory, generations, accumulate):
    itemsize = np.dtype(spec.dtype).itemsize
    pool = generations * spec.points if accumulate else 0
    return (chain_bytes(spec.dim, memory, itemsize, points=spec.points, pool_rows=pool),
            chain_generation_seconds(spec.dim, memory, points=spec.points))


def _gmm(*, dim, dtype, draw_rows, train_rows, target="grid", n_eval=None):
    from madjax.gmm import GMMSpec

    del dim, train_rows, target
    return GMMSpec(draw_rows=draw_rows, dtype=dtype, **({} if n_eval is None else {"n_eval": n_eval}))


def _gmm_cost(spec, memory, generations, accumulate):
    itemsize = np.dtype(spec.dtype).itemsize
    width = spec.dim + spec.n_components  # a point and its responsibilities
    rows = (generations if accumulate else 2) * spec.draw_rows + spec.n_eval
    return (chain_bytes(spec.dim, memory, itemsize, points=rows, width=width),
            spec.max_iter * chain_generation_seconds(spec.dim, 1, points=rows, width=width) / 10)


def _kde(*, dim, dtype, draw_rows, train_rows, target="normal", bandwidth="scott", n_eval=None, w2_every=1):
    from madjax.kde import KDESpec

    extra = {} if n_eval is None else {"n_eval": n_eval}
    return KDESpec(draw_rows=draw_rows, capacity=train_rows, dim=dim, dtype=dtype, target=target,
                   bandwidth=bandwidth, w2_every=w2_every, **extra)


def _kde_cost(spec, memory, generations, accumulate):
    itemsize = np.dtype(spec.dtype).itemsize
    pool = generations * spec.draw_rows if accumulate else 0
    sinkhorn = 3 * spec.n_wd * spec.n_wd  # three cost matrices of the debiased divergence
    return (chain_bytes(spec.dim, memory, itemsize, points=spec.draw_rows + spec.capacity + spec.n_eval,
                        pool_rows=pool) + sinkhorn * itemsize,
            chain_generation_seconds(spec.dim, memory, points=spec.draw_rows + spec.n_eval)
            + chain_generation_seconds(1, 1, points=sinkhorn // 10, width=10))


def _gaussian_table_chains(dim: int) -> int:
    """Chains of the Gaussian's E-dist table: 1024 · ⌈16/d⌉.

    The table's common random numbers make its error one offset shared by
    every n_e read from it (the n_e se carries it). W2's relative spread per
    chain falls with d, so fewer chains serve a larger d: the table's relative
    se at n = 12 is 0.4 % in d = 1 and 2, 0.17 % in d = 10, 0.12 % in d = 16
    (1024 chains in d = 2 gave 1.7 % for the known-covariance fit, and n_e
    moves twice as much). The exact engine's cost does not grow with n: each
    of these tables builds in 3–5 s on 2 cores.
    """
    return 1024 * -(-16 // dim)


MODELS: dict[str, Entry] = {
    "gaussian": Entry(_gaussian, ("normal",), lambda o: 2,
                      {"engine": "exact", "factor": "auto", "w2_every": 1, "estimator": "unbiased", "spectrum": ()},
                      _gaussian_cost, (2, 10**7, _gaussian_table_chains, 61)),
    "gmm": Entry(_gmm, ("grid",), lambda o: 25, {"n_eval": None}, _gmm_cost, (25, 10**5, 64, 25)),
    "kde": Entry(_kde, ("normal", "grid"), lambda o: 2, {"bandwidth": "scott", "n_eval": None, "w2_every": 1},
                 _kde_cost, (2, 10**4, 128, 31)),
}
"""Every model ``--model`` may name."""

MODEL_NAMES = tuple(MODELS)


def train_rows(n_ini, n_real, n_syn, *, generations: int, accumulate: bool, growth=0.0, schedule=()) -> int:
    """The largest training set the loop builds over all cells given: generation 1's n_ini, or
    ``n_r + n_s`` (``n_r + (T − 1) n_s`` with accumulation), with the synthetic sizes of a
    growth α or a schedule (:func:`madjax.loops.synthetic_extent`)."""
    from madjax.loops import synthetic_extent

    n_ini, n_real, n_syn = (np.asarray(v, np.int64) for v in (n_ini, n_real, n_syn))
    largest, total = synthetic_extent(n_syn, growth, schedule, max(generations, 2))
    if not accumulate and not growth and not schedule:  # per cell: n_r + n_s (the largest pair, not each largest)
        return int(max(np.max(n_ini), np.max(n_real + n_syn)))
    later = np.max(n_real) + (total if accumulate else largest)
    return int(max(np.max(n_ini), later))


CAPACITY_FLOOR = 256


def capacity_level(rows: int) -> int:
    """Rows rounded up to a power of four, at least :data:`CAPACITY_FLOOR`: cells of a grid (and sizes
    of an E-dist table) share one compiled function per level. A point model compiles in ~25 s on a
    CPU (the GMM's EM, k-means++ and diagnostics), far more than a factor ≤ 4 of buffer work costs at
    these sizes; below the floor a fit's fixed costs dominate anyway."""
    level = CAPACITY_FLOOR
    while level < rows:
        level *= 4
    return level


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A validated choice of jittable model for the steady-state machinery (n_e, sweeps, tables).

    Attributes:
      name: a key of :data:`MODELS`.
      dim: the data dimension (2 on the grid target).
      dtype: ``"float32"`` or ``"float64"``.
      target: ``"normal"`` or ``"grid"``.
      options: the model's options as sorted ``(name, value)`` pairs.
    """

    name: str
    dim: int
    dtype: str = "float32"
    target: str = "normal"
    options: tuple = ()

    @classmethod
    def create(cls, name: str = "gaussian", *, dim=None, dtype: str = "float32", target=None,
               **options) -> "ModelChoice":
        """Validate (raises :class:`~madjax.validation.ParameterError` naming the option)."""
        target, dim, options = resolve_model(name, target=target, dim=dim, options=options)
        return cls(name, dim, check_dtype(dtype), target, tuple(sorted(options.items())))

    @property
    def entry(self) -> Entry:
        return MODELS[self.name]

    @property
    def table(self) -> tuple[int, int, int, int]:
        """The E-dist table's defaults ``(n_min, n_max, chains, points)`` for this d."""
        n_min, n_max, chains, points = self.entry.table
        return n_min, n_max, chains(self.dim) if callable(chains) else chains, points

    @property
    def min_points(self) -> int:
        return self.entry.min_points(dict(self.options))

    def spec(self, *, draw_rows: int, train_rows: int, **overrides) -> ModelSpec:
        """The model's spec for buffers of ``draw_rows`` rows (and ``train_rows`` kept by the KDE)."""
        return self.entry.build(dim=self.dim, dtype=self.dtype, draw_rows=draw_rows, train_rows=train_rows,
                                target=self.target, **{**dict(self.options), **overrides})

    def group_key(self, loop: str, cell: dict):
        """Cells with equal keys share one compiled function: the Gaussian's factorisation
        (:func:`madjax.gaussian.choose_factor`), a point model's :func:`capacity_level`."""
        n_ini = cell.get("n_ini", max(cell["n_real"], 2))
        if self.name == "gaussian":
            from madjax.gaussian import choose_factor

            factor = dict(self.options).get("factor", "auto")
            return choose_factor(loop, self.dim, n_ini=n_ini, n_real=cell["n_real"], n_syn=cell["n_syn"],
                                 weighted="real_weight" in cell) if factor in ("auto", None) else factor
        return capacity_level(max(n_ini, cell["n_real"], cell["n_syn"]))

    def group_spec(self, key) -> ModelSpec:
        """The spec of a group of cells (:meth:`group_key`)."""
        if self.name == "gaussian":
            return self.spec(draw_rows=0, train_rows=0, factor=key)
        return self.spec(draw_rows=key, train_rows=2 * key)

    def cost(self, memory: int, rows: int) -> tuple[int, float]:
        """Per-chain bytes and seconds per chain-generation with draws of ``rows`` rows."""
        spec = self.group_spec("eigh" if self.name == "gaussian" else capacity_level(rows))
        return self.entry.cost(spec, memory, 1, False)

    def record(self) -> dict:
        """What a result depends on, for stores and caches."""
        return {"model": self.name, "dim": self.dim, "dtype": self.dtype, "target": self.target,
                **dict(self.options)}


def resolve_model(model: str, *, target=None, dim=None, options: dict | None = None) -> tuple[str, int, dict]:
    """Validate ``model``, its ``target`` and ``dim``, and fill in its options' defaults.

    Returns ``(target, dim, options)``; options the model does not take are an
    error naming the first one (e.g. ``bandwidth`` for the Gaussian).
    """
    check_choice("model", model, MODEL_NAMES)
    entry = MODELS[model]
    target = entry.targets[0] if target is None else check_choice("target", target, TARGETS)
    if target not in entry.targets:
        raise ParameterError("target", f"the {model} model runs on {' or '.join(entry.targets)}, got {target!r}")
    if target == "grid":
        dim = 2 if dim is None else check_int("dim", dim, minimum=2, maximum=2)
    elif dim is None:
        raise ParameterError("dim", f"is required for the {model} model on the {target} target")
    dim = check_int("dim", dim, minimum=1)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if "reference" in given:  # a user's reference N(μ₀, Σ₀) runs as its spectrum
        from madjax.gaussian import resolve_reference

        if model != "gaussian":
            raise ParameterError("reference", f"is an option of the gaussian model (the {model} model's "
                                              "references are its targets)")
        given["spectrum"] = resolve_reference(given.pop("reference"), dim)
    unknown = sorted(set(given) - set(entry.options))
    if unknown:
        raise ParameterError(unknown[0], f"is not an option of the {model} model")
    return target, target_dim(target, dim), {**entry.options, **given}
