"""The host-loop executor: one chain of a self-consuming loop with a trained model.

What each generation trains on is defined once, in :mod:`madjax.loops`
(:func:`~madjax.loops.first_training_set`, :func:`~madjax.loops.training_set`:
real part, synthetic part from the last K models with bias λ, accumulating
pool; the loop table and its variants are documented there). This module
runs that same step for the deep models: :func:`host_model` gives a
:class:`~madjax.base.GenerativeModel` and its real :class:`DataSource` the
step's data algebra on pytrees of rows, and :func:`run_loop` is the executor.

Unlike the analytical loops (a ``lax.scan``), a deep generation is minutes of
training, so this driver is a Python loop that checkpoints after every
generation with orbax (:mod:`madjax.deep.checkpoint`) and resumes from the last
finished one. Keys are those of the jittable executor
(:func:`madjax.loops.generation_keys`): generation t's real draw, synthetic
draw, fit and evaluation come from ``fold_in(seed_key, t)``, the initial
parameters from ``fold_in(seed_key, 0)`` and the real reference from
``fold_in(fold_in(seed_key, 0), 1)``, so a run killed at any point and resumed
gives the same numbers as an uninterrupted run.

**What the metrics describe.** The paper measures a deep generation by its
*synthetic data* (FID / precision / recall of generated samples, Figs 4, 13,
15), so each generation is evaluated on ``n_eval`` fresh samples of G^t drawn
with the loop's bias λ -- the law of the data the next generation trains on.
(The Gaussian engine instead describes the fitted N(μ_t, Σ_t), DESIGN §2.)

**Datasets are pytrees.** A training set is whatever the source's and the
model's ``sample`` return: an ``(n, d)`` array of points (GLOW), or an
``Images(x, y)`` of images ``(n, H, W)`` and labels ``(n,)`` (DDPM, WGAN-GP).
Every operation the driver does on data -- concatenating the real and
synthetic parts, permuting the memory-K draw, growing the accumulated pool,
checkpointing it -- maps over the leaves, which share the leading row axis.
The pool's checkpoint target is taken from the source's row structure
(``jax.eval_shape(lambda k: source.sample(k, 1), key)``), so its dtypes come
from the data.

**Real draws.** ``source.sample(key, n)`` is the law of the real data: exact
draws for a closed-form law (Rosenbrock), or n distinct images drawn
uniformly *without replacement* from a finite training split. The fresh loop
makes one such draw per generation with its own key: within a generation
the n_r images are distinct, but on a finite split the draws of different
generations overlap (by about n_r²/N images for a split of N). With MNIST
(N = 60 000, n_r = 2000) that is ~67 shared images of 2000 per pair of
generations; on the 1500-image digits split it is much more, which is the
price of an offline default.

Outputs in ``out`` (DESIGN §10):

* ``metrics.csv`` -- one row per finished generation: ``generation`` then the
  metrics, rewritten from the checkpoint after every generation;
* ``samples/gen_{t}.npz`` (t zero-padded to the width of T) and
  ``samples/gen_{t}.png`` for t = 1, every ``save_every``-th generation and
  t = T: array ``x`` (float32, data space: points ``(n, d)`` or images
  ``(n, H, W)`` in [0, 1]) and, for a conditional image model, ``y`` (int32
  labels); the PNG is a scatter of points or a grid of images (one row per
  class when labelled);
* ``checkpoints/`` -- the orbax checkpoints (the last ``keep``);
* ``config.json`` -- the run's configuration, stamped with ``schema_version``
  and the madjax and jax versions (it describes ``metrics.csv`` and
  ``samples/`` beside it); a later call with the same ``out`` resumes only if
  the schema is this madjax's and everything but ``generations`` and
  ``save_every`` matches.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from madjax._progress import progress_bar
from madjax.base import GenerativeModel, LoopModel
from madjax.data import DataSource
from madjax.deep.checkpoint import Checkpointer
from madjax.figures.samples import sample_png
from madjax.loops import LoopParams, first_training_set, generation_keys, grown_size, training_set
from madjax.io import READ_ERRORS, atomic_path, check_schema, provenance, read_json, write_json
from madjax.validation import ParameterError, check_choice, check_int, check_lam, check_writable

Array = jax.Array

LOOPS = ("fully-synthetic", "synthetic-augmentation", "fresh")

# A dataset: an (n, ...) array or a pytree of arrays sharing the leading axis (Images(x, y)).
Dataset = Any

# evaluate(key, params, x_model, x_ref) -> {metric: float}
EvaluateFn = Callable[[Array, Any, Dataset, Dataset], Mapping[str, float]]

# Configuration fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("generations", "save_every")


@dataclasses.dataclass(frozen=True)
class DeepLoop:
    """Which loop, and its sizes (all static: a deep loop runs one chain).

    Attributes:
      kind: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      n_ini: real samples of generation 1 (must equal ``n_real`` in the
        synthetic-augmentation loop, whose G¹ is fitted to D_r).
      n_real: real samples per generation t ≥ 2 (0 in the fully synthetic loop).
      n_syn: synthetic samples drawn per generation t ≥ 2.
      memory: K, the number of previous models synthetic points come from.
      accumulate: keep every previous generation's synthetic samples.
      subsample: train on a uniform subsample of ``n_train`` rows of the
        training set (accumulate-subsample; needs ``accumulate``).
      n_train: the subsample's size (0: ``n_ini``).
      growth: α, generation t draws ``⌈n_syn t^α⌉`` synthetic samples.

    Weighted mixing and curation need a model's ``mix`` and ``tilt``, which
    the deep models do not have: they are the jittable models' operators.

    Raises:
      ParameterError: naming the offending field (``kind`` is reported as
        ``loop``); checked in ``__post_init__``.
    """

    kind: str
    n_ini: int
    n_real: int
    n_syn: int
    memory: int = 1
    accumulate: bool = False
    subsample: bool = False
    n_train: int = 0
    growth: float = 0.0

    weighted = False
    tilted = False
    schedule = ()

    def __post_init__(self):
        check_choice("loop", self.kind, LOOPS)
        if self.subsample and not self.accumulate:
            raise ParameterError("subsample", "accumulate-subsample needs accumulate")
        check_int("n_train", self.n_train, minimum=0)
        if not (isinstance(self.growth, (int, float)) and 0 <= self.growth <= 4):
            raise ParameterError("growth", f"must be a number in [0, 4], got {self.growth!r}")
        check_int("n_ini", self.n_ini, minimum=2)
        check_int("memory", self.memory, minimum=1)
        if self.accumulate and self.memory > 1:
            raise ParameterError("memory", "memory K > 1 cannot be combined with accumulate")
        if self.kind == "fully-synthetic":
            check_int("n_syn", self.n_syn, minimum=2)
            if self.n_real != 0:
                raise ParameterError("n_real", f"must be 0 (or omitted) in the fully-synthetic loop, got {self.n_real}")
        elif self.kind == "synthetic-augmentation":
            check_int("n_real", self.n_real, minimum=2)
            check_int("n_syn", self.n_syn, minimum=0)
            if self.n_ini != self.n_real:
                raise ParameterError(
                    "n_ini", f"must equal n_real ({self.n_real}) in the synthetic-augmentation loop, got {self.n_ini}"
                )
        else:
            check_int("n_real", self.n_real, minimum=0)
            check_int("n_syn", self.n_syn, minimum=0)
            if self.n_real + self.n_syn < 2:
                raise ParameterError("n_syn", f"n_real + n_syn must be >= 2, got {self.n_real + self.n_syn}")

    def training_size(self, t: int) -> int:
        """Points in the training set of generation ``t`` (1-based)."""
        if t == 1:
            return self.n_ini
        grown = [int(grown_size(self.n_syn, self.growth, s)) for s in range(2, t + 1)]
        total = self.n_real + (sum(grown) if self.accumulate else grown[-1])
        return min(total, self.n_train or self.n_ini) if self.subsample else total


def num_rows(data: Dataset) -> int:
    """Rows of a dataset (the shared leading axis of its leaves)."""
    return int(jax.tree.leaves(data)[0].shape[0])


def concatenate(parts: list) -> Dataset:
    """Row-wise concatenation of datasets with one structure (leaf by leaf); empty parts drop out."""
    kept = [p for p in parts if num_rows(p) > 0] or parts[:1]
    if len(kept) == 1:
        return kept[0]
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *kept)


def take_rows(data: Dataset, index: Array) -> Dataset:
    """``data[index]`` on every leaf."""
    return jax.tree.map(lambda a: a[index], data)


def row_structure(source: DataSource) -> Any:
    """Structure, trailing shapes and dtypes of the source's data: a one-row ``eval_shape``.

    Nothing is drawn (``jax.eval_shape`` only traces ``source.sample``).
    """
    return jax.eval_shape(lambda key: source.sample(key, 1), jax.random.PRNGKey(0))


def empty_like(structure: Any) -> Dataset:
    """A zero-row dataset of the given row structure."""
    return jax.tree.map(lambda s: jnp.zeros((0, *s.shape[1:]), s.dtype), structure)


def sample_memory(key: Array, model: GenerativeModel, history: list, n: int, lam: float) -> Dataset:
    """n samples, each from a model drawn uniformly among ``history`` (the last K).

    Args:
      key: PRNG key.
      model: the generative model record.
      history: parameters of the available previous models, oldest first.
      n: number of samples.
      lam: sampling bias λ.

    Returns:
      A dataset of ``n`` rows, shuffled (every leaf by the same permutation)
      so the models are interleaved.
    """
    k_assign, k_draw, k_perm = jax.random.split(key, 3)
    if len(history) == 1:
        return model.sample(k_draw, history[0], n, lam)
    assignment = jax.random.randint(k_assign, (n,), 0, len(history))
    counts = np.bincount(np.asarray(assignment), minlength=len(history))
    parts = [
        model.sample(jax.random.fold_in(k_draw, j), params, int(c), lam)
        for j, (params, c) in enumerate(zip(history, counts))
        if c > 0
    ]
    return take_rows(concatenate(parts), jax.random.permutation(k_perm, n))


def host_model(model: GenerativeModel, source: DataSource) -> LoopModel:
    """A deep model and its real source in the vocabulary of the generation step.

    The host loop's data algebra works on pytrees of rows of any length:
    ``concat`` and ``append`` concatenate leaf by leaf, ``empty`` is a
    zero-row dataset of the source's row structure, ``sample_real`` is
    ``source.sample``, ``sample_mixture`` draws each row from a uniformly
    chosen model of the history list (:func:`sample_memory`). Empty draws
    (n = 0) never reach the model. The host loop evaluates generations with
    its own ``evaluate``, so ``diagnose`` is unused.
    """
    structure = row_structure(source)
    empty = empty_like(structure)

    def sample(key, params, n, lam):
        return model.sample(key, params, n, lam) if n > 0 else empty

    def sample_mixture(key, history, valid, n, lam):
        del valid  # the host loop keeps only the last K models
        return sample_memory(key, model, history, n, lam) if n > 0 else empty

    def subsample(key, data, n):
        rows = num_rows(data)
        return take_rows(data, jax.random.permutation(key, rows)[: min(int(n), rows)])

    return LoopModel(init=model.init, fit=model.fit, sample=sample, subsample=subsample,
                     sample_real=lambda key, n: source.sample(key, n) if n > 0 else empty,
                     sample_mixture=sample_mixture, concat=lambda *parts: concatenate(list(parts)),
                     empty=lambda generations: empty, append=lambda pool, new: concatenate([pool, new]),
                     size=num_rows, confine=lambda data, first: data, diagnose=None)


def check_resumable(out: str, record: Mapping[str, Any]) -> None:
    """Raise ``ParameterError('out')`` if ``out`` holds a run with another configuration.

    ``record`` is the run's JSON-able configuration; only the fields in
    ``_RESUMABLE_CHANGES`` (``generations``, ``save_every``) may differ.
    """
    check_writable("out", out, directory=True)
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        if os.path.isdir(os.path.join(out, "checkpoints")):
            raise ParameterError("out", f"{out!r} holds checkpoints but no config.json; use a new directory")
        return
    saved = read_json(path, "out")
    check_schema(path, saved, "out")
    mine = _comparable(json.loads(json.dumps(record)))
    theirs = _comparable(saved)
    if mine != theirs:
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ParameterError(
            "out", f"{out!r} holds a run with a different configuration ({', '.join(changed)}); use a new directory"
        )


def _comparable(record: Mapping[str, Any]) -> dict:
    return {k: v for k, v in record.items() if k not in _RESUMABLE_CHANGES and k not in _STAMP}


_STAMP = ("schema_version", "madjax_version", "jax_version")  # written beside the configuration


def run_loop(
    model: GenerativeModel,
    source: DataSource,
    loop: DeepLoop,
    *,
    lam: float,
    generations: int,
    seed: int,
    out: str,
    evaluate: EvaluateFn,
    n_eval: int,
    n_ref: int | None = None,
    reference: Dataset | None = None,
    save_every: int = 1,
    keep: int = 2,
    record: Mapping[str, Any] | None = None,
    progress: bool = True,
    label: str = "generation",
) -> list[dict]:
    """Run (or resume) one chain of a deep self-consuming loop.

    Args:
      model: ``GenerativeModel(init, fit, sample)``, ``fit`` returning
        ``(params, info)``; its ``Params`` must be a pytree orbax can save
        (``jax.eval_shape(model.init, key)`` gives the restore target). The
        fit's ``info`` is not recorded (metrics.csv holds the evaluation).
      source: the real-data source.
      loop: loop kind and sizes.
      lam: sampling bias λ ∈ (0, 1] of every synthetic draw (and of the
        evaluation samples).
      generations: T, the last generation to run (resuming a run with a
        larger T continues it).
      seed: integer seed; ``seed_key = PRNGKey(seed)``.
      out: output directory (created).
      evaluate: ``evaluate(key, params, x_model, x_ref) -> {name: float}``,
        called once per generation with ``n_eval`` samples of G^t at λ and
        the real reference ``x_ref`` (the same every generation).
      n_eval: model samples evaluated (and saved) per generation.
      n_ref: the reference is ``n_ref`` fresh draws of ``source`` (with a
        key of its own) -- unless ``reference`` is given.
      reference: a fixed real reference dataset, e.g. a held-out test split
        (give exactly one of ``n_ref`` and ``reference``).
      save_every: write ``samples/gen_{t}`` for t = 1, multiples of
        ``save_every`` and t = T.
      keep: checkpoints kept (the latest ``keep``).
      record: JSON-able configuration written to ``out/config.json`` (and
        compared on resumption); defaults to the loop and sizes.
      progress: tqdm bars over generations (and the model's epochs), shown on
        a terminal only.
      label: the generation bar's description.

    Returns:
      The metric rows of generations 1..T (``{"generation": t, ...}``).
    """
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    save_every = check_int("save_every", save_every, minimum=1)
    n_eval = check_int("n_eval", n_eval, minimum=2)
    if (n_ref is None) == (reference is None):
        raise ParameterError("n_ref", "give exactly one of n_ref and reference")
    if reference is None:
        n_ref = check_int("n_ref", n_ref, minimum=2)
    elif num_rows(reference) < 2:
        raise ParameterError("reference", f"needs at least 2 rows, got {num_rows(reference)}")
    if record is None:
        record = {"loop": dataclasses.asdict(loop), "lam": lam, "seed": seed, "data": source.name,
                  "generations": generations, "save_every": save_every}
    check_resumable(out, record)
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    write_json(os.path.join(out, "config.json"),
               {**record, **{k: v for k, v in provenance(record).items() if k in _STAMP}}, indent=2)

    seed_key = jax.random.PRNGKey(seed)
    init_key = jax.random.fold_in(seed_key, 0)  # generation 0: the init stream (madjax.loops)
    abstract = jax.eval_shape(model.init, init_key)
    ckpt = Checkpointer(os.path.join(out, "checkpoints"), keep=keep)
    restored = ckpt.restore_latest(abstract, row_structure=row_structure(source))
    if restored is None:
        start, rows = 1, []
        params, history, pool = model.init(init_key), [], None
    else:
        start, rows = restored.generation + 1, list(restored.metrics)
        params, history, pool = restored.params, list(restored.history) + [restored.params], restored.pool
    _write_metrics(out, rows)

    host = host_model(model, source)
    sizes = LoopParams(n_ini=loop.n_ini, n_real=loop.n_real, n_syn=loop.n_syn, lam=lam, memory=loop.memory,
                       n_train=loop.n_train or loop.n_ini, growth=loop.growth)
    # D_r is generation 1's training set, drawn again (same key) when a run resumes.
    real = (first_training_set(generation_keys(seed_key, 1).real, loop.kind, host, sizes)
            if loop.kind == "synthetic-augmentation" else None)
    x_ref = (reference if reference is not None
             else source.sample(jax.random.fold_in(init_key, 1), n_ref))
    width = len(str(generations))
    with progress_bar(total=generations, desc=label, enabled=progress, unit="gen", initial=start - 1) as bar:
        for t in range(start, generations + 1):
            keys = generation_keys(seed_key, t)
            if t == 1:
                train = real if real is not None else first_training_set(keys.real, loop.kind, host, sizes)
            else:
                if loop.accumulate and pool is None:
                    pool = host.empty(generations)
                train, pool = training_set(keys, t, loop, host, sizes,
                                           history=history[-1] if loop.memory == 1 else history, valid=None,
                                           real=real, pool=pool)
            params, _ = model.fit(keys.fit, params, train)
            history = (history + [params])[-loop.memory:]

            k_sample, k_metrics = jax.random.split(keys.diagnose)
            x_model = model.sample(k_sample, params, n_eval, lam)
            metrics = evaluate(k_metrics, params, x_model, x_ref)
            rows.append({"generation": t, **{k: float(v) for k, v in metrics.items()}})
            if t == 1 or t % save_every == 0 or t == generations:
                _write_samples(out, f"gen_{t:0{width}d}", x_model, t)
            # Samples first, checkpoint second: a kill in between redoes generation t
            # and rewrites identical files; metrics.csv always mirrors the checkpoint.
            ckpt.save(t, params=params, history=history[:-1], pool=pool, metrics=rows)
            _write_metrics(out, rows)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(rows[-1].items())[1:4]})
            bar.update(1)
    ckpt.close()
    return rows[:generations]


def _write_metrics(out: str, rows: list[dict]) -> None:
    path = os.path.join(out, "metrics.csv")
    names = ["generation"] + [k for k in (rows[0] if rows else {}) if k != "generation"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:  # a kill never leaves half a CSV
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (row[k] if k == "generation" else repr(float(row[k]))) for k in names})


def read_metrics(out: str, param: str = "from") -> list[dict]:
    """The rows of ``out/metrics.csv`` (``generation`` as int, the rest as float).

    Raises:
      ParameterError: naming ``param`` and the file, when it is missing or
        not such a table (a header with ``generation``, numbers below it).
    """
    path = os.path.join(out, "metrics.csv")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and "generation" not in reader.fieldnames:
                raise ValueError("no generation column")
            return [{k: int(v) if k == "generation" else float(v) for k, v in row.items()} for row in reader]
    except FileNotFoundError:
        raise ParameterError(param, f"{path}: no such file") from None
    except (*READ_ERRORS, csv.Error) as err:
        raise ParameterError(param, f"{path}: not a metrics table ({type(err).__name__}: {err})") from None


def _write_samples(out: str, stem: str, data: Dataset, t: int) -> None:
    """``samples/{stem}.npz`` (``x``; ``y`` where labelled) and ``samples/{stem}.png``."""
    x, y = sample_arrays(data)
    base = os.path.join(out, "samples", stem)
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    with atomic_path(base + ".npz", suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    sample_png(x, y, base + ".png", f"generation {t}")


def sample_arrays(data: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` of a dataset as saved: float32 ``x``; int32 ``y`` or None.

    An array dataset is ``x`` alone. An ``Images``-like dataset (fields ``x``
    and ``y``) keeps ``y`` only where the model is conditional: an
    unconditional model marks every label −1, and its samples carry no ``y``.
    """
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = np.asarray(data.x, np.float32), np.asarray(data.y, np.int32)
        return x, (y if np.any(y >= 0) else None)
    return np.asarray(data, np.float32), None
