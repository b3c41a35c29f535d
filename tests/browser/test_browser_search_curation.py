"""SearchWidget's curation end to end (JupyterLab and Notebook 7 + headless Chromium): pick
results (a click, a shift-click range) and tag them, then 👍/👎 and refine; each step checked
in the catalog and against ``idx.search`` run here, not only in the page.

The index (with the CNN embedding, so that refine is offered) is built before the server
starts; the notebook starts the widget on a query by id (no model is loaded in the kernel) and
writes the widget's state to ``curation_state.json`` whenever it changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    DUMP_JSON_HELPER,
    JupyterLabServer,
    app_errors,
    css_contrast,
    dump_failure,
    new_page,
    open_notebook,
    require_browser,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)

from imrec_widgets import ImageIndex
from imrec_widgets.samples import write_sample_photos

K = 6
STATE = "curation_state.json"

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
        "seq": _seq, "results": [hit["id"] for hit in w.results], "error": w.error,
        "picked": w.picked, "relevant": w.relevant, "not_relevant": w.not_relevant,
        "tags": w.tags, "notice": w.notice, "refined": w.refined, "busy": w.busy,
        "refine_reason": w.refine_reason, "query_names": w.query_names,
        "rejected": w.rejected, "mode": w.mode,
    }})

w.observe(_dump)
w.search({query_id})
_dump()
w
"""


class Lab:
    """The open notebook: its page and the widget's Python-side state."""

    def __init__(self, page, server, photos: Path, index_dir: Path, query_id: int) -> None:
        self.page = page
        self.server = server
        self.photos = photos
        self.index_dir = index_dir
        self.query_id = query_id
        self.state_path = server.root_dir / STATE

    def state(self, predicate=None, timeout: float = 30.0):
        return wait_for_file(self.state_path, predicate, timeout=timeout)

    def index(self) -> ImageIndex:
        """The index as this process reads it (the catalog the kernel writes)."""
        return ImageIndex.open(self.photos, index_dir=self.index_dir)

    def slot(self, id_: int):
        return self.page.locator(f'.imrec-search .imrec-slot[data-id="{id_}"]')

    def wait_for_results(self, ids: list[int]) -> None:
        """Until the page shows exactly ``ids``, in order, with decoded thumbnails."""
        self.page.wait_for_function(
            """(ids) => {
              const slots = Array.from(document.querySelectorAll('.imrec-search .imrec-slot'));
              return !document.querySelector('.imrec-is-busy') &&
                slots.map((s) => Number(s.dataset.id)).join() === ids.join() &&
                slots.every((s) => s.querySelector('img').naturalWidth > 0);
            }""",
            arg=ids,
            timeout=30_000,
        )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path, int]:
    """The sample photos, their prebuilt index with every feature, and the query's id."""
    base = tmp_path_factory.mktemp("search-curation")
    folder = base / "photos"
    write_sample_photos(folder)
    index = ImageIndex.open(folder, index_dir=base / "index")
    index.update(progress=False, workers=0)
    assert len(index) == 18 and "embedding" in index.settings["features"]
    query_id = next(int(i) for i in index.ids() if index.path(int(i)).name == "coffee.jpg")
    return folder, base / "index", query_id


@pytest.fixture(scope="module")
def server():
    require_browser()
    # expose_app_in_browser: the test switches the theme with JupyterLab's own command
    with JupyterLabServer(expose_app_in_browser=True) as srv:
        yield srv


def open_curation_notebook(server, browser, photos) -> Lab:
    folder, index_dir, query_id = photos
    cell = WIDGET_CELL.format(
        photos=str(folder), index_dir=str(index_dir), k=K, state=STATE, query_id=query_id
    )
    write_notebook(server.root_dir / "curation.ipynb", [DUMP_JSON_HELPER, cell])
    page = new_page(browser)
    try:
        open_notebook(page, server, "curation.ipynb")
        run_all_cells(page)
        page.locator(".imrec-search").wait_for(state="visible", timeout=30_000)
    except BaseException:
        dump_failure(page, server, f"search_curation_open_{server.app}_FAILED")
        raise
    lab = Lab(page, server, folder, index_dir, query_id)
    state = lab.state(lambda s: len(s["results"]) == K and not s["busy"])
    lab.wait_for_results(state["results"])
    return lab


def close_and_check_console(lab: Lab) -> None:
    errors = app_errors(lab.page, lab.server)
    lab.page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)


def check_pick_and_tag(lab: Lab, tag: str) -> list[int]:
    """Pick three results (the third by a shift-click range), tag them; the catalog has them."""
    from playwright.sync_api import expect

    page = lab.page
    shown = lab.state(lambda s: len(s["results"]) == K)["results"]
    within = page.locator(".imrec-search .imrec-within")
    if not lab.state()["tags"]:
        expect(within).to_be_hidden()  # "search within tag" only once the index has tags
    lab.slot(shown[0]).locator(".imrec-pick").click()
    lab.slot(shown[2]).locator(".imrec-pick").click()
    lab.slot(shown[3]).locator(".imrec-pick").click(modifiers=["Shift"])  # the range 2..3
    wanted = [shown[0], shown[2], shown[3]]
    lab.state(lambda s: s["picked"] == wanted)
    expect(page.locator(".imrec-search .imrec-picked-count")).to_have_text("3 picked")
    expect(page.locator(".imrec-search .imrec-pick:checked")).to_have_count(3)

    page.locator(".imrec-search .imrec-tag-input").fill(tag)
    page.locator(".imrec-search .imrec-tag-button").click()
    state = lab.state(lambda s: s["notice"].startswith("tagged 3 images"))
    assert state["error"] == "" and state["rejected"] == 0
    assert lab.index().tagged(tag).tolist() == sorted(wanted)  # in the catalog, not only the page
    expect(page.locator(".imrec-search .imrec-notice")).to_have_text(state["notice"])
    expect(within).to_be_visible()  # kept up to date after tagging
    expect(within.locator(f'option[value="{tag}"]')).to_have_text(f"{tag} (3)")

    # a bad name: one line in the widget, nothing written, the widget still usable
    page.locator(".imrec-search .imrec-tag-input").fill("   ")
    page.locator(".imrec-search .imrec-tag-button").click()
    lab.state(lambda s: "at least one visible character" in s["error"])
    expect(page.locator(".imrec-search .imrec-error-text")).to_contain_text("visible character")
    page.locator(".imrec-search .imrec-error-dismiss").click()
    lab.state(lambda s: s["error"] == "")
    assert lab.index().tags()[tag] == 3

    # Shift+Enter in the tag box tags (the widget's key): the notebook must not rerun the cell,
    # which would replace this widget and drop its picks
    box = page.locator(".imrec-search .imrec-tag-input")
    box.fill(f"{tag}-enter")
    box.press("Shift+Enter")
    lab.state(lambda s: s["notice"].startswith("tagged 3 images") and f"{tag}-enter" in s["notice"])
    assert lab.index().tagged(f"{tag}-enter").tolist() == sorted(wanted)
    expect(page.locator(".imrec-search .imrec-pick:checked")).to_have_count(3)
    assert lab.state()["picked"] == wanted
    # ... nor does Shift+Enter on a focused pick box (a checkbox: Space ticks it, Enter is nothing)
    lab.slot(shown[1]).locator(".imrec-pick").focus()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Space")
    lab.state(lambda s: s["picked"] == sorted([*wanted, shown[1]], key=shown.index))
    expect(page.locator(".imrec-search .imrec-pick:checked")).to_have_count(4)
    return wanted


def check_mark_and_refine(lab: Lab) -> None:
    """👍 on two results, 👎 on one, refine: the page shows ``idx.search`` with those marks."""
    from playwright.sync_api import expect

    page = lab.page
    shown = lab.state(lambda s: len(s["results"]) == K)["results"]
    refine = page.locator(".imrec-search .imrec-refine")
    expect(refine).to_have_attribute("aria-disabled", "true")
    expect(refine).to_have_attribute("title", lab.state()["refine_reason"])
    lab.slot(shown[1]).locator(".imrec-mark-up").click()
    lab.slot(shown[4]).locator(".imrec-mark-up").click()
    lab.slot(shown[2]).locator(".imrec-mark-down").click()
    state = lab.state(lambda s: len(s["relevant"]) == 2 and len(s["not_relevant"]) == 1)
    assert state["relevant"] == [shown[1], shown[4]] and state["not_relevant"] == [shown[2]]
    expect(lab.slot(shown[1]).locator(".imrec-mark-up")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".imrec-search .imrec-marks-count")).to_have_text("2 relevant · 1 not")
    expect(refine).to_have_attribute("aria-disabled", "false")

    refine.click()
    state = lab.state(lambda s: s["refined"] and not s["busy"])
    expected = lab.index().search(
        [lab.query_id, shown[1], shown[4]], negatives=[shown[2]], mode="embedding", k=K
    )
    assert state["results"] == expected.ids and state["results"] != shown
    assert state["error"] == "" and state["rejected"] == 0 and len(state["query_names"]) == 3
    lab.wait_for_results(expected.ids)
    expect(page.locator(".imrec-search .imrec-marks-count")).to_have_text(
        "2 relevant · 1 not · refined"
    )


def check_keyboard(lab: Lab) -> dict[str, str]:
    """The pick box and 👍 are reached with Tab and work with Space/Enter, with a focus ring."""
    page = lab.page
    shown = lab.state()["results"]
    picked = lab.state()["picked"]
    slot = lab.slot(shown[0])
    slot.locator(".imrec-result").focus()
    page.keyboard.press("Shift+Tab")  # back to its pick box
    ring = page.evaluate(
        """() => {
          const el = document.activeElement;
          const style = getComputedStyle(el);
          return {cls: el.className, visible: String(el.matches(':focus-visible')),
                  outline: style.outlineStyle + ' ' + style.outlineWidth,
                  colour: style.outlineColor,
                  background: getComputedStyle(el.closest('.imrec-search')).backgroundColor};
        }"""
    )
    assert ring["cls"] == "imrec-pick" and ring["visible"] == "true", ring
    assert ring["outline"] == "solid 2px", ring
    # WCAG's 3:1 for a focus ring
    assert css_contrast(ring["colour"], ring["background"]) >= 3, ring
    was_picked = shown[0] in picked
    page.keyboard.press("Space")
    lab.state(lambda s: (shown[0] in s["picked"]) != was_picked)
    page.keyboard.press("Tab")  # the result
    page.keyboard.press("Tab")  # its 👍
    focused = page.evaluate("() => document.activeElement.className")
    assert focused == "imrec-mark imrec-mark-up", focused
    was_relevant = shown[0] in lab.state()["relevant"]
    page.keyboard.press("Enter")
    lab.state(lambda s: (shown[0] in s["relevant"]) != was_relevant)
    return ring


@pytest.fixture(scope="module")
def lab(server, browser, photos):
    lab = open_curation_notebook(server, browser, photos)
    yield lab
    close_and_check_console(lab)


def test_pick_three_and_tag_them(step):
    check_pick_and_tag(step, "keepers")
    step.page.locator(".imrec-search").scroll_into_view_if_needed()
    screenshot(step.page, "search_widget_tagged")


def test_mark_and_refine_change_the_results(step):
    check_mark_and_refine(step)
    step.page.locator(".imrec-search").scroll_into_view_if_needed()
    screenshot(step.page, "search_widget_refined")


def test_pick_box_and_marks_by_keyboard_in_both_themes(step):
    lab = step
    page = lab.page
    light = check_keyboard(lab)
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    try:
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        # a new query (more like the first result) clears the marks for a second round
        first = lab.state()["results"][0]
        lab.slot(first).locator(".imrec-result").click()
        state = lab.state(lambda s: s["relevant"] == [] and first not in s["results"])
        lab.wait_for_results(state["results"])
        dark = check_keyboard(lab)
        assert dark["background"] != light["background"], (light, dark)  # the dark theme applied
        page.locator(".imrec-search").scroll_into_view_if_needed()
        screenshot(page, "search_widget_curation_dark")
    finally:
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Light'})"
        )
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")


def test_pick_tag_mark_refine_in_notebook_7(browser, photos):
    require_browser()
    with JupyterLabServer(app="notebook") as notebook7:
        lab = open_curation_notebook(notebook7, browser, photos)
        try:
            check_pick_and_tag(lab, "nb7")
            check_mark_and_refine(lab)
        except BaseException:
            dump_failure(lab.page, notebook7, "search_curation_notebook7_FAILED")
            raise
        close_and_check_console(lab)
