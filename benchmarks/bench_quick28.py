"""Where one generation's time goes: the deep image loops' preset on 28×28 images, stage by stage, on a CPU.

    python benchmarks/bench_quick28.py --out benchmarks/out/quick28.json              # quick, fashion-mnist
    python benchmarks/bench_quick28.py --models ddpm --lam 0.5 --out ...              # one model, guided
    python benchmarks/bench_quick28.py --preset smoke --data-dir tests/data/fashion-mnist   # every path, seconds

For each model (``--models``) this times, with the preset's configuration
adapted to the data exactly as ``madjax train`` and ``madjax reproduce --data``
adapt it (:func:`madjax.deep.runner.image_preset`), the stages of one
generation t ≥ 2 of the fully synthetic loop
(:func:`madjax.deep.loop.run_loop`): draw ``n_syn`` synthetic images of
G^{t−1} at λ, fit G^t on them, draw ``n_eval`` images of G^t at λ, score them
(LeNet-FID, precision, recall against the test split). Generation 1 draws
real images instead of the first sampling stage. Every stage is timed with
``block_until_ready``; compilation is timed apart (a first call on the same
shapes), so the numbers are a generation's steady-state cost, and the
``first_*`` values are what a fresh process adds once.

``lenet``      the data set's LeNet (trained once, then read from the cache:
               ``from_cache`` and the recorded ``train_seconds``);
``fit``        one epoch twice (compile + steady state), then -- unless
               ``--probe`` -- the whole fit; ``--probe`` extrapolates it as
               epochs × epoch time;
``sample``     a probe of ``--probe-images`` images twice (compile + steady
               state), then -- unless ``--probe`` -- the generation's
               ``n_syn + n_eval`` images; ``--probe`` extrapolates;
``evaluate``   the metrics of ``n_eval`` images (real training images: the
               cost depends on the count only) against the test split.

The JSON (``--out``) is rewritten after every stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

from _stages import MODEL_NAMES, checked, model_list, timed

_lam = checked(float, lambda v: 0 < v <= 1, "in (0, 1]")
_images = checked(int, lambda v: v >= 2, "an integer >= 2")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_quick28.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=model_list, default=list(MODEL_NAMES), help="comma list of ddpm, wgan")
    p.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    p.add_argument("--data", default="fashion-mnist", choices=("mnist", "fashion-mnist", "digits"))
    p.add_argument("--data-dir", default=None, help="directory of the IDX files (default: the data set's)")
    p.add_argument("--lam", type=_lam, default=1.0, help="sampling bias λ of both sampling stages")
    p.add_argument("--probe", action="store_true", help="extrapolate the fit and samples from one epoch / one probe")
    p.add_argument("--probe-images", type=_images, default=100, help="images of the sampling probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "quick28.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    from madjax.bench import machine
    from madjax.data import get_source
    from madjax.deep.features import lenet_features
    from madjax.deep.runner import MODELS, image_evaluation, image_preset, loop_sizes
    from madjax.io import write_json
    from madjax.validation import ParameterError

    try:
        source = get_source(args.data, args.data_dir)
    except ParameterError as err:
        print(f"bench_quick28.py: error: {err.option}: {err.message}", file=sys.stderr)
        return 2
    record = {"what": "one generation t >= 2 of the fully synthetic loop, stage by stage", "preset": args.preset,
              "data": args.data, "lam": args.lam, "probe": args.probe, "machine": machine(),
              "jax": jax.__version__, "python": platform.python_version(),
              "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "cpu_count": os.cpu_count(),
              "load_average_start": os.getloadavg(), "models": {}}

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_json(args.out, record, indent=2)

    def say(what, values):
        print(f"{what}: " + ", ".join(f"{k} {v}" for k, v in values.items()), file=sys.stderr, flush=True)

    start = time.perf_counter()
    extractor = lenet_features(args.data, args.data_dir)
    record["lenet"] = {"seconds": round(time.perf_counter() - start, 2), "from_cache": extractor.from_cache,
                       "train_seconds": round(extractor.train_seconds, 1), "test_accuracy": extractor.accuracy}
    say("lenet", record["lenet"])
    save()
    key = jax.random.PRNGKey(args.seed)
    for i, name in enumerate(args.models):
        spec = image_preset(name, args.preset, source)
        config = spec.config
        loop = loop_sizes("fully-synthetic", spec.n)
        evaluation = image_evaluation(args.data, args.data_dir, n_eval=spec.n_eval)
        n_eval = evaluation.n_eval
        stages = {}
        record["models"][name] = {"config": dataclasses.asdict(config), "n_syn": loop.n_syn, "n_eval": n_eval,
                                  "stages": stages}
        k_init, k_real, k_fit, k_sample = jax.random.split(jax.random.fold_in(key, i), 4)
        build = MODELS[name].build
        model = build(config, False)
        (params, init_s) = timed(model.init, k_init)
        train = source.sample(k_real, loop.n_syn)
        one = build(dataclasses.replace(config, epochs=1), False)
        _, first = timed(one.fit, k_fit, params, train)
        _, epoch = timed(one.fit, k_fit, params, train)
        stages["fit"] = {"first_epoch_s": round(first, 2), "epoch_s": round(epoch, 2), "epochs": config.epochs,
                         "estimate_s": round(epoch * config.epochs, 1)}
        if not args.probe:
            (params, _), fit_s = timed(model.fit, k_fit, params, train)
            stages["fit"]["seconds"] = round(fit_s, 1)
        say(f"{name} fit", stages["fit"])
        save()
        m = args.probe_images
        _, first = timed(model.sample, k_sample, params, m, args.lam)
        _, probe = timed(model.sample, jax.random.fold_in(k_sample, 1), params, m, args.lam)
        n_draw = loop.n_syn + n_eval
        stages["sample"] = {"first_probe_s": round(first, 2), "probe_s": round(probe, 2), "probe_images": m,
                            "images": n_draw, "estimate_s": round(probe * n_draw / m, 1)}
        if not args.probe:
            _, syn_s = timed(model.sample, jax.random.fold_in(k_sample, 2), params, loop.n_syn, args.lam)
            _, ev_s = timed(model.sample, jax.random.fold_in(k_sample, 3), params, n_eval, args.lam)
            stages["sample"].update(n_syn_s=round(syn_s, 1), n_eval_s=round(ev_s, 1), seconds=round(syn_s + ev_s, 1))
        say(f"{name} sample", stages["sample"])
        save()
        real = source.sample(jax.random.fold_in(k_real, 1), n_eval)
        evaluation.evaluate(None, None, source.sample(jax.random.fold_in(k_real, 2), n_eval), evaluation.reference)
        _, eval_s = timed(lambda: evaluation.evaluate(None, None, real, evaluation.reference))
        stages["evaluate"] = {"seconds": round(eval_s, 1), "images": n_eval}
        total = sum(s.get("seconds", s.get("estimate_s", 0.0)) for s in stages.values())
        stages["generation_s"] = round(total, 1)
        say(f"{name} evaluate", stages["evaluate"])
        say(f"{name} generation", {"seconds": stages["generation_s"]})
        save()
    record["load_average_end"] = os.getloadavg()
    save()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
