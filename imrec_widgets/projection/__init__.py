"""2-D UMAP maps of a stored feature, plus cluster labels, cached in the index.

Fitting UMAP is the slow part, so it runs on a sample (``sample_size`` images). Every other
image, every image added later and any query image is *placed* on that map: at the weighted mean
of the map positions of its ``n_neighbors`` nearest fitted images, found exactly by brute force
(the weights are umap-learn's own, the starting point of its ``transform``; umap is not needed to
place). Coordinates live in the store as ``umap/<feature>`` (NaN = not placed), labels as
``cluster/<feature>``; a new map is written to ``umap/<feature>.next`` and
``cluster/<feature>.next`` first and published in two catalog commits (see
``publishing.publish``), so a killed run leaves the old map or the new one, never a mixture.

What placing needs sits beside the store in ``umap_<feature>.npz``: the PCA mean and components,
the fitted sample's UMAP inputs (after PCA) and their map positions, as plain arrays read with
``allow_pickle=False``. Nothing in an index folder is ever unpickled, since an index may come
from someone else: a ``umap_<feature>.pkl`` left by older versions is never read (the map is
fitted again, and the file removed).

The package, one job a module: ``fitting`` (UMAP fit, clustering, numba's cache),
``placement`` (the placement file and placing), ``publishing`` (the two-commit publish),
``mapstore`` (where a map lives, reading it), ``stages`` (the progress of a computation); this
module runs them (``compute``, ``load_or_compute``) and re-exports their public names.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np

from imrec_widgets.errors import IndexLockedError, ProjectionError

from . import fitting, publishing
from .fitting import COMPILE_NOTE, MIN_IMAGES, warm_umap
from .mapstore import (
    Projection,
    fitted_ids,
    labels_name,
    legacy_reducer_path,
    load,
    map_state,
    meta_key,
    place,
    placement_path,
    read_placement,
    staged_placement_path,
    status,
)
from .placement import (
    MAX_PLACEMENT_BYTES,
    MAX_PLACEMENT_VARIABLE,
    PLACEMENT_VERSION,
    Placement,
    check_npz_size,
    prepare_input,
)
from .publishing import publish_step
from .stages import TICK_SECONDS, ProgressCallback, RemovedDisplays, Stages

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView


def _input_size(index: IndexView, feature: str, ids: np.ndarray) -> int:
    """Length of the rows ``prepare_input`` makes of ``feature`` as stored now."""
    return int(prepare_input(feature, index.store.read_rows(feature, ids[:1]))[0].shape[1])


MAP_WAIT_S = 600.0
"""Seconds ``compute`` waits by default for another process writing the index (an update or
another viewer's map) before it gives up with ``IndexLockedError``."""


def compute(
    index: IndexView,
    feature: str = "embedding",
    *,
    refit: bool = False,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    pca_dims: int = 50,
    sample_size: int = 20_000,
    clusters: int | None = None,
    min_cluster_size: int | None = None,
    random_state: int = 42,
    batch_size: int = 20_000,
    progress: bool | ProgressCallback = False,
    wait: float | None = MAP_WAIT_S,
) -> Projection:
    """Compute (or extend) the 2-D UMAP map of ``feature`` and its clusters; cache both.

    A cached map with the same parameters is extended with the images it lacks (placed, no
    refit) unless ``refit``. Clusters: KMeans with ``clusters`` groups, else HDBSCAN with
    ``min_cluster_size`` (default: about 1% of the images, at least 5). ``progress``: True
    shows a progress display of the stages ("reading features", "PCA", "UMAP fit", "placing N
    images", "clustering"); a callable is called as ``progress(stage, done, total)``.

    When another process writes the index (an update, or another viewer computing this map),
    this waits up to ``wait`` seconds (default ``MAP_WAIT_S``; None: as long as it takes; 0:
    not at all) for it to finish, saying whom it waits for as a stage ("waiting for pid N to
    finish writing ..."), then raises ``IndexLockedError`` if it still writes. A map the other
    process has just made with the same parameters is then returned as it is, not made again.
    """
    started = time.perf_counter()
    from imrec_widgets.features import mappable_features

    if feature not in mappable_features():
        raise ProjectionError(
            f"cannot map {feature!r}; choose from {', '.join(mappable_features())}"
        )
    if feature not in index.settings["features"]:
        raise ProjectionError(
            f"feature {feature!r} is not in this index (it has {', '.join(index.settings['features'])}); "
            f"index it first"
        )
    ids = fitting.enough_images(index)
    params: dict[str, Any] = {
        "n_neighbors": int(min(n_neighbors, ids.size - 1)),
        "min_dist": float(min_dist),
        "pca_dims": int(pca_dims),
        "sample_size": int(sample_size),
        "random_state": int(random_state),
    }
    cluster_params = {"clusters": clusters, "min_cluster_size": min_cluster_size}
    if isinstance(wait, bool):
        wait = None if wait else 0.0
    if wait is not None and not wait >= 0:
        raise ValueError(f"wait= is seconds to wait (>= 0) or None, not {wait!r}")
    from imrec_widgets.indexer import WriteLock

    stages = Stages(progress)
    lock = WriteLock(
        index.index_dir / "write.lock",
        wait=wait,
        on_wait=lambda holder, _: stages.waiting(holder, index.index_dir),
    )
    try:
        with contextlib.ExitStack() as held:
            if not lock.acquire():
                raise IndexLockedError(
                    f"index {index.index_dir} is still locked by pid {lock.holder} after "
                    f"waiting {wait:g} s (another update or map is running); try again when it "
                    "has finished, or pass wait=None to wait as long as it takes"
                )
            held.callback(lock.release)
            waited = bool(lock.holder)  # set only when another process held the lock
            if waited:  # the writer waited for may have added images and grown the arrays
                index.store.refresh()
                ids = fitting.enough_images(index)
                params["n_neighbors"] = int(min(n_neighbors, ids.size - 1))
            catalog, store = index.catalog, index.store
            if store.read_only:
                index.close()
                store = index.store
            meta = catalog.get_meta(meta_key(feature), None, dict)
            if meta is not None and meta.get("staged"):
                meta = publishing.finish_publish(index, feature, meta)
            name = f"umap/{feature}"
            placement_file = placement_path(index, feature)
            model, new_placement = None, None
            if not refit and meta is not None and meta["params"] == params and name in store:
                model = read_placement(placement_file, meta)
                if model is not None and model.input_size != _input_size(index, feature, ids):
                    model = None  # the feature was re-extracted with other settings: fit again
            store.ensure(name, (2,), "float32", fill_value=np.nan)
            store.ensure(f"cluster/{feature}", (), "int32", fill_value=-1)
            if model is not None and meta is not None:
                token, fitted = meta["placement"], int(meta.get("fitted", 0))
                state = map_state(index, feature, meta, ids)
                if waited and not state.pending.any() and meta.get("clusters") == cluster_params:
                    # The process waited for has just made this very map: use it.
                    return Projection(
                        feature,
                        ids,
                        state.xy,
                        store.read_rows(labels_name(feature, meta), ids),
                        params,
                        fitted=fitted,
                        seconds=time.perf_counter() - started,
                    )
                xy, todo = state.xy, ids[state.pending]
            else:
                model, fit_ids, fit_xy = fitting.fit_map(index, feature, ids, params, stages)
                token, fitted = uuid4().hex, int(fit_ids.size)
                new_placement = staged_placement_path(index, feature)
                model.save(new_placement, token=token, ids=fit_ids)
                with contextlib.suppress(OSError):
                    legacy_reducer_path(index, feature).unlink(missing_ok=True)
                xy = np.full((ids.size, 2), np.nan, dtype=np.float32)
                xy[np.searchsorted(ids, fit_ids)] = fit_xy
                todo = np.setdiff1d(ids, fit_ids)
            stage = f"placing {todo.size} images"
            for start in range(0, todo.size, batch_size):
                stages(stage, start, todo.size)
                block = todo[start : start + batch_size]
                values, _ = prepare_input(feature, store.read_rows(feature, block))
                placed = model.place(values)
                xy[np.searchsorted(ids, block)] = placed
            if todo.size:
                stages(stage, todo.size, todo.size)
            stages("clustering", 0, 1)
            labels = fitting.cluster(xy, cluster_params, params["random_state"])
            stages("clustering", 1, 1)
            new_meta = {
                "params": params,
                "clusters": cluster_params,
                "updated_at": time.time(),
                "fitted": fitted,
                "placement": token,
            }
            publishing.publish(index, feature, ids, xy, labels, new_meta, new_placement)
    finally:
        stages.close()
    return Projection(
        feature,
        ids,
        xy,
        labels,
        params,
        transformed=int(todo.size),
        fitted=fitted,
        seconds=time.perf_counter() - started,
    )


def load_or_compute(
    index: IndexView,
    feature: str = "embedding",
    *,
    compute_missing: bool = True,
    progress: bool | ProgressCallback = False,
    **params: Any,
) -> Projection:
    """The map of ``feature`` as a viewer wants it (what ``UmapExplorer`` shows).

    The stored map when it holds every image and no ``params`` are asked for; else, with
    ``compute_missing``, ``compute(index, feature, progress=progress, **params)`` (which reuses
    the stored fit when the parameters match and extends it with the new images). A map that
    cannot be computed here (``compute_missing=False``, or a read-only index) is returned as
    stored, its ``pending`` counting the images it misses; ProjectionError when none is stored.
    """
    stored = None
    if index.exists():
        with contextlib.suppress(ProjectionError):
            stored = load(index, feature)
    if compute_missing and (stored is None or stored.pending or params):
        if not index.read_only:
            return compute(index, feature, progress=progress, **params)
        if stored is None:
            raise ProjectionError(
                f"no UMAP map of {feature!r} is stored in this read-only index "
                f"{index.index_dir}; compute one where the index can be written"
            )
    return stored if stored is not None else load(index, feature)


__all__ = [
    "COMPILE_NOTE",
    "MAP_WAIT_S",
    "MAX_PLACEMENT_BYTES",
    "MAX_PLACEMENT_VARIABLE",
    "MIN_IMAGES",
    "PLACEMENT_VERSION",
    "TICK_SECONDS",
    "Placement",
    "ProgressCallback",
    "Projection",
    "RemovedDisplays",
    "check_npz_size",
    "compute",
    "fitted_ids",
    "load",
    "load_or_compute",
    "place",
    "publish_step",
    "status",
    "warm_umap",
]
