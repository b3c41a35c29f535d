"""2-D UMAP maps of a stored feature, plus cluster labels, cached in the index.

Fitting UMAP is the slow part, so it runs on a sample (``sample_size`` images). Every other
image, every image added later and any query image is *placed* on that map: at the weighted mean
of the map positions of its ``n_neighbors`` nearest fitted images, found exactly by brute force
(the weights are umap-learn's own, the starting point of its ``transform``; umap is not needed to
place). Coordinates live in the store as ``umap/<feature>`` (NaN = not placed), labels as
``cluster/<feature>``; a new map is written to ``umap/<feature>.next`` and
``cluster/<feature>.next`` first and published in two catalog commits (see ``_publish``), so a
killed run leaves the old map or the new one, never a mixture. umap-learn is imported with numba's on-disk cache on (in the user's cache
folder), so its compile is paid once per machine, not once per process.

What placing needs sits beside the store in ``umap_<feature>.npz``: the PCA mean and components,
the fitted sample's UMAP inputs (after PCA) and their map positions, as plain arrays read with
``allow_pickle=False``. Nothing in an index folder is ever unpickled, since an index may come
from someone else: a ``umap_<feature>.pkl`` left by older versions is never read (the map is
fitted again, and the file removed).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np

from imrec_widgets.derived import durable_replace
from imrec_widgets.errors import IndexLockedError, ProjectionError, SettingError
from imrec_widgets.numba_cache import mark_umap_compiled, umap_compiled, use_numba_cache

from .placement import (
    MAX_PLACEMENT_BYTES,
    MAX_PLACEMENT_VARIABLE,
    PLACEMENT_VERSION,
    UNREADABLE,
    Placement,
    check_npz_size,
    prepare_input,
    reduce_dims,
)
from .stages import TICK_SECONDS, ProgressCallback, RemovedDisplays, Stages

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

MIN_IMAGES = 5


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


def _input_size(index: IndexView, feature: str, ids: np.ndarray) -> int:
    """Length of the rows ``prepare_input`` makes of ``feature`` as stored now."""
    return int(prepare_input(feature, index.store.read_rows(feature, ids[:1]))[0].shape[1])


def _placement_path(index: IndexView, feature: str) -> Path:
    return index.index_dir / f"umap_{feature}.npz"


def _staged_placement_path(index: IndexView, feature: str) -> Path:
    """Where a new fit's placement waits until its map is published."""
    return index.index_dir / f"umap_{feature}{_STAGED}.npz"


def _placement_of(index: IndexView, feature: str, meta: dict[str, Any]) -> Placement | None:
    """The placement of the map ``meta`` describes: at the staged path while a publish that
    moves it there is under way (or was stopped), else at the main one; None when neither holds it."""
    paths = [_placement_path(index, feature)]
    if meta.get("staged"):
        paths.insert(0, _staged_placement_path(index, feature))
    for path in paths:
        model = _cached_placement(path, meta)
        if model is not None:
            return model
    return None


def _legacy_reducer_path(index: IndexView, feature: str) -> Path:
    """Where versions before the .npz pickled the reducer: never read, removed on a refit."""
    return index.index_dir / f"umap_{feature}.pkl"


def _read_placement(path: Path, meta: dict[str, Any]) -> Placement | None:
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


def fitted_ids(index: IndexView, feature: str) -> np.ndarray | None:
    """Ids of the images the cached map was fitted on (the rest were placed by their neighbours);
    None when the map has no valid placement file (made by an older version, or synthetic)."""
    meta = index.catalog.get_meta(_meta_key(feature), None, dict)
    path = _placement_path(index, feature)
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


def _meta_key(feature: str) -> str:
    return f"projection/{feature}"


_STAGED = ".next"


def _coords_name(feature: str, meta: dict[str, Any] | None = None) -> str:
    """The array holding the current map's positions: the staged copy while it is published."""
    return f"umap/{feature}{_STAGED if meta and meta.get('staged') else ''}"


def _labels_name(feature: str, meta: dict[str, Any] | None = None) -> str:
    return f"cluster/{feature}{_STAGED if meta and meta.get('staged') else ''}"


def publish_step(step: str) -> None:
    """Called before each step of publishing a map (a hook for tests that simulate a kill)."""


def _finish_publish(index: IndexView, feature: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Complete a publish that was killed after the switch: copy the staged map over the main one."""
    store = index.store
    for main, staged in (
        (_coords_name(feature), _coords_name(feature, meta)),
        (_labels_name(feature), _labels_name(feature, meta)),
    ):
        values = store.read_range(staged, store.array(staged).shape[0])
        store.write_rows(main, np.arange(len(values)), values)
    staged_placement = _staged_placement_path(index, feature)
    if _read_placement(staged_placement, meta) is not None:
        durable_replace(staged_placement, _placement_path(index, feature))
    meta = {key: value for key, value in meta.items() if key != "staged"}
    index.catalog.set_meta(_meta_key(feature), meta)
    for name in (_coords_name(feature, {"staged": True}), _labels_name(feature, {"staged": True})):
        store.delete(name)
    return meta


def _publish(
    index: IndexView,
    feature: str,
    ids: np.ndarray,
    xy: np.ndarray,
    labels: np.ndarray,
    meta: dict[str, Any],
    new_placement: Path | None,
) -> None:
    """Make a computed map the cached one so that a reader sees the old map or this one, whole.

    The new positions and labels are written to staged arrays first (readers still see the old
    map); one catalog commit points readers at them; they are then copied over the main arrays
    and a second commit points readers back. A run killed at any step leaves a consistent map,
    and the next ``compute`` rewrites it.
    """
    store, catalog = index.store, index.catalog
    staged_xy, staged_labels = (
        _coords_name(feature, {"staged": True}),
        _labels_name(feature, {"staged": True}),
    )
    publish_step("staging")
    for name in (staged_xy, staged_labels):
        store.delete(name)
    store.ensure(staged_xy, (2,), "float32", fill_value=np.nan)
    store.ensure(staged_labels, (), "int32", fill_value=-1)
    store.write_rows(staged_xy, ids, xy)
    store.write_rows(staged_labels, ids, labels)
    publish_step("switching")
    catalog.set_meta(_meta_key(feature), {**meta, "staged": True})
    publish_step("moving the placement")  # until it is moved, readers find it at the staged path
    if new_placement is not None:
        durable_replace(new_placement, _placement_path(index, feature))
    publish_step("copying")
    store.write_rows(f"umap/{feature}", ids, xy)
    publish_step("copying labels")
    store.write_rows(f"cluster/{feature}", ids, labels)
    publish_step("finishing")
    catalog.set_meta(_meta_key(feature), meta)
    for name in (staged_xy, staged_labels):
        store.delete(name)


@dataclass
class _MapState:
    ids: np.ndarray  # every ok image, ascending
    xy: np.ndarray  # their stored positions, NaN where none
    pending: np.ndarray  # no position yet, or re-extracted since the map was made


def _map_state(
    index: IndexView, feature: str, meta: dict[str, Any], ids: np.ndarray | None = None
) -> _MapState:
    """Where the cached map stands, from one read of ``umap/<feature>`` and one catalog query."""
    ids = index.ids() if ids is None else ids
    xy = np.full((ids.size, 2), np.nan, dtype=np.float32)
    if ids.size:
        stored = index.store.read_range(_coords_name(feature, meta), int(ids[-1]) + 1)
        inside = ids < len(stored)
        xy[inside] = stored[ids[inside]]
    pending = np.isnan(xy[:, 0])
    changed = index.catalog.ids_indexed_after(meta["updated_at"])
    if changed:
        pending |= np.isin(ids, np.asarray(changed, dtype=np.int64))
    return _MapState(ids, xy, pending)


def status(index: IndexView, feature: str) -> dict[str, Any]:
    """``{"state": "missing" | "stale" | "fresh", "pending": n}``: is the cached map up to date?"""
    meta = index.catalog.get_meta(_meta_key(feature), None, dict)
    if meta is None or f"umap/{feature}" not in index.store:
        return {"state": "missing", "pending": len(index)}
    pending = int(_map_state(index, feature, meta).pending.sum())
    return {"state": "stale" if pending else "fresh", "pending": pending}


MAP_WAIT_S = 600.0
"""Seconds ``compute`` waits by default for another process writing the index (an update or
another viewer's map) before it gives up with ``IndexLockedError``."""


COMPILE_NOTE = "compiling UMAP for this machine, once, about a minute"
"""Shown beside "UMAP fit" while numba has not compiled umap-learn's code on this machine yet."""


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
    ids = _enough_images(index)
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
                ids = _enough_images(index)
                params["n_neighbors"] = int(min(n_neighbors, ids.size - 1))
            catalog, store = index.catalog, index.store
            if store.read_only:
                index.close()
                store = index.store
            meta = catalog.get_meta(_meta_key(feature), None, dict)
            if meta is not None and meta.get("staged"):
                meta = _finish_publish(index, feature, meta)
            name = f"umap/{feature}"
            placement_file = _placement_path(index, feature)
            model, new_placement = None, None
            if not refit and meta is not None and meta["params"] == params and name in store:
                model = _read_placement(placement_file, meta)
                if model is not None and model.input_size != _input_size(index, feature, ids):
                    model = None  # the feature was re-extracted with other settings: fit again
            store.ensure(name, (2,), "float32", fill_value=np.nan)
            store.ensure(f"cluster/{feature}", (), "int32", fill_value=-1)
            if model is not None and meta is not None:
                token, fitted = meta["placement"], int(meta.get("fitted", 0))
                state = _map_state(index, feature, meta, ids)
                if waited and not state.pending.any() and meta.get("clusters") == cluster_params:
                    # The process waited for has just made this very map: use it.
                    return Projection(
                        feature,
                        ids,
                        state.xy,
                        store.read_rows(_labels_name(feature, meta), ids),
                        params,
                        fitted=fitted,
                        seconds=time.perf_counter() - started,
                    )
                xy, todo = state.xy, ids[state.pending]
            else:
                model, fit_ids, fit_xy = _fit(index, feature, ids, params, stages)
                token, fitted = uuid4().hex, int(fit_ids.size)
                new_placement = _staged_placement_path(index, feature)
                model.save(new_placement, token=token, ids=fit_ids)
                with contextlib.suppress(OSError):
                    _legacy_reducer_path(index, feature).unlink(missing_ok=True)
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
            labels = _cluster(xy, cluster_params, params["random_state"])
            stages("clustering", 1, 1)
            new_meta = {
                "params": params,
                "clusters": cluster_params,
                "updated_at": time.time(),
                "fitted": fitted,
                "placement": token,
            }
            _publish(index, feature, ids, xy, labels, new_meta, new_placement)
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


def _enough_images(index: IndexView) -> np.ndarray:
    """The ids of every searchable image; ProjectionError when too few to make a map."""
    ids = index.ids()
    if ids.size < MIN_IMAGES:
        raise ProjectionError(
            f"a UMAP map needs at least {MIN_IMAGES} images; this index has {ids.size}"
        )
    return ids


def _import_umap() -> Any:
    """``import umap``, keeping numba's compiled code on disk for the next process.

    umap-learn compiles its functions again in every new process (15-70 s before a first map)
    and marks almost none ``cache=True``. While imrec imports it (and pynndescent with it),
    numba's ``njit``/``jit`` default to ``cache=True``, so the next process loads them instead.
    Only with a cache folder set: numba refuses ``cache=True`` where it has nowhere to write.
    """
    if "umap" in sys.modules:
        return sys.modules["umap"]
    use_numba_cache()
    if not os.environ.get("NUMBA_CACHE_DIR"):
        import umap

        return umap
    import numba

    def caching(decorator: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(decorator)
        def with_cache(*args: Any, **options: Any) -> Any:
            options.setdefault("cache", True)
            return decorator(*args, **options)

        return with_cache

    originals = numba.njit, numba.jit
    numba.njit, numba.jit = caching(numba.njit), caching(numba.jit)
    try:
        import umap
    finally:
        numba.njit, numba.jit = originals
    return umap


def warm_umap(rows: int = 200) -> float:
    """Compile umap-learn's code into this machine's numba cache, as a first map would (a fit
    of random rows, same settings as ``compute``'s); return the seconds it took.

    ``imrec demo`` runs it in the background after indexing, so the first map takes seconds.
    """
    import warnings

    started = time.perf_counter()
    values = np.random.default_rng(0).normal(size=(rows, 50)).astype(np.float32)
    umap = _import_umap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=42, init="spectral").fit_transform(
            values
        )
    mark_umap_compiled()
    return time.perf_counter() - started


def _fit(
    index: IndexView, feature: str, ids: np.ndarray, params: dict[str, Any], stages: Stages
) -> tuple[Placement, np.ndarray, np.ndarray]:
    import warnings

    rng = np.random.default_rng(params["random_state"])
    fit_ids = (
        ids
        if ids.size <= params["sample_size"]
        else np.sort(rng.choice(ids, params["sample_size"], replace=False))
    )
    stages("reading features", 0, fit_ids.size)
    values, metric = prepare_input(feature, index.store.read_rows(feature, fit_ids))
    stages("reading features", fit_ids.size, fit_ids.size)
    mean = components = None
    if (
        metric == "euclidean"
        and values.shape[1] > params["pca_dims"]
        and len(values) > params["pca_dims"]
    ):
        from sklearn.decomposition import PCA

        stages("PCA", 0, 1)
        pca = PCA(n_components=params["pca_dims"], random_state=params["random_state"]).fit(values)
        mean, components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        stages("PCA", 1, 1)
    vectors = reduce_dims(values, mean, components)
    # The first fit on a machine spends about a minute in numba's compiler (import and fit).
    with stages.live("UMAP fit", "" if umap_compiled() else COMPILE_NOTE):
        umap = _import_umap()
        reducer = umap.UMAP(
            n_neighbors=params["n_neighbors"],
            min_dist=params["min_dist"],
            metric=metric,
            random_state=params["random_state"],
            n_components=2,
            init="spectral" if len(vectors) > params["n_neighbors"] + 2 else "random",
            tqdm_kwds=stages.umap_tqdm_kwds,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs / spectral-init chatter from umap-learn
            xy = reducer.fit_transform(vectors).astype(np.float32)
    mark_umap_compiled()
    stages("UMAP fit", 1, 1)
    return Placement(mean, components, vectors, xy, metric, params["n_neighbors"]), fit_ids, xy


def _cluster(xy: np.ndarray, options: dict[str, Any], random_state: int) -> np.ndarray:
    if options.get("clusters"):
        from sklearn.cluster import KMeans

        k = int(min(options["clusters"], len(xy)))
        labels = KMeans(n_clusters=k, n_init=4, random_state=random_state).fit_predict(xy)
        return np.asarray(labels, dtype=np.int32)
    from sklearn.cluster import HDBSCAN

    size = options.get("min_cluster_size") or max(5, len(xy) // 100)
    labels = HDBSCAN(min_cluster_size=int(min(size, len(xy))), copy=True).fit_predict(xy)
    return np.asarray(labels, dtype=np.int32)


def load(index: IndexView, feature: str = "embedding", *, allow_stale: bool = True) -> Projection:
    """The cached map of ``feature`` (ProjectionError when there is none)."""
    meta = index.catalog.get_meta(_meta_key(feature), None, dict)
    if meta is None or f"umap/{feature}" not in index.store:
        raise ProjectionError(
            f"no UMAP map of {feature!r} yet; compute it with idx.umap({feature!r}) or "
            f"`imrec umap {index.root} --feature {feature}`"
        )
    state = _map_state(index, feature, meta)
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
        index.store.read_rows(_labels_name(feature, meta), ids),
        meta["params"],
        fitted=meta.get("fitted", 0),
        pending=pending,
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


_PLACEMENTS: dict[tuple[str, int, int, str], Placement] = {}


def place(index: IndexView, feature: str, query: Any) -> np.ndarray:
    """Map position(s) (M x 2) of a query: stored for indexed ids, else placed on the map."""
    items = list(query) if isinstance(query, (list, tuple)) else [query]
    ids = [int(i) for i in items if isinstance(i, (int, np.integer)) and not isinstance(i, bool)]
    meta = index.catalog.get_meta(_meta_key(feature), None, dict)
    if len(ids) == len(items):
        return index.store.read_rows(_coords_name(feature, meta), ids)
    if meta is None:
        raise ProjectionError(f"no UMAP map of {feature!r} yet")
    model = _placement_of(index, feature, meta)
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


def _cached_placement(path: Path, meta: dict[str, Any]) -> Placement | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(meta.get("placement")))
    if key not in _PLACEMENTS:
        model = _read_placement(path, meta)
        if model is None:
            return None
        if len(_PLACEMENTS) >= 8:
            _PLACEMENTS.clear()
        _PLACEMENTS[key] = model
    return _PLACEMENTS[key]


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
