"""Per-generation orbax checkpoints of a deep loop (DESIGN §6).

One checkpoint per finished generation t, saved synchronously by an orbax
``CheckpointManager`` (which writes to a temporary directory and renames it
when complete, so a run killed mid-save leaves the previous checkpoint
intact). Each holds two items:

* ``state`` (``StandardSave``): ``params`` of G^t (for the deep models the
  network state *and* the optimizer state), ``history`` -- the parameters of
  the K − 1 models before it that memory K samples from -- and ``pool``, the
  accumulated synthetic pool (absent when empty: orbax refuses zero-size
  arrays). The pool is any pytree of arrays sharing a leading row axis: an
  ``(n, d)`` array of points, or an ``Images(x, y)`` of images and labels;
* ``meta`` (``JsonSave``): ``generation``, the metric rows so far, the
  sizes needed to rebuild the restore target (``n_history``, ``pool_rows``)
  and ``state_sha256``, a SHA-256 of every array of ``state`` (dtype, shape
  and bytes, in tree order).

The restore target of the pool is its *row structure* -- the pytree of
``jax.ShapeDtypeStruct`` of a one-row dataset, e.g.
``jax.eval_shape(lambda k: source.sample(k, 1), key)`` -- with the leading
axis set to ``pool_rows``: the structure comes from the data, never from a
guessed shape or dtype.

Metrics round-trip exactly: JSON writes Python floats with ``repr``.

A damaged latest checkpoint (a disk fault, a file edited or truncated) does
not end a run: :meth:`Checkpointer.restore_latest` falls back to the newest
one that restores and checks out (``keep`` ≥ 2 keeps one before the latest).
Orbax checks that files decode, not what they hold: the checksum catches
arrays that decode but are not the ones saved (another generation's files
copied in, bytes altered inside a chunk that still decompresses). A
checkpoint written before checksums (no ``state_sha256``) is restored
unchecked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from madjax._progress import log


class _NeedsPool(Exception):
    """A checkpoint holds a pool but the caller gave no row structure."""


class Restored(NamedTuple):
    """A restored generation: ``params`` of G^t, older ``history``, ``pool`` (or None), ``metrics``."""

    generation: int
    params: Any
    history: list
    pool: Any
    metrics: list


class Checkpointer:
    """Save and restore the per-generation state of one deep-loop run.

    Args:
      directory: where the checkpoints live (created).
      keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str, *, keep: int = 2):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, cleanup_tmp_directories=True, create=True
        )
        self._directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=("state", "meta"))

    def latest(self) -> int | None:
        """The last finished generation, or None."""
        return self._manager.latest_step()

    def save(self, generation: int, *, params: Any, history: list, pool: Any, metrics: list) -> None:
        """Checkpoint generation ``generation`` (blocks until it is on disk).

        Args:
          generation: t, the generation just finished.
          params: parameters of G^t.
          history: parameters of the models before it that memory K keeps.
          pool: the accumulated synthetic pool (a pytree with a leading row
            axis), or None.
          metrics: the metric rows of generations 1..t (JSON-able).
        """
        rows = pool_rows(pool)
        state = {"params": params, "history": list(history)}
        if rows > 0:
            state["pool"] = pool
        meta = {
            "generation": int(generation),
            "metrics": metrics,
            "n_history": len(history),
            "pool_rows": rows,
            "state_sha256": state_digest(state),
        }
        self._manager.save(
            generation, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_params: Any, *, row_structure: Any = None,
                       sample_shape: tuple | None = None) -> Restored | None:
        """Restore the newest checkpoint that restores, or return None if there is none.

        A checkpoint that fails to restore (damaged files) or whose metadata
        contradicts its step (another generation, a metric row per generation
        missing) is deleted, and the one before it is tried; one warning line
        says which generations were dropped and where the run resumes.

        Args:
          abstract_params: ``jax.eval_shape`` of the model's ``init``: the
            structure, shapes and dtypes of one model's parameters.
          row_structure: the pool's structure as a pytree of
            ``jax.ShapeDtypeStruct`` with any leading size (module docstring),
            e.g. ``jax.eval_shape(lambda k: source.sample(k, 1), key)``.
          sample_shape: shorthand for a pool of float32 points of this shape
            (``row_structure`` = ``ShapeDtypeStruct((1, *sample_shape), float32)``).

        Raises:
          ValueError: if the checkpoint holds a pool and neither
            ``row_structure`` nor ``sample_shape`` is given.
        """
        if row_structure is None and sample_shape is not None:
            row_structure = jax.ShapeDtypeStruct((1, *sample_shape), np.float32)
        dropped = []
        restored = None
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._restore(step, abstract_params, row_structure)
                break
            except _NeedsPool:
                raise ValueError("the checkpoint holds a pool: pass row_structure (or sample_shape)") from None
            except Exception as err:  # noqa: BLE001 - orbax/tensorstore errors share no base: the step is damaged
                dropped.append((step, " ".join(str(err).split())[:120] or type(err).__name__))
        if dropped:
            for step, _ in dropped:
                self._manager.delete(step)
            where = f"resuming from generation {restored.generation}" if restored else "starting from generation 1"
            steps = ", ".join(str(s) for s, _ in dropped)
            log.warning("%s: checkpoint(s) of generation %s unusable (%s); %s", self._directory, steps,
                        dropped[0][1], where)
        return restored

    def _restore(self, step: int, abstract_params: Any, row_structure: Any) -> Restored:
        """Restore checkpoint ``step``; raise if it is damaged or its metadata contradicts it."""
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        metrics = meta["metrics"]
        if int(meta["generation"]) != step:
            raise ValueError(f"its metadata names generation {meta['generation']}")
        if [row.get("generation") for row in metrics] != list(range(1, step + 1)):
            raise ValueError("its metric rows are not generations 1..t")
        target = {"params": abstract_params, "history": [abstract_params] * int(meta["n_history"])}
        if int(meta["pool_rows"]) > 0:
            if row_structure is None:
                raise _NeedsPool
            target["pool"] = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct((int(meta["pool_rows"]), *s.shape[1:]), s.dtype), row_structure
            )
        state = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
        state = jax.tree.map(_uncommitted, state)
        if "state_sha256" in meta and state_digest(state) != meta["state_sha256"]:
            raise ValueError("its arrays differ from the ones saved (checksum)")
        return Restored(
            generation=step,
            params=state["params"],
            history=list(state["history"]),
            pool=state.get("pool"),
            metrics=list(metrics),
        )

    def close(self) -> None:
        self._manager.close()


def _uncommitted(leaf: Any) -> Any:
    """A restored array as a fresh, uncommitted device array.

    orbax hands back arrays committed to a device sharding; jit keys its cache
    on that, so a resumed run would recompile every model function (tens of
    seconds for a U-Net) although nothing changed. Values are unchanged.
    """
    return jnp.asarray(np.asarray(leaf)) if isinstance(leaf, jax.Array) else leaf


def state_digest(state: Any) -> str:
    """SHA-256 of a pytree's arrays: each leaf's dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def pool_rows(pool: Any) -> int:
    """Rows of a pool (a pytree whose leaves share the leading axis); 0 for None."""
    if pool is None:
        return 0
    return int(jax.tree.leaves(pool)[0].shape[0])
