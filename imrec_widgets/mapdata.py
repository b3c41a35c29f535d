"""The data work behind the map, with no widget: colour categories with their legend, and
selections and the point under the pointer computed from a gesture's geometry over every point.

Everything here is vectorised numpy, sized for a million points: a box is four comparisons, a
lasso is an even-odd test that only touches the points in each edge's band of y (points sorted
by y once), and the nearest point is a KD-tree query.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def __len__(self) -> int:
        return int(self.ids.size)

    def in_box(self, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
        """Mask of the points inside the rectangle ``x_range`` x ``y_range`` (either order)."""
        (x0, x1), (y0, y1) = sorted(map(float, x_range)), sorted(map(float, y_range))
        x, y = self.xy[:, 0], self.xy[:, 1]
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def in_polygon(self, polygon: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Mask of the points inside ``polygon`` (closed implicitly; even-odd rule)."""
        vertices = thin_polygon(np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
        mask = np.zeros(len(self), dtype=bool)
        if len(vertices) < 3 or len(self) == 0:
            return mask
        if self._by_y is None:
            order = np.argsort(self.xy[:, 1], kind="stable")
            self._by_y = (
                order,
                self.xy[order, 0].astype(np.float64),
                self.xy[order, 1].astype(np.float64),
            )
        order, xs, ys = self._by_y
        inside = np.zeros(len(self), dtype=bool)
        starts, ends = vertices, np.roll(vertices, -1, axis=0)
        for (x1, y1), (x2, y2) in zip(starts.tolist(), ends.tolist(), strict=True):
            if y1 == y2:
                continue
            low, high = (y1, y2) if y1 < y2 else (y2, y1)
            # Points with low <= y < high: the half-open band counts a shared vertex once.
            first, last = np.searchsorted(ys, [low, high], side="left")
            if first == last:
                continue
            band_y = ys[first:last]
            crossing = x1 + (band_y - y1) * ((x2 - x1) / (y2 - y1))
            inside[first:last] ^= xs[first:last] < crossing
        mask[order] = inside
        return mask

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
