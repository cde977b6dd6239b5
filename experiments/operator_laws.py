"""The largest |z| of every loop operator's law against the engine (d = 2, 20 000 chains, T = 12); ~10 min on 2 cores.

Run: python experiments/operator_laws.py. Prints one line per law (theory_z: max |z| and its generation),
the accumulate ratios against π²/6 and the one-sided z of accumulate < accumulate-subsample < replace.
"""
import math

import numpy as np

import madjax
from madjax import theory
from madjax.simulate import theory_z
T, C = 12, 20000
def run(label, **kw):
    ds = madjax.simulate(dim=2, generations=T, chains=C, seed=11, **kw)
    z = theory_z(ds)
    print(f"{label:60s}", {k: (round(v[0], 2), v[1]) for k, v in z.items()}, flush=True)
    return ds
run("replace, known-cov (linear)", loop="replace", n_ini=8, n_syn=8, estimator="known-cov")
acc = run("accumulate, known-cov (pi^2/6)", loop="accumulate", n_real=8, n_syn=8, estimator="known-cov")
full = run("accumulate, refitted, power:1", loop="accumulate", n_real=8, n_syn=8, reference="power:1")
run("accumulate, refitted, identity", loop="accumulate", n_real=8, n_syn=8)
run("fully-synthetic + accumulate", loop="fully-synthetic", accumulate=True, n_ini=8, n_syn=6)
run("replace, growth 1.5, mle", loop="replace", n_ini=8, n_syn=5, growth=1.5, estimator="mle")
run("replace, growth 0.5", loop="replace", n_ini=8, n_syn=5, growth=0.5)
run("weighted w*=0.618 known-cov", loop="fresh", n_ini=8, n_real=8, n_syn=8, real_weight=(math.sqrt(5)-1)/2, estimator="known-cov")
run("weighted 0.3 refitted", loop="fresh", n_ini=8, n_real=6, n_syn=9, real_weight=0.3)
run("tilt 0.7 known-cov replace", loop="replace", n_ini=8, n_syn=8, estimator="known-cov", tilt=0.7, reference="power:1")
run("tilt 0.7 known-cov fresh", loop="fresh", n_ini=8, n_real=5, n_syn=8, estimator="known-cov", tilt=0.7)
# full refitted accumulate ratio vs pi^2/6
m = full.mean_sq_norm.values.astype(float).mean(0)
print("refitted accumulate m_T/m_1 =", round(m[-1]/m[0], 4), "theory", float(full.mean_sq_norm_theory[-1]/full.mean_sq_norm_theory[0]), "pi^2/6 =", round(math.pi**2/6, 4))
mk = acc.mean_sq_norm.values.astype(float).mean(0)
print("known-cov accumulate m_T/m_1 =", round(mk[-1]/mk[0], 4), "theory", float(theory.accumulate_known_cov_ratio(np.array([T]))[0]))
# subsample ordering
sub = madjax.simulate(dim=2, generations=T, chains=C, seed=11, loop="accumulate-subsample", n_real=8, n_syn=8, estimator="known-cov", engine="sampled")
rep = madjax.simulate(dim=2, generations=T, chains=C, seed=12, loop="replace", n_ini=8, n_syn=8, estimator="known-cov")
for name, a, b in (("subsample - accumulate", sub, acc), ("replace - subsample", rep, sub)):
    x, y = a.mean_sq_norm.values.astype(float), b.mean_sq_norm.values.astype(float)
    z = (x.mean(0) - y.mean(0)) / np.hypot(x.std(0, ddof=1), y.std(0, ddof=1)) * math.sqrt(C)
    print(name, "smallest z over t>=3:", round(float(z[2:].min()), 1))
