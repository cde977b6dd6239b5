"""LeNet features: training, disk cache, batch-size determinism, FID / precision / recall on images.

The digits network is trained once for the module (its default configuration,
into a temporary cache); every other test reuses it.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_data import write_mnist

from madjax.data import Images, load_images
from madjax.deep import features as F
from madjax.deep.features import (FEATURE_DIM, LENET_CONFIGS, FeatureExtractor, LeNetConfig, cache_root,
                                  image_metrics, lenet_features)
from madjax.validation import ParameterError

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def extractor(cache) -> FeatureExtractor:
    F._extractor.cache_clear()  # a cold process: nothing in memory, nothing on disk
    return lenet_features("digits", cache_dir=cache)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits")


def test_training_reaches_a_useful_accuracy(extractor, digits):
    # FID in this feature space means something only if the features separate
    # the classes: require the ≥ 95 % test accuracy of a working LeNet on digits.
    assert not extractor.from_cache and extractor.config == LENET_CONFIGS["digits"]
    assert extractor.accuracy >= 0.95, extractor.accuracy
    logits = extractor.logits(digits.x_test)
    assert logits.shape == (296, 10)
    assert extractor.accuracy == np.mean(np.argmax(logits, axis=1) == digits.y_test)


def _rounding_bound(extractor: FeatureExtractor, x: np.ndarray) -> np.ndarray:
    """First-order bound on the float32 round-off of φ(x), elementwise.

    A dot product of length n computed in any order has error ≤ γ_n·|W||h|
    with γ_n = n·ε/(1 − n·ε) (Higham, 2002, §3.1). ReLU and max-pooling are
    monotone and 1-Lipschitz, so through the whole network the error is at
    most (Σ_layers γ_{n_l})·A, where A is the output of the same network with
    |W|, |b| applied to |x| (a bound on every |W||h| along the way).
    """
    k = extractor.config.kernel_size
    h, w = extractor.config.image_shape
    lengths = (k * k * 1, k * k * 6, (h // 4) * (w // 4) * 16, 120)
    gamma = sum(n * EPS32 / (1 - n * EPS32) for n in lengths)
    absolute = dataclasses.replace(extractor, state=jax.tree.map(jnp.abs, extractor.state))
    return gamma * absolute.features(np.abs(x))


def test_features_do_not_depend_on_the_batch_size(extractor, digits):
    x = digits.x_train
    reference = extractor.features(x)
    assert reference.shape == (len(x), FEATURE_DIM) and reference.dtype == np.float32
    assert np.all(reference >= 0)  # post-ReLU features
    bound = 2 * _rounding_bound(extractor, x)  # two computations, each within the bound
    for batch_size in (7, len(x)):
        other = extractor.features(x, batch_size=batch_size)
        assert np.all(np.abs(other - reference) <= bound), batch_size
    # A row's features do not depend on the rest of the call: any subset gives the same rows.
    subset = extractor.features(x[100:113], batch_size=7)
    assert np.all(np.abs(subset - reference[100:113]) <= bound[100:113])
    np.testing.assert_array_equal(extractor.features(Images(x[:5], digits.y_train[:5])), reference[:5])


def test_fid_of_a_set_with_itself_is_zero_and_precision_recall_one(extractor, digits):
    out = image_metrics(extractor, digits.x_test, digits.x_test)
    # Identical inputs give identical moments; what is left is the round-off of
    # the float64 matrix square roots: each of the d eigenvalues of Σ^½ΣΣ^½ is
    # off by ~d·ε·λ_max², i.e. its square root by ≤ √(d·ε)·λ_max, twice over.
    feats = extractor.features(digits.x_test).astype(np.float64)
    d = feats.shape[1]
    lam_max = np.linalg.eigvalsh(np.cov(feats.T))[-1]
    assert 0 <= out["fid"] <= 4 * d * np.sqrt(d * EPS64) * lam_max, out
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["n_nonfinite"] == 0


def test_fid_of_noise_dwarfs_fid_between_train_and_test(extractor, digits):
    # Reference: the training split; compared: the test split (the same law)
    # and as many uniform-noise images. FID between two samples of one law is
    # estimation bias alone, of the order of tr Σ·(1/n₁ + 1/n₂) (the exact
    # expectation of its mean term ‖μ̂₁ − μ̂₂‖²); noise lies off the digit
    # manifold, so a good feature space puts it an order of magnitude further.
    noise = jax.random.uniform(jax.random.PRNGKey(0), digits.x_test.shape, jnp.float32)
    same = image_metrics(extractor, digits.x_test, digits.x_train)
    far = image_metrics(extractor, noise, digits.x_train)
    real_f = extractor.features(digits.x_train).astype(np.float64)
    test_f = extractor.features(digits.x_test).astype(np.float64)
    noise_f = extractor.features(noise).astype(np.float64)
    yardstick = np.trace(np.cov(real_f.T)) * (1 / len(real_f) + 1 / len(test_f))
    assert same["fid"] <= 10 * yardstick, (same, yardstick)
    assert far["fid"] >= 10 * same["fid"], (far, same)
    # d_F² ≥ ‖μ₁ − μ₂‖² (the covariance part is a squared Bures distance ≥ 0).
    mean_term = np.sum((real_f.mean(0) - noise_f.mean(0)) ** 2)
    assert far["fid"] >= mean_term * (1 - 1e-9)
    assert far["precision"] < same["precision"] and far["recall"] < same["recall"]


def test_nonfinite_model_images_are_counted_and_dropped(extractor, digits):
    bad = np.full((3, 8, 8), 0.5, np.float32)
    bad[0, 1, 2], bad[1, 0, 0], bad[2, 7, 7] = np.nan, np.inf, -np.inf
    x_model = np.concatenate([digits.x_test[:150], bad, digits.x_test[150:]])
    clean = image_metrics(extractor, digits.x_test, digits.x_train)
    dirty = image_metrics(extractor, x_model, digits.x_train)
    assert dirty["n_nonfinite"] == 3
    assert {k: v for k, v in dirty.items() if k != "n_nonfinite"} == {k: v for k, v in clean.items()
                                                                     if k != "n_nonfinite"}
    too_few = image_metrics(extractor, np.concatenate([bad, digits.x_test[:5]]), digits.x_train)
    assert too_few["n_nonfinite"] == 3 and all(np.isnan(too_few[k]) for k in ("fid", "precision", "recall"))


def test_reference_features_follow_the_contents(extractor, digits):
    ref = np.array(digits.x_train)  # the shapes of the other tests: nothing new to compile
    first = image_metrics(extractor, digits.x_test, ref)
    ref[:150] = digits.x_test[:150]  # edited in place: the memo must not serve stale features
    second = image_metrics(extractor, digits.x_test, ref)
    fresh = image_metrics(extractor, digits.x_test, np.array(ref))
    assert second == fresh and second != first


def test_disk_cache_is_hit_and_keyed_on_data_and_config(extractor, cache, digits):
    assert lenet_features("digits", cache_dir=cache) is extractor  # in memory
    path = extractor.path
    assert os.path.dirname(path) == os.path.join(os.path.realpath(cache), "lenet")
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp")] == []  # atomic write
    mtime = os.stat(path).st_mtime_ns
    F._extractor.cache_clear()  # a new process: only the disk cache is left
    loaded = lenet_features("digits", cache_dir=cache)
    assert loaded.from_cache and os.stat(path).st_mtime_ns == mtime and loaded.path == path
    assert loaded.accuracy == extractor.accuracy and loaded.train_seconds == extractor.train_seconds
    for a, b in zip(jax.tree.leaves(loaded.state), jax.tree.leaves(extractor.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(loaded.features(digits.x_test), extractor.features(digits.x_test))
    # Another configuration or other images: another key (so another file).
    config = extractor.config
    assert F._digest("digits", dataclasses.replace(config, epochs=config.epochs + 1), digits) != extractor.digest
    assert F._digest("digits", dataclasses.replace(config, seed=1), digits) != extractor.digest
    edited = digits._replace(x_train=np.where(np.arange(8) == 0, 1.0, digits.x_train).astype(np.float32))
    assert F._digest("digits", config, edited) != extractor.digest
    assert F._digest("digits", config, digits) == extractor.digest


def test_unusable_cache_files_are_rejected(extractor, tmp_path):
    config, digest = extractor.config, extractor.digest
    with open(extractor.path, "rb") as f:
        good = f.read()
    for name, payload in {"truncated": good[: len(good) // 2], "garbage": b"not an npz file"}.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="unreadable"):
            F._restore(str(path), config, digest)
    with pytest.raises(ValueError, match="other parameters"):
        F._restore(extractor.path, config, "0" * 64)


def test_cache_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path))
    assert cache_root() == os.path.realpath(tmp_path)
    assert cache_root(tmp_path / "x") == os.path.realpath(tmp_path / "x")
    monkeypatch.delenv("MADJAX_CACHE")
    assert cache_root() == os.path.realpath(os.path.expanduser("~/.cache/madjax"))


def test_mnist_network_is_keyed_on_its_directory(tmp_path):
    # A 28×28 LeNet (5×5 kernels) on two tiny fake MNIST directories: one
    # short training, and the other directory's files give another key.
    write_mnist(tmp_path / "a", n_train=40, n_test=12, seed=0)
    write_mnist(tmp_path / "b", n_train=40, n_test=12, seed=1)
    config = LeNetConfig(image_shape=(28, 28), epochs=1, batch_size=20)
    assert config.kernel_size == 5
    ex = lenet_features("mnist", tmp_path / "a", config=config, cache_dir=tmp_path / "cache")
    assert not ex.from_cache and 0 <= ex.accuracy <= 1 and os.path.exists(ex.path)
    feats = ex.features(load_images("mnist", tmp_path / "a").x_test, batch_size=8)
    assert feats.shape == (12, FEATURE_DIM) and feats.dtype == np.float32 and np.all(np.isfinite(feats))
    assert F._digest("mnist", config, load_images("mnist", tmp_path / "b")) != ex.digest


def test_bad_arguments_fail_before_any_training(extractor, digits, tmp_path):
    cases = [
        (lambda: lenet_features("cifar"), "data"),
        (lambda: lenet_features("mnist", tmp_path / "absent"), "data_dir"),
        (lambda: lenet_features("digits", config=LeNetConfig(image_shape=(28, 28)), cache_dir=tmp_path), "image_shape"),
        (lambda: LeNetConfig(image_shape=(6, 6)), "image_shape"),
        (lambda: LeNetConfig(epochs=0), "epochs"),
        (lambda: LeNetConfig(learning_rate=-1.0), "learning_rate"),
        (lambda: extractor.features(np.zeros((4, 28, 28), np.float32)), "x"),
        (lambda: extractor.features(digits.x_test, batch_size=0), "batch_size"),
        (lambda: image_metrics(extractor, digits.x_test, np.zeros((4, 8)), k=5), "x_ref"),
        (lambda: image_metrics(extractor, np.zeros((10, 8, 9)), digits.x_test), "x_model"),
        (lambda: image_metrics(extractor, digits.x_test, digits.x_test[:5], k=5), "x_ref"),
    ]
    for call, param in cases:
        with pytest.raises(ParameterError) as err:
            call()
        assert err.value.param == param
    assert not os.path.exists(tmp_path / "lenet")
