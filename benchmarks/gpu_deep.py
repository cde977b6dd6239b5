"""One generation of the DDPM and WGAN-GP paper presets on Fashion-MNIST, every stage timed (the engine of gpu_deep.sh).

    python benchmarks/gpu_deep.py --out benchmarks/results/gpu_deep/deep.json          # on a GPU
    python benchmarks/gpu_deep.py --dry-run                                            # the plan, no work
    python benchmarks/gpu_deep.py --preset smoke --data-dir tests/data/fashion-mnist   # every path, CPU, ~1 min

For each model (``--models``, default ``ddpm,wgan``) this runs what
``madjax train MODEL --loop fully-synthetic --generations 1 --data fashion-mnist
--preset paper`` runs in its one generation -- the preset's configuration
adapted to 28×28 (``madjax.deep.runner.MODELS``), G¹ fitted on ``n`` = 60 000
real training images, ``n_eval`` = 10 000 samples at λ = 1 scored against
the 10 000 test images -- with its own keys (``PRNGKey(seed)`` split once per
stage), timing each stage with ``block_until_ready``:

``data``      read and check the four IDX files;
``lenet``     train the Fashion-MNIST LeNet of the image metrics (5 epochs of
              the 60 000 images; once, shared by the models; read from the
              cache when ``$MADJAX_CACHE`` already holds it -- ``from_cache``);
``init``      build the model and draw its initial parameters;
``probe``     two one-epoch fits: the first compiles, the second is one
              epoch's steady-state time (``epoch_s``); compilation ≈ first −
              second;
``fit``       the fit of G¹ (``epochs_run`` epochs, fresh from its key as the
              paper presets train every generation from scratch);
``sample``    two chunks of the sampler's size (the first compiles, the second
              times one chunk), then the ``n_eval`` samples;
``evaluate``  LeNet-FID, precision and recall (k = 5) against the test split,
              and the same for ``n_eval`` real training images (the floor).

**Budgets, the only cuts.** ``epochs_run`` is the preset's epochs unless
``epoch_s`` × epochs would exceed ``--fit-budget-s`` (default 100 s per
model); then it is the largest number of epochs that fits, and the JSON says
so (``cut``). Likewise ``n_eval`` is cut to whole sampler chunks when the
second probe chunk says the samples would take more than
``--sample-budget-s`` (default 60 s). At the defaults the two models spend
at most 2 × (100 + 60) s in their fits and samples; with the probes, the
LeNet, compilation and start-up a run stays under 10 minutes of wall time
on one large GPU unless a single training epoch takes longer than ~30 s.
``--no-cut`` runs the paper sizes whatever they cost.

The JSON (``--out``) is rewritten after every stage, so a run stopped by a
time limit still records the stages it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time

from _stages import MODEL_NAMES, checked, model_list, timed

HERE = os.path.dirname(os.path.abspath(__file__))
_seconds = checked(float, lambda v: 0 < v < math.inf, "a positive number of seconds")


def parse_args(argv=None) -> argparse.Namespace:
    from madjax.data import FASHION_MNIST_DIR

    p = argparse.ArgumentParser(prog="gpu_deep.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=model_list, default=list(MODEL_NAMES), help="comma list of ddpm, wgan")
    p.add_argument("--preset", default="paper", choices=("smoke", "quick", "paper"), help="the models' preset")
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="directory of the four Fashion-MNIST IDX files")
    p.add_argument("--seed", type=int, default=0, help="seed of every key")
    p.add_argument("--fit-budget-s", type=_seconds, default=100.0, help="most seconds of one model's fit")
    p.add_argument("--sample-budget-s", type=_seconds, default=60.0, help="most seconds of one model's samples")
    p.add_argument("--no-cut", action="store_true", help="the preset's sizes whatever they cost (no budgets)")
    p.add_argument("--dry-run", action="store_true", help="validate, print the plan and exit (no training)")
    p.add_argument("--out", default=os.path.join(HERE, "out", "gpu_deep.json"), help="JSON file")
    args = p.parse_args(argv)
    if not 0 <= args.seed <= 2**32 - 1:
        p.error(f"--seed: must be in [0, 2**32 - 1], got {args.seed}")
    return args


def _chunk(config) -> int:
    """Images the model's sampler pushes through at once (DDPM ``sample_chunk``, WGAN-GP ``sample_batch``)."""
    return int(getattr(config, "sample_chunk", None) or getattr(config, "sample_batch"))


class Record:
    """The JSON record, rewritten after every stage."""

    def __init__(self, path: str, head: dict):
        self.path, self.data = path, head
        self.save()

    def save(self) -> None:
        from madjax.io import write_json

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_json(self.path, self.data, indent=2)


def plan(args) -> list[dict]:
    """Validate everything that needs no training: data files, presets, sizes. One entry per model."""
    from madjax.data import get_source
    from madjax.deep.runner import MODELS, check_real_sizes, loop_sizes, model_presets

    source = get_source("fashion-mnist", args.data_dir)  # reads and checks the files: a bad directory fails here
    out = []
    for name in args.models:
        spec = model_presets(name)[args.preset]
        config = MODELS[name].adapt(spec.config, source)
        loop = loop_sizes("fully-synthetic", spec.n)
        check_real_sizes(loop, "fashion-mnist", args.data_dir, preset=args.preset)
        out.append({"model": name, "config": config, "n": loop.n_ini, "n_eval": spec.n_eval})
    return out


def run_model(args, entry: dict, evaluation, record: Record, key) -> None:
    """The stages of one model's generation (module docstring), each written to ``record`` when done."""
    import jax
    import numpy as np

    from madjax.data import get_source
    from madjax.deep.runner import MODELS

    name, config = entry["model"], entry["config"]
    stages = record.data["models"].setdefault(name, {"config": dataclasses.asdict(config), "stages": {}})["stages"]

    def done(stage, **values):
        stages[stage] = values
        record.save()
        print(f"{name} {stage}: " + ", ".join(f"{k} {v}" for k, v in values.items()), file=sys.stderr, flush=True)

    k_init, k_real, k_probe, k_fit, k_sample, k_base = jax.random.split(key, 6)
    source = get_source("fashion-mnist", args.data_dir)
    build = MODELS[name].build
    start = time.perf_counter()
    model = build(config, False)
    params = jax.block_until_ready(model.init(k_init))
    train, draw_s = timed(source.sample, k_real, entry["n"])
    done("init", seconds=round(time.perf_counter() - start, 2), real_draw_s=round(draw_s, 2),
         parameters=int(sum(np.size(x) for x in jax.tree.leaves(params))))

    one = build(dataclasses.replace(config, epochs=1), False)  # the same compiled steps (epochs is not compiled in)
    _, first_s = timed(one.fit, k_probe, params, train)
    _, epoch_s = timed(one.fit, k_probe, params, train)
    epochs = config.epochs
    budget_epochs = max(1, int(args.fit_budget_s // epoch_s))
    epochs_run = epochs if args.no_cut else min(epochs, budget_epochs)
    done("probe", first_epoch_s=round(first_s, 2), epoch_s=round(epoch_s, 3),
         compile_s=round(max(first_s - epoch_s, 0.0), 2), preset_fit_estimate_s=round(epochs * epoch_s, 1))

    fitter = model if epochs_run == epochs else build(dataclasses.replace(config, epochs=epochs_run), False)
    (params, _), fit_s = timed(fitter.fit, k_fit, params, train)
    done("fit", seconds=round(fit_s, 2), epochs_run=epochs_run, epochs_preset=epochs, images=entry["n"],
         cut=epochs_run < epochs)

    n_eval = entry["n_eval"] or int(evaluation.reference.x.shape[0])
    chunk = min(_chunk(config), n_eval)
    _, probe_s = timed(model.sample, k_sample, params, chunk, 1.0)  # compiles the sampler
    _, chunk_s = timed(model.sample, jax.random.fold_in(k_sample, 1), params, chunk, 1.0)
    per_image = chunk_s / chunk
    n_run = n_eval
    if not args.no_cut and per_image * n_eval > args.sample_budget_s:
        n_run = max(chunk, int(args.sample_budget_s / per_image) // chunk * chunk)
    x, sample_s = timed(model.sample, k_sample, params, n_run, 1.0)
    done("sample", first_chunk_s=round(probe_s, 2), chunk_s=round(chunk_s, 2), chunk=chunk,
         seconds=round(sample_s, 2), n=n_run,
         n_preset=n_eval, cut=n_run < n_eval, images_per_s=round(n_run / sample_s, 1))

    start = time.perf_counter()
    metrics = evaluation.evaluate(None, None, x, evaluation.reference)
    eval_s = time.perf_counter() - start
    real = source.sample(k_base, n_run)
    floor = evaluation.evaluate(None, None, real, evaluation.reference)
    done("evaluate", seconds=round(eval_s, 2), lenet_fid=round(metrics["fid"], 4),
         precision=round(metrics["precision"], 4), recall=round(metrics["recall"], 4),
         n_nonfinite=int(metrics["n_nonfinite"]), real_train_lenet_fid=round(floor["fid"], 4),
         real_train_precision=round(floor["precision"], 4), real_train_recall=round(floor["recall"], 4))


def main(argv=None) -> int:
    args = parse_args(argv)
    from madjax.validation import ParameterError

    wall = time.perf_counter()
    try:
        entries = plan(args)
    except ParameterError as err:
        print(f"gpu_deep.py: error: {err.option}: {err.message}", file=sys.stderr)
        return 2
    data_s = time.perf_counter() - wall
    for e in entries:
        sizes = f"n = {e['n']}, n_eval = {e['n_eval'] or 'the test split'}"
        print(f"{e['model']} [{args.preset}] on fashion-mnist 28x28: {sizes}, epochs {e['config'].epochs}; "
              f"fit budget {'none' if args.no_cut else f'{args.fit_budget_s:g} s'}, "
              f"sample budget {'none' if args.no_cut else f'{args.sample_budget_s:g} s'}")
    if args.dry_run:
        return 0

    import jax

    from madjax.bench import machine
    from madjax.deep.runner import image_evaluation

    record = Record(args.out, {
        "what": "one generation (fully synthetic G^1) of the deep paper presets on Fashion-MNIST",
        "preset": args.preset, "data_dir": os.path.realpath(args.data_dir), "seed": args.seed,
        "fit_budget_s": None if args.no_cut else args.fit_budget_s,
        "sample_budget_s": None if args.no_cut else args.sample_budget_s,
        "machine": machine(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
        "python": platform.python_version(), "stages": {"data": {"seconds": round(data_s, 2)}}, "models": {},
    })
    start = time.perf_counter()
    evaluation = image_evaluation("fashion-mnist", args.data_dir, n_eval=entries[0]["n_eval"])
    from madjax.deep.features import lenet_features

    extractor = lenet_features("fashion-mnist", args.data_dir)
    record.data["stages"]["lenet"] = {"seconds": round(time.perf_counter() - start, 2),
                                      "from_cache": extractor.from_cache,
                                      "train_seconds": round(extractor.train_seconds, 2),
                                      "test_accuracy": extractor.accuracy}
    record.save()
    print(f"lenet: {record.data['stages']['lenet']}", file=sys.stderr, flush=True)
    key = jax.random.PRNGKey(args.seed)
    for i, entry in enumerate(entries):
        if entry["n_eval"] != entries[0]["n_eval"]:
            evaluation = image_evaluation("fashion-mnist", args.data_dir, n_eval=entry["n_eval"])
        run_model(args, entry, evaluation, record, jax.random.fold_in(key, i))
    record.data["wall_s"] = round(time.perf_counter() - wall, 1)
    record.save()
    print(json.dumps({m: {s: v for s, v in r["stages"].items()} for m, r in record.data["models"].items()},
                     indent=1))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
