"""JAX's persistent compilation cache, under madjax's cache directory.

Compilation is most of a short command's time: ``madjax effective-size
--loop fresh --dim 10 --n-real 20 --n-syn 200 --lam 0.8`` spends about 9 of
its 10 s compiling. With JAX's persistent cache the compiled executables are
written to disk and a rerun loads them. The command line turns the cache on
at start-up (:func:`configure`); ``import madjax`` leaves JAX as it is.

* Where: ``$MADJAX_CACHE/jax`` (``$MADJAX_CACHE`` defaults to
  ``~/.cache/madjax``, as for the E-dist table); ``MADJAX_COMPILATION_CACHE``
  set to a directory moves it, set to ``0`` / ``off`` / ``false`` / ``no``
  turns it off.
* What: every compilation (:data:`MIN_COMPILE_SECONDS` = 0). JAX's default
  keeps only those over 1 s and so misses madjax's many sub-second kernels:
  the rerun above took 13.6 s with a 0.2 s threshold, 8.6 s with none
  (31 s without the cache; a loaded 2-core machine). The command stores
  9 entries, about 0.5 MB.
* How much: at most :data:`MAX_BYTES`; JAX evicts the least recently used
  entries beyond it.
* Two processes sharing it: JAX 0.10 writes an entry in place (no temporary
  file and rename), so a reader could see half an entry. Bounding the size
  makes JAX take a file lock (``filelock``) around every read and write of
  the directory, which serialises them: no process reads an entry another
  is still writing. (Had it happened, JAX would warn and recompile: a cache
  error never stops a run.) Measured: two processes started together on an
  empty cache ran without a warning and printed identical results.
"""

from __future__ import annotations

import os

ENV = "MADJAX_COMPILATION_CACHE"
OFF = ("0", "off", "false", "no")
MIN_COMPILE_SECONDS = 0.0
MAX_BYTES = 2 << 30


def cache_path() -> str | None:
    """The compilation cache directory, or None when ``MADJAX_COMPILATION_CACHE`` turns it off."""
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in OFF:
        return None
    if setting and setting.lower() not in ("1", "on", "true", "yes"):
        return os.path.abspath(os.path.expanduser(setting))
    from madjax.effective import _cache_dir

    return os.path.join(_cache_dir(), "jax")


def configure() -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_path`; returns the directory (None: off)."""
    import jax

    path = cache_path()
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
