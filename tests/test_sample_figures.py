"""Figures 6, 24, 25 (the DDPM's samples per generation) and the quick preset on 28×28 images.

One end-to-end smoke run on the bundled digits (two runs of two generations
of the smoke DDPM, shared by the three figures) checks the PNGs, the saved
projection and that ``madjax plot`` redraws them. UMAP's numba compilation
takes about a minute on a 2-core CPU, so the end-to-end test projects with a
PCA stand-in (the figure's code path is the same); the real UMAP's
reproducibility is the ``slow`` test at the end.
"""

import dataclasses
import os

import numpy as np
import pytest

from madjax.cli import main
from madjax.data import get_source
from madjax.figures import IMAGE_FIGURES, get_figure, reproduce
from madjax.figures import ddpm_samples as S
from madjax.figures import image_loops as IL
from madjax.validation import ParameterError

SLICE = os.path.join(os.path.dirname(__file__), "data", "fashion-mnist")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pca(x, projection):
    """A deterministic 2-D stand-in for UMAP: the top two principal components."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:2].T).astype(np.float32)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 2000


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    """``reproduce fig6 fig24 fig25 --preset smoke`` on digits, projected by PCA; the number of projections."""
    out = tmp_path_factory.mktemp("samples")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "umap_embedding", lambda x, p: calls.append(len(x)) or _pca(x, p))
        reproduce(["fig6", "fig24", "fig25"], preset="smoke", out=str(out), progress=False)
    return str(out), calls


def test_smoke_figures_are_drawn_from_shared_runs(smoke_dir):
    out, calls = smoke_dir
    for fig in ("fig6", "fig24", "fig25"):
        for ext in ("png", "pdf"):
            assert os.path.exists(os.path.join(out, f"{fig}.{ext}"))
        assert _is_png(os.path.join(out, f"{fig}.png"))
    # Figure 4's directories: one λ = 1 and one λ = 0.5 run, trained once for the three figures.
    assert sorted(os.listdir(os.path.join(out, S.FAMILY))) == ["lam_0.5", "lam_1", "real_baseline.json",
                                                                "timings.json"]
    assert calls == [calls[0]]  # one projection (run), reused by the plot that follows it
    z = np.load(os.path.join(out, "fig6.npz"))
    gens, lams = z["generation"], z["lam"]
    assert z["xy"].shape == (len(gens), 2) and np.all(np.isfinite(z["xy"]))
    assert set(gens.tolist()) == {0, 1, 2}  # real test images (0) and both generations
    m = S.PROJECTIONS["smoke"].points_per_generation
    for lam in (1.0, 0.5):
        for t in (1, 2):
            assert np.sum((gens == t) & np.isclose(lams, lam)) == m
    assert np.all(np.isnan(lams[gens == 0]))
    assert np.all((z["label"] >= 0) & (z["label"] <= 9))


def test_plot_redraws_without_projecting_again(smoke_dir, monkeypatch, capsys):
    out, _ = smoke_dir
    calls = []
    monkeypatch.setattr(S, "umap_embedding", lambda x, p: calls.append(len(x)) or _pca(x, p))
    for fig in ("fig6", "fig24", "fig25"):
        os.remove(os.path.join(out, f"{fig}.png"))
        assert main(["plot", fig, "--from", out, "--quiet"]) == 0
        assert _is_png(os.path.join(out, f"{fig}.png"))
    assert calls == []  # the saved samples did not change: fig6.npz is current


def test_projection_is_recomputed_when_samples_change(smoke_dir, tmp_path, monkeypatch):
    import shutil

    out, _ = smoke_dir
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    calls = []
    monkeypatch.setattr(S, "umap_embedding", lambda x, p: calls.append(len(x)) or _pca(x, p))
    os.remove(os.path.join(copy, S.FAMILY, "lam_0.5", "samples", "gen_2.npz"))  # generation 2 of λ = 0.5 gone
    S._plot_fig6(copy)
    z = np.load(os.path.join(copy, "fig6.npz"))
    assert len(calls) == 1
    assert not np.any((z["generation"] == 2) & np.isclose(z["lam"], 0.5))


def test_missing_runs_are_one_line_naming_from(tmp_path, capsys):
    for fig in ("fig6", "fig24", "fig25"):
        assert main(["plot", fig, "--from", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--from" in err[0] and fig in err[0]


def test_fig6_needs_both_ends(smoke_dir, tmp_path):
    import shutil

    out, _ = smoke_dir
    only = tmp_path / "only"
    shutil.copytree(os.path.join(out, S.FAMILY, "lam_1"), only / S.FAMILY / "lam_1")
    with pytest.raises(ParameterError) as err:
        S._plot_fig6(str(only))
    assert err.value.param == "from" and "λ < 1" in err.value.message
    assert S.FIGURES["fig24"].plot(str(only))  # the λ = 1 grid needs that run only


def test_configs_share_figure_4s_runs():
    for preset in ("smoke", "quick", "paper"):
        fig6 = get_figure("fig6").get_config(preset)
        assert fig6.generations == (2 if preset == "smoke" else get_figure("fig4").get_config(preset).generations)
        records = {r.tag: fig6.record(r, 0) for r in fig6.runs}
        assert sorted(records) == ["lam_0.5", "lam_1"]
        if preset != "smoke":  # the same configuration, hence the same directories and numbers, as fig4
            fig4 = get_figure("fig4").get_config(preset)
            assert {r.tag: fig4.record(r, 0) for r in fig4.runs} == records
    assert [r.lam for r in get_figure("fig24").get_config("quick").runs] == [1.0]
    assert [r.lam for r in get_figure("fig25").get_config("quick").runs] == [0.5]
    assert {"fig6", "fig24", "fig25"} <= set(IMAGE_FIGURES)


def test_data_applies_with_the_28x28_quick_changes():
    for fig in ("fig6", "fig4", "fig13"):
        f = get_figure(fig)
        config = f.with_data(f.get_config("quick"), "fashion-mnist", SLICE)
        assert config.model_config.image_shape == (28, 28) and config.data_dir == SLICE
        if config.model == "ddpm":
            assert (config.model_config.timesteps, config.n_eval, config.n_ref) == (50, 500, 500)
            assert {(r.loop.n_ini, r.loop.n_syn) for r in config.runs} == {(500, 500)}
            assert config.record(config.runs[0], 0)["n_ref"] == 500
        else:  # the WGAN-GP keeps its quick preset
            assert (config.n_eval, config.n_ref) == (None, None)
            assert "n_ref" not in config.record(config.runs[0], 0)
        digits = f.with_data(f.get_config("quick"), "digits")
        assert digits == f.get_config("quick")  # the 8×8 quick preset is unchanged
    smoke = S.get_config("fig6", "smoke")
    assert IL.with_data(smoke, "fashion-mnist").n_eval == smoke.n_eval  # only quick changes


def test_generation_rows_and_mosaic():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(30, 4, 5)).astype(np.float32)
    y = np.repeat(np.arange(3), 10)[rng.permutation(30)]
    gens, rows = S.generation_rows({2: (x, y), 1: (x[:12], None)}, per_class=2, width=5)
    assert gens == [1, 2]
    assert rows[0].shape == (5, 4, 5) and np.array_equal(rows[0], x[:5])
    expected = np.concatenate([x[y == c][:2] for c in range(3)])
    assert np.array_equal(rows[1], expected)
    x_nan = rows[1].copy()
    x_nan[0, 0, 0] = np.nan
    image = S.mosaic([rows[0], x_nan])
    assert image.shape == (2 * 5 + 1, 6 * 6 + 1)
    assert image[1 + 5, 1] == 0.5 and np.all((image >= 0) & (image <= 1))  # the NaN pixel: mid-grey
    assert np.array_equal(image[1 + 5:1 + 5 + 4, 1:1 + 5][1:], expected[0][1:])


def test_projection_settings_are_validated():
    with pytest.raises(ParameterError) as err:
        S.Projection(points_per_generation=1)
    assert err.value.param == "points_per_generation"
    with pytest.raises(ParameterError) as err:
        S.Projection(min_dist=2.0)
    assert err.value.param == "min_dist"


# ----------------------------------------------------------------------------- the quick preset on 28×28


def test_image_preset_quick_28():
    from madjax.deep.runner import ImageEval, image_preset

    fashion = get_source("fashion-mnist", SLICE)
    ddpm = image_preset("ddpm", "quick", fashion)
    assert ddpm.config.image_shape == (28, 28) and ddpm.config.timesteps == 50
    assert (ddpm.n, ddpm.n_eval, ddpm.evaluation) == (500, 500, ImageEval(500))
    assert (ddpm.config.channels, ddpm.config.epochs, ddpm.config.batch_size) == ((16, 32), 40, 32)
    wgan = image_preset("wgan", "quick", fashion)
    assert (wgan.n, wgan.n_eval, wgan.evaluation) == (1000, None, None)
    digits = image_preset("ddpm", "quick", get_source("digits"))
    assert (digits.config.timesteps, digits.n, digits.n_eval) == (100, 1000, None)
    paper = image_preset("ddpm", "paper", fashion)
    assert paper.config.timesteps == 500 and paper.n == 60_000
    with pytest.raises(ParameterError) as err:
        image_preset("glow", "quick", fashion)
    assert err.value.param == "model"


def test_reference_subset_is_balanced_and_deterministic():
    from madjax.deep.runner import reference_subset

    y = np.array([0] * 7 + [1] * 2 + [2] * 9)[np.random.default_rng(1).permutation(18)]
    idx = reference_subset(y, 9)
    assert np.array_equal(idx, reference_subset(y, 9)) and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx], minlength=3).tolist() == [4, 2, 3]  # class 1 has 2: the others fill up
    first = [np.flatnonzero(y == c)[:k] for c, k in ((0, 4), (1, 2), (2, 3))]
    assert np.array_equal(idx, np.sort(np.concatenate(first)))  # each class's first images in file order
    assert np.bincount(y[reference_subset(y, 6)]).tolist() == [2, 2, 2]
    for bad in (1, 19):
        with pytest.raises(ParameterError) as err:
            reference_subset(y, bad)
        assert err.value.param == "n_ref"


@pytest.mark.slow
def test_umap_embedding_is_reproducible():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    x = (centres[np.repeat(np.arange(3), 40)] + rng.normal(size=(120, 20))).astype(np.float32)
    projection = dataclasses.replace(S.PROJECTIONS["smoke"], n_neighbors=10)
    a, b = S.umap_embedding(x, projection), S.umap_embedding(x, projection)
    assert a.shape == (120, 2) and a.dtype == np.float32 and np.array_equal(a, b)
    # three well-separated clusters stay separated: each point's nearest embedded neighbour is in its cluster
    d = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(120) * 1e9
    labels = np.repeat(np.arange(3), 40)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.95


def test_train_quick_on_28x28_uses_the_28x28_sizes(tmp_path, capsys):
    # The quick DDPM's n = 500 on 28×28 images: more than the slice's 300 training images, one line.
    out = tmp_path / "run"
    assert main(["train", "ddpm", "--loop", "fully-synthetic", "--generations", "1", "--preset", "quick",
                 "--data", "fashion-mnist", "--data-dir", SLICE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("madjax: error: --n-ini: must be <= 300")
    assert "got 500 (the quick preset's default)" in err[0] and not out.exists()
