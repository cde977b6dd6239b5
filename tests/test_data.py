"""Data sources: Rosenbrock (exact sampler, density), the IDX reader, MNIST and digits images."""

import gzip
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from jax.scipy.stats import norm

from madjax.data import (DIGITS_TEST_EVERY, MNIST_FILES, ROSENBROCK_MEAN, ROSENBROCK_TAIL_MASS, ROSENBROCK_VAR,
                         ImageData, Images, get_source, load_images, read_idx, rosenbrock_log_density,
                         rosenbrock_sample)
from madjax.validation import ParameterError

# Central moments of x₂ − 1 = (x₁² − 1) + ε/√2 (a = x₁² − 1, b = ε/√2):
# E a⁴ = 60, E a² = 2, E b² = 1/2, E b⁴ = 3/4  =>  μ₄ = 60 + 6·2·½ + ¾ = 66.75.
# The sample variance then has Var(s²) ≈ (μ₄ − σ⁴)/n = (66.75 − 6.25)/n.
_MU4_X2 = 66.75


def test_rosenbrock_moments_match_closed_form():
    n = 200_000
    x = np.asarray(rosenbrock_sample(jax.random.PRNGKey(0), n), np.float64)
    assert x.shape == (n, 2)
    z = zcrit(m=5)
    var = np.array(ROSENBROCK_VAR)
    assert_close_se(x.mean(0), ROSENBROCK_MEAN, np.sqrt(var / n), z, "means")
    assert_close_se(x[:, 0].var(ddof=1), 1.0, np.sqrt(2.0 / n), z, "Var x1")  # μ₄ − σ⁴ = 3 − 1
    assert_close_se(x[:, 1].var(ddof=1), 2.5, np.sqrt((_MU4_X2 - 2.5**2) / n), z, "Var x2")
    p = ROSENBROCK_TAIL_MASS
    assert_close_se(np.mean(np.abs(x[:, 0]) > 2), p, np.sqrt(p * (1 - p) / n), z, "tail mass")


def test_rosenbrock_density_is_the_normalised_product_of_its_conditionals():
    x = rosenbrock_sample(jax.random.PRNGKey(1), 64)
    # p(x₁, x₂) = N(x₁; 0, 1)·N(x₂; x₁², ½) exactly.
    expected = norm.logpdf(x[:, 0]) + norm.logpdf(x[:, 1], x[:, 0] ** 2, jnp.sqrt(0.5))
    np.testing.assert_allclose(rosenbrock_log_density(x), expected, rtol=1e-5, atol=1e-5)


def test_get_source_names_the_parameter():
    assert get_source("rosenbrock").shape == (2,)
    with pytest.raises(ParameterError, match="must be one of") as err:
        get_source("cifar")
    assert err.value.param == "data"


def test_rosenbrock_source_is_unlabelled():
    assert get_source("rosenbrock").num_classes == 0


# ----------------------------------------------------------------------------- IDX files

def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 00 00 08 ndim, big-endian uint32 sizes, row-major bytes."""
    a = np.asarray(a, np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write(path, payload: bytes, gz: bool = False) -> str:
    path = str(path) + (".gz" if gz else "")
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if gz else payload)
    return path


def assert_data_dir_error(err, path=None, *words):
    """One line naming data_dir (CLI: --data-dir), starting with the offending file."""
    assert err.value.param == "data_dir" and err.value.option == "--data-dir"
    msg = err.value.message
    assert "\n" not in msg
    if path is not None:
        assert msg.startswith(f"{path}: "), msg
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3)])
def test_read_idx_round_trips(tmp_path, gz, shape):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write(tmp_path / "a-idx-ubyte", idx_bytes(a), gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(read_idx(path, ndim=len(shape)), a)


def _bad_files():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = idx_bytes(a)
    return {
        "truncated payload": (good[:-1], "truncated"),
        "truncated header": (good[:9], "truncated header"),
        "shorter than the magic": (good[:3], "truncated"),
        "trailing bytes": (good + b"\x00", "unexpected bytes"),
        "bad magic": (b"\x01" + good[1:], "not an IDX file"),
        "float data type": (good[:2] + b"\x0d" + good[3:], "not unsigned byte"),
        "wrong rank": (idx_bytes(a.reshape(6, 4)), "expected a 3-dimensional"),
        "empty": (b"", "truncated"),
    }


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(_bad_files()))
def test_read_idx_rejects_malformed_files(tmp_path, case, gz):
    payload, words = _bad_files()[case]
    path = write(tmp_path / "images-idx3-ubyte", payload, gz)
    with pytest.raises(ParameterError) as err:
        read_idx(path, ndim=3)
    assert_data_dir_error(err, path, words)


def test_read_idx_rejects_bad_gzip_and_missing_files(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    cases = {
        "cut.gz": (good[: len(good) // 2], "bad gzip stream"),
        "corrupt.gz": (good[:10] + bytes(b ^ 0xFF for b in good[10:]), "bad gzip stream"),
        "plain.gz": (idx_bytes(np.zeros(3, np.uint8)), "not a gzip file"),
    }
    for name, (payload, words) in cases.items():
        path = write(tmp_path / name, payload)
        with pytest.raises(ParameterError) as err:
            read_idx(path)
        assert_data_dir_error(err, path, words)
    missing = str(tmp_path / "nothing-idx1-ubyte")
    with pytest.raises(ParameterError) as err:
        read_idx(missing)
    assert_data_dir_error(err, missing, "no such file")


# ----------------------------------------------------------------------------- a tiny MNIST directory


def write_mnist(directory, n_train=50, n_test=20, *, gz=("train_images", "test_labels"), seed=0, overrides=None):
    """Fake MNIST (n × 28 × 28 random bytes, labels 0..9): some files raw, some gzip.

    Pixel (0, 0) of training image i is i (so samples can be traced back to
    their index); ``overrides`` maps a role to raw file bytes.
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrays["train_images"][:, 0, 0] = np.arange(n_train)
    os.makedirs(directory, exist_ok=True)
    for role, name in MNIST_FILES.items():
        payload = (overrides or {}).get(role, idx_bytes(arrays[role]))
        write(os.path.join(directory, name), payload, role in gz)
    return arrays


def test_load_mnist_reads_the_four_files_exactly(tmp_path):
    arrays = write_mnist(tmp_path)
    data = load_images("mnist", tmp_path)
    assert isinstance(data, ImageData)
    np.testing.assert_array_equal(data.x_train, arrays["train_images"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(data.x_test, arrays["test_images"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert load_images("mnist", str(tmp_path)) is data  # cached in the process
    assert not data.x_train.flags.writeable  # the cached arrays cannot be changed under other users


def test_load_mnist_sees_rewritten_files(tmp_path):
    write_mnist(tmp_path, seed=0)
    first = load_images("mnist", tmp_path)
    arrays = write_mnist(tmp_path, n_train=30, seed=1)  # new sizes: a new cache key
    second = load_images("mnist", tmp_path)
    assert second is not first
    np.testing.assert_array_equal(second.y_train, arrays["train_labels"])


def test_mnist_dir_from_environment(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path)
    monkeypatch.setenv("MADJAX_DATA", str(tmp_path))
    np.testing.assert_array_equal(load_images("mnist").y_test, arrays["test_labels"])
    assert get_source("mnist").shape == (28, 28)
    monkeypatch.delenv("MADJAX_DATA")
    with pytest.raises(ParameterError) as err:
        load_images("mnist")
    assert_data_dir_error(err, None, "MADJAX_DATA", *MNIST_FILES.values())


def test_mnist_missing_directory_or_file(tmp_path):
    missing = str(tmp_path / "absent")
    with pytest.raises(ParameterError) as err:
        get_source("mnist", missing)
    assert_data_dir_error(err, missing, "not a directory", *MNIST_FILES.values())
    write_mnist(tmp_path)
    os.remove(tmp_path / (MNIST_FILES["test_images"]))
    with pytest.raises(ParameterError) as err:
        load_images("mnist", tmp_path)
    assert_data_dir_error(err, None, f"missing {MNIST_FILES['test_images']}")


def test_mnist_inconsistent_files(tmp_path):
    rng = np.random.default_rng(3)
    cases = {
        # role to replace, its bytes, the file named, words
        "labels count": ("train_labels", idx_bytes(np.zeros(49, np.uint8)), "train_labels", "49 labels for the 50"),
        "label range": ("test_labels", idx_bytes(np.full(20, 10, np.uint8)), "test_labels", "label 10 outside 0..9"),
        "image size": ("test_images", idx_bytes(rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)),
                       "test_images", "8x8"),
        "labels as images": ("train_labels", idx_bytes(np.zeros((50, 28, 28), np.uint8)), "train_labels",
                             "expected a 1-dimensional"),
        "truncated": ("train_images", idx_bytes(np.zeros((50, 28, 28), np.uint8))[:-100], "train_images",
                      "truncated"),
    }
    for i, (case, (role, payload, named, words)) in enumerate(cases.items()):
        directory = tmp_path / str(i)
        write_mnist(directory, gz=(), overrides={role: payload})
        with pytest.raises(ParameterError) as err:
            get_source("mnist", directory)
        assert_data_dir_error(err, os.path.join(os.path.realpath(directory), MNIST_FILES[named]), words)


def test_mnist_source_samples_distinct_training_images(tmp_path):
    arrays = write_mnist(tmp_path, n_train=50)
    source = get_source("mnist", tmp_path)
    assert (source.name, source.shape, source.num_classes) == ("mnist", (28, 28), 10)
    imgs = source.sample(jax.random.PRNGKey(0), 20)
    assert isinstance(imgs, Images) and imgs.x.shape == (20, 28, 28) and imgs.y.dtype == jnp.int32
    idx = np.rint(np.asarray(imgs.x[:, 0, 0]) * 255).astype(int)
    assert len(set(idx)) == 20
    np.testing.assert_array_equal(np.asarray(imgs.y), arrays["train_labels"][idx])
    np.testing.assert_array_equal(np.asarray(imgs.x), arrays["train_images"][idx] / np.float32(255))
    with pytest.raises(ParameterError) as err:
        source.sample(jax.random.PRNGKey(0), 51)
    assert err.value.param == "n"


def test_mnist_source_inclusion_is_uniform(tmp_path):
    # Each of N images is in a draw of n without replacement with probability n/N;
    # over R independent draws its count is Binomial(R, n/N).
    write_mnist(tmp_path, n_train=50)
    source = get_source("mnist", tmp_path)
    n_img, n, reps = 50, 5, 4000
    keys = jax.random.split(jax.random.PRNGKey(1), reps)
    x = jax.vmap(lambda k: source.sample(k, n).x[:, 0, 0])(keys)
    idx = np.rint(np.asarray(x) * 255).astype(int)
    assert all(len(set(row)) == n for row in idx)
    counts = np.bincount(idx.ravel(), minlength=n_img)
    p = n / n_img
    assert_close_se(counts / reps, p, np.sqrt(p * (1 - p) / reps), zcrit(m=n_img), "inclusion frequency")


def test_train_cli_bad_data_dir_is_one_line(tmp_path):
    bad = tmp_path / "no-mnist-here"
    proc = subprocess.run(
        [sys.executable, "-m", "madjax", "train", "ddpm", "--loop", "fully-synthetic", "--generations", "1",
         "--data", "mnist", "--data-dir", str(bad), "--preset", "smoke", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("madjax: error: --data-dir:"), proc.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- digits


def test_digits_split_is_the_documented_stratified_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_images("digits")
    y_all = bunch.target
    per_class = np.bincount(y_all, minlength=10)
    assert data.x_train.shape == (1501, 8, 8) and data.x_test.shape == (296, 8, 8)
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), per_class // DIGITS_TEST_EVERY)
    for c in range(10):
        rows = bunch.images[y_all == c] / 16.0
        test_rank = np.arange(len(rows)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
        np.testing.assert_array_equal(data.x_test[data.y_test == c], rows[test_rank].astype(np.float32))
        np.testing.assert_array_equal(data.x_train[data.y_train == c], rows[~test_rank].astype(np.float32))
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.min() == 0 and x.max() == 1
        np.testing.assert_array_equal(x * 16, np.round(x * 16))  # 17 grey levels k/16
        assert set(np.unique(y)) == set(range(10))


def _sorted_rows(x):
    flat = np.asarray(x).reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_digits_source_samples_without_replacement():
    source = get_source("digits")
    data = load_images("digits")
    assert (source.name, source.shape, source.num_classes) == ("digits", (8, 8), 10)
    key = jax.random.PRNGKey(7)
    # All of the training split: a permutation of it (duplicates included).
    whole = source.sample(key, 1501)
    np.testing.assert_array_equal(_sorted_rows(whole.x), _sorted_rows(data.x_train))
    np.testing.assert_array_equal(np.bincount(np.asarray(whole.y)), np.bincount(data.y_train))
    some = source.sample(key, 100)
    assert some.x.shape == (100, 8, 8) and some.x.dtype == jnp.float32 and some.y.shape == (100,)
    # The first 100 of the same permutation: a sub-multiset, in the same order.
    np.testing.assert_array_equal(np.asarray(some.x), np.asarray(whole.x[:100]))
    again = source.sample(key, 100)
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(some.x))
    other = source.sample(jax.random.PRNGKey(8), 100)
    assert not np.array_equal(np.asarray(other.y), np.asarray(some.y))
    jitted = jax.jit(lambda k: source.sample(k, 100))(key)
    np.testing.assert_array_equal(np.asarray(jitted.x), np.asarray(some.x))
    with pytest.raises(ParameterError) as err:
        source.sample(key, 1502)
    assert err.value.param == "n"
    assert get_source("digits") is source  # cached
