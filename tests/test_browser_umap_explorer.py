"""UmapExplorer in a real JupyterLab + headless Chromium: lasso, brush, click, and 50,000 points.

bqplot draws the map as SVG; the tests move the mouse over it as a user would and read the
Python-side state from JSON files the notebook writes on every change.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from browser import (
    ARTIFACTS_DIR,
    DUMP_JSON_HELPER,
    console_errors,
    dump_failure,
    new_page,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)

from imrec_widgets import ImageIndex
from imrec_widgets import projection as projection_module
from imrec_widgets.catalog import Catalog, Entry
from imrec_widgets.index import DEFAULT_SETTINGS
from imrec_widgets.samples import write_sample_photos
from imrec_widgets.store import FeatureStore
from imrec_widgets.widgets.umap_explorer import _CLUSTER_COLORS

pytestmark = pytest.mark.browser

FEATURES = ["rgb", "dhash", "thumb"]
PHOTOS = 18
K = 5
STATE = "umap_state.json"
BIG_STATE = "umap_big_state.json"
BIG_POINTS = 50_000
BIG_THUMB = 16
LASSO_MOVES = 8

WIDGET_CELL = """\
import ipywidgets
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import SearchWidget, UmapExplorer

idx = ImageIndex.open({photos!r}, index_dir={index_dir!r})
sw = SearchWidget(idx, mode="rgb", k={k})
ex = UmapExplorer(idx, feature="rgb").link(sw)
"""

# Python-side state, written whenever the selection, the brush or the search results change.
STATE_CELL = """\
_seq = 0

def _dump(change=None):
    global _seq
    _seq += 1
    brush = ex.brush
    dump_json({state!r}, {{
        "seq": _seq,
        "ids": [int(i) for i in ex._ids],
        "selected": ex.selected,
        "thumbs": ex.gallery.value.count('class="imrec-umap-thumb"'),
        "scope": sw.scope,
        "brush_x": None if brush.selected_x is None else [float(v) for v in brush.selected_x],
        "brush_y": None if brush.selected_y is None else [float(v) for v in brush.selected_y],
        "brushing": bool(brush.brushing),
        "results": [hit["id"] for hit in sw.results],
        "query": sw.query if isinstance(sw.query, int) else None,
    }})

ex.observe(_dump, names=["selected"])
ex.brush.observe(_dump, names=["selected_x", "selected_y", "brushing"])
sw.observe(_dump, names=["results", "scope"])
_dump()
"""

DISPLAY_CELL = "ipywidgets.VBox([sw, ex])"

BIG_CELL = """\
import time
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import UmapExplorer

_started = time.time()
idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
ex = UmapExplorer(idx, feature="rgb", compute=False)
dump_json("big_python.json", {{"started": _started, "ended": time.time(), "points": len(ex._ids)}})
ex
"""

BIG_STATE_CELL = """\
def _dump_big(change=None):
    dump_json({state!r}, {{"at": time.time(), "selected": len(ex.selected),
                           "first": ex.selected[:5], "thumbs": ex.gallery.value.count('imrec-umap-thumb')}})

ex.observe(_dump_big, names=["selected"])
_dump_big()
"""

# The main Scatter is the figure's first mark; bqplot draws one <path class="dot"> per point.
_JS_MARK = "document.querySelectorAll('.imrec-umap svg.svg-figure g[clip-path]')[{n}]"
_JS_DOT_COUNT = (
    "(n) => { const m = "
    + _JS_MARK.replace("{n}", "n")
    + "; return m ? m.querySelectorAll('path.dot').length : -1; }"
)
_JS_DOT_CENTRES = """() => Array.from(
  document.querySelectorAll('.imrec-umap svg.svg-figure g[clip-path]')[0].querySelectorAll('path.dot'),
  (dot) => { const r = dot.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })"""
# Which selector the figure shows: "click" has none, so the points themselves get the clicks.
_JS_SELECTOR_READY = """(tool) => {
  const svg = document.querySelector('.imrec-umap svg.svg-figure');
  const lasso = svg.querySelector('.lassoselector'), brush = svg.querySelector('.brushintsel');
  const active = Array.from(document.querySelectorAll('.imrec-umap-tool button.mod-active'));
  if (active.length !== 1 || active[0].textContent.trim() !== tool) return false;
  if (tool === 'lasso') return Boolean(lasso) && !brush;
  if (tool === 'brush') return Boolean(brush) && !lasso;
  return !lasso && !brush;
}"""
_JS_HIT_TEST = """([x, y]) => {
  const el = document.elementFromPoint(x, y);
  const mark = document.querySelectorAll('.imrec-umap svg.svg-figure g[clip-path]')[0];
  return Boolean(el && el.matches('path.dot') && mark.contains(el));
}"""
_JS_SELECTOR_SHAPES = """Array.from(
  document.querySelectorAll('.imrec-umap .lassoselector path, .imrec-umap .brushintsel rect.selection'))
  .filter((el) => el.getAttribute('d') || Number(el.getAttribute('width')) > 0).length"""
_JS_THUMBS_DECODED = """(n) => {
  const imgs = document.querySelectorAll('.imrec-umap-gallery img.imrec-umap-thumb');
  return imgs.length === n && Array.from(imgs).every((img) => img.complete && img.naturalWidth > 0);
}"""


# -- indexes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """The sample photos, their prebuilt index and its rgb map (so the kernel starts fast)."""
    base = tmp_path_factory.mktemp("umap-browser")
    folder = base / "photos"
    write_sample_photos(folder)
    index = ImageIndex.open(folder, index_dir=base / "index", features=FEATURES)
    index.update(progress=False, workers=0)
    assert len(index) == PHOTOS
    index.umap("rgb", clusters=4)
    index.close()
    return folder, base / "index"


def build_big_index(index_dir: Path, rows: int = BIG_POINTS, seed: int = 0) -> None:
    """A synthetic index of ``rows`` images with a cached rgb map, written without any images.

    Catalog rows and store arrays are written as ``benchmarks/bench_query.py`` does; the map is
    five gaussian blobs with their cluster labels (thumbnails: the blob's colour), and the
    catalog's ``projection/rgb`` entry is newer than every row, so the map counts as fresh.
    """
    rng = np.random.default_rng(seed)
    catalog = Catalog(index_dir / "catalog.sqlite")
    store = FeatureStore(index_dir / "features.zarr")
    bins = DEFAULT_SETTINGS["bins"]
    catalog.set_meta(
        "settings", dict(DEFAULT_SETTINGS, features=["rgb", "thumb"], thumb_size=BIG_THUMB)
    )
    store.ensure("rgb", (3 * bins,), "float32")
    store.ensure("thumb", (BIG_THUMB, BIG_THUMB, 3), "uint8")
    store.ensure("umap/rgb", (2,), "float32", fill_value=np.nan)
    store.ensure("cluster/rgb", (), "int32", fill_value=-1)
    ids = np.arange(rows)
    labels = (ids % 5).astype(np.int32)
    centres = rng.uniform(-10, 10, (5, 2))
    palette = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in _CLUSTER_COLORS[:5]], dtype=np.uint8
    )
    store.write_rows("rgb", ids, rng.random((rows, 3 * bins), dtype=np.float32))
    store.write_rows(
        "thumb",
        ids,
        np.broadcast_to(palette[labels][:, None, None], (rows, BIG_THUMB, BIG_THUMB, 3)),
    )
    store.write_rows(
        "umap/rgb", ids, (centres[labels] + rng.normal(0, 1.5, (rows, 2))).astype(np.float32)
    )
    store.write_rows("cluster/rgb", ids, labels)
    catalog.commit_entries(
        Entry(int(i), f"synthetic/{i:06d}.jpg", 1, 1, BIG_THUMB, BIG_THUMB, "JPEG") for i in ids
    )
    params = {
        "n_neighbors": 15,
        "min_dist": 0.1,
        "pca_dims": 50,
        "sample_size": 20_000,
        "random_state": 42,
    }
    catalog.set_meta(
        "projection/rgb",
        {
            "params": params,
            "clusters": {"clusters": 5, "min_cluster_size": None},
            "updated_at": time.time(),
            "fitted": rows,
        },
    )
    catalog.close()


@pytest.fixture(scope="module")
def big_index(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("umap-big")
    (base / "root").mkdir()
    build_big_index(base / "index")
    index = ImageIndex.open(base / "root", index_dir=base / "index")
    assert len(index) == BIG_POINTS
    assert projection_module.status(index, "rgb") == {"state": "fresh", "pending": 0}
    index.close()
    return base / "root", base / "index"


# -- browser -----------------------------------------------------------------------------------


class Lab:
    """An open notebook with an explorer: its page and the Python-side state."""

    def __init__(self, page, server, state: str) -> None:
        self.page = page
        self.server = server
        self.state_path = server.root_dir / state

    def state(self, predicate=None, timeout: float = 30.0):
        return wait_for_file(self.state_path, predicate, timeout=timeout)

    def plot_box(self) -> dict[str, float]:
        """The bounding box of the figure's SVG, scrolled into view."""
        figure = self.page.locator(".imrec-umap").first
        figure.scroll_into_view_if_needed()
        box = figure.locator("svg.svg-figure").bounding_box()
        assert box and box["width"] > 400 and box["height"] > 400, box
        return box

    def tool(self, name: str) -> None:
        """Pick a tool; wait until the figure has swapped its selector (a round trip to Python)."""
        assert name in ("lasso", "brush", "click"), name
        self.page.locator(".imrec-umap-tool button", has_text=name).click()
        self.page.wait_for_function(_JS_SELECTOR_READY, arg=name)

    def wait_clickable(self, point: np.ndarray) -> None:
        """Wait until a click at ``point`` lands on one of the map's points."""
        self.page.wait_for_function(_JS_HIT_TEST, arg=point.tolist(), timeout=10_000)

    def drag(self, points: list[tuple[float, float]], steps: int = 5) -> tuple[float, float]:
        """Press at the first point, move through the others, release.

        Returns the times (``time.time()``) of the press and of the release.
        """
        mouse = self.page.mouse
        mouse.move(*points[0])
        pressed = time.time()
        mouse.down()
        for x, y in points[1:]:
            mouse.move(x, y, steps=steps)
        released = time.time()
        mouse.up()
        return pressed, released

    def dot_centres(self) -> np.ndarray:
        """Screen centres of the points, after scrolling the map into view (the page above it
        grows when search results arrive)."""
        self.plot_box()
        return np.array(self.page.evaluate(_JS_DOT_CENTRES))

    def clear(self) -> None:
        self.page.locator(".imrec-umap-explorer button", has_text="clear").click()
        self.state(lambda s: s["selected"] == [])
        self.page.wait_for_function(_JS_THUMBS_DECODED, arg=0)
        # the lasso outlines and the brush rectangle go too
        self.page.wait_for_function(_JS_SELECTOR_SHAPES + " === 0")

    def dots(self, mark: int = 0) -> int:
        return self.page.evaluate(_JS_DOT_COUNT, mark)


def _split(values: np.ndarray, fraction: float) -> float:
    """A coordinate in the widest gap between neighbouring values near ``fraction`` of the way
    through them (two points 1.5 px apart put an edge 0.75 px from each)."""
    ordered = np.sort(values)
    n = int(np.clip(round(fraction * len(ordered)), 1, len(ordered) - 1))
    near = range(max(1, n - 2), min(len(ordered) - 1, n + 2) + 1)
    widest = max(near, key=lambda i: ordered[i] - ordered[i - 1])
    return float(ordered[widest - 1] + ordered[widest]) / 2


def _rectangle(
    lab: Lab, centres: np.ndarray, fx: float, fy: float
) -> tuple[float, float, float, float]:
    """From the plot's top-left inner corner to a corner between points (no point near an edge)."""
    box = lab.plot_box()
    left, top = box["x"] + 15, box["y"] + 15
    return left, top, _split(centres[:, 0], fx), _split(centres[:, 1], fy)


def _inside(centres: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    left, top, right, bottom = rect
    x, y = centres[:, 0], centres[:, 1]
    return np.flatnonzero((x > left) & (x < right) & (y > top) & (y < bottom))


@pytest.fixture(scope="module")
def lab(server, browser, photos):
    folder, index_dir = photos
    cells = [
        DUMP_JSON_HELPER,
        WIDGET_CELL.format(photos=str(folder), index_dir=str(index_dir), k=K),
        STATE_CELL.format(state=STATE),
        DISPLAY_CELL,
    ]
    write_notebook(server.root_dir / "umap.ipynb", cells)
    page = new_page(browser)
    t0 = time.monotonic()
    try:
        open_notebook(page, server, "umap.ipynb")
        run_all_cells(page)
        page.wait_for_function(f"() => ({_JS_DOT_COUNT})(0) === {PHOTOS}", timeout=30_000)
        page.wait_for_function(_JS_SELECTOR_READY, arg="lasso")
    except BaseException:
        dump_failure(page, server, "umap_explorer_open_FAILED")
        raise
    print(f"\numap explorer browser: notebook open + run {time.monotonic() - t0:.1f}s")
    lab = Lab(page, server, STATE)
    state = lab.state(lambda s: len(s["ids"]) == PHOTOS)
    assert state["selected"] == [] and state["results"] == []
    yield lab
    errors = [e for e in console_errors(page) if "pageerror" in e or "imrec" in e.lower()]
    page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


def test_lasso_selects_points_and_fills_the_gallery(step):
    lab = step
    page = lab.page
    ids = lab.state()["ids"]
    box = lab.plot_box()
    x0, y0, w, h = box["x"] + 15, box["y"] + 15, box["width"] - 30, box["height"] - 30
    # a closed polygon just inside the plot area: every point is inside it
    outline = [
        (x0, y0),
        (x0 + w / 2, y0 + 3),
        (x0 + w, y0),
        (x0 + w, y0 + h),
        (x0, y0 + h),
        (x0, y0 + 2),
    ]
    lab.drag(outline)
    state = lab.state(lambda s: len(s["selected"]) == PHOTOS)
    assert state["selected"] == sorted(ids) and state["thumbs"] == PHOTOS
    page.wait_for_function(_JS_THUMBS_DECODED, arg=PHOTOS)
    assert (
        page.locator(".imrec-umap-count").inner_text().strip() == f"{PHOTOS} of {PHOTOS} selected"
    )

    # after "clear", a smaller lasso: exactly the points drawn inside it
    lab.clear()
    centres = lab.dot_centres()
    rect = _rectangle(lab, centres, 0.5, 0.6)
    left, top, right, bottom = rect
    inside = _inside(centres, rect)
    assert 0 < inside.size < PHOTOS
    lab.drag([(left, top), (right, top), (right, bottom), (left, bottom), (left, top + 2)])
    expected = sorted(ids[p] for p in inside)
    state = lab.state(lambda s: s["selected"] == expected)
    assert state["thumbs"] == len(expected)
    page.wait_for_function(_JS_THUMBS_DECODED, arg=len(expected))
    titles = page.locator(".imrec-umap-thumb").evaluate_all("(imgs) => imgs.map((i) => i.title)")
    assert len(titles) == len(expected) and all(t.endswith(".jpg") for t in titles)


def test_brush_selects_the_rectangle(step):
    lab = step
    page = lab.page
    ids = lab.state()["ids"]
    lab.tool("brush")
    centres = lab.dot_centres()
    rect = _rectangle(lab, centres, 0.4, 0.7)
    left, top, right, bottom = rect
    expected = sorted(ids[p] for p in _inside(centres, rect))
    assert 0 < len(expected) < PHOTOS
    assert page.evaluate(_JS_SELECTOR_SHAPES) == 0
    before = lab.state()["seq"]
    lab.drag([(left, top), ((left + right) / 2, (top + bottom) / 2), (right, bottom)])
    state = lab.state(
        lambda s: s["seq"] > before and s["brush_x"] is not None and s["selected"] == expected
    )
    time.sleep(0.5)  # let any late brush message arrive
    state = lab.state()
    print(
        f"\nbrush: selected_x={state['brush_x']} selected_y={state['brush_y']} "
        f"brushing={state['brushing']} -> {len(state['selected'])} selected"
    )
    assert state["selected"] == expected and state["thumbs"] == len(expected)
    page.wait_for_function(_JS_THUMBS_DECODED, arg=len(expected))
    assert (
        page.locator(".imrec-umap-count").inner_text().strip()
        == f"{len(expected)} of {PHOTOS} selected"
    )

    lab.clear()
    assert "Lasso or brush" in page.locator(".imrec-umap-gallery").inner_text()
    assert lab.state()["brush_x"] is None
    lab.tool("lasso")


def test_clicking_a_point_searches_from_it(step):
    lab = step
    page = lab.page
    ids = lab.state()["ids"]
    lab.tool("click")
    centres = lab.dot_centres()
    position = int(np.argmin(np.abs(centres[:, 0] - np.median(centres[:, 0]))))
    lab.wait_clickable(centres[position])
    page.mouse.click(*centres[position])
    clicked = ids[position]
    state = lab.state(lambda s: s["query"] == clicked and len(s["results"]) == K)
    assert clicked not in state["results"] and state["selected"] == []  # a click does not select
    page.wait_for_function(
        "(n) => document.querySelectorAll('.imrec-search .imrec-result').length === n", arg=K
    )
    page.wait_for_function(f"() => ({_JS_DOT_COUNT})(1) === {K} && ({_JS_DOT_COUNT})(2) === 1")

    # search only inside a lasso selection: a click keeps the selection, results stay inside
    lab.tool("lasso")
    centres = lab.dot_centres()
    rect = _rectangle(lab, centres, 0.7, 0.7)
    left, top, right, bottom = rect
    inside = [int(p) for p in _inside(centres, rect) if p != position]
    assert len(inside) >= 3
    lab.drag([(left, top), (right, top), (right, bottom), (left, bottom), (left, top + 2)])
    selection = sorted(ids[p] for p in _inside(centres, rect))
    lab.state(lambda s: s["selected"] == selection)
    page.locator(".imrec-umap-explorer .widget-checkbox input").check()
    lab.state(lambda s: s["scope"] == selection and set(s["results"]) <= set(selection))
    lab.tool("click")
    centres = lab.dot_centres()
    # the point farthest from the query's cross, which covers the point clicked first
    target = max(inside, key=lambda p: float(np.linalg.norm(centres[p] - centres[position])))
    lab.wait_clickable(centres[target])
    page.mouse.click(*centres[target])
    state = lab.state(lambda s: s["query"] == ids[target])
    assert state["selected"] == selection and state["scope"] == selection
    assert state["results"] and set(state["results"]) <= set(selection) - {ids[target]}
    assert len(state["results"]) == min(K, len(selection) - 1)
    page.wait_for_function(
        "(n) => document.querySelectorAll('.imrec-search .imrec-result').length === n",
        arg=len(state["results"]),
    )
    page.wait_for_function(_JS_THUMBS_DECODED, arg=len(selection))
    lab.plot_box()
    assert screenshot(lab.page, "umap_explorer").exists()
    page.locator(".imrec-umap-explorer").screenshot(
        path=str(ARTIFACTS_DIR / "umap_explorer_element.png")
    )
    page.locator(".imrec-umap-explorer .widget-checkbox input").uncheck()
    lab.state(lambda s: s["scope"] is None)
    lab.tool("lasso")


def test_fifty_thousand_points_render_and_select(server, browser, big_index):
    root, index_dir = big_index
    cells = [
        DUMP_JSON_HELPER,
        BIG_CELL.format(root=str(root), index_dir=str(index_dir)),
        BIG_STATE_CELL.format(state=BIG_STATE),
    ]
    write_notebook(server.root_dir / "big.ipynb", cells)
    page = new_page(browser)
    lab = Lab(page, server, BIG_STATE)
    try:
        open_notebook(page, server, "big.ipynb")
        started = time.time()
        run_all_cells(page, timeout=240)
        kernel = wait_for_file(server.root_dir / "big_python.json")
        page.wait_for_function(
            f"() => ({_JS_DOT_COUNT})(0) >= {BIG_POINTS}", timeout=240_000, polling=250
        )
        drawn_at = time.time()
        assert lab.dots(0) == BIG_POINTS and kernel["points"] == BIG_POINTS
        assert lab.state()["selected"] == 0

        box = lab.plot_box()
        x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
        cx, cy = x0 + w / 2, y0 + h / 2
        # few mouse moves: with 50,000 SVG points each one costs the browser a lot (reported)
        outline = [
            (cx + w * 0.3 * np.cos(a), cy + h * 0.3 * np.sin(a))
            for a in np.linspace(0, 2 * np.pi, LASSO_MOVES + 1)
        ]
        pressed, released = lab.drag(outline, steps=1)
        state = lab.state(lambda s: s["selected"] > 0, timeout=120)
        selected_at = state["at"]
        assert 0 < state["selected"] < BIG_POINTS and state["thumbs"] == 40
        page.wait_for_function(_JS_THUMBS_DECODED, arg=40, timeout=60_000)
        count = page.locator(".imrec-umap-count").inner_text().strip()
        assert count == f"{state['selected']:,} of {BIG_POINTS:,} selected"
        lab.plot_box()
        screenshot(page, "umap_explorer_50k")
    except BaseException:
        dump_failure(page, server, "umap_explorer_50k_FAILED")
        raise
    finally:
        errors = [e for e in console_errors(page) if "pageerror" in e or "imrec" in e.lower()]
        page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)
    timings = {
        "points": BIG_POINTS,
        "run_to_points_drawn_s": round(drawn_at - started, 2),
        "python_explorer_creation_s": round(kernel["ended"] - kernel["started"], 2),
        "lasso_gesture_s": round(released - pressed, 2),
        "lasso_mouse_moves": LASSO_MOVES,
        "lasso_seconds_per_mouse_move": round((released - pressed) / LASSO_MOVES, 2),
        "lasso_release_to_python_selected_s": round(selected_at - released, 2),
        "selected": state["selected"],
    }
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS_DIR / "umap_explorer_50k_timings.json").write_text(
        json.dumps(timings, indent=2) + "\n"
    )
    print(f"\n50k-point UmapExplorer: {json.dumps(timings)}")
