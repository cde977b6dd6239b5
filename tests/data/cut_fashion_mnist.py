"""Cut the Fashion-MNIST slice of ``tests/data/fashion-mnist/`` from the full data set.

    python tests/data/cut_fashion_mnist.py [SOURCE_DIR] [--train 30] [--test 10]

SOURCE_DIR (default ``/usr/share/datasets/fashion-mnist``, Debian's
``dataset-fashion-mnist``) holds the four original IDX files. The slice is
class-balanced and uses no random numbers: the first ``--train`` images of
each class in the order of the original training file (30 per class: 300
images) and the first ``--test`` of each class in the order of the original
test file (10 per class: 100 images), kept in file order. They are written as
the same four gzip-compressed IDX files (gzip mtime 0, so a rerun writes
identical bytes), which ``madjax.data.read_idx`` reads like the originals.
"""

import argparse
import gzip
import os
import struct

import numpy as np

from madjax.data import FASHION_MNIST_DIR, MNIST_FILES, read_idx

HERE = os.path.dirname(os.path.abspath(__file__))


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 00 00 08 ndim, big-endian uint32 sizes, row-major bytes."""
    a = np.ascontiguousarray(a, np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` rows of every class, in file order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.sort(keep)


def find(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        if os.path.isfile(os.path.join(directory, candidate)):
            return os.path.join(directory, candidate)
    raise SystemExit(f"{directory}: missing {name} (or .gz)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", default=FASHION_MNIST_DIR)
    p.add_argument("--train", type=int, default=30, help="training images per class")
    p.add_argument("--test", type=int, default=10, help="test images per class")
    p.add_argument("--out", default=os.path.join(HERE, "fashion-mnist"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for split, per_class in (("train", args.train), ("test", args.test)):
        images = read_idx(find(args.source, MNIST_FILES[f"{split}_images"]), ndim=3)
        labels = read_idx(find(args.source, MNIST_FILES[f"{split}_labels"]), ndim=1)
        idx = first_per_class(labels, per_class)
        for role, array in ((f"{split}_images", images[idx]), (f"{split}_labels", labels[idx])):
            path = os.path.join(args.out, MNIST_FILES[role] + ".gz")
            with open(path, "wb") as f:
                f.write(gzip.compress(idx_bytes(array), compresslevel=9, mtime=0))
            print(path, array.shape)


if __name__ == "__main__":
    main()
