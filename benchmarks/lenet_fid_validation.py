"""LeNet-FID, precision and recall validated on the whole of Fashion-MNIST (real 28×28 images).

    python benchmarks/lenet_fid_validation.py            # /usr/share/datasets/fashion-mnist, 10 000 vs 10 000
    python benchmarks/lenet_fid_validation.py --data-dir DIR --n 2000 --out /tmp/v.json

1. Trains (or reads from the cache) the library's Fashion-MNIST LeNet --
   ``lenet_features("fashion-mnist")`` with ``LENET_CONFIGS["fashion-mnist"]``,
   the network every image figure and ``madjax train`` use on this data (all
   60 000 training images, 5 epochs of batch 128, seed 0) -- and reports its
   test accuracy (overall and per class).
2. Reference: ``--n`` test images (all 10 000 by default). Compared sets, each
   scored by ``madjax.deep.features.image_metrics`` (LeNet-FID, precision and
   recall with k = 5) against that reference:

   * ``clean``: ``--n`` training images drawn without replacement (key
     ``PRNGKey(seed)``); ``clean, other draw``: the next ``--n`` of the same
     permutation (disjoint), which shows how much the metrics move between two
     real samples;
   * ``noise σ``: the clean set plus Gaussian pixel noise, clipped to [0, 1]
     (``madjax.deep.degrade.add_noise``; one key per σ);
   * ``blur σ``: the clean set blurred by a Gaussian of σ pixels (``blur``);
   * ``without <class>``: the clean set minus its images of one class
     (``without_class``), for each of the ten classes: the same images
     otherwise, so precision can change only through the class's own share
     of in-manifold images.

Prints a table and the checks of the expected behaviour -- LeNet-FID grows
with σ for noise and blur and exceeds the clean value for a missing class;
with a class removed recall drops while precision stays within 0.05 of the
clean value -- and writes JSON to ``benchmarks/out/lenet_fid_fashion_mnist.json``
(untracked; ``--out benchmarks/results/lenet_fid_fashion_mnist.json`` replaces
the recorded results the README quotes). Timings and the machine are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    from madjax.data import FASHION_MNIST_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="directory of the four Fashion-MNIST IDX files")
    p.add_argument("--n", type=int, default=10_000, help="images per compared set and in the reference (<= 10000)")
    p.add_argument("--noise", type=_floats, default=[0.05, 0.1, 0.2, 0.4], help="noise σ values, comma list")
    p.add_argument("--blur", type=_floats, default=[0.5, 1.0, 2.0], help="blur σ values (pixels), comma list")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and of the noise")
    p.add_argument("--k", type=int, default=5, help="neighbour rank of precision/recall")
    p.add_argument("--cache-dir", default=None,
                   help="LeNet cache root (default $MADJAX_CACHE, else ~/.cache/madjax)")
    p.add_argument("--out", default=os.path.join(HERE, "out", "lenet_fid_fashion_mnist.json"), help="JSON file")
    return p.parse_args(argv)


def validate(args) -> dict:
    """Run the validation; returns the JSON record (rows, accuracy, checks, timings)."""
    import jax
    import numpy as np

    from madjax.bench import machine
    from madjax.data import FASHION_MNIST_LABELS, load_images
    from madjax.deep.degrade import add_noise, blur, without_class
    from madjax.deep.features import LENET_CONFIGS, image_metrics, lenet_features
    from madjax.validation import ParameterError, check_int

    data = load_images("fashion-mnist", args.data_dir)  # a bad directory fails here, before any work
    n = check_int("n", args.n, minimum=args.k + 1, maximum=min(len(data.x_test), len(data.x_train) // 2))
    for s in args.noise + args.blur:
        if not s > 0:
            raise ParameterError("noise" if s in args.noise else "blur", f"σ values must be > 0, got {s}")

    start = time.perf_counter()
    extractor = lenet_features("fashion-mnist", args.data_dir, cache_dir=args.cache_dir, progress=True)
    lenet_s = time.perf_counter() - start
    pred = np.argmax(extractor.logits(data.x_test), axis=1)
    per_class = {FASHION_MNIST_LABELS[c]: float(np.mean(pred[data.y_test == c] == c)) for c in range(10)}

    key = jax.random.PRNGKey(args.seed)
    k_train, k_test, k_noise = jax.random.split(key, 3)
    order = np.asarray(jax.random.permutation(k_train, len(data.x_train)))
    x_ref = data.x_test if n == len(data.x_test) else data.x_test[np.asarray(
        jax.random.permutation(k_test, len(data.x_test)))[:n]]
    clean_idx, other_idx = order[:n], order[n:2 * n]
    x_clean, y_clean = data.x_train[clean_idx], data.y_train[clean_idx]

    sets = [("clean", "clean", None, lambda: x_clean),
            ("clean, other draw", "clean", None, lambda: data.x_train[other_idx])]
    for i, s in enumerate(args.noise):
        sets.append((f"noise σ = {s:g}", "noise", s, lambda s=s, i=i: add_noise(jax.random.fold_in(k_noise, i),
                                                                                 x_clean, s)))
    for s in args.blur:
        sets.append((f"blur σ = {s:g} px", "blur", s, lambda s=s: blur(x_clean, s)))
    for c in range(10):
        sets.append((f"without {FASHION_MNIST_LABELS[c]}", "without", c,
                     lambda c=c: without_class(x_clean, y_clean, c)[0]))

    rows = []
    for name, kind, level, make in sets:
        t0 = time.perf_counter()
        x = np.asarray(make(), np.float32)
        m = image_metrics(extractor, x, x_ref, k=args.k)
        rows.append({"set": name, "kind": kind, "level": level, "n": int(len(x)), "lenet_fid": m["fid"],
                     "precision": m["precision"], "recall": m["recall"],
                     "seconds": round(time.perf_counter() - t0, 2)})
        print(f"  {name}: LeNet-FID {m['fid']:.3f}, precision {m['precision']:.4f}, recall {m['recall']:.4f}",
              file=sys.stderr)

    return {
        "data": "fashion-mnist", "data_dir": os.path.realpath(args.data_dir), "n_reference": int(len(x_ref)),
        "n": n, "k": args.k, "seed": args.seed, "lenet_config": _asdict(LENET_CONFIGS["fashion-mnist"]),
        "lenet": {"test_accuracy": extractor.accuracy, "test_accuracy_per_class": per_class,
                  "from_cache": extractor.from_cache, "train_seconds": round(extractor.train_seconds, 1),
                  "seconds_this_run": round(lenet_s, 1),
                  "cache_file": os.path.basename(extractor.path)},
        "rows": rows, "checks": checks(rows),
        "machine": machine(), "python": platform.python_version(), "jax": jax.__version__,
    }


def _asdict(config) -> dict:
    import dataclasses

    return dataclasses.asdict(config)


def checks(rows: list[dict]) -> dict:
    """The expected behaviour, evaluated on the rows: {check: bool}."""
    clean = next(r for r in rows if r["set"] == "clean")
    out = {}
    for kind in ("noise", "blur"):
        fids = [clean["lenet_fid"]] + [r["lenet_fid"] for r in sorted((r for r in rows if r["kind"] == kind),
                                                                      key=lambda r: r["level"])]
        out[f"{kind}: LeNet-FID increases with σ"] = all(a < b for a, b in zip(fids, fids[1:]))
    removed = [r for r in rows if r["kind"] == "without"]
    out["without a class: LeNet-FID above clean, every class"] = all(r["lenet_fid"] > clean["lenet_fid"]
                                                                     for r in removed)
    out["without a class: recall below clean, every class"] = all(r["recall"] < clean["recall"] for r in removed)
    out["without a class: |precision - clean| <= 0.05, every class"] = all(
        abs(r["precision"] - clean["precision"]) <= 0.05 for r in removed)
    return out


def table(record: dict) -> str:
    """The Markdown table of the README."""
    clean = next(r for r in record["rows"] if r["set"] == "clean")
    lines = ["| compared set (vs the test images) | n | LeNet-FID | precision | recall | Δ recall vs clean |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in record["rows"]:
        delta = "" if r["set"] == "clean" else f"{r['recall'] - clean['recall']:+.3f}"
        lines.append(f"| {r['set']} | {r['n']} | {r['lenet_fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} "
                     f"| {delta} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from madjax.validation import ParameterError

    try:
        record = validate(args)
    except ParameterError as err:
        print(f"lenet_fid_validation: error: {err.option}: {err.message}", file=sys.stderr)
        return 2
    lenet = record["lenet"]
    print(f"LeNet ({'from the cache' if lenet['from_cache'] else 'trained'}, {lenet['train_seconds']} s to train): "
          f"test accuracy {lenet['test_accuracy']:.4f}")
    print("per class: " + ", ".join(f"{k} {v:.3f}" for k, v in lenet["test_accuracy_per_class"].items()))
    print(table(record))
    for name, ok in record["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
