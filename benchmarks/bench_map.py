"""The map at the scale of a real collection: UmapExplorer against jupyter-scatter, and UMAP fit time.

    python benchmarks/bench_map.py                                  # 50k, 200k, 1M points; fits of 10k, 100k
    python benchmarks/bench_map.py --sizes 20000 --repeats 1 --skip-fit

For each N the same synthetic map (``synthetic.write_map_index``: 5 gaussian blobs, a cached rgb
map) is shown by our ``UmapExplorer`` and by jupyter-scatter (the same coordinates, the clusters
as a categorical colour), each in its own notebook page of one JupyterLab, side by side in one
headless Chromium with software WebGL; each page and its kernel are closed before the next.
Measured, the same way for both. Every WebGL draw call in the page is counted, and after each
animation frame that drew, a one-pixel ``readPixels`` waits until the GPU has finished it (a
fence): a "fenced frame" is one whose points were in the drawing buffer at the time recorded.
  cell run -> drawn        from the first line of the cell that opens the index and makes the
                           widget (packages imported in an earlier cell) to the first fenced frame
                           that drew all N points (a canvas screenshot then checks they show).
                           Ours also: to its canvas saying ``data-points`` == N, which is only
                           the data arriving, not drawn
  widget made in Python    the same cell's first line -> the widget object exists
  pointerup -> Python      a lasso of ~30 vertices drawn with the mouse (the same screen polygon
                           around each plot's centre), released: from the page's ``pointerup``
                           (``Date.now()``) to the kernel's observer of ``ex.selected`` /
                           ``widget.selection`` (``time.time()``, the same clock). The first lasso
                           (ours sorts the points by y once then) is reported apart
  per mouse move           median over the lasso's moves of: ``page.mouse.move`` issued -> the
                           next requestAnimationFrame callback in the page. Each repeat draws a
                           lasso on a clean map, then one while that selection is shown, then
                           clears (our "clear" button, jupyter-scatter's Escape): both figures are
                           reported for both widgets
  wheel zoom               bursts of WHEEL_EVENTS wheel events (50 ms apart, in then out) over the
                           plot's centre: each event -> the first fenced frame after it (the view
                           repainted); the burst's last event -> full detail: jupyter-scatter's
                           first fenced frame of all N points, ours the first frame whose canvas
                           says detail "full" with every point of the grid cells the view touches
                           drawn (it adds them over the moving frames' subsample and leaves out
                           points no pixel of the view can show), zooming in and back out to the
                           whole map apart; the fewest points any frame of a burst showed
  kernel memory            the kernel's resident memory once the map is shown, and after the lassos
Then, unless --skip-fit, ``projection.compute(index, "rgb")`` (default parameters: fit on a
20,000 sample, place the rest, cluster) on real pixels: Fashion-MNIST from Debian's
dataset-fashion-mnist package (784-d, /255), tiled with gaussian noise past its 70,000 images;
scikit-learn's digits when that package is missing. The first fit in the process is "cold" (numba
compiles, or loads what ``projection`` cached on disk); the first size is fitted again at the
end, "warm". Stages (read, PCA, UMAP fit, place, cluster) come from compute's ``progress``.

Ratios are ours / jupyter-scatter: below 1 is faster. Times depend on the machine and its load;
nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import platform
import shutil
import statistics
import struct
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imrec_widgets.synthetic import write_feature_index, write_map_index

from _browser import (
    DUMP_JSON_HELPER,
    NOTEBOOK_PANEL,
    WEBGL_CHROMIUM_ARGS,
    JupyterLabServer,
    cell_errors,
    chromium,
    dump_failure,
    new_page,
    open_notebook,
    run_command_via_menu,
    wait_for_file,
    wait_for_kernel_idle,
    write_notebook,
)

REPO = Path(__file__).resolve().parents[1]
WIDGETS = ("ours", "jscatter")
VIEWPORT = {"width": 1400, "height": 1200}
PLOT_WIDTH, PLOT_HEIGHT = 560, 520
LASSO_VERTICES = 30
LASSO_RADIUS_PX = (0.25 * 500, 0.42 * 500)  # vertex distances from the plot's centre, fixed pixels
WHEEL_DELTA = -300
WHEEL_EVENTS = 5  # per burst, WHEEL_INTERVAL_S apart, as a quick flick of a mouse wheel gives
WHEEL_INTERVAL_S = 0.05
COLOURED_MIN_SPREAD = 40  # a pixel whose channels differ by more than this is not grey
COLOURED_MIN_FRACTION = 0.005  # of the canvas' pixels, for "the points are drawn"
DRAW_TIMEOUT_S = 900.0
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FIT_NOISE = 0.02  # std of the gaussian noise on the tiled copies, pixel values in [0, 1]

# What the issue asks of the map. Absolute goals hold at 1M points; the ratio at every N.
GOAL_POINTS = 1_000_000
GOAL_RATIO = 1.5
GOALS = {
    "drawn_s": 10.0,
    "selection_s": 1.0,
    "move_ms": 100.0,
    "zoom_ms": 300.0,  # wheel -> a repainted view (issue #26)
    "zoom_full_ms": 1500.0,  # the last wheel event -> every point drawn again
}

OUR_CANVAS = ".imrec-umap-explorer canvas.imrec-map-points"
OUR_OVERLAY = ".imrec-umap-explorer .imrec-map-overlay"
THEIR_CANVAS = "canvas[data-bench-target]"

# -- the notebooks -------------------------------------------------------------------------------

SETUP_CELLS = {
    # The widget packages are imported before the timed cell, for both.
    "ours": "import time\nimport bqplot\nfrom imrec_widgets import ImageIndex\nfrom imrec_widgets.widgets import UmapExplorer",
    "jscatter": "import time\nimport jscatter\nimport pandas as pd\nfrom imrec_widgets import ImageIndex",
}

MAP_CELLS = {
    "ours": """\
_t0 = time.time()
idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
ex = UmapExplorer(idx, feature="rgb", compute=False)
_created = time.time()
_seq = 0

def _dump(change=None):
    global _seq
    _seq += 1
    dump_json({state!r}, {{"seq": _seq, "at": time.time(), "n": len(ex.selected), "t0": _t0,
                          "created": _created, "points": len(ex.points)}})

ex.observe(_dump, names=["selected"])
_dump()
ex""",
    "jscatter": """\
_t0 = time.time()
idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
_proj = idx.projection("rgb")
df = pd.DataFrame({{"x": _proj.xy[:, 0], "y": _proj.xy[:, 1], "c": pd.Categorical(_proj.clusters)}})
sc = jscatter.Scatter(data=df, x="x", y="y", color_by="c", width={width}, height={height},
                      mouse_mode="lasso")
_created = time.time()
_seq = 0

def _dump(change=None):
    global _seq
    _seq += 1
    _sel = sc.widget.selection
    dump_json({state!r}, {{"seq": _seq, "at": time.time(), "n": 0 if _sel is None else len(_sel),
                          "t0": _t0, "created": _created, "points": len(df)}})

sc.widget.observe(_dump, names=["selection"])
_dump()
sc.show()""",
}
JSCATTER_GESTURE = (
    'a plain drag: Scatter(..., mouse_mode="lasso"), the toolbar\'s lasso button (by default a '
    "drag pans and a lasso needs shift+drag or a long press)"
)
OUR_GESTURE = 'a plain drag on the map (the default tool, "lasso")'

# -- in the page -----------------------------------------------------------------------------------

# Installed before JupyterLab loads. Times are page epoch milliseconds (timeOrigin + now).
# Every WebGL draw call is counted; after each animation-frame callback (and at the end of any
# task that drew outside one) a one-pixel readPixels on each context that drew waits until the
# GPU has finished: ``glFrames`` then holds when each frame's points were really in the drawing
# buffer and how many vertices it drew, the same way for both widgets.
INIT_SCRIPT = """(() => {
  if (window.__bench) return;
  const epoch = () => performance.timeOrigin + performance.now();
  const bench = window.__bench = {armed: false, moves: [], wheels: [], frames: [], pointsAt: {},
                                  glFrames: [], pointerUp: 0};
  const dirty = new Map();
  const pixel = new Uint8Array(4);
  let fenceQueued = false;
  const fence = () => {
    fenceQueued = false;
    for (const [gl, vertices] of dirty) {
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
      bench.glFrames.push({at: epoch(), vertices});
    }
    dirty.clear();
  };
  const count = (gl, vertices) => {
    dirty.set(gl, (dirty.get(gl) || 0) + vertices);
    if (!fenceQueued) { fenceQueued = true; setTimeout(fence, 0); }
  };
  for (const Context of [window.WebGLRenderingContext, window.WebGL2RenderingContext]) {
    if (!Context) continue;
    const proto = Context.prototype;
    for (const [name, counted] of [["drawArrays", (a) => a[2]], ["drawElements", (a) => a[1]],
                                   ["drawArraysInstanced", (a) => a[2] * a[3]],
                                   ["drawElementsInstanced", (a) => a[1] * a[4]]]) {
      const original = proto[name];
      if (!original) continue;
      proto[name] = function (...args) { count(this, counted(args)); return original.apply(this, args); };
    }
  }
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) => raf((time) => { try { callback(time); } finally { if (dirty.size) fence(); } });
  const afterFrames = (entry) => requestAnimationFrame(() => {
    entry.raf1 = epoch();
    requestAnimationFrame(() => { entry.raf2 = epoch(); });
  });
  const record = (list) => (event) => {
    if (!bench.armed) return;
    const entry = {event: performance.timeOrigin + event.timeStamp, handled: epoch(), raf1: 0, raf2: 0};
    list().push(entry);
    afterFrames(entry);
  };
  window.addEventListener("pointermove", record(() => bench.moves), {capture: true, passive: true});
  window.addEventListener("wheel", record(() => bench.wheels), {capture: true, passive: true});
  // The wall clock (as the kernel's time.time()) when the page saw the mouse button go up.
  window.addEventListener("pointerup", () => { bench.pointerUp = Date.now(); }, {capture: true, passive: true});
  bench.waitFor = (probe, ms) => new Promise((resolve) => {
    const deadline = performance.now() + ms;
    const poll = () => {
      const value = probe();
      if (value || performance.now() > deadline) resolve(value || null);
      else setTimeout(poll, 5);
    };
    poll();
  });
  // Our map's canvas counts its WebGL frames in data-frame and says how many points it has.
  const watch = () => new MutationObserver((mutations) => {
    const at = epoch();
    for (const m of mutations) {
      const node = m.target;
      if (!node.classList || !node.classList.contains("imrec-map-points")) continue;
      if (m.attributeName === "data-frame") {
        const d = node.dataset;
        bench.frames.push({frame: Number(d.frame), at, detail: d.detail, drawn: Number(d.drawn), inView: Number(d.inView)});
      }
      const points = node.dataset.points;
      if (m.attributeName === "data-points" && points && !(points in bench.pointsAt)) bench.pointsAt[points] = at;
    }
  }).observe(document.documentElement, {subtree: true, attributes: true, attributeFilter: ["data-frame", "data-points"]});
  if (document.documentElement) watch(); else document.addEventListener("DOMContentLoaded", watch);
})()"""

# Marks jupyter-scatter's plot canvas (the largest canvas in an output) so it can be selected.
MARK_THEIR_CANVAS = """() => {
  let best = null, area = 0;
  for (const c of document.querySelectorAll('.jp-OutputArea-output canvas')) {
    const r = c.getBoundingClientRect();
    if (r.width * r.height > area) { best = c; area = r.width * r.height; }
  }
  if (!best || area < 300 * 300) return false;
  best.dataset.benchTarget = "1";
  return true;
}"""

TWO_FRAMES = (
    "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"
)
PAGE_EPOCH = "() => performance.timeOrigin + performance.now()"


# -- helpers -------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def page_clock_offset(page: Any) -> float:
    """Seconds to subtract from a page epoch time to get this process' ``time.time()``."""
    best: tuple[float, float] | None = None
    for _ in range(7):
        before = time.time()
        page_ms = page.evaluate(PAGE_EPOCH)
        after = time.time()
        if best is None or after - before < best[0]:
            best = (after - before, page_ms / 1000 - (before + after) / 2)
    assert best is not None
    return best[1]


def coloured_pixels(png: bytes) -> tuple[int, int]:
    """Pixels that are not grey (nor white, nor black) in a screenshot, and all its pixels."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return int((spread > COLOURED_MIN_SPREAD).sum()), int(spread.size)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def lasso_polygon(centre: tuple[float, float], repeat: int) -> list[tuple[float, float]]:
    """A star-shaped lasso of LASSO_VERTICES vertices around ``centre``, in screen pixels."""
    rng = np.random.default_rng(1000 + repeat)
    angles = np.linspace(0, 2 * np.pi, LASSO_VERTICES, endpoint=False)
    radii = rng.uniform(*LASSO_RADIUS_PX, angles.size)
    return [
        (centre[0] + r * np.cos(a), centre[1] + r * np.sin(a))
        for a, r in zip(angles, radii, strict=True)
    ]


# -- one widget in one page ---------------------------------------------------------------------------


class MapSession:
    """One notebook page showing one widget (``kind`` "ours" or "jscatter") of ``points`` points."""

    def __init__(
        self,
        server: JupyterLabServer,
        browser: Any,
        kind: str,
        points: int,
        root: Path,
        index_dir: Path,
    ) -> None:
        self.server = server
        self.kind = kind
        self.points = points
        self.name = f"bench_map_{kind}_{points}"
        self.state_path = server.root_dir / f"{self.name}_state.json"
        self.state_path.unlink(missing_ok=True)
        cells = [
            DUMP_JSON_HELPER,
            SETUP_CELLS[kind],
            MAP_CELLS[kind].format(
                root=str(root),
                index_dir=str(index_dir),
                state=self.state_path.name,
                width=PLOT_WIDTH,
                height=PLOT_HEIGHT,
            ),
        ]
        write_notebook(server.root_dir / f"{self.name}.ipynb", cells)
        self.page = new_page(browser, viewport=VIEWPORT)
        self.page.add_init_script(INIT_SCRIPT)
        self.canvas = OUR_CANVAS if kind == "ours" else THEIR_CANVAS
        self.target = OUR_OVERLAY if kind == "ours" else THEIR_CANVAS

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.page.context.close()
        self.server.shutdown_kernels()

    def state(self, predicate: Callable[[Any], bool] | None = None, timeout: float = 120.0) -> dict:
        return wait_for_file(self.state_path, predicate, timeout=timeout)

    def settle(self) -> None:
        self.page.evaluate(TWO_FRAMES)

    def box(self) -> dict[str, float]:
        """The plot area that gestures aim at, in page pixels, scrolled into view."""
        self.page.locator(self.target).first.scroll_into_view_if_needed()
        box = self.page.locator(self.target).first.bounding_box()
        if not box or box["width"] < 300 or box["height"] < 300:
            raise RuntimeError(f"{self.kind}: the plot area is not where expected: {box}")
        if box["y"] < 0 or box["y"] + box["height"] > VIEWPORT["height"]:
            raise RuntimeError(f"{self.kind}: the plot area does not fit the viewport: {box}")
        return box

    def centre(self) -> tuple[float, float]:
        box = self.box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # -- 1. cell run -> drawn ---------------------------------------------------------------------

    def gl_frames(self, since: int = 0) -> list[dict[str, float]]:
        """The page's fenced WebGL frames from number ``since`` on (``at`` in this clock, s)."""
        offset = page_clock_offset(self.page)
        frames = self.page.evaluate("(i) => window.__bench.glFrames.slice(i)", since)
        return [{"at": f["at"] / 1000 - offset, "vertices": f["vertices"]} for f in frames]

    def wait_gl_frame(self, since: int, vertices: int, timeout: float) -> dict[str, float]:
        """The first fenced frame from number ``since`` on that drew at least ``vertices``."""
        found = self.page.evaluate(
            "([i, n, ms]) => window.__bench.waitFor(() => window.__bench.glFrames.slice(i).find((f) => f.vertices >= n), ms)",
            [since, vertices, timeout * 1000],
        )
        if found is None:
            raise TimeoutError(
                f"{self.kind}: no WebGL frame of {vertices:,} points in {timeout:.0f} s"
            )
        return {
            "at": found["at"] / 1000 - page_clock_offset(self.page),
            "vertices": found["vertices"],
        }

    def gl_frame_count(self) -> int:
        return int(self.page.evaluate("() => window.__bench.glFrames.length"))

    def kernel_rss_mib(self) -> float | None:
        """Resident memory of this page's kernel (MiB), or None when it cannot be found."""
        import psutil

        ids = [kernel["id"] for kernel in self.server.kernels()]
        for process in psutil.process_iter(["cmdline", "memory_info"]):
            cmdline = " ".join(process.info.get("cmdline") or [])
            if "ipykernel" in cmdline and any(kernel_id in cmdline for kernel_id in ids):
                return process.info["memory_info"].rss / 2**20
        return None

    # -- 1. cell run -> drawn ---------------------------------------------------------------------

    def run_and_wait_drawn(self, timeout: float = DRAW_TIMEOUT_S) -> dict[str, Any]:
        page = self.page
        open_notebook(page, self.server, f"{self.name}.ipynb", timeout=180)
        page.locator(f"{NOTEBOOK_PANEL} .jp-NotebookPanel-toolbar").first.click(
            position={"x": 2, "y": 2}
        )
        run_command_via_menu(page, "Run", "Run All Cells")
        # Drawn: the first frame that drew every point, fenced (its pixels are in the buffer).
        frame = self.wait_gl_frame(0, self.points, timeout)
        errors = cell_errors(page)
        if errors:
            raise RuntimeError(f"{self.kind}: the notebook raised:\n" + "\n".join(errors))
        state = self.state()
        if self.kind == "jscatter":
            page.wait_for_function(MARK_THEIR_CANVAS)
        png = page.locator(self.canvas).first.screenshot(timeout=120_000)
        coloured, total = coloured_pixels(png)
        if coloured < COLOURED_MIN_FRACTION * total:
            raise RuntimeError(
                f"{self.kind}: the plot shows no coloured points ({coloured} pixels)"
            )
        result: dict[str, Any] = {
            "drawn_s": frame["at"] - state["t0"],
            "coloured_pixels": coloured,
            "created_s": state["created"] - state["t0"],
            "points_in_python": state["points"],
        }
        if self.kind == "ours":
            page.wait_for_function(
                f"(n) => {{ const c = document.querySelector({OUR_CANVAS!r}); return c && Number(c.dataset.points) === n; }}",
                arg=self.points,
                timeout=timeout * 1000,
            )
            at = page.evaluate("(n) => window.__bench.pointsAt[String(n)] || null", self.points)
            if at:
                result["points_drawn_s"] = at / 1000 - page_clock_offset(page) - state["t0"]
        wait_for_kernel_idle(page, timeout=timeout)
        result["kernel_mib_drawn"] = self.kernel_rss_mib()
        return result

    # -- 2 + 3. lasso: per-move latency, pointerup in the page -> selection in Python ---------------

    def clear(self) -> None:
        """Forget the selection, as a user would: our "clear" button, jupyter-scatter's Escape."""
        page = self.page
        if self.state()["n"] == 0:
            return
        before = self.state()["seq"]
        if self.kind == "ours":
            page.locator(".imrec-umap-explorer .imrec-umap-clear").click()
        else:
            page.locator(self.canvas).first.hover()
            page.keyboard.press("Escape")
        self.state(lambda s: s["seq"] > before and s["n"] == 0, timeout=300)
        wait_for_kernel_idle(page, timeout=300)
        self.settle()

    def lasso(self, repeat: int) -> dict[str, Any]:
        page = self.page
        wait_for_kernel_idle(page, timeout=300)
        polygon = lasso_polygon(self.centre(), repeat)
        page.mouse.move(*polygon[0])
        self.settle()
        selection_shown = self.state()["n"] > 0
        before = self.state()["seq"]
        offset = page_clock_offset(page)
        page.evaluate(
            "() => { window.__bench.moves = []; window.__bench.pointerUp = 0; window.__bench.armed = true; }"
        )
        page.mouse.down()
        issued = []
        try:
            for x, y in [*polygon[1:], polygon[0]]:
                count = len(issued)
                issued.append(time.time())
                page.mouse.move(x, y)
                entry = page.evaluate(
                    "([i, ms]) => window.__bench.waitFor(() => { const e = window.__bench.moves[i]; return e && e.raf1 ? e : null; }, ms)",
                    [count, 60_000],
                )
                if entry is None:
                    raise TimeoutError(
                        f"{self.kind}: no frame within 60 s after mouse move {count + 1}"
                    )
            page.mouse.up()
        except BaseException:
            with contextlib.suppress(Exception):
                page.mouse.up()
            raise
        state = self.state(lambda s: s["seq"] > before and s["n"] > 0, timeout=300)
        pointer_up = page.evaluate("() => window.__bench.pointerUp") / 1000
        self.settle()
        moves = page.evaluate(
            "() => { window.__bench.armed = false; return window.__bench.moves; }"
        )
        move_ms = [
            (m["raf1"] / 1000 - offset - t) * 1000 for m, t in zip(moves, issued, strict=False)
        ]
        return {
            "selection_shown": selection_shown,
            "selection_s": state["at"] - pointer_up,
            "selected": state["n"],
            "moves": len(issued),
            "events": len(moves),
            "move_ms": move_ms,
            "move_event_ms": [m["raf1"] - m["event"] for m in moves],  # browser event -> next rAF
        }

    # -- 4. wheel zoom, measured to pixels ----------------------------------------------------------

    def zoom(self, repeats: int) -> dict[str, Any]:
        """Bursts of WHEEL_EVENTS wheel events (zooming in, then out) over the plot's centre.

        Per event: the wheel event in the page -> the first fenced WebGL frame after it (the view
        repainted, its pixels in the buffer). Per burst: its last event -> full detail, and the
        fewest points any frame of it showed. Full detail for jupyter-scatter: the first fenced
        frame that drew every point. Ours completes a still view's picture over several frames
        and draws only the points in the grid cells the view touches: its first frame (fenced by
        the layer's own readPixels) whose canvas says ``detail`` "full", with every point in view
        in the picture (``drawn`` == ``inView``); it shows ``drawn`` points.
        """
        page = self.page
        wait_for_kernel_idle(page, timeout=300)
        centre = self.centre()
        page.mouse.move(*centre)
        self.settle()
        repaint, full, fewest, in_view, timelines = [], [], [], [], []
        for burst in range(2 * repeats):
            direction = -1 if burst % 2 == 0 else 1
            frames_before = self.gl_frame_count()
            ours_before = page.evaluate("() => window.__bench.frames.length")
            page.evaluate("() => { window.__bench.armed = true; window.__bench.wheels = []; }")
            for _ in range(WHEEL_EVENTS):
                page.mouse.wheel(0, direction * abs(WHEEL_DELTA))
                time.sleep(WHEEL_INTERVAL_S)
            offset = page_clock_offset(page)
            wheels = [
                w["event"] / 1000 - offset for w in page.evaluate("() => window.__bench.wheels")
            ]
            if len(wheels) != WHEEL_EVENTS:
                raise RuntimeError(
                    f"{self.kind}: {len(wheels)} of {WHEEL_EVENTS} wheel events seen"
                )
            deadline = time.monotonic() + 120
            while True:
                frames = self.gl_frames(frames_before)
                if self.kind == "ours":
                    ours = [
                        {**f, "at": f["at"] / 1000 - offset}
                        for f in page.evaluate("(i) => window.__bench.frames.slice(i)", ours_before)
                    ]
                    complete = [f for f in ours if f["detail"] == "full" and f["at"] > wheels[-1]]
                else:
                    complete = [
                        f for f in frames if f["vertices"] >= self.points and f["at"] > wheels[-1]
                    ]
                if complete:
                    done = complete[0]
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.kind}: no full detail 120 s after the wheel")
                time.sleep(0.05)
            frames = [f for f in frames if f["at"] <= done["at"]]
            for at in wheels:
                after = [f["at"] for f in frames if f["at"] > at]
                repaint.append((after[0] - at) * 1000 if after else None)
            full.append((done["at"] - wheels[-1]) * 1000)
            if self.kind == "ours":
                shown = [f for f in ours if wheels[0] < f["at"] <= done["at"]]
                if done["drawn"] != done["inView"]:
                    raise RuntimeError(
                        f"ours: 'full' with {done['drawn']} of {done['inView']} drawn"
                    )
                fewest.append(min(f["drawn"] for f in shown))
                in_view.append(done["inView"])
                timelines.append(
                    [(round((f["at"] - wheels[-1]) * 1000), f["drawn"]) for f in shown]
                )
            else:
                fewest.append(min(f["vertices"] for f in frames))
            page.evaluate("() => { window.__bench.armed = false; }")
            wait_for_kernel_idle(page, timeout=300)  # the new scales reach Python; then settle
            self.settle()
        result = {
            "zoom_ms": median(repaint),
            "zoom_max_ms": max((r for r in repaint if r is not None), default=None),
            "zoom_all_ms": repaint,
            "zoom_full_ms": median(full),
            "zoom_full_max_ms": max(full),
            # Bursts alternate: in (even), then back out to the whole map (odd).
            "zoom_full_in_ms": median(full[0::2]),
            "zoom_full_out_ms": median(full[1::2]),
            "zoom_full_all_ms": full,
            "zoom_fewest_points": min(fewest),
        }
        if self.kind == "ours":
            # Bursts alternate in and out: the points in view once each settled, and every
            # frame's (ms after the last wheel event, points shown).
            result["zoom_in_view"] = in_view
            result["zoom_timelines"] = timelines
        return result


def measure_widget(
    server: JupyterLabServer,
    browser: Any,
    kind: str,
    points: int,
    root: Path,
    index_dir: Path,
    repeats: int,
) -> dict[str, Any]:
    """Every measurement of one widget; a failing one is recorded and the next one still runs."""
    session = MapSession(server, browser, kind, points, root, index_dir)
    result: dict[str, Any] = {"errors": []}

    def attempt(what: str, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as error:
            message = f"{what}: {type(error).__name__}: {str(error)[:1500]}"
            print(f"    FAILED {message}", flush=True)
            result["errors"].append(message)
            with contextlib.suppress(Exception):
                dump_failure(session.page, server, f"bench_map_{kind}_{points}_{what}_FAILED")
            if not isinstance(error, (TimeoutError, RuntimeError, AssertionError)):
                traceback.print_exc()
            return None

    try:
        drawn = attempt("drawn", session.run_and_wait_drawn)
        if drawn is None:
            return result
        result.update(drawn)
        print(f"    {kind}: drawn {drawn['drawn_s']:.2f} s after the cell started", flush=True)
        # Per repeat: a lasso on a clean map, then one while its selection is shown, then clear.
        lassos = []
        for r in range(repeats):
            for look in ("clean", "selected"):
                if look == "clean":
                    attempt(f"clear{r}", session.clear)
                lasso = attempt(
                    f"lasso{r}_{look}",
                    lambda r=r, look=look: session.lasso(2 * r + (look == "selected")),
                )
                if lasso:
                    lassos.append(lasso)
        attempt("clear", session.clear)
        if lassos:
            result["lassos"] = lassos
            first, later = lassos[0], lassos[1:]
            clean = [x for x in later if not x["selection_shown"]]
            shown = [x for x in later if x["selection_shown"]]
            result["first_selection_s"] = first["selection_s"]
            result["selection_s"] = median([x["selection_s"] for x in clean + shown])
            for label, group in (("clean", [first, *clean]), ("selected", shown)):
                result[f"move_{label}_ms"] = median([m for x in group for m in x["move_ms"]])
                result[f"move_event_{label}_ms"] = median(
                    [m for x in group for m in x["move_event_ms"]]
                )
            result["selected"] = [x["selected"] for x in lassos]
            result["kernel_mib_lassos"] = session.kernel_rss_mib()
            print(
                f"    {kind}: pointerup -> Python {result['first_selection_s']:.3f} s first, "
                f"{result['selection_s']:.3f} s later; per move {result['move_clean_ms']:.1f} ms clean, "
                f"{result['move_selected_ms'] or 0:.1f} ms with a selection shown",
                flush=True,
            )
        zoom = attempt("zoom", lambda: session.zoom(repeats))
        if zoom:
            result.update(zoom)
            print(
                f"    {kind}: wheel -> repainted {zoom['zoom_ms']:.1f} ms (worst {zoom['zoom_max_ms']:.1f}), "
                f"last wheel -> full detail {zoom['zoom_full_ms']:.1f} ms (worst {zoom['zoom_full_max_ms']:.1f})",
                flush=True,
            )
    finally:
        session.close()
    return result


def run_maps(sizes: list[int], widgets: list[str], repeats: int, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with JupyterLabServer() as server, chromium(args=WEBGL_CHROMIUM_ARGS) as browser:
        results["chromium"] = browser.version
        for points in sizes:
            print(f"{points:,} points", flush=True)
            base = work / f"map_{points}"
            (base / "root").mkdir(parents=True)
            started = time.perf_counter()
            index_dir = write_map_index(base / "index", points)
            print(
                f"    wrote the synthetic index in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            results[str(points)] = {}
            for kind in widgets:
                try:
                    results[str(points)][kind] = measure_widget(
                        server, browser, kind, points, base / "root", index_dir, repeats
                    )
                except Exception as error:  # the page itself failed: say so, go on with the next
                    traceback.print_exc()
                    results[str(points)][kind] = {
                        "errors": [f"page: {type(error).__name__}: {error}"]
                    }
            shutil.rmtree(base, ignore_errors=True)
    return results


# -- UMAP fit time -------------------------------------------------------------------------------------


def read_idx_images(path: Path) -> np.ndarray:
    """An idx3-ubyte(.gz) image file as an (n, rows * cols) uint8 array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{path} is not an idx3-ubyte image file (magic {magic})")
    return np.frombuffer(raw, np.uint8, count * rows * cols, offset=16).reshape(count, rows * cols)


def fit_data() -> tuple[np.ndarray, str]:
    """Real image pixels in [0, 1]: Fashion-MNIST's 70,000 (784-d), or scikit-learn's digits (64-d)."""
    parts = []
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        found = [p for p in (FASHION_MNIST / f"{stem}.gz", FASHION_MNIST / stem) if p.exists()]
        if not found:
            break
        parts.append(read_idx_images(found[0]))
    else:
        values = np.concatenate(parts).astype(np.float32) / 255
        return (
            values,
            f"Fashion-MNIST ({len(values):,} images of {FASHION_MNIST}, 784-d pixels / 255)",
        )
    from sklearn.datasets import load_digits

    values = load_digits().data.astype(np.float32) / 16
    return values, (
        f"scikit-learn digits ({len(values):,} images, 64-d pixels / 16): "
        f"{FASHION_MNIST} is missing (apt-get install dataset-fashion-mnist)"
    )


def tiled(values: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` rows: the images in order, then again (and again) each with gaussian noise added."""
    out = values[np.arange(rows) % len(values)].copy()
    copies = np.arange(rows) >= len(values)
    if copies.any():
        rng = np.random.default_rng(seed)
        out[copies] += rng.normal(0, FIT_NOISE, (int(copies.sum()), values.shape[1])).astype(
            np.float32
        )
        np.clip(out, 0, 1, out=out)
    return out


def write_values_index(index_dir: Path, values: np.ndarray) -> None:
    """An index whose only feature "rgb" holds ``values`` (one row per made-up image)."""
    catalog, _store = write_feature_index(
        index_dir, len(values), {"rgb": lambda ids: values[ids]}, size=(28, 28)
    )
    catalog.close()


class StageClock:
    """A ``progress(stage, done, total)`` callback for ``projection.compute``: seconds per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._since = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        name = "placing" if stage.startswith("placing") else stage  # "placing N images"
        if name != self._stage:
            self._stop(now)
            self._stage, self._since = name, now
        if done >= total:
            self._stop(now)

    def _stop(self, now: float) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
            self._stage = None


FIT_STAGES = (
    ("reading features", "read"),
    ("PCA", "PCA"),
    ("UMAP fit", "UMAP fit"),
    ("placing", "place"),
    ("clustering", "cluster"),
)


def numba_cache_files() -> tuple[str, int]:
    """Where numba keeps compiled code for imrec (as ``projection`` sets it up) and how many files."""
    from imrec_widgets import projection

    setup = getattr(projection, "use_numba_cache", None)
    folder = setup() if setup else None
    folder = folder or os.environ.get("NUMBA_CACHE_DIR")
    if not folder:
        return "none", 0
    return str(folder), sum(1 for path in Path(folder).rglob("*") if path.is_file())


def run_fits(sizes: list[int], work: Path) -> dict[str, Any]:
    from imrec_widgets import ImageIndex, projection

    values, source = fit_data()
    print(f"UMAP fit: {source}", flush=True)
    cache_folder, cache_files = numba_cache_files()
    import_umap = getattr(
        projection, "_import_umap", None
    )  # with numba's disk cache, as compute does
    import_s = None
    if import_umap is not None:
        started = time.perf_counter()
        import_umap()
        import_s = time.perf_counter() - started
    runs = []
    plan = [(sizes[0], "cold"), *((rows, "warm") for rows in sizes[1:]), (sizes[0], "warm")]
    for number, (rows, kind) in enumerate(plan):
        base = work / f"fit_{number}"
        (base / "root").mkdir(parents=True)
        write_values_index(base / "index", tiled(values, rows))
        index = ImageIndex.open(base / "root", index_dir=base / "index")
        clock = StageClock()
        try:
            started = time.perf_counter()
            result = projection.compute(index, "rgb", progress=clock)
            seconds = time.perf_counter() - started
        except Exception as error:
            print(f"    FAILED {rows:,} rows ({kind}): {type(error).__name__}: {error}", flush=True)
            runs.append({"rows": rows, "run": kind, "error": f"{type(error).__name__}: {error}"})
            continue
        finally:
            index.close()
            shutil.rmtree(base, ignore_errors=True)
        runs.append(
            {
                "rows": rows,
                "run": kind,
                "seconds": seconds,
                "fitted": result.fitted,
                "placed": result.transformed,
                "stages_s": clock.seconds,
            }
        )
        print(f"    {rows:,} rows ({kind}): {seconds:.1f} s", flush=True)
    return {
        "data": source,
        "dims": int(values.shape[1]),
        "noise_std": FIT_NOISE,
        "import_umap_s": import_s,
        "numba_cache": cache_folder,
        "numba_cache_files_before": cache_files,
        "runs": runs,
    }


# -- the report ------------------------------------------------------------------------------------------

ROWS = [
    # key, label, unit, the goal (GOALS) that applies at 1M points, compared with jupyter-scatter?
    ("drawn_s", "cell run -> drawn (fenced frame of N)", "s", "drawn_s", True),
    ("points_drawn_s", "  ours: data-points == N (not drawn)", "s", None, False),
    ("created_s", "widget made in Python", "s", None, True),
    ("first_selection_s", "pointerup -> Python, first lasso", "s", "selection_s", True),
    ("selection_s", "pointerup -> Python, later (p50)", "s", "selection_s", True),
    ("move_clean_ms", "per move -> next rAF, clean (p50)", "ms", "move_ms", True),
    ("move_selected_ms", "  the same, selection shown (p50)", "ms", None, True),
    ("move_event_clean_ms", "  browser event -> rAF, clean", "ms", None, True),
    ("move_event_selected_ms", "  browser event -> rAF, selection", "ms", None, True),
    ("zoom_ms", "wheel -> repainted, fenced (p50)", "ms", "zoom_ms", True),
    ("zoom_max_ms", "  worst wheel -> repainted", "ms", None, True),
    ("zoom_full_ms", "last wheel -> full detail (p50)", "ms", "zoom_full_ms", True),
    ("zoom_full_in_ms", "  zooming in (p50)", "ms", "zoom_full_ms", True),
    ("zoom_full_out_ms", "  zooming out, whole map (p50)", "ms", "zoom_full_ms", True),
    ("zoom_full_max_ms", "  worst last wheel -> full detail", "ms", None, True),
    ("zoom_fewest_points", "fewest points in a zoom frame", "", None, False),
    ("kernel_mib_drawn", "kernel memory, map shown", "MiB", None, True),
    ("kernel_mib_lassos", "kernel memory, after the lassos", "MiB", None, True),
]


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f}"
    if unit == "":
        return f"{value:,}"
    return f"{value:.1f}"


def verdict(value: float | None, ratio: float | None, goal: float | None, compared: bool) -> str:
    checks = []
    if goal is not None and value is not None:
        checks.append(value <= goal)
    if compared and ratio is not None:
        checks.append(ratio <= GOAL_RATIO)
    if not checks:
        return ""
    return "ok" if all(checks) else "MISSED"


def print_map_table(points: int, result: dict[str, Any]) -> None:
    ours, theirs = result.get("ours", {}), result.get("jscatter", {})
    print(f"\n{points:,} points")
    print(f"{'what':<40}{'ours':>10}{'jscatter':>10}{'ratio':>8}   {'goal':<18}met")
    for key, label, unit, goal_key, compared in ROWS:
        value, other = ours.get(key), theirs.get(key) if compared else None
        ratio = value / other if value is not None and other else None
        goal = GOALS.get(goal_key) if goal_key and points >= GOAL_POINTS else None
        goal_text = ", ".join(
            [
                *([f"<= {fmt(goal, unit)} {unit}"] if goal is not None else []),
                *([f"<= {GOAL_RATIO}x"] if compared and key in GOALS else []),
            ]
        )
        print(
            f"{label + (' (' + unit + ')' if unit else ''):<40}{fmt(value, unit):>10}{fmt(other, unit):>10}"
            f"{(f'{ratio:.2f}' if ratio is not None else '-'):>8}   {goal_text:<18}"
            f"{verdict(value, ratio, goal, compared and key in GOALS)}"
        )
    for kind, data in (("ours", ours), ("jscatter", theirs)):
        if data.get("selected"):
            print(
                f"  {kind}: lassos selected {', '.join(f'{n:,}' for n in data['selected'])} points"
            )
        for error in data.get("errors", []):
            print(f"  {kind} FAILED {error.splitlines()[0][:160]}")


def print_fit_table(fits: dict[str, Any]) -> None:
    print(f"\nUMAP map, projection.compute(index, 'rgb'), default parameters; data: {fits['data']}")
    print(
        f"rows past the data's own images are copies with gaussian noise (std {fits['noise_std']}) added "
        "to their [0, 1] pixels, clipped"
    )
    imported = fits["import_umap_s"]
    print(
        f"numba's disk cache {fits['numba_cache']} held {fits['numba_cache_files_before']} files before "
        f"this run; 'import umap' took {'-' if imported is None else f'{imported:.1f} s'} (not counted below); "
        "cold = the first fit in this process"
    )
    header = "".join(f"{label + ' s':>12}" for _, label in FIT_STAGES)
    print(f"{'rows':>10}  {'run':<5}{'total s':>9}{header}   fitted on / placed")
    for run in fits["runs"]:
        if "error" in run:
            print(f"{run['rows']:>10,}  {run['run']:<5}  FAILED {run['error'][:120]}")
            continue
        stages = "".join(f"{run['stages_s'].get(stage, 0.0):>12.1f}" for stage, _ in FIT_STAGES)
        print(
            f"{run['rows']:>10,}  {run['run']:<5}{run['seconds']:>9.1f}{stages}   "
            f"{run['fitted']:,} / {run['placed']:,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="50000,200000,1000000", help="points on the map, comma-separated"
    )
    parser.add_argument(
        "--fit-sizes", default="10000,100000", help="rows for the UMAP fits, comma-separated"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="lassos, and wheel zooms, per widget"
    )
    parser.add_argument("--skip-fit", action="store_true", help="no UMAP fits")
    parser.add_argument("--skip-jscatter", action="store_true", help="measure our map alone")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "test-artifacts" / "bench_map.json",
        help="JSON file of every number",
    )
    args = parser.parse_args()
    sizes, fit_sizes = parse_sizes(args.sizes), parse_sizes(args.fit_sizes)
    widgets = ["ours"] if args.skip_jscatter else list(WIDGETS)

    print(f"Chromium flags: {' '.join(WEBGL_CHROMIUM_ARGS)}")
    print(f"load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"lasso gesture: ours {OUR_GESTURE}; jupyter-scatter {JSCATTER_GESTURE}")
    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, "
        f"jupyter-scatter {package_version('jupyter-scatter')}, bqplot {package_version('bqplot')}, "
        f"umap-learn {package_version('umap-learn')}"
    )
    report: dict[str, Any] = {
        "chromium_args": WEBGL_CHROMIUM_ARGS,
        "lasso_gesture": {"ours": OUR_GESTURE, "jscatter": JSCATTER_GESTURE},
        "machine": platform.platform(),
        "repeats": args.repeats,
        "sizes": sizes,
        "load_average_start": os.getloadavg(),
        "goals": GOALS,
        "goal_ratio": GOAL_RATIO,
        "versions": {
            name: package_version(name)
            for name in ("jupyter-scatter", "bqplot", "umap-learn", "numba", "playwright")
        },
    }
    work = Path(tempfile.mkdtemp(prefix="bench_map_"))
    try:
        if sizes:
            maps = run_maps(sizes, widgets, args.repeats, work)
            report["chromium"] = maps.pop("chromium", None)
            report["maps"] = maps
        if not args.skip_fit and fit_sizes:
            report["fits"] = run_fits(fit_sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report["load_average_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    if "maps" in report:
        print(f"\nChromium {report['chromium']}: {' '.join(WEBGL_CHROMIUM_ARGS)}")
        print(
            f"lasso: ours {OUR_GESTURE}; jupyter-scatter {JSCATTER_GESTURE}; "
            "the same screen polygon around each plot's centre, so the selections differ "
            "(each plot maps the data to pixels its own way)"
        )
        print(
            "ratio = ours / jupyter-scatter (< 1: ours is faster); goals from the issue: at 1M points "
            f"drawn <= {GOALS['drawn_s']:.0f} s, selection in Python <= {GOALS['selection_s']:.0f} s after "
            f"pointerup, <= {GOALS['move_ms']:.0f} ms per move, wheel -> repainted <= {GOALS['zoom_ms'] / 1000} s, "
            f"every point back <= {GOALS['zoom_full_ms'] / 1000} s after the last wheel event; at every "
            f"N <= {GOAL_RATIO}x jupyter-scatter"
        )
    for points in sizes:
        if str(points) in report.get("maps", {}):
            print_map_table(points, report["maps"][str(points)])
    if "fits" in report:
        print_fit_table(report["fits"])
    print(
        f"\nload average: {' '.join(f'{v:.1f}' for v in report['load_average_start'])} at the start, "
        f"{' '.join(f'{v:.1f}' for v in report['load_average_end'])} at the end"
    )
    print(f"\nall numbers: {args.out}")


if __name__ == "__main__":
    main()
