"""Per-generation orbax checkpoints of a deep loop (DESIGN §6).

One checkpoint per finished generation t, saved synchronously by an orbax
``CheckpointManager`` (which writes to a temporary directory and renames it
when complete, so a run killed mid-save leaves the previous checkpoint
intact). Each holds two items:

* ``state`` (``StandardSave``): ``params`` of G^t (for the deep models the
  network state *and* the optimizer state), ``history`` -- the parameters of
  the K − 1 models before it that memory K samples from -- and ``pool``, the
  accumulated synthetic pool (absent when empty: orbax refuses zero-size
  arrays);
* ``meta`` (``JsonSave``): ``generation``, the metric rows so far, and the
  sizes needed to rebuild the restore target (``n_history``, ``pool_rows``).

Metrics round-trip exactly: JSON writes Python floats with ``repr``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
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
        """Checkpoint generation ``generation`` (blocks until it is on disk)."""
        state = {"params": params, "history": list(history)}
        if pool is not None and pool.shape[0] > 0:
            state["pool"] = pool
        meta = {
            "generation": int(generation),
            "metrics": metrics,
            "n_history": len(history),
            "pool_rows": 0 if pool is None else int(pool.shape[0]),
        }
        self._manager.save(
            generation, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_params: Any, *, sample_shape: tuple) -> Restored | None:
        """Restore the last finished generation, or return None if there is none.

        Args:
          abstract_params: ``jax.eval_shape`` of the model's ``init``: the
            structure, shapes and dtypes of one model's parameters.
          sample_shape: shape of one data point (for the pool's target).
        """
        step = self._manager.latest_step()
        if step is None:
            return None
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        target = {"params": abstract_params, "history": [abstract_params] * meta["n_history"]}
        if meta["pool_rows"] > 0:
            target["pool"] = jax.ShapeDtypeStruct((meta["pool_rows"], *sample_shape), np.float32)
        state = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
        return Restored(
            generation=int(meta["generation"]),
            params=state["params"],
            history=list(state["history"]),
            pool=state.get("pool"),
            metrics=list(meta["metrics"]),
        )

    def close(self) -> None:
        self._manager.close()
