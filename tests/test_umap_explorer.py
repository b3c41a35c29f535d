"""UmapExplorer without a browser: selections as bqplot's selectors set them, state as shown."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from imrec_widgets import ImageIndex
from imrec_widgets import projection as projection_module
from imrec_widgets.widgets.search_widget import SearchWidget
from imrec_widgets.widgets.umap_explorer import (
    _CLUSTER_COLORS,
    _NOISE_COLOR,
    App,
    UmapExplorer,
    display_sample,
    gallery_page,
    ids_in_box,
    padded_range,
    point_colors,
)

FEATURES = ["rgb", "dhash", "thumb"]
PAGE_SIZE = 40


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(variant_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The photos with variants (90 images) and an index of them with no map yet."""
    index_dir = tmp_path_factory.mktemp("umap-explorer") / "index"
    index = ImageIndex.open(variant_folder, index_dir=index_dir, features=FEATURES)
    index.update(progress=False, workers=0)
    assert len(index) == 90
    index.close()
    return variant_folder, index_dir


def _copy(built: tuple[Path, Path], target: Path, *, copy_photos: bool = False) -> ImageIndex:
    root, index_dir = built
    if copy_photos:
        root = Path(shutil.copytree(root, target / "photos"))
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
    return re.findall(r'class="imrec-umap-thumb"[^>]*title="([^"]*)"', explorer.gallery.value)


def _photo(index: ImageIndex, name: str) -> Path:
    return next(index.root.rglob(f"{name}.jpg"))


def _id(index: ImageIndex, name: str) -> int:
    return next(r.id for r in index.records(index.ids()) if Path(r.path).stem == name)


def _positions(explorer: UmapExplorer, ids) -> list[int]:
    return [int(np.flatnonzero(explorer._ids == i)[0]) for i in ids]


def _marked(mark) -> np.ndarray:
    return np.column_stack([np.asarray(mark.x, dtype=float), np.asarray(mark.y, dtype=float)])


# -- helpers -----------------------------------------------------------------------------------


def test_point_colors_give_one_colour_per_cluster_and_grey_noise() -> None:
    colors = point_colors(np.array([0, 1, -1, len(_CLUSTER_COLORS), 1], dtype=np.int32))
    assert colors == [
        _CLUSTER_COLORS[0],
        _CLUSTER_COLORS[1],
        _NOISE_COLOR,
        _CLUSTER_COLORS[0],
        _CLUSTER_COLORS[1],
    ]
    assert point_colors(np.empty(0, np.int32)) == []


def test_ids_in_box_includes_edges_and_takes_either_order() -> None:
    ids = np.array([10, 11, 12, 13])
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [1.0, 5.0]], dtype=np.float32)
    assert ids_in_box(ids, xy, [0.5, 2.0], [0.0, 2.0]).tolist() == [11, 12]
    assert ids_in_box(ids, xy, [2.0, 0.5], [2.0, 0.0]).tolist() == [11, 12]
    assert ids_in_box(ids, xy, [5, 6], [5, 6]).tolist() == []


def test_gallery_page_clamps_and_counts_pages() -> None:
    ids = list(range(100, 185))  # 85 ids
    assert gallery_page(ids, 0, 40) == (ids[:40], 0, 3)
    assert gallery_page(ids, 2, 40) == (ids[80:], 2, 3)
    assert gallery_page(ids, 7, 40) == (ids[80:], 2, 3)
    assert gallery_page(ids, -3, 40) == (ids[:40], 0, 3)
    assert gallery_page([], 4, 40) == ([], 0, 1)


def test_padded_range_keeps_extreme_points_off_the_edge() -> None:
    assert padded_range(np.array([0.0, 4.0, 10.0])) == {"min": -0.5, "max": 10.5}
    assert padded_range(np.array([3.0, 3.0])) == {"min": 2.0, "max": 4.0}
    assert padded_range(np.empty(0)) == {}


def test_display_sample_caps_deterministically() -> None:
    assert display_sample(7, 10).tolist() == list(range(7))
    sample = display_sample(1000, 100)
    assert sample.size == 100 and np.unique(sample).size == 100
    assert np.all(np.diff(sample) > 0) and sample.min() >= 0 and sample.max() < 1000
    np.testing.assert_array_equal(sample, display_sample(1000, 100))
    assert not np.array_equal(sample, display_sample(1000, 100, seed=1))


# -- creation and the cache --------------------------------------------------------------------


def test_creation_computes_the_map_then_loads_it(built, tmp_path, monkeypatch) -> None:
    index = _copy(built, tmp_path)
    assert projection_module.status(index, "rgb")["state"] == "missing"
    first = UmapExplorer(index, feature="rgb", clusters=4)
    assert first.message.value == ""
    assert first.projection.fitted == len(index) == len(first._ids) == 90
    assert projection_module.status(index, "rgb") == {"state": "fresh", "pending": 0}
    assert set(first.projection.clusters.tolist()) == {0, 1, 2, 3}
    colors = list(first.scatter.colors)
    assert len(colors) == 90 and set(colors) == set(_CLUSTER_COLORS[:4])
    np.testing.assert_array_equal(np.asarray(first.scatter.x), first.projection.xy[:, 0])
    np.testing.assert_array_equal(np.asarray(first.scatter.y), first.projection.xy[:, 1])
    assert repr(first) == "UmapExplorer('rgb', 90 points, 0 selected)"
    xy = first.projection.xy
    assert (first.x_scale.min, first.x_scale.max) == tuple(padded_range(xy[:, 0]).values())
    assert (first.y_scale.min, first.y_scale.max) == tuple(padded_range(xy[:, 1]).values())
    assert first.x_scale.min < xy[:, 0].min() and first.y_scale.max > xy[:, 1].max()

    def no_refit(*_args, **_kwargs):
        raise AssertionError("the cached map was refitted")

    monkeypatch.setattr(projection_module, "_fit", no_refit)
    reducer = index.index_dir / "umap_rgb.npz"
    stamp = reducer.stat().st_mtime_ns
    second = UmapExplorer(index, feature="rgb")
    np.testing.assert_array_equal(second.projection.xy, first.projection.xy)
    np.testing.assert_array_equal(second.projection.clusters, first.projection.clusters)
    assert second.projection.transformed == 0 and second.message.value == ""
    # the same parameters again: the cached fit is reused, not refitted
    third = UmapExplorer(index, feature="rgb", clusters=4)
    np.testing.assert_array_equal(third.projection.xy, first.projection.xy)
    assert reducer.stat().st_mtime_ns == stamp


def test_new_parameters_are_not_silently_ignored(mapped: ImageIndex, tmp_path: Path) -> None:
    """A fresh cached map made with other settings must not stand in for the ones asked for."""
    index = _copy((mapped.root, mapped.index_dir), tmp_path)
    assert projection_module.load(index, "rgb").params["n_neighbors"] == 15
    explorer = UmapExplorer(index, feature="rgb", n_neighbors=5, clusters=2)
    assert explorer.projection.params["n_neighbors"] == 5
    assert set(explorer.projection.clusters.tolist()) == {0, 1}
    assert set(np.asarray(explorer.scatter.colors).tolist()) == set(_CLUSTER_COLORS[:2])


# -- selection, count and gallery --------------------------------------------------------------


def test_lasso_selection_gives_ids_count_and_thumbnails(explorer: UmapExplorer) -> None:
    assert explorer.selected == []
    assert "0 of 90 selected" in explorer.count.value
    assert _thumb_titles(explorer) == [] and "Lasso or brush" in explorer.gallery.value

    positions = [5, 0, 42, 17]
    explorer.scatter.selected = positions  # what bqplot's LassoSelector does
    expected = sorted(int(explorer._ids[p]) for p in positions)
    assert explorer.selected == expected
    assert "4 of 90 selected" in explorer.count.value
    paths = [r.path for r in explorer.index.records(expected)]
    assert _thumb_titles(explorer) == paths
    assert explorer.gallery.value.count('src="data:image/jpeg;base64,/9j/') == 4  # real JPEGs
    assert repr(explorer) == "UmapExplorer('rgb', 90 points, 4 selected)"

    explorer.clear()
    assert explorer.selected == [] and explorer.scatter.selected is None
    assert "0 of 90 selected" in explorer.count.value and _thumb_titles(explorer) == []


def test_gallery_pages_and_clamps(explorer: UmapExplorer) -> None:
    explorer.scatter.selected = list(range(90))
    assert len(explorer.selected) == 90
    pages = []
    for _ in range(4):  # the last click goes past the end and stays on page 3
        pages.append((explorer.page_label.value, len(_thumb_titles(explorer))))
        explorer.next_button.click()
    assert [count for _label, count in pages] == [PAGE_SIZE, PAGE_SIZE, 10, 10]
    assert ["page 1/3" in label for label, _count in pages] == [True, False, False, False]
    assert "page 3/3" in pages[-1][0]
    third = _thumb_titles(explorer)
    assert third == [r.path for r in explorer.index.records(explorer.selected[80:])]
    for _ in range(5):
        explorer.prev_button.click()
    assert "page 1/3" in explorer.page_label.value
    assert _thumb_titles(explorer) == [
        r.path for r in explorer.index.records(explorer.selected[:40])
    ]

    explorer.next_button.click()
    explorer.scatter.selected = [1, 2]  # a new selection starts on its first page
    assert "page 1/1" in explorer.page_label.value and len(_thumb_titles(explorer)) == 2


def test_select_from_python_marks_the_points(explorer: UmapExplorer) -> None:
    wanted = [int(i) for i in explorer._ids[[3, 30, 60]]]
    explorer.select([*wanted, 10_000])  # an id not on the map is ignored
    assert explorer.selected == sorted(wanted)
    assert sorted(np.asarray(explorer.scatter.selected).tolist()) == [3, 30, 60]


def test_brush_rectangle_selects_the_points_inside(explorer: UmapExplorer) -> None:
    xy = explorer._xy
    x_range = [float(xy[:, 0].min()) - 1, float(np.median(xy[:, 0]))]
    y_range = [float(xy[:, 1].max()) + 1, float(xy[:, 1].min()) - 1]  # dragged bottom-up
    expected = sorted(ids_in_box(explorer._ids, xy, x_range, y_range).tolist())
    assert 0 < len(expected) < len(xy)
    explorer.tool.value = "brush"
    assert explorer.figure.interaction is explorer.brush
    explorer.brush.selected_x = np.array(x_range)
    explorer.brush.selected_y = np.array(y_range)
    assert explorer.selected == expected
    assert f"{len(expected)} of 90 selected" in explorer.count.value
    assert len(_thumb_titles(explorer)) == min(len(expected), PAGE_SIZE)
    explorer.tool.value = "pan/zoom"
    assert explorer.figure.interaction is explorer.panzoom
    explorer.tool.value = "click"  # no selector over the points: they can be clicked
    assert explorer.figure.interaction is None
    explorer.tool.value = "lasso"
    assert explorer.figure.interaction is explorer.lasso


def test_clear_removes_the_lasso_outlines_and_the_brush(
    explorer: UmapExplorer, monkeypatch
) -> None:
    sent = []
    monkeypatch.setattr(explorer.lasso, "send", sent.append)
    explorer.brush.selected_x = np.array([-100.0, 100.0])
    explorer.brush.selected_y = np.array([-100.0, 100.0])
    assert len(explorer.selected) == 90
    explorer.clear()
    assert explorer.selected == [] and explorer.scatter.selected is None
    assert explorer.brush.selected_x is None and explorer.brush.selected_y is None
    assert sent == [{"type": "reset"}]  # the browser's lasso forgets its outlines


# -- linking with a SearchWidget ---------------------------------------------------------------


def test_search_results_and_query_are_marked_on_the_map(linked) -> None:
    explorer, search = linked
    assert len(explorer.hits.x) == 0 and len(explorer.query_mark.x) == 0
    index = explorer.index
    results = search.search(_photo(index, "coffee"))
    assert len(results.ids) == 5
    expected = explorer._xy[_positions(explorer, results.ids)]
    np.testing.assert_array_equal(_marked(explorer.hits), expected)

    query = _marked(explorer.query_mark)
    assert query.shape == (1, 2) and np.isfinite(query).all()
    np.testing.assert_allclose(
        query, projection_module.place(index, "rgb", _photo(index, "coffee"))
    )
    # UMAP's transform puts the photo near its own indexed copy
    own = explorer._xy[_positions(explorer, [_id(index, "coffee")])[0]]
    spread = np.ptp(explorer._xy, axis=0).max()
    assert np.linalg.norm(query[0] - own) < 0.2 * spread

    search.clear()
    assert len(explorer.hits.x) == 0 and len(explorer.query_mark.x) == 0


def test_clicking_a_point_searches_more_like_it(linked) -> None:
    explorer, search = linked
    position = 33
    clicked = int(explorer._ids[position])
    explorer._clicked(None, {"event": "element_click", "data": {"index": position}})
    assert search.query == clicked and search.error == ""
    ids = [hit["id"] for hit in search.results]
    assert len(ids) == 5 and clicked not in ids
    np.testing.assert_array_equal(_marked(explorer.query_mark), explorer._xy[[position]])
    np.testing.assert_array_equal(_marked(explorer.hits), explorer._xy[_positions(explorer, ids)])
    explorer._clicked(None, {"event": "element_click", "data": {}})  # not on a point: nothing
    assert search.query == clicked


def test_search_only_inside_the_selection(linked) -> None:
    explorer, search = linked
    index = explorer.index
    inside = [_id(index, n) for n in ("cat", "cat_crop", "page", "flower_small", "moon")]
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
    assert not {h["id"] for h in search.results} <= set(inside)

    explorer.search_in_selection = True
    explorer.clear()  # an empty selection does not mean "search nothing"
    assert search.scope is None and len(search.results) == 5


def test_clicking_inside_a_scoped_selection_keeps_the_scope(linked) -> None:
    """bqplot's click interaction must not turn the selection into the clicked point alone."""
    explorer, search = linked
    assert "click" not in explorer.scatter.interactions
    index = explorer.index
    inside = [_id(index, n) for n in ("cat", "cat_crop", "cat_mirror", "page", "flower")]
    explorer.select(inside)
    explorer.search_in_selection = True
    position = _positions(explorer, [inside[0]])[0]
    explorer._clicked(None, {"event": "element_click", "data": {"index": position}})
    assert explorer.selected == sorted(inside)
    assert search.scope == sorted(inside)
    assert sorted(h["id"] for h in search.results) == sorted(inside[1:])


def test_app_builds_both_linked(mapped: ImageIndex) -> None:
    app = App(mapped, feature="rgb", compute=False)
    assert isinstance(app.search, SearchWidget) and isinstance(app.explorer, UmapExplorer)
    assert list(app.children) == [app.search, app.explorer]
    app.search.search(_id(mapped, "moon"))
    assert len(app.explorer.hits.x) == len(app.search.results) == 10
    app.explorer.select([_id(mapped, "moon_crop"), _id(mapped, "moon_warm")])
    app.explorer.search_in_selection = True
    assert app.search.scope == sorted([_id(mapped, "moon_crop"), _id(mapped, "moon_warm")])
    assert len(app.search.results) == 2


# -- what a user can get wrong -----------------------------------------------------------------


def _assert_usable(explorer: UmapExplorer) -> None:
    assert len(explorer._ids) == 0 and explorer.projection is None
    explorer.select([1, 2])
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
    assert len(stale._ids) == 90  # the old map still shows

    extended = UmapExplorer(index, feature="rgb")  # compute=True adds them
    assert extended.message.value == "" and len(extended._ids) == 92
    assert extended.projection.transformed == 2


def test_a_large_map_shows_a_fixed_sample(mapped: ImageIndex) -> None:
    capped = UmapExplorer(mapped, feature="rgb", compute=False, max_points=30)
    assert len(capped._ids) == len(capped.scatter.x) == len(capped.scatter.colors) == 30
    assert "Showing a random 30 of 90 images" in capped.message.value
    assert "0 of 30 selected" in capped.count.value
    again = UmapExplorer(mapped, feature="rgb", compute=False, max_points=30)
    np.testing.assert_array_equal(again._ids, capped._ids)
    full = mapped.projection("rgb")
    np.testing.assert_array_equal(capped._ids, full.ids[display_sample(90, 30)])
    np.testing.assert_array_equal(capped._xy, full.xy[display_sample(90, 30)])
    capped.scatter.selected = [0, 29]
    assert capped.selected == sorted(int(i) for i in capped._ids[[0, 29]])
