"""The front end's JavaScript: node's unit tests, the bundled widget module, shared constants."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from imrec_widgets.imageio import IMAGE_EXTENSIONS
from imrec_widgets.widgets import search_widget
from imrec_widgets.widgets._base import bundle_esm

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node (>= 20) is needed to run the front end's JavaScript tests")
    return path


def _run(node: str, *args: str, cwd: Path = JS_DIR.parent) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_node_unit_tests_pass(node):
    done = _run(node, "--test", "js/tests/")
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"node --test js/tests/ failed:\n{output[-6000:]}"
    passed = re.search(r"^# pass (\d+)$", output, re.M)
    failed = re.search(r"^# fail (\d+)$", output, re.M)
    assert passed and int(passed[1]) >= 15, output[-3000:]
    assert failed and int(failed[1]) == 0, output[-3000:]


def test_bundled_widget_module_loads_in_node(node, tmp_path):
    """What anywidget receives is one self-contained module exporting ``render``."""
    module = tmp_path / "search_widget.bundle.mjs"
    module.write_text(bundle_esm("search_widget.js"), encoding="utf-8")
    script = (
        f"const m = await import({json.dumps(module.as_uri())});"
        "console.log(JSON.stringify({render: typeof m.default.render, keys: Object.keys(m)}));"
    )
    done = _run(node, "--input-type=module", "-e", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"render": "function", "keys": ["default"]}


def test_front_end_constants_match_python(node):
    sizes = [0, 999, 1500, 2_000_000, 20_000_000, 25_300_000, 3_000_000_000]
    script = (
        f"const SIZES = {json.dumps(sizes)};"
        f"const m = await import({json.dumps((JS_DIR / 'search_logic.js').as_uri())});"
        "console.log(JSON.stringify({kMin: m.K_MIN, kMax: m.K_MAX, maxFiles: m.MAX_FILES,"
        " extensions: m.IMAGE_EXTENSIONS, bytes: SIZES.map(m.formatBytes)}));"
    )
    done = _run(node, "--input-type=module", "-e", script)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    assert (js["kMin"], js["kMax"]) == (search_widget.K_MIN, search_widget.K_MAX)
    assert js["maxFiles"] == search_widget.MAX_QUERY_IMAGES
    assert sorted(js["extensions"]) == sorted(IMAGE_EXTENSIONS)
    assert js["bytes"] == [search_widget.format_bytes(size) for size in sizes]
