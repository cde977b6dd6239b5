r"""Real-data sources for the deep loops (DESIGN §8).

A loop draws its real data through a :class:`DataSource`: a name, the shape
of one sample, and a pure ``sample(key, n)``. Sources whose law is known in
closed form also carry its exact moments, so tests and figures compare a
model against the truth rather than against another sample.

Rosenbrock (Pagani et al., 2022; the paper's Figure 15, App. "normalizing
flows"):

.. math::

    p(x_1, x_2) \propto \exp\big(-\tfrac12 x_1^2 - (x_2 - x_1^2)^2\big),

which factorises as x₁ ~ N(0, 1) and x₂ | x₁ ~ N(x₁², 1/2), so it is sampled
exactly. Its normaliser is √(2π)·√π, and

* E x₁ = 0, Var x₁ = 1, P(|x₁| > 2) = 2Φ(−2) ≈ 0.0455;
* E x₂ = E x₁² = 1, Var x₂ = Var x₁² + 1/2 = 2 + 1/2 = 5/2.

Images (``digits``, ``mnist``, ``fashion-mnist``)
-------------------------------------------------

An image source samples :class:`Images` -- pixels ``x`` ``(n, H, W)``
float32 in [0, 1] and class labels ``y`` ``(n,)`` int32 -- drawn uniformly
**without replacement** from a fixed training split; the held-out test split
(:func:`load_images`) is what the LeNet feature extractor
(:mod:`madjax.deep.features`) reports its accuracy on.

``digits`` -- scikit-learn's bundled 8×8 handwritten digits (1,797 images,
16 grey levels, UCI "optdigits" test set), so it works offline. Pixels are
divided by 16. The split is stratified and uses no random numbers: within
each class, in the order of ``sklearn.datasets.load_digits``, every sixth
image (class ranks 5, 11, 17, …) is a test image. That gives **1,501
training / 296 test** images (29–30 test images per class).

``mnist`` -- the standard MNIST IDX files (LeCun et al., 1998) in a
directory given as ``data_dir`` (``--data-dir``) or, when that is None, by
the environment variable ``MADJAX_DATA``::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

each raw or gzip-compressed (the same name plus ``.gz``; a raw file wins when
both exist). Pixels are divided by 255. Nothing is ever downloaded.

``fashion-mnist`` -- Zalando's Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017;
MIT license): 60 000 training and 10 000 test 28×28 grey images of ten
clothing classes (:data:`FASHION_MNIST_LABELS`), stored as the same four IDX
files under the same names as MNIST and read by the same reader. Its
directory is ``data_dir`` (``--data-dir``) or, when that is None,
:data:`FASHION_MNIST_DIR` (``/usr/share/datasets/fashion-mnist``, where
Debian's ``dataset-fashion-mnist`` package installs the files; ``$MADJAX_DATA``
names the MNIST directory and is not used for it). Missing files are one
line naming ``data_dir`` that says how to get them.

The IDX format (:func:`read_idx`): a big-endian header -- two zero bytes,
a type byte (0x08: unsigned byte, the only type MNIST uses), a byte
holding the number of dimensions r, then r big-endian uint32 sizes -- and
exactly ∏ sizes bytes of row-major payload. MNIST images are magic 0x00000803
(r = 3: n × 28 × 28) and labels 0x00000801 (r = 1: n, values 0–9). A
missing, truncated, over-long or malformed file (bad magic, wrong rank or
size, bad gzip stream, labels out of range or not one per image) is a
:class:`~madjax.validation.ParameterError` naming ``data_dir`` with one
line, ``<file>: <what is wrong>``.

Loaded images are cached in the process (keyed by the source, the resolved
directory and the files' sizes and modification times), so repeated
:func:`get_source` / :func:`load_images` calls cost nothing; the cached arrays
are read-only.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from madjax.validation import ParameterError, check_choice, check_int

Array = jax.Array

DATA_NAMES = ("rosenbrock", "digits", "mnist", "fashion-mnist")
IMAGE_NAMES = ("digits", "mnist", "fashion-mnist")
# Image data sets stored as the four MNIST-layout IDX files (module docstring).
IDX_NAMES = ("mnist", "fashion-mnist")

# Exact Rosenbrock moments (module docstring): the references of tests and plots.
ROSENBROCK_MEAN = (0.0, 1.0)
ROSENBROCK_VAR = (1.0, 2.5)
ROSENBROCK_TAIL_MASS = math.erfc(2.0 / math.sqrt(2.0))  # P(|x1| > 2) = 2Φ(−2)
_ROSENBROCK_LOG_Z = 0.5 * math.log(2.0 * math.pi) + 0.5 * math.log(math.pi)

# The digits split: every DIGITS_TEST_EVERY-th image of each class is a test image.
DIGITS_TEST_EVERY = 6

# MNIST file names (each raw or with ".gz") and the image size.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SHAPE = (28, 28)
MNIST_CLASSES = 10
DATA_ENV = "MADJAX_DATA"

# Fashion-MNIST: where Debian's dataset-fashion-mnist package puts the four
# IDX files (the default directory), how to get them, and the class names of
# labels 0-9 (Xiao et al., 2017).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot")

_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class DataSource(NamedTuple):
    """A real-data distribution a loop can draw fresh samples from.

    Attributes:
      name: the ``--data`` name.
      shape: shape of one sample, e.g. ``(2,)`` for Rosenbrock points or
        ``(H, W)`` for images.
      sample: ``sample(key, n)``: points ``(n, *shape)`` float32, or
        :class:`Images` for image sources; ``n`` is a Python int (it sets a
        shape).
      log_density: exact normalised log-density ``(n, *shape) -> (n,)``, or
        ``None`` where it is unknown.
      num_classes: number of class labels of an image source (``Images.y``
        in ``[0, num_classes)``); 0 for unlabelled data.
    """

    name: str
    shape: tuple
    sample: Callable[[Array, int], Array]
    log_density: Callable[[Array], Array] | None = None
    num_classes: int = 0


class Images(NamedTuple):
    """A batch of labelled images (a pytree): what image sources sample and image models fit and sample.

    Attributes:
      x: ``(n, H, W)`` float32 pixels in [0, 1].
      y: ``(n,)`` int32 class labels in ``[0, num_classes)``; −1 where the
        images come from an unconditional model.
    """

    x: Array
    y: Array


class ImageData(NamedTuple):
    """The train and test splits of an image data set (read-only numpy arrays).

    Attributes:
      x_train: ``(n_train, H, W)`` float32 in [0, 1].
      y_train: ``(n_train,)`` int32 labels.
      x_test: ``(n_test, H, W)`` float32 in [0, 1].
      y_test: ``(n_test,)`` int32 labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ----------------------------------------------------------------------------- Rosenbrock


def rosenbrock_sample(key: Array, n: int) -> Array:
    """Exact samples of the 2-D Rosenbrock law.

    Args:
      key: PRNG key.
      n: number of points.

    Returns:
      ``(n, 2)`` float32: x₁ ~ N(0, 1), x₂ = x₁² + ε/√2 with ε ~ N(0, 1).
    """
    k1, k2 = jax.random.split(key)
    x1 = jax.random.normal(k1, (n,), jnp.float32)
    x2 = x1**2 + jax.random.normal(k2, (n,), jnp.float32) * jnp.sqrt(0.5)
    return jnp.stack([x1, x2], axis=-1)


def rosenbrock_log_density(x: Array) -> Array:
    """Normalised log p(x) of the 2-D Rosenbrock law; ``(..., 2) -> (...)``."""
    x1, x2 = x[..., 0], x[..., 1]
    return -0.5 * x1**2 - (x2 - x1**2) ** 2 - _ROSENBROCK_LOG_Z


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or gzip), checking it completely.

    Layout (big-endian): ``00 00 08 r``, then r uint32 sizes, then exactly
    ∏ sizes bytes. A file is treated as gzip when its name ends in ``.gz`` or
    it starts with the gzip magic ``1f 8b``.

    Args:
      path: the file.
      ndim: the rank r the file must have (3 for MNIST images, magic
        0x00000803; 1 for labels, 0x00000801), or None for any r ≥ 1.

    Returns:
      A ``uint8`` array of shape ``(size_1, …, size_r)``.

    The file is read as a stream and never past the size its header
    declares, which may not exceed :data:`IDX_MAX_BYTES`: a gzip bomb (a tiny
    file that decompresses to gigabytes) or an absurd header is refused
    before it fills the memory.

    Raises:
      ParameterError: naming ``data_dir``, one line ``<path>: <what is
        wrong>``, for a missing, unreadable, non-gzip ``.gz``, malformed,
        truncated or over-long file, or an absurdly large declared shape.

    Example:
      >>> import os, struct, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
      >>> with open(p, "wb") as f:
      ...     _ = f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 0, 9]))
      >>> read_idx(p, ndim=1).tolist()
      [7, 0, 9]
    """
    path = os.fspath(path)

    def fail(what: str):
        raise ParameterError("data_dir", f"{path}: {what}")

    try:
        with open(path, "rb") as f:
            compressed = path.endswith(".gz") or f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if compressed and f.read(2) != _GZIP_MAGIC:
                fail("not a gzip file")
            f.seek(0)
            try:
                return _read_idx_stream(gzip.GzipFile(fileobj=f) if compressed else f, ndim, fail)
            except (OSError, EOFError, zlib.error) as err:
                if not compressed:
                    raise
                fail(f"bad gzip stream ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
    except FileNotFoundError:
        fail("no such file")
    except OSError as err:
        fail(f"cannot read ({err.strerror or err})")


# The largest payload an IDX file may declare (MNIST's largest holds 47 MB).
IDX_MAX_BYTES = 1 << 32


def _read_idx_stream(stream, ndim: int | None, fail) -> np.ndarray:
    """The checks of :func:`read_idx` on a byte stream, reading no more than the header declares (+1 byte)."""
    raw = stream.read(4)
    if len(raw) < 4:
        fail(f"truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number")
    zero1, zero2, dtype, rank = raw[:4]
    magic = int.from_bytes(raw[:4], "big")
    if zero1 != 0 or zero2 != 0:
        fail(f"not an IDX file (magic number 0x{magic:08x})")
    if dtype != _IDX_UBYTE:
        fail(f"IDX data type 0x{dtype:02x} is not unsigned byte (0x08; magic number 0x{magic:08x})")
    if rank < 1:
        fail("IDX file with 0 dimensions")
    if ndim is not None and rank != ndim:
        fail(f"expected a {ndim}-dimensional IDX file (magic 0x{0x800 + ndim:08x}), "
             f"got {rank} dimensions (magic 0x{magic:08x})")
    header = 4 + 4 * rank
    raw += stream.read(header - 4)
    if len(raw) < header:
        fail(f"truncated header: {len(raw)} bytes, expected {header}")
    dims = struct.unpack(f">{rank}I", raw[4:header])
    size = math.prod(dims)
    if size > IDX_MAX_BYTES:
        fail(f"the header declares shape {dims} ({size} bytes), more than the {IDX_MAX_BYTES} bytes an IDX file "
             "may hold here")
    payload = stream.read(size + 1)
    if len(payload) < size:
        fail(f"truncated: {len(payload)} data bytes, expected {size} for shape {dims}")
    if len(payload) > size:
        fail(f"unexpected bytes after the data (expected {size} for shape {dims})")
    return np.frombuffer(payload, np.uint8, count=size).reshape(dims)


def _fashion_hint(list_files: bool = True) -> str:
    """How to get the Fashion-MNIST files (the end of every missing-files message)."""
    names = f" ({', '.join(MNIST_FILES.values())}, each raw or .gz)" if list_files else ""
    return (f"install them with `apt-get install {FASHION_MNIST_PACKAGE}` (into {FASHION_MNIST_DIR}), or point "
            f"data_dir (--data-dir) at a directory holding the four IDX files{names}")


def _idx_dir(name: str, data_dir: str | os.PathLike | None) -> str:
    """The resolved directory of an IDX data set: ``data_dir``, else ``$MADJAX_DATA`` (mnist) or
    :data:`FASHION_MNIST_DIR` (fashion-mnist)."""
    names = ", ".join(MNIST_FILES.values())
    if data_dir is None:
        if name == "fashion-mnist":
            data_dir = FASHION_MNIST_DIR
        else:
            data_dir = os.environ.get(DATA_ENV) or None
            if data_dir is None:
                raise ParameterError("data_dir", f"mnist needs a directory holding {names} (each raw or .gz): "
                                                 f"give data_dir or set {DATA_ENV}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        if name == "fashion-mnist":
            raise ParameterError("data_dir", f"{data_dir}: not a directory (no Fashion-MNIST files); "
                                             f"{_fashion_hint()}")
        raise ParameterError("data_dir", f"{data_dir}: not a directory ({name} needs {names}, each raw or .gz)")
    return os.path.realpath(data_dir)


def _idx_files(name: str, directory: str) -> dict[str, str]:
    """The path of each of the four IDX files of ``name`` in ``directory`` (raw preferred over .gz)."""
    paths, missing = {}, []
    for role, file in MNIST_FILES.items():
        for candidate in (file, file + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                paths[role] = path
                break
        else:
            missing.append(file)
    if missing:
        if name == "fashion-mnist":
            raise ParameterError("data_dir", f"{directory}: missing Fashion-MNIST {', '.join(missing)} (or .gz); "
                                             f"{_fashion_hint(list_files=False)}")
        raise ParameterError("data_dir", f"{directory}: missing {', '.join(missing)} (or .gz); {name} needs "
                                         f"{', '.join(MNIST_FILES.values())}")
    return paths


def _read_split(images_path: str, labels_path: str, num_classes: int,
                name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != MNIST_SHAPE:
        raise ParameterError("data_dir", f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                                         f"{name} images are {MNIST_SHAPE[0]}x{MNIST_SHAPE[1]}")
    if images.shape[0] == 0:
        raise ParameterError("data_dir", f"{images_path}: holds no images")
    if labels.shape[0] != images.shape[0]:
        raise ParameterError("data_dir", f"{labels_path}: {labels.shape[0]} labels for the "
                                         f"{images.shape[0]} images of {os.path.basename(images_path)}")
    if labels.size and labels.max() >= num_classes:
        raise ParameterError("data_dir", f"{labels_path}: label {int(labels.max())} outside 0..{num_classes - 1}")
    return (images.astype(np.float32) / np.float32(255.0)), labels.astype(np.int32)


# ----------------------------------------------------------------------------- loading


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def _image_key(name: str, data_dir=None, param: str = "data") -> tuple:
    """A hashable key that changes when the loaded images would: (name, directory, file stamps).

    Validates the name and (for mnist and fashion-mnist) that the directory
    and its four files exist, raising :class:`ParameterError` before any file
    is read.
    """
    check_choice(param, name, IMAGE_NAMES)
    if name == "digits":
        return ("digits",)
    paths = _idx_files(name, _idx_dir(name, data_dir))
    stamps = []
    for role in MNIST_FILES:
        st = os.stat(paths[role])
        stamps.append((paths[role], st.st_size, st.st_mtime_ns))
    return (name, tuple(stamps))


@functools.lru_cache(maxsize=8)
def _load(key: tuple) -> ImageData:
    if key[0] == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (np.asarray(bunch.images, np.float64) / 16.0).astype(np.float32)
        y = np.asarray(bunch.target, np.int32)
        test = _digits_test_mask(y)
        return ImageData(*_readonly(x[~test], y[~test], x[test], y[test]))
    paths = {role: path for role, (path, _, _) in zip(MNIST_FILES, key[1])}
    x_train, y_train = _read_split(paths["train_images"], paths["train_labels"], MNIST_CLASSES, key[0])
    x_test, y_test = _read_split(paths["test_images"], paths["test_labels"], MNIST_CLASSES, key[0])
    return ImageData(*_readonly(x_train, y_train, x_test, y_test))


def _digits_test_mask(y: np.ndarray) -> np.ndarray:
    """True for every ``DIGITS_TEST_EVERY``-th image of each class (ranks 5, 11, … within the class)."""
    mask = np.zeros(y.shape, bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[idx[DIGITS_TEST_EVERY - 1 :: DIGITS_TEST_EVERY]] = True
    return mask


def load_images(name: str, data_dir: str | os.PathLike | None = None) -> ImageData:
    """The train and test splits of ``digits``, ``mnist`` or ``fashion-mnist`` (module docstring).

    Args:
      name: ``"digits"`` (bundled with scikit-learn), ``"mnist"`` or
        ``"fashion-mnist"``.
      data_dir: directory of the four IDX files (default ``$MADJAX_DATA``
        for mnist, :data:`FASHION_MNIST_DIR` for fashion-mnist); ignored for
        digits.

    Returns:
      :class:`ImageData` of read-only numpy arrays, x float32 in [0, 1]
      ``(n, H, W)``, y int32. Cached per (name, directory, file stamps).

    Raises:
      ParameterError: naming ``data`` for an unknown name, ``data_dir`` for a
        missing directory or a missing, truncated or malformed file.

    Example:
      >>> d = load_images("digits")
      >>> d.x_train.shape, d.x_test.shape, d.x_train.dtype.name
      ((1501, 8, 8), (296, 8, 8), 'float32')
    """
    return _load(_image_key(name, data_dir))


# ----------------------------------------------------------------------------- image sources


@functools.partial(jax.jit, static_argnums=3)
def _draw(key: Array, x: Array, y: Array, n: int) -> Images:
    # Uniform without replacement: the first n entries of a uniform random permutation.
    idx = jax.random.permutation(key, x.shape[0])[:n]
    return Images(x[idx], y[idx])


@functools.lru_cache(maxsize=8)
def _image_source(key: tuple) -> DataSource:
    data = _load(key)
    # On the device once per process, passed to the compiled draw as arguments
    # (not closed over: 60k MNIST images would otherwise be baked into the program).
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n_train = x.shape[0]

    def sample(key: Array, n: int) -> Images:
        """``n`` distinct training images, uniformly at random (without replacement)."""
        n = check_int("n", n, minimum=0, maximum=n_train)
        return _draw(key, x, y, n)

    return DataSource(key[0], tuple(data.x_train.shape[1:]), sample, None, num_classes=10)


SOURCES: dict[str, Callable[[str | None], DataSource]] = {
    "rosenbrock": lambda data_dir: DataSource("rosenbrock", (2,), rosenbrock_sample, rosenbrock_log_density),
    "digits": lambda data_dir: _image_source(_image_key("digits")),
    "mnist": lambda data_dir: _image_source(_image_key("mnist", data_dir)),
    "fashion-mnist": lambda data_dir: _image_source(_image_key("fashion-mnist", data_dir)),
}


def get_source(name: str, data_dir: str | None = None, param: str = "data") -> DataSource:
    """The :class:`DataSource` called ``name``.

    Image sources (``digits``, ``mnist``, ``fashion-mnist``) sample
    :class:`Images` of distinct training images; ``sample(key, n)`` raises a
    :class:`ParameterError` naming ``n`` when n exceeds the training split.
    The mnist and fashion-mnist sources read (and check) their files here,
    so a bad directory fails before any work.

    Raises:
      ParameterError: naming ``param`` for an unknown name, or a known one
        this version of madjax does not provide; naming ``data_dir`` for
        missing or malformed IDX files.
    """
    check_choice(param, name, DATA_NAMES)
    if name not in SOURCES:
        raise ParameterError(param, f"{name} is not available in this version of madjax")
    return SOURCES[name](data_dir)
