"""What every madjax output file says about itself: schema, provenance, variable attributes.

Every NetCDF / Zarr file madjax writes (simulations, sweeps, figure data,
admissibility thresholds) carries

* ``schema_version`` -- the layout of madjax's output files. It goes up when
  a variable, dimension or attribute changes name or meaning, so a reader
  never mistakes an old layout for the new one;
* ``madjax_version``, ``jax_version``, ``device`` and ``config`` (the full
  configuration as a JSON string): enough to rerun it;
* on every variable and coordinate a ``long_name`` in the paper's words and,
  where the quantity has one, ``units`` (:data:`VARIABLES`).

A store written by an older madjax (no ``schema_version``, or a lower one)
is refused with one line that says what to do (:func:`check_schema`) rather
than resumed or redrawn with the wrong meaning.

Files are also written, and read back, safely:

* **Atomic.** Results, caches and stores are built under a hidden temporary
  sibling name and renamed into place (:func:`atomic_path`,
  :func:`create_store`), so a kill -9 or a full disk leaves the old file or
  none -- never half of one. Outputs follow the umask.
* **Checked before trusted.** A cache (:func:`save_checked_npz`,
  :func:`load_checked_npz`) carries the key it was computed for (madjax's
  version and every parameter its numbers depend on) and a SHA-256 of its
  arrays; one that does not match is rebuilt with one warning line, never
  used. A cell store's ``done`` flags are checked against its values
  (:func:`trusted_cells`): a cell whose values are missing, unreadable or
  non-finite is recomputed.
* **One line.** An input file that cannot be used -- missing, truncated,
  garbage, the wrong kind, missing variables, corrupt chunks, an empty
  directory -- raises :class:`~madjax.validation.ParameterError` naming the
  option and the file (``--from: DIR/fig10.nc: not a readable NetCDF file
  (...)``): one line and exit status 2 on the command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shutil
import zipfile
from typing import Iterator

import numpy as np
import xarray as xr

from madjax._progress import log
from madjax.validation import ParameterError

SCHEMA_VERSION = 3  # 1: files before the schema attribute existed; 3: the one loop layer's key streams

_SAMPLES = "samples"
_GENERATIONS = "generations"

# name -> (long_name, units or None), in the paper's terms (Eq. 2, 3; DESIGN §3).
VARIABLES = {
    # sizes and loop parameters (dims or scalar coordinates)
    "n_real": ("fresh real samples per generation n_r", _SAMPLES),
    "n_syn": ("synthetic samples per generation n_s", _SAMPLES),
    "n_ini": ("real samples of the first generation n_ini", _SAMPLES),
    "n_total": ("training samples per generation n = n_r + n_s", _SAMPLES),
    "lam": ("sampling bias lambda", None),
    "memory": ("models sampled from, memory K", None),
    "real_fraction": ("real fraction p = n_r / n", None),
    "generation": ("generation t", None),
    "chain": ("chain index", None),
    # steady state and effective size (Eq. 2, 3)
    "wd": ("mean Wasserstein-2 distance WD to the real distribution", None),
    "wd_se": ("standard error of WD over chains", None),
    "n_e": ("effective sample size n_e", _SAMPLES),
    "n_e_se": ("standard error of n_e", _SAMPLES),
    "n_e_ratio": ("effective sample size ratio n_e / n_r", None),
    "n_e_ratio_se": ("standard error of n_e / n_r", None),
    "n_e_bound": ("n_e outside the E-dist table: 0 none, 1 lower bound (n_e >= value), 2 upper bound", None),
    "converged": ("steady state reached: 1 yes, 0 no (the two halves of the window disagree)", None),
    "burn_in": ("generations discarded before the steady-state window", _GENERATIONS),
    "done": ("cell finished and stored: 1 yes, 0 not yet", None),
    # admissibility boundary
    "n_syn_star": ("admissible synthetic samples n_s* where n_e / n_r = 1", _SAMPLES),
    "n_syn_star_lo": ("lower end of the n_s* interval (n_e / n_r > 1 within z standard errors)", _SAMPLES),
    "n_syn_star_hi": ("upper end of the n_s* interval (n_e / n_r < 1 within z standard errors)", _SAMPLES),
    # Gaussian simulation records
    "w2": ("Wasserstein-2 distance of the fitted G^t (not the lambda-scaled sampler) to the real distribution",
           None),
    "mean_sq_norm": ("squared norm of the fitted mean ||mu_t||^2", None),
    "cov_trace": ("trace of the fitted covariance tr Sigma_t", None),
    "cov_logdet": ("log determinant of the fitted covariance log det Sigma_t; -inf where Sigma_t is singular by "
                   "construction (rank < d), NaN where not computable to 0.05 nats (cov_logdet_status)", None),
    "cov_rank": ("analytic rank of Sigma_t", None),
    "cov_logdet_status": ("status of cov_logdet: 0 computed (to 0.05 nats), 1 skipped by w2_every, "
                          "2 not computable to 0.05 nats in this precision (NaN; use float64)", None),
    "cov_trace_theory": ("closed form of the chains' mean E tr Sigma_t (madjax.theory)", None),
    "mean_sq_norm_theory": ("closed form of the chains' mean E ||mu_t||^2 (madjax.theory)", None),
    "cov_logdet_theory": ("closed form of the chains' mean E log det Sigma_t (madjax.theory)", None),
    "w2_sq_theory": ("closed form of the chains' mean E W2^2 (d = 1; compare with the mean of w2**2)", None),
    "n_underflow": ("generations whose Sigma_t has fewer numerically positive eigenvalues than its rank",
                    _GENERATIONS),
    "n_nonfinite": ("generations with a non-finite fitted model (mu_t or Sigma_t)", _GENERATIONS),
    # GMM diagnostics (App. C.1)
    "total_variance": ("total variance tr Cov of model samples", None),
    "modal_variance": ("average modal variance of model samples", None),
    "recall": ("recall of model samples against the target (k = 5)", None),
    "modes_covered": ("modes of the target covered by model samples (of 25)", None),
}


def describe(ds: xr.Dataset) -> xr.Dataset:
    """Set ``long_name`` / ``units`` on every variable and coordinate of ``ds`` known to :data:`VARIABLES`."""
    for name in list(ds.variables):
        if name in VARIABLES:
            long_name, units = VARIABLES[name]
            ds[name].attrs["long_name"] = long_name
            if units:
                ds[name].attrs["units"] = units
    return ds


def provenance(config) -> dict:
    """File attributes: schema and software versions, device, and ``config`` as JSON (a dict or a JSON string)."""
    import jax

    from madjax import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "madjax_version": __version__,
        "jax_version": jax.__version__,
        "device": f"{jax.default_backend()}:{jax.local_devices()[0].device_kind} x{jax.local_device_count()}",
        "config": config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str),
    }


def check_schema(path: str, attrs: dict, param: str = "out") -> None:
    """Refuse a file whose ``schema_version`` is not this madjax's (one line naming ``param``)."""
    version = int(attrs.get("schema_version", 1))
    if version < SCHEMA_VERSION:
        raise ParameterError(param, f"{path} was written by an older madjax (schema {version}); "
                                    "move it away or rerun into a new --out")
    if version > SCHEMA_VERSION:
        raise ParameterError(param, f"{path} was written by a newer madjax (schema {version}); "
                                    "upgrade madjax to read it")


# Exceptions a damaged or foreign file raises in numpy, xarray, netCDF4, h5py and zarr readers.
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, RuntimeError,
               zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError)


def _reason(err: BaseException) -> str:
    """One line describing a read error (exception messages may span lines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def open_checked(path: str, param: str = "from", variables: tuple[str, ...] = (),
                 dims: dict[str, tuple[str, ...]] | None = None) -> xr.Dataset:
    """Load a NetCDF file madjax wrote, refusing other schemas (:func:`check_schema`), damaged files,
    files without ``variables`` (or the variables of ``dims``) and variables whose dimensions are not
    those of ``dims`` (``{variable: dims}``) -- each with one line naming ``param`` and the file."""
    if not os.path.isfile(path):
        raise ParameterError(param, f"{path}: " + ("not a file" if os.path.exists(path) else "no such file"))
    try:
        ds = xr.load_dataset(path)
    except READ_ERRORS as err:
        raise ParameterError(param, f"{path}: not a readable NetCDF file ({_reason(err)})") from None
    check_schema(path, ds.attrs, param)
    dims = dims or {}
    missing = [v for v in dict.fromkeys((*variables, *dims)) if v not in ds.variables]
    if missing:
        raise ParameterError(param, f"{path}: missing variable(s) {', '.join(missing)}")
    for name, expected in dims.items():
        if ds[name].dims != tuple(expected):
            raise ParameterError(param, f"{path}: variable {name} has dimensions {ds[name].dims}, "
                                        f"expected {tuple(expected)}")
    return ds


def read_json(path: str, param: str) -> dict:
    """A JSON object from ``path``; one-line :class:`ParameterError` otherwise."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except FileNotFoundError:
        raise ParameterError(param, f"{path}: no such file") from None
    except READ_ERRORS as err:
        raise ParameterError(param, f"{path}: not a readable JSON file ({_reason(err)})") from None
    if not isinstance(value, dict):
        raise ParameterError(param, f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def write_json(path: str, value, **dump_kwargs) -> None:
    """Write ``value`` as JSON atomically (:func:`atomic_path`): a killed run leaves the old file or none,
    never a truncated one that would block its resumption."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, **dump_kwargs)


def read_npz(path: str, param: str, variables: tuple[str, ...] = ("x",)) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never unpickles); one-line :class:`ParameterError` otherwise."""
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ParameterError(param, f"{path}: no such file") from None
    except READ_ERRORS as err:
        raise ParameterError(param, f"{path}: not a readable .npz file ({_reason(err)})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ParameterError(param, f"{path}: a single .npy array, not an .npz archive")
    with f:
        missing = [v for v in variables if v not in f.files]
        if missing:
            raise ParameterError(param, f"{path}: missing array(s) {', '.join(missing)}")
        try:
            return {name: f[name] for name in f.files}
        except READ_ERRORS as err:
            raise ParameterError(param, f"{path}: damaged .npz file ({_reason(err)})") from None


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary sibling name to write a file or directory to; renamed onto ``path`` on success.

    The temporary name is hidden and unique (``.NAME.<pid>-<random>.part``
    plus ``suffix``, e.g. ``".npz"`` for writers that insist on an
    extension); nothing is created under it before the caller writes, so the
    result gets the permissions the umask gives. On any exception (or kill)
    ``path`` is untouched and the temporary is removed; the hidden leftover
    of a kill -9 is cleared by the next write of ``path`` (:func:`remove_stale`).
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    remove_stale(path)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)


def remove_stale(path: str | os.PathLike) -> None:
    """Remove temporaries that :func:`atomic_path` left beside ``path`` in processes that no longer run."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{base}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix) or ".part" not in name:
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale = os.path.join(directory, name)
            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- checksummed caches


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """Hex SHA-256 of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checked_npz(path: str, key: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically with the cache ``key`` (JSON) and their checksum.

    A cache that cannot be written (read-only or full disk, a directory in
    the way) costs a recomputation next time, not the run: one warning line.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, _key=np.array(json.dumps(key, sort_keys=True)), _sha256=np.array(array_digest(arrays)),
                     **arrays)
    except OSError as err:
        log.warning("cache %s not written (%s)", path, _reason(err))


class StaleCache(ValueError):
    """A cache file that is unreadable or does not match its key or checksum."""


def load_checked_npz(path: str, key: dict, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of a cache written by :func:`save_checked_npz` for ``key``.

    Raises:
      StaleCache: the file is unreadable, written for another key, or its
        arrays do not match the stored checksum (say what is wrong).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            stored_key, digest = str(f["_key"]), str(f["_sha256"])
            arrays = {name: f[name] for name in names}
    except READ_ERRORS as err:
        raise StaleCache(f"unreadable ({_reason(err)})") from None
    if stored_key != json.dumps(key, sort_keys=True):
        raise StaleCache("computed for other parameters or another madjax version")
    if array_digest(arrays) != digest:
        raise StaleCache("checksum mismatch (the file was modified or damaged)")
    return arrays


def rebuild_notice(what: str, path: str, reason: str) -> None:
    """The one warning line of a cache that is rebuilt."""
    log.warning("%s cache %s %s; rebuilding it", what, path, reason)


# ----------------------------------------------------------------------------- cell stores


def create_store(path: str, ds: xr.Dataset, encoding: dict) -> None:
    """Write a new Zarr store atomically: built under a temporary sibling name, then renamed into place.

    A kill or a full disk during creation leaves no store at ``path`` (only a
    hidden temporary, cleared by the next creation), so a rerun starts afresh
    instead of meeting half a store. Every chunk is written, even one that
    holds only the fill value, so that a missing chunk always means damage.
    """
    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w-", encoding=encoding, consolidated=False, write_empty_chunks=True)


def write_region(path: str, ds: xr.Dataset, region: dict) -> None:
    """Overwrite a region of an existing store (every chunk written, see :func:`create_store`)."""
    ds.to_zarr(path, region=region, consolidated=False, write_empty_chunks=True)


def _group(path: str):
    import zarr

    return zarr.open_group(path, mode="r")


def store_attrs(path: str) -> dict:
    """The attributes of the Zarr store at ``path`` (read without decoding any variable)."""
    return dict(_group(path).attrs)


def store_problem(path: str, shapes: dict[str, tuple]) -> str | None:
    """Why the metadata of the Zarr store at ``path`` cannot be trusted, or None.

    ``shapes``: the variables the store must hold and their shapes.
    """
    if not os.path.isdir(path):
        return "not a directory"
    try:
        group = _group(path)
        for name, shape in shapes.items():
            if name not in group:
                return f"variable {name!r} missing"
            if tuple(group[name].shape) != tuple(shape):
                return f"variable {name!r} has shape {tuple(group[name].shape)}, expected {tuple(shape)}"
    except Exception as err:  # noqa: BLE001 - zarr's errors (GroupNotFoundError, codec errors) share no base
        return f"unreadable ({_reason(err)})"
    return None


def read_cells(path: str, name: str) -> np.ndarray:
    """A store variable as float64; cells whose chunk is missing or cannot be decoded are NaN.

    Chunks hold one cell each (leading dims of chunk size 1). A corrupt chunk
    fails to decode, and the variable is then read cell by cell.
    """
    array = _group(path)[name]
    lead = 0  # the leading dims of one-cell chunks
    while lead < array.ndim and array.chunks[lead] == 1:
        lead += 1
    cells = list(itertools.product(*(range(n) for n in array.shape[:lead])))
    try:
        values = np.asarray(array[...], np.float64)
    except Exception:  # noqa: BLE001 - a corrupt chunk: fall back to the cells one by one
        values = np.full(array.shape, np.nan)
        for index in cells:
            try:
                values[index] = np.asarray(array[index], np.float64)
            except Exception:  # noqa: BLE001 - this cell's chunk is unreadable: NaN
                pass
    for index in cells:
        key = array.metadata.encode_chunk_key(index + (0,) * (array.ndim - lead))
        if not os.path.exists(os.path.join(path, name, key)):  # read as the fill value, which proves nothing
            values[index] = np.nan
    return values


def trusted_cells(path: str, cell_shape: tuple, checks: dict[str, float | None]) -> np.ndarray:
    """Per cell: the ``done`` flag is 1 and every checked variable holds a usable value.

    ``checks``: variable -> the fill value its finished cells may not hold
    (integer codes, e.g. −1), or None for "must be finite" (floats).
    """
    ok = read_cells(path, "done") == 1
    for name, fill in checks.items():
        values = read_cells(path, name).reshape(cell_shape + (-1,))
        good = np.isfinite(values) if fill is None else np.isfinite(values) & (values != fill)
        ok &= good.all(axis=-1)
    return ok
