"""The data work behind the map, with no widget: colour categories with their legend, and
selections and the point under the pointer computed from a gesture's geometry over every point.

Everything here is vectorised numpy, sized for a million points: a box is four comparisons, a
lasso is an even-odd test that only touches the points in each edge's band of y (points sorted
by y once), and the nearest point is a KD-tree query. The work of one lasso is bounded whatever
its shape (see ``MapPoints.in_polygon``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PALETTE_SIZE = 24
"""Categories with a colour of their own; the rest share "other"."""

PALETTE_LIGHTNESS = (40.0, 75.0)
"""CIELAB lightness range of the palette: dark enough on white, light enough on a dark theme."""

PALETTE_MIN_CHROMA = 30.0
"""CIELAB chroma the palette's colours have at least, so none passes for the grey "other"."""


def cielab(rgb: Sequence[float]) -> tuple[float, float, float]:
    """CIELAB (D65) ``(L*, a*, b*)`` of an sRGB colour with channels in 0..1."""
    linear = np.array([c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb])
    xyz = (
        np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
        @ linear
        / np.array([0.95047, 1.0, 1.08883])
    )
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return float(116 * f[1] - 16), float(500 * (f[0] - f[1])), float(200 * (f[1] - f[2]))


def glasbey_palette(size: int = PALETTE_SIZE) -> tuple[str, ...]:
    """The first ``size`` colours of colorcet's Glasbey palette (made to be told apart) with a
    lightness in ``PALETTE_LIGHTNESS`` and chroma of ``PALETTE_MIN_CHROMA`` or more, as ``#rrggbb``."""
    import colorcet

    low, high = PALETTE_LIGHTNESS
    chosen = []
    for rgb in colorcet.glasbey_bw_minc_20:
        lightness, a, b = cielab(rgb)
        if low <= lightness <= high and np.hypot(a, b) >= PALETTE_MIN_CHROMA:
            chosen.append("#" + "".join(f"{round(channel * 255):02x}" for channel in rgb))
    return tuple(chosen[:size])


PALETTE = glasbey_palette()
"""Category colours, in order of category size; each is readable on light and dark themes."""

OTHER_COLOR = "#8a8a8a"
"""Colour of the categories beyond the palette (one "other" entry in the legend)."""

NOISE_COLOR = "#b0b0b0"
"""Colour of points HDBSCAN left unclustered (cluster -1)."""

MAX_POLYGON_VERTICES = 20_000
"""A lasso with more vertices than this is thinned before the test."""

MAX_LASSO_POINT_TESTS = 200_000_000
"""Most point-against-edge tests of one exact lasso (about 0.5 s of numpy); the sizes of the
edges' bands of y are known before any test, and a lasso that needs more is tested by rows."""

MAX_LASSO_ROW_CROSSINGS = 4_000_000
"""Most edge crossings of one lasso tested by rows: with the sort of the points by row, well
under a second at a million points."""


@dataclass(frozen=True)
class LassoCost:
    """What one ``MapPoints.in_polygon`` did: the exact test or the row test, and its work.

    ``point_tests``: point-against-edge tests of the exact test (the sum of the edges' bands),
    counted before it runs, or what it would have taken when it was not run. ``row_crossings``:
    edge-row crossings of the row test (0 when exact). ``row_height``: the rows' height in map
    units (0.0 when exact); a point is placed by the outline at the middle of its row, so only a
    point within half a row, vertically, of the outline can be on the other side of it.
    """

    vertices: int
    point_tests: int
    row_crossings: int = 0
    row_height: float = 0.0

    @property
    def exact(self) -> bool:
        """Whether every point was tested against the polygon itself."""
        return self.row_crossings == 0


@dataclass(frozen=True)
class Categories:
    """One colour code per point (``codes``, uint8 into ``colors``) and the legend entries."""

    codes: np.ndarray
    names: list[str]
    colors: list[str]
    counts: list[int]

    def legend(self) -> list[tuple[str, str, int]]:
        """``(colour, name, count)`` per legend entry, largest first (noise and other last)."""
        return list(zip(self.colors, self.names, self.counts, strict=True))


def categorize(
    values: Sequence[Any] | np.ndarray, *, noise: Any = None, noise_name: str = "noise"
) -> Categories:
    """Colour categories of ``values``: the largest get the palette colours, the rest "other".

    ``noise`` (e.g. cluster -1) is a value of its own, grey, listed after the others.
    """
    values = np.asarray(values)
    if values.size == 0:
        return Categories(np.empty(0, np.uint8), [], [], [])
    uniques, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    is_noise = np.array([noise is not None and u == noise for u in uniques.tolist()], dtype=bool)
    order = np.concatenate([order[~is_noise[order]], order[is_noise[order]]])
    names: list[str] = []
    colors: list[str] = []
    sizes: list[int] = []
    code_of_unique = np.zeros(len(uniques), dtype=np.uint8)
    other_code = None
    for unique_index in order.tolist():
        if is_noise[unique_index]:
            code_of_unique[unique_index] = len(names)
            names.append(noise_name)
            colors.append(NOISE_COLOR)
            sizes.append(int(counts[unique_index]))
        elif len(names) < len(PALETTE):
            code_of_unique[unique_index] = len(names)
            names.append(str(uniques[unique_index]))
            colors.append(PALETTE[len(names) - 1])
            sizes.append(int(counts[unique_index]))
        else:
            if other_code is None:
                other_code = len(names)
                names.append("other")
                colors.append(OTHER_COLOR)
                sizes.append(0)
            code_of_unique[unique_index] = other_code
            sizes[other_code] += int(counts[unique_index])
    return Categories(code_of_unique[inverse.ravel()], names, colors, sizes)


def cluster_categories(clusters: np.ndarray) -> Categories:
    """Categories of cluster labels, named "cluster N", with -1 as noise."""
    clusters = np.asarray(clusters)
    categories = categorize(clusters, noise=-1)
    names = [name if name in ("noise", "other") else f"cluster {name}" for name in categories.names]
    return Categories(categories.codes, names, categories.colors, categories.counts)


NO_TAG = "(no tag)"
SEVERAL_TAGS = "(several tags)"


def tag_categories(ids: np.ndarray, tagged: Mapping[str, Sequence[int] | np.ndarray]) -> Categories:
    """Categories of each point's tag: its one tag, "(several tags)" or "(no tag)" (grey, last).

    ``tagged`` maps each tag name to the ids that have it. A point has one colour, so an image
    with several tags is shown as such rather than by an arbitrary one of them.
    """
    ids = np.asarray(ids, dtype=np.int64)
    names = list(tagged)
    code = np.full(len(ids), -1, dtype=np.int64)  # -1: no tag, -2: several, k: names[k]
    for k, name in enumerate(names):
        has = np.isin(ids, np.asarray(tagged[name], dtype=np.int64))
        code[has] = np.where(code[has] == -1, k, -2)
    categories = categorize(code, noise=-1, noise_name=NO_TAG)
    shown = {str(k): name for k, name in enumerate(names)} | {"-2": SEVERAL_TAGS}
    return Categories(
        categories.codes,
        [shown.get(name, name) for name in categories.names],
        categories.colors,
        categories.counts,
    )


def padded_range(values: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """``(min, max)`` showing ``values`` with ``margin`` of their span on each side."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * margin or 1.0
    return (low - pad, high + pad)


def display_sample(count: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Positions of the points to draw: all of them, or a fixed random sample of ``max_points``."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_points, replace=False))


def thin_polygon(polygon: np.ndarray, max_vertices: int = MAX_POLYGON_VERTICES) -> np.ndarray:
    """Every k-th vertex of ``polygon`` so that at most ``max_vertices`` remain."""
    if len(polygon) <= max_vertices:
        return polygon
    return polygon[:: -(-len(polygon) // max_vertices)]


class MapPoints:
    """The map's points (``ids`` at ``xy``) with what selection and hover need precomputed."""

    def __init__(self, ids: np.ndarray, xy: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
        if len(self.ids) != len(self.xy):
            raise ValueError(f"{len(self.ids)} ids but {len(self.xy)} positions")
        self._by_y: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._tree: Any = None
        self.last_cost = LassoCost(0, 0)
        """What the last ``in_polygon`` did (which test, how much work)."""

    def __len__(self) -> int:
        return int(self.ids.size)

    def in_box(self, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
        """Mask of the points inside the rectangle ``x_range`` x ``y_range`` (either order)."""
        (x0, x1), (y0, y1) = sorted(map(float, x_range)), sorted(map(float, y_range))
        x, y = self.xy[:, 0], self.xy[:, 1]
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def in_polygon(
        self,
        polygon: Sequence[Sequence[float]] | np.ndarray,
        *,
        max_point_tests: int = MAX_LASSO_POINT_TESTS,
        max_row_crossings: int = MAX_LASSO_ROW_CROSSINGS,
    ) -> np.ndarray:
        """Mask of the points inside ``polygon`` (closed implicitly; even-odd rule).

        Exact (each point against each edge whose band of y holds it) when that takes at most
        ``max_point_tests`` tests: any lasso a hand draws. A polygon whose edges sweep over more
        points (a 20,000-vertex zigzag across the map is 2e10 tests at a million points) is
        tested by rows instead: the points in rows of y, each row against the outline's
        crossings at its middle, the rows as fine as ``max_row_crossings`` allows. Either way
        the work is bounded; ``last_cost`` says which test ran and what it cost.
        """
        vertices = thin_polygon(np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
        mask = np.zeros(len(self), dtype=bool)
        self.last_cost = LassoCost(len(vertices), 0)
        if len(vertices) < 3 or len(self) == 0:
            return mask
        order, xs, ys = self._sorted_by_y()
        starts, ends = vertices, np.roll(vertices, -1, axis=0)
        sloped = starts[:, 1] != ends[:, 1]
        starts, ends = starts[sloped], ends[sloped]
        low = np.minimum(starts[:, 1], ends[:, 1])
        high = np.maximum(starts[:, 1], ends[:, 1])
        # Points with low <= y < high: the half-open band counts a shared vertex once.
        first = np.searchsorted(ys, low, side="left")
        last = np.searchsorted(ys, high, side="left")
        point_tests = int((last - first).sum())
        if point_tests <= max_point_tests:
            self.last_cost = LassoCost(len(vertices), point_tests)
            mask[order] = _inside_by_bands(xs, ys, starts, ends, first, last)
            return mask
        inside, crossings, height = _inside_by_rows(xs, ys, starts, ends, max_row_crossings)
        self.last_cost = LassoCost(len(vertices), point_tests, crossings, height)
        mask[order] = inside
        return mask

    def _sorted_by_y(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._by_y is None:
            # Kept for later lassos: 12 bytes a point (int32 order, float32 x and y sorted by y),
            # 11.4 MiB at 1M points; each band is widened to float64 when it is used.
            order = np.argsort(self.xy[:, 1], kind="stable")
            if len(order) < 2**31:
                order = order.astype(np.int32)
            self._by_y = (order, self.xy[order, 0], self.xy[order, 1])
        return self._by_y

    def nearest(self, x: float, y: float, *, dx: float, dy: float, radius: float) -> int | None:
        """Position of the point nearest (x, y) on screen, if within ``radius`` pixels.

        ``dx``/``dy``: map units per pixel along x and y (screen distance is what a user sees).
        """
        if len(self) == 0 or not (dx > 0 and dy > 0):
            return None
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.xy)
        count = min(16, len(self))
        _, found = self._tree.query([x, y], k=count)
        found = np.atleast_1d(found)
        found = found[found < len(self)]
        if found.size == 0:
            return None
        pixels = np.hypot((self.xy[found, 0] - x) / dx, (self.xy[found, 1] - y) / dy)
        best = int(np.argmin(pixels))
        return int(found[best]) if pixels[best] <= radius else None


def _inside_by_bands(
    xs: np.ndarray,
    ys: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
) -> np.ndarray:
    """Even-odd insideness of the points (sorted by y) against each edge, in its band only."""
    inside = np.zeros(len(xs), dtype=bool)
    for (x1, y1), (x2, y2), begin, end in zip(
        starts.tolist(), ends.tolist(), first.tolist(), last.tolist(), strict=True
    ):
        if begin == end:
            continue
        band_y = ys[begin:end].astype(np.float64)
        crossing = x1 + (band_y - y1) * ((x2 - x1) / (y2 - y1))
        inside[begin:end] ^= xs[begin:end].astype(np.float64) < crossing
    return inside


def _inside_by_rows(
    xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_crossings: int
) -> tuple[np.ndarray, int, float]:
    """Even-odd insideness of the points (sorted by y), each tested at the middle of its row.

    Rows of equal height over the points' y range, as many as ``max_crossings`` edge-row
    crossings allow. In each row the outline's crossings of the middle line flip every point
    to their left: one sort of the points by (row, x), one ``searchsorted`` per crossing and a
    running parity. Returns the mask, the crossings used and the row height.
    """
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    y_min, y_max = float(ys[0]), float(ys[-1])
    x_min, x_max = float(xs.min()), float(xs.max())
    low = np.minimum(starts[:, 1], ends[:, 1])
    high = np.maximum(starts[:, 1], ends[:, 1])
    span = max(y_max - y_min, np.finfo(np.float64).tiny)
    # An edge of height d spans at most d / height + 1 row middles.
    swept = float(np.minimum(high - low, span).sum())
    budget = max(max_crossings - len(starts), 1)
    rows = int(min(max(budget * span / max(swept, span), 1.0), len(xs)))
    while True:
        height = span / rows
        row_first = np.ceil((low - y_min) / height - 0.5).clip(0, rows).astype(np.int64)
        row_last = np.ceil((high - y_min) / height - 0.5).clip(0, rows).astype(np.int64)
        counts = row_last - row_first
        total = int(counts.sum())
        if total <= max_crossings or rows == 1:
            break
        rows = max(rows // 2, 1)
    point_rows = np.minimum(((ys - y_min) / height).astype(np.int64), rows - 1)
    # One increasing key per point: its row, then its x within the row.
    width = (x_max - x_min) + 2.0
    keys = point_rows * width + (xs - x_min)
    by_row = np.argsort(keys)
    keys = keys[by_row]
    row_starts = np.searchsorted(keys, np.arange(rows) * width, side="left")

    slope = (ends[:, 0] - starts[:, 0]) / (ends[:, 1] - starts[:, 1])
    offset = starts[:, 0] - starts[:, 1] * slope - x_min  # crossing - x_min = offset + slope * y
    # Each edge's rows, one after the other: row_first, row_first + 1, ... < row_last.
    row = np.repeat(row_first - (np.cumsum(counts) - counts), counts)
    row += np.arange(total)
    crossing = row + 0.5
    crossing *= height
    crossing += y_min
    crossing *= np.repeat(slope, counts)
    crossing += np.repeat(offset, counts)
    np.clip(crossing, 0.0, x_max - x_min + 1.0, out=crossing)
    needles = row * width
    needles += crossing
    del crossing
    needles.sort()
    # Sorted, the crossings are found in one sweep of the keys rather than a search each.
    positions = np.searchsorted(keys, needles, side="left")
    # Each crossing flips the points of its row left of it: [row start, position).
    flips = np.bincount(positions, minlength=len(xs) + 1)
    np.add.at(flips, row_starts, np.bincount(row, minlength=rows))
    inside = np.empty(len(xs), dtype=bool)
    inside[by_row] = (np.cumsum(flips[:-1]) & 1).astype(bool)
    return inside, total, height
