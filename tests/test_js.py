"""The front end's JavaScript: node's unit tests, the widget modules as anywidget loads them,
constants shared with Python."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from imrec_widgets.imageio import IMAGE_EXTENSIONS
from imrec_widgets.widgets import search_widget, uploads
from imrec_widgets.widgets._base import STATIC_DIR
from imrec_widgets.widgets.duplicates_widget import DuplicatesWidget
from imrec_widgets.widgets.map_layer import MapLayer
from imrec_widgets.widgets.search_widget import SearchWidget
from imrec_widgets.widgets.selection_gallery import SelectionGallery

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


@pytest.mark.parametrize(
    ("widget", "helpers"),
    [
        (SearchWidget, {"validateFiles", "chunkRanges", "clampK", "fitName", "debounce"}),
        (MapLayer, {"axisMap", "pixelToData", "extendPath", "paletteBytes", "typedArray"}),
        (DuplicatesWidget, {"formatSize", "formatDay", "itemFacts", "thumbnailOffsets"}),
        (SelectionGallery, {"cellTitle", "fileName"}),
    ],
)
def test_each_widget_is_one_module_anywidget_can_load(node, tmp_path, widget, helpers):
    """What anywidget receives (the file's text, imported from a blob URL where no other file
    can be imported) loads on its own: its default export renders, its named exports are the
    pure helpers node's tests import."""
    module = tmp_path / "widget.mjs"  # a copy elsewhere: nothing beside it to import
    module.write_text(str(widget._esm), encoding="utf-8")
    script = (
        f"const m = await import({json.dumps(module.as_uri())});"
        "console.log(JSON.stringify({render: typeof m.default.render,"
        " defaultKeys: Object.keys(m.default), keys: Object.keys(m)}));"
    )
    done = _run(node, "--input-type=module", "-e", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded["render"] == "function" and loaded["defaultKeys"] == ["render"]
    assert "default" in loaded["keys"] and helpers <= set(loaded["keys"]), loaded["keys"]
    assert str(widget._esm).startswith("// @ts-check\n")


def test_the_static_folder_holds_only_what_the_widgets_load():
    loaded = sorted(
        str(getattr(w, key))
        for w in (SearchWidget, MapLayer, DuplicatesWidget, SelectionGallery)
        for key in ("_esm", "_css")
    )
    assert sorted(p.read_text(encoding="utf-8") for p in STATIC_DIR.iterdir()) == loaded


def test_front_end_constants_match_python(node):
    sizes = [0, 999, 1500, 2_000_000, 20_000_000, 25_300_000, 3_000_000_000]
    script = (
        f"const SIZES = {json.dumps(sizes)};"
        f"const m = await import({json.dumps((STATIC_DIR / 'search_widget.js').as_uri())});"
        "console.log(JSON.stringify({kMin: m.K_MIN, kMax: m.K_MAX, maxFiles: m.MAX_FILES,"
        " extensions: m.IMAGE_EXTENSIONS, bytes: SIZES.map(m.formatBytes)}));"
    )
    done = _run(node, "--input-type=module", "-e", script)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    assert (js["kMin"], js["kMax"]) == (search_widget.K_MIN, search_widget.K_MAX)
    assert js["maxFiles"] == uploads.MAX_QUERY_IMAGES
    assert sorted(js["extensions"]) == sorted(IMAGE_EXTENSIONS)
    assert js["bytes"] == [uploads.format_bytes(size) for size in sizes]
