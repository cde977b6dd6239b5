"""Multi-host runs with JAX's own distributed runtime, and the devices chains run on.

Chains are independent, so a multi-host run splits the chain ids into one
contiguous share per process, runs each share on that host's devices (sharded
over its local ``("chain",)`` mesh) and gathers the shares; process 0 writes
the results. Because chain i always uses ``fold_in(seed_key, i)``, a run on N
hosts gives the numbers of a run on one.

Launch the same command on every host with ``--distributed``::

    MADJAX_COORDINATOR=host0:1234 MADJAX_NUM_PROCESSES=2 MADJAX_PROCESS_ID=0 madjax simulate ... --distributed
    MADJAX_COORDINATOR=host0:1234 MADJAX_NUM_PROCESSES=2 MADJAX_PROCESS_ID=1 madjax simulate ... --distributed

Without these variables ``jax.distributed.initialize()`` detects Slurm, Open
MPI and TPU pods itself. ``MADJAX_INIT_TIMEOUT`` (seconds, default 300)
bounds the wait for the coordinator. A misconfiguration -- no coordinator and
no cluster to detect, a malformed address, a process id out of range, a
coordinator that does not answer, a port already taken -- is one
:class:`~madjax.validation.ParameterError` naming ``distributed``, checked
before JAX's runtime starts (which would otherwise abort the process with a
native stack trace after its timeout).
"""

from __future__ import annotations

import os
import socket
import time

import jax

from madjax.validation import ParameterError

DEFAULT_INIT_TIMEOUT_S = 300


def chain_devices() -> list:
    """The local devices a batch of chains is sharded over.

    All local devices, except on the CPU backend, where one device runs the
    batch: jaxlib's CPU LAPACK kernels of several host devices
    (``--xla_force_host_platform_device_count``) share one thread pool and
    deadlock when they run at once (benchmarks/README.md), and one CPU device
    already uses every core. Results never depend on the device count.
    """
    devices = jax.local_devices()
    return devices[:1] if devices[0].platform == "cpu" else devices


def _env_int(name: str, *, minimum: int, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ParameterError("distributed", f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ParameterError("distributed", f"{name} must be >= {minimum}, got {value}")
    return value


def coordinator_address(address: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) from ``MADJAX_COORDINATOR``, checked."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError("distributed", f"MADJAX_COORDINATOR must be host:port, got {address!r}")
    return host, int(port)


def _check_reachable(host: str, port: int, process_id: int, timeout: int) -> None:
    """Process 0 must be able to listen on the port; the others must reach it within ``timeout`` s."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ParameterError("distributed", f"cannot resolve the coordinator host {host!r}: {err}") from None
    if process_id == 0:
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port) if family == socket.AF_INET else addr)
            except OSError as err:
                raise ParameterError("distributed", f"process 0 cannot listen on port {port}: {err.strerror or err}"
                                     ) from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ParameterError("distributed", f"no coordinator answered at {host}:{port} within {timeout} s "
                                                    f"({err.strerror or err}); start process 0 there, or fix "
                                                    "MADJAX_COORDINATOR") from None
            time.sleep(0.25)


def initialize() -> None:
    """``jax.distributed.initialize`` from MADJAX_* variables (or cluster auto-detection), checked first."""
    address = os.environ.get("MADJAX_COORDINATOR")
    timeout = _env_int("MADJAX_INIT_TIMEOUT", minimum=1, default=DEFAULT_INIT_TIMEOUT_S)
    kwargs = {}
    if address is not None:
        host, port = coordinator_address(address)
        num = _env_int("MADJAX_NUM_PROCESSES", minimum=1)
        pid = _env_int("MADJAX_PROCESS_ID", minimum=0)
        if pid >= num:
            raise ParameterError("distributed", f"MADJAX_PROCESS_ID must be below MADJAX_NUM_PROCESSES = {num}, "
                                                f"got {pid}")
        _check_reachable(host, port, pid, timeout)
        kwargs = dict(coordinator_address=address, num_processes=num, process_id=pid)
    # Cross-process collectives on CPU hosts go through gloo (GPU/TPU use their own);
    # set before initialisation, which must precede any backend query.
    previous = jax.config.jax_cpu_collectives_implementation
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
    except (ValueError, RuntimeError) as err:
        jax.config.update("jax_cpu_collectives_implementation", previous)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParameterError("distributed", f"cannot start the multi-host runtime ({reason}); set "
                                            "MADJAX_COORDINATOR=host:port, MADJAX_NUM_PROCESSES and "
                                            "MADJAX_PROCESS_ID, or run under Slurm, Open MPI or a TPU pod") from None
