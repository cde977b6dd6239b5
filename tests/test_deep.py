"""The deep loop driver: training sets per loop, memory, accumulation, resume, CLI errors."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from madjax.base import GenerativeModel
from madjax.cli import main
from madjax.data import DataSource
from madjax.deep import train
from madjax.deep.checkpoint import Checkpointer
from madjax.deep.loop import DeepLoop, read_metrics, run_loop
from madjax.validation import ParameterError


def _tagging_model(calls):
    """A model whose parameters count its fits and whose samples carry that count.

    After generation t its parameter is t, and every sample it draws is the
    point (t, t): synthetic data then says which generation made it. ``fit``
    records each training set in ``calls``.
    """

    def init(key):
        return jnp.zeros((), jnp.int32)

    def fit(key, params, data):
        calls.append(np.asarray(data))
        return params + 1, {}

    def sample(key, params, n, lam):
        return jnp.full((n, 2), params, jnp.float32)

    return GenerativeModel(init, fit, sample)


def _source():
    # Real points are continuous, never an integer tag (t, t).
    return DataSource("test", (2,), lambda key, n: 0.5 + jax.random.uniform(key, (n, 2)) * 0.1)


def _evaluate(key, params, x_model, x_ref):
    return {"tag": float(params), "mean": float(jnp.mean(x_model))}


def _run(tmp_path, loop, generations=4, calls=None, **kw):
    calls = [] if calls is None else calls
    rows = run_loop(_tagging_model(calls), _source(), loop, lam=0.7, generations=generations, seed=3,
                    out=str(tmp_path), evaluate=_evaluate, n_eval=4, n_ref=4, progress=False, **kw)
    return calls, rows


def _tags(data):
    """Generation tags of the synthetic rows (real rows are not integers)."""
    values = data[:, 0]
    return values[values == np.round(values)].astype(int)


def test_fully_synthetic_trains_on_the_previous_generation(tmp_path):
    loop = DeepLoop("fully-synthetic", n_ini=6, n_real=0, n_syn=5)
    calls, rows = _run(tmp_path, loop)
    assert [len(c) for c in calls] == [6, 5, 5, 5]
    assert len(_tags(calls[0])) == 0  # G¹: real data only
    for t, data in enumerate(calls[1:], start=2):
        assert set(_tags(data)) == {t - 1}
    assert [r["generation"] for r in rows] == [1, 2, 3, 4]
    assert read_metrics(str(tmp_path)) == rows


def test_synthetic_augmentation_reuses_d_r_and_accumulates(tmp_path):
    loop = DeepLoop("synthetic-augmentation", n_ini=4, n_real=4, n_syn=3, accumulate=True)
    calls, _ = _run(tmp_path, loop)
    assert [len(c) for c in calls] == [loop.training_size(t) for t in range(1, 5)] == [4, 7, 10, 13]
    for t, data in enumerate(calls[1:], start=2):
        np.testing.assert_array_equal(data[:4], calls[0])  # the same D_r, which trained G¹
        assert sorted(_tags(data)) == sorted(np.repeat(np.arange(1, t), 3))  # pool of gens 1..t-1


def test_fresh_loop_draws_new_real_data(tmp_path):
    loop = DeepLoop("fresh", n_ini=4, n_real=3, n_syn=2)
    calls, _ = _run(tmp_path, loop)
    assert [len(c) for c in calls] == [4, 5, 5, 5]
    reals = [c[:3] for c in calls[1:]]
    assert not np.array_equal(reals[0], reals[1])
    assert all(len(_tags(c)) == 2 for c in calls[1:])


def test_memory_draws_uniformly_from_the_last_k_models(tmp_path):
    loop = DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=3000, memory=3)
    calls, _ = _run(tmp_path, loop, generations=5)
    for t, data in enumerate(calls[1:], start=2):
        tags = _tags(data)
        allowed = list(range(max(1, t - 3), t))
        assert set(tags) == set(allowed)
        # Multinomial counts: each share 1/m, se √(p(1−p)/n); 5 se is a safe bound.
        p = 1 / len(allowed)
        shares = np.array([np.mean(tags == g) for g in allowed])
        assert np.all(np.abs(shares - p) <= 5 * np.sqrt(p * (1 - p) / len(tags)))


def test_memory_resume_restores_the_model_history(tmp_path):
    loop = DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=50, memory=2)
    straight, _ = _run(tmp_path / "a", loop, generations=4)
    _run(tmp_path / "b", loop, generations=2)
    resumed, _ = _run(tmp_path / "b", loop, generations=4)  # starts at generation 3
    assert len(resumed) == 2
    for a, b in zip(straight[2:], resumed):
        np.testing.assert_array_equal(a, b)


def test_accumulated_pool_survives_resume(tmp_path):
    loop = DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=5, accumulate=True)
    straight, _ = _run(tmp_path / "a", loop, generations=4)
    _run(tmp_path / "b", loop, generations=3)
    resumed, _ = _run(tmp_path / "b", loop, generations=4)
    np.testing.assert_array_equal(straight[-1], resumed[-1])


@pytest.mark.parametrize("bad, param", [
    (dict(kind="cyclic"), "loop"),
    (dict(n_ini=1), "n_ini"),
    (dict(n_real=3), "n_real"),
    (dict(n_syn=1), "n_syn"),
    (dict(memory=2, accumulate=True), "memory"),
])
def test_loop_validation_names_the_field(bad, param):
    kw = dict(kind="fully-synthetic", n_ini=4, n_real=0, n_syn=4) | bad
    with pytest.raises(ParameterError) as err:
        DeepLoop(**kw)
    assert err.value.param == param


def test_resume_reproduces_an_uninterrupted_glow_run(tmp_path):
    """Stop after T = 2 (as a kill after generation 2 would), resume to T = 3."""
    common = dict(loop="fully-synthetic", lam=0.8, data="rosenbrock", preset="smoke", seed=5, progress=False)
    straight = train("glow", generations=3, out=str(tmp_path / "straight"), **common)
    train("glow", generations=2, out=str(tmp_path / "resumed"), **common)
    resumed = train("glow", generations=3, out=str(tmp_path / "resumed"), **common)
    assert resumed == straight  # every metric of every generation, bit for bit
    for name in ("metrics.csv", "samples/gen_3.npz"):
        assert os.path.exists(tmp_path / "resumed" / name)
    np.testing.assert_array_equal(np.load(tmp_path / "straight/samples/gen_3.npz")["x"],
                                  np.load(tmp_path / "resumed/samples/gen_3.npz")["x"])
    from madjax.deep.glow import glow
    from madjax.deep.runner import GLOW_PRESETS

    abstract = jax.eval_shape(glow(GLOW_PRESETS["smoke"].glow).init, jax.random.PRNGKey(0))
    a = Checkpointer(str(tmp_path / "straight/checkpoints")).restore_latest(abstract, sample_shape=(2,))
    b = Checkpointer(str(tmp_path / "resumed/checkpoints")).restore_latest(abstract, sample_shape=(2,))
    assert a.generation == b.generation == 3
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    with open(tmp_path / "resumed/metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[0] == "generation" and {"w2", "sinkhorn_w2", "precision", "recall", "tail_mass",
                                          "var_x2"} <= set(header)


def test_resume_refuses_a_different_configuration(tmp_path):
    loop = DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=5)
    _run(tmp_path, loop, generations=1)
    with pytest.raises(ParameterError) as err:
        _run(tmp_path, DeepLoop("fully-synthetic", n_ini=4, n_real=0, n_syn=6), generations=2)
    assert err.value.param == "out"


GOOD = ["train", "glow", "--loop", "fully-synthetic", "--generations", "2", "--data", "rosenbrock",
        "--preset", "smoke", "--quiet"]


@pytest.mark.parametrize("change, option", [
    ({"--lam": "1.5"}, "--lam"),
    ({"--lam": "0"}, "--lam"),
    ({"glow": "wgan"}, "--data"),  # image models on 2-D points
    ({"glow": "ddpm"}, "--data"),
    ({"glow": "vae"}, "MODEL"),  # the positional argument, named as the usage line names it
    ({"--loop": "cyclic"}, "--loop"),
    ({"--data": "mnist"}, "--data"),
    ({"--data": "cifar"}, "--data"),
    ({"--generations": "0"}, "--generations"),
    ({"--preset": "huge"}, "--preset"),
    ({"--n-ini": "1"}, "--n-ini"),
    ({"--n-syn": "1"}, "--n-syn"),
    ({"--n-syn": "-5"}, "--n-syn"),
    ({"--n-real": "10"}, "--n-real"),
    ({"--memory": "0"}, "--memory"),
    ({"--save-every": "0"}, "--save-every"),
    ({"--accumulate": None, "--memory": "2"}, "--memory"),
])
def test_bad_train_input_exits_2_with_one_line(tmp_path, capsys, change, option):
    argv = list(GOOD)
    for key, value in change.items():
        if key in argv:
            argv[argv.index(key) + 1 if key.startswith("--") else argv.index(key)] = value
        else:
            argv += [key] if value is None else [key, value]
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"madjax: error: {option}: "), err
    assert not out.exists()  # validated before any work: no partial output


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(GOOD + ["--out", str(blocker / "run")]) == 2
    assert capsys.readouterr().err.startswith("madjax: error: --out: ")
