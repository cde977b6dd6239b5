"""Hardened inputs: seeds, int32 sizes, resources, paths and the multi-device paths (issue 13, part A).

Every bad request is refused with exactly one line ``madjax: error: --option:
...`` and exit status 2 (``ValueError`` naming the parameter in Python), before
any file is written and without compiling anything; the estimates that refuse
the absurd let the README's commands and the paper presets through.
"""

import dataclasses
import gzip
import importlib
import json
import os
import socket
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import madjax
import madjax.effective
import madjax.figures
import madjax.sweeps
from madjax import resources
from madjax.cli import build_parser, main
from madjax.validation import INT32_MAX, ParameterError, check_name, check_seed

SIMULATE = importlib.import_module("madjax.simulate")  # the module (``madjax.simulate`` is the function)
SIM = ["simulate", "--loop", "fresh", "--dim", "10", "--n-ini", "100", "--n-real", "100", "--n-syn", "100",
       "--lam", "0.9", "--generations", "10", "--chains", "10"]
EFF = ["effective-size", "--loop", "fresh", "--dim", "10", "--n-real", "100", "--n-syn", "100", "--lam", "0.9",
       "--chains", "16"]
SWEEP = ["sweep", "--loop", "fresh", "--dim", "4", "--n-real", "4", "--n-syn", "4,8", "--lam", "0.9", "--chains", "8"]
TRAIN = ["train", "glow", "--loop", "fresh", "--generations", "2", "--data", "rosenbrock", "--preset", "smoke"]
BENCH = ["bench", "chains", "--dim", "4", "--chains", "8", "--generations", "2", "--n-syn", "10", "--n-real", "10"]
RESOURCE_COMMANDS = {"simulate": SIM, "effective-size": EFF, "sweep": SWEEP, "train": TRAIN, "bench": BENCH}


class _Reached(Exception):
    """Raised by a stub in place of the work: the request passed every check."""


@pytest.fixture(autouse=True)
def _sixteen_gib(monkeypatch):
    """Memory estimates are compared with a fixed 16 GiB, whatever this machine has."""
    monkeypatch.setattr(resources, "memory_limit", lambda: 16 << 30)


def _set(argv, option, value=None):
    """``argv`` with ``option`` set to ``value`` (added, or a flag when value is None)."""
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option] if value is None else [option, value]
    return argv


def _with_out(argv, tmp_path):
    """``argv`` with ``--out`` under ``tmp_path`` where the command writes one (and that path)."""
    if argv[0] in ("effective-size", "bench"):
        return argv, tmp_path / "never-written"
    target = tmp_path / ("x.nc" if argv[0] == "simulate" else "out")
    return argv + ["--out", str(target)], target


def _refused(capsys, tmp_path, argv, option):
    """Run ``argv`` in-process; assert one line naming ``option``, exit 2, nothing written."""
    argv, target = _with_out(argv, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"madjax: error: {option}:"), err
    assert not target.exists()
    return err


# ----------------------------------------------------------------------------- 1. seeds


@pytest.mark.parametrize("seed", [2**32, 2**32 + 7, 2**64, -1])
@pytest.mark.parametrize("command", ["simulate", "effective-size", "sweep", "train", "bench", "reproduce"])
def test_out_of_range_seed_is_one_line_for_every_command(tmp_path, capsys, command, seed):
    argv = {**RESOURCE_COMMANDS, "reproduce": ["reproduce", "fig10", "--preset", "smoke"]}[command]
    err = _refused(capsys, tmp_path, _set(argv, "--seed", str(seed)), "--seed")
    assert "2**32 - 1" in err


@pytest.mark.parametrize("call", [
    lambda s: madjax.simulate(loop="fresh", dim=2, n_ini=4, n_real=2, n_syn=2, generations=2, seed=s),
    lambda s: madjax.effective.effective_size(dim=2, n_real=4, n_syn=4, seed=s),
    lambda s: madjax.sweeps.run_effective_sweep("unused", "s", loop="fresh", dim=2, grid={"n_syn": [2]},
                                                fixed={"n_real": 4}, seed=s),
    lambda s: madjax.figures.reproduce(["fig10"], preset="smoke", out="unused", seed=s),
])
def test_python_api_names_the_seed(call):
    with pytest.raises(ValueError, match="^seed: "):
        call(2**32)


def test_seed_range_is_the_32_bits_of_a_key():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1
    for bad in (2**32, -1, 1.5, True, "3"):
        with pytest.raises(ParameterError):
            check_seed(bad)


# ----------------------------------------------------------------------------- 2. int32 sizes


@pytest.mark.parametrize("argv, option", [
    (_set(SIM, "--n-real", str(2**31)), "--n-real"),
    (_set(SIM, "--n-syn", str(INT32_MAX)), "--n-syn"),  # n_real + n_syn
    (_set(SIM, "--n-ini", str(2**31)), "--n-ini"),
    (_set(_set(SIM, "--accumulate"), "--n-syn", str(2**28)), "--n-syn"),  # (T - 1) n_s + n_r
    (_set(SIM, "--generations", str(INT32_MAX)), "--generations"),
    (_set(SIM, "--chains", str(2**31)), "--chains"),
    (["simulate", "--loop", "fresh", "--dim", "10", "--n-ini", "100", "--real-fraction", "0.5", "--n-total",
      str(2**31), "--generations", "10"], "--n-total"),
    (_set(EFF, "--n-syn", str(INT32_MAX)), "--n-syn"),
    (_set(_set(EFF, "--n-syn", str(10**9)), "--n-real", "2"), "--n-syn"),  # burn-in horizon past int32
    (_set(EFF[:7] + EFF[9:] + ["--threshold"], "--n-real", str(10**8)), "--n-real"),  # searched n_s = 100 n_r
    (_set(SWEEP, "--n-syn", f"4,{2**31}"), "--n-syn"),
    (_set(SWEEP, "--n-real", str(INT32_MAX - 2)), "--n-syn"),  # n_real + n_syn
    (_set(TRAIN, "--n-syn", str(2**31)), "--n-syn"),
    (_set(BENCH, "--n-syn", str(INT32_MAX)), "--n-syn"),
])
def test_sizes_past_int32_are_refused_before_work(tmp_path, capsys, argv, option):
    err = _refused(capsys, tmp_path, argv, option)
    assert "2**31 - 1" in err or "<= 2147483647" in err


def test_python_api_names_the_overflowing_size():
    with pytest.raises(ValueError, match="^n_syn: n_real \\+ n_syn"):
        madjax.simulate(loop="fresh", dim=2, n_ini=4, n_real=2**30, n_syn=2**30, generations=2)


# ----------------------------------------------------------------------------- 10. resources


@pytest.mark.parametrize("argv, option", [
    (_set(SIM, "--chains", str(10**9)), "--chains"),
    (_set(SIM, "--dim", str(10**5)), "--dim"),
    (_set(SIM, "--generations", str(10**9)), "--generations"),
    (_set(SIM, "--memory", str(10**5)), "--memory"),
    (_set(_set(SIM, "--engine", "sampled"), "--n-syn", str(10**8)), "--n-syn"),
    (["simulate", "--model", "gmm", "--loop", "fully-synthetic", "--n-ini", "1000", "--n-syn", "1000",
      "--generations", "10", "--chains", str(10**7)], "--chains"),
    (_set(_set(EFF, "--n-syn", str(5 * 10**7)), "--n-real", "2"), "--n-syn"),  # a burn-in of 1.7·10⁸ generations
    (_set(EFF, "--chains", str(10**9)), "--chains"),
    (_set(EFF, "--dim", str(10**5)), "--dim"),
    (_set(EFF, "--memory", str(10**5)), "--memory"),
    (_set(_set(SWEEP, "--n-syn", ",".join(map(str, range(1, 4001)))), "--n-real",
          ",".join(map(str, range(2, 3002)))), "--n-syn"),  # 1.2·10⁷ cells, refused before they are listed
    (_set(SWEEP, "--memory", str(10**5)), "--memory"),
    (_set(TRAIN, "--generations", str(10**9)), "--generations"),
    (_set(BENCH, "--chains", str(10**9)), "--chains"),
    (_set(BENCH, "--n-syn", str(10**9)), "--n-syn"),
    (_set(_set(BENCH, "--dim", "100"), "--naive-chains", str(10**9)), "--naive-chains"),
])
def test_absurd_requests_are_refused_with_the_estimate_and_the_override(tmp_path, capsys, argv, option):
    err = _refused(capsys, tmp_path, argv, option)
    assert "--allow-large" in err and any(unit in err for unit in ("iB of memory", "hours", "days", "years",
                                                                   "minutes to compile"))


def test_grid_file_that_never_ends_or_nests_forever(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for grid in ("/dev/zero", str(deep)):
        err = _refused(capsys, tmp_path, SWEEP[:5] + ["--chains", "8", "--grid", grid], "--grid")
        assert grid in err


def test_allow_large_is_one_flag_in_every_command_that_estimates():
    parser = build_parser()
    for command, argv in RESOURCE_COMMANDS.items():
        args = parser.parse_args(_with_out(argv, Path("x"))[0] + ["--allow-large"])
        assert args.allow_large is True, command
        assert "--allow-large" in parser._subparsers._group_actions[0].choices[command].format_help()


def test_allow_large_lets_the_estimate_through():
    config = SIMULATE.make_config(loop="fresh", dim=10, n_ini=10, n_real=10, n_syn=10, generations=10, chains=10**9)
    with pytest.raises(ValueError, match="^chains: .*allow_large=True"):
        SIMULATE.check_resources(config)
    SIMULATE.check_resources(config, allow_large=True)


def _stub(monkeypatch, target, name):
    def reached(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr(target, name, reached)


@pytest.mark.parametrize("argv", [
    # the README's commands
    "simulate --model gaussian --loop fresh --dim 100 --n-ini 1000 --n-real 1000 --n-syn 10000 --lam 0.9 "
    "--generations 20 --chains 1000",
    "effective-size --loop fresh --dim 10 --n-real 20 --n-syn 200 --lam 0.8 --json",
    "effective-size --loop fresh --dim 10 --n-real 20 --lam 0.8 --threshold",
    "sweep --loop fresh --dim 10 --n-real 10,100 --n-syn 10,100,1000 --lam 0.9",
    "bench chains --dim 100 --n-syn 10000 --chains 1000 --json",
    "train glow --loop fully-synthetic --generations 16 --lam 1 --data rosenbrock --preset quick",
])
def test_readme_commands_pass_the_checks(tmp_path, monkeypatch, argv):
    """Each command is stopped where its work would start: it passed every check."""
    import madjax.bench
    import madjax.deep.runner

    _stub(monkeypatch, SIMULATE, "run_diagnostics")
    _stub(monkeypatch, madjax.effective, "edist_table")
    _stub(monkeypatch, madjax.sweeps, "CellStore")
    _stub(monkeypatch, madjax.bench, "bench_rows")
    _stub(monkeypatch, madjax.deep.runner, "check_resumable")
    argv, _ = _with_out(argv.split(), tmp_path)
    with pytest.raises(_Reached):
        main(argv)


@pytest.mark.parametrize("fig", ["fig10", "fig30", "fig31", "fig32", "fig33", "fig34"])
def test_paper_presets_pass_the_checks(tmp_path, monkeypatch, fig):
    """The paper presets' sweeps are GPU-scale but not absurd: none is refused."""
    import madjax.sweeps
    from madjax.figures.phase import get_config

    _stub(monkeypatch, madjax.sweeps, "CellStore")
    cfg = get_config(fig, "paper")
    for name, grid, fixed in cfg.sweeps:
        with pytest.raises(_Reached):
            madjax.sweeps.run_effective_sweep(str(tmp_path), name, loop=cfg.loop, dim=cfg.dim, grid=grid,
                                              fixed=fixed, chains=cfg.chains, progress=False)


def _gzip_bomb(path, shape, payload_bytes):
    """An IDX header declaring ``shape`` followed by ``payload_bytes`` zeros, gzip-compressed as a stream."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    rank = len(shape)
    parts = [co.compress(bytes([0, 0, 8, rank]) + b"".join(int(n).to_bytes(4, "big") for n in shape))]
    block = bytes(1 << 20)
    parts += [co.compress(block) for _ in range(payload_bytes >> 20)]
    path.write_bytes(b"".join(parts) + co.flush())


@pytest.mark.parametrize("shape, payload, message", [
    ((10, 28, 28), 128 << 20, "unexpected bytes after the data"),  # 128 MiB of zeros behind a 7840-byte header
    ((2**31, 2**31, 28), 1 << 20, "declares shape"),  # an absurd header
])
def test_idx_reader_never_inflates_past_the_declared_shape(tmp_path, shape, payload, message):
    from madjax.data import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_bomb(path, shape, payload)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ParameterError, match=message) as err:
        read_idx(path, ndim=3)
    assert err.value.param == "data_dir"
    with gzip.open(path) as fh:  # the file itself is a valid gzip stream: only the reader's cap refuses it
        assert len(fh.read(16)) == 16


# ----------------------------------------------------------------------------- 11. paths


@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "", ".", "..", "a/b", "a\0b"])
def test_sweep_name_may_not_leave_out(tmp_path, capsys, name):
    _refused(capsys, tmp_path, SWEEP + ["--name", name], "--name")


@pytest.mark.parametrize("field, value", [("fig", "../../evil"), ("sweeps", "/tmp/evil"), ("sweeps", "../evil")])
def test_names_in_a_stored_config_stay_under_from(tmp_path, capsys, field, value):
    from madjax.figures.phase import get_config
    from madjax.io import SCHEMA_VERSION

    raw = dataclasses.asdict(get_config("fig33", "smoke"))
    if field == "fig":
        raw["fig"] = value
    else:
        raw["sweeps"] = [[value, *raw["sweeps"][0][1:]]]
    (tmp_path / "fig33_config.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION,
                                                            "preset_config": raw}))
    assert main(["plot", "fig33", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("madjax: error: --from:") and "plain file name" in err
    assert sorted(os.listdir(tmp_path)) == ["fig33_config.json"]


def test_check_name_accepts_plain_names():
    assert check_name("name", "fig10_lam-0.9") == "fig10_lam-0.9"


def test_simulate_output_follows_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(SIMULATE, "simulate", lambda **kw: xr.Dataset({"w2": (("chain",), np.zeros(2))}))
    old = os.umask(0o027)
    try:
        SIMULATE.simulate_to_file(tmp_path / "run.nc")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run.nc").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["run.nc"]


# ----------------------------------------------------------------------------- 12. devices and hosts


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("env, message", [
    ({"MADJAX_COORDINATOR": "no-port"}, "host:port"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:99999"}, "host:port"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:1234"}, "MADJAX_NUM_PROCESSES must be an integer"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:1234", "MADJAX_NUM_PROCESSES": "0", "MADJAX_PROCESS_ID": "0"}, ">= 1"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:1234", "MADJAX_NUM_PROCESSES": "2", "MADJAX_PROCESS_ID": "2"}, "below"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:1234", "MADJAX_NUM_PROCESSES": "2", "MADJAX_PROCESS_ID": "x"},
     "MADJAX_PROCESS_ID must be an integer"),
    ({"MADJAX_COORDINATOR": "127.0.0.1:1234", "MADJAX_NUM_PROCESSES": "2", "MADJAX_PROCESS_ID": "1",
      "MADJAX_INIT_TIMEOUT": "0"}, "MADJAX_INIT_TIMEOUT"),
    ({"MADJAX_COORDINATOR": "no-such-host.invalid:1234", "MADJAX_NUM_PROCESSES": "2", "MADJAX_PROCESS_ID": "1"},
     "cannot resolve"),
    ({"MADJAX_NUM_PROCESSES": "2", "MADJAX_PROCESS_ID": "1", "MADJAX_INIT_TIMEOUT": "1", "PORT": ""},
     "no coordinator answered"),
])
def test_distributed_misconfiguration_is_one_line(tmp_path, capsys, monkeypatch, env, message):
    for name in ("MADJAX_COORDINATOR", "MADJAX_NUM_PROCESSES", "MADJAX_PROCESS_ID", "MADJAX_INIT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    if "PORT" in env:  # a port nobody listens on
        env = {k: v for k, v in env.items() if k != "PORT"} | {"MADJAX_COORDINATOR": f"127.0.0.1:{_free_port()}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = _refused(capsys, tmp_path, SIM + ["--distributed"], "--distributed")
    assert message in err


def test_distributed_port_taken_for_process_zero(tmp_path, capsys, monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("MADJAX_COORDINATOR", f"127.0.0.1:{port}")
        monkeypatch.setenv("MADJAX_NUM_PROCESSES", "2")
        monkeypatch.setenv("MADJAX_PROCESS_ID", "0")
        err = _refused(capsys, tmp_path, SIM + ["--distributed"], "--distributed")
    assert "cannot listen" in err


def _madjax(args, env, timeout):
    """``python -m madjax args`` in a subprocess with ``env`` (never hangs the suite)."""
    return subprocess.run([sys.executable, "-m", "madjax", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_distributed_without_coordinator_or_cluster_is_one_line(tmp_path):
    """In a subprocess: JAX's runtime is started (and refused) in a fresh process, as a user's would be."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MADJAX_COORDINATOR", "SLURM", "OMPI", "PMI"))}
    out = _madjax([*SIM, "--distributed", "--out", str(tmp_path / "x.nc")], env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("madjax: error: --distributed:"), out.stderr
    assert not (tmp_path / "x.nc").exists()


def test_forced_cpu_host_devices_run_chains_on_one_device():
    code = ("import jax; from madjax.distributed import chain_devices; "
            "print(jax.local_device_count(), len(chain_devices()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert out.stdout.split() == ["4", "1"], out.stderr[-2000:]


@pytest.mark.slow
def test_issue_command_on_four_forced_cpu_devices_finishes(tmp_path):
    """The issue's command sat at 0 % CPU forever on 4 forced host devices; it must finish."""
    out = _madjax(["simulate", "--model", "gaussian", "--loop", "fresh", "--dim", "10", "--n-ini", "1000",
                   "--n-real", "1000", "--n-syn", "200", "--lam", "0.9", "--generations", "10", "--chains", "1000",
                   "--seed", "7", "--quiet", "--out", str(tmp_path / "x.nc")],
                  dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4"), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert xr.open_dataset(tmp_path / "x.nc").w2.shape == (1000, 10)
