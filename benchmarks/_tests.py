"""Code the benchmarks share with the tests, loaded from ``tests/`` by its file path.

The tests' folders are not packages (pytest puts each on ``sys.path`` itself), so a benchmark
run as ``python benchmarks/bench_x.py`` cannot import them. Rather than every benchmark adding
``tests/`` folders to ``sys.path`` (where their modules would shadow others by bare name), this
module loads one file, once, under a name of its own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"


def load(relative: str) -> ModuleType:
    """The module in ``tests/<relative>`` (e.g. ``"browser/harness.py"``), imported once."""
    path = TESTS_DIR / relative
    name = "_imrec_tests." + relative.removesuffix(".py").replace("/", ".")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the benchmarks need a full checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
