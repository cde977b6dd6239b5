"""The fully synthetic loop: the factored (square-root) state against the pooled routes.

    python benchmarks/bench_factored.py            # d ∈ {10, 100}, 256 chains × 20 generations
    python benchmarks/bench_factored.py --quick    # d = 100 only

Times ``factor="factored"`` (L_t = sqrt(λ/(n−1)) L_{t−1} A_t: a triangular
product and W2 from one SVD per generation) against ``"cholesky"`` (Σ_t
formed, Cholesky, eigenvalues by tridiagonal bisection) and ``"eigh"`` (one
eigen-solve), all on the same shapes in one run, float32, W2 every
generation, in three interleaved rounds (the best round of each is reported). Prints a table, writes benchmarks/out/factored.json (untracked)
unless ``--out`` is given; compile time is reported apart from the steady
state (median of repeats, ``block_until_ready``).
"""

import argparse
import json
import os

from madjax.bench import machine, time_madjax

HERE = os.path.dirname(os.path.abspath(__file__))
FACTORS = ("factored", "cholesky", "eigh")
CHAINS = 256
ROUNDS = 3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d = 100 only")
    p.add_argument("--out", default=os.path.join(HERE, "out", "factored.json"))
    args = p.parse_args(argv)
    rows = []
    for dim in (100,) if args.quick else (10, 100):
        n = 10 * dim  # every fit has full rank, so all three routes are valid
        rates, compiles = {f: [] for f in FACTORS}, {}
        # interleaved rounds, best of each: a noisy machine slows one round, not one route
        for _ in range(ROUNDS):
            for factor in FACTORS:
                rate, compile_s = time_madjax(dim=dim, n_real=n, n_syn=n, lam=0.9, chains=CHAINS, generations=20,
                                              dtype="float32", loop="fully-synthetic", factor=factor)
                rates[factor].append(rate)
                compiles.setdefault(factor, compile_s)
                print(f"d = {dim}, {factor}: {rate:.0f} chain-generations/s", flush=True)
        for factor in FACTORS:
            rows.append(dict(engine="madjax", loop="fully-synthetic", dim=dim, n_ini=n, n_syn=n, lam=0.9,
                             chains=CHAINS, generations=20, dtype="float32", factor=factor,
                             chain_gen_per_s=max(rates[factor]), rounds=rates[factor], compile_s=compiles[factor]))
    print(f"{'d':>4} {'factor':>9} {'chain-gen/s':>12} {'vs cholesky':>12} {'compile s':>10}")
    for r in rows:
        base = next(b["chain_gen_per_s"] for b in rows if b["dim"] == r["dim"] and b["factor"] == "cholesky")
        print(f"{r['dim']:>4} {r['factor']:>9} {r['chain_gen_per_s']:>12.0f} {r['chain_gen_per_s'] / base:>12.2f} "
              f"{r['compile_s']:>10.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": machine(), "rows": rows}, fh, indent=1)
    print(args.out)


if __name__ == "__main__":
    main()
