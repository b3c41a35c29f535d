"""Tagging from the map in JupyterLab and Notebook 7: lasso, click one image out of the gallery,
type a tag, "tag selection" — checked on the map's colours and legend and on the catalog."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from harness import (
    DUMP_JSON_HELPER,
    WEBGL_CHROMIUM_ARGS,
    JupyterLabServer,
    chromium,
    dump_failure,
    screenshot,
)
from PIL import Image
from test_browser_umap_explorer import _JS_FRAME, _assert_selected, _close, _open

from imrec_widgets import ImageIndex
from imrec_widgets.synthetic import write_map_index

POINTS = 300
TAG = "keep — été"  # any script: the name goes through the page, the kernel and the catalog
STATE = "tagging_state.json"

WIDGET_CELL = """\
import numpy as np
from imrec_widgets import ImageIndex
from imrec_widgets.widgets import UmapExplorer

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
ex = UmapExplorer(idx, feature="rgb", compute=False)
"""

STATE_CELL = """\
_seq = 0
dump_json("points_" + {state!r}, {{"ids": [int(i) for i in ex.points.ids], "xy": ex.points.xy.tolist()}})

def _dump(change=None):
    global _seq
    _seq += 1
    codes = np.frombuffer(ex.layer.codes, np.uint8)
    dump_json({state!r}, {{
        "seq": _seq,
        "selected": ex.selected,
        "left_out": ex.left_out,
        "message": ex.message.value,
        "color_by": ex.color_by,
        "tag_name": ex.tag_box.value,
        "names": ex.categories().names,
        "palette": list(ex.layer.palette),
        "codes": codes.tolist(),
        "shown": [ex.categories().names[c] for c in codes.tolist()],
        "drawn_ids": [int(i) for i in ex.points.ids[ex._drawn]],
    }})

ex.observe(_dump, names=["selected", "left_out", "color_by"])
ex.message.observe(_dump, names=["value"])
ex.tag_box.observe(_dump, names=["value"])
ex.layer.observe(_dump, names=["codes"])
_dump()
"""


@pytest.fixture(scope="module")
def webgl_browser():
    with chromium(args=WEBGL_CHROMIUM_ARGS) as browser:
        yield browser


def _legend(page) -> dict[str, int]:
    """The legend as the page shows it: name -> count."""
    rows = page.locator(".imrec-umap-explorer .imrec-umap-legend-row")
    return {
        rows.nth(i).locator(".imrec-umap-legend-name").inner_text(): int(
            rows.nth(i).locator(".imrec-umap-legend-count").inner_text().replace(",", "")
        )
        for i in range(rows.count())
    }


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _assert_drawn_colours(lab, state: dict, ids: list[int]) -> None:
    """Each of ``ids`` that stands apart from every other point is drawn in its own colour: the
    pixel under its centre is nearer its category's palette colour than any other in use."""
    maps = lab.maps()
    all_ids, xy = lab.points()
    screen_xy = lab.screen(xy, maps)
    shot = np.asarray(Image.open(io.BytesIO(lab.page.screenshot())).convert("RGB"), dtype=float)
    code_of = dict(zip(state["drawn_ids"], state["codes"], strict=True))
    used = sorted(set(state["codes"]))
    checked = 0
    for id_ in ids:
        (at,) = np.flatnonzero(all_ids == id_)
        gaps = np.linalg.norm(screen_xy - screen_xy[at], axis=1)
        gaps[at] = np.inf
        if gaps.min() < 14:  # overlapping points: the pixel may be its neighbour's
            continue
        x, y = (round(float(v)) for v in screen_xy[at])
        pixel = np.median(shot[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3), axis=0)
        distances = {c: np.abs(pixel - _hex(state["palette"][c])).sum() for c in used}
        assert min(distances, key=distances.get) == code_of[id_], (id_, pixel, distances)
        checked += 1
    assert checked >= 3, f"only {checked} isolated points to check"


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_lasso_leave_one_out_tag_and_the_map_shows_the_tag(
    webgl_browser, tmp_path: Path, app: str
) -> None:
    with JupyterLabServer(tmp_path / "server", app=app) as server:
        root, index_dir = server.root_dir / "root", server.root_dir / "index"
        root.mkdir()
        write_map_index(index_dir, POINTS)
        cells = [
            DUMP_JSON_HELPER,
            WIDGET_CELL.format(root=str(root), index_dir=str(index_dir)),
            STATE_CELL.format(state=STATE),
            "ex",
        ]
        lab = _open(server, webgl_browser, f"tagging_{app}", cells, STATE, POINTS)
        page = lab.page
        try:
            # colour by each image's tag before there is any: the legend says "(no tag)"
            page.locator(".imrec-umap-explorer .imrec-umap-color-by select").select_option("tags")
            lab.state(lambda s: s["color_by"] == "tags")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.imrec-umap-explorer .imrec-umap-legend-name')]"
                ".map((n) => n.textContent).join('|') === '(no tag)'"
            )

            # lasso the left half of the map
            maps = lab.maps()
            ids, xy = lab.points()
            screen_xy = lab.screen(xy, maps)
            left, top, width, height = maps["left"], maps["top"], maps["width"], maps["height"]
            shape = np.array(
                [
                    [left + 0.05 * width, top + 0.05 * height],
                    [left + 0.55 * width, top + 0.1 * height],
                    [left + 0.5 * width, top + 0.95 * height],
                    [left + 0.05 * width, top + 0.9 * height],
                ]
            )
            lab.drag([*shape.tolist(), shape[0].tolist()])
            state = lab.state(lambda s: s["selected"])
            _assert_selected(state, ids, screen_xy, shape)
            selected = state["selected"]
            assert 1 < len(selected) < POINTS

            # the gallery shows them; a click leaves the second one out, drawn crossed
            cells_ = page.locator(".imrec-umap-explorer .imrec-umap-gallery .imrec-umap-cell")
            page.wait_for_function(
                "(n) => { const imgs = document.querySelectorAll("
                "'.imrec-umap-explorer .imrec-umap-gallery img.imrec-umap-thumb');"
                " return imgs.length === n && [...imgs].every((i) => i.complete && i.naturalWidth > 0); }",
                arg=min(len(selected), 40),
            )
            out = int(cells_.nth(1).get_attribute("data-id"))
            cells_.nth(1).click()
            lab.state(lambda s: s["left_out"] == [out])
            page.locator(f".imrec-umap-gallery .imrec-umap-out[data-id='{out}']").wait_for()
            assert cells_.locator(".imrec-umap-out").count() == 0
            assert page.locator(".imrec-umap-gallery .imrec-umap-out").count() == 1
            assert "(1 left out)" in page.locator(".imrec-umap-count").inner_text()

            # type the tag and tag the selection
            page.locator(".imrec-umap-explorer .imrec-umap-tag-name input").fill(TAG)
            lab.state(lambda s: s["tag_name"] == TAG)
            frame = page.evaluate(_JS_FRAME)
            page.locator(".imrec-umap-explorer button.imrec-umap-tag").click()
            kept = sorted(set(selected) - {out})
            done = lab.state(
                lambda s: f"tagged {len(kept)} images" in s["message"] and TAG in s["shown"]
            )
            assert "error" not in done["message"]
            shown = dict(zip(done["drawn_ids"], done["shown"], strict=True))
            assert sorted(i for i, name in shown.items() if name == TAG) == kept
            # the legend on the page lists the tag with its count, the rest as untagged
            page.wait_for_function(
                "(name) => [...document.querySelectorAll('.imrec-umap-explorer .imrec-umap-legend-name')]"
                ".some((n) => n.textContent === name)",
                arg=TAG,
            )
            assert _legend(page) == {TAG: len(kept), "(no tag)": POINTS - len(kept)}
            # and the canvas: the new colours reached the WebGL layer (the next frame draws them)
            lab.frame_after(frame)
            _assert_drawn_colours(lab, done, [*kept, out])
            screenshot(page, f"curation_map_tagged_{app}")

            # the menu now offers the tag itself; picking it colours tagged against the rest
            page.locator(".imrec-umap-explorer .imrec-umap-color-by select").select_option(
                f"tag:{TAG}"
            )
            lab.state(lambda s: s["color_by"] == f"tag:{TAG}" and "(not tagged)" in s["shown"])
            page.wait_for_function(
                "() => [...document.querySelectorAll('.imrec-umap-explorer .imrec-umap-legend-name')]"
                ".some((n) => n.textContent === '(not tagged)')"
            )
            assert _legend(page) == {TAG: len(kept), "(not tagged)": POINTS - len(kept)}

            # the catalog, opened here, holds exactly the lasso's images less the one left out
            index = ImageIndex.open(root, index_dir=index_dir)
            assert index.tagged(TAG).tolist() == kept
            assert index.tags() == {TAG: len(kept)}
            index.close()
        except BaseException:
            dump_failure(page, server, f"curation_map_{app}_FAILED")
            raise
        finally:
            _close(lab)


APP_CELL = """\
from imrec_widgets import App, ImageIndex

idx = ImageIndex.open({root!r}, index_dir={index_dir!r})
app = App(idx, feature="rgb", compute=False)
ex = app.explorer

def _dump(change=None):
    dump_json({state!r}, {{
        "selected": ex.selected, "renderer": ex.renderer, "tab": app.selected_index,
        "duplicates": [w.value for w in app.children[1].children if hasattr(w, "value")],
    }})

ex.observe(_dump, names=["selected", "renderer"])
app.observe(_dump, names=["selected_index"])
_dump()
"""


def test_app_tabs_keep_the_map_working(webgl_browser, tmp_path: Path) -> None:
    """App in JupyterLab: the map draws in "Search & map", "Duplicates" says why it is empty on
    an index without hashes, and back on the map a lasso still selects."""
    with JupyterLabServer(tmp_path / "server") as server:
        root, index_dir = server.root_dir / "root", server.root_dir / "index"
        root.mkdir()
        write_map_index(index_dir, POINTS)
        state_file = "app_state.json"
        cells = [
            DUMP_JSON_HELPER,
            APP_CELL.format(root=str(root), index_dir=str(index_dir), state=state_file),
            "app",
        ]
        lab = _open(server, webgl_browser, "app_tabs", cells, state_file, POINTS)
        page = lab.page
        try:
            assert lab.state()["renderer"] == "webgl"
            page.locator(".imrec-app .lm-TabBar-tab", has_text="Duplicates").click()
            state = lab.state(lambda s: s["tab"] == 1 and s["duplicates"])
            assert "mode 'dhash' is not in this index" in state["duplicates"][0].replace(
                "&#x27;", "'"
            )
            page.get_by_text("No duplicates to show").wait_for()
            page.locator(".imrec-app .lm-TabBar-tab", has_text="Search & map").click()
            lab.state(lambda s: s["tab"] == 0)
            maps = lab.maps()
            frame = maps["frame"]
            left, top, width, height = maps["left"], maps["top"], maps["width"], maps["height"]
            box = [
                [left + 0.02 * width, top + 0.02 * height],
                [left + 0.98 * width, top + 0.02 * height],
                [left + 0.98 * width, top + 0.98 * height],
                [left + 0.02 * width, top + 0.98 * height],
            ]
            lab.drag([*box, box[0]])
            state = lab.state(lambda s: s["selected"])
            assert len(state["selected"]) == POINTS and state["renderer"] == "webgl"
            lab.frame_after(frame)  # the selection is drawn: the layer lives after the tab switch
            screenshot(page, "app_tabs_lab")
        except BaseException:
            dump_failure(page, server, "app_tabs_FAILED")
            raise
        finally:
            _close(lab)
