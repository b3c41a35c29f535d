"""The map's data work without a widget: colour categories, box/lasso selection, hover lookup."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from imrec_widgets.mapdata import (
    MAX_LASSO_POINT_TESTS,
    MAX_LASSO_ROW_CROSSINGS,
    NOISE_COLOR,
    OTHER_COLOR,
    PALETTE,
    MapPoints,
    categorize,
    cielab,
    cluster_categories,
    display_sample,
    padded_range,
    thin_polygon,
)


def _inside_reference(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, one point at a time in plain Python (the slow, obvious version)."""
    result = []
    count = len(polygon)
    for px, py in points.tolist():
        inside = False
        for i in range(count):
            (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % count]
            if (y1 <= py < y2) or (y2 <= py < y1):
                if px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
                    inside = not inside
        result.append(inside)
    return np.array(result, dtype=bool)


def _star(centre: tuple[float, float], radii: np.ndarray, turns: float = 1.0) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi * turns, len(radii), endpoint=False)
    return np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])


# -- categories --------------------------------------------------------------------------------


def test_categories_are_ordered_by_size_with_codes_that_match() -> None:
    values = np.array(["b", "a", "b", "c", "b", "a"])
    cats = categorize(values)
    assert cats.names == ["b", "a", "c"] and cats.counts == [3, 2, 1]
    assert cats.colors == list(PALETTE[:3])
    assert [cats.names[c] for c in cats.codes.tolist()] == values.tolist()
    assert cats.codes.dtype == np.uint8
    assert cats.legend() == [(PALETTE[0], "b", 3), (PALETTE[1], "a", 2), (PALETTE[2], "c", 1)]


def test_categories_beyond_the_palette_share_one_other_entry() -> None:
    # category k has 100 - k members, so the order is known; noise is the largest but comes last
    values = np.concatenate(
        [np.full(100 - k, k) for k in range(len(PALETTE) + 5)] + [np.full(500, -1)]
    )
    cats = cluster_categories(values)
    assert len(cats.names) == len(PALETTE) + 2
    assert cats.names[: len(PALETTE)] == [f"cluster {k}" for k in range(len(PALETTE))]
    assert cats.names[-2:] == ["other", "noise"] and cats.colors[-2:] == [OTHER_COLOR, NOISE_COLOR]
    assert cats.counts[-2] == sum(100 - k for k in range(len(PALETTE), len(PALETTE) + 5))
    assert cats.counts[-1] == 500 and sum(cats.counts) == len(values)
    assert np.all(cats.codes[values == -1] == len(cats.names) - 1)
    assert np.all(cats.codes[values >= len(PALETTE)] == len(cats.names) - 2)


def test_no_values_no_categories() -> None:
    cats = categorize([])
    assert cats.names == [] and cats.codes.size == 0


# -- geometry ----------------------------------------------------------------------------------


def test_box_includes_edges_and_takes_either_order() -> None:
    points = MapPoints(
        np.array([10, 11, 12, 13]), np.array([[0, 0], [1, 1], [2, 2], [1, 5]], dtype=np.float32)
    )
    assert points.ids[points.in_box([0.5, 2.0], [0.0, 2.0])].tolist() == [11, 12]
    assert points.ids[points.in_box([2.0, 0.5], [2.0, 0.0])].tolist() == [11, 12]
    assert not points.in_box([5, 6], [5, 6]).any()


@pytest.mark.parametrize("turns", [1.0, 2.0])  # 2 turns: a self-crossing star (even-odd holes)
def test_polygon_matches_plain_ray_casting(turns: float) -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(-2, 2, (3000, 2)).astype(np.float32)
    # vertices on the points' own y values test the half-open band rule
    xy[:20, 1] = 0.0
    polygon = _star((0.0, 0.0), rng.uniform(0.4, 1.8, 37), turns)
    polygon[5, 1] = 0.0
    points = MapPoints(np.arange(len(xy)) + 100, xy)
    got = points.in_polygon(polygon)
    expected = _inside_reference(xy.astype(np.float64), polygon)
    assert 200 < expected.sum() < 2800
    np.testing.assert_array_equal(got, expected)
    # the same again uses the cached sort and gives the same
    np.testing.assert_array_equal(points.in_polygon(polygon), expected)


def test_degenerate_polygons_select_nothing() -> None:
    points = MapPoints(
        np.arange(4), np.array([[0, 0], [1, 1], [2, 2], [0.5, 0.5]], dtype=np.float32)
    )
    assert not points.in_polygon([]).any()
    assert not points.in_polygon([[0, 0], [2, 2]]).any()
    assert not points.in_polygon([[0, 0], [1, 1], [2, 2]]).any()  # zero area
    assert not MapPoints(np.empty(0), np.empty((0, 2))).in_polygon([[0, 0], [1, 0], [0, 1]]).any()


# a scale test: a million points (about 2 s)
@pytest.mark.slow
def test_a_million_points_every_one_inside() -> None:
    rng = np.random.default_rng(0)
    xy = rng.normal(0, 1, (1_000_000, 2)).astype(np.float32)
    points = MapPoints(np.arange(len(xy)), xy)
    everything = [[-100, -100], [100, -100], [100, 100], [-100, 100]]
    assert points.in_polygon(everything).all()
    assert points.in_box([-100, 100], [-100, 100]).all()
    ring = _star((0.0, 0.0), np.full(400, 1.0))
    inside = points.in_polygon(ring)
    sample = rng.choice(len(xy), 2000, replace=False)
    np.testing.assert_array_equal(
        inside[sample], _inside_reference(xy[sample].astype(np.float64), ring)
    )
    # What stays cached for later lassos: the y-sort, 12 bytes a point (11.4 MiB at 1M).
    assert sum(part.nbytes for part in points._by_y) == 12 * len(xy)


def _zigzag(vertices: int, width: float = 50.0, height: float = 60.0) -> np.ndarray:
    """A lasso no hand draws: ``vertices`` teeth, each edge across the whole height."""
    return np.column_stack(
        [
            np.linspace(-width / 2, width / 2, vertices),
            np.where(np.arange(vertices) % 2 == 0, -height / 2, height / 2),
        ]
    )


# a scale test: lassos over a million points, one with 2e10 exact tests refused (about 1.5 s)
@pytest.mark.slow
def test_a_lasso_of_any_shape_costs_bounded_work() -> None:
    rng = np.random.default_rng(0)
    points = MapPoints(np.arange(1_000_000), rng.normal(0, 5, (1_000_000, 2)).astype(np.float32))
    ring = _star((0.0, 0.0), 8 + 2 * np.sin(np.linspace(0, 14 * np.pi, 2000)))
    points.in_polygon(ring)  # a hand-drawn lasso: exact, a few point tests per point
    assert points.last_cost.exact and points.last_cost.point_tests < 5_000_000
    # 20,000 edges across every point: 2e10 exact tests (45 s), refused up front for rows
    selected = points.in_polygon(_zigzag(20_000))
    cost = points.last_cost
    assert not cost.exact and cost.point_tests > 1e10 > MAX_LASSO_POINT_TESTS
    assert 0 < cost.row_crossings <= MAX_LASSO_ROW_CROSSINGS
    assert cost.row_height <= 0.005 * 60  # rows under 0.5% of the lasso's height
    assert 0.4 < selected.mean() < 0.6  # the teeth cover half the map
    # the most a message may carry is thinned first, then bounded the same way
    points.in_polygon(_zigzag(50_000))
    assert points.last_cost.vertices <= 20_000
    assert points.last_cost.row_crossings <= MAX_LASSO_ROW_CROSSINGS


def _vertical_gap_to_outline(point: np.ndarray, polygon: np.ndarray) -> float:
    """How far ``point`` is, straight up or down, from the outline of ``polygon``."""
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    gaps = [np.inf]
    for (x1, y1), (x2, y2) in zip(starts.tolist(), ends.tolist(), strict=True):
        if min(x1, x2) <= point[0] <= max(x1, x2):
            y = y1 if x1 == x2 else y1 + (point[0] - x1) * (y2 - y1) / (x2 - x1)
            gaps.append(abs(point[1] - y))
    return min(gaps)


@pytest.mark.parametrize(
    "polygon",
    [
        _zigzag(301, width=3.0, height=3.0),
        _star((0.0, 0.0), np.random.default_rng(5).uniform(0.4, 1.8, 37), 2.0),
    ],
)
def test_rows_agree_with_the_exact_test_except_within_half_a_row_of_the_outline(
    polygon: np.ndarray,
) -> None:
    rng = np.random.default_rng(4)
    xy = rng.uniform(-2, 2, (20_000, 2)).astype(np.float32)
    points = MapPoints(np.arange(len(xy)), xy)
    exact = points.in_polygon(polygon)
    assert points.last_cost.exact
    by_rows = points.in_polygon(polygon, max_point_tests=0, max_row_crossings=20_000)
    cost = points.last_cost
    assert not cost.exact and cost.row_crossings <= 20_000 and cost.row_height > 0
    differ = np.flatnonzero(by_rows != exact)
    assert len(differ) < 0.05 * len(xy)
    for position in differ.tolist():
        gap = _vertical_gap_to_outline(xy[position].astype(np.float64), polygon)
        assert gap <= cost.row_height / 2 + 1e-9, (position, gap, cost)
    # finer rows, fewer differences; rows as fine as the points' own y: the exact answer
    finer = points.in_polygon(polygon, max_point_tests=0, max_row_crossings=200_000)
    assert (finer != exact).sum() <= len(differ)


def test_thin_polygon_keeps_at_most_the_limit() -> None:
    polygon = np.arange(50_000 * 2, dtype=float).reshape(-1, 2)
    thinned = thin_polygon(polygon, 1000)
    assert len(thinned) <= 1000 and thinned[0].tolist() == polygon[0].tolist()
    assert (
        thin_polygon(polygon[:10], 1000) is not None and len(thin_polygon(polygon[:10], 1000)) == 10
    )


def test_nearest_measures_on_screen_and_honours_the_radius() -> None:
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    points = MapPoints(np.array([7, 8, 9]), xy)
    # 1 map unit = 1 pixel: (0, 0.6) is nearest to (0, 1)
    assert points.nearest(0.0, 0.6, dx=1.0, dy=1.0, radius=8) == 2
    # y squeezed on screen (10 units per pixel): now (0, 0) and (0, 1) are 0.1 px apart
    assert points.nearest(0.0, 0.4, dx=1.0, dy=10.0, radius=8) == 0
    assert points.nearest(5.0, 0.0, dx=1.0, dy=1.0, radius=4) is None  # 5 px from both
    assert points.nearest(5.0, 0.0, dx=1.0, dy=1.0, radius=6) in (0, 1)
    assert points.nearest(0, 0, dx=0.0, dy=1.0, radius=8) is None
    assert MapPoints(np.empty(0), np.empty((0, 2))).nearest(0, 0, dx=1, dy=1, radius=8) is None


def test_padded_range_and_display_sample() -> None:
    assert padded_range(np.array([0.0, 4.0, 10.0])) == (-0.5, 10.5)
    assert padded_range(np.array([3.0, 3.0])) == (2.0, 4.0)
    assert padded_range(np.array([np.nan, 1.0, 3.0])) == (0.9, 3.1)
    assert padded_range(np.empty(0)) == (-1.0, 1.0)
    assert display_sample(7, 10).tolist() == list(range(7))
    sample = display_sample(1000, 100)
    assert sample.size == 100 and np.all(np.diff(sample) > 0)
    np.testing.assert_array_equal(sample, display_sample(1000, 100))
    assert not np.array_equal(sample, display_sample(1000, 100, seed=1))


def _relative_luminance(color: str) -> float:
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def _contrast(first: str, second: str) -> float:
    dark, light = sorted([_relative_luminance(first), _relative_luminance(second)])
    return (light + 0.05) / (dark + 0.05)


def test_palette_has_twenty_odd_colours_told_apart_on_both_themes() -> None:
    """16 clusters once shared ~10 colours (two oranges): Glasbey's colours, each far from the
    others and from "other" (CIELAB distance), readable on white and on JupyterLab's dark
    background."""
    colors = [*PALETTE, OTHER_COLOR]
    assert len(PALETTE) >= 20 and len(set(colors)) == len(colors)
    lab = [np.array(cielab([int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)])) for c in colors]
    closest = min(float(np.linalg.norm(lab[i] - lab[j])) for i in range(len(lab)) for j in range(i))
    assert closest >= 15, closest
    for color in colors:
        assert _contrast(color, "#ffffff") >= 2, color
        assert _contrast(color, "#111111") >= 3, color


class _NoIndex:
    """Stands in for an index that the kinds below must not read."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the index was read ({name})")


def test_colour_categories_by_cluster_and_by_label_mapping() -> None:
    from imrec_widgets.map_colors import map_categories

    ids = np.array([3, 5, 8, 9], dtype=np.int64)
    clusters = np.array([1, -1, 1, 0], dtype=np.int32)
    index: Any = _NoIndex()
    by_cluster = map_categories(index, "rgb", ids, "cluster", clusters=clusters)
    expected = cluster_categories(clusters)
    assert by_cluster.names == expected.names
    np.testing.assert_array_equal(by_cluster.codes, expected.codes)
    by_label = map_categories(
        index, "rgb", ids, "label", clusters=clusters, labels={3: "cat", 8: "cat", 9: "dog"}
    )
    assert [by_label.names[c] for c in by_label.codes.tolist()] == [
        "cat",
        "(no label)",
        "cat",
        "dog",
    ]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("label", r"color_by='label' needs labels= \(a CSV path or \{id: label\}\)"),
        (
            "shape",
            r"color_by must be one of cluster, folder, status, tags, label or tag:<name>; got 'shape'",
        ),
    ],
)
def test_a_colour_kind_the_map_cannot_show_is_a_usage_error(kind: str, message: str) -> None:
    from imrec_widgets.errors import UsageError
    from imrec_widgets.map_colors import map_categories

    index: Any = _NoIndex()
    with pytest.raises(UsageError, match=message) as raised:
        map_categories(index, "rgb", np.arange(3), kind, clusters=np.zeros(3, np.int32))
    assert "\n" not in str(raised.value)
