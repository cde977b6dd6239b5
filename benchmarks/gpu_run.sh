#!/usr/bin/env bash
# One short GPU session (< 5 minutes): the chain-throughput benchmark at d = 100 and a
# reduced-chain paper-preset Figure 10 cell block. Writes benchmarks/results/gpu/.
#   bench:  d = 100, n_r = 1e3, n_s ∈ {1e3, 1e4, 1e5, 1e6}, 4096 chains x 20 generations (+ floor, naive 2x3)
#   fig10:  madjax sweep, d = 100, lam = 0.7, n_r ∈ {100, 1000}, n_s ∈ {100, 1000, 10000}: 6 cells x 256 chains
#           x T = 1382 generations (burn-in from n_s/n_r ≤ 100)
set -euo pipefail
out=benchmarks/results/gpu
mkdir -p "$out"
python -c "import jax; print(jax.devices())" | tee "$out/devices.txt"
python benchmarks/bench_chains.py --quick --chains 4096 --out "$out/chains.json" | tee "$out/chains.txt"
/usr/bin/time -f "fig10 sweep %e s" madjax sweep --loop fresh --dim 100 --n-real 100,1000 \
    --n-syn 100,1000,10000 --lam 0.7 --chains 256 --name fig10_gpu --out "$out" --quiet 2>&1 | tee "$out/fig10.txt"
