"""The benchmarks reach the tests' shared code through one module, never through ``sys.path``.

(The benchmarks themselves never run as tests: these only check how they import.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _sys_path_edits(tree: ast.AST) -> list[str]:
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and ast.unparse(node.func.value) == "sys.path"
    ]


def test_no_benchmark_puts_a_tests_folder_on_sys_path():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) > 10
    edits = {
        p.name: [
            e for e in _sys_path_edits(ast.parse(p.read_text(encoding="utf-8"))) if "tests" in e
        ]
        for p in scripts
    }
    assert {name: found for name, found in edits.items() if found} == {}
    mentions = [
        p.name
        for p in scripts
        if '"tests"' in p.read_text(encoding="utf-8") and p.name != "_tests.py"
    ]
    assert mentions == [], "only benchmarks/_tests.py knows where the tests' code lives"


def test_the_browser_benchmark_imports_the_harness_through_benchmarks_browser():
    source = (BENCHMARKS / "bench_map.py").read_text(encoding="utf-8")
    assert "from _browser import" in source and "from harness import" not in source
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_map.py"), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--skip-jscatter" in done.stdout


def test_the_loader_gives_each_tests_module_once_under_its_own_name():
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _browser, _tests\n"
        "harness = _tests.load('browser/harness.py')\n"
        "photos = _tests.load('labeled_photos.py')\n"
        "assert _browser.JupyterLabServer is harness.JupyterLabServer\n"
        "assert callable(photos.write_labeled_photos)\n"
        "assert _tests.load('labeled_photos.py') is photos\n"
        "assert 'harness' not in sys.modules and 'labeled_photos' not in sys.modules\n"
        "assert not [p for p in sys.path if p.rstrip('/').endswith(('tests', 'browser'))]\n"
        "print(harness.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(BENCHMARKS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "_imrec_tests.browser.harness"
