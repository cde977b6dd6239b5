"""The loop driver: closed forms, exact vs sampled engine, compilation and keys.

Closed forms derived for P_r = N(0, I_d) (G¹ fitted to n_ini real points):

Fully synthetic, E[Σ_t | Σ_{t−1}] = λ Σ_{t−1} and μ_t = μ_{t−1} + N(0, λΣ_{t−1}/n_s):
  E tr Σ_t   = λ^{t−1} d
  E ‖μ_t‖²   = d / n_ini + (d / n_s) Σ_{s=2}^{t} λ^{s−1}
  log det Σ_t = log det Σ_{t−1} + d log λ + log det W − d log(n_s − 1),  W ~ Wishart(n_s − 1, I)
  so with ℓ(n) = Σ_i ψ((n−1−i)/2) + d log 2 − d log(n − 1) and v(n) = Σ_i ψ'((n−1−i)/2):
  E log det Σ_t = ℓ(n_ini) + (t − 1)(d log λ + ℓ(n_s)),  Var = v(n_ini) + (t − 1) v(n_s).

Fresh loop (n = n_r + n_s, m_t = E‖μ_t‖², c_t = E tr Σ_t; m_1 = d/n_ini, c_1 = d):
  m_t = (n_r d + n_s² m_{t−1} + n_s λ c_{t−1}) / n²
  c_t = [(n_r − 1) d + n_s d / n + λ c_{t−1} (n_s − 1 + n_r / n) + (n_r n_s / n) m_{t−1}] / (n − 1)
(the last two terms are the between-group scatter n_r n_s/n ‖x̄_r − x̄_s‖²).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_se, zcrit
from scipy.special import polygamma, psi

import madjax
from madjax.gaussian import GaussianSpec
from madjax.loops import (
    LoopParams,
    LoopSpec,
    slot_mask,
    run_cells_jit,
    run_chains,
    run_chains_jit,
    stack_params,
)

DIM = 3
T = 5
CHAINS = 3000


def _ell(n, d):
    h = (n - 1 - np.arange(d)) / 2
    return psi(h).sum() + d * np.log(2) - d * np.log(n - 1), polygamma(1, h).sum()


# --------------------------------------------------------------------------- fully synthetic


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_fully_synthetic_closed_forms(dtype, jit):
    n_ini, n_syn, lam, chains, gens = 10, 8, 0.8, 3000, 5
    spec = LoopSpec(kind="fully-synthetic", model=GaussianSpec(dim=DIM, dtype=dtype))
    params = LoopParams.create(n_ini=n_ini, n_syn=n_syn, lam=lam, dtype=dtype)
    ids = jnp.arange(chains, dtype=jnp.uint32)
    run = run_chains_jit if jit else run_chains
    rec = jax.tree.map(lambda x: np.asarray(x, np.float64), run(jax.random.key(11), ids, params, spec, gens))
    t = np.arange(1, gens + 1)
    z = zcrit(m=3 * gens)
    tr_exact = lam ** (t - 1) * DIM
    assert_close_se(rec.cov_trace.mean(0), tr_exact, rec.cov_trace.std(0) / np.sqrt(chains), z, "E tr Σ_t")
    geo = np.array([sum(lam ** (s - 1) for s in range(2, k + 1)) for k in t])
    mu_exact = DIM / n_ini + DIM / n_syn * geo
    assert_close_se(rec.mean_sq_norm.mean(0), mu_exact, rec.mean_sq_norm.std(0) / np.sqrt(chains), z, "E‖μ_t‖²")
    l_ini, v_ini = _ell(n_ini, DIM)
    l_s, v_s = _ell(n_syn, DIM)
    ld_exact = l_ini + (t - 1) * (DIM * np.log(lam) + l_s)
    ld_var = v_ini + (t - 1) * v_s
    assert_close_se(rec.cov_logdet.mean(0), ld_exact, np.sqrt(ld_var / chains), z, "E log det Σ_t")
    # power: these standard errors resolve a 10 % error in E tr Σ_T
    assert z * rec.cov_trace[:, -1].std() / np.sqrt(chains) < 0.1 * tr_exact[-1]
    assert np.all(rec.cov_rank == DIM) and np.isfinite(rec.w2).all()


def test_fully_synthetic_rank_collapse_is_exact_and_never_nan():
    """n_s − 1 < d: Σ_t has rank n_s − 1 for ever; log det = −inf, nothing is NaN."""
    ds = madjax.simulate(loop="fully-synthetic", dim=5, n_ini=4, n_syn=3, lam=0.5, generations=40, chains=16)
    assert (ds.cov_rank.sel(generation=1) == 3).all() and (ds.cov_rank.sel(generation=slice(2, None)) == 2).all()
    assert np.isneginf(ds.cov_logdet).all()
    for name in ("w2", "mean_sq_norm", "cov_trace"):
        assert np.isfinite(ds[name]).all()
    assert int(ds.n_nonfinite.sum()) == 0


def test_float32_collapse_is_reported_not_a_crash():
    """A long λ < 1 fully synthetic run leaves float32's range (Σ_40 ~ 0.05^39 I).

    The pooled route (``eigh``) counts the lost eigenvalues in n_underflow and
    records log det as missing (NaN, status 2), never as a finite wrong
    value; the factored route (the default here) loses nothing: its log det
    is finite and W2 is never NaN.
    """
    kw = dict(loop="fully-synthetic", dim=2, n_ini=5, n_syn=5, lam=0.05, generations=40, chains=4)
    pooled = madjax.simulate(factor="eigh", **kw)
    assert int(pooled.n_underflow.min()) > 0
    lost = pooled.cov_logdet_status == 2
    assert bool(lost.any()) and bool((pooled.cov_logdet.isnull() == lost).all())
    factored = madjax.simulate(**kw)
    assert "factored" in factored.attrs["config"]
    assert int(factored.n_underflow.max()) == 0 and bool((factored.cov_logdet_status == 0).all())
    assert np.isfinite(factored.cov_logdet).all()
    for ds in (pooled, factored):
        assert not np.isnan(ds.w2).any()


def test_lost_precision_is_one_warning_line_even_when_quiet(tmp_path, capsys):
    from madjax.cli import main

    argv = ["simulate", "--loop", "fully-synthetic", "--dim", "2", "--n-ini", "5", "--n-syn", "5", "--lam", "0.05",
            "--generations", "40", "--chains", "4", "--factor", "eigh", "--quiet", "--out", str(tmp_path / "x.nc")]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("madjax: warning: cov_logdet:") and "--x64" in err[0]


# --------------------------------------------------------------------------- one grid for the fresh spec

# One compiled function per engine serves every cell below (sizes, λ, K and p are
# traced): K = 1, K = 3, n_s < d, a real fraction p, and n_r = 0.
FRESH_CELLS = {
    "closed-form": dict(n_ini=5, n_real=4, n_syn=6, lam=0.7, memory=1),
    "memory-3": dict(n_ini=6, n_real=3, n_syn=7, lam=0.9, memory=3),
    "n_s<d": dict(n_ini=4, n_real=3, n_syn=2, lam=0.8, memory=1),
    "p=0.3,n=10": dict(n_ini=5, **dict(zip(("n_real", "n_syn"), map(int, LoopParams.split_total(0.3, 10)))),
                       lam=0.6, memory=2),
    "n_r=0": dict(n_ini=6, n_real=0, n_syn=5, lam=0.9, memory=1),
}
AUG_CELLS = {
    "aug-accumulate": dict(n_ini=4, n_real=4, n_syn=3, lam=0.8),
    "aug-accumulate-n_s=1": dict(n_ini=3, n_real=3, n_syn=1, lam=1.0),
}


@functools.lru_cache(maxsize=None)
def _grid(kind, engine, accumulate, memory):
    cells = FRESH_CELLS if kind == "fresh" else AUG_CELLS
    spec = LoopSpec(kind=kind, memory=memory, accumulate=accumulate,
                    model=GaussianSpec(dim=DIM, engine=engine, max_points=10 if engine == "sampled" else 0))
    params = stack_params([LoopParams.create(**c) for c in cells.values()])
    seed = 5 if engine == "exact" else 6
    out = run_cells_jit(jax.random.key(seed), jnp.arange(CHAINS, dtype=jnp.uint32), params, spec, T)
    return list(cells), jax.tree.map(lambda x: np.asarray(x, np.float64), out)


def test_fresh_loop_moment_recursion():
    names, rec = _grid("fresh", "exact", False, 3)
    c = FRESH_CELLS["closed-form"]
    i = names.index("closed-form")
    n_r, n_s, lam = c["n_real"], c["n_syn"], c["lam"]
    n = n_r + n_s
    m, tr = [DIM / c["n_ini"]], [float(DIM)]
    for _ in range(T - 1):
        m_prev, c_prev = m[-1], tr[-1]
        m.append((n_r * DIM + n_s**2 * m_prev + n_s * lam * c_prev) / n**2)
        tr.append(((n_r - 1) * DIM + n_s * DIM / n + lam * c_prev * (n_s - 1 + n_r / n)
                   + n_r * n_s / n * m_prev) / (n - 1))
    z = zcrit(m=2 * T)
    assert_close_se(rec.cov_trace[i].mean(0), tr, rec.cov_trace[i].std(0) / np.sqrt(CHAINS), z, "E tr Σ_t")
    assert_close_se(rec.mean_sq_norm[i].mean(0), m, rec.mean_sq_norm[i].std(0) / np.sqrt(CHAINS), z, "E‖μ_t‖²")


def _two_sample(kind, accumulate, memory):
    names, exact = _grid(kind, "exact", accumulate, memory)
    _, sampled = _grid(kind, "sampled", accumulate, memory)
    fields = ("w2", "cov_trace", "mean_sq_norm")
    z = zcrit(m=len(names) * T * len(fields))
    for i, name in enumerate(names):
        for f in fields:
            a, b = getattr(exact, f)[i], getattr(sampled, f)[i]
            se = np.sqrt(a.var(0) / CHAINS + b.var(0) / CHAINS)
            assert_close_se(a.mean(0), b.mean(0), se, z, f"{name}: {f} exact vs sampled")
            if f == "w2":  # power: a 10 % shift of the mean W2 at generation T would be detected
                assert z * se[-1] < 0.1 * b.mean(0)[-1], f"{name}: {f} test too weak"
        np.testing.assert_array_equal(exact.cov_rank[i], sampled.cov_rank[i])


def test_exact_and_sampled_engines_agree_fresh_memory_fraction():
    _two_sample("fresh", False, 3)


def test_exact_and_sampled_engines_agree_augmentation_accumulate():
    _two_sample("synthetic-augmentation", True, 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fully-synthetic", "synthetic-augmentation", "fresh"])
@pytest.mark.parametrize("variant", ["k1", "k3", "accumulate"])
def test_exact_and_sampled_agree_cross_product(kind, variant, dtype):
    memory, accumulate = {"k1": (1, False), "k3": (3, False), "accumulate": (1, True)}[variant]
    cells = [dict(n_ini=5, n_real=0 if kind == "fully-synthetic" else 3, n_syn=s, lam=lam, memory=memory)
             for s, lam in ((2, 0.8), (6, 1.0))]
    params = stack_params([LoopParams.create(**c, dtype=dtype) for c in cells])
    out = {}
    for seed, engine in enumerate(("exact", "sampled")):
        spec = LoopSpec(kind=kind, memory=memory, accumulate=accumulate,
                        model=GaussianSpec(dim=DIM, engine=engine, max_points=6 if engine == "sampled" else 0,
                                           dtype=dtype))
        res = run_cells_jit(jax.random.key(seed), jnp.arange(CHAINS, dtype=jnp.uint32), params, spec, T)
        out[engine] = jax.tree.map(lambda x: np.asarray(x, np.float64), res)
    z = zcrit(m=len(cells) * T * 2)
    for f in ("cov_trace", "mean_sq_norm"):
        a, b = getattr(out["exact"], f), getattr(out["sampled"], f)
        se = np.sqrt(a.var(1) / CHAINS + b.var(1) / CHAINS)
        assert_close_se(a.mean(1), b.mean(1), se, z, f)


# --------------------------------------------------------------------------- mechanics


def test_memory_slots():
    assert list(slot_mask(jnp.int32(2), jnp.int32(3), 3)) == [True, False, False]
    # t = 5, K = 2: generations 3 and 4 live in slots 2 and 0
    assert list(slot_mask(jnp.int32(5), jnp.int32(2), 3)) == [True, False, True]
    assert list(slot_mask(jnp.int32(9), jnp.int32(3), 3)) == [True, True, True]


def test_one_compilation_serves_every_swept_value():
    kwargs = dict(loop="fresh", dim=2, n_ini=4, generations=3, chains=5)
    madjax.simulate(n_real=3, n_syn=4, lam=0.5, **kwargs)
    before = run_chains_jit._cache_size()
    for n_real, n_syn, lam in ((3, 40, 0.9), (7, 2, 1.0), (2, 100, 0.3)):
        madjax.simulate(n_real=n_real, n_syn=n_syn, lam=lam, **kwargs)
    assert run_chains_jit._cache_size() == before


def test_results_do_not_depend_on_chunk_size():
    kwargs = dict(loop="fresh", dim=3, n_ini=5, n_real=3, n_syn=6, lam=0.8, generations=4, chains=7, seed=3)
    a = madjax.simulate(chunk=7, **kwargs)
    b = madjax.simulate(chunk=3, **kwargs)
    for name in ("w2", "cov_trace", "cov_logdet", "mean_sq_norm"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


# --------------------------------------------------------------------------- factorisations


def test_full_rank_rule():
    from madjax.gaussian import choose_factor, full_rank

    assert full_rank("fresh", 3, n_ini=4, n_real=1, n_syn=3)
    assert not full_rank("fresh", 3, n_ini=3, n_real=10, n_syn=10)  # G¹ from 3 points spans 2 dims
    assert not full_rank("fresh", 3, n_ini=4, n_real=1, n_syn=2)
    assert not full_rank("fully-synthetic", 3, n_ini=10, n_real=0, n_syn=3)
    assert full_rank("synthetic-augmentation", 3, n_ini=0, n_real=4, n_syn=0)
    assert choose_factor("fresh", 3, n_ini=[4, 10], n_real=[1, 5], n_syn=[3, 3]) == "cholesky"
    assert choose_factor("fresh", 3, n_ini=[4, 3], n_real=[1, 5], n_syn=[3, 3]) == "eigh"


@pytest.mark.parametrize("kind,n_real", [("fresh", 4), ("fully-synthetic", 0)])
def test_cholesky_and_eigh_routes_give_the_same_law(kind, n_real):
    """Different square roots of Σ give different paths but the same distribution of every diagnostic."""
    # n_s = 12 keeps Σ_t well conditioned in float32 over T generations for every chain:
    # log det is recorded everywhere (with n_s − 1 close to d a few chains' Σ_5 are
    # too badly conditioned for 0.05 nats, and their log det is missing by design).
    params = LoopParams.create(n_ini=6, n_real=n_real, n_syn=12, lam=0.8)
    ids = jnp.arange(CHAINS, dtype=jnp.uint32)
    out = {f: jax.tree.map(lambda x: np.asarray(x, np.float64),
                           run_chains_jit(jax.random.key(5), ids, params, LoopSpec(kind=kind, model=GaussianSpec(dim=DIM, factor=f)), T))
           for f in ("eigh", "cholesky")}
    # Generation 1 is fitted to the same real data: identical up to rounding.
    np.testing.assert_allclose(out["cholesky"].w2[:, 0], out["eigh"].w2[:, 0], rtol=1e-4)
    # Later generations share the keys, so the two estimates are correlated; the
    # se of their difference comes from the per-chain differences.
    z = zcrit(m=4 * (T - 1))
    for f in ("w2", "cov_trace", "mean_sq_norm", "cov_logdet"):
        diff = getattr(out["cholesky"], f)[:, 1:] - getattr(out["eigh"], f)[:, 1:]
        assert_close_se(diff.mean(0), 0.0, diff.std(0) / np.sqrt(CHAINS), z, f"{kind} {f}")
    assert out["cholesky"].underflow.sum() == 0 and out["eigh"].underflow.sum() == 0
    assert not (out["cholesky"].logdet_lost.any() or out["eigh"].logdet_lost.any())


def test_w2_every_skips_only_the_spectral_diagnostics():
    params = LoopParams.create(n_ini=6, n_real=4, n_syn=5, lam=0.8)
    ids = jnp.arange(64, dtype=jnp.uint32)
    every = run_chains_jit(jax.random.key(2), ids, params, LoopSpec(kind="fresh", model=GaussianSpec(dim=DIM, factor="cholesky")), 7)
    sparse = run_chains_jit(jax.random.key(2), ids, params,
                            LoopSpec(kind="fresh", model=GaussianSpec(dim=DIM, factor="cholesky", w2_every=3)), 7)
    kept = np.arange(7) % 3 == 0  # generations 1, 4, 7
    for name in ("w2", "cov_logdet"):
        a, b = np.asarray(getattr(every, name)), np.asarray(getattr(sparse, name))
        np.testing.assert_array_equal(b[:, kept], a[:, kept])
        assert np.all(np.isnan(b[:, ~kept]))
    for name in ("mean_sq_norm", "cov_trace", "cov_rank"):
        np.testing.assert_array_equal(getattr(sparse, name), getattr(every, name))


_REPEATED_CALLS = """
import jax, jax.numpy as jnp
from madjax.gaussian import GaussianSpec
from madjax.loops import LoopParams, LoopSpec, run_chains_jit
params = LoopParams.create(n_ini=1000, n_real=1000, n_syn=10000, lam=0.9)
ids = jnp.arange(50, dtype=jnp.uint32)
for w2_every in (1, 2):
    spec = LoopSpec(kind="fresh", model=GaussianSpec(dim=100, factor="cholesky", w2_every=w2_every))
    for _ in range(8):
        jax.block_until_ready(run_chains_jit(jax.random.key(0), ids, params, spec, 5))
print("ok")
"""


def test_cholesky_route_survives_repeated_calls():
    """Regression: jaxlib's CPU LAPACK kernels block on XLA's thread pool, so two
    running at once deadlocked this executable on a 2-core machine by its third
    call. Run in a subprocess so a hang fails the test instead of the session."""
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", _REPEATED_CALLS], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("the compiled Cholesky-route loop hung (LAPACK calls running concurrently)")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
