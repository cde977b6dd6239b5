"""Multi-host runs with JAX's own distributed runtime.

Chains are independent, so a multi-host run splits the chain ids into one
contiguous share per process, runs each share on that host's devices (sharded
over its local ``("chain",)`` mesh) and gathers the shares; process 0 writes
the results. Because chain i always uses ``fold_in(seed_key, i)``, a run on N
hosts gives the numbers of a run on one.

Launch the same command on every host with ``--distributed``::

    MADJAX_COORDINATOR=host0:1234 MADJAX_NUM_PROCESSES=2 MADJAX_PROCESS_ID=0 madjax simulate ... --distributed
    MADJAX_COORDINATOR=host0:1234 MADJAX_NUM_PROCESSES=2 MADJAX_PROCESS_ID=1 madjax simulate ... --distributed

Without these variables ``jax.distributed.initialize()`` detects Slurm, Open
MPI and TPU pods itself.
"""

from __future__ import annotations

import os

import jax

from madjax.validation import ParameterError


def initialize() -> None:
    """``jax.distributed.initialize`` from MADJAX_* variables (or cluster auto-detection)."""
    address = os.environ.get("MADJAX_COORDINATOR")
    # Cross-process collectives on CPU hosts go through gloo (GPU/TPU use their own);
    # set before initialisation, which must precede any backend query.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address is None:
        jax.distributed.initialize()
        return
    try:
        num = int(os.environ["MADJAX_NUM_PROCESSES"])
        pid = int(os.environ["MADJAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise ParameterError("distributed", "MADJAX_COORDINATOR needs integer MADJAX_NUM_PROCESSES and "
                                            "MADJAX_PROCESS_ID") from None
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
