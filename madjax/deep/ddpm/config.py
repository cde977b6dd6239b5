"""Configuration of the conditional DDPM: one frozen record for schedule, network, training and sampling.

:class:`DDPMConfig` is validated on construction (a bad field raises
``ParameterError`` naming it); :data:`DDPM_CONFIGS` holds the named presets
(``paper``, ``quick``, ``smoke``). :func:`_canonical` resets the fields that
do not enter a compiled function, so configurations differing only in them
share executables.
"""

from __future__ import annotations

import dataclasses

from madjax.deep.ddpm.schedules import _MAX_ALPHA_BAR_T, _schedule_f64
from madjax.validation import ParameterError, check_float, check_int


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
    """Schedule, U-Net and training of a conditional DDPM (defaults: the paper's MNIST model).

    The paper states T = 500, 10 % label dropout and λ = 1/(1+w); it gives
    neither the network nor the training schedule. The defaults are a
    standard small conditional MNIST U-Net trained for 20 epochs with batch
    256 (as in common MNIST classifier-free-guidance DDPMs).

    Attributes:
      image_shape: (H, W); each side divisible by 2^(len(channels) − 1).
      num_classes: C; the label embedding has C + 1 rows, the last is ∅.
      timesteps: T.
      beta_start, beta_end: β_1 and β_T of the linear schedule; ᾱ_T must be
        ≤ 0.02 (the sampler starts from N(0, I)): a short chain needs larger
        β (the smoke preset scales them by 500/T).
      channels: U-Net widths, one per resolution (H, H/2, …).
      blocks: residual blocks per resolution on each side of the U.
      embed_dim: size of the sinusoidal time embedding and of the
        time + label embedding added into every block.
      epochs: passes over the training set per ``fit``.
      batch_size: minibatch size (⌊n/batch⌋ full batches of a fresh
        permutation per epoch).
      learning_rate: Adam step size at the start of each ``fit``; it decays
        (cosine) to ``learning_rate·final_lr_fraction`` by the end.
      final_lr_fraction: see ``learning_rate``.
      grad_clip: global-norm gradient clipping.
      ema_decay: EMA decay of the weights the samplers use; 0 = no EMA.
      label_dropout: probability of training on ∅ instead of the label.
      warm_start: ``fit`` fine-tunes the given parameters (True) or
        re-initialises from its key (False, the paper's protocol).
      sample_chunk: at most this many images go through the sampler at once.
    """

    image_shape: tuple[int, int] = (28, 28)
    num_classes: int = 10
    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: int = 2
    embed_dim: int = 128
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-4
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    warm_start: bool = True
    sample_chunk: int = 1000

    def __post_init__(self):
        shape = self.image_shape
        if not isinstance(shape, tuple) or len(shape) != 2:
            raise ParameterError("image_shape", f"must be a tuple (H, W), got {shape!r}")
        for side in shape:
            check_int("image_shape", side, minimum=2)
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ParameterError("channels", f"must be a non-empty tuple of widths, got {self.channels!r}")
        for width in self.channels:
            check_int("channels", width, minimum=1)
        factor = 2 ** (len(self.channels) - 1)
        if any(side % factor for side in shape):
            raise ParameterError(
                "image_shape", f"{shape} is not divisible by 2^{len(self.channels) - 1} = {factor} "
                f"(one halving per extra entry of channels={self.channels})"
            )
        check_int("num_classes", self.num_classes, minimum=1)
        check_int("timesteps", self.timesteps, minimum=2)
        for name in ("blocks", "embed_dim", "epochs", "batch_size", "sample_chunk"):
            check_int(name, getattr(self, name), minimum=1)
        if self.embed_dim % 2:
            raise ParameterError("embed_dim", f"must be even (sine and cosine halves), got {self.embed_dim}")
        for name in ("learning_rate", "final_lr_fraction", "grad_clip"):
            if check_float(name, getattr(self, name)) <= 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("ema_decay", "label_dropout"):
            if not 0.0 <= check_float(name, getattr(self, name)) < 1.0:
                raise ParameterError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < check_float("beta_start", self.beta_start) < 1.0:
            raise ParameterError("beta_start", f"must be in (0, 1), got {self.beta_start}")
        if not self.beta_start <= check_float("beta_end", self.beta_end) < 1.0:
            raise ParameterError("beta_end", f"must be in [beta_start, 1), got {self.beta_end}")
        alpha_bar_t = float(_schedule_f64(self.timesteps, self.beta_start, self.beta_end)[2][-1])
        if alpha_bar_t > _MAX_ALPHA_BAR_T:
            raise ParameterError(
                "beta_end", f"the schedule keeps ᾱ_T = {alpha_bar_t:.3g} of the signal at t = T "
                f"(must be ≤ {_MAX_ALPHA_BAR_T}); raise beta_start/beta_end or timesteps"
            )
        if not isinstance(self.warm_start, bool):
            raise ParameterError("warm_start", f"must be a bool, got {self.warm_start!r}")


# Presets for the loops (DESIGN §4). Wall times measured on a 2-core CPU shared
# with three other jobs (load 2.5–4), training on the 1,501 digits of the train
# split; the first fit and the first sample of a process add their compilation:
#
#   preset  fit (1 generation)   first fit   sample 1000, λ = 1 / λ = 0.5
#   quick   43 s                 73–82 s     13 s / 18 s
#   smoke   1.2 s                25 s        (500 at λ = 0.5: 4 s)
#
# The quick model at T = 500 samples 1000 images in 73 s (λ = 1) / 116–148 s
# (λ = 0.5), hence its T = 100 (below).
DDPM_CONFIGS: dict[str, DDPMConfig] = {
    # The paper's MNIST model: 28×28, T = 500, 60k images (GPU).
    "paper": DDPMConfig(warm_start=False),
    # 8×8 digits (~1,500 training images), recognisable class-conditional digits
    # after one fit. T = 100 instead of 500: the samplers cost T network passes
    # (2T with guidance), and a loop samples n_s + n_eval images per generation,
    # which at T = 500 would cost several times the fit on a CPU. The β range is
    # the paper's scaled by 500/T (5·10⁻⁴ … 0.1), so ᾱ_T ≈ 0.006 as for the paper.
    "quick": DDPMConfig(
        image_shape=(8, 8), timesteps=100, beta_start=5e-4, beta_end=0.1, channels=(16, 32), blocks=1,
        embed_dim=64, epochs=40, batch_size=128, learning_rate=2e-3, ema_decay=0.99,
    ),
    # Every code path in seconds: a tiny net and a 50-step chain (β scaled by 500/50).
    "smoke": DDPMConfig(
        image_shape=(8, 8), timesteps=50, beta_start=1e-3, beta_end=0.2, channels=(8, 16), blocks=1,
        embed_dim=16, epochs=2, batch_size=64, learning_rate=2e-3, ema_decay=0.9,
    ),
}


def _canonical(config: DDPMConfig) -> DDPMConfig:
    """``config`` with the fields that do not enter a compiled function reset.

    ``epochs`` (each epoch receives it as a traced value for the
    learning-rate schedule), ``warm_start`` and ``sample_chunk`` (host-side choices) do not
    change what :func:`_compiled` compiles, so configurations differing only
    in them share one set of executables.
    """
    return dataclasses.replace(config, epochs=1, warm_start=True, sample_chunk=1)
