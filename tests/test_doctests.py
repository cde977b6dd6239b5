"""Every docstring example in madjax runs, as part of the default suite.

The modules are discovered with :func:`pkgutil.walk_packages`, so a module
added later is covered without touching this file; a module without
examples passes trivially. Examples are compared with ``ELLIPSIS`` and
``NORMALIZE_WHITESPACE``; keep them fast (tiny shapes, few chains).
"""

import doctest
import importlib
import io
import pkgutil

import pytest

import madjax

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = ["madjax"] + [m.name for m in pkgutil.walk_packages(madjax.__path__, prefix="madjax.")]
    # ``python -m madjax`` runs the command line when imported: it holds no examples.
    return sorted(n for n in names if n.rsplit(".", 1)[-1] != "__main__")


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}:\n{out.getvalue()}"
