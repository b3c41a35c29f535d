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
    WEBGL_CHROMIUM_ARGS,
    app_errors,
    chromium,
    dump_failure,
    new_page,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.mapdata import MapPoints
from imrec_widgets.samples import write_sample_photos
from imrec_widgets.synthetic import write_map_index

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


def _open(server, browser, name: str, cells: list[str], state: str, points: int) -> MapPage:
    write_notebook(server.root_dir / f"{name}.ipynb", cells)
    page = new_page(browser)
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


def _luminance(css: str) -> float:
    r, g, b = (float(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    channel = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * channel[0] + 0.7152 * channel[1] + 0.0722 * channel[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


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
        contrasts[theme] = _contrast(colours["ring"], colours["background"])
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
