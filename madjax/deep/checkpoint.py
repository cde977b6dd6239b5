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
* ``meta`` (``JsonSave``): ``generation``, the metric rows so far, and the
  sizes needed to rebuild the restore target (``n_history``, ``pool_rows``).

The restore target of the pool is its *row structure* -- the pytree of
``jax.ShapeDtypeStruct`` of a one-row dataset, e.g.
``jax.eval_shape(lambda k: source.sample(k, 1), key)`` -- with the leading
axis set to ``pool_rows``: the structure comes from the data, never from a
guessed shape or dtype.

Metrics round-trip exactly: JSON writes Python floats with ``repr``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


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
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=options, item_names=("state", "meta")
        )

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
        }
        self._manager.save(
            generation, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_params: Any, *, row_structure: Any = None,
                       sample_shape: tuple | None = None) -> Restored | None:
        """Restore the last finished generation, or return None if there is none.

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
        step = self._manager.latest_step()
        if step is None:
            return None
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        target = {"params": abstract_params, "history": [abstract_params] * meta["n_history"]}
        if meta["pool_rows"] > 0:
            if row_structure is None:
                if sample_shape is None:
                    raise ValueError("the checkpoint holds a pool: pass row_structure (or sample_shape)")
                row_structure = jax.ShapeDtypeStruct((1, *sample_shape), np.float32)
            target["pool"] = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct((meta["pool_rows"], *s.shape[1:]), s.dtype), row_structure
            )
        state = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
        state = jax.tree.map(_uncommitted, state)
        return Restored(
            generation=int(meta["generation"]),
            params=state["params"],
            history=list(state["history"]),
            pool=state.get("pool"),
            metrics=list(meta["metrics"]),
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


def pool_rows(pool: Any) -> int:
    """Rows of a pool (a pytree whose leaves share the leading axis); 0 for None."""
    if pool is None:
        return 0
    return int(jax.tree.leaves(pool)[0].shape[0])
