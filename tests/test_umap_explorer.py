"""UmapExplorer without a browser: gestures as the front end sends them, state as shown."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image
from skimage import data

from imrec_widgets import ImageIndex
from imrec_widgets import projection as projection_module
from imrec_widgets.errors import TagError
from imrec_widgets.mapdata import (
    PALETTE,
    cluster_categories,
    display_sample,
    padded_range,
    tag_categories,
)
from imrec_widgets.synthetic import write_map_index
from imrec_widgets.widgets.search_widget import SearchWidget
from imrec_widgets.widgets.umap_explorer import App, UmapExplorer, gallery_page, legend_html

FEATURES = ["rgb", "dhash", "thumb"]
PAGE_SIZE = 40


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(
    variant_folder: Path, tmp_path_factory: pytest.TempPathFactory, index_of: IndexOf
) -> tuple[Path, Path]:
    """The photos with variants (90 images) and an index of them with no map yet (indexed
    once a session: test_search indexes a copy in the same state with the same settings)."""
    root = tmp_path_factory.mktemp("umap-explorer") / "photos"
    shutil.copytree(variant_folder, root)
    index = index_of(root, features=FEATURES)
    assert len(index) == 90
    index.close()
    return root, index.index_dir


def _copy(built: tuple[Path, Path], target: Path, *, copy_photos: bool = False) -> ImageIndex:
    root, index_dir = built
    if copy_photos:
        photos = shutil.copytree(root, target / "photos", ignore=shutil.ignore_patterns(".imrec"))
        root = Path(photos)
    shutil.copytree(index_dir, target / "index")
    return ImageIndex.open(root, index_dir=target / "index")


@pytest.fixture(scope="module")
def mapped(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    """The index with its rgb map (4 KMeans clusters) computed."""
    index = _copy(built, tmp_path_factory.mktemp("mapped"))
    index.umap("rgb", clusters=4)
    return index


@pytest.fixture
def explorer(mapped: ImageIndex) -> UmapExplorer:
    return UmapExplorer(mapped, feature="rgb", compute=False, page_size=PAGE_SIZE)


@pytest.fixture
def linked(mapped: ImageIndex, explorer: UmapExplorer) -> tuple[UmapExplorer, SearchWidget]:
    search = SearchWidget(mapped, mode="rgb", k=5)
    assert explorer.link(search) is explorer
    return explorer, search


def _thumb_titles(explorer: UmapExplorer) -> list[str]:
    return [item["path"] for item in explorer.gallery.items]


def _photo(index: ImageIndex, name: str) -> Path:
    return next(index.root.rglob(f"{name}.jpg"))


def _id(index: ImageIndex, name: str) -> int:
    return next(r.id for r in index.records(index.ids()) if Path(r.path).stem == name)


def _positions(explorer: UmapExplorer, ids) -> list[int]:
    return [int(np.flatnonzero(explorer.points.ids == i)[0]) for i in ids]


def _marked(mark) -> np.ndarray:
    return np.column_stack([np.asarray(mark.x, dtype=float), np.asarray(mark.y, dtype=float)])


def _drawn_xy(explorer: UmapExplorer) -> np.ndarray:
    layer = explorer.layer
    return np.column_stack([np.frombuffer(layer.x, np.float32), np.frombuffer(layer.y, np.float32)])


def _mask(explorer: UmapExplorer) -> list[int]:
    return np.frombuffer(explorer.layer.mask, np.uint8).tolist()


def _gesture(explorer: UmapExplorer, content: dict) -> None:
    """Send ``content`` from the "browser": a custom comm message to the map layer."""
    message = {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    explorer.layer._handle_msg(message)


def _replies(explorer: UmapExplorer, monkeypatch) -> list[tuple[dict, list]]:
    sent: list[tuple[dict, list]] = []
    monkeypatch.setattr(
        explorer.layer, "send", lambda content, buffers=None: sent.append((content, buffers))
    )
    return sent


# -- helpers -----------------------------------------------------------------------------------


def test_gallery_page_clamps_and_counts_pages() -> None:
    ids = list(range(100, 185))  # 85 ids
    assert gallery_page(ids, 0, 40) == (ids[:40], 0, 3)
    assert gallery_page(ids, 2, 40) == (ids[80:], 2, 3)
    assert gallery_page(ids, 7, 40) == (ids[80:], 2, 3)
    assert gallery_page(ids, -3, 40) == (ids[:40], 0, 3)
    assert gallery_page([], 4, 40) == ([], 0, 1)


# -- creation and the cache --------------------------------------------------------------------


def test_creation_computes_the_map_then_loads_it(built, tmp_path, monkeypatch) -> None:
    index = _copy(built, tmp_path)
    assert projection_module.status(index, "rgb")["state"] == "missing"
    first = UmapExplorer(index, feature="rgb", clusters=4)
    assert first.message.value == ""
    assert first.projection.fitted == len(index) == len(first.points) == 90
    assert projection_module.status(index, "rgb") == {"state": "fresh", "pending": 0}
    assert set(first.projection.clusters.tolist()) == {0, 1, 2, 3}
    # every point crosses as float32 x/y plus one uint8 colour code, never a CSS string per point
    np.testing.assert_array_equal(_drawn_xy(first), first.projection.xy)
    codes = np.frombuffer(first.layer.codes, np.uint8)
    cats = cluster_categories(first.projection.clusters)
    np.testing.assert_array_equal(codes, cats.codes)
    assert first.layer.palette == list(PALETTE[:4]) and first.layer.mask == b""
    for name, count in zip(cats.names, cats.counts, strict=True):
        assert name in first.legend.value and f">{count:,}<" in first.legend.value
    assert repr(first) == "UmapExplorer('rgb', 90 points, 0 selected)"
    xy = first.projection.xy
    assert (first.x_scale.min, first.x_scale.max) == padded_range(xy[:, 0])
    assert (first.y_scale.min, first.y_scale.max) == padded_range(xy[:, 1])

    def no_refit(*_args, **_kwargs):
        raise AssertionError("the cached map was refitted")

    monkeypatch.setattr(projection_module.fitting, "fit_map", no_refit)
    placement = index.index_dir / "umap_rgb.npz"
    stamp = placement.stat().st_mtime_ns
    second = UmapExplorer(index, feature="rgb")
    np.testing.assert_array_equal(second.projection.xy, first.projection.xy)
    np.testing.assert_array_equal(second.projection.clusters, first.projection.clusters)
    assert second.projection.transformed == 0 and second.message.value == ""
    # the same parameters again: the cached fit is reused, not refitted
    third = UmapExplorer(index, feature="rgb", clusters=4)
    np.testing.assert_array_equal(third.projection.xy, first.projection.xy)
    assert placement.stat().st_mtime_ns == stamp


def test_new_parameters_are_not_silently_ignored(mapped: ImageIndex, tmp_path: Path) -> None:
    """A fresh cached map made with other settings must not stand in for the ones asked for."""
    index = _copy((mapped.root, mapped.index_dir), tmp_path)
    assert projection_module.load(index, "rgb").params["n_neighbors"] == 15
    explorer = UmapExplorer(index, feature="rgb", n_neighbors=5, clusters=2)
    assert explorer.projection.params["n_neighbors"] == 5
    assert set(explorer.projection.clusters.tolist()) == {0, 1}
    assert explorer.layer.palette == list(PALETTE[:2])


# -- colours and legend ------------------------------------------------------------------------


def test_colour_by_folder_and_by_label(mapped: ImageIndex, tmp_path: Path) -> None:
    explorer = UmapExplorer(mapped, feature="rgb", compute=False)
    assert explorer.color_menu.options == ("cluster", "folder", "status", "tags")
    explorer.color_menu.value = "folder"  # the dropdown drives the trait
    assert explorer.color_by == "folder"
    folders = [r.path.rpartition("/")[0] for r in mapped.records(explorer.points.ids)]
    codes = np.frombuffer(explorer.layer.codes, np.uint8)
    names = explorer.categories().names
    assert [names[c] for c in codes.tolist()] == folders
    assert "animals" in explorer.legend.value and "cluster 0" not in explorer.legend.value
    with pytest.raises(Exception, match="color_by must be one of cluster, folder, status"):
        explorer.color_by = "label"

    csv = tmp_path / "labels.csv"
    records = mapped.records(explorer.points.ids)
    csv.write_text(
        "path,label\n"
        + "".join(f"{r.path},{'warm' if 'warm' in r.path else 'plain'}\n" for r in records)
    )
    labelled = UmapExplorer(mapped, feature="rgb", compute=False, color_by="label", labels=csv)
    names = labelled.categories().names
    got = [names[c] for c in np.frombuffer(labelled.layer.codes, np.uint8).tolist()]
    assert got == ["warm" if "warm" in r.path else "plain" for r in records]
    assert set(labelled.categories().counts) == {
        sum("warm" in r.path for r in records),
        sum("warm" not in r.path for r in records),
    }


def test_colour_by_status_tells_fitted_from_placed(built, tmp_path) -> None:
    index = _copy(built, tmp_path)
    index.umap("rgb", clusters=3, sample_size=60)  # fitted on 60, the other 30 placed
    explorer = UmapExplorer(index, feature="rgb", compute=False, color_by="status")
    cats = explorer.categories()
    assert dict(zip(cats.names, cats.counts, strict=True)) == {"fitted": 60, "placed later": 30}
    names = [cats.names[c] for c in np.frombuffer(explorer.layer.codes, np.uint8).tolist()]
    fitted = set(projection_module.fitted_ids(index, "rgb").tolist())
    assert names == ["fitted" if int(i) in fitted else "placed later" for i in explorer.points.ids]


# -- selection, count and gallery --------------------------------------------------------------


def test_lasso_selects_every_point_inside_and_shows_it(explorer: UmapExplorer) -> None:
    assert explorer.selected == []
    assert "0 of 90 selected" in explorer.count.value
    assert _thumb_titles(explorer) == [] and "Lasso or brush" in explorer.gallery.hint

    xy = explorer.points.xy
    centre = np.median(xy, axis=0)
    radius = 0.3 * np.ptp(xy, axis=0).max()
    polygon = [
        (centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a))
        for a in np.linspace(0, 6.28, 40)
    ]
    expected = sorted(explorer.points.ids[explorer.points.in_polygon(polygon)].tolist())
    assert 0 < len(expected) < 90
    _gesture(explorer, {"event": "lasso", "polygon": [list(p) for p in polygon], "add": False})
    assert explorer.selected == expected
    assert f"{len(expected)} of 90 selected" in explorer.count.value
    paths = [r.path for r in explorer.index.records(expected)]
    assert _thumb_titles(explorer) == paths[:PAGE_SIZE]
    thumbs = explorer.gallery.thumbnails
    assert len(thumbs) == min(len(expected), PAGE_SIZE)
    assert all(jpeg.startswith(b"\xff\xd8\xff") for jpeg in thumbs)
    assert _mask(explorer) == np.isin(explorer.points.ids, expected).astype(int).tolist()
    assert repr(explorer) == f"UmapExplorer('rgb', 90 points, {len(expected)} selected)"

    explorer.clear()
    assert explorer.selected == [] and explorer.layer.mask == b""  # the plain look again
    assert "0 of 90 selected" in explorer.count.value and _thumb_titles(explorer) == []


def test_brush_and_shift_add_and_a_click_that_clears(explorer: UmapExplorer, monkeypatch) -> None:
    xy = explorer.points.xy
    left = [float(xy[:, 0].min()) - 1, float(np.median(xy[:, 0]))]
    rows = [float(xy[:, 1].max()) + 1, float(xy[:, 1].min()) - 1]  # dragged bottom-up
    first = explorer.points.in_box(left, rows)
    assert 0 < first.sum() < 90
    explorer.tool.value = "brush"
    assert explorer.layer.tool == "brush" and explorer.figure.interaction is None
    _gesture(explorer, {"event": "brush", "x": left, "y": rows, "add": False})
    assert explorer.selected == sorted(explorer.points.ids[first].tolist())

    right = [float(np.median(xy[:, 0])), float(xy[:, 0].max()) + 1]
    top = [float(np.median(xy[:, 1])), float(xy[:, 1].max()) + 1]
    second = explorer.points.in_box(right, top)
    _gesture(explorer, {"event": "brush", "x": right, "y": top, "add": True})  # shift held
    assert explorer.selected == sorted(explorer.points.ids[first | second].tolist())
    _gesture(explorer, {"event": "brush", "x": right, "y": top, "add": False})  # replaces
    assert explorer.selected == sorted(explorer.points.ids[second].tolist())

    sent = _replies(explorer, monkeypatch)
    _gesture(explorer, {"event": "click", "x": 0, "y": 0, "dx": 0.01, "dy": 0.01, "add": False})
    assert explorer.selected == [] and sent == [({"event": "clear"}, None)]

    explorer.tool.value = "pan/zoom"
    assert explorer.figure.interaction is explorer.panzoom and explorer.layer.tool == "pan/zoom"
    explorer.tool.value = "lasso"
    assert explorer.figure.interaction is None


def test_select_from_python(explorer: UmapExplorer) -> None:
    ids = explorer.points.ids
    wanted = [int(i) for i in ids[[3, 30, 60]]]
    explorer.select([*wanted, 10_000])  # an id not on the map is ignored
    assert explorer.selected == sorted(wanted)
    assert np.flatnonzero(_mask(explorer)).tolist() == [3, 30, 60]
    explorer.select(ids[[1]], add=True)
    assert explorer.selected == sorted([*wanted, int(ids[1])])
    explorer.selected = [int(ids[5]), int(ids[2]), int(ids[5]), 10_000]  # assigning works too
    assert explorer.selected == sorted([int(ids[5]), int(ids[2])])
    assert np.flatnonzero(_mask(explorer)).tolist() == [2, 5]
    xy = explorer.points.xy
    explorer.select_box(-1e9, 1e9, -1e9, 1e9)
    assert len(explorer.selected) == 90
    explorer.select_polygon([(-1e9, -1e9), (1e9, -1e9), (0, 1e9)])
    assert len(explorer.selected) == 90
    explorer.select_polygon([(0, 0), (1, 1)])  # no area: nothing
    assert explorer.selected == [] and xy.shape == (90, 2)


def test_gallery_pages_and_clamps(explorer: UmapExplorer) -> None:
    explorer.select(explorer.points.ids)
    assert len(explorer.selected) == 90
    pages = []
    for _ in range(4):  # the last click goes past the end and stays on page 3
        pages.append((explorer.page_label.value, len(_thumb_titles(explorer))))
        explorer.next_button.click()
    assert [count for _label, count in pages] == [PAGE_SIZE, PAGE_SIZE, 10, 10]
    assert "page 3/3" in pages[-1][0]
    assert _thumb_titles(explorer) == [
        r.path for r in explorer.index.records(explorer.selected[80:])
    ]
    for _ in range(5):
        explorer.prev_button.click()
    assert "page 1/3" in explorer.page_label.value
    explorer.next_button.click()
    explorer.select(explorer.points.ids[:2])  # a new selection starts on its first page
    assert "page 1/1" in explorer.page_label.value and len(_thumb_titles(explorer)) == 2


def test_hover_answers_with_the_thumbnail_and_name(explorer: UmapExplorer, monkeypatch) -> None:
    sent = _replies(explorer, monkeypatch)
    x, y = (float(v) for v in explorer.points.xy[7])
    _gesture(
        explorer, {"event": "hover", "x": x + 0.001, "y": y, "dx": 0.01, "dy": 0.01, "radius": 8}
    )
    ((reply, buffers),) = sent
    record = explorer.index.records([int(explorer.points.ids[7])])[0]
    assert reply["id"] == record.id and reply["name"] == record.path
    assert (reply["x"], reply["y"]) == (x, y)
    assert buffers[0][:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    _gesture(explorer, {"event": "hover", "x": 1e6, "y": 1e6, "dx": 0.01, "dy": 0.01, "radius": 8})
    assert sent[-1] == ({"event": "hover", "id": None}, None)


# -- no WebGL ----------------------------------------------------------------------------------


def test_without_webgl_the_map_falls_back_to_svg_and_says_so(mapped: ImageIndex) -> None:
    explorer = UmapExplorer(mapped, feature="rgb", compute=False)
    _gesture(explorer, {"event": "webgl", "message": "this browser gives no WebGL context"})
    assert explorer.renderer == "svg"
    assert "drawn as SVG" in explorer.message.value and "no WebGL context" in explorer.message.value
    scatter = explorer.figure.marks[0]
    assert len(scatter.x) == 90 and scatter.selected is None and scatter.unselected_style == {}
    np.testing.assert_array_equal(
        np.asarray(scatter.color), cluster_categories(explorer.projection.clusters).codes
    )
    explorer.select(explorer.points.ids[[4, 9]])
    assert sorted(np.asarray(scatter.selected).tolist()) == [4, 9]
    assert scatter.unselected_style == {"opacity": 0.2}
    explorer.clear()  # clearing restores the unselected look
    assert scatter.selected is None and scatter.unselected_style == {}
    explorer.color_by = "folder"
    assert explorer.figure.marks[0] is not scatter and len(explorer.figure.marks) == 4


# -- linking with a SearchWidget ---------------------------------------------------------------


def test_search_results_and_query_are_marked_on_the_map(linked) -> None:
    explorer, search = linked
    assert len(explorer.hits.x) == 0 and len(explorer.query_mark.x) == 0
    index = explorer.index
    results = search.search(_photo(index, "coffee"))
    assert len(results.ids) == 5
    expected = explorer.points.xy[_positions(explorer, results.ids)]
    np.testing.assert_array_equal(
        np.sort(_marked(explorer.hits), axis=0), np.sort(expected, axis=0)
    )
    np.testing.assert_array_equal(_marked(explorer.hit_halo), _marked(explorer.hits))
    # ring colours follow the theme (readable on light and dark backgrounds)
    assert explorer.hits.stroke.startswith("var(--jp-ui-font-color0")
    assert explorer.hit_halo.stroke.startswith("var(--jp-layout-color0")

    query = _marked(explorer.query_mark)
    assert query.shape == (1, 2) and np.isfinite(query).all()
    np.testing.assert_allclose(
        query, projection_module.place(index, "rgb", _photo(index, "coffee"))
    )
    own = explorer.points.xy[_positions(explorer, [_id(index, "coffee")])[0]]
    spread = np.ptp(explorer.points.xy, axis=0).max()
    assert np.linalg.norm(query[0] - own) < 0.2 * spread

    search.clear()
    assert len(explorer.hits.x) == 0 and len(explorer.query_mark.x) == 0


def test_clicking_a_point_searches_more_like_it(linked) -> None:
    explorer, search = linked
    explorer.tool.value = "click"
    position = 33
    clicked = int(explorer.points.ids[position])
    x, y = (float(v) for v in explorer.points.xy[position])
    _gesture(explorer, {"event": "click", "x": x, "y": y, "dx": 1e-4, "dy": 1e-4, "add": False})
    assert search.query == clicked and search.error == ""
    ids = [hit["id"] for hit in search.results]
    assert len(ids) == 5 and clicked not in ids
    np.testing.assert_array_equal(_marked(explorer.query_mark), explorer.points.xy[[position]])
    _gesture(explorer, {"event": "click", "x": 1e6, "y": 1e6, "dx": 1e-4, "dy": 1e-4, "add": False})
    assert search.query == clicked  # not on a point: nothing


def test_search_only_inside_the_selection(linked) -> None:
    explorer, search = linked
    index = explorer.index
    inside = [_id(index, n) for n in ("chelsea", "chelsea_crop", "page", "flower_small", "moon")]
    explorer.select(inside)
    assert search.scope is None  # not until asked
    search.search(_photo(index, "coffee"))
    assert not {h["id"] for h in search.results} <= set(inside)

    explorer.scope_box.value = True
    assert explorer.search_in_selection
    assert search.scope == sorted(inside) and search.scope_size == 5
    ids = [hit["id"] for hit in search.results]  # the query reran inside the selection
    assert sorted(ids) == sorted(inside)

    explorer.select(inside[:3])  # a new selection is the new scope
    assert search.scope == sorted(inside[:3])
    assert sorted(h["id"] for h in search.results) == sorted(inside[:3])

    explorer.search_in_selection = False
    assert search.scope is None and search.scope_size == -1
    assert len(search.results) == 5

    explorer.search_in_selection = True
    explorer.clear()  # an empty selection does not mean "search nothing"
    assert search.scope is None and len(search.results) == 5


def test_clicking_inside_a_scoped_selection_keeps_the_scope(linked) -> None:
    explorer, search = linked
    index = explorer.index
    inside = [
        _id(index, n) for n in ("chelsea", "chelsea_crop", "chelsea_mirror", "page", "flower")
    ]
    explorer.select(inside)
    explorer.search_in_selection = True
    explorer.tool.value = "click"
    x, y = (float(v) for v in explorer.points.xy[_positions(explorer, [inside[0]])[0]])
    _gesture(explorer, {"event": "click", "x": x, "y": y, "dx": 1e-4, "dy": 1e-4, "add": False})
    assert explorer.selected == sorted(inside)
    assert search.scope == sorted(inside)
    assert sorted(h["id"] for h in search.results) == sorted(inside[1:])


def test_app_builds_both_linked(mapped: ImageIndex) -> None:
    app = App(mapped, feature="rgb", compute=False)
    assert isinstance(app.search, SearchWidget) and isinstance(app.explorer, UmapExplorer)
    assert app.titles == ("Search & map", "Duplicates")
    assert list(app.children[0].children) == [app.search, app.explorer]
    app.search.search(_id(mapped, "moon"))
    assert len(app.explorer.hits.x) == len(app.search.results) == 10
    app.explorer.select([_id(mapped, "moon_crop"), _id(mapped, "moon_warm")])
    app.explorer.search_in_selection = True
    assert app.search.scope == sorted([_id(mapped, "moon_crop"), _id(mapped, "moon_warm")])
    assert len(app.search.results) == 2


def test_tags_written_in_one_linked_widget_show_in_the_other(mapped: ImageIndex, tmp_path) -> None:
    shutil.copytree(mapped.index_dir, tmp_path / "index")
    index = ImageIndex.open(mapped.root, index_dir=tmp_path / "index")
    app = App(index, feature="rgb", compute=False)
    search, explorer = app.search, app.explorer
    # tagged from the map: the search widget's "Within" menu offers it at once
    explorer.select([_id(index, "moon_crop"), _id(index, "moon_warm")])
    explorer.tag_selection("moons")
    assert {"name": "moons", "count": 2} in search.tags
    # tagged from the results: the map's tag box and colour menu offer it at once
    search.search(_id(index, "moon"))
    search.set_trait("picked", [search.results[0]["id"]])
    search.tag_picked("first")
    assert "first" in explorer.tag_box.options and "tag:first" in explorer.color_menu.options
    explorer.color_by = "tag:first"
    codes = np.frombuffer(explorer.layer.codes, np.uint8)
    first = explorer.points.ids == search.results[0]["id"]
    assert len(set(codes[first])) == 1 and set(codes[first]).isdisjoint(codes[~first])


# -- scale -------------------------------------------------------------------------------------


def test_a_large_map_draws_a_sample_but_selects_over_all(mapped: ImageIndex) -> None:
    capped = UmapExplorer(mapped, feature="rgb", compute=False, max_points=30)
    full = mapped.projection("rgb")
    np.testing.assert_array_equal(_drawn_xy(capped), full.xy[display_sample(90, 30)])
    assert len(np.frombuffer(capped.layer.codes, np.uint8)) == 30
    assert "Drawing a random 30 of 90 images" in capped.message.value
    assert "0 of 90 selected" in capped.count.value
    capped.select_box(-1e9, 1e9, -1e9, 1e9)  # every point, drawn or not
    assert capped.selected == sorted(full.ids.tolist())
    assert len(_mask(capped)) == 30 and all(_mask(capped))
    again = UmapExplorer(mapped, feature="rgb", compute=False, max_points=30)
    np.testing.assert_array_equal(_drawn_xy(again), _drawn_xy(capped))


@pytest.mark.slow
def test_every_point_of_a_large_map_selected(tmp_path: Path) -> None:
    rows = 300_000
    write_map_index(tmp_path / "index", rows)
    (tmp_path / "root").mkdir()
    index = ImageIndex.open(tmp_path / "root", index_dir=tmp_path / "index")
    explorer = UmapExplorer(index, feature="rgb", compute=False)
    assert len(_drawn_xy(explorer)) == rows
    _gesture(explorer, {"event": "brush", "x": [-1e3, 1e3], "y": [-1e3, 1e3], "add": False})
    assert len(explorer.selected) == rows and explorer.selected[:3] == [0, 1, 2]
    assert len(_mask(explorer)) == rows and "300,000 of 300,000 selected" in explorer.count.value
    assert len(_thumb_titles(explorer)) == PAGE_SIZE
    explorer.color_by = "folder"
    assert explorer.categories().counts == [rows // 5] * 5


# -- what a user can get wrong -----------------------------------------------------------------


def _assert_usable(explorer: UmapExplorer) -> None:
    assert len(explorer.points) == 0 and explorer.projection is None
    explorer.select([1, 2])
    explorer.select_box(0, 1, 0, 1)
    _gesture(explorer, {"event": "lasso", "polygon": [[0, 0], [1, 0], [0, 1]], "add": False})
    explorer.clear()
    explorer.next_button.click()
    assert explorer.selected == [] and "0 of 0 selected" in explorer.count.value


def test_a_map_never_computed_says_how_to_make_it(built, tmp_path) -> None:
    index = _copy(built, tmp_path)
    explorer = UmapExplorer(index, feature="dhash", compute=False)
    assert "no UMAP map of &#x27;dhash&#x27; yet" in explorer.message.value
    assert "idx.umap(&#x27;dhash&#x27;)" in explorer.message.value
    _assert_usable(explorer)


def test_a_feature_not_in_the_index_is_a_message(mapped: ImageIndex) -> None:
    explorer = UmapExplorer(mapped)  # feature="embedding", not indexed here
    assert "feature &#x27;embedding&#x27; is not in this index" in explorer.message.value
    _assert_usable(explorer)
    assert "cannot map &#x27;thumb&#x27;" in UmapExplorer(mapped, "thumb").message.value


def test_too_few_images_is_a_message(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        Image.fromarray(data.coffee()).save(tmp_path / f"{name}.jpg")
    index = ImageIndex.open(tmp_path, features=FEATURES)
    index.update(progress=False, workers=0)
    explorer = UmapExplorer(index, feature="rgb")
    assert "needs at least 5 images; this index has 3" in explorer.message.value
    _assert_usable(explorer)


def test_an_index_never_built_is_a_message(tmp_path: Path) -> None:
    Image.fromarray(data.coffee()).save(tmp_path / "a.jpg")
    explorer = UmapExplorer(ImageIndex.open(tmp_path, features=FEATURES), feature="rgb")
    assert "no index at" in explorer.message.value and "update()" in explorer.message.value
    _assert_usable(explorer)


def test_a_stale_map_says_images_are_missing(mapped: ImageIndex, tmp_path: Path) -> None:
    index = _copy((mapped.root, mapped.index_dir), tmp_path, copy_photos=True)
    Image.fromarray(data.astronaut()).save(index.root / "new1.jpg")
    Image.fromarray(data.rocket()).save(index.root / "new2.jpg")
    index.update(progress=False, workers=0)
    assert len(index) == 92

    stale = UmapExplorer(index, feature="rgb", compute=False)
    assert "misses 2 new or changed images" in stale.message.value
    assert "idx.umap(&#x27;rgb&#x27;)" in stale.message.value
    assert len(stale.points) == 90  # the old map still shows

    extended = UmapExplorer(index, feature="rgb")  # compute=True adds them
    assert extended.message.value == "" and len(extended.points) == 92
    assert extended.projection.transformed == 2


def test_a_bad_colour_choice_is_a_readable_error(mapped: ImageIndex) -> None:
    with pytest.raises(
        Exception, match="color_by must be one of cluster, folder, status, tags; got 'label'"
    ):
        UmapExplorer(mapped, feature="rgb", compute=False, color_by="label")


def test_the_scope_box_shows_only_once_a_search_is_linked(
    mapped: ImageIndex, explorer: UmapExplorer
) -> None:
    """A standalone map has no search to restrict: "search only inside the selection" is hidden."""
    assert explorer.scope_box.layout.display == "none"
    explorer.link(SearchWidget(mapped, mode="rgb", k=5))
    assert explorer.scope_box.layout.display is None
    assert App(mapped, feature="rgb", compute=False).explorer.scope_box.layout.display is None


def test_the_legend_lists_every_colour_without_a_scroll_box() -> None:
    clusters = np.concatenate(
        [np.full(200 - k, k) for k in range(len(PALETTE) + 3)] + [np.full(50, -1)]
    )
    html_text = legend_html(cluster_categories(clusters))
    assert html_text.count('class="imrec-umap-legend-row"') == len(PALETTE) + 2
    outer = re.match(r'<div class="imrec-umap-legend" style="([^"]*)"', html_text)
    assert outer is not None
    assert "max-height" not in outer[1] and "overflow" not in outer[1]


# -- tagging from the map ------------------------------------------------------------------------


@pytest.fixture
def tagging(mapped: ImageIndex, tmp_path: Path) -> UmapExplorer:
    """An explorer on a copy of the mapped index, so its tags stay in this test."""
    shutil.copytree(mapped.index_dir, tmp_path / "index")
    index = ImageIndex.open(mapped.root, index_dir=tmp_path / "index")
    return UmapExplorer(index, feature="rgb", compute=False, page_size=PAGE_SIZE)


def _click_thumb(explorer: UmapExplorer, id_: int) -> None:
    """A click on a gallery thumbnail, as the front end sends it."""
    explorer.gallery._received(explorer.gallery, {"event": "toggle", "id": id_}, [])


def _message(explorer: UmapExplorer) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", explorer.message.value))


def test_tag_categories_name_each_images_tag_several_or_none() -> None:
    ids = np.arange(6)
    # a tag literally called "(no tag)" is a tag like any other, not the untagged images
    categories = tag_categories(ids, {"a": [0, 1, 5], "b": [1, 2], "(no tag)": [3]})
    shown = [categories.names[code] for code in categories.codes]
    assert shown == ["a", "(several tags)", "b", "(no tag)", "(no tag)", "a"]
    assert categories.names[-1] == "(no tag)" and categories.colors[-1] == "#b0b0b0"
    assert shown.count("(no tag)") == 2 and categories.codes[3] != categories.codes[4]
    assert dict(zip(categories.names, categories.counts, strict=True))["a"] == 2
    empty = tag_categories(ids, {})
    assert empty.names == ["(no tag)"] and empty.counts == [6]


def test_tag_selection_tags_the_kept_images_and_recolours(tagging: UmapExplorer) -> None:
    explorer, index = tagging, tagging.index
    explorer.color_by = "tag:keep"  # coloured by a tag nobody has yet
    assert set(np.frombuffer(explorer.layer.codes, np.uint8)) == {0}
    explorer.select_box(-1e9, 1e9, -1e9, 1e9)
    chosen = explorer.selected[:12]
    explorer.select(chosen)
    out = chosen[3]
    _click_thumb(explorer, out)
    assert explorer.left_out == [out] and explorer.kept == [i for i in chosen if i != out]
    assert [item["out"] for item in explorer.gallery.items] == [i == out for i in chosen]
    assert "12 of 90 selected (1 left out)" in explorer.count.value

    explorer.tag_box.value = "  keep "
    explorer.tag_button.click()
    assert _message(explorer) == "tagged 11 images 'keep'"
    assert index.tagged("keep").tolist() == explorer.kept
    assert "keep" in explorer.tag_box.options and "tag:keep" in explorer.color_menu.options
    # the map shows the new tag at once: the kept images in one colour, the rest in another
    codes = np.frombuffer(explorer.layer.codes, np.uint8)
    tagged = np.isin(explorer.points.ids, explorer.kept)
    assert len(set(codes[tagged])) == 1 and set(codes[tagged]).isdisjoint(codes[~tagged])
    assert "keep" in explorer.legend.value and ">11<" in explorer.legend.value

    _click_thumb(explorer, out)  # taken back in: tagging again adds only it
    assert explorer.left_out == [] and "left out" not in explorer.count.value
    explorer.tag_button.click()
    assert _message(explorer) == "tagged 12 images 'keep' (11 had it already)"
    assert index.tagged("keep").tolist() == chosen

    explorer.select(chosen[:2])
    explorer.untag_button.click()
    assert _message(explorer) == "untagged 2 images 'keep'"
    assert index.tagged("keep").tolist() == chosen[2:]
    codes = np.frombuffer(explorer.layer.codes, np.uint8)
    assert codes[explorer.points.ids == chosen[0]][0] != codes[explorer.points.ids == chosen[5]][0]


def test_colour_by_tags_shows_each_images_tag_in_the_legend(tagging: UmapExplorer) -> None:
    explorer, ids = tagging, tagging.points.ids.tolist()
    explorer.color_by = "tags"
    assert explorer.categories().names == ["(no tag)"]
    explorer.select(ids[:5])
    assert explorer.tag_selection("cats") == 5
    explorer.select(ids[3:10])
    assert explorer.tag_selection("dogs") == 7
    counts = dict(zip(explorer.categories().names, explorer.categories().counts, strict=True))
    assert counts == {"dogs": 5, "cats": 3, "(several tags)": 2, "(no tag)": 80}
    legend = html.unescape(re.sub(r"<[^>]+>", " ", explorer.legend.value)).split()
    assert legend[:4] == ["dogs", "5", "cats", "3"] and "80" in legend
    codes = np.frombuffer(explorer.layer.codes, np.uint8)
    names = explorer.categories().names
    assert [names[c] for c in codes[:10]] == ["cats"] * 3 + ["(several tags)"] * 2 + ["dogs"] * 5


def test_bad_tag_input_is_one_message_and_the_widget_stays_usable(
    tagging: UmapExplorer, monkeypatch
) -> None:
    explorer, index = tagging, tagging.index
    explorer.tag_box.value = "keep"
    explorer.tag_button.click()
    assert _message(explorer) == "the selection is empty; lasso or brush some points first"
    explorer.select(explorer.points.ids[:3])
    for name, says in [
        ("   ", "a tag name needs at least one visible character"),
        ("bad\x07name", "control character U+0007"),
        ("x" * 101, "is 101 characters; at most 100"),
    ]:
        explorer.tag_box.value = name
        explorer.tag_button.click()
        assert says in _message(explorer) and "\n" not in _message(explorer)
    for id_ in explorer.selected:
        _click_thumb(explorer, id_)
    explorer.tag_box.value = "keep"
    explorer.untag_button.click()
    assert _message(explorer).startswith("every selected image is left out")
    with pytest.raises(TagError, match="every selected image is left out"):
        explorer.tag_selection("keep")
    assert index.tags() == {}
    _click_thumb(explorer, explorer.selected[0])  # still usable: one taken back is tagged
    explorer.tag_button.click()
    assert _message(explorer) == "tagged 1 image 'keep'" and index.tags() == {"keep": 1}


def test_a_read_only_index_says_so_when_tagging(mapped: ImageIndex, tmp_path: Path, monkeypatch):
    shutil.copytree(mapped.index_dir, tmp_path / "index")
    # The tests run as root, whom file modes do not stop: the index is opened read-only instead.
    monkeypatch.setattr(ImageIndex, "read_only", property(lambda self: True))
    index = ImageIndex.open(mapped.root, index_dir=tmp_path / "index")
    explorer = UmapExplorer(index, feature="rgb", compute=False)
    explorer.select(explorer.points.ids[:4])
    explorer.tag_box.value = "keep"
    explorer.tag_button.click()
    assert "is read-only here" in _message(explorer) and index.tags() == {}
    explorer.select(explorer.points.ids[:2])  # still usable
    assert explorer.selected == sorted(explorer.points.ids[:2].tolist())


def test_the_gallery_takes_only_clicks_on_the_images_it_shows(tagging: UmapExplorer) -> None:
    explorer, gallery = tagging, tagging.gallery
    explorer.select(explorer.points.ids[:50])
    on_page, off_page = gallery.ids, explorer.selected[PAGE_SIZE]
    assert len(on_page) == PAGE_SIZE and off_page not in on_page
    for bad in [
        {"event": "toggle", "id": off_page},  # selected, but not shown: no click can name it
        {"event": "toggle", "id": 10**6},
        {"event": "toggle", "id": True},
        {"event": "toggle", "id": str(on_page[0])},
        {"event": "toggle"},
        {"event": "delete", "id": on_page[0]},
        [on_page[0]],
        "toggle",
    ]:
        gallery._received(gallery, bad, [])
    assert gallery.rejected == 8 and explorer.left_out == []
    gallery.set_state({"items": [], "hint": "hacked"})  # the browser cannot write the traits
    assert gallery.ids == on_page and gallery.hint == ""
    with pytest.raises(ValueError, match="not in the selection"):
        explorer.toggle(int(explorer.points.ids[-1]))


def test_left_out_images_follow_the_selection(tagging: UmapExplorer) -> None:
    explorer = tagging
    search = SearchWidget(explorer.index, mode="rgb", k=5)
    explorer.link(search)
    ids = explorer.points.ids.tolist()
    explorer.select(ids[:6])
    _click_thumb(explorer, ids[1])
    explorer.search_in_selection = True
    assert search.scope == [i for i in sorted(ids[:6]) if i != ids[1]]  # left out = not searched
    explorer.select(ids[6:8], add=True)  # shift-add keeps what was left out
    assert explorer.left_out == [ids[1]]
    explorer.select(ids[2:4])  # a selection without it forgets it
    assert explorer.left_out == [] and search.scope == sorted(ids[2:4])
    _click_thumb(explorer, ids[2])
    explorer.clear()
    assert explorer.left_out == [] and explorer.gallery.items == []


def test_app_opens_duplicates_in_a_tab_when_asked(mapped: ImageIndex) -> None:
    from imrec_widgets import App as PublicApp
    from imrec_widgets.widgets import umap_explorer
    from imrec_widgets.widgets.app import App as AppHere
    from imrec_widgets.widgets.duplicates_widget import DuplicatesWidget

    assert PublicApp is AppHere is umap_explorer.App is App
    app = App(mapped, feature="rgb", compute=False)
    assert app.children[1].children == ()  # not looked for until the tab opens
    app.selected_index = 1
    (shown,) = app.children[1].children
    assert isinstance(shown, DuplicatesWidget) and shown is app.duplicates
    assert len(shown.groups) > 0


def test_app_on_an_index_without_hashes_says_why_duplicates_is_empty(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    write_map_index(tmp_path / "index", 50)  # rgb and thumb only: no dhash to compare
    index = ImageIndex.open(tmp_path / "root", index_dir=tmp_path / "index")
    app = App(index, feature="rgb", compute=False)
    app.selected_index = 1
    (shown,) = app.children[1].children
    assert app.duplicates is None
    assert "No duplicates to show: mode &#x27;dhash&#x27; is not in this index" in shown.value
    app.selected_index = 0  # the search and the map still work
    app.explorer.select_box(-1e9, 1e9, -1e9, 1e9)
    assert len(app.explorer.selected) == 50
