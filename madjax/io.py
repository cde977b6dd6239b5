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
"""

from __future__ import annotations

import json

import xarray as xr

from madjax.validation import ParameterError

SCHEMA_VERSION = 2  # 1: files before the schema attribute existed

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
    "w2": ("Wasserstein-2 distance of G^t to the real distribution", None),
    "mean_sq_norm": ("squared norm of the fitted mean ||mu_t||^2", None),
    "cov_trace": ("trace of the fitted covariance tr Sigma_t", None),
    "cov_logdet": ("log determinant of the fitted covariance log det Sigma_t", None),
    "cov_rank": ("analytic rank of Sigma_t", None),
    "n_underflow": ("generations whose Sigma_t lost numerically positive eigenvalues", _GENERATIONS),
    "n_nonfinite": ("generations with a non-finite fitted model", _GENERATIONS),
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


def open_checked(path: str, param: str = "from") -> xr.Dataset:
    """Load a NetCDF file madjax wrote, refusing other schemas (:func:`check_schema`)."""
    ds = xr.load_dataset(path)
    check_schema(path, ds.attrs, param)
    return ds
