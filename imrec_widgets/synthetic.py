"""Synthetic indexes written directly through the catalog and the store, with no image files.

For tests and benchmarks at sizes no sample folder reaches (a map of a million points): the
catalog rows, the feature arrays, thumbnails and a cached map are written as ``update()`` and
``umap()`` would write them, so every reader (``ImageIndex``, the map widget) sees a real index.
"""

from __future__ import annotations

import time
from pathlib import Path

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
    index_dir = Path(index_dir)
    rng = np.random.default_rng(seed)
    catalog = Catalog(index_dir / "catalog.sqlite")
    store = FeatureStore(index_dir / "features.zarr")
    bins = DEFAULT_SETTINGS["bins"]
    catalog.set_meta(
        "settings", dict(DEFAULT_SETTINGS, features=["rgb", "thumb"], thumb_size=thumb_size)
    )
    store.ensure("rgb", (3 * bins,), "float32")
    store.ensure("thumb", (thumb_size, thumb_size, 3), "uint8")
    store.ensure("umap/rgb", (2,), "float32", fill_value=np.nan)
    store.ensure("cluster/rgb", (), "int32", fill_value=-1)
    centres = rng.uniform(-10, 10, (groups, 2))
    colors = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)
    for start in range(0, rows, chunk):
        ids = np.arange(start, min(rows, start + chunk))
        labels = (ids % groups).astype(np.int32)
        store.write_rows("rgb", ids, rng.random((ids.size, 3 * bins), dtype=np.float32))
        thumbs = colors[labels % len(colors)][:, None, None]
        store.write_rows(
            "thumb", ids, np.broadcast_to(thumbs, (ids.size, thumb_size, thumb_size, 3))
        )
        store.write_rows(
            "umap/rgb",
            ids,
            (centres[labels] + rng.normal(0, 1.5, (ids.size, 2))).astype(np.float32),
        )
        store.write_rows("cluster/rgb", ids, labels)
        catalog.commit_entries(
            Entry(
                int(i),
                f"group{int(i) % groups}/{int(i):07d}.jpg",
                1,
                1,
                thumb_size,
                thumb_size,
                "JPEG",
            )
            for i in ids
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
    return index_dir
