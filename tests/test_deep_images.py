"""Deep loops on images: the driver on Images(x, y) pytrees, the DDPM/WGAN-GP train path and figures.

Two kinds of tests:

* the driver with a *tagging* image model (no training: its samples say which
  generation drew them and in which order), on the real digits source --
  every loop, memory K = 2, accumulation, resume, sample files;
* the real models at their smoke presets: ``madjax train ddpm`` end to end
  with a resume, and one ``reproduce`` of every DDPM / WGAN-GP figure whose
  runs (one per distinct loop) are shared by the assertions below. Compiled
  functions are shared through the models' caches, so each network compiles
  once per session.
"""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from madjax.base import GenerativeModel
from madjax.cli import main
from madjax.data import Images, get_source, load_images
from madjax.deep import train
from madjax.deep.checkpoint import Checkpointer
from madjax.deep.loop import DeepLoop, read_metrics, row_structure, run_loop
from madjax.figures import reproduce
from madjax.validation import ParameterError

TAG = 1000  # synthetic labels are TAG·t + row: never a digit class 0..9
SHAPE = (8, 8)


def _tagging_model(calls, *, conditional=True):
    """After generation t its parameter is t; a sample of n rows has x[i, 0, 0] = t, x[i, 0, 1] = i
    and y[i] = TAG·t + i (or −1 when unconditional), so x and y say who drew each row and in which
    order. ``fit`` records each training set (as numpy) in ``calls``."""

    def init(key):
        return jnp.zeros((), jnp.int32)

    def fit(key, params, data):
        calls.append(Images(np.asarray(data.x), np.asarray(data.y)))
        return params + 1, {}

    def sample(key, params, n, lam):
        rows = jnp.arange(n, dtype=jnp.float32)
        x = jnp.zeros((n, *SHAPE), jnp.float32).at[:, 0, 0].set(params.astype(jnp.float32))
        x = x.at[:, 0, 1].set(rows)
        y = TAG * params + jnp.arange(n, dtype=jnp.int32) if conditional else jnp.full((n,), -1, jnp.int32)
        return Images(x, y)

    return GenerativeModel(init, fit, sample)


def _evaluate(key, params, x_model, x_ref):
    return {"tag": float(params), "mean": float(jnp.mean(x_model.x))}


@pytest.fixture(scope="module")
def digits():
    return get_source("digits")


def _run(out, loop, digits, generations=4, calls=None, conditional=True, **kw):
    calls = [] if calls is None else calls
    rows = run_loop(_tagging_model(calls, conditional=conditional), digits, loop, lam=0.7,
                    generations=generations, seed=3, out=str(out), evaluate=_evaluate, n_eval=12, n_ref=12,
                    progress=False, **kw)
    return calls, rows


def _synthetic(data: Images) -> tuple[np.ndarray, np.ndarray]:
    """Generation tags and row ids of the synthetic rows; asserts x and y agree row by row."""
    syn = data.y >= TAG
    tags, ids = data.x[syn, 0, 0].astype(int), data.x[syn, 0, 1].astype(int)
    np.testing.assert_array_equal(data.y[syn], TAG * tags + ids)  # one permutation moved x and y together
    return tags, ids


def _real_rows(data: Images) -> np.ndarray:
    real = data.y < TAG
    assert np.all((data.y[real] >= 0) & (data.y[real] < 10))
    assert np.all((data.x[real] >= 0) & (data.x[real] <= 1))
    return data.x[real].reshape(int(real.sum()), -1)


def test_images_fully_synthetic_and_sample_files(tmp_path, digits):
    loop = DeepLoop("fully-synthetic", n_ini=20, n_real=0, n_syn=15)
    calls, rows = _run(tmp_path, loop, digits, generations=3)
    assert [len(c.y) for c in calls] == [20, 15, 15]
    assert len(_real_rows(calls[0])) == 20
    for t, data in enumerate(calls[1:], start=2):
        tags, ids = _synthetic(data)
        assert set(tags) == {t - 1} and sorted(ids) == list(range(15))
    assert read_metrics(str(tmp_path)) == rows
    with np.load(tmp_path / "samples" / "gen_3.npz") as z:
        assert z["x"].dtype == np.float32 and z["x"].shape == (12, *SHAPE)
        assert z["y"].dtype == np.int32 and z["y"].shape == (12,)
        np.testing.assert_array_equal(z["x"][:, 0, 0], 3)
    assert (tmp_path / "samples" / "gen_3.png").stat().st_size > 0


def test_unconditional_samples_carry_no_labels(tmp_path, digits):
    loop = DeepLoop("fully-synthetic", n_ini=10, n_real=0, n_syn=10)
    _run(tmp_path, loop, digits, generations=1, conditional=False)
    with np.load(tmp_path / "samples" / "gen_1.npz") as z:
        assert set(z.files) == {"x"}


def test_images_synthetic_augmentation_accumulates_a_pytree_pool(tmp_path, digits):
    loop = DeepLoop("synthetic-augmentation", n_ini=16, n_real=16, n_syn=6, accumulate=True)
    calls, _ = _run(tmp_path, loop, digits, generations=4)
    assert [len(c.y) for c in calls] == [loop.training_size(t) for t in range(1, 5)] == [16, 22, 28, 34]
    for t, data in enumerate(calls[1:], start=2):
        np.testing.assert_array_equal(data.x[:16], calls[0].x)  # the same D_r, which trained G¹
        np.testing.assert_array_equal(data.y[:16], calls[0].y)
        tags, _ = _synthetic(data)
        assert sorted(tags) == sorted(np.repeat(np.arange(1, t), 6))  # pool of generations 1..t-1


def test_images_fresh_loop_draws_new_distinct_real_images(tmp_path, digits):
    loop = DeepLoop("fresh", n_ini=30, n_real=25, n_syn=5)
    calls, _ = _run(tmp_path, loop, digits, generations=3)
    assert [len(c.y) for c in calls] == [30, 30, 30]
    reals = [_real_rows(c) for c in calls]
    assert [len(r) for r in reals] == [30, 25, 25]
    train = load_images("digits").x_train.reshape(-1, 64)
    for r in reals:
        # Without replacement within a draw: distinct training images (the digits split has duplicates
        # of a few images, so compare indices into it rather than pixels).
        idx = [np.flatnonzero((train == row).all(axis=1)) for row in r]
        assert all(len(i) >= 1 for i in idx)
    assert not np.array_equal(reals[1], reals[2])
    assert all(len(_synthetic(c)[0]) == 5 for c in calls[1:])


def test_images_memory_k2_draws_from_the_last_two_models_and_resumes(tmp_path, digits):
    loop = DeepLoop("fully-synthetic", n_ini=10, n_real=0, n_syn=400, memory=2)
    straight, _ = _run(tmp_path / "a", loop, digits, generations=4)
    for t, data in enumerate(straight[1:], start=2):
        tags, _ = _synthetic(data)
        allowed = list(range(max(1, t - 2), t))
        assert set(tags) == set(allowed)
        if len(allowed) == 2:  # Multinomial(400, ½): 5 standard errors
            assert abs(np.mean(tags == allowed[0]) - 0.5) <= 5 * np.sqrt(0.25 / len(tags))
            assert not np.all(np.diff(tags) >= 0)  # interleaved by the permutation, not in blocks
    _run(tmp_path / "b", loop, digits, generations=2)
    resumed, _ = _run(tmp_path / "b", loop, digits, generations=4)
    assert len(resumed) == 2
    for a, b in zip(straight[2:], resumed):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_images_pool_survives_resume(tmp_path, digits):
    loop = DeepLoop("fully-synthetic", n_ini=8, n_real=0, n_syn=5, accumulate=True)
    straight, rows = _run(tmp_path / "a", loop, digits, generations=4)
    _run(tmp_path / "b", loop, digits, generations=3)
    resumed, rows_b = _run(tmp_path / "b", loop, digits, generations=4)
    np.testing.assert_array_equal(straight[-1].x, resumed[-1].x)
    np.testing.assert_array_equal(straight[-1].y, resumed[-1].y)
    assert rows == rows_b
    restored = Checkpointer(str(tmp_path / "b" / "checkpoints")).restore_latest(
        jnp.zeros((), jnp.int32), row_structure=row_structure(digits))
    assert isinstance(restored.pool, Images) and restored.pool.x.shape == (15, *SHAPE)
    assert restored.pool.y.dtype == jnp.int32


# ----------------------------------------------------------------------------- the DDPM train path

SMOKE = ["train", "ddpm", "--loop", "fully-synthetic", "--memory", "2", "--lam", "0.8", "--data", "digits",
         "--preset", "smoke", "--seed", "4", "--quiet"]


def test_train_ddpm_smoke_end_to_end_and_resume(tmp_path):
    """The CLI run straight to T = 3; a copy killed during generation 3 (its last checkpoint is 2, its
    generation-3 files half written) and resumed: identical metrics and samples."""
    import shutil

    assert main(SMOKE + ["--generations", "3", "--out", str(tmp_path / "straight")]) == 0
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "3")
    os.remove(tmp_path / "resumed" / "samples" / "gen_3.npz")
    common = dict(loop="fully-synthetic", memory=2, lam=0.8, data="digits", preset="smoke", seed=4,
                  progress=False)
    resumed = train("ddpm", generations=3, out=str(tmp_path / "resumed"), **common)
    straight = read_metrics(str(tmp_path / "straight"))
    assert resumed == straight  # every metric of every generation, bit for bit
    assert [r["generation"] for r in straight] == [1, 2, 3]
    with open(tmp_path / "straight" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[0] == "generation" and {"fid", "precision", "recall", "n_nonfinite"} <= set(header)
    for row in straight:
        assert row["fid"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    for t in (1, 2, 3):
        a = np.load(tmp_path / "straight" / "samples" / f"gen_{t}.npz")
        b = np.load(tmp_path / "resumed" / "samples" / f"gen_{t}.npz")
        assert a["x"].dtype == np.float32 and a["x"].ndim == 3 and a["x"].shape[1:] == SHAPE
        assert a["x"].min() >= 0 and a["x"].max() <= 1
        assert a["y"].dtype == np.int32 and set(np.unique(a["y"])) <= set(range(10))
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["y"], b["y"])
    with open(tmp_path / "straight" / "config.json") as f:
        record = json.load(f)
    assert record["model"] == "ddpm" and record["ddpm"]["image_shape"] == [8, 8]


@pytest.mark.parametrize("args, option", [
    (["--loop", "fully-synthetic", "--data", "mnist", "--data-dir", "/nonexistent/mnist"], "--data-dir"),
    (["--loop", "fully-synthetic", "--data", "rosenbrock"], "--data"),
    (["--loop", "fully-synthetic", "--data", "digits", "--n-ini", "5000"], "--n-ini"),
    (["--loop", "fresh", "--data", "digits", "--n-real", "1502"], "--n-real"),
])
def test_bad_image_train_input_exits_2_with_one_line(tmp_path, capsys, args, option):
    argv = ["train", "ddpm", "--generations", "1", "--preset", "smoke", "--quiet", *args]
    assert main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"madjax: error: {option}: "), err
    assert not (tmp_path / "run").exists()


def test_paper_preset_needs_mnist_sizes():
    with pytest.raises(ParameterError) as err:
        train("wgan", loop="fully-synthetic", generations=1, data="digits", preset="paper", out="/tmp/never")
    assert err.value.param == "n_ini" and "paper" in err.value.message


# ----------------------------------------------------------------------------- figures

FIGS = ["fig4", "fig14", "fig8", "fig28", "fig29", "fig9-ddpm", "fig13"]


@pytest.fixture(scope="module")
def smoke_figures(tmp_path_factory):
    """One smoke reproduction of every image-loop figure (runs shared between figures)."""
    out = tmp_path_factory.mktemp("figures")
    reproduce(FIGS, preset="smoke", out=str(out), progress=False)
    return out


def test_smoke_figures_write_csv_and_plots(smoke_figures):
    for fig in FIGS:
        for ext in ("png", "pdf", "csv"):
            assert (smoke_figures / f"{fig}.{ext}").stat().st_size > 0, (fig, ext)
        with open(smoke_figures / f"{fig}.csv") as f:
            rows = list(csv.DictReader(f))
        assert {"loop", "lam", "n_ini", "generation", "fid", "precision", "recall"} <= set(rows[0])
        assert all(np.isfinite(float(r["fid"])) for r in rows)
    fig29 = list(csv.DictReader(open(smoke_figures / "fig29.csv")))
    assert {r["accumulate"] for r in fig29} == {"0", "1"}
    fresh = list(csv.DictReader(open(smoke_figures / "fig9-ddpm.csv")))
    assert len({r["n_ini"] for r in fresh}) >= 2 and {r["loop"] for r in fresh} == {"fresh"}


def test_figures_share_runs(smoke_figures):
    from madjax.figures.ddpm import get_config

    fig4, fig14 = get_config("fig4", "smoke"), get_config("fig14", "smoke")
    assert {r.tag for r in fig4.runs} <= {r.tag for r in fig14.runs}
    family = smoke_figures / "ddpm-fully-synthetic"
    assert sorted(os.listdir(family)) == sorted({r.tag for r in fig14.runs} | {"real_baseline.json",
                                                                                 "timings.json"})
    # Fig. 29 holds both loops of Figs 8 and 28, from their directories (not a third copy).
    assert not (smoke_figures / "fig29").exists()
    pooled = read_metrics(str(smoke_figures / "ddpm-synthetic-augmentation-accumulate" / "lam_0.5"))
    last = read_metrics(str(smoke_figures / "ddpm-synthetic-augmentation" / "lam_0.5"))
    assert pooled[0] == last[0]  # G¹ is the same model (D_r, same key) in both loops
    with open(smoke_figures / "ddpm-synthetic-augmentation-accumulate" / "lam_0.5" / "config.json") as f:
        assert json.load(f)["loop"]["accumulate"] is True


def test_wgan_figure_samples_are_unlabelled(smoke_figures):
    run = smoke_figures / "wgan-fully-synthetic" / "lam_1"
    with np.load(run / "samples" / "gen_2.npz") as z:
        assert set(z.files) == {"x"} and z["x"].shape[1:] == SHAPE


def test_plot_redraws_from_saved_runs(smoke_figures, capsys):
    os.remove(smoke_figures / "fig4.png")
    assert main(["plot", "fig4", "--from", str(smoke_figures)]) == 0
    assert (smoke_figures / "fig4.png").exists()


def test_paper_presets_pass_dry_run_without_mnist(tmp_path, capsys, monkeypatch):
    """The paper configuration (MNIST 28×28, T = 500) compiles one step with no data files present."""
    monkeypatch.delenv("MADJAX_DATA", raising=False)
    assert main(["reproduce", "fig4", "--preset", "paper", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "28x28" in out and "compiled and run" in out and "MNIST files not found" in out
    assert out.count("\n") == 1
    assert not (tmp_path / "o").exists()
