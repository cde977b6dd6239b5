"""Results are identical chain by chain for 1 and 4 devices and for any chunk size."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, sys, madjax
    from madjax.effective import steady_wd_cells
    import jax
    ds = madjax.simulate(loop="fresh", dim=3, n_ini=5, n_real=3, n_syn=6, lam=0.8, generations=4, chains=7,
                         seed=2, chunk=int(sys.argv[1]))
    est = steady_wd_cells([dict(n_real=4, n_syn=8, lam=0.9)], loop="fresh", dim=3, chains=7, seed=1)[0]
    # a point model: masked buffers, EM, and the mixture W2's host callback, sharded over the chain axis
    gmm = madjax.simulate(model="gmm", loop="fresh", n_ini=40, n_real=30, n_syn=30, lam=0.9, generations=2,
                          chains=7, seed=4, n_eval=32, chunk=int(sys.argv[1]))
    print(json.dumps({"devices": jax.local_device_count(), "w2": ds.w2.values.tolist(),
                      "cov_logdet": ds.cov_logdet.values.tolist(), "wd": est.wd,
                      "gmm_w2": gmm.w2.values.tolist(), "gmm_recall": gmm.recall.values.tolist()}))
""")


def _run(devices, chunk):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(chunk)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_and_four_devices_and_chunks_agree_bitwise():
    one = _run(1, 7)
    four = _run(4, 3)  # 3 chains per chunk, padded to 4 per call on 4 devices
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_array_equal(np.array(one["w2"]), np.array(four["w2"]))
    np.testing.assert_array_equal(np.array(one["cov_logdet"]), np.array(four["cov_logdet"]))
    assert one["wd"] == four["wd"]
    np.testing.assert_array_equal(np.array(one["gmm_w2"]), np.array(four["gmm_w2"]))
    np.testing.assert_array_equal(np.array(one["gmm_recall"]), np.array(four["gmm_recall"]))


def test_two_process_distributed_run_matches_one_process(tmp_path):
    """`madjax simulate --distributed` with two CPU processes on localhost (gloo collectives)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "distributed_localhost.sh")
    out = subprocess.run(["bash", script], env=dict(os.environ, PORT=str(port), PYTHON=sys.executable), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "identical to one process" in out.stdout
