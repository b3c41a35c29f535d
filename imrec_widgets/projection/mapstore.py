"""Where a map lives in an index and reading it back.

Coordinates are the store array ``umap/<feature>`` (NaN = not placed), labels ``cluster/<feature>``,
the parameters and the placement token the catalog meta ``projection/<feature>``; what placing
needs is the file ``umap_<feature>.npz`` beside the store. While a new map is published (see
``publishing``) the meta says ``staged`` and readers read the ``.next`` arrays and placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imrec_widgets.errors import ProjectionError, SettingError

from .placement import UNREADABLE, Placement, check_npz_size, prepare_input

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

STAGED = ".next"
"""Suffix of the arrays and placement file of a map being published."""


@dataclass
class Projection:
    """A 2-D map of one feature: ``ids`` with their ``xy`` coordinates and ``clusters`` (-1 = noise).

    ``fitted``: images the UMAP model was fitted on; ``transformed``: images this call placed
    into an existing fit; ``pending``: images of the index not on this map yet (new or changed).
    """

    feature: str
    ids: np.ndarray
    xy: np.ndarray
    clusters: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    transformed: int = 0
    fitted: int = 0
    seconds: float = 0.0
    pending: int = 0

    def __len__(self) -> int:
        return int(self.ids.size)

    def __repr__(self) -> str:
        n_clusters = len(set(self.clusters.tolist()) - {-1})
        return (
            f"Projection({self.feature!r}, {len(self)} points, {n_clusters} clusters, "
            f"fitted on {self.fitted}, transformed {self.transformed})"
        )


def meta_key(feature: str) -> str:
    """The catalog meta describing the map of ``feature``."""
    return f"projection/{feature}"


def coords_name(feature: str, meta: dict[str, Any] | None = None) -> str:
    """The array holding the current map's positions: the staged copy while it is published."""
    return f"umap/{feature}{STAGED if meta and meta.get('staged') else ''}"


def labels_name(feature: str, meta: dict[str, Any] | None = None) -> str:
    """The array holding the current map's cluster labels (staged while it is published)."""
    return f"cluster/{feature}{STAGED if meta and meta.get('staged') else ''}"


def placement_path(index: IndexView, feature: str) -> Path:
    return index.index_dir / f"umap_{feature}.npz"


def staged_placement_path(index: IndexView, feature: str) -> Path:
    """Where a new fit's placement waits until its map is published."""
    return index.index_dir / f"umap_{feature}{STAGED}.npz"


def legacy_reducer_path(index: IndexView, feature: str) -> Path:
    """Where versions before the .npz pickled the reducer: never read, removed on a refit."""
    return index.index_dir / f"umap_{feature}.pkl"


def read_placement(path: Path, meta: dict[str, Any]) -> Placement | None:
    """The placement of the cached map ``meta`` describes; None if missing, invalid or another fit's."""
    if not path.is_file():
        return None
    try:
        placement, token = Placement.read(path)
    except SettingError:
        raise  # a bad IMREC_MAX_PLACEMENT_BYTES is the user's to fix, not a reason to refit
    except ValueError:
        return None
    return placement if token == meta.get("placement") else None


PLACEMENTS: dict[tuple[str, int, int, str], Placement] = {}
"""Placements read by ``place``, by path, modification time, size and token (at most 8)."""


def cached_placement(path: Path, meta: dict[str, Any]) -> Placement | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(meta.get("placement")))
    if key not in PLACEMENTS:
        model = read_placement(path, meta)
        if model is None:
            return None
        if len(PLACEMENTS) >= 8:
            PLACEMENTS.clear()
        PLACEMENTS[key] = model
    return PLACEMENTS[key]


def placement_of(index: IndexView, feature: str, meta: dict[str, Any]) -> Placement | None:
    """The placement of the map ``meta`` describes: at the staged path while a publish that
    moves it there is under way (or was stopped), else at the main one; None when neither holds it."""
    paths = [placement_path(index, feature)]
    if meta.get("staged"):
        paths.insert(0, staged_placement_path(index, feature))
    for path in paths:
        model = cached_placement(path, meta)
        if model is not None:
            return model
    return None


def fitted_ids(index: IndexView, feature: str) -> np.ndarray | None:
    """Ids of the images the cached map was fitted on (the rest were placed by their neighbours);
    None when the map has no valid placement file (made by an older version, or synthetic)."""
    meta = index.catalog.get_meta(meta_key(feature), None, dict)
    path = placement_path(index, feature)
    if meta is None or not path.is_file():
        return None
    try:
        check_npz_size(path)
        with np.load(path, allow_pickle=False) as data:
            token, ids = data["token"], data["ids"]
    except SettingError:
        raise
    except (*UNREADABLE, ValueError):
        return None
    if (
        token.shape != ()
        or str(token) != meta.get("placement")
        or ids.ndim != 1
        or ids.dtype.kind not in "iu"
    ):
        return None
    return np.asarray(ids.astype(np.int64))


@dataclass
class MapState:
    """Where the cached map stands for the index's images."""

    ids: np.ndarray  # every ok image, ascending
    xy: np.ndarray  # their stored positions, NaN where none
    pending: np.ndarray  # no position yet, or re-extracted since the map was made


def map_state(
    index: IndexView, feature: str, meta: dict[str, Any], ids: np.ndarray | None = None
) -> MapState:
    """Where the cached map stands, from one read of ``umap/<feature>`` and one catalog query."""
    ids = index.ids() if ids is None else ids
    xy = np.full((ids.size, 2), np.nan, dtype=np.float32)
    if ids.size:
        stored = index.store.read_range(coords_name(feature, meta), int(ids[-1]) + 1)
        inside = ids < len(stored)
        xy[inside] = stored[ids[inside]]
    pending = np.isnan(xy[:, 0])
    changed = index.catalog.ids_indexed_after(meta["updated_at"])
    if changed:
        pending |= np.isin(ids, np.asarray(changed, dtype=np.int64))
    return MapState(ids, xy, pending)


def status(index: IndexView, feature: str) -> dict[str, Any]:
    """``{"state": "missing" | "stale" | "fresh", "pending": n}``: is the cached map up to date?"""
    meta = index.catalog.get_meta(meta_key(feature), None, dict)
    if meta is None or f"umap/{feature}" not in index.store:
        return {"state": "missing", "pending": len(index)}
    pending = int(map_state(index, feature, meta).pending.sum())
    return {"state": "stale" if pending else "fresh", "pending": pending}


def load(index: IndexView, feature: str = "embedding", *, allow_stale: bool = True) -> Projection:
    """The cached map of ``feature`` (ProjectionError when there is none)."""
    meta = index.catalog.get_meta(meta_key(feature), None, dict)
    if meta is None or f"umap/{feature}" not in index.store:
        raise ProjectionError(
            f"no UMAP map of {feature!r} yet; compute it with idx.umap({feature!r}) or "
            f"`imrec umap {index.root} --feature {feature}`"
        )
    state = map_state(index, feature, meta)
    pending = int(state.pending.sum())
    if pending and not allow_stale:
        raise ProjectionError(
            f"the map of {feature!r} misses {pending} new or changed images; "
            f"run idx.umap({feature!r}) to add them"
        )
    placed = ~np.isnan(state.xy[:, 0])
    ids = state.ids[placed]
    return Projection(
        feature,
        ids,
        state.xy[placed],
        index.store.read_rows(labels_name(feature, meta), ids),
        meta["params"],
        fitted=meta.get("fitted", 0),
        pending=pending,
    )


def place(index: IndexView, feature: str, query: Any) -> np.ndarray:
    """Map position(s) (M x 2) of a query: stored for indexed ids, else placed on the map."""
    items = list(query) if isinstance(query, (list, tuple)) else [query]
    ids = [int(i) for i in items if isinstance(i, (int, np.integer)) and not isinstance(i, bool)]
    meta = index.catalog.get_meta(meta_key(feature), None, dict)
    if len(ids) == len(items):
        return index.store.read_rows(coords_name(feature, meta), ids)
    if meta is None:
        raise ProjectionError(f"no UMAP map of {feature!r} yet")
    model = placement_of(index, feature, meta)
    if model is None:
        why = (
            "its placement file is missing, unreadable or another fit's"
            if meta.get("placement")
            else "it was made by an older version, or written without a fit"
        )
        raise ProjectionError(
            f"the map of {feature!r} cannot place new images ({why}); "
            f"run idx.umap({feature!r}) to make it again"
        )
    vectors, _ = index.searcher.vectors(query, feature)
    values, _ = prepare_input(feature, vectors)
    return model.place(values)
