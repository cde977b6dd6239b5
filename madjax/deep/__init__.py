"""Deep self-consuming loops: GLOW, a conditional DDPM and a WGAN-GP on the generation-step interface.

* :func:`train` -- the ``madjax train`` entry point (validate, preset, run/resume),
  one path for every model of :data:`MODELS`;
* :func:`run_loop` / :class:`DeepLoop` -- the checkpointed loop driver (datasets
  are arrays of points or ``Images(x, y)`` pytrees);
* :func:`glow` / :class:`GlowConfig` -- the GLOW flow as a ``GenerativeModel``;
  the DDPM and WGAN-GP live in :mod:`madjax.deep.ddpm` and
  :mod:`madjax.deep.wgan` (imported on demand: they are heavier);
* :func:`image_evaluation` -- LeNet-FID / precision / recall in LeNet features
  against the held-out test split.
"""

from madjax.deep.glow import GlowConfig, GlowInfo, GlowParams, glow, glow_log_prob
from madjax.deep.loop import DeepLoop, read_metrics, run_loop
from madjax.deep.runner import GLOW_PRESETS, MODELS, image_evaluation, train

__all__ = ["DeepLoop", "GLOW_PRESETS", "GlowConfig", "GlowInfo", "GlowParams",
           "MODELS", "glow", "glow_log_prob",
           "image_evaluation", "read_metrics", "run_loop", "train"]
