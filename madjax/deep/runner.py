"""``madjax train``: validate, pick a preset, run one deep loop (DESIGN §10).

One ``train`` path serves every deep model. A model is an entry of
:data:`MODELS` -- its presets, the data it accepts, how a preset's
configuration adapts to the data (image size, classes), its factory, and how
a generation is evaluated -- so GLOW, the DDPM and the WGAN-GP share the
validation, the loop sizes, the resumable run directory and the driver
(:func:`madjax.deep.loop.run_loop`).

GLOW on 2-D Rosenbrock (the paper's Figure 15 setting is ``paper``; the others
keep the loop and shrink the work):

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

The conditional DDPM (``ddpm``) and the WGAN-GP (``wgan``) on images
(``--data digits``, ``mnist`` or ``fashion-mnist``); architectures and schedules are
``DDPM_CONFIGS`` / ``WGAN_CONFIGS`` of :mod:`madjax.deep.ddpm` and
:mod:`madjax.deep.wgan`, with the image size and class count taken from the
data:

=======  ==========================  =========================================
preset   n (default sizes)           evaluation samples per generation
=======  ==========================  =========================================
paper    60 000 (all of MNIST train)  10 000 (= the MNIST test split)
quick    1 000 (of the 1 501 digits)  the whole test split (296 digits)
quick    28×28 DDPM: 500              500, against 500 test images
smoke    96                           48
=======  ==========================  =========================================

**The quick preset on 28×28 images** (``--data mnist`` or ``fashion-mnist``)
is sized for a CPU too: one generation within 10 minutes on a 2-core
machine. The quick presets are sized for the 8×8 digits, and adapted as they
are the DDPM took ≈ 54 minutes per generation, nearly all of it sampling
(:data:`QUICK_28` has the measured breakdown), so on 28×28 images the quick
DDPM samples with T = 50 diffusion steps, draws n = 500 images per
generation and scores 500 samples against a class-balanced 500 of the test
images (:class:`ImageEval`); the quick WGAN-GP (≈ 3.4 minutes per
generation) is unchanged. :func:`image_preset` gives a preset on a data set.

The quick DDPM differs from ``DDPM_CONFIGS["quick"]`` by
:data:`DDPM_LOOP_CHANGES` (minibatch 32, every generation from scratch: fits
that converge on their own, so the loop measures drift rather than
continued training). The paper preset needs ``--data mnist`` or
``fashion-mnist`` (60 000 training images and 10 000 test images each; digits has 1 501, which is an
error naming the size).
**Image metrics**: LeNet-FID (the Fréchet distance in the LeNet's 84
features, not Inception FID; :mod:`madjax.deep.features`), precision and
recall (k = 5) in the feature space
of a LeNet the project trains on the same data's training split (:func:`madjax.deep.features.lenet_features`,
cached on disk), against the **held-out test split** as the reference -- the
same images every generation, never seen by G¹ nor by the LeNet's
training -- and ``n_nonfinite``. The quick preset scores as many model
samples as there are reference images (296 on digits; 500 of each for the
DDPM on 28×28 images), so precision and recall compare sets of equal size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, NamedTuple

from madjax.base import GenerativeModel
from madjax.data import DATA_NAMES, IMAGE_NAMES, DataSource, Images, get_source, load_images
from madjax.deep.evaluate import PointEval, point_metrics
from madjax.deep.glow import GlowConfig, glow, glow_log_prob
from madjax.deep.loop import LOOPS, DeepLoop, EvaluateFn, check_resumable, run_loop
from madjax.resources import check_train_run
from madjax.loops import LOOP_ALIASES, LoopParams, synthetic_extent
from madjax.validation import (
    ParameterError,
    check_choice,
    check_fraction,
    check_int,
    check_lam,
    check_loop_sizes,
    check_nonnegative,
    check_seed,
)

PRESETS = ("smoke", "quick", "paper")


class Preset(NamedTuple):
    """One preset of a model: configuration, default size, evaluation sizes.

    Attributes:
      config: the model's frozen configuration dataclass (for image models,
        its ``image_shape`` / ``num_classes`` are replaced by the data's).
      n: default of ``n_ini``, ``n_syn`` and (where the loop has a real part)
        ``n_real``.
      n_eval: model samples evaluated (and saved) per generation; None: as
        many as the reference holds.
      evaluation: model-specific evaluation settings (GLOW: a
        :class:`~madjax.deep.evaluate.PointEval`; images: None).
    """

    config: Any
    n: int
    n_eval: int | None
    evaluation: Any = None


class Evaluation(NamedTuple):
    """What :func:`run_loop` needs to score a generation.

    ``evaluate(key, params, x_model, x_ref)``; ``n_eval`` model samples; the
    reference is either ``n_ref`` fresh draws of the source or the fixed
    dataset ``reference``.
    """

    evaluate: EvaluateFn
    n_eval: int
    n_ref: int | None = None
    reference: Any = None


class ModelEntry(NamedTuple):
    """A deep model as ``train`` sees it.

    Attributes:
      data: the ``--data`` names it accepts.
      presets: ``() -> {preset: Preset}`` (a function: importing a model's
        module is deferred until it is asked for).
      build: ``(config, progress) -> GenerativeModel``.
      adapt: ``(config, source) -> config`` fitted to the data's shape.
      evaluation: ``(preset, config, source, data_dir, progress) -> Evaluation``.
    """

    data: tuple
    presets: Callable[[], Mapping[str, Preset]]
    build: Callable[[Any, bool], GenerativeModel]
    adapt: Callable[[Any, DataSource], Any]
    evaluation: Callable[..., Evaluation]


# ----------------------------------------------------------------------------- GLOW


class GlowPreset(NamedTuple):
    """One preset of the GLOW loop: architecture/schedule, default size, evaluation sizes."""

    glow: GlowConfig
    n: int
    evaluation: PointEval


def _glow_table() -> dict[str, GlowPreset]:
    return {
        "paper": GlowPreset(GlowConfig(couplings=8, hidden=64, epochs=20, batch_size=256), 10_000,
                            PointEval(n_exact=2000, n_sinkhorn=1000, n_pr=10_000, n_nll=10_000)),
        "quick": GlowPreset(GlowConfig(couplings=8, hidden=64, epochs=20, batch_size=256), 4000,
                            PointEval(n_exact=1000, n_sinkhorn=1000, n_pr=4000, n_nll=4000)),
        "smoke": GlowPreset(GlowConfig(couplings=2, hidden=16, epochs=2, batch_size=128, init_points=512), 512,
                            PointEval(n_exact=256, n_sinkhorn=256, n_pr=512, n_nll=512)),
    }


GLOW_PRESETS = _glow_table()


def _glow_presets() -> dict[str, Preset]:
    # n evaluation samples and n fresh reference points per generation.
    return {p: Preset(s.glow, s.n, s.n, s.evaluation) for p, s in GLOW_PRESETS.items()}


def glow_evaluate(config, evaluation: PointEval) -> EvaluateFn:
    """The per-generation ``evaluate(key, params, x_model, x_ref)`` of a GLOW loop."""
    def evaluate(key, params, x_model, x_ref):
        del key  # every metric here is deterministic given the samples
        return point_metrics(x_model, x_ref, evaluation, log_prob=lambda x: glow_log_prob(config, params, x))

    return evaluate


def _glow_build(config, progress: bool) -> GenerativeModel:
    return glow(config, progress=progress)


def _glow_evaluation(preset: Preset, config, source, data_dir, progress) -> Evaluation:
    # Fresh exact Rosenbrock draws (a key of their own) as the reference.
    return Evaluation(glow_evaluate(config, preset.evaluation), n_eval=preset.n_eval, n_ref=preset.n)


# ----------------------------------------------------------------------------- images

# Default sizes and evaluation samples of the image presets (module docstring).
IMAGE_SIZES = {"paper": (60_000, 10_000), "quick": (1000, None), "smoke": (96, 48)}


def image_reference(data: str, data_dir=None) -> Images:
    """The held-out test split of ``data``: the reference of every image metric."""
    import jax.numpy as jnp

    split = load_images(data, data_dir)
    return Images(jnp.asarray(split.x_test), jnp.asarray(split.y_test))


def reference_subset(y: "np.ndarray", n_ref: int) -> "np.ndarray":
    """Indices of a class-balanced subset of ``n_ref`` labelled images, chosen without random numbers.

    Each class contributes its first images in file order, ⌊n_ref / C⌋ each,
    and the first ``n_ref mod C`` classes one more (a class with too few
    gives what it has and the others fill up, in class order).

    Args:
      y: ``(n,)`` integer labels.
      n_ref: subset size, 2 ≤ n_ref ≤ n.

    Returns:
      ``(n_ref,)`` sorted int64 indices into ``y``.

    Raises:
      ParameterError: naming ``n_ref``.
    """
    import numpy as np

    y = np.asarray(y)
    n_ref = check_int("n_ref", n_ref, minimum=2)
    if n_ref > len(y):
        raise ParameterError("n_ref", f"must be <= {len(y)}, the test split's size, got {n_ref}")
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    quota = [n_ref // len(classes) + (i < n_ref % len(classes)) for i in range(len(classes))]
    taken = [idx[:q] for idx, q in zip(by_class, quota)]
    short = n_ref - sum(len(t) for t in taken)
    for i, idx in enumerate(by_class):  # classes with too few images: fill up from the others
        extra = idx[len(taken[i]):len(taken[i]) + short]
        taken[i] = np.concatenate([taken[i], extra])
        short -= len(extra)
    return np.sort(np.concatenate(taken))


def image_evaluation(data: str, data_dir=None, *, n_eval: int | None = None, k: int = 5,
                     progress: bool = False, n_ref: int | None = None) -> Evaluation:
    """LeNet-FID / precision / recall of model images in LeNet features, against the test split.

    Trains (or reads from the disk cache) the LeNet of ``data`` -- the one
    step here that may take a while the first time.

    Args:
      data: ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``.
      data_dir: directory of the IDX files (default ``$MADJAX_DATA`` for
        mnist, ``/usr/share/datasets/fashion-mnist`` for fashion-mnist).
      n_eval: model samples per generation (None: the test split's size).
      k: neighbour rank of precision/recall.
      progress: progress bar of the LeNet's training.
      n_ref: reference images: a class-balanced subset of the test split
        (:func:`reference_subset`); None: all of it.
    """
    import jax.numpy as jnp

    from madjax.deep.features import image_metrics, lenet_features

    reference = image_reference(data, data_dir)
    if n_ref is not None:
        keep = jnp.asarray(reference_subset(reference.y, n_ref))
        reference = Images(reference.x[keep], reference.y[keep])
    n_eval = int(reference.x.shape[0]) if n_eval is None else check_int("n_eval", n_eval, minimum=2)
    extractor = lenet_features(data, data_dir, progress=progress)

    def evaluate(key, params, x_model, x_ref):
        del key, params  # the metrics depend on the samples only
        return image_metrics(extractor, x_model, x_ref, k=k)

    return Evaluation(evaluate, n_eval=n_eval, reference=reference)


def _image_evaluation(preset: Preset, config, source, data_dir, progress) -> Evaluation:
    n_ref = preset.evaluation.n_ref if isinstance(preset.evaluation, ImageEval) else None
    return image_evaluation(source.name, data_dir, n_eval=preset.n_eval, progress=progress, n_ref=n_ref)


@dataclasses.dataclass(frozen=True)
class ImageEval:
    """Evaluation settings of an image preset beyond ``n_eval``.

    Attributes:
      n_ref: reference images, a class-balanced subset of the test split
        (:func:`reference_subset`) -- as many as the model samples scored,
        so precision and recall compare sets of equal size.
    """

    n_ref: int


# The quick preset on 28×28 images (mnist, fashion-mnist). The quick presets
# are sized for the 8×8 digits; adapted to 28×28 unchanged (12× the pixels)
# one generation took, on this project's 2-core CPU shared with other jobs
# (load 5-7; benchmarks/README.md, "The quick preset on 28×28 images"):
#
#   model    fit      sampling n_s + n_eval       evaluation   generation
#   DDPM     477 s    2728 s (1000 + 10 000, λ=1)  5 s          ≈ 54 min (λ = 0.5: ≈ 100 min)
#   WGAN-GP  183 s    15 s   (1000 + 10 000)       3 s          ≈ 3.4 min
#
# The DDPM's cost is its sampler: T network passes per image (2T with
# guidance, λ < 1) for the n_s training images of the next generation and the
# n_eval scored ones. On 28×28 images its quick preset therefore changes
# (QUICK_28, applied by image_preset and by reproduce --data):
#
# * timesteps 100 → 50, the β range scaled by 500/T as before (10⁻³ … 0.2,
#   ᾱ_T ≈ 0.006): half the sampler's passes;
# * n (n_ini = n_s, and n_r) 1000 → 500: half the images to sample for the
#   next generation and half a fit's steps at the same 40 epochs;
# * n_eval 10 000 (the whole test split) → 500 scored samples, against a
#   class-balanced subset of 500 test images (ImageEval; equal sizes for
#   precision and recall);
# * the network (channels 16, 32; one block), the minibatch of 32, the 40
#   epochs from scratch and the learning rate stay.
#
# The WGAN-GP fits the budget as it is: it keeps its network, epochs and
# sizes, and scores samples against the whole test split.
QUICK_28 = {
    "ddpm": dict(changes=dict(timesteps=50, beta_start=1e-3, beta_end=0.2), n=500, n_eval=500),
    "wgan": dict(changes={}, n=None, n_eval=None),
}


# Loop-specific changes to the DDPM presets. quick: minibatches of 32 instead
# of 128 -- the same images per epoch, so about the same CPU time per fit, but
# four times the optimiser steps: from scratch, 40 epochs bring a fit of 500
# digits to LeNet-FID 5.4 (batch 128: 19.5) and of 1000 digits to 2.4
# (batch 128: 8.6; real train vs test images: 1.7). With fits that converge
# on their own, every generation trains from scratch (warm_start False), the
# paper's protocol (§2): warm-started fits of an under-converged G¹ keep
# improving for generations -- in the synthetic-augmentation loop at batch 128
# the FID *fell* from 19.5 to 4.1 over five generations -- which hides the
# drift the loop is there to measure.
DDPM_LOOP_CHANGES = {"quick": dict(batch_size=32, warm_start=False)}


def ddpm_preset_config(preset: str):
    """``DDPM_CONFIGS[preset]`` with the loop changes of :data:`DDPM_LOOP_CHANGES`."""
    from madjax.deep.ddpm import DDPM_CONFIGS

    return dataclasses.replace(DDPM_CONFIGS[preset], **DDPM_LOOP_CHANGES.get(preset, {}))


def _ddpm_presets() -> dict[str, Preset]:
    return {p: Preset(ddpm_preset_config(p), *IMAGE_SIZES[p]) for p in PRESETS}


def _wgan_presets() -> dict[str, Preset]:
    from madjax.deep.wgan import WGAN_CONFIGS

    return {p: Preset(WGAN_CONFIGS[p], *IMAGE_SIZES[p]) for p in PRESETS}


@functools.lru_cache(maxsize=8)  # one set of compiled functions per (config, progress), shared by runs
def _ddpm_build(config, progress: bool) -> GenerativeModel:
    from madjax.deep.ddpm import ddpm

    return ddpm(config, progress=progress)


def _wgan_build(config, progress: bool) -> GenerativeModel:
    from madjax.deep.wgan import wgan

    return wgan(config, progress=progress)


def adapt_ddpm(config, source: DataSource):
    """The DDPM configuration for ``source``'s image size and classes."""
    return dataclasses.replace(config, image_shape=tuple(source.shape), num_classes=source.num_classes)


def adapt_wgan(config, source: DataSource):
    """The WGAN-GP configuration for ``source``'s image size (it is unconditional)."""
    return dataclasses.replace(config, image_shape=tuple(source.shape))


MODELS: dict[str, ModelEntry] = {
    "glow": ModelEntry(("rosenbrock",), _glow_presets, _glow_build, lambda c, s: c, _glow_evaluation),
    "wgan": ModelEntry(IMAGE_NAMES, _wgan_presets, _wgan_build, adapt_wgan, _image_evaluation),
    "ddpm": ModelEntry(IMAGE_NAMES, _ddpm_presets, _ddpm_build, adapt_ddpm, _image_evaluation),
}


def image_preset(model: str, preset: str, source: DataSource) -> Preset:
    """``model``'s ``preset`` on the images of ``source``: the configuration adapted to their shape and classes.

    Args:
      model: ``"ddpm"`` or ``"wgan"``.
      preset: ``"smoke"``, ``"quick"`` or ``"paper"``.
      source: the image data (its ``shape`` and ``num_classes``).

    Returns:
      The :class:`Preset` that ``train`` runs.
    """
    from madjax.data import MNIST_SHAPE

    check_choice("model", model, ("ddpm", "wgan"))
    check_choice("preset", preset, PRESETS)
    spec = model_presets(model)[preset]
    spec = spec._replace(config=MODELS[model].adapt(spec.config, source))
    if preset == "quick" and tuple(source.shape) == MNIST_SHAPE:
        return quick_28(model, spec)
    return spec


def quick_28(model: str, spec: Preset) -> Preset:
    """The quick preset ``spec`` (already adapted to 28×28 images) with the changes of :data:`QUICK_28`."""
    change = QUICK_28[model]
    config = dataclasses.replace(spec.config, **change["changes"])
    if change["n_eval"] is None:
        return spec._replace(config=config)
    return Preset(config, change["n"], change["n_eval"], ImageEval(n_ref=change["n_eval"]))


def model_presets(model: str) -> Mapping[str, Preset]:
    """The presets of ``model``; ParameterError naming ``model`` if this install lacks its module."""
    check_choice("model", model, tuple(MODELS))
    try:
        return MODELS[model].presets()
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("madjax"):
            raise
        raise ParameterError("model", f"{model} is not available in this version of madjax") from None


# ----------------------------------------------------------------------------- sizes


def loop_sizes(loop: str, n: int, *, n_ini=None, n_real=None, n_syn=None, memory=1,
               accumulate=False, real_fraction=None, n_total=None, n_train=None, growth=None) -> DeepLoop:
    """A validated :class:`DeepLoop`, with ``n`` for the sizes left as None.

    The fully synthetic loop has no real part (``n_real`` 0); the
    synthetic-augmentation loop fits G¹ on D_r, so ``n_ini`` defaults to
    ``n_real`` and must equal it. ``real_fraction`` p with ``n_total`` n
    replaces ``n_real``/``n_syn`` by ``round(p n)`` and the rest (Fig. 34;
    :meth:`madjax.loops.LoopParams.split_total`). ``loop`` may be a name of
    :data:`madjax.loops.LOOP_ALIASES` (accumulate-subsample: a subsample of
    ``n_train`` rows, default ``n_ini``); ``growth`` α draws ``⌈n_syn t^α⌉``.
    """
    check_choice("loop", loop, LOOPS + tuple(LOOP_ALIASES))
    subsample = False
    if loop in LOOP_ALIASES:
        alias = LOOP_ALIASES[loop]
        loop, accumulate, subsample = alias["kind"], accumulate or alias["accumulate"], alias["subsample"]
    if n_train is not None and not subsample:
        raise ParameterError("n_train", "is the subsample's size of --loop accumulate-subsample")
    growth = 0.0 if growth is None else check_nonnegative("growth", growth, maximum=4.0)
    if real_fraction is not None or n_total is not None:
        if n_real is not None or n_syn is not None:
            raise ParameterError("real_fraction", "give either real_fraction with n_total, or n_real/n_syn, not both")
        if real_fraction is None or n_total is None:
            raise ParameterError("real_fraction" if real_fraction is None else "n_total",
                                 "real_fraction and n_total go together")
        if loop == "fully-synthetic":
            raise ParameterError("real_fraction", "has no meaning in the fully-synthetic loop")
        n_total = check_int("n_total", n_total, minimum=2)
        n_real, n_syn = (int(v) for v in LoopParams.split_total(check_fraction(real_fraction), n_total))
    if loop == "fully-synthetic":
        n_real = 0 if n_real is None else n_real
    elif n_real is None:
        n_real = n
    if n_ini is None:
        n_ini = n_real if loop == "synthetic-augmentation" else n
    n_syn = n if n_syn is None else n_syn
    n_train = 0 if n_train is None else check_int("n_train", n_train, minimum=2)
    return DeepLoop(kind=loop, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory, accumulate=bool(accumulate),
                    subsample=subsample, n_train=n_train, growth=growth)


def check_real_sizes(loop: DeepLoop, data: str, data_dir=None, *, preset: str | None = None) -> None:
    """Every real draw must fit in the training split of an image data set.

    Real images are drawn without replacement from the training split, so
    ``n_ini`` and ``n_real`` (each one draw) may not exceed its size. Points
    (Rosenbrock) are unlimited.

    Raises:
      ParameterError: naming ``n_ini`` or ``n_real``.
    """
    if data not in IMAGE_NAMES:
        return
    n_train = int(load_images(data, data_dir).x_train.shape[0])
    for name in ("n_ini", "n_real"):
        value = getattr(loop, name)
        if value > n_train:
            hint = f" (the {preset} preset's default)" if preset else ""
            raise ParameterError(name, f"must be <= {n_train}, the size of the {data} training split "
                                       f"(real images are drawn without replacement), got {value}{hint}")


# ----------------------------------------------------------------------------- train


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
    real_fraction: float | None = None,
    n_total: int | None = None,
    n_train: int | None = None,
    growth: float | None = None,
    save_every: int = 1,
    seed: int = 0,
    preset: str = "quick",
    out: str,
    progress: bool = True,
    allow_large: bool = False,
) -> list[dict]:
    """Run (or resume) one chain of a deep self-consuming loop into ``out``.

    Everything is validated before any work -- model, preset, loop, data (an
    MNIST / Fashion-MNIST directory is read and checked), sizes against the data, the output
    directory -- a bad value raises
    :class:`~madjax.validation.ParameterError` naming the parameter.

    Args:
      model: ``"glow"``, ``"ddpm"`` or ``"wgan"``.
      loop: ``"fully-synthetic"``, ``"synthetic-augmentation"`` or ``"fresh"``.
      generations: T ≥ 1; a larger T than a saved run's continues it.
      lam: sampling bias λ ∈ (0, 1]: latents z = √λ·ε (GLOW, WGAN-GP), or
        classifier-free guidance w = 1/λ − 1 (DDPM).
      data: ``"rosenbrock"`` (GLOW) or ``"digits"`` / ``"mnist"`` /
        ``"fashion-mnist"`` (DDPM, WGAN-GP).
      data_dir: directory of the IDX files (default ``$MADJAX_DATA`` for
        mnist, ``/usr/share/datasets/fashion-mnist`` for fashion-mnist;
        unused otherwise).
      n_ini, n_real, n_syn: sizes (None: the preset's n; module docstring).
      memory: K ≥ 1, models synthetic samples are drawn from.
      accumulate: keep every previous synthetic set (not with memory > 1).
      real_fraction, n_total: p and n, replacing ``n_real``/``n_syn`` by
        ``round(p n)`` and ``n − round(p n)`` (:func:`loop_sizes`).
      n_train, growth: the loop operators accumulate-subsample (``loop="accumulate-subsample"``)
        and growing sizes (:mod:`madjax.loops`).
      save_every: write sample files every this many generations (and at 1, T).
      seed: integer seed in [0, 2³² − 1].
      preset: ``"smoke"``, ``"quick"`` or ``"paper"``.
      out: output directory (metrics.csv, samples/, checkpoints/, config.json).
      progress: progress bars (terminal only).
      allow_large: run even when the training sets or generations are absurdly
        large (:func:`madjax.resources.check_train_run`).

    Returns:
      The metric rows, one per generation.
    """
    check_choice("model", model, tuple(MODELS))
    check_choice("preset", preset, PRESETS)
    check_choice("loop", loop, LOOPS + tuple(LOOP_ALIASES))
    check_choice("data", data, DATA_NAMES)
    entry = MODELS[model]
    if data not in entry.data:
        raise ParameterError("data", f"{model} models {' or '.join(entry.data)}, got {data!r}")
    source = get_source(data, data_dir)  # reads and checks IDX files before any work
    if data in IMAGE_NAMES:
        spec = image_preset(model, preset, source)  # adapted to the images (QUICK_28 on 28×28)
    else:
        spec = model_presets(model)[preset]
        spec = spec._replace(config=entry.adapt(spec.config, source))
    lam = check_lam(lam)
    generations = check_int("generations", generations, minimum=1)
    save_every = check_int("save_every", save_every, minimum=1)
    seed = check_seed(seed)
    loop_spec = loop_sizes(loop, spec.n, n_ini=n_ini, n_real=n_real, n_syn=n_syn, memory=memory,
                           accumulate=accumulate, real_fraction=real_fraction, n_total=n_total, n_train=n_train,
                           growth=growth)
    check_real_sizes(loop_spec, data, data_dir, preset=preset)
    check_loop_sizes(n_ini=loop_spec.n_ini, n_real=loop_spec.n_real, n_syn=loop_spec.n_syn, generations=generations,
                     accumulate=loop_spec.accumulate)
    largest, total = synthetic_extent(loop_spec.n_syn, loop_spec.growth, (), max(generations, 2))
    pool = total if loop_spec.accumulate else largest
    check_train_run(generations=generations, n_ini=loop_spec.n_ini,
                    points=max(loop_spec.n_ini, loop_spec.n_real + pool), width=math.prod(source.shape),
                    allow_large=allow_large)
    config = spec.config
    record = {
        "model": model, "preset": preset, "data": data, "lam": lam, "seed": seed,
        "loop": dataclasses.asdict(loop_spec), model: dataclasses.asdict(config),
        "evaluation": dataclasses.asdict(spec.evaluation) if spec.evaluation is not None else None,
        "n_eval": spec.n_eval, "generations": generations, "save_every": save_every,
    }
    if spec.evaluation is None:
        del record["evaluation"]
    check_resumable(out, record)
    evaluation = entry.evaluation(spec, config, source, data_dir, progress)
    return run_loop(
        entry.build(config, progress), source, loop_spec, lam=lam, generations=generations, seed=seed,
        out=out, evaluate=evaluation.evaluate, n_eval=evaluation.n_eval, n_ref=evaluation.n_ref,
        reference=evaluation.reference, save_every=save_every, record=record, progress=progress,
        label=f"{model} λ={lam:g}",
    )
