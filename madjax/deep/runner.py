"""``madjax train``: validate, pick a preset, run one deep loop (DESIGN §10).

Presets of the GLOW flow on 2-D Rosenbrock (the paper's Figure 15 setting is
``paper``; the others keep the loop and shrink the work):

=======  =========  ======  ======  =====  ======  ===============================
preset   couplings  hidden  epochs  batch  n       evaluation (exact W2 / Sinkhorn / P-R)
=======  =========  ======  ======  =====  ======  ===============================
paper    8          64      20      256    10⁴     2000 / 1000 / 10⁴ points
quick    8          64      20      256    4000    1000 / 1000 / 4000
smoke    2          16      2       128    512     256 / 256 / 512
=======  =========  ======  ======  =====  ======  ===============================

``n`` is the default of every size the user leaves out (``n_ini``, ``n_syn``,
and ``n_real`` where the loop has a real part), the number of evaluation
samples per generation and of real reference samples. The paper does not
state its optimiser: we use Adam with global-norm clipping and a step size
decaying (cosine) from 10⁻³ to 10⁻⁵ within each generation, which brings G¹
within ~0.008 nats of the target's entropy in the 20 paper epochs and its
moments within ~1 % of its training set's (measured over three seeds; a
constant 10⁻³ left 10–15 % moment errors, which the loop would then
compound). The Sinkhorn subsample is the smallest because its cost grows
fastest with n (:mod:`madjax.deep.evaluate`).

``wgan`` and ``ddpm`` belong to a later version: asking for them is a
``ParameterError`` before any work.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from madjax.data import DATA_NAMES, get_source
from madjax.deep.evaluate import PointEval, point_metrics
from madjax.deep.glow import GlowConfig, glow, glow_log_prob
from madjax.deep.loop import LOOPS, DeepLoop, check_resumable, run_loop
from madjax.validation import ParameterError, check_choice, check_int, check_lam

MODELS = ("glow", "wgan", "ddpm")
AVAILABLE_MODELS = ("glow",)
PRESETS = ("smoke", "quick", "paper")


class GlowPreset(NamedTuple):
    """One preset of the GLOW loop: architecture/schedule, default size, evaluation sizes."""

    glow: GlowConfig
    n: int
    evaluation: PointEval


GLOW_PRESETS = {
    "paper": GlowPreset(GlowConfig(couplings=8, hidden=64, epochs=20, batch_size=256), 10_000,
                        PointEval(n_exact=2000, n_sinkhorn=1000, n_pr=10_000, n_nll=10_000)),
    "quick": GlowPreset(GlowConfig(couplings=8, hidden=64, epochs=20, batch_size=256), 4000,
                        PointEval(n_exact=1000, n_sinkhorn=1000, n_pr=4000, n_nll=4000)),
    "smoke": GlowPreset(GlowConfig(couplings=2, hidden=16, epochs=2, batch_size=128, init_points=512), 512,
                        PointEval(n_exact=256, n_sinkhorn=256, n_pr=512, n_nll=512)),
}


def loop_sizes(loop: str, n: int, *, n_ini=None, n_real=None, n_syn=None, memory=1,
               accumulate=False) -> DeepLoop:
    """A validated :class:`DeepLoop`, with ``n`` for the sizes left as None.

    The fully synthetic loop has no real part (``n_real`` 0); the
    synthetic-augmentation loop fits G¹ on D_r, so ``n_ini`` defaults to
    ``n_real`` and must equal it.
    """
    check_choice("loop", loop, LOOPS)
    if loop == "fully-synthetic":
        n_real = 0 if n_real is None else n_real
    elif n_real is None:
        n_real = n
    if n_ini is None:
        n_ini = n_real if loop == "synthetic-augmentation" else n
    n_syn = n if n_syn is None else n_syn
    return DeepLoop(kind=loop, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory, accumulate=bool(accumulate))


def glow_evaluate(config: GlowConfig, evaluation: PointEval):
    """The per-generation ``evaluate(key, params, x_model, x_ref)`` of a GLOW loop."""

    def evaluate(key, params, x_model, x_ref):
        del key  # every metric here is deterministic given the samples
        return point_metrics(x_model, x_ref, evaluation, log_prob=lambda x: glow_log_prob(config, params, x))

    return evaluate


def train(
    model: str,
    *,
    loop: str,
    generations: int,
    lam: float = 1.0,
    data: str,
    data_dir: str | None = None,
    n_ini: int | None = None,
    n_real: int | None = None,
    n_syn: int | None = None,
    memory: int = 1,
    accumulate: bool = False,
    save_every: int = 1,
    seed: int = 0,
    preset: str = "quick",
    out: str,
    progress: bool = True,
) -> list[dict]:
    """Run (or resume) one chain of a deep self-consuming loop into ``out``.

    Everything is validated before any work: a bad value raises
    :class:`~madjax.validation.ParameterError` naming the parameter.

    Args:
      model: ``"glow"`` (``"wgan"``, ``"ddpm"``: not available in this version).
      loop: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      generations: T ≥ 1; a larger T than a saved run's continues it.
      lam: sampling bias λ ∈ (0, 1]: latents z = √λ·ε.
      data: ``"rosenbrock"`` (GLOW models 2-D points).
      data_dir: directory of image data (unused by Rosenbrock).
      n_ini, n_real, n_syn: sizes (None: the preset's n; module docstring).
      memory: K ≥ 1, models synthetic points are drawn from.
      accumulate: keep every previous synthetic set (not with memory > 1).
      save_every: write sample files every this many generations (and at 1, T).
      seed: integer seed ≥ 0.
      preset: ``"smoke"``, ``"quick"`` or ``"paper"``.
      out: output directory (metrics.csv, samples/, checkpoints/, config.json).
      progress: progress bars (terminal only).

    Returns:
      The metric rows, one per generation.
    """
    check_choice("model", model, MODELS)
    if model not in AVAILABLE_MODELS:
        raise ParameterError("model", f"{model} is not available in this version of madjax")
    check_choice("preset", preset, PRESETS)
    check_choice("loop", loop, LOOPS)
    check_choice("data", data, DATA_NAMES)
    if data != "rosenbrock":
        raise ParameterError("data", f"glow models 2-D points: use rosenbrock, got {data!r}")
    source = get_source(data, data_dir)
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    save_every = check_int("save_every", save_every, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    spec = GLOW_PRESETS[preset]
    loop_spec = loop_sizes(loop, spec.n, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory,
                           accumulate=accumulate)
    record = {
        "model": model, "preset": preset, "data": data, "lam": lam, "seed": seed,
        "loop": dataclasses.asdict(loop_spec), "glow": dataclasses.asdict(spec.glow),
        "evaluation": dataclasses.asdict(spec.evaluation), "n_eval": spec.n,
        "generations": generations, "save_every": save_every,
    }
    check_resumable(out, record)
    return run_loop(
        glow(spec.glow, progress=progress), source, loop_spec, lam=lam, generations=generations, seed=seed,
        out=out, evaluate=glow_evaluate(spec.glow, spec.evaluation), n_eval=spec.n, n_ref=spec.n,
        save_every=save_every, record=record, progress=progress,
    )
