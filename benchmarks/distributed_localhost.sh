#!/usr/bin/env bash
# Two jax.distributed CPU processes on localhost vs one process: the chain-by-chain
# results of `madjax simulate` must be identical. Usage: bash benchmarks/distributed_localhost.sh
set -euo pipefail
out=$(mktemp -d)
args=(simulate --loop fresh --dim 5 --n-ini 20 --n-real 10 --n-syn 50 --lam 0.9 --generations 6 --chains 9 --quiet)
py=${PYTHON:-python}
"$py" -m madjax "${args[@]}" --out "$out/one.nc"
export MADJAX_COORDINATOR=127.0.0.1:${PORT:-23456} MADJAX_NUM_PROCESSES=2
MADJAX_PROCESS_ID=1 "$py" -m madjax "${args[@]}" --distributed --out "$out/two.nc" &
MADJAX_PROCESS_ID=0 "$py" -m madjax "${args[@]}" --distributed --out "$out/two.nc"
wait
"$py" - "$out" <<'PY'
import sys, numpy as np, xarray as xr
a = xr.open_dataset(f"{sys.argv[1]}/one.nc"); b = xr.open_dataset(f"{sys.argv[1]}/two.nc")
for v in ("w2", "cov_trace", "cov_logdet", "mean_sq_norm"):
    np.testing.assert_array_equal(a[v].values, b[v].values)
print("two-process run identical to one process:", a.w2.shape)
PY
