"""UmapExplorer in a real JupyterLab + headless Chromium with software WebGL.

The map's points are drawn with WebGL; the tests aim the mouse with the data -> pixel maps the
layer publishes on its canvas (``data-x-map``/``data-y-map``), draw lassos and rectangles as a
user would, and compare ``ex.selected`` (written to JSON by the notebook on every change) with
the points whose screen positions lie inside the drawn shape. The gesture tests run 5 times in
a row with two CPU-bound processes running, in an environment where bqplot-gl is installed.
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness import (
    ARTIFACTS_DIR,
    CHROMIUM_PATH,
    DUMP_JSON_HELPER,
    NO_WEBGL_CHROMIUM_ARGS,
    NOTEBOOK_PANEL,
    WEBGL_CHROMIUM_ARGS,
    app_errors,
    chromium,
    collect_console,
    css_contrast,
    dump_failure,
    new_page,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_file,
    wait_for_kernel_idle,
    write_notebook,
)
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.mapdata import MapPoints
from imrec_widgets.samples import write_sample_photos
from imrec_widgets.settings import DEFAULT_SETTINGS
from imrec_widgets.synthetic import MAP_PARAMS, write_feature_index, write_map_index

FEATURES = ["rgb", "dhash", "thumb"]
PHOTOS = 18
K = 5
SYNTHETIC_POINTS = 20_000
REPEATS = 5
EDGE_PX = 2.5  # points this close to a drawn edge may fall either way (pixel rounding)

PHOTO_CELL = """\
import ipywidgets
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import SearchWidget, UmapExplorer

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
sw = SearchWidget(idx, mode="rgb", k={k})
ex = UmapExplorer(idx, feature="rgb").link(sw)
"""

SYNTHETIC_CELL = """\
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import UmapExplorer

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
ex = UmapExplorer(idx, feature="rgb", compute=False)
sw = None
"""

# Python-side state, written whenever the selection, the scales or the search results change.
STATE_CELL = """\
_seq = 0
dump_json("points_" + {state!r}, {{"ids": [int(i) for i in ex.points.ids], "xy": ex.points.xy.tolist()}})

def _dump(change=None):
    global _seq
    _seq += 1
    dump_json({state!r}, {{
        "seq": _seq,
        "selected": ex.selected,
        "renderer": ex.renderer,
        "message": ex.message.value,
        "x_domain": [ex.x_scale.min, ex.x_scale.max],
        "results": [hit["id"] for hit in sw.results] if sw else [],
        "query": sw.query if sw and isinstance(sw.query, int) else None,
        "scope": sw.scope if sw else None,
    }})

ex.observe(_dump, names=["selected", "renderer"])
ex.x_scale.observe(_dump, names=["min", "max"])
if sw:
    sw.observe(_dump, names=["results", "scope"])
_dump()
"""

DISPLAY_CELL = "ipywidgets.VBox([sw, ex]) if sw else ex"

_JS_CANVAS = "document.querySelector('.imrec-umap-explorer canvas.imrec-map-points')"
_JS_FRAME = f"() => {{ const c = {_JS_CANVAS}; return c ? Number(c.dataset.frame) : -1; }}"
_JS_MAPS = f"""() => {{
  const c = {_JS_CANVAS};
  const o = document.querySelector('.imrec-umap-explorer .imrec-map-overlay');
  if (!c || !o || !c.dataset.xMap) return null;
  const r = o.getBoundingClientRect();
  return {{x: c.dataset.xMap.split(',').map(Number), y: c.dataset.yMap.split(',').map(Number),
           left: r.left, top: r.top, width: r.width, height: r.height,
           points: Number(c.dataset.points), webgl: c.dataset.webgl, frame: Number(c.dataset.frame)}};
}}"""
_JS_OUTLINES = "() => document.querySelectorAll('.imrec-umap-explorer .imrec-map-outline').length"
_JS_THUMBS_DECODED = """(n) => {
  const imgs = document.querySelectorAll('.imrec-umap-gallery img.imrec-umap-thumb');
  return imgs.length === n && Array.from(imgs).every((img) => img.complete && img.naturalWidth > 0);
}"""


# -- indexes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """The sample photos, their index and its rgb map (so the kernel starts fast)."""
    base = tmp_path_factory.mktemp("umap-browser")
    folder = base / "photos"
    write_sample_photos(folder)
    index = ImageIndex.open(folder, index_dir=base / "index", features=FEATURES)
    index.update(progress=False, workers=0)
    assert len(index) == PHOTOS
    index.umap("rgb", clusters=4)
    index.close()
    return folder, base / "index"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("umap-synthetic")
    (base / "root").mkdir()
    write_map_index(base / "index", SYNTHETIC_POINTS)
    return base / "root", base / "index"


@pytest.fixture
def cpu_hog():
    """Two busy processes for the length of a test: the machine a user has is never idle."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# -- the page --------------------------------------------------------------------------------------


class MapPage:
    """An open notebook with an explorer: its page, the Python-side state, the map's geometry."""

    def __init__(self, page, server, state: str) -> None:
        self.page = page
        self.server = server
        self.state_path = server.root_dir / state

    def state(self, predicate=None, timeout: float = 60.0):
        return wait_for_file(self.state_path, predicate, timeout=timeout)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and map coordinates of every point on the map."""
        points = wait_for_file(self.state_path.with_name("points_" + self.state_path.name))
        return np.asarray(points["ids"]), np.asarray(points["xy"], dtype=float)

    def maps(self) -> dict:
        self.page.locator(".imrec-umap-explorer .imrec-map-overlay").scroll_into_view_if_needed()
        maps = self.page.evaluate(_JS_MAPS)
        assert maps and maps["width"] > 300 and maps["height"] > 300, maps
        return maps

    def screen(self, xy: np.ndarray, maps: dict | None = None) -> np.ndarray:
        """Screen (page) positions of map coordinates ``xy``."""
        maps = maps or self.maps()
        (ax, bx), (ay, by) = maps["x"], maps["y"]
        return np.column_stack(
            [maps["left"] + ax * xy[:, 0] + bx, maps["top"] + ay * xy[:, 1] + by]
        )

    def tool(self, name: str) -> None:
        self.page.locator(".imrec-umap-tool button", has_text=name).click()
        self.page.wait_for_function(
            "(t) => document.querySelector('.imrec-umap-explorer .imrec-map-overlay').dataset.tool === t",
            arg=name,
        )

    def drag(self, points, steps: int = 3, *, shift: bool = False) -> None:
        mouse = self.page.mouse
        mouse.move(*points[0])
        if shift:
            self.page.keyboard.down("Shift")
        mouse.down()
        for x, y in points[1:]:
            mouse.move(x, y, steps=steps)
        mouse.up()
        if shift:
            self.page.keyboard.up("Shift")

    def clear(self) -> None:
        self.page.locator(".imrec-umap-explorer button", has_text="clear").click()
        self.state(lambda s: s["selected"] == [])
        self.page.wait_for_function(_JS_OUTLINES + " === 0")

    def frame_after(self, frame: int) -> None:
        self.page.wait_for_function(f"() => ({_JS_FRAME})() > {frame}", timeout=60_000)


def _cells(widget_cell: str, state: str) -> list[str]:
    """A notebook: the JSON helper, the widget, its state dumps to ``state``, the display."""
    return [DUMP_JSON_HELPER, widget_cell, STATE_CELL.format(state=state), DISPLAY_CELL]


def _near_edges(points: np.ndarray, polygon: np.ndarray, distance: float) -> np.ndarray:
    """Mask of ``points`` within ``distance`` of any edge of the closed ``polygon``."""
    near = np.zeros(len(points), dtype=bool)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        near |= np.linalg.norm(points - (a + t[:, None] * ab), axis=1) < distance
    return near


def _assert_selected(
    state: dict, ids: np.ndarray, screen_xy: np.ndarray, *shapes: np.ndarray
) -> list[int]:
    """``state["selected"]`` is exactly the points inside the ``shapes``, but for points on an edge."""
    points = MapPoints(ids, screen_xy)
    inside = np.zeros(len(ids), dtype=bool)
    unsure = np.zeros(len(ids), dtype=bool)
    for shape in shapes:
        inside |= points.in_polygon(shape)
        unsure |= _near_edges(screen_xy, shape, EDGE_PX)
    selected = np.isin(ids, state["selected"])
    wrong = np.flatnonzero((selected != inside) & ~unsure)
    assert wrong.size == 0, (
        f"{wrong.size} points wrongly (un)selected, e.g. ids {ids[wrong[:5]].tolist()}"
    )
    return sorted(ids[inside & ~unsure].tolist())


def _open(
    server,
    browser,
    name: str,
    cells: list[str],
    state: str,
    points: int,
    *,
    device_scale_factor: float = 1,
    init_script: str | None = None,
) -> MapPage:
    write_notebook(server.root_dir / f"{name}.ipynb", cells)
    page = new_page(browser, device_scale_factor=device_scale_factor)
    if init_script:
        page.add_init_script(init_script)
    try:
        open_notebook(page, server, f"{name}.ipynb")
        run_all_cells(page, timeout=240)
        page.wait_for_function(
            f"() => {{ const m = ({_JS_MAPS})(); return m && m.points === {points}; }}",
            timeout=120_000,
        )
    except BaseException:
        dump_failure(page, server, f"{name}_open_FAILED")
        raise
    return MapPage(page, server, state)


def _close(map_page: MapPage) -> None:
    errors = app_errors(map_page.page, map_page.server)
    map_page.page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def server():
    """JupyterLab with the app exposed, so a test can switch the theme with Lab's own command."""
    from harness import JupyterLabServer, require_browser

    require_browser()
    with JupyterLabServer(extra_args=["--LabApp.expose_app_in_browser=True"]) as lab_server:
        yield lab_server


@pytest.fixture(scope="module")
def webgl_browser():
    with chromium(args=WEBGL_CHROMIUM_ARGS) as browser:
        yield browser


@pytest.fixture(scope="module")
def lab(server, webgl_browser, synthetic):
    """The synthetic 20,000-point map, for the gesture tests."""
    root, index_dir = synthetic
    cells = _cells(
        SYNTHETIC_CELL.format(root=str(root), index_dir=str(index_dir)), "synthetic_state.json"
    )
    map_page = _open(
        server, webgl_browser, "synthetic", cells, "synthetic_state.json", SYNTHETIC_POINTS
    )
    assert len(map_page.points()[0]) == SYNTHETIC_POINTS
    assert map_page.state()["renderer"] == "webgl" and map_page.maps()["webgl"] == "1"
    yield map_page
    _close(map_page)


@pytest.fixture(scope="module")
def photo_lab(server, webgl_browser, photos):
    """The 18 sample photos with a linked SearchWidget, for search, hover and theme tests."""
    folder, index_dir = photos
    cells = _cells(
        PHOTO_CELL.format(root=str(folder), index_dir=str(index_dir), k=K), "photo_state.json"
    )
    map_page = _open(server, webgl_browser, "photos", cells, "photo_state.json", PHOTOS)
    assert len(map_page.points()[0]) == PHOTOS
    yield map_page
    _close(map_page)


def _star(maps: dict, rng: np.random.Generator) -> np.ndarray:
    """A random star-shaped (often concave) lasso inside the plot area, in screen pixels."""
    cx = maps["left"] + maps["width"] * rng.uniform(0.4, 0.6)
    cy = maps["top"] + maps["height"] * rng.uniform(0.4, 0.6)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = rng.uniform(0.15, 0.42, angles.size) * min(maps["width"], maps["height"])
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])


# -- gestures, under load ------------------------------------------------------------------------


@pytest.mark.parametrize("run", range(REPEATS))
def test_lasso_selects_exactly_the_points_inside(lab, run, cpu_hog):
    state = lab.state()
    maps = lab.maps()
    ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    shape = _star(maps, np.random.default_rng(run))
    before = state["seq"]
    lab.drag([*shape.tolist(), shape[0].tolist()])
    state = lab.state(lambda s: s["seq"] > before and s["selected"])
    expected = _assert_selected(state, ids, screen_xy, shape)
    assert 0 < len(expected) < SYNTHETIC_POINTS
    lab.page.wait_for_function(_JS_OUTLINES + " === 1")  # the outline stays until cleared
    assert (
        lab.page.locator(".imrec-umap-count")
        .inner_text()
        .strip()
        .startswith(f"{len(state['selected']):,} of")
    )
    if run == REPEATS - 1:
        screenshot(lab.page, "umap_explorer_lasso")
    lab.clear()


@pytest.mark.parametrize("run", range(REPEATS))
def test_brush_selects_exactly_the_rectangle(lab, run, cpu_hog):
    lab.tool("brush")
    state = lab.state()
    maps = lab.maps()
    ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    rng = np.random.default_rng(100 + run)
    x0, x1 = maps["left"] + np.sort(rng.uniform(0.1, 0.9, 2)) * maps["width"]
    y0, y1 = maps["top"] + np.sort(rng.uniform(0.1, 0.9, 2)) * maps["height"]
    if x1 - x0 < 60:
        x1 = x0 + 60
    before = state["seq"]
    if run % 2:  # any drag direction: odd runs go from bottom-right to top-left
        lab.drag([(x1, y1), ((x0 + x1) / 2, (y0 + y1) / 2), (x0, y0)])
    else:
        lab.drag([(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)])
    state = lab.state(lambda s: s["seq"] > before)
    rectangle = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    _assert_selected(state, ids, screen_xy, rectangle)
    time.sleep(0.3)  # nothing arrives late: a brush selects once, when the gesture ends
    assert lab.state()["seq"] == state["seq"]
    lab.clear()
    lab.tool("lasso")


def test_an_unfinished_gesture_leaves_nothing_behind(lab, cpu_hog):
    state = lab.state()
    maps = lab.maps()
    shape = _star(maps, np.random.default_rng(7))
    mouse = lab.page.mouse
    # press, draw half a lasso, then Escape: no selection, no outline, no live path
    mouse.move(*shape[0])
    mouse.down()
    for x, y in shape[1:12]:
        mouse.move(x, y, steps=2)
    lab.page.keyboard.press("Escape")
    mouse.up()
    lab.page.wait_for_function(
        "() => !document.querySelector('.imrec-umap-explorer .imrec-map-live').getAttribute('d')"
    )
    # a drag started with the lasso and finished after switching to the brush is dropped too
    mouse.move(*shape[0])
    mouse.down()
    mouse.move(*shape[5], steps=2)
    lab.page.locator(".imrec-umap-tool button", has_text="brush").dispatch_event("click")
    lab.page.wait_for_function(
        "() => document.querySelector('.imrec-umap-explorer .imrec-map-overlay').dataset.tool === 'brush'"
    )
    mouse.up()
    time.sleep(0.5)
    assert lab.state()["seq"] == state["seq"] and lab.state()["selected"] == []
    assert lab.page.evaluate(_JS_OUTLINES) == 0
    # the next gesture selects exactly its own points
    lab.tool("lasso")
    ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    lab.drag([*shape.tolist(), shape[0].tolist()])
    _assert_selected(lab.state(lambda s: s["selected"]), ids, screen_xy, shape)
    lab.clear()


def test_shift_adds_and_a_click_clears(lab):
    state = lab.state()
    maps = lab.maps()
    ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    left, top, width, height = maps["left"], maps["top"], maps["width"], maps["height"]
    first = np.array(
        [
            [left + 0.1 * width, top + 0.1 * height],
            [left + 0.45 * width, top + 0.1 * height],
            [left + 0.45 * width, top + 0.9 * height],
            [left + 0.1 * width, top + 0.9 * height],
        ]
    )
    second = first + np.array([0.45 * width, 0.0])
    lab.drag([*first.tolist(), first[0].tolist()])
    state = lab.state(lambda s: s["selected"])
    _assert_selected(state, ids, screen_xy, first)
    lab.drag([*second.tolist(), second[0].tolist()], shift=True)
    state = lab.state(lambda s, seq=state["seq"]: s["seq"] > seq)
    _assert_selected(state, ids, screen_xy, first, second)
    lab.page.wait_for_function(_JS_OUTLINES + " === 2")
    maps = lab.maps()  # the gallery above may have moved the map
    lab.page.mouse.click(maps["left"] + 5, maps["top"] + 5)  # a click with no drag clears
    lab.state(lambda s: s["selected"] == [])
    lab.page.wait_for_function(_JS_OUTLINES + " === 0")


def test_clear_restores_the_unselected_look(lab):
    canvas = lab.page.locator(".imrec-umap-explorer canvas.imrec-map-points")
    lab.maps()
    frame = lab.page.evaluate(_JS_FRAME)
    before = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=float)
    maps = lab.maps()
    shape = _star(maps, np.random.default_rng(11))
    lab.drag([*shape.tolist(), shape[0].tolist()])
    lab.state(lambda s: s["selected"])
    lab.frame_after(frame)
    selected = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=float)
    frame = lab.page.evaluate(_JS_FRAME)
    lab.clear()
    lab.frame_after(frame)
    after = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=float)
    assert np.abs(selected - before).mean() > 5  # the selection changed the look
    assert np.abs(after - before).mean() < 0.5  # and clearing brought it back exactly


def test_zoom_and_pan_move_the_points_and_selection_follows(lab):
    state = lab.state()  # the wheel zooms under the lasso tool too
    domain = state["x_domain"]
    maps = lab.maps()
    frame = maps["frame"]
    lab.page.mouse.move(maps["left"] + maps["width"] / 2, maps["top"] + maps["height"] / 2)
    lab.page.mouse.wheel(0, -400)
    state = lab.state(lambda s: s["x_domain"][1] - s["x_domain"][0] < 0.9 * (domain[1] - domain[0]))
    lab.frame_after(frame)
    zoomed = lab.page.evaluate(_JS_MAPS)
    assert abs(zoomed["x"][0]) > abs(maps["x"][0]) * 1.1  # more pixels per map unit
    lab.tool("pan/zoom")
    start = (zoomed["left"] + 100, zoomed["top"] + 100)
    lab.drag([start, (start[0] + 80, start[1] + 40)])
    panned = lab.state(lambda s: s["x_domain"][0] != state["x_domain"][0])
    assert panned["x_domain"][0] < state["x_domain"][0]  # dragging right shows what was left
    # a lasso after zooming and panning selects what is on screen inside it
    lab.tool("lasso")
    maps = lab.page.evaluate(_JS_MAPS)
    ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    shape = _star(maps, np.random.default_rng(21))
    lab.drag([*shape.tolist(), shape[0].tolist()])
    _assert_selected(lab.state(lambda s: s["selected"]), ids, screen_xy, shape)
    lab.clear()
    # "whole map" brings every point back into view
    lab.page.locator(".imrec-umap-explorer .imrec-umap-reset").click()
    lab.state(lambda s: s["x_domain"] == domain)


def test_lasso_in_notebook_7(webgl_browser, synthetic):
    """The same map and lasso in Notebook 7 (``jupyter notebook``), its own server and page."""
    from harness import JupyterLabServer

    root, index_dir = synthetic
    cells = _cells(
        SYNTHETIC_CELL.format(root=str(root), index_dir=str(index_dir)), "nb7_state.json"
    )
    with JupyterLabServer(app="notebook") as notebook7:
        map_page = _open(notebook7, webgl_browser, "nb7", cells, "nb7_state.json", SYNTHETIC_POINTS)
        try:
            maps = map_page.maps()
            ids, xy = map_page.points()
            screen_xy = map_page.screen(xy, maps)
            shape = _star(maps, np.random.default_rng(5))
            map_page.drag([*shape.tolist(), shape[0].tolist()])
            _assert_selected(map_page.state(lambda s: s["selected"]), ids, screen_xy, shape)
            screenshot(map_page.page, "umap_explorer_notebook7")
        except BaseException:
            dump_failure(map_page.page, notebook7, "umap_explorer_notebook7_FAILED")
            raise
        finally:
            _close(map_page)


# -- the photo map: hover, click-to-search, themes ---------------------------------------------


def test_hover_shows_the_thumbnail_and_name_next_to_the_point(photo_lab):
    photo_lab.state()
    ids, xy = photo_lab.points()
    screen_xy = photo_lab.screen(xy)
    target = int(np.argmin(np.abs(screen_xy[:, 0] - np.median(screen_xy[:, 0]))))
    x, y = screen_xy[target]
    photo_lab.page.mouse.move(x + 2, y + 1)
    tooltip = photo_lab.page.locator(".imrec-umap-explorer .imrec-map-tooltip")
    photo_lab.page.wait_for_function(
        """(id) => { const t = document.querySelector('.imrec-umap-explorer .imrec-map-tooltip');
          const img = t && t.querySelector('img');
          return t && t.style.display !== 'none' && t.dataset.id === String(id)
            && img.complete && img.naturalWidth > 0; }""",
        arg=int(ids[target]),
    )
    box = tooltip.bounding_box()
    assert box and abs(box["x"] - x) < 220 and abs(box["y"] - y) < 220, (box, x, y)  # beside it
    assert tooltip.inner_text().strip().endswith(".jpg")
    photo_lab.page.mouse.move(5, 5)  # leaving the map hides it
    photo_lab.page.wait_for_function(
        "() => document.querySelector('.imrec-umap-explorer .imrec-map-tooltip').style.display === 'none'"
    )


_JS_RING_COLOURS = """() => {
  const marks = document.querySelectorAll('.imrec-umap svg.svg-figure g[clip-path]');
  const ring = marks[1] && marks[1].querySelector('path.dot');
  if (!ring) return null;
  const cell = document.querySelector('.jp-Notebook') || document.body;
  return {ring: getComputedStyle(ring).stroke, background: getComputedStyle(cell).backgroundColor};
}"""


def test_click_searches_and_results_ring_readably_in_both_themes(photo_lab):
    page = photo_lab.page
    state = photo_lab.state()
    photo_lab.tool("click")
    ids, xy = photo_lab.points()
    screen_xy = photo_lab.screen(xy)
    position = int(np.argmax(screen_xy[:, 0]))
    page.mouse.click(*screen_xy[position])
    clicked = int(ids[position])
    state = photo_lab.state(lambda s: s["query"] == clicked and len(s["results"]) == K)
    assert clicked not in state["results"] and state["selected"] == []  # a click does not select
    contrasts = {}
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        page.evaluate(
            f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})"
        )
        light = "true" if theme.endswith("Light") else "false"
        page.wait_for_function(
            f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=30_000
        )
        colours = page.wait_for_function(
            f"""() => {{ const c = ({_JS_RING_COLOURS})();
              const dark = c && c.background.match(/\\d+/g).slice(0, 3).reduce((a, b) => a + Number(b), 0) < 300;
              return c && dark === {str(light == "false").lower()} && c; }}""",
            timeout=30_000,
        ).json_value()
        contrasts[theme] = css_contrast(colours["ring"], colours["background"])
        page.locator(".imrec-umap-explorer").scroll_into_view_if_needed()
        screenshot(page, f"umap_explorer_{theme.split()[-1].lower()}")
        if theme.endswith("Light"):  # the README's picture (docs/screenshots.md)
            page.locator(".imrec-umap-explorer").screenshot(
                path=str(ARTIFACTS_DIR / "umap_explorer_element.png")
            )
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")
    assert all(value >= 4.5 for value in contrasts.values()), contrasts
    photo_lab.tool("lasso")


# -- no WebGL, and a million points ------------------------------------------------------------


def test_without_webgl_the_map_is_svg_says_so_and_still_selects(server, webgl_browser, photos):
    folder, index_dir = photos
    cells = _cells(
        PHOTO_CELL.format(root=str(folder), index_dir=str(index_dir), k=K), "svg_state.json"
    )
    # a second Chromium from the same Playwright, with WebGL switched off
    browser = webgl_browser.browser_type.launch(
        executable_path=CHROMIUM_PATH, args=NO_WEBGL_CHROMIUM_ARGS, headless=True
    )
    with contextlib.closing(browser):
        map_page = _open(server, browser, "svg", cells, "svg_state.json", 0)
        try:
            state = map_page.state(lambda s: s["renderer"] == "svg")
            assert "drawn as SVG" in state["message"]
            map_page.page.wait_for_function(
                "() => document.querySelector('.imrec-umap-message').innerText.includes('drawn as SVG')"
            )
            map_page.page.wait_for_function(
                "(n) => document.querySelectorAll('.imrec-umap svg.svg-figure path.dot').length >= n",
                arg=PHOTOS,
            )
            maps = map_page.maps()
            ids, xy = map_page.points()
            screen_xy = map_page.screen(xy, maps)
            box = np.array(
                [
                    [maps["left"] + 5, maps["top"] + 5],
                    [maps["left"] + maps["width"] - 5, maps["top"] + 5],
                    [maps["left"] + maps["width"] - 5, maps["top"] + maps["height"] - 5],
                    [maps["left"] + 5, maps["top"] + maps["height"] - 5],
                ]
            )
            map_page.drag([*box.tolist(), box[0].tolist()])
            state = map_page.state(lambda s: len(s["selected"]) == PHOTOS)
            _assert_selected(state, ids, screen_xy, box)
            screenshot(map_page.page, "umap_explorer_svg")
        finally:
            _close(map_page)


@pytest.mark.slow
def test_a_million_points_drawn_and_all_selected(server, webgl_browser, tmp_path_factory):
    base = tmp_path_factory.mktemp("umap-million")
    (base / "root").mkdir()
    rows = 1_000_000
    write_map_index(base / "index", rows)
    cells = [
        DUMP_JSON_HELPER,
        "import time\n_t0 = time.time()\n"
        + SYNTHETIC_CELL.format(root=str(base / "root"), index_dir=str(base / "index")),
        """def _dump_big(change=None):
    dump_json("million.json", {"at": time.time(), "created": _t0, "selected": len(ex.selected),
                               "first": ex.selected[:3], "count": ex.count.value})
ex.observe(_dump_big, names=["selected"])
_dump_big()""",
        "ex",
    ]
    started = time.time()
    map_page = _open(server, webgl_browser, "million", cells, "million.json", rows)
    drawn = time.time() - started
    try:
        maps = map_page.maps()
        map_page.tool("brush")
        released = time.time()
        map_page.drag(
            [
                (maps["left"] + 1, maps["top"] + 1),
                (maps["left"] + maps["width"] - 1, maps["top"] + maps["height"] - 1),
            ]
        )
        state = map_page.state(lambda s: s["selected"] > 0, timeout=120)
        assert state["selected"] == rows and state["first"] == [0, 1, 2]
        assert "1,000,000 of 1,000,000 selected" in state["count"]
        map_page.page.wait_for_function(_JS_THUMBS_DECODED, arg=40, timeout=60_000)
        screenshot(map_page.page, "umap_explorer_million")
        print(
            f"\n1M points: run -> drawn {drawn:.1f}s, brush release -> Python {state['at'] - released:.2f}s"
        )
    finally:
        _close(map_page)
    with contextlib.suppress(OSError):
        (ARTIFACTS_DIR / "umap_explorer_million.txt").write_text(f"drawn {drawn:.1f}s\n")


# -- a map that never goes blank silently: pixel ratio, deep zoom, draw order, lost contexts ------

OVERLAP_SPOTS = 150
OVERLAP_CENTRE = (12.3, -9.7)  # far from 0: float32 positions lose pixels at a deep zoom there

OVERLAP_CELL = """\
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import UmapExplorer

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
ex = UmapExplorer(idx, feature="rgb", compute=False, color_by="cluster")
ex.select(list(range(0, {rows}, 2)))  # every even point: drawn over its odd twin
sw = None
dump_json("palette.json", {{"even": ex.layer.palette[int(ex.categories().codes[0])]}})
"""

_JS_CANVAS_SIZE = f"""() => {{
  const c = {_JS_CANVAS};
  return c && {{width: c.width, css: c.getBoundingClientRect().width, ratio: Number(c.dataset.ratio)}};
}}"""


@pytest.fixture(scope="module")
def overlap(tmp_path_factory) -> tuple[Path, Path]:
    """Pairs of points on one spot in two colours (even ids cluster 0, odd ids cluster 1)."""
    base = tmp_path_factory.mktemp("umap-overlap")
    (base / "root").mkdir()
    rng = np.random.default_rng(3)
    spots = (np.asarray(OVERLAP_CENTRE) + rng.uniform(-3, 3, (OVERLAP_SPOTS, 2))).astype(np.float32)
    bins = DEFAULT_SETTINGS["bins"]
    catalog, _store = write_feature_index(
        base / "index",
        2 * OVERLAP_SPOTS,
        {
            "rgb": lambda ids: rng.random((ids.size, 3 * bins), dtype=np.float32),
            "thumb": lambda ids: np.full((ids.size, 16, 16, 3), 128, dtype=np.uint8),
            "umap/rgb": lambda ids: spots[ids // 2],
            "cluster/rgb": lambda ids: (ids % 2).astype(np.int32),
        },
        settings={"features": ["rgb", "thumb"], "thumb_size": 16},
        size=(16, 16),
    )
    catalog.set_meta(
        "projection/rgb",
        {
            "params": MAP_PARAMS,
            "clusters": {"clusters": 2, "min_cluster_size": None},
            "updated_at": time.time(),
            "fitted": 2 * OVERLAP_SPOTS,
        },
    )
    catalog.close()
    return base / "root", base / "index"


# Headless Chromium changes devicePixelRatio under CDP's device metrics override but sends no
# media query "change" event, as a real browser does when a window moves to another screen: keep
# the page's resolution queries so the test can send that event itself.
_KEEP_MEDIA_QUERIES = """
window.__resolutionQueries = [];
const _matchMedia = window.matchMedia.bind(window);
window.matchMedia = (query) => {
  const list = _matchMedia(query);
  if (/resolution/.test(query)) window.__resolutionQueries.push(list);
  return list;
};
"""
_JS_SCREEN_CHANGED = """() => {
  for (const list of window.__resolutionQueries) {
    if (!list.matches) list.dispatchEvent(new MediaQueryListEvent('change', {media: list.media, matches: false}));
  }
}"""


@pytest.fixture(scope="module")
def sharp_lab(server, webgl_browser, overlap):
    """The overlap map on a 2x screen (Playwright's device_scale_factor=2)."""
    root, index_dir = overlap
    cells = _cells(
        OVERLAP_CELL.format(root=str(root), index_dir=str(index_dir), rows=2 * OVERLAP_SPOTS),
        "overlap_state.json",
    )
    map_page = _open(
        server,
        webgl_browser,
        "overlap",
        cells,
        "overlap_state.json",
        2 * OVERLAP_SPOTS,
        device_scale_factor=2,
        init_script=_KEEP_MEDIA_QUERIES,
    )
    yield map_page
    _close(map_page)


def _canvas_pixels(map_page: MapPage) -> np.ndarray:
    """The map's canvas as the screen shows it (device pixels, RGB), pointer and tooltip away."""
    map_page.page.mouse.move(2, 2)
    map_page.page.wait_for_function(
        "() => document.querySelector('.imrec-umap-explorer .imrec-map-tooltip').style.display === 'none'"
    )
    canvas = map_page.page.locator(".imrec-umap-explorer canvas.imrec-map-points")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=float)


def _isolated(screen_xy: np.ndarray, distance: float) -> np.ndarray:
    """Positions (of even ids) whose spot is at least ``distance`` pixels from every other spot."""
    spots = screen_xy[::2]
    gaps = np.linalg.norm(spots[:, None] - spots[None], axis=2) + np.eye(len(spots)) * 1e9
    return np.flatnonzero(gaps.min(axis=1) > distance) * 2


def test_the_canvas_follows_the_device_pixel_ratio(sharp_lab):
    page = sharp_lab.page
    size = page.evaluate(_JS_CANVAS_SIZE)
    assert size["ratio"] == 2 and size["width"] == round(size["css"] * 2), size
    # The window moves to a 1x screen: no resize, only the ratio (and its media query) changes.
    cdp = page.context.new_cdp_session(page)
    for ratio in (1, 3, 2):
        cdp.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 900, "deviceScaleFactor": ratio, "mobile": False},
        )
        page.wait_for_function(f"() => window.devicePixelRatio === {ratio}")
        page.evaluate(_JS_SCREEN_CHANGED)
        page.wait_for_function(
            f"() => {{ const s = ({_JS_CANVAS_SIZE})(); return s.ratio === {ratio} && s.width === Math.round(s.css * {ratio}); }}"
        )
    cdp.detach()


def test_selected_points_are_drawn_over_the_faded_ones(sharp_lab):
    state = sharp_lab.state(lambda s: len(s["selected"]) == OVERLAP_SPOTS)
    assert state["selected"] == list(range(0, 2 * OVERLAP_SPOTS, 2))
    even = wait_for_file(sharp_lab.server.root_dir / "palette.json")["even"]
    selected_colour = np.array([int(even[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    maps = sharp_lab.maps()
    ids, xy = sharp_lab.points()
    assert ids.tolist() == list(range(2 * OVERLAP_SPOTS))
    screen_xy = sharp_lab.screen(xy, maps)
    pixels = _canvas_pixels(sharp_lab)
    ratio = pixels.shape[1] / maps["width"]
    centres = []
    for position in _isolated(screen_xy, 12):
        px, py = (screen_xy[position] - [maps["left"], maps["top"]]) * ratio
        if 4 < px < pixels.shape[1] - 4 and 4 < py < pixels.shape[0] - 4:
            centres.append(pixels[int(py), int(px)])
    assert len(centres) > 20, len(centres)
    # Drawn last, a selected point shows its own colour; under its faded twin it would be mixed.
    off = np.abs(np.asarray(centres) - selected_colour).max(axis=1)
    assert (off <= 3).all(), f"{(off > 3).sum()} of {len(off)} selected points covered: {off.max()}"
    screenshot(sharp_lab.page, "umap_explorer_selected_on_top")


def test_a_deep_zoom_draws_points_where_a_lasso_selects_them(sharp_lab):
    page = sharp_lab.page
    ids, xy = sharp_lab.points()
    maps = sharp_lab.maps()
    screen_xy = sharp_lab.screen(xy, maps)
    target = int(_isolated(screen_xy, 40)[0])
    # Zoom around one point until the view is 1e-5 map units wide (float32 holds ~1e-6 here).
    while True:
        maps = page.evaluate(_JS_MAPS)
        span = maps["width"] / maps["x"][0]
        if span < 1e-5:
            break
        x, y = sharp_lab.screen(xy[target : target + 1], maps)[0]
        page.mouse.move(x, y)
        page.mouse.wheel(0, -1000)
        page.wait_for_function(
            f"() => {{ const m = ({_JS_MAPS})(); return m && m.x[0] > {maps['x'][0]} * 1.5; }}"
        )
    page.wait_for_function(
        f"() => {_JS_CANVAS} && {_JS_CANVAS}.dataset.detail === 'full' && ({_JS_MAPS})().x[0] === {maps['x'][0]}"
    )
    maps = sharp_lab.maps()
    expected = sharp_lab.screen(xy[target : target + 1], maps)[0] - [maps["left"], maps["top"]]
    pixels = _canvas_pixels(sharp_lab)
    ratio = pixels.shape[1] / maps["width"]
    background = pixels[2, 2]
    drawn = np.argwhere(np.abs(pixels - background).max(axis=2) > 40)
    assert len(drawn) > 0, "the point is not drawn at all"
    seen = drawn.mean(axis=0)[::-1] / ratio  # (x, y) in CSS pixels
    assert np.abs(seen - expected).max() < 1.5, (seen, expected)
    # A small lasso around what is seen selects exactly that spot's two points.
    left, top = maps["left"] + seen[0], maps["top"] + seen[1]
    square = np.array(
        [[left - 15, top - 15], [left + 15, top - 15], [left + 15, top + 15], [left - 15, top + 15]]
    )
    before = sharp_lab.state()["seq"]
    sharp_lab.drag([*square.tolist(), square[0].tolist()])
    state = sharp_lab.state(
        lambda s: s["seq"] > before and s["selected"] != list(range(0, 2 * OVERLAP_SPOTS, 2))
    )
    _assert_selected(state, ids, sharp_lab.screen(xy, maps), square)
    assert sorted(state["selected"]) == [int(ids[target]), int(ids[target + 1])]
    screenshot(page, "umap_explorer_deep_zoom")
    page.locator(".imrec-umap-explorer .imrec-umap-reset").click()
    page.wait_for_function(f"() => ({_JS_MAPS})().x[0] < {maps['x'][0]} / 1000")


# -- a zoom that keeps up: a subsample while the view moves, then every point in view ------------

LOD_POINTS = 200_000  # a software-GL frame of these costs more than the moving frame budget

# Every frame of the map's canvas as it is drawn: the points its picture shows and how many the
# view can show (data-drawn, data-inView) and whether it is complete (data-detail).
_RECORD_FRAMES = """
window.__frames = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const c = m.target;
    if (c.classList && c.classList.contains('imrec-map-points')) {
      window.__frames.push({frame: Number(c.dataset.frame), drawn: Number(c.dataset.drawn),
                            inView: Number(c.dataset.inView), detail: c.dataset.detail});
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-frame']});
"""
_JS_FULL_AFTER = f"""(frame) => {{
  const c = {_JS_CANVAS};
  return c && Number(c.dataset.frame) > frame && c.dataset.detail === 'full';
}}"""


@pytest.fixture(scope="module")
def lod_lab(server, webgl_browser, tmp_path_factory):
    base = tmp_path_factory.mktemp("umap-lod")
    (base / "root").mkdir()
    write_map_index(base / "index", LOD_POINTS)
    cells = _cells(
        SYNTHETIC_CELL.format(root=str(base / "root"), index_dir=str(base / "index")),
        "lod_state.json",
    )
    map_page = _open(
        server,
        webgl_browser,
        "lod",
        cells,
        "lod_state.json",
        LOD_POINTS,
        init_script=_RECORD_FRAMES,
    )
    yield map_page
    _close(map_page)


def _wheel_burst(map_page: MapPage, delta: float, events: int = 5) -> dict:
    """Wheel events over the plot's centre; the maps and frames once that view is complete."""
    page = map_page.page
    maps = map_page.maps()
    page.mouse.move(maps["left"] + maps["width"] / 2, maps["top"] + maps["height"] / 2)
    first = page.evaluate("() => window.__frames.length")
    for _ in range(events):
        page.mouse.wheel(0, delta)
    # Each event scales the view by exp(deltaY * WHEEL_ZOOM_RATE) (events the browser merges
    # sum their deltas): wait for a complete picture of the view the last one leaves.
    scale = maps["x"][0] / math.exp(events * delta * 0.001)
    page.wait_for_function(
        f"""() => {{
          const c = {_JS_CANVAS};
          const a = Number(c.dataset.xMap.split(',')[0]);
          return Math.abs(a / {scale} - 1) < 1e-6 && c.dataset.detail === 'full';
        }}""",
        timeout=120_000,
    )
    frames = page.evaluate("(i) => window.__frames.slice(i)", first)
    return {"maps": page.evaluate(_JS_MAPS), "frames": frames}


def _points_in_view(map_page: MapPage, maps: dict) -> int:
    _ids, xy = map_page.points()
    (ax, bx), (ay, by) = maps["x"], maps["y"]
    px, py = ax * xy[:, 0] + bx, ay * xy[:, 1] + by
    return int(((px >= 0) & (px <= maps["width"]) & (py >= 0) & (py <= maps["height"])).sum())


def test_a_wheel_burst_never_blanks_the_map_and_ends_with_every_point_in_view(lod_lab):
    page = lod_lab.page
    for delta, zoomed_in in ((-300, True), (300, False)):
        burst = _wheel_burst(lod_lab, delta)
        frames, maps = burst["frames"], burst["maps"]
        assert frames, "no frame drawn after the wheel"
        blank = [f for f in frames if f["drawn"] <= 0]
        assert not blank, f"{len(blank)} of {len(frames)} frames showed no points: {blank[:3]}"
        last = page.evaluate(
            f"() => {{ const d = {_JS_CANVAS}.dataset; return {{drawn: Number(d.drawn), inView: Number(d.inView), detail: d.detail}}; }}"
        )
        # Complete: every point the view can show is in the picture, none that it can show left out.
        assert last["detail"] == "full" and last["drawn"] == last["inView"], last
        inside = _points_in_view(lod_lab, maps)
        assert last["inView"] >= inside, (last, inside)
        if zoomed_in:
            assert 0 < inside and last["inView"] < LOD_POINTS, (last, inside)  # culled
        else:
            assert last["inView"] == LOD_POINTS == inside, (last, inside)
        subsampled = [f for f in frames if f["detail"] == "subsample"]
        print(
            f"\nwheel {delta:+}: {len(frames)} frames, {len(subsampled)} of a subsample, fewest "
            f"points {min(f['drawn'] for f in frames):,}, then {last['drawn']:,} of {LOD_POINTS:,}"
        )
    screenshot(page, "umap_explorer_lod_zoomed_out")


_JS_LOSE_CONTEXT = f"""() => {{
  const ext = {_JS_CANVAS}.getContext('webgl').getExtension('WEBGL_lose_context');
  window.__imrecLoseContext = ext;
  ext.loseContext();
}}"""


def _drawn_fraction(pixels: np.ndarray) -> float:
    """Share of the pixels that differ from the background (points, faded ones included)."""
    return float((np.abs(pixels - pixels[2, 2]).max(axis=2) > 10).mean())


def test_a_lost_webgl_context_comes_back(sharp_lab):
    page = sharp_lab.page
    before = _canvas_pixels(sharp_lab)
    assert _drawn_fraction(before) > 0.001
    page.evaluate(_JS_LOSE_CONTEXT)
    page.wait_for_function(f"() => {_JS_CANVAS}.dataset.webgl === 'lost'")
    note = page.locator(".imrec-umap-explorer .imrec-map-note")
    assert "WebGL" in note.inner_text()
    frame = page.evaluate(_JS_FRAME)
    page.evaluate("() => window.__imrecLoseContext.restoreContext()")
    page.wait_for_function(f"() => {_JS_CANVAS}.dataset.webgl === '1'")
    sharp_lab.frame_after(frame)
    assert note.is_hidden()
    after = _canvas_pixels(sharp_lab)
    assert np.abs(after - before).mean() < 0.5  # the same picture as before it was lost
    assert sharp_lab.state()["renderer"] == "webgl"


def test_a_context_that_stays_lost_falls_back_to_svg_and_says_so(sharp_lab):
    page = sharp_lab.page
    page.evaluate(_JS_LOSE_CONTEXT)
    state = sharp_lab.state(lambda s: s["renderer"] == "svg")
    assert "WebGL context away" in state["message"] and "drawn as SVG" in state["message"]
    page.wait_for_function(
        "(n) => document.querySelectorAll('.imrec-umap svg.svg-figure path.dot').length >= n",
        arg=2 * OVERLAP_SPOTS,
    )
    screenshot(page, "umap_explorer_context_lost")


# Hides bqplot's webGLCanvas from every script but bqplot's own: a figure without a part the
# layer needs, as an older or newer bqplot would be.
_HIDE_WEBGL_CANVAS = """
Object.defineProperty(Object.prototype, 'webGLCanvas', {
  configurable: true,
  get() { return /bqplot/.test(new Error().stack || '') ? this.__hiddenWebGLCanvas : undefined; },
  set(value) { Object.defineProperty(this, '__hiddenWebGLCanvas', {value, writable: true, configurable: true}); },
});
"""


def test_a_figure_without_the_expected_parts_says_so_and_draws_svg(server, webgl_browser, overlap):
    root, index_dir = overlap
    cells = _cells(
        OVERLAP_CELL.format(root=str(root), index_dir=str(index_dir), rows=2 * OVERLAP_SPOTS),
        "parts_state.json",
    )
    write_notebook(server.root_dir / "parts.ipynb", cells)
    page = new_page(webgl_browser)
    page.add_init_script(_HIDE_WEBGL_CANVAS)
    map_page = MapPage(page, server, "parts_state.json")
    try:
        open_notebook(page, server, "parts.ipynb")
        run_all_cells(page, timeout=240)
        state = map_page.state(lambda s: s["renderer"] == "svg", timeout=120)
        assert "not supported" in state["message"] and "webGLCanvas" in state["message"]
        page.wait_for_function(
            "(n) => document.querySelectorAll('.imrec-umap svg.svg-figure path.dot').length >= n",
            arg=2 * OVERLAP_SPOTS,
        )
        screenshot(page, "umap_explorer_unsupported_figure")
    except BaseException:
        dump_failure(page, server, "umap_explorer_unsupported_figure_FAILED")
        raise
    finally:
        _close(map_page)


# -- a browser reload -------------------------------------------------------------------------------

RELOAD_CELL = """\
import ipywidgets
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import UmapExplorer

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
# New parameters: the map is computed here, with its progress bars in this cell's output.
ex = UmapExplorer(idx, feature="rgb", n_neighbors=6, clusters=3)
"""
# The map in a tab that is not shown: bqplot lays the figure out at zero size.
RELOAD_DISPLAY = 'ipywidgets.Tab([ipywidgets.HTML("first tab"), ex], titles=["first", "map"])'

_JS_DRAWN = f"() => {{ const c = {_JS_CANVAS}; return c && Number(c.dataset.frame) > 0 && Number(c.dataset.points) > 0; }}"


def _page_problems(page) -> list[str]:
    texts = page.locator(f"{NOTEBOOK_PANEL} .jp-OutputArea-output").all_inner_texts()
    shown = [t for t in texts if "Error displaying widget" in t]
    console = [
        e
        for e in collect_console(page).errors
        if "negative value" in e or "model not found" in e.lower() or "imrec" in e.lower()
    ]
    return shown + console


def test_a_reload_shows_the_widgets_and_no_errors(server, webgl_browser, photos):
    folder, index_dir = photos
    write_notebook(
        server.root_dir / "reload.ipynb",
        [RELOAD_CELL.format(root=str(folder), index_dir=str(index_dir)), RELOAD_DISPLAY],
    )
    page = new_page(webgl_browser)
    try:
        open_notebook(page, server, "reload.ipynb")
        run_all_cells(page, timeout=300)
        page.locator(".lm-TabBar-tab", has_text="map").click()
        page.wait_for_function(_JS_DRAWN, timeout=120_000)
        assert _page_problems(page) == []
        page.keyboard.press("Control+s")
        saved = server.root_dir / "reload.ipynb"
        wait_for_file(saved, lambda text: "widget-view+json" in text)
        page.reload()
        page.wait_for_selector(f"{NOTEBOOK_PANEL} .jp-Notebook", timeout=90_000)
        wait_for_kernel_idle(page, server, "reload.ipynb", timeout=90)
        # The saved outputs are shown again, connected to the running kernel's widgets.
        page.locator(".lm-TabBar-tab", has_text="map").click(timeout=60_000)
        page.wait_for_function(_JS_DRAWN, timeout=120_000)
        screenshot(page, "umap_explorer_after_reload")
        assert _page_problems(page) == []
    except BaseException:
        dump_failure(page, server, "umap_explorer_reload_FAILED")
        raise
    finally:
        page.context.close()
