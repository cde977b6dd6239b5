"""Chain throughput: madjax exact engine vs naive NumPy loop vs the eigvalsh+Cholesky floor.

    python benchmarks/bench_chains.py            # full grid (d ∈ {10,20,50,100}, n_s ∈ {1e3..1e6})
    python benchmarks/bench_chains.py --quick    # d = 100 only, the speed-goal cells

Prints a table and the three speed-goal ratios, writes benchmarks/out/chains.json and
benchmarks/out/chains.png (untracked); ``--out benchmarks/results/chains.json`` replaces
the recorded results that benchmarks/README.md quotes. The goal rows use the factorisation the simulator
picks (Cholesky + eigenvalues here, since every covariance has full rank) with W2
every generation; at n_s = 1e4 the same run also times the ``eigh`` route and
W2 every 4th generation, for comparison. Run it on a quiet machine: the thread
settings and the load average are recorded in the JSON.
"""

import argparse
import json
import os
import sys

from madjax.bench import bench_rows, format_table, machine

HERE = os.path.dirname(os.path.abspath(__file__))


def ratios(rows):
    """The three speed goals at d = 100, n_r = 1e3, fresh loop, float32."""
    def rate(engine, n_syn, dim=100, factor="cholesky", w2_every=1):
        for r in rows:
            if r["engine"] != engine or r["dim"] != dim:
                continue
            if engine == "floor":
                return r["chain_gen_per_s"]
            if r["n_syn"] == n_syn and r.get("factor", factor) == factor and r.get("w2_every", 1) == w2_every:
                return r["chain_gen_per_s"]
        return None

    out = {}
    if rate("madjax", 10_000) and rate("floor", None):
        out["madjax/floor (n_s=1e4)"] = rate("madjax", 10_000) / rate("floor", None)
    for n in (10_000, 100_000):
        if rate("madjax", n) and rate("numpy-naive", n):
            out[f"madjax/naive (n_s={n:.0e})"] = rate("madjax", n) / rate("numpy-naive", n)
    if rate("madjax", 1_000_000) and rate("madjax", 1_000):
        out["madjax n_s=1e6 / n_s=1e3"] = rate("madjax", 1_000_000) / rate("madjax", 1_000)
    # Context rows (not goals): the eigh route, and W2 only every 4th generation.
    if rate("madjax", 10_000, factor="eigh") and rate("floor", None):
        out["eigh route/floor (n_s=1e4)"] = rate("madjax", 10_000, factor="eigh") / rate("floor", None)
    if rate("madjax", 10_000, w2_every=4) and rate("floor", None):
        out["W2 every 4th/floor (n_s=1e4)"] = rate("madjax", 10_000, w2_every=4) / rate("floor", None)
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    main = lambda r: r.get("factor", "cholesky") == "cholesky" and r.get("w2_every", 1) == 1  # noqa: E731
    for engine, marker in (("madjax", "o"), ("numpy-naive", "s")):
        for dim in sorted({r["dim"] for r in rows}):
            pts = sorted((r["n_syn"], r["chain_gen_per_s"]) for r in rows
                         if r["engine"] == engine and r["dim"] == dim and main(r))
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=f"{engine} d={dim}")
    for r in rows:
        if r["engine"] == "madjax" and not main(r):
            ax.plot(r["n_syn"], r["chain_gen_per_s"], marker="x" if r["factor"] == "eigh" else "^", ls="",
                    label=f"madjax d={r['dim']} {r['factor']}, W2 every {r['w2_every']}")
    for r in rows:
        if r["engine"] == "floor":
            ax.axhline(r["chain_gen_per_s"], ls=":", lw=0.8, color="gray")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n_s")
    ax.set_ylabel("chain-generations / s")
    ax.set_title(f"fresh loop throughput ({rows[0]['device']}); dotted: floor")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="d = 100 only: the speed-goal cells")
    p.add_argument("--chains", type=int, default=1000, help="chains per timed call")
    p.add_argument("--generations", type=int, default=20, help="generations per timed call")
    p.add_argument("--out", default=os.path.join(HERE, "out", "chains.json"),
                   help="JSON path (and .png beside it); benchmarks/results/ holds the recorded results")
    args = p.parse_args(argv)
    dims = [100] if args.quick else [10, 20, 50, 100]
    def progress(r):
        print(f"  {r['engine']} {r.get('factor', '')} d={r['dim']} n_s={r['n_syn']}: {r['chain_gen_per_s']:.4g}/s",
              file=sys.stderr)

    common = dict(n_real=1000, lam=0.9, chains_list=[args.chains], generations=args.generations, dtype="float32",
                  progress=progress)
    rows = bench_rows(dims=dims, n_syns=[1_000, 10_000, 100_000, 1_000_000], naive_chains=2, naive_generations=3,
                      **common)
    rows += [r for r in bench_rows(dims=[100], n_syns=[10_000], naive_chains=0, factors=("eigh", "cholesky"),
                                   w2_every=(1, 4), **common)
             if r["engine"] == "madjax" and (r["factor"], r["w2_every"]) != ("cholesky", 1)]
    result = {"rows": rows, "machine": machine(), "ratios": ratios(rows)}
    print(format_table(rows))
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.3g}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    plot(rows, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()
