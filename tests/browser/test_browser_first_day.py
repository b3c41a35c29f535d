"""What a new user trips over on the first day, checked in a real browser on the property that was
wrong: thumbnails (crisp at 2x, no white bars in the dark theme), the hybrid weights' labels, the
focus after new results, a standalone map's controls and its legend, in both themes.

Screenshots go to ``test-artifacts/first_day_*.png``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from harness import (
    ARTIFACTS_DIR,
    JupyterLabServer,
    app_errors,
    dump_failure,
    new_page,
    open_notebook,
    require_browser,
    run_all_cells,
    write_notebook,
)
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.mapdata import PALETTE
from imrec_widgets.samples import write_sample_photos
from imrec_widgets.synthetic import write_map_index

THEMES = ("JupyterLab Light", "JupyterLab Dark")
GROUPS = len(PALETTE) + 6  # more clusters than colours: an "other" row too

CELL = """\
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import SearchWidget, UmapExplorer

idx = ImageIndex.open({photos!r}, index_dir={index_dir!r})
w = SearchWidget(idx, k=6, mode="rgb")
w
"""

MAP_CELL = """\
ex = UmapExplorer(ImageIndex.open({root!r}, index_dir={map_dir!r}), feature="rgb", compute=False)
ex
"""


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("first-day")
    photos = base / "photos"
    write_sample_photos(photos)
    index = ImageIndex.open(photos, index_dir=base / "index")  # every feature: hybrid has them all
    index.update(progress=False)
    (base / "root").mkdir()
    write_map_index(base / "map", 3000, groups=GROUPS)
    return {"photos": photos, "index": base / "index", "root": base / "root", "map": base / "map"}


@pytest.fixture(scope="module")
def server():
    require_browser()
    with JupyterLabServer(expose_app_in_browser=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server, browser, indexes):
    """The notebook, on a 2x screen (thumbnails must be crisp there)."""
    write_notebook(
        server.root_dir / "first_day.ipynb",
        [
            CELL.format(photos=str(indexes["photos"]), index_dir=str(indexes["index"])),
            MAP_CELL.format(root=str(indexes["root"]), map_dir=str(indexes["map"])),
        ],
    )
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, device_scale_factor=2)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        open_notebook(page, server, "first_day.ipynb")
        run_all_cells(page)
        page.locator(".imrec-search").wait_for(state="visible")
        page.locator(".imrec-umap-legend").wait_for(state="visible")
    except BaseException:
        dump_failure(page, server, "first_day_open_FAILED")
        raise
    yield page
    errors = app_errors(page, server)
    context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


def _theme(page, theme: str) -> None:
    page.evaluate(
        f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})"
    )
    light = "true" if theme.endswith("Light") else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'")
    # the widget's own variables follow the theme's
    dark = "false" if light == "true" else "true"
    page.wait_for_function(
        f"""() => {{
          const c = getComputedStyle(document.querySelector('.imrec-search')).backgroundColor;
          const sum = c.match(/\\d+/g).slice(0, 3).reduce((a, b) => a + Number(b), 0);
          return (sum < 300) === {dark};
        }}"""
    )


def _results(page, count: int) -> None:
    page.wait_for_function(
        """(n) => {
          const cells = document.querySelectorAll('.imrec-search .imrec-result');
          return cells.length === n && !document.querySelector('.imrec-is-busy') &&
            Array.from(cells).every((c) => c.querySelector('img').naturalWidth > 0);
        }""",
        arg=count,
    )


def _shot(page, locator, name: str) -> Image.Image:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"first_day_{name}.png"
    locator.screenshot(path=str(path))
    return Image.open(io.BytesIO(path.read_bytes())).convert("RGB")


def test_result_thumbnails_are_crisp_and_have_no_white_bars(page, indexes) -> None:
    """Stored 64 x 64 with white padding, they were stretched to ~110 px cells (soft) and showed
    white bars around landscape photos in the dark theme."""
    coffee = indexes["photos"] / "objects" / "coffee.jpg"  # 600 x 400
    page.locator(".imrec-search .imrec-file-input").set_input_files(str(coffee))
    _results(page, 6)
    first = page.locator(".imrec-search .imrec-result").first
    image = first.locator("img")
    assert first.locator(".imrec-distance").inner_text() == "0"  # its own copy: not 1.8e-7
    for theme in THEMES:
        _theme(page, theme)
        sizes = image.evaluate(
            "(img) => ({natural: img.naturalWidth, naturalHeight: img.naturalHeight,"
            " shown: img.getBoundingClientRect().width, fit: getComputedStyle(img).objectFit})"
        )
        assert sizes["natural"] >= 2 * sizes["shown"] - 4, f"soft on a 2x screen: {sizes}"
        assert sizes["natural"] / sizes["naturalHeight"] == pytest.approx(1.5, abs=0.02)
        assert sizes["fit"] == "contain"
        pixels = _shot(page, image, f"result_{theme.split()[-1].lower()}")
        # the band above the landscape photo is the theme's background, never baked-in white
        band = pixels.crop((0, 0, pixels.width, pixels.height // 10))
        mean = float(np.asarray(band.convert("L")).mean())
        if theme.endswith("Dark"):
            assert mean < 120, f"white bar over the photo in the dark theme (mean {mean:.0f})"
        page.screenshot(path=str(ARTIFACTS_DIR / f"first_day_page_{theme.split()[-1].lower()}.png"))
    _theme(page, "JupyterLab Light")


def test_hybrid_weight_names_do_not_overlap_their_sliders(page) -> None:
    page.select_option(".imrec-search .imrec-mode", "hybrid")
    page.locator(".imrec-search .imrec-weight").first.wait_for(state="visible")
    for theme in THEMES:
        _theme(page, theme)
        boxes = page.evaluate(
            """() => Array.from(document.querySelectorAll('.imrec-search .imrec-weight')).map((row) => {
              const name = row.querySelector('.imrec-weight-name');
              const slider = row.querySelector('.imrec-weight-slider');
              return {text: name.textContent, right: name.getBoundingClientRect().right,
                      slider: slider.getBoundingClientRect().left,
                      clipped: name.scrollWidth > name.clientWidth};
            })"""
        )
        assert "embedding" in [box["text"] for box in boxes], boxes  # the longest name, bold
        for box in boxes:
            assert box["right"] <= box["slider"] and not box["clipped"], box
        _shot(
            page,
            page.locator(".imrec-search .imrec-weights"),
            f"weights_{theme.split()[-1].lower()}",
        )
    _theme(page, "JupyterLab Light")
    page.select_option(".imrec-search .imrec-mode", "rgb")


def test_a_result_chosen_from_the_keyboard_hands_the_focus_to_the_new_first_image(page) -> None:
    page.wait_for_function(  # the rgb results, not the hybrid ones they replace
        """() => {
          const summary = document.querySelector('.imrec-search .imrec-summary');
          return summary && summary.textContent.includes(' · rgb · ') &&
            !document.querySelector('.imrec-is-busy');
        }"""
    )
    _results(page, 6)
    second = page.locator(".imrec-search .imrec-result").nth(1)
    replaced = second.element_handle()
    second.click()  # "more like this"; the clicked result has the focus, then goes away
    page.wait_for_function(
        "(old) => !old.isConnected && !document.querySelector('.imrec-is-busy')", arg=replaced
    )
    assert page.evaluate(
        "() => document.activeElement === document.querySelector('.imrec-search .imrec-result')"
    ), "the focus fell back to the page"
    page.keyboard.press("Tab")  # from the keyboard now: the ring must be on the image
    page.keyboard.press("Shift+Tab")
    focus = page.evaluate(
        """() => {
          const active = document.activeElement;
          const first = document.querySelector('.imrec-search .imrec-result');
          const img = first.querySelector('img');
          return {onFirst: active === first, slot: getComputedStyle(first).outlineStyle,
                  image: getComputedStyle(img).outlineStyle,
                  width: getComputedStyle(img).outlineWidth};
        }"""
    )
    assert focus["onFirst"], "the focus fell back to the page"
    assert focus["slot"] == "none" and focus["image"] == "solid" and focus["width"] == "2px", focus
    _shot(page, page.locator(".imrec-search .imrec-results"), "focus")


def test_a_standalone_map_hides_the_scope_box_and_lists_every_colour(page) -> None:
    explorer = page.locator(".imrec-umap-explorer")
    explorer.scroll_into_view_if_needed()
    assert not explorer.get_by_text("search only inside the selection").is_visible()
    for theme in THEMES:
        _theme(page, theme)
        legend = page.evaluate(
            """() => {
              const legend = document.querySelector('.imrec-umap-legend');
              const box = legend.getBoundingClientRect();
              const rows = Array.from(legend.querySelectorAll('.imrec-umap-legend-row'));
              return {rows: rows.length, scrolls: legend.scrollHeight > legend.clientHeight + 1,
                      inside: rows.every((r) => r.getBoundingClientRect().bottom <= box.bottom + 1),
                      colours: new Set(rows.map((r) => getComputedStyle(
                        r.querySelector('.imrec-umap-swatch')).backgroundColor)).size};
            }"""
        )
        assert legend["rows"] == len(PALETTE) + 1 and not legend["scrolls"] and legend["inside"]
        assert legend["colours"] == len(PALETTE) + 1, legend
        _shot(page, explorer, f"map_{theme.split()[-1].lower()}")
    _theme(page, "JupyterLab Light")


_JS_NOTEBOOK_MODE = """() => {
  const notebook = document.querySelector(
    ':is(#jp-main-dock-panel, #main-panel) .jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const cells = Array.from(notebook.querySelectorAll('.jp-Cell'));
  return {command: notebook.classList.contains('jp-mod-commandMode'),
          edit: notebook.classList.contains('jp-mod-editMode'),
          active: cells.findIndex((c) => c.classList.contains('jp-mod-active')),
          prompts: Array.from(notebook.querySelectorAll('.jp-InputPrompt')).map((p) => p.textContent)};
}"""
KEYS = ("Enter", "Shift+Enter", " ")


def _keys_press_a_focused_result(page) -> None:
    """Each key on a focused result does the widget's "more like this", and only that: the
    notebook stays in command mode on the same cell and no cell runs."""
    for key in KEYS:
        _results(page, 6)
        page.locator(".imrec-search .imrec-result").nth(2).click()  # the notebook in command mode
        page.wait_for_function("() => !document.querySelector('.imrec-is-busy')")
        _results(page, 6)
        before = page.evaluate(_JS_NOTEBOOK_MODE)
        assert before["command"] and before["active"] == 0, before
        first = page.locator(".imrec-search .imrec-result").first
        replaced = first.element_handle()
        first.focus()
        page.keyboard.press("Space" if key == " " else key)
        page.wait_for_function(  # the widget's search ran, or the notebook took the key
            """(old) => (!old.isConnected && !document.querySelector('.imrec-is-busy')) ||
              document.querySelector('.jp-Notebook.jp-mod-editMode') ||
              Array.from(document.querySelectorAll('.jp-InputPrompt')).some(
                (p) => p.textContent.includes('*'))""",
            arg=replaced,
        )
        after = page.evaluate(_JS_NOTEBOOK_MODE)
        assert after == before, f"the notebook took {key!r}: {before} -> {after}"
        assert not replaced.evaluate("(old) => old.isConnected"), f"no search on {key!r}"
        assert page.evaluate(
            "() => document.activeElement === document.querySelector('.imrec-search .imrec-result')"
        ), f"{key!r}: the new first result has the focus"


def test_enter_on_a_focused_result_searches_and_the_notebook_keeps_its_mode(page) -> None:
    """Shift+Enter on a focused result also reran the cell (the widget and its results gone)."""
    _keys_press_a_focused_result(page)


def test_enter_on_a_focused_result_in_notebook_7(browser, indexes) -> None:
    """Notebook 7 sees keys before the widget's own elements do."""
    with JupyterLabServer(app="notebook") as notebook7:
        write_notebook(
            notebook7.root_dir / "keys.ipynb",
            [CELL.format(photos=str(indexes["photos"]), index_dir=str(indexes["index"])), "1"],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        try:
            open_notebook(page, notebook7, "keys.ipynb")
            run_all_cells(page)
            coffee = indexes["photos"] / "objects" / "coffee.jpg"
            page.locator(".imrec-search .imrec-file-input").set_input_files(str(coffee))
            _keys_press_a_focused_result(page)
        except BaseException:
            dump_failure(page, notebook7, "first_day_keys_notebook7_FAILED")
            raise
        errors = app_errors(page, notebook7)
        page.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


def test_shift_enter_on_a_duplicates_card_keeps_it_and_runs_no_cell(server, browser, tmp_path):
    from test_moves import write_copies

    write_sample_photos(tmp_path / "samples")
    root = tmp_path / "dups"
    write_copies(tmp_path / "samples", root)
    ImageIndex.open(root, features=["dhash", "thumb"]).update(progress=False)
    write_notebook(
        server.root_dir / "dups_keys.ipynb",
        [
            f"from imrec_widgets import DuplicatesWidget, ImageIndex\nDuplicatesWidget(ImageIndex.open({str(root)!r}))",
            "1",
        ],
    )
    page = new_page(browser)
    try:
        open_notebook(page, server, "dups_keys.ipynb")
        run_all_cells(page)
        page.locator(".imrec-dups-summary").click()  # the notebook in command mode on the cell
        other = (
            page.locator(".imrec-dups-group")
            .first.locator(".imrec-dups-item:not(.imrec-dups-keep)")
            .first
        )
        chosen = other.get_attribute("data-id")
        before = page.evaluate(_JS_NOTEBOOK_MODE)
        assert before["command"] and before["active"] == 0, before
        other.focus()
        page.keyboard.press("Shift+Enter")
        page.wait_for_function(  # the widget kept it, or the notebook took the key
            """(id) => document.querySelector(`.imrec-dups-keep[data-id='${id}']`) ||
              Array.from(document.querySelectorAll('.jp-InputPrompt')).some(
                (p) => p.textContent.includes('*'))""",
            arg=chosen,
        )
        after = page.evaluate(_JS_NOTEBOOK_MODE)
        assert after == before, f"the notebook took Shift+Enter: {before} -> {after}"
        assert page.locator(f".imrec-dups-keep[data-id='{chosen}']").count() == 1
    except BaseException:
        dump_failure(page, server, "first_day_dups_keys_FAILED")
        raise
    errors = app_errors(page, server)
    page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)
