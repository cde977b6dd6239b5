"""Fashion-MNIST: the named data set, its missing-files error, and LeNet-FID validated on real 28×28 images.

Everything here reads the shipped slice ``tests/data/fashion-mnist/`` (300
training + 100 test images, 30 / 10 per class; its README says how it was
cut) through ``--data fashion-mnist --data-dir tests/data/fashion-mnist``.

The LeNet-FID tests train one small LeNet on the slice for the module and
check the behaviour an image metric must have on real data (the full-size
numbers: ``benchmarks/lenet_fid_validation.py`` and the README):

* clean training images against the test images score lower than any
  degraded version of them, and LeNet-FID grows with the noise and blur σ;
* with one class removed, recall drops while precision stays within 0.05.
"""

import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from madjax import data as D
from madjax.cli import build_parser, main
from madjax.data import FASHION_MNIST_LABELS, MNIST_FILES, Images, get_source, load_images
from madjax.deep.degrade import add_noise, blur, without_class
from madjax.deep.features import LeNetConfig, image_metrics, lenet_features
from madjax.validation import ParameterError

SLICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion-mnist")
N_TRAIN, N_TEST, CLASSES = 300, 100, 10
TROUSER = FASHION_MNIST_LABELS.index("Trouser")

# The small-data schedule of the library's LeNets (LENET_CONFIGS["digits"]:
# 20 epochs of batch 32, Adam 3e-3 decaying to 0) at 28×28: 180 steps on the
# 300 slice images, seconds on a CPU.
SLICE_LENET = LeNetConfig(image_shape=(28, 28), epochs=20, batch_size=32)


def _train_argv(*extra):
    return ["train", "ddpm", "--loop", "fully-synthetic", "--generations", "1", "--preset", "smoke", *extra]


# ----------------------------------------------------------------------------- the data set


def test_slice_reads_through_the_data_options(tmp_path):
    args = build_parser().parse_args(_train_argv("--data", "fashion-mnist", "--data-dir", SLICE,
                                                 "--out", str(tmp_path / "run")))
    assert (args.data, args.data_dir) == ("fashion-mnist", SLICE)
    split = load_images(args.data, args.data_dir)
    assert split.x_train.shape == (N_TRAIN, 28, 28) and split.x_test.shape == (N_TEST, 28, 28)
    for x, y, per_class in ((split.x_train, split.y_train, N_TRAIN // CLASSES),
                            (split.x_test, split.y_test, N_TEST // CLASSES)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 255, np.round(x * 255))  # 256 grey levels k/255
        np.testing.assert_array_equal(np.bincount(y, minlength=CLASSES), np.full(CLASSES, per_class))
    source = get_source(args.data, args.data_dir)
    assert (source.name, source.shape, source.num_classes) == ("fashion-mnist", (28, 28), 10)
    imgs = source.sample(jax.random.PRNGKey(0), N_TRAIN)  # all of it: a permutation of the split
    assert isinstance(imgs, Images) and imgs.x.shape == (N_TRAIN, 28, 28)
    np.testing.assert_array_equal(np.sort(np.asarray(imgs.x).reshape(N_TRAIN, -1).sum(1)),
                                  np.sort(split.x_train.reshape(N_TRAIN, -1).sum(1)))
    with pytest.raises(ParameterError) as err:
        source.sample(jax.random.PRNGKey(0), N_TRAIN + 1)
    assert err.value.param == "n"


@pytest.mark.skipif(not os.path.isdir(D.FASHION_MNIST_DIR), reason="Fashion-MNIST is not installed")
def test_slice_is_the_first_images_of_each_class_of_the_installed_data():
    # The README's recipe, checked against the full data set where it is installed.
    full, part = load_images("fashion-mnist"), load_images("fashion-mnist", SLICE)
    assert full.x_train.shape == (60_000, 28, 28) and full.x_test.shape == (10_000, 28, 28)
    for x_full, y_full, x_part, y_part, per_class in (
            (full.x_train, full.y_train, part.x_train, part.y_train, 30),
            (full.x_test, full.y_test, part.x_test, part.y_test, 10)):
        idx = np.sort(np.concatenate([np.flatnonzero(y_full == c)[:per_class] for c in range(CLASSES)]))
        np.testing.assert_array_equal(x_part, x_full[idx])
        np.testing.assert_array_equal(y_part, y_full[idx])


def _assert_install_hint(message: str):
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message, message


def test_missing_files_name_data_dir_and_say_how_to_install(tmp_path, monkeypatch):
    absent = str(tmp_path / "absent")
    with pytest.raises(ParameterError) as err:
        load_images("fashion-mnist", absent)
    assert err.value.param == "data_dir" and err.value.message.startswith(f"{absent}: not a directory")
    _assert_install_hint(err.value.message)
    # The default directory is the one Debian's package installs into.
    monkeypatch.setattr(D, "FASHION_MNIST_DIR", absent)
    with pytest.raises(ParameterError) as err:
        get_source("fashion-mnist")
    assert err.value.param == "data_dir" and absent in err.value.message
    _assert_install_hint(err.value.message)
    # A directory with one file missing: that file is named.
    partial = tmp_path / "partial"
    partial.mkdir()
    for role, name in MNIST_FILES.items():
        if role != "test_labels":
            os.symlink(os.path.join(SLICE, name + ".gz"), partial / (name + ".gz"))
    with pytest.raises(ParameterError) as err:
        load_images("fashion-mnist", partial)
    assert err.value.param == "data_dir"
    assert f"missing Fashion-MNIST {MNIST_FILES['test_labels']} " in err.value.message
    _assert_install_hint(err.value.message)


@pytest.mark.parametrize("argv", [
    _train_argv("--data", "fashion-mnist", "--data-dir", "{empty}", "--out", "{out}"),
    ["reproduce", "fig4", "--preset", "smoke", "--data", "fashion-mnist", "--data-dir", "{empty}", "--out", "{out}"],
])
def test_cli_missing_files_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv):
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty", out=tmp_path / "out") for a in argv]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("madjax: error: --data-dir: "), lines
    _assert_install_hint(lines[0])
    assert not (tmp_path / "out").exists()


def test_cli_missing_files_in_a_fresh_process(tmp_path):
    # The whole stderr of a real process (no warning, no traceback): one line, exit 2.
    proc = subprocess.run(
        [sys.executable, "-m", "madjax", "reproduce", "fig13", "--preset", "smoke", "--data", "fashion-mnist",
         "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("madjax: error: --data-dir: "), proc.stderr
    _assert_install_hint(lines[0])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, option", [
    (["reproduce", "fig4", "--data", "cifar"], "--data"),
    (["reproduce", "fig10", "--data", "fashion-mnist"], "--data"),  # no images in fig10
    (["reproduce", "fig15", "--data-dir", SLICE], "--data-dir"),  # GLOW on 2-D points
    (["reproduce", "fig13", "--data", "digits", "--data-dir", SLICE], "--data-dir"),  # digits has no files
    (["reproduce", "fig4", "--preset", "paper", "--data", "digits"], "--n-ini"),  # 60 000 > 1 501 digits
    (["reproduce", "fig4", "--preset", "paper", "--data", "fashion-mnist", "--data-dir", SLICE], "--n-ini"),
])
def test_reproduce_data_options_are_validated(tmp_path, capsys, argv, option):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"madjax: error: {option}: "), lines
    assert not (tmp_path / "out").exists()


def test_reproduce_data_changes_only_the_data_and_image_size():
    from madjax.figures import IMAGE_FIGURES, get_figure
    from madjax.figures.image_loops import with_data

    assert set(IMAGE_FIGURES) == {"fig4", "fig6", "fig8", "fig9-ddpm", "fig13", "fig14", "fig24", "fig25", "fig28",
                                  "fig29"}
    for fig_id in IMAGE_FIGURES:
        fig = get_figure(fig_id)
        # the smoke preset: the quick preset's 28×28 sizes are its own (tests/test_sample_figures.py)
        base = fig.get_config("smoke")
        moved = fig.with_data(base, "fashion-mnist", SLICE)
        assert (moved.data, moved.data_dir, moved.model_config.image_shape) == ("fashion-mnist", SLICE, (28, 28))
        assert moved.runs == base.runs and moved.generations == base.generations and moved.n_eval == base.n_eval
        assert moved.model_config == dataclasses.replace(base.model_config, image_shape=(28, 28))
        assert fig.with_data(base, None, None) == base  # no option: the preset's own data
    assert get_figure("fig15").with_data is None


def test_train_accepts_fashion_mnist_and_checks_sizes_against_the_split(tmp_path, capsys):
    # The smoke preset's 96 images fit in the slice's 300; the paper preset's 60 000 do not.
    assert main(_train_argv("--data", "fashion-mnist", "--data-dir", SLICE, "--n-ini", "301",
                            "--out", str(tmp_path / "run"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("madjax: error: --n-ini: must be <= 300, the size of the fashion-mnist training split")
    assert not (tmp_path / "run").exists()


def test_train_runs_end_to_end_on_the_slice(tmp_path):
    # One generation of the smoke WGAN-GP on real 28×28 images, scored against
    # the slice's 100 test images by the default Fashion-MNIST LeNet.
    out = tmp_path / "run"
    assert main(["train", "wgan", "--loop", "fully-synthetic", "--generations", "1", "--preset", "smoke",
                 "--data", "fashion-mnist", "--data-dir", SLICE, "--out", str(out), "--quiet"]) == 0
    with open(out / "metrics.csv") as f:
        header, row = f.read().splitlines()
    assert header == "generation,fid,precision,recall,n_nonfinite"
    values = dict(zip(header.split(","), map(float, row.split(","))))
    assert values["generation"] == 1 and values["fid"] > 0 and 0 <= values["precision"] <= 1
    with np.load(out / "samples" / "gen_1.npz") as z:
        assert z["x"].shape == (48, 28, 28) and z["x"].dtype == np.float32


@pytest.mark.slow
def test_reproduce_an_image_figure_on_the_slice(tmp_path):
    from madjax.figures import reproduce

    reproduce(["fig13"], preset="smoke", out=str(tmp_path), progress=False, data="fashion-mnist", data_dir=SLICE)
    assert (tmp_path / "fig13.png").exists() and (tmp_path / "fig13.csv").exists()
    with open(tmp_path / "wgan-fully-synthetic" / "lam_1" / "config.json") as f:
        assert '"data": "fashion-mnist"' in f.read()


# ----------------------------------------------------------------------------- the degradations


def test_degradations_do_what_they_say(fashion):
    from conftest import zcrit

    from madjax.deep.degrade import gaussian_kernel

    x = fashion.x_train[:50]
    k = gaussian_kernel(1.0)
    assert k.shape == (7,) and abs(k.sum() - 1) < 1e-12 and np.array_equal(k, k[::-1])
    np.testing.assert_array_equal(np.asarray(blur(x, 0.0)), x)
    np.testing.assert_array_equal(np.asarray(add_noise(jax.random.PRNGKey(0), x, 0.0)), x)
    flat = np.full((2, 28, 28), 0.3, np.float32)  # convex weights, edges repeated: a constant stays
    np.testing.assert_allclose(np.asarray(blur(flat, 2.0)), flat, rtol=1e-6)
    for y in (np.asarray(blur(x, 1.0)), np.asarray(add_noise(jax.random.PRNGKey(1), x, 0.4))):
        assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
    # Where 0.25 <= x <= 0.75 the clip at 0 and 1 is 5σ away for σ = 0.05: the
    # added noise there is N(0, σ²), its sample variance within z·σ²·√(2/m).
    sigma = 0.05
    noise = np.asarray(add_noise(jax.random.PRNGKey(2), x, sigma)) - x
    mid = noise[(x >= 0.25) & (x <= 0.75)].astype(np.float64)
    assert mid.size > 1000
    assert abs(mid.var() - sigma**2) <= zcrit(m=2) * sigma**2 * np.sqrt(2 / mid.size)
    assert abs(mid.mean()) <= zcrit(m=2) * sigma / np.sqrt(mid.size)
    kept, labels = without_class(fashion.x_train, fashion.y_train, TROUSER)
    assert kept.shape == (N_TRAIN - 30, 28, 28) and TROUSER not in np.asarray(labels)
    np.testing.assert_array_equal(np.asarray(kept), fashion.x_train[fashion.y_train != TROUSER])
    for call, param in [(lambda: blur(x[0], 1.0), "x"), (lambda: blur(x, -1.0), "sigma"),
                        (lambda: add_noise(jax.random.PRNGKey(0), x, float("inf")), "sigma"),
                        (lambda: without_class(x, fashion.y_train[:50], 11), "label"),
                        (lambda: without_class(x[:2], np.array([3, 3]), 3), "label"),
                        (lambda: without_class(x, fashion.y_train[:49], 1), "y")]:
        with pytest.raises(ParameterError) as err:
            call()
        assert err.value.param == param


# ----------------------------------------------------------------------------- LeNet-FID on real images


@pytest.fixture(scope="module")
def fashion():
    return load_images("fashion-mnist", SLICE)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    return lenet_features("fashion-mnist", SLICE, config=SLICE_LENET, cache_dir=tmp_path_factory.mktemp("lenet"))


@pytest.fixture(scope="module")
def clean(extractor, fashion):
    """Metrics of the 300 clean training images against the 100 test images (the reference)."""
    return image_metrics(extractor, fashion.x_train, fashion.x_test)


def test_lenet_separates_the_classes(extractor, fashion):
    # LeNet-FID means something only if the features separate the classes.
    # 180 steps on 300 images are far from the ~90 % of a LeNet trained on
    # all 60 000 (README); require five times chance (10 %) on the 100 test images.
    assert extractor.config == SLICE_LENET and extractor.data == "fashion-mnist"
    assert extractor.accuracy >= 0.5, extractor.accuracy
    assert extractor.accuracy == np.mean(np.argmax(extractor.logits(fashion.x_test), axis=1) == fashion.y_test)


@pytest.mark.parametrize("kind, sigmas", [("noise", (0.1, 0.2, 0.4)), ("blur", (0.5, 1.0, 2.0))])
def test_lenet_fid_grows_with_noise_and_blur(extractor, fashion, clean, kind, sigmas):
    # The same 300 images, degraded more and more: LeNet-FID against the test
    # images must rise strictly at every step, starting above the clean value.
    # The σ values double each time, so each step is a large change of the
    # images (noise of std 0.1 already moves every pixel by ~25 grey levels;
    # a blur of 0.5 px mixes ~20 % of each pixel with its neighbours).
    fids = [clean["fid"]]
    for i, sigma in enumerate(sigmas):
        x = add_noise(jax.random.PRNGKey(i), fashion.x_train, sigma) if kind == "noise" else blur(fashion.x_train,
                                                                                                   sigma)
        fids.append(image_metrics(extractor, x, fashion.x_test)["fid"])
    assert all(a < b for a, b in zip(fids, fids[1:])), (kind, fids)


def test_removing_a_class_drops_recall_and_keeps_precision(extractor, fashion, clean):
    # Precision is the fraction of compared images inside the reference's k-NN
    # balls, which do not depend on the compared set. Removing the 30 images
    # of class c from the 300 keeps every other image's verdict, so
    #     P_without − P_clean = (P_clean − p_c) · 30 / 270,
    # p_c the fraction of class c inside: |ΔP| ≤ 0.05 unless class c's own
    # precision is 0.45 below the rest, which real images of the training law
    # are not. Checked for every class.
    for c in range(CLASSES):
        x, _ = without_class(fashion.x_train, fashion.y_train, c)
        m = image_metrics(extractor, x, fashion.x_test)
        assert abs(m["precision"] - clean["precision"]) <= 0.05, (FASHION_MNIST_LABELS[c], m, clean)
        assert m["fid"] > clean["fid"], (FASHION_MNIST_LABELS[c], m, clean)
        if c == TROUSER:
            trousers = m
    # Recall: the fraction of the 100 test images inside some compared image's
    # k-NN ball. Trousers (10 of them) are the one class whose shape no other
    # class shares, so with them gone most test trousers lose their cover:
    # require at least half of their 0.10 share to go.
    assert trousers["recall"] <= clean["recall"] - 0.05, (trousers, clean)
