"""Deep self-consuming loops: GLOW (and later WGAN-GP, DDPM) on the generation-step interface.

* :func:`train` -- the ``madjax train`` entry point (validate, preset, run/resume);
* :func:`run_loop` / :class:`DeepLoop` -- the checkpointed loop driver;
* :func:`glow` / :class:`GlowConfig` -- the GLOW flow as a ``GenerativeModel``.
"""

from madjax.deep.glow import GlowConfig, GlowParams, glow, glow_log_prob
from madjax.deep.loop import DeepLoop, read_metrics, run_loop
from madjax.deep.runner import GLOW_PRESETS, train

__all__ = ["DeepLoop", "GLOW_PRESETS", "GlowConfig", "GlowParams", "glow", "glow_log_prob", "read_metrics",
           "run_loop", "train"]
