"""SearchWidget end to end: JupyterLab (and Notebook 7) + headless Chromium, files going in
through the page.

The index is built before the server starts; the notebook opens it, shows a SearchWidget and
writes the widget's Python-side state to ``search_state.json`` whenever it changes; below the
widget, a cell shows ``idx.search(...)``'s HTML repr.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from harness import (
    ARTIFACTS_DIR,
    DUMP_JSON_HELPER,
    NOTEBOOK_PANEL,
    JupyterLabServer,
    app_errors,
    dump_failure,
    new_page,
    open_notebook,
    require_browser,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.features import MODEL_FREE_FEATURES
from imrec_widgets.samples import write_sample_photos

K = 5
STATE = "search_state.json"

WIDGET_CELL = """\
from imrec_widgets import ImageIndex
from imrec_widgets.widgets.search_widget import SearchWidget

idx = ImageIndex.open({photos!r}, index_dir={index_dir!r})
w = SearchWidget(idx, k={k})
_seq = 0

def _dump(change=None):
    global _seq
    _seq += 1
    dump_json({state!r}, {{
        "seq": _seq, "results": w.results, "error": w.error, "mode": w.mode,
        "metric": w.metric, "metrics": w.metrics, "k": w.k, "query_names": w.query_names,
        "thumbnails": len(w.thumbnails), "busy": w.busy,
        "result_mode": w.result_mode, "result_metric": w.result_metric, "weights": w.weights,
        "rejected": w.rejected,
    }})

w.observe(_dump, names=["results", "error", "mode", "metric", "k", "query_names", "busy", "weights"])
_dump()
w
"""

# The HTML repr of a plain search, shown on the same page as the widget.
REPR_CELL = """\
idx.search({query!r}, mode="rgb", k={k})
"""
REPR_K = 8

# A page's JS: dispatch a synthetic drop or paste carrying one file onto the widget.
_JS_DISPATCH_FILE = """([kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  const zone = document.querySelector('.imrec-dropzone');
  const event = kind === 'drop'
    ? new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true })
    : new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true });
  zone.dispatchEvent(event);
  return event.defaultPrevented;
}"""


class Lab:
    """The open notebook: its page and the widget's Python-side state."""

    def __init__(self, page, server, photos: Path) -> None:
        self.page = page
        self.server = server
        self.photos = photos
        self.state_path = server.root_dir / STATE

    def state(self, predicate=None, timeout: float = 30.0):
        return wait_for_file(self.state_path, predicate, timeout=timeout)

    def seq(self) -> int:
        return self.state()["seq"]

    def upload(self, files) -> None:
        self.page.locator(".imrec-search .imrec-file-input").set_input_files(files)

    def wait_for_results(self, count: int) -> list[str]:
        """Wait until ``count`` result cells show decoded thumbnails; return their names."""
        self.page.wait_for_function(
            """(n) => {
              const cells = document.querySelectorAll('.imrec-search .imrec-result');
              return cells.length === n && !document.querySelector('.imrec-is-busy') &&
                Array.from(cells).every((c) => c.querySelector('img').naturalWidth > 0);
            }""",
            arg=count,
            timeout=30_000,
        )
        return self.page.locator(".imrec-result .imrec-result-name").all_inner_texts()

    def error_text(self, timeout: float = 30_000) -> str:
        error = self.page.locator(".imrec-search .imrec-error")
        error.wait_for(state="visible", timeout=timeout)
        return error.inner_text()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """A few real photos and their prebuilt index (no CNN: the kernel starts faster)."""
    base = tmp_path_factory.mktemp("search-widget")
    folder = base / "photos"
    write_sample_photos(folder)
    index = ImageIndex.open(folder, index_dir=base / "index", features=MODEL_FREE_FEATURES)
    index.update(progress=False, workers=0)
    assert len(index) == 18
    return folder, base / "index"


@pytest.fixture(scope="module")
def server():
    require_browser()
    # expose_app_in_browser: lets the test switch the theme with JupyterLab's own command
    with JupyterLabServer(expose_app_in_browser=True) as srv:
        yield srv


def open_search_notebook(server, browser, photos: tuple[Path, Path]) -> Lab:
    """Write and run the widget notebook in ``server``'s front end; the widget is empty."""
    folder, index_dir = photos
    cell = WIDGET_CELL.format(photos=str(folder), index_dir=str(index_dir), k=K, state=STATE)
    query = str(folder / "objects" / "coffee.jpg")
    write_notebook(
        server.root_dir / "search.ipynb",
        [DUMP_JSON_HELPER, cell, REPR_CELL.format(query=query, k=REPR_K)],
    )
    page = new_page(browser)
    t0 = time.monotonic()
    try:
        open_notebook(page, server, "search.ipynb")
        run_all_cells(page)
        page.locator(".imrec-search").wait_for(state="visible", timeout=30_000)
    except BaseException:
        dump_failure(page, server, f"search_widget_open_{server.app}_FAILED")
        raise
    print(
        f"\nsearch widget browser ({server.app}): notebook open + run {time.monotonic() - t0:.1f}s"
    )
    lab = Lab(page, server, folder)
    lab.state(lambda s: s["mode"] == "rgb" and s["results"] == [])
    return lab


def close_and_check_console(lab: Lab) -> None:
    errors = app_errors(lab.page, lab.server)
    lab.page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def lab(server, browser, photos):
    lab = open_search_notebook(server, browser, photos)
    yield lab
    close_and_check_console(lab)


def _photo(lab: Lab, name: str) -> Path:
    return next(lab.photos.rglob(f"{name}.jpg"))


def test_upload_shows_k_results_and_updates_python(step):
    check_upload(step, "search_widget")


def test_upload_in_notebook_7(browser, photos):
    """The same upload in Notebook 7 (``jupyter notebook``), its own server and page."""
    require_browser()
    with JupyterLabServer(app="notebook") as notebook7:
        lab = open_search_notebook(notebook7, browser, photos)
        try:
            check_upload(lab, "search_widget_notebook7")
        except BaseException:
            dump_failure(lab.page, notebook7, "search_widget_notebook7_FAILED")
            raise
        close_and_check_console(lab)


def check_upload(lab: Lab, screenshot_name: str) -> None:
    """Upload a photo through the file input: k results, best first, in the page and in Python."""
    lab.upload(str(_photo(lab, "coffee")))
    names = lab.wait_for_results(K)
    state = lab.state(lambda s: s["query_names"] == ["coffee.jpg"] and len(s["results"]) == K)
    assert state["error"] == "" and state["thumbnails"] == K
    assert names == [Path(hit["path"]).name for hit in state["results"]]
    assert names[0] == "coffee.jpg"
    distances = [hit["distance"] for hit in state["results"]]
    assert distances == sorted(distances)
    page = lab.page
    assert page.locator(".imrec-query img").count() == 1
    assert page.locator(".imrec-query figcaption").inner_text() == "coffee.jpg"
    assert page.locator(".imrec-elapsed").inner_text().endswith(("ms", "s"))
    assert page.locator(".imrec-summary").inner_text() == f"{K} results · rgb · euclidean"
    title = page.locator(".imrec-result").first.get_attribute("title")
    assert title.startswith(state["results"][0]["path"])  # hover shows the full path
    page.locator(".imrec-search").scroll_into_view_if_needed()
    assert screenshot(page, screenshot_name).exists()
    page.locator(".imrec-search").screenshot(
        path=str(ARTIFACTS_DIR / f"{screenshot_name}_element.png")
    )


def test_a_results_repr_below_the_widget_stays_a_grid(step):
    """The widget's stylesheet is on the page; ``idx.search(...)``'s repr must not take it up."""
    lab = step
    page = lab.page
    figures = page.locator(f"{NOTEBOOK_PANEL} .jp-RenderedHTMLCommon figure")
    figures.nth(REPR_K - 1).wait_for(state="visible")
    assert figures.count() == REPR_K
    figures.first.scroll_into_view_if_needed()
    widget = page.locator(".imrec-search").bounding_box()
    boxes = [figures.nth(i).bounding_box() for i in range(REPR_K)]
    assert all(box["y"] >= widget["y"] + widget["height"] for box in boxes)  # below the widget
    first_row = [box for box in boxes if abs(box["y"] - boxes[0]["y"]) < 1]
    assert len(first_row) >= 4, f"thumbnails per row: {len(first_row)}; boxes {boxes}"
    lefts = [box["x"] for box in first_row]
    assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts)  # side by side
    titles = [figures.nth(i).get_attribute("title") for i in range(REPR_K)]
    assert all(title.startswith(str(lab.photos)) for title in titles), titles  # names on hover
    screenshot(page, "search_results_repr_below_widget")


def test_bad_files_show_errors_and_the_widget_stays_usable(step, tmp_path):
    lab = step
    page = lab.page
    lab.upload(str(_photo(lab, "moon")))
    lab.state(lambda s: s["query_names"] == ["moon.jpg"] and s["error"] == "")

    # refused in the browser by type: Python's error says the same
    lab.upload({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"})
    assert "notes.txt is not an image (text/plain)" in lab.error_text()
    assert "notes.txt is not an image" in lab.state(lambda s: s["error"])["error"]

    # looks like a JPEG, is not one: refused by the Python decoder
    corrupt = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64
    lab.upload({"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": corrupt})
    page.wait_for_function(
        "() => document.querySelector('.imrec-error-text').textContent.startsWith('broken.jpg: ')"
    )
    assert lab.state(lambda s: s["error"].startswith("broken.jpg: "))["query_names"] == ["moon.jpg"]
    page.wait_for_function("() => !document.querySelector('.imrec-is-busy')", timeout=10_000)
    assert page.locator(".imrec-result").count() == K  # the last good results stay
    page.locator(".imrec-search").scroll_into_view_if_needed()
    screenshot(page, "search_widget_error")

    # over the 20 MB cap: refused before anything is sent
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:  # sparse: a path costs nothing to hand to the browser
        f.truncate(21_000_000)
    lab.upload(str(huge))
    page.wait_for_function(
        "() => document.querySelector('.imrec-error-text').textContent"
        ".includes('huge.jpg is 21 MB, over the upload limit of 20 MB')"
    )
    lab.state(lambda s: "huge.jpg is 21 MB" in s["error"])

    # dismiss, then a good file works again
    page.locator(".imrec-error-dismiss").click()
    lab.state(lambda s: s["error"] == "")
    assert page.locator(".imrec-error").is_hidden()
    lab.upload(str(_photo(lab, "brick")))
    lab.state(lambda s: s["query_names"] == ["brick.jpg"] and s["error"] == "")
    assert lab.wait_for_results(K)[0] == "brick.jpg"
    assert page.locator(".imrec-error").is_hidden()


def test_an_upload_over_the_servers_message_limit_arrives_in_chunks(step, tmp_path):
    """Jupyter Server drops websocket messages over 10 MiB; a 12 MB image must still work."""
    lab = step
    noise = np.random.default_rng(7).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path, compress_level=1)
    assert path.stat().st_size > 11 * 1024 * 1024
    lab.upload(str(path))
    state = lab.state(lambda s: s["query_names"] == ["noise.png"] or s["error"], timeout=60)
    assert state["error"] == "" and len(state["results"]) == K
    lab.wait_for_results(K)
    kernels = lab.server.kernels()
    assert kernels and all(k["execution_state"] == "idle" for k in kernels)


def test_drop_and_paste_are_queries_too(step):
    lab = step
    data = base64.b64encode(_photo(lab, "rocket").read_bytes()).decode()
    assert lab.page.evaluate(_JS_DISPATCH_FILE, ["drop", "rocket.jpg", "image/jpeg", data])
    lab.state(lambda s: s["query_names"] == ["rocket.jpg"] and len(s["results"]) == K)
    buffer = io.BytesIO()
    Image.open(_photo(lab, "coins")).save(buffer, format="PNG")
    png = base64.b64encode(buffer.getvalue()).decode()
    assert lab.page.evaluate(_JS_DISPATCH_FILE, ["paste", "image.png", "image/png", png])
    state = lab.state(lambda s: s["query_names"] == ["image.png"] and len(s["results"]) == K)
    assert Path(state["results"][0]["path"]).name == "coins.jpg"


def test_clicking_a_result_searches_more_like_it(step):
    lab = step
    lab.upload(str(_photo(lab, "astronaut")))
    lab.state(lambda s: s["query_names"] == ["astronaut.jpg"] and len(s["results"]) == K)
    lab.wait_for_results(K)
    cell = lab.page.locator(".imrec-result").nth(2)
    clicked_id = int(cell.get_attribute("data-id"))
    clicked_name = cell.locator(".imrec-result-name").inner_text()
    before = lab.state()["results"]
    cell.click()
    # The observer also fires on query_names, before results change: wait for both.
    state = lab.state(lambda s: s["query_names"] == [clicked_name] and s["results"] != before)
    assert len(state["results"]) == K
    assert clicked_id not in [hit["id"] for hit in state["results"]]
    names = lab.wait_for_results(K)
    assert names == [Path(hit["path"]).name for hit in state["results"]]


def test_controls_rerun_the_query(step):
    lab = step
    page = lab.page
    lab.upload(str(_photo(lab, "grass")))
    lab.state(lambda s: s["query_names"] == ["grass.jpg"] and s["mode"] == "rgb")

    page.select_option(".imrec-search .imrec-mode", "ahash")
    state = lab.state(lambda s: s["result_mode"] == "ahash" and s["result_metric"] == "hamming")
    assert (state["mode"], state["metric"]) == ("ahash", "hamming")
    assert state["metrics"] == ["hamming"]
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.imrec-metric option'))"
        ".map((o) => o.value).join() === 'hamming'"
    )
    assert all(float(hit["distance"]).is_integer() for hit in state["results"])
    assert page.locator(".imrec-summary").inner_text() == f"{K} results · ahash · hamming"

    page.select_option(".imrec-search .imrec-mode", "rgb")
    lab.state(lambda s: s["result_mode"] == "rgb" and s["result_metric"] == "euclidean")
    page.select_option(".imrec-search .imrec-metric", "manhattan")
    lab.state(lambda s: s["result_metric"] == "manhattan")
    page.wait_for_function(
        "() => document.querySelector('.imrec-summary').textContent.endsWith('manhattan')"
    )

    k_input = page.locator(".imrec-search .imrec-k")
    k_input.fill("3")
    k_input.press("Enter")
    state = lab.state(lambda s: s["k"] == 3 and len(s["results"]) == 3)
    assert state["query_names"] == ["grass.jpg"]
    assert len(lab.wait_for_results(3)) == 3
    k_input.fill("500")  # clamped to 100 in the browser: every indexed image
    k_input.press("Enter")
    lab.state(lambda s: s["k"] == 100 and len(s["results"]) == 18)
    assert k_input.input_value() == "100"
    lab.wait_for_results(18)


def test_result_names_show_their_end(step):
    """Names wrap to two lines, longer ones lose their middle: the end (``_crop.jpg``) shows."""
    lab = step
    page = lab.page
    k_input = page.locator(".imrec-search .imrec-k")
    k_input.fill("18")
    k_input.press("Enter")
    lab.upload(str(_photo(lab, "hubble_deep_field")))
    lab.state(lambda s: s["query_names"] == ["hubble_deep_field.jpg"] and len(s["results"]) == 18)
    lab.wait_for_results(18)
    shown = page.evaluate(
        """() => Array.from(document.querySelectorAll('.imrec-search .imrec-result'), (cell) => {
          const name = cell.querySelector('.imrec-result-name');
          return {
            text: name.textContent,
            full: cell.title.split('\\n')[0].split('/').pop(),
            clipped: name.scrollWidth > name.clientWidth + 1 ||
              name.scrollHeight > name.clientHeight + 1,
            lines: Math.round(name.getBoundingClientRect().height /
              parseFloat(getComputedStyle(name).lineHeight)),
          };
        })"""
    )
    for name in shown:
        assert not name["clipped"], name
        head, ellipsis, tail = name["text"].partition("…")
        if ellipsis:
            assert name["full"].startswith(head) and name["full"].endswith(tail), name
        else:
            assert name["text"] == name["full"], name
        assert name["lines"] <= 2, name
    long_names = [name for name in shown if len(name["full"]) > 16]
    assert long_names and all(name["text"] == name["full"] for name in long_names), long_names
    page.locator(".imrec-search .imrec-results").scroll_into_view_if_needed()
    page.locator(".imrec-search .imrec-results").screenshot(
        path=str(ARTIFACTS_DIR / "search_widget_result_names.png")
    )


def test_hybrid_mode_shows_weight_sliders_that_rerun_the_query(step):
    from playwright.sync_api import expect  # imported here: collecting needs no playwright

    lab = step
    page = lab.page
    k_input = page.locator(".imrec-search .imrec-k")
    k_input.fill(str(K))
    k_input.press("Enter")
    lab.upload(str(_photo(lab, "coffee")))
    lab.state(lambda s: s["query_names"] == ["coffee.jpg"] and s["k"] == K and not s["busy"])
    weights = page.locator(".imrec-search .imrec-weights")
    metric = page.locator(".imrec-search .imrec-metric")
    summary = page.locator(".imrec-search .imrec-summary")
    shares = page.locator(".imrec-search .imrec-weight-share")
    expect(weights).to_be_hidden()  # sliders only in the hybrid mode

    page.select_option(".imrec-search .imrec-mode", "hybrid")
    state = lab.state(lambda s: s["result_mode"] == "hybrid" and len(s["results"]) == K)
    assert (state["metric"], state["metrics"], state["weights"]) == ("", [], {"rgb": 0.3})
    assert state["result_metric"] == "1 rgb/euclidean"
    expect(weights).to_be_visible()
    expect(metric).to_be_hidden()  # no metric of its own
    expect(summary).to_have_text(f"{K} results · hybrid · 1 rgb/euclidean")
    sliders = page.locator(".imrec-search .imrec-weight-slider")
    assert [sliders.nth(i).get_attribute("data-mode") for i in range(sliders.count())] == [
        "rgb",
        "ahash",
        "dhash",
    ]
    assert [sliders.nth(i).input_value() for i in range(3)] == ["0.3", "0", "0"]
    expect(shares).to_have_text(["(100%)", "(0%)", "(0%)"])
    before = state["results"]

    ahash = page.locator('.imrec-weight-slider[data-mode="ahash"]')
    ahash.fill("0.5")  # sets the value and fires input + change, as a drag ending there does
    state = lab.state(
        lambda s: s["weights"] == {"rgb": 0.3, "ahash": 0.5} and "ahash" in s["result_metric"]
    )
    assert state["result_mode"] == "hybrid" and state["error"] == ""
    assert state["result_metric"] == "0.375 rgb/euclidean + 0.625 ahash/hamming"
    assert state["results"] != before and len(state["results"]) == K
    assert state["query_names"] == ["coffee.jpg"]  # the same query, re-run
    expect(summary).to_have_text(f"{K} results · hybrid · {state['result_metric']}")
    names = lab.wait_for_results(K)
    assert names == [Path(hit["path"]).name for hit in state["results"]]
    expect(shares).to_have_text(["(37%)", "(63%)", "(0%)"])
    expect(page.locator(".imrec-weight-value")).to_have_text(["0.30", "0.50", "0.00"])

    dhash = page.locator('.imrec-weight-slider[data-mode="dhash"]')
    dhash.focus()
    for _ in range(4):  # keyboard (not JupyterLab's shortcuts): 4 steps of 0.05
        page.keyboard.press("ArrowRight")
    state = lab.state(lambda s: s["weights"].get("dhash") == 0.2 and "dhash" in s["result_metric"])
    assert state["weights"] == {"rgb": 0.3, "ahash": 0.5, "dhash": 0.2}
    expect(dhash).to_have_value("0.2")  # the browser gets Python's weights after it has them
    expect(summary).to_have_text(f"{K} results · hybrid · {state['result_metric']}")
    lab.wait_for_results(K)
    page.locator(".imrec-search").scroll_into_view_if_needed()
    assert screenshot(page, "search_widget_hybrid").exists()
    page.locator(".imrec-search").screenshot(
        path=str(ARTIFACTS_DIR / "search_widget_hybrid_element.png")
    )

    page.select_option(".imrec-search .imrec-mode", "rgb")
    state = lab.state(lambda s: s["result_mode"] == "rgb" and s["metric"] == "euclidean")
    expect(weights).to_be_hidden()
    expect(metric).to_be_visible()
    expect(summary).to_have_text(f"{K} results · rgb · euclidean")
    assert state["rejected"] == 0  # the front end only sends messages Python accepts

    # A value Python refuses (a stale menu could send one): the error, and the menu shows
    # Python's metric again.
    page.evaluate(
        "() => document.querySelector('.imrec-search .imrec-metric')"
        ".append(new Option('hamming', 'hamming'))"
    )
    page.select_option(".imrec-search .imrec-metric", "hamming")
    state = lab.state(lambda s: "metric 'hamming' is not allowed" in s["error"])
    assert state["metric"] == "euclidean" and state["rejected"] == 0
    expect(metric).to_have_value("euclidean")
    expect(page.locator(".imrec-search .imrec-metric option")).to_have_count(3)


def test_hybrid_weight_sliders_line_up_when_they_wrap(step):
    lab = step
    page = lab.page
    page.select_option(".imrec-search .imrec-mode", "hybrid")
    lab.state(lambda s: s["mode"] == "hybrid" and not s["busy"])
    sliders = page.locator(".imrec-search .imrec-weight-slider")
    sliders.first.wait_for(state="visible")

    def rows() -> list[list[dict]]:
        boxes = sorted(
            (sliders.nth(i).bounding_box() for i in range(sliders.count())),
            key=lambda box: (round(box["y"]), box["x"]),
        )
        grouped: list[list[dict]] = []
        for box in boxes:
            if grouped and abs(grouped[-1][0]["y"] - box["y"]) < 2:
                grouped[-1].append(box)
            else:
                grouped.append([box])
        return grouped

    def assert_even(grouped: list[list[dict]]) -> None:
        widths = [box["width"] for row in grouped for box in row]
        assert max(widths) - min(widths) < 1, grouped  # every slider as long as the others
        for row in grouped[1:]:  # each wrapped slider under the one above it
            for box, above in zip(row, grouped[0], strict=False):
                assert abs(box["x"] - above["x"]) < 1, grouped

    assert_even(rows())
    weights = page.locator(".imrec-search .imrec-weights")
    try:
        page.evaluate("() => { document.querySelector('.imrec-search').style.width = '520px'; }")
        narrow = rows()
        assert len(narrow) >= 2, narrow  # the sliders wrapped
        assert_even(narrow)
        weights.scroll_into_view_if_needed()
        weights.screenshot(path=str(ARTIFACTS_DIR / "search_widget_weights_narrow.png"))
    finally:
        page.evaluate("() => { document.querySelector('.imrec-search').style.width = ''; }")
    page.select_option(".imrec-search .imrec-mode", "rgb")
    lab.state(lambda s: s["result_mode"] == "rgb" and s["metric"] == "euclidean" and not s["busy"])


def test_dark_theme(step):
    lab = step
    page = lab.page
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    lab.upload(str(_photo(lab, "chelsea")))
    lab.state(lambda s: s["query_names"] == ["chelsea.jpg"])
    page.locator(".imrec-search").scroll_into_view_if_needed()
    # mean RGB of the widget's colours, once the dark theme's variables apply to it
    handle = page.wait_for_function(
        """() => {
          const mean = (sel, prop) => {
            const c = getComputedStyle(document.querySelector(sel))[prop].match(/[\\d.]+/g);
            return c.slice(0, 3).map(Number).reduce((a, b) => a + b) / 3;
          };
          const colours = {
            background: mean('.imrec-search', 'backgroundColor'),
            dropzone: mean('.imrec-dropzone', 'backgroundColor'),
            text: mean('.imrec-result-name', 'color'),
          };
          return colours.background < 80 && colours;
        }""",
        timeout=10_000,
    )
    colours = handle.json_value()
    assert colours["dropzone"] < 100 and colours["text"] > 150, colours
    assert screenshot(page, "search_widget_dark").exists()
    page.locator(".imrec-search").screenshot(
        path=str(ARTIFACTS_DIR / "search_widget_dark_element.png")
    )
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Light'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")
    print(f"dark theme colours (mean RGB): {colours}")
