"""The DDPM as a :class:`~madjax.base.GenerativeModel` record: :func:`ddpm` ties the compiled
training epoch (:mod:`madjax.deep.ddpm.training`) to the guided ancestral sampler
(:mod:`madjax.deep.ddpm.samplers`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from madjax._progress import progress_bar
from madjax.base import GenerativeModel
from madjax.data import Images
from madjax.deep.ddpm.config import DDPMConfig, _canonical
from madjax.deep.ddpm.samplers import _chunked, _compiled_sampler, _lam, balanced_labels, sample_keys
from madjax.deep.ddpm.training import DDPMInfo, DDPMParams, _check_images, _compiled_training
from madjax.validation import check_int

Array = jax.Array


@functools.lru_cache(maxsize=16)  # one set of compiled functions per (config, progress), shared by runs
def ddpm(config: DDPMConfig = DDPMConfig(), *, progress: bool = False) -> GenerativeModel:
    """A conditional DDPM as a :class:`~madjax.base.GenerativeModel` record.

    Args:
      config: schedule, network and training.
      progress: show a tqdm bar over the epochs of each ``fit`` and the
        chunks of each ``sample``.

    Returns:
      ``GenerativeModel(init, fit, sample)`` with

      * ``init(key) -> DDPMParams``: a fresh U-Net (ε_θ ≡ 0), EMA = weights;
      * ``fit(key, params, data: Images) -> (DDPMParams, DDPMInfo)``:
        ``config.epochs`` epochs of clipped Adam on :func:`loss` with label
        dropout, each epoch one jitted ``lax.scan`` over minibatches;
        warm-started from ``params`` unless ``config.warm_start`` is False;
        :class:`DDPMInfo` holds the last epoch's mean loss, the number of
        optimiser steps and a non-finite flag (device scalars: no host sync);
      * ``sample(key, params, n, lam) -> Images``: n images with balanced
        labels (:func:`balanced_labels`) from the ancestral sampler with
        guidance w = 1/λ − 1 and the EMA weights; x ``(n, H, W)`` float32 in
        [0, 1], y ``(n,)`` int32. With ``k_labels, k_noise = split(key)``,
        the labels are ``balanced_labels(k_labels, n, C)`` and image i is
        :func:`ancestral_sample` with key ``fold_in(k_noise, i)``, whatever
        the chunking. n is static (it sets shapes), λ traced: one
        compilation per chunk size serves every λ.
    """
    init, train_epoch = _compiled_training(_canonical(config))
    sample_chunk = _compiled_sampler(_canonical(config))

    def fit(key: Array, params: DDPMParams, data: Images) -> tuple[DDPMParams, DDPMInfo]:
        x0, y = _check_images(config, data)
        k_init, k_train = jax.random.split(key)
        if not config.warm_start:
            params = init(k_init)
        start, nonfinite = params.step, jnp.zeros((), bool)
        with progress_bar(total=config.epochs, desc="epoch", enabled=progress, unit="epoch", nested=True) as bar:
            for epoch in range(config.epochs):
                params, value = train_epoch(jax.random.fold_in(k_train, epoch), params, x0, y, epoch, config.epochs)
                nonfinite = nonfinite | ~jnp.isfinite(value)
                bar.update(1)
                if not bar.disable:  # the host sync only when someone is watching
                    bar.set_postfix(loss=f"{float(value):.2f}")
        return params, DDPMInfo(value, params.step - start, nonfinite)

    def sample(key: Array, params: DDPMParams, n: int, lam) -> Images:
        n = check_int("n", n, minimum=1)
        lam = _lam(lam)
        k_labels, k_noise = jax.random.split(key)
        y = balanced_labels(k_labels, n, config.num_classes)
        keys = sample_keys(k_noise, n)
        x = _chunked(sample_chunk, config.sample_chunk, keys, y, params.ema, lam, progress)
        return Images(x, y)

    return GenerativeModel(init=init, fit=fit, sample=sample)
