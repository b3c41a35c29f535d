"""Synthetic indexes written directly through the catalog and the store, with no image files.

For tests and benchmarks at sizes no sample folder reaches (a map of a million points): the
catalog rows, the feature arrays, thumbnails and a cached map are written as ``update()`` and
``umap()`` would write them, so every reader (``ImageIndex``, the map widget) sees a real index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Catalog, Entry
from .mapdata import PALETTE
from .settings import DEFAULT_SETTINGS
from .store import FeatureStore

MAP_PARAMS = {
    "n_neighbors": 15,
    "min_dist": 0.1,
    "pca_dims": 50,
    "sample_size": 20_000,
    "random_state": 42,
}
"""The map parameters recorded for a synthetic map (the defaults of ``projection.compute``)."""


RowMaker = Callable[[np.ndarray], np.ndarray]
"""Makes the rows of one feature for an array of image ids."""


def write_feature_index(
    index_dir: str | Path,
    rows: int,
    features: Mapping[str, RowMaker],
    *,
    settings: Mapping[str, Any] | None = None,
    feature_config: Mapping[str, Any] | None = None,
    path: Callable[[int], str] = lambda i: f"images/{i:08d}.jpg",
    size: tuple[int, int] = (64, 64),
    chunk: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
    start: int = 0,
) -> tuple[Catalog, FeatureStore]:
    """An index of ``rows`` made-up images whose features come from ``features``.

    ``features`` maps a stored array name to a function giving its rows for a block of ids
    (the dtype and row shape of the first block fix the array's). Each block is written to the
    store first, then its catalog rows, as ``update()`` does. ``settings`` (over
    ``DEFAULT_SETTINGS``; ``features`` defaults to the names given) and ``feature_config`` are
    recorded in the catalog. ``start`` > 0 adds ids ``start..rows-1`` to an index written before.
    Returns the open catalog and store, for more writes; close the catalog when done.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(index_dir / "catalog.sqlite")
    store = FeatureStore(index_dir / "features.zarr")
    searchable = [name for name in features if "/" not in name]
    catalog.set_meta("settings", {**DEFAULT_SETTINGS, "features": searchable, **(settings or {})})
    if feature_config is not None:
        catalog.set_meta("feature_config", dict(feature_config))
    width, height = size
    for first in range(start, rows, chunk):
        ids = np.arange(first, min(rows, first + chunk))
        for name, make in features.items():
            values = np.asarray(make(ids))
            if first == start:
                # as the map's arrays are made: no position NaN, no cluster -1
                fill = (
                    np.nan if name.startswith("umap/") else -1 if name.startswith("cluster/") else 0
                )
                store.ensure(name, values.shape[1:], values.dtype, fill_value=fill)
            store.write_rows(name, ids, values)
        catalog.commit_entries(
            Entry(int(i), path(int(i)), 1, 1, width, height, "JPEG") for i in ids
        )
        if progress is not None:
            progress(int(ids[-1]) + 1, rows)
    return catalog, store


def write_map_index(
    index_dir: str | Path,
    rows: int,
    *,
    groups: int = 5,
    thumb_size: int = 16,
    seed: int = 0,
    chunk: int = 200_000,
) -> Path:
    """An index of ``rows`` images with a fresh cached rgb map of ``groups`` gaussian blobs.

    Image ``i`` is ``group<g>/<i>.jpg`` with g = i mod groups; its cluster is g, its thumbnail a
    flat square of the group's palette colour. Returns ``index_dir``.
    """
    rng = np.random.default_rng(seed)
    bins = DEFAULT_SETTINGS["bins"]
    centres = rng.uniform(-10, 10, (groups, 2))
    colors = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)

    def thumbs(ids: np.ndarray) -> np.ndarray:
        flat = colors[(ids % groups) % len(colors)][:, None, None]
        return np.broadcast_to(flat, (ids.size, thumb_size, thumb_size, 3))

    def positions(ids: np.ndarray) -> np.ndarray:
        noise = rng.normal(0, 1.5, (ids.size, 2))
        return np.asarray((centres[ids % groups] + noise).astype(np.float32))

    catalog, _store = write_feature_index(
        index_dir,
        rows,
        {
            "rgb": lambda ids: rng.random((ids.size, 3 * bins), dtype=np.float32),
            "thumb": thumbs,
            "umap/rgb": positions,
            "cluster/rgb": lambda ids: (ids % groups).astype(np.int32),
        },
        settings={"features": ["rgb", "thumb"], "thumb_size": thumb_size, "thumb_format": "pixels"},
        path=lambda i: f"group{i % groups}/{i:07d}.jpg",
        size=(thumb_size, thumb_size),
        chunk=chunk,
    )
    catalog.set_meta(
        "projection/rgb",
        {
            "params": MAP_PARAMS,
            "clusters": {"clusters": groups, "min_cluster_size": None},
            "updated_at": time.time(),
            "fitted": rows,
        },
    )
    catalog.close()
    return Path(index_dir)
