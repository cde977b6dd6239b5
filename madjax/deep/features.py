r"""LeNet features for image metrics: LeNet-FID, precision and recall (App. A.4, DESIGN §5).

The paper scores MNIST generations by FID and precision/recall in the
feature space of a classifier trained on the real data. Inception features
mean little on 28×28 or 8×8 grey images, so madjax trains its own LeNet-style
classifier (LeCun et al., 1998) once, with a fixed seed, on the real
training split (:func:`madjax.data.load_images`), and caches it on disk.
The Fréchet distance in this feature space is called **LeNet-FID**
throughout: its values are on another scale than Inception FID (84 features
of a small network trained on the data itself, not 2048 ImageNet features)
and cannot be compared with published Inception FIDs. Its behaviour on real
28×28 data -- clean train vs test, Gaussian noise, blur, a class removed --
is checked in ``tests/test_fashion_mnist.py`` and measured on the whole of
Fashion-MNIST by ``benchmarks/lenet_fid_validation.py`` (README).

Architecture (:class:`LeNet`), for an H×W grey image:

.. code-block:: text

    conv(6, k×k, SAME) → ReLU → 2×2 max-pool
    conv(16, k×k, SAME) → ReLU → 2×2 max-pool → flatten
    dense(120) → ReLU → dense(84) → ReLU  ← the features φ(x) ∈ R⁸⁴
    dense(10)                            ← class logits

with k = 5 for images of at least 16 pixels a side (MNIST: 28 → 14 → 7,
7·7·16 = 784 inputs to dense(120), the classic LeNet-5 up to padding) and
k = 3 below (8×8 digits: 8 → 4 → 2, 2·2·16 = 64). Both convolutions use
SAME padding, so the only size rule is that H and W are divisible by 4.
There is no dropout or batch norm: the network is the same function at
training and at evaluation time ("eval mode" needs no switch), and a feature
vector depends on its image only. Every layer runs at
``lax.Precision.HIGHEST`` so that accelerators do not fall back to
reduced-precision (TF32) matmuls.

Training (:class:`LeNetConfig`): cross-entropy, Adam with a step size decaying
(cosine) from ``learning_rate`` to 0 over the run, ``epochs`` passes of
shuffled minibatches (the remainder of each epoch's permutation is dropped),
all keys from ``PRNGKey(seed)``. The test-split accuracy is recorded with the
weights (:attr:`FeatureExtractor.accuracy`).

Cache: ``$MADJAX_CACHE/lenet/`` (default ``~/.cache/madjax/lenet/``), one
``.npz`` per (data name, SHA-256 of the train and test arrays, the
configuration, the file format); a different MNIST directory or a changed
configuration therefore trains a new network instead of reusing a stale one.
The file also records madjax's version and a SHA-256 of its arrays
(:func:`madjax.io.save_checked_npz`) and is written atomically; a file that is
unreadable, written by another version, altered, or holds weights of the
wrong shape or non-finite weights is retrained over with one warning line.

Metrics (:func:`image_metrics`) with the real images ``x_ref`` as reference:
"LeNet-FID" (key ``"fid"``) is the squared Fréchet distance between Gaussians fitted to φ of the
two sets (:func:`madjax.metrics.fid_from_features`: two-pass moments, ddof =
1), evaluated in float64 (a scoped ``jax.enable_x64``) because its matrix
square roots turn float32 round-off in the near-zero eigenvalues of the
feature covariance into errors of order √ε·λ_max each; precision and recall are Kynkäänniemi et al. (2019) with k = 5
(:func:`madjax.metrics.precision_recall`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from madjax._progress import progress_bar
from madjax.data import IMAGE_NAMES, ImageData, Images, _image_key, _load
from madjax.io import StaleCache, load_checked_npz, rebuild_notice, save_checked_npz
from madjax.metrics import fid_from_features, precision_recall
from madjax.validation import ParameterError, check_choice, check_float, check_int

Array = jax.Array

__all__ = ["LeNetConfig", "LENET_CONFIGS", "LeNet", "FeatureExtractor", "lenet_features", "image_metrics",
           "cache_root", "train_lenet"]

FEATURE_DIM = 84
CACHE_ENV = "MADJAX_CACHE"
# Bump when the file layout or the meaning of a cached network changes.
_FORMAT = 1
_HIGHEST = lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """Architecture and training schedule of the feature classifier.

    Attributes:
      image_shape: ``(H, W)``, both divisible by 4 (two 2×2 pools).
      num_classes: number of classes (10 digits).
      epochs: passes over the training split.
      batch_size: minibatch size (capped at the training-set size).
      learning_rate: initial Adam step size; it decays (cosine) to 0 by the
        last step.
      seed: the seed of the initialisation and of the minibatch order.
    """

    image_shape: tuple = (8, 8)
    num_classes: int = 10
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        shape = tuple(self.image_shape)
        if len(shape) != 2 or any(not isinstance(s, int) or s < 4 or s % 4 for s in shape):
            raise ParameterError("image_shape", f"must be (H, W) with H, W positive multiples of 4, got {shape}")
        object.__setattr__(self, "image_shape", shape)
        check_int("num_classes", self.num_classes, minimum=2)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if check_float("learning_rate", self.learning_rate) <= 0:
            raise ParameterError("learning_rate", f"must be > 0, got {self.learning_rate}")

    @property
    def kernel_size(self) -> int:
        """5 for images of at least 16 pixels a side, 3 below (module docstring)."""
        return 5 if min(self.image_shape) >= 16 else 3


# The default network per data set. digits: 1,501 training images, 20 epochs
# of 46 steps (~98-99 % test accuracy; with seeds 0-2: 99.0, 96.0, 98.7 %;
# a constant step of 10⁻³ needed 40 epochs for the same); MNIST and
# Fashion-MNIST: 60k images, 5 epochs of 468 steps (Fashion-MNIST's test
# accuracy: README, "LeNet-FID on Fashion-MNIST").
LENET_CONFIGS = {
    "digits": LeNetConfig(image_shape=(8, 8), epochs=20, batch_size=32),
    "mnist": LeNetConfig(image_shape=(28, 28), epochs=5, batch_size=128),
    "fashion-mnist": LeNetConfig(image_shape=(28, 28), epochs=5, batch_size=128),
}


class LeNet(nnx.Module):
    """The LeNet-style classifier of the module docstring; input ``(n, H, W)`` in [0, 1]."""

    def __init__(self, config: LeNetConfig, *, rngs: nnx.Rngs):
        k = config.kernel_size
        h, w = config.image_shape
        conv = functools.partial(nnx.Conv, kernel_size=(k, k), padding="SAME", precision=_HIGHEST, rngs=rngs)
        dense = functools.partial(nnx.Linear, precision=_HIGHEST, rngs=rngs)
        self.conv1 = conv(1, 6)
        self.conv2 = conv(6, 16)
        self.fc1 = dense((h // 4) * (w // 4) * 16, 120)
        self.fc2 = dense(120, FEATURE_DIM)
        self.head = dense(FEATURE_DIM, config.num_classes)

    def features(self, x: Array) -> Array:
        """Penultimate-layer features φ(x): ``(n, H, W) -> (n, 84)``, after the ReLU."""
        pool = functools.partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        h = pool(jax.nn.relu(self.conv1(x[..., None])))
        h = pool(jax.nn.relu(self.conv2(h)))
        h = jax.nn.relu(self.fc1(h.reshape(h.shape[0], -1)))
        return jax.nn.relu(self.fc2(h))

    def __call__(self, x: Array) -> Array:
        """Class logits ``(n, num_classes)``."""
        return self.head(self.features(x))


@functools.lru_cache(maxsize=None)
def _graphdef(config: LeNetConfig):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: LeNet(config, rngs=nnx.Rngs(0))))
    return graphdef


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(graphdef, state, x: Array, what: str) -> Array:
    model = nnx.merge(graphdef, state)
    return model.features(x) if what == "features" else model(x)


def _blocks(graphdef, state, x: np.ndarray, what: str, batch_size: int) -> np.ndarray:
    """Apply the network in blocks of exactly ``batch_size`` rows (the last zero-padded).

    One compiled function per batch size serves every n; each row's output
    depends on that row only, so n and the position of an image in its
    block do not change its result.
    """
    n = x.shape[0]
    outs = []
    for start in range(0, n, batch_size):
        block = x[start : start + batch_size]
        if block.shape[0] < batch_size:
            block = np.concatenate([block, np.zeros((batch_size - block.shape[0], *x.shape[1:]), x.dtype)])
        outs.append(_apply(graphdef, state, block, what))
    if not outs:
        return np.zeros((0, FEATURE_DIM if what == "features" else 0), np.float32)
    return np.asarray(jnp.concatenate(outs)[:n], np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """A trained LeNet and what it was trained on.

    Attributes:
      data: ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``.
      config: the :class:`LeNetConfig`.
      state: the ``nnx.State`` of the trained weights.
      accuracy: test-split classification accuracy in [0, 1].
      digest: hex SHA-256 of (format, data name, train/test arrays, config):
        the cache key.
      path: the cache file (None when not cached).
      from_cache: True when the weights were read from ``path`` rather than trained.
      train_seconds: wall time of the training run that produced the weights.
    """

    data: str
    config: LeNetConfig
    state: nnx.State
    accuracy: float
    digest: str
    path: str | None
    from_cache: bool
    train_seconds: float

    def _check(self, x, param: str) -> np.ndarray:
        if isinstance(x, Images):
            x = x.x
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[1:] != self.config.image_shape:
            raise ParameterError(param, f"must be images of shape (n, {self.config.image_shape[0]}, "
                                        f"{self.config.image_shape[1]}), got {x.shape}")
        return x

    def features(self, x, batch_size: int = 256) -> np.ndarray:
        """Penultimate-layer features φ(x).

        Args:
          x: ``(n, H, W)`` images in [0, 1] (or :class:`~madjax.data.Images`).
          batch_size: rows per compiled call (the memory knob); results do
            not depend on it beyond float32 rounding.

        Returns:
          ``(n, 84)`` float32 numpy array.
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        x = self._check(x, "x")
        return _blocks(_graphdef(self.config), self.state, x, "features", batch_size)

    def logits(self, x, batch_size: int = 256) -> np.ndarray:
        """Class logits ``(n, num_classes)`` float32 of images ``(n, H, W)``."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        x = self._check(x, "x")
        return _blocks(_graphdef(self.config), self.state, x, "logits", batch_size)


# ----------------------------------------------------------------------------- training


def train_lenet(config: LeNetConfig, data: ImageData, *, progress: bool = False) -> tuple[nnx.State, float]:
    """Train a :class:`LeNet` on ``data``'s training split; return (weights, test accuracy).

    Deterministic given ``config`` and ``data`` on a given backend: every key
    derives from ``PRNGKey(config.seed)``.
    """
    x_train = jnp.asarray(data.x_train, jnp.float32)
    y_train = jnp.asarray(data.y_train, jnp.int32)
    if x_train.shape[1:] != config.image_shape:
        raise ParameterError("image_shape", f"is {config.image_shape} but the images are {x_train.shape[1:]}")
    graphdef = _graphdef(config)
    n = x_train.shape[0]
    batch = min(config.batch_size, n)
    n_batches = n // batch
    tx = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.epochs * n_batches))
    init_key, order_key = jax.random.split(jax.random.PRNGKey(config.seed))
    _, params = nnx.split(LeNet(config, rngs=nnx.Rngs(params=init_key)))
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params)(xb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    @jax.jit
    def epoch(key, params, opt_state, x, y):
        order = jax.random.permutation(key, x.shape[0])[: n_batches * batch].reshape(n_batches, batch)

        def step(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = lax.scan(step, (params, opt_state), order)
        return params, opt_state, jnp.mean(losses)

    with progress_bar(total=config.epochs, desc="lenet", enabled=progress, unit="epoch") as bar:
        for e in range(config.epochs):
            params, opt_state, loss = epoch(jax.random.fold_in(order_key, e), params, opt_state, x_train, y_train)
            bar.update(1)
            if not bar.disable:  # the host sync only when someone is watching
                bar.set_postfix(loss=f"{float(loss):.4f}")
    logits = _blocks(graphdef, params, np.asarray(data.x_test, np.float32), "logits", 256)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.asarray(data.y_test)))
    return params, accuracy


# ----------------------------------------------------------------------------- disk cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> str:
    """The cache directory: ``cache_dir``, else ``$MADJAX_CACHE``, else ``~/.cache/madjax``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "madjax")
    return os.path.realpath(os.fspath(cache_dir))


def _digest(name: str, config: LeNetConfig, data: ImageData) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": _FORMAT, "data": name, "config": dataclasses.asdict(config)},
                        sort_keys=True).encode())
    for a in data:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _leaves(state: nnx.State) -> tuple[list[str], list[np.ndarray]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return [jax.tree_util.keystr(path) for path, _ in flat], [leaf for _, leaf in flat]


def _cache_key(digest: str) -> dict:
    """The cache key of a network: the file format, madjax's version and the data/config digest."""
    from madjax import __version__

    return {"cache": "lenet", "format": _FORMAT, "madjax_version": __version__, "digest": digest}


def _save(path: str, state: nnx.State, accuracy: float, digest: str, train_seconds: float) -> None:
    names, leaves = _leaves(state)
    arrays = {"names": np.array(names), "accuracy": np.float64(accuracy), "train_seconds": np.float64(train_seconds),
              **{f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}}
    save_checked_npz(path, _cache_key(digest), arrays)


def _restore(path: str, config: LeNetConfig, digest: str) -> tuple[nnx.State, float, float]:
    """Weights, accuracy and training time from ``path``.

    Raises:
      ValueError: (:class:`~madjax.io.StaleCache`) the file is unreadable,
        written for another network or madjax version, fails its checksum,
        or holds leaves of the wrong structure, shape or dtype, non-finite
        weights or an accuracy outside [0, 1].
    """
    _, template = nnx.split(nnx.eval_shape(lambda: LeNet(config, rngs=nnx.Rngs(0))))
    names, shapes = _leaves(template)
    fields = ("names", "accuracy", "train_seconds", *(f"leaf_{i}" for i in range(len(names))))
    f = load_checked_npz(path, _cache_key(digest), fields)
    if list(f["names"]) != names:
        raise StaleCache("holds another network's layers")
    leaves = [f[f"leaf_{i}"] for i in range(len(names))]
    for leaf, ref in zip(leaves, shapes):
        if leaf.shape != ref.shape or leaf.dtype != ref.dtype:
            raise StaleCache(f"holds a leaf of shape {leaf.shape} {leaf.dtype}, expected {ref.shape} {ref.dtype}")
        if not np.all(np.isfinite(leaf)):
            raise StaleCache("holds non-finite weights")
    accuracy, seconds = float(f["accuracy"]), float(f["train_seconds"])
    if not 0.0 <= accuracy <= 1.0:
        raise StaleCache(f"holds an accuracy of {accuracy}")
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves]), accuracy, seconds


@functools.lru_cache(maxsize=8)
def _extractor(data_key: tuple, root: str, config: LeNetConfig, progress: bool) -> FeatureExtractor:
    name = data_key[0]
    data = _load(data_key)
    digest = _digest(name, config, data)
    path = os.path.join(root, "lenet", f"lenet-{name}-{digest[:16]}.npz")
    if os.path.exists(path):
        try:
            state, accuracy, seconds = _restore(path, config, digest)
            return FeatureExtractor(name, config, state, accuracy, digest, path, True, seconds)
        except StaleCache as err:
            rebuild_notice("LeNet", path, f"is {err}")
    start = time.perf_counter()
    state, accuracy = train_lenet(config, data, progress=progress)
    seconds = time.perf_counter() - start
    _save(path, state, accuracy, digest, seconds)
    return FeatureExtractor(name, config, state, accuracy, digest, path, False, seconds)


def lenet_features(data: str, data_dir: str | os.PathLike | None = None, *, config: LeNetConfig | None = None,
                   cache_dir: str | os.PathLike | None = None, progress: bool = False) -> FeatureExtractor:
    """The LeNet feature extractor of ``data``: read from the disk cache, or trained and cached.

    Args:
      data: ``"digits"``, ``"mnist"`` or ``"fashion-mnist"``.
      data_dir: directory of the IDX files (default ``$MADJAX_DATA`` for
        mnist, :data:`madjax.data.FASHION_MNIST_DIR` for fashion-mnist).
      config: the network and schedule (default :data:`LENET_CONFIGS` ``[data]``).
      cache_dir: cache root (default ``$MADJAX_CACHE``, else ``~/.cache/madjax``).
      progress: a progress bar over the training epochs (terminal only).

    Returns:
      A :class:`FeatureExtractor`. Also cached in the process: a second call
      with the same data files, cache root and config returns the same object.

    Raises:
      ParameterError: naming ``data`` or ``data_dir`` (missing or malformed
        files), or a :class:`LeNetConfig` field whose image shape does not
        match the data -- before any training.
    """
    check_choice("data", data, IMAGE_NAMES)
    key = _image_key(data, data_dir)
    config = LENET_CONFIGS[data] if config is None else config
    if not isinstance(config, LeNetConfig):
        raise ParameterError("config", f"must be a LeNetConfig, got {type(config).__name__}")
    shape = _load(key).x_train.shape[1:]
    if config.image_shape != shape:
        raise ParameterError("image_shape", f"is {config.image_shape} but the {data} images are {shape}")
    return _extractor(key, cache_root(cache_dir), config, bool(progress))


# ----------------------------------------------------------------------------- metrics


class _RefCache(NamedTuple):
    key: tuple
    features: np.ndarray


_REF_CACHE: collections.OrderedDict = collections.OrderedDict()
_REF_CACHE_SIZE = 4


def _reference_features(extractor: FeatureExtractor, x: np.ndarray) -> np.ndarray:
    """φ(x_ref), memoised on the extractor and the *content* of x_ref (so in-place edits are seen)."""
    key = (extractor.digest, x.shape, hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=16).hexdigest())
    if key in _REF_CACHE:
        _REF_CACHE.move_to_end(key)
        return _REF_CACHE[key]
    feats = extractor.features(x)
    _REF_CACHE[key] = feats
    while len(_REF_CACHE) > _REF_CACHE_SIZE:
        _REF_CACHE.popitem(last=False)
    return feats


def image_metrics(extractor: FeatureExtractor, x_model, x_ref, *, k: int = 5) -> dict:
    """LeNet-FID, precision and recall of model images against real images, in LeNet feature space.

    Model images with any non-finite pixel are counted and dropped; the
    metrics describe the rest.

    Args:
      extractor: from :func:`lenet_features`.
      x_model: ``(m, H, W)`` model images (or :class:`~madjax.data.Images`).
      x_ref: ``(n, H, W)`` real images, the reference (n > k); its features
        are memoised on its content, so a loop that scores every generation
        against the same reference computes them once.
      k: neighbour rank of precision/recall.

    Returns:
      ``{"fid": LeNet-FID, d_F² of the Gaussians fitted to the features,
      "precision", "recall",
      "n_nonfinite": int}``; the three metrics are NaN when fewer than
      max(2, k + 1) model images are finite.
    """
    k = check_int("k", k, minimum=1)
    x_model = extractor._check(x_model, "x_model")
    x_ref = extractor._check(x_ref, "x_ref")
    if x_ref.shape[0] <= k:
        raise ParameterError("x_ref", f"needs more than k={k} images, got {x_ref.shape[0]}")
    finite = np.isfinite(x_model).all(axis=(1, 2))
    n_nonfinite = int(np.sum(~finite))
    x_model = x_model[finite]
    if x_model.shape[0] < max(2, k + 1):
        nan = float("nan")
        return {"fid": nan, "precision": nan, "recall": nan, "n_nonfinite": n_nonfinite}
    real = _reference_features(extractor, x_ref)
    fake = extractor.features(x_model)
    precision, recall = precision_recall(real, fake, k=k)
    # FID in float64 (scoped; nothing else changes mode): its square roots of
    # near-zero covariance eigenvalues turn a round-off δ ≈ ε·λ_max into
    # √(ε·λ_max) each, ~0.07 summed over 84 float32 digits features -- the size
    # of FID(train, test) itself. In float64 that error is ~10⁻⁵.
    with jax.enable_x64(True):
        fid = float(fid_from_features(real.astype(np.float64), fake.astype(np.float64)))
    return {"fid": fid, "precision": float(precision), "recall": float(recall), "n_nonfinite": n_nonfinite}
