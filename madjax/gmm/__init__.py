r"""Gaussian-mixture models in self-consuming loops (paper App. C.1, Figs 11/12; DESIGN §4).

Target
    :math:`P_r = \frac{1}{25}\sum_{a,b} \mathcal N\bigl((a, b), \sigma^2 I_2\bigr)`,
    :math:`a, b \in \{-4, -2, 0, 2, 4\}`, :math:`\sigma = 0.05` -- the 5 × 5
    grid of Che et al. (2020); drawn by :func:`madjax.points.sample_target`.

Model
    A K-component (K = 25) full-covariance mixture
    :math:`G = \sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` fitted by EM from
    scratch every generation (the paper trains each generation from scratch;
    :mod:`madjax.gmm.em`): greedy k-means++ seeding (Arthur & Vassilvitskii,
    2007), one hard-assignment M-step, then EM until the mean log-likelihood
    improves by less than ``tol`` or ``max_iter`` iterations. M-step:

    .. math::

        N_k = \sum_i r_{ik},\quad \pi_k = N_k / n,\quad
        \mu_k = \frac{1}{N_k}\sum_i r_{ik} x_i,\quad
        \Sigma_k = \frac{1}{N_k}\sum_i r_{ik}(x_i - \mu_k)(x_i - \mu_k)^\top + 10^{-6} I.

    Sampling with bias λ draws a component from π and then
    :math:`\mathcal N(\mu_k, \lambda\Sigma_k)` (each component's covariance
    scaled by λ; DESIGN §1).

Loop
    The GMM is a :class:`~madjax.base.LoopModel` (:class:`GMMSpec`,
    :mod:`madjax.gmm.model`): the generation step and the ``scan × vmap``
    executor of :mod:`madjax.loops` run it like every other jittable model.
    Its data are masked point buffers of ``draw_rows`` rows per draw, so the
    sizes n_ini, n_r, n_s stay traced.

    The paper does not state the synthetic sample size. The default here is
    ``n_ini = n_syn =`` :data:`DEFAULT_N` ``= 1000`` (40 points per mode).
    The dynamics are functions of t/n: a mode's weight performs a
    Wright–Fisher-like random walk with per-generation variance
    :math:`\pi(1-\pi)/n`, and each mode's covariance shrinks by about
    :math:`1 - 25/n` per generation (the MLE divides by :math:`n_k`). With
    n = 1000 a few modes are lost by t ≈ 20 and most by t ≈ 200; the
    ``paper`` preset of Figs 11/12 uses n = 10⁴, which stretches the same
    picture over the paper's 2,000 generations (:mod:`madjax.figures.gmm`).

Distance
    ``w2`` is the mixture Wasserstein distance MW2 of the fitted mixture to
    the target mixture (Delon & Desolneux, 2020; :mod:`madjax.gmm.distance`),
    computed exactly from the parameters: it decreases with the number n of
    real points a GMM is fitted to, which is what the effective sample size
    n_e (Eq. 3) needs.

Diagnostics of :math:`G^t` (:func:`madjax.points.point_diagnostics` of an
evaluation sample of ``n_eval`` points at λ = 1 -- diagnostics describe the
model, not the biased sampler): ``total_variance``, ``modal_variance``,
``recall`` and ``precision`` (k = 5, the target as reference),
``modes_covered``; plus ``em_iterations``, ``em_converged`` and ``nonfinite``.
"""

from madjax.gmm.distance import grid_target_params, mixture_w2
from madjax.gmm.em import EMInfo, GMMParams, fit_em, kmeans_plusplus
from madjax.gmm.model import GMMSpec, sample_gmm

__all__ = [
    "GMMParams",
    "EMInfo",
    "GMMSpec",
    "fit_em",
    "kmeans_plusplus",
    "sample_gmm",
    "mixture_w2",
    "grid_target_params",
    "DEFAULT_N",
]

DEFAULT_N = 1000
"""Default points per generation (n_ini = n_syn) and n_eval; see the module docstring."""
