"""The command line's help, its talk on stderr, its start-up switches and its error names.

Everything runs ``madjax.cli.main`` in-process on tiny sizes (seconds).
"""

import argparse
import logging

import jax
import pytest

from madjax import compile_cache, effective
from madjax._progress import WeightedProgress, configure_logging, log
from madjax.cli import build_parser, main


@pytest.fixture(autouse=True)
def _restore_logger():
    """``main`` configures the ``madjax`` logger for the process: undo it after each test."""
    yield
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)


def _subparsers():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_help_lists_choices_defaults_groups_and_a_line_for_every_option():
    commands = _subparsers()
    assert set(commands) == {"simulate", "effective-size", "sweep", "reproduce", "plot", "train", "bench"}
    for name, p in commands.items():
        assert p.description, name
        for action in p._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help line"
        text = p.format_help()
        assert "output:" in text, name
    simulate = commands["simulate"].format_help()
    for piece in ("{fully-synthetic,synthetic-augmentation,fresh,replace,accumulate,accumulate-subsample}",
                  "{unbiased,mle,known-cov}", "{gaussian,gmm,kde}", "{exact,sampled}",
                  "(default: 1.0)", "Gaussian: exact (default)", "loop:", "sizes:", "run:"):
        assert piece in simulate, piece
    assert "{smoke,quick,paper}" in commands["reproduce"].format_help()
    assert "(default: 256)" in commands["effective-size"].format_help()
    assert "(default: 1000)" in commands["bench"].format_help()
    assert "(default: None)" not in "".join(p.format_help() for p in commands.values())


def test_train_accepts_x64():
    args = build_parser().parse_args(["train", "glow", "--loop", "fully-synthetic", "--generations", "1",
                                      "--data", "rosenbrock", "--out", "o", "--x64"])
    assert args.x64


def test_positional_arguments_are_named_as_typed(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "fig99", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("madjax: error: FIG: invalid choice: 'fig99'")
    assert main(["bench", "nothing"]) == 2
    assert capsys.readouterr().err.startswith("madjax: error: WHAT: invalid choice")
    from madjax import figures

    monkeypatch.setitem(figures._MODULES, "fig10", "madjax.figures.not_installed")
    assert main(["plot", "fig10", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "madjax: error: FIG: fig10 is not available in this version of madjax\n", err


def test_a_sweep_talks_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path / "cache"))  # a fresh cache: the E-dist table is built
    argv = ["sweep", "--loop", "fresh", "--dim", "2", "--n-real", "4", "--n-syn", "1,2", "--chains", "4"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    for line in ("building the E-dist table", "sweep: 2 of 2 cells to run", "sweep: 2/2 cells, 100% of the work",
                 "exporting"):
        assert line in err, err
    assert main(argv + ["--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_time_left_weighs_cells_by_their_work(capsys):
    configure_logging()
    with WeightedProgress([1, 9, 10], done=[0], desc="grid", enabled=True) as bar:
        bar.advance([1])
    err = capsys.readouterr().err
    assert "grid: 2/3 cells, 50% of the work" in err, err  # 10 of 20 chain-generations, not 2 of 3 cells


def test_quiet_hides_progress_but_not_warnings(capsys):
    configure_logging(quiet=True)
    log.info("a stage line")
    log.warning("a warning")
    assert capsys.readouterr().err == "madjax: warning: a warning\n"
    configure_logging(verbosity=1)
    assert log.isEnabledFor(logging.DEBUG)


def test_lines_are_not_repeated_by_a_root_handler(capsys):
    # absl (imported with orbax) calls logging.basicConfig() on its first log call
    import io

    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    logging.getLogger().addHandler(root_handler)
    try:
        configure_logging()
        log.info("a stage line")
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert capsys.readouterr().err.count("a stage line") == 1 and root_stream.getvalue() == ""


class _Stop(Exception):
    pass


def test_threshold_honours_w2_every(monkeypatch):
    seen = []

    def spy(*args, **kwargs):  # records the first root-finding evaluation, then stops the run
        seen.append(dict(kwargs["model"].options)["w2_every"])
        raise _Stop

    monkeypatch.setattr(effective, "ratio_curve", spy)
    with pytest.raises(_Stop):
        main(["effective-size", "--loop", "fresh", "--dim", "2", "--n-real", "4", "--lam", "0.5", "--chains", "8",
              "--threshold", "--w2-every", "3", "--quiet"])
    assert seen == [3]


@pytest.mark.parametrize("setting, expected", [("0", None), ("off", None), ("", "default"), ("1", "default"),
                                               ("DIR", "DIR")])
def test_compilation_cache_switch(tmp_path, monkeypatch, setting, expected):
    keys = ("jax_enable_compilation_cache", "jax_compilation_cache_dir", "jax_compilation_cache_max_size",
            "jax_persistent_cache_min_compile_time_secs")
    saved = {k: getattr(jax.config, k) for k in keys}
    monkeypatch.setenv("MADJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MADJAX_COMPILATION_CACHE", setting.replace("DIR", str(tmp_path / "jit")))
    try:
        path = compile_cache.configure()
        want = {None: None, "default": str(tmp_path / "cache" / "jax"), "DIR": str(tmp_path / "jit")}[expected]
        assert path == want
        assert jax.config.jax_enable_compilation_cache is (want is not None)
        if want is not None:
            assert jax.config.jax_compilation_cache_dir == want
            assert jax.config.jax_compilation_cache_max_size == compile_cache.MAX_BYTES  # size bound: file lock
    finally:
        for k, v in saved.items():
            jax.config.update(k, v)


def test_dry_run_estimates_the_wall_time(tmp_path, capsys):
    assert main(["reproduce", "fig10", "--preset", "smoke", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "chain-generations" in out and "n_s* root finding" in out, out
    assert "estimated wall time ~" in out and "calibration run" in out, out
    assert not (tmp_path / "o").exists()
