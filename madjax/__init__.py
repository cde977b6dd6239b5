"""madjax: self-consuming generative loops in JAX.

Reproduces and extends "Self-Consuming Generative Models Go MAD"
(Alemohammad et al., 2024): Gaussian and Gaussian-mixture autophagous loops
as thousands of vmapped Monte-Carlo chains, the effective sample size n_e and
the phase diagrams, and deep loops through the same generation-step interface.
"""

__version__ = "0.1.0"

from madjax import metrics
from madjax.base import GenerativeModel, LoopModel
from madjax.loops import LoopParams, LoopSpec
from madjax.effective import effective_size
from madjax.simulate import simulate

__all__ = ["GenerativeModel", "LoopModel", "LoopParams", "LoopSpec", "effective_size", "metrics", "simulate",
           "__version__"]
