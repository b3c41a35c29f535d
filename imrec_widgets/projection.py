"""2-D UMAP maps of a stored feature, plus cluster labels, cached in the index.

Fitting UMAP is the slow part, so it runs on a sample (``sample_size`` images) and every other
image is placed with ``transform``; images added later are transformed into the existing map
instead of refitting. Coordinates live in the store as ``umap/<feature>`` (NaN = not projected),
labels as ``cluster/<feature>``; the fitted reducer is pickled beside the store.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .index import ImageIndex

PROJECTABLE = ("embedding", "rgb", "ahash", "dhash")
MIN_IMAGES = 5


@dataclass
class Projection:
    """A 2-D map of one feature: ``ids`` with their ``xy`` coordinates and ``clusters`` (-1 = noise).

    ``fitted``: images the UMAP model was fitted on; ``transformed``: images this call placed
    into an existing fit.
    """

    feature: str
    ids: np.ndarray
    xy: np.ndarray
    clusters: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    transformed: int = 0
    fitted: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.ids.size)

    def __repr__(self) -> str:
        n_clusters = len(set(self.clusters.tolist()) - {-1})
        return (
            f"Projection({self.feature!r}, {len(self)} points, {n_clusters} clusters, "
            f"fitted on {self.fitted}, transformed {self.transformed})"
        )


class ProjectionError(ValueError):
    """A map that cannot be made or read (feature missing, too few images, not computed yet)."""


def _prepare_input(feature: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    if feature in ("ahash", "dhash"):
        return np.unpackbits(values, axis=1).astype(np.float32), "hamming"
    values = values.astype(np.float32, copy=False)
    if feature == "embedding":
        norms = np.linalg.norm(values, axis=1, keepdims=True)
        return values / np.where(norms > 0, norms, 1), "euclidean"  # on unit vectors ~ cosine
    return values, "euclidean"


def _reducer_path(index: ImageIndex, feature: str) -> Path:
    return index.index_dir / f"umap_{feature}.pkl"


def _meta_key(feature: str) -> str:
    return f"projection/{feature}"


def status(index: ImageIndex, feature: str) -> dict[str, Any]:
    """``{"state": "missing" | "stale" | "fresh", "pending": n}``: is the cached map up to date?"""
    meta = index.catalog.get_meta(_meta_key(feature))
    name = f"umap/{feature}"
    if meta is None or name not in index.store:
        return {"state": "missing", "pending": len(index)}
    pending = _pending_ids(index, feature, meta)
    return {"state": "stale" if pending.size else "fresh", "pending": int(pending.size)}


def _pending_ids(index: ImageIndex, feature: str, meta: dict[str, Any]) -> np.ndarray:
    """Ok images with no coordinates yet, or re-extracted since the map was made."""
    ids = index.ids()
    if ids.size == 0:
        return ids
    xy = index.store.read_range(f"umap/{feature}", int(ids[-1]) + 1)
    missing = np.zeros(ids.size, dtype=bool)
    inside = ids < len(xy)
    missing[~inside] = True
    missing[inside] = np.isnan(xy[ids[inside], 0])
    changed = {r.id for r in index.catalog.records(status="ok") if (r.indexed_at or 0) > meta["updated_at"]}
    if changed:
        missing |= np.isin(ids, np.fromiter(changed, dtype=np.int64))
    return ids[missing]


def compute(
    index: ImageIndex,
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
) -> Projection:
    """Compute (or extend) the 2-D UMAP map of ``feature`` and its clusters; cache both.

    A cached map with the same parameters is extended with the images it lacks (transform, no
    refit) unless ``refit``. Clusters: KMeans with ``clusters`` groups, else HDBSCAN with
    ``min_cluster_size`` (default: about 1% of the images, at least 5).
    """
    started = time.perf_counter()
    if feature not in PROJECTABLE:
        raise ProjectionError(f"cannot map {feature!r}; choose from {', '.join(PROJECTABLE)}")
    if feature not in index.settings["features"]:
        raise ProjectionError(
            f"feature {feature!r} is not in this index (it has {', '.join(index.settings['features'])}); "
            f"index it first"
        )
    ids = index.ids()
    if ids.size < MIN_IMAGES:
        raise ProjectionError(f"a UMAP map needs at least {MIN_IMAGES} images; this index has {ids.size}")
    params = {
        "n_neighbors": int(min(n_neighbors, ids.size - 1)),
        "min_dist": float(min_dist),
        "pca_dims": int(pca_dims),
        "sample_size": int(sample_size),
        "random_state": int(random_state),
    }
    cluster_params = {"clusters": clusters, "min_cluster_size": min_cluster_size}
    from .index import _WriteLock

    with _WriteLock(index.index_dir / "write.lock"):
        catalog, store = index.catalog, index.store
        if store.read_only:
            index.close()
            store = index.store
        meta = catalog.get_meta(_meta_key(feature))
        reducer_file = _reducer_path(index, feature)
        name = f"umap/{feature}"
        reuse = (
            not refit
            and meta is not None
            and meta["params"] == params
            and name in store
            and reducer_file.exists()
        )
        store.ensure(name, (2,), "float32", fill_value=np.nan)
        store.ensure(f"cluster/{feature}", (), "int32", fill_value=-1)
        fitted = int((meta or {}).get("fitted", 0)) if reuse else 0
        if reuse:
            with open(reducer_file, "rb") as f:
                model = pickle.load(f)
            todo = _pending_ids(index, feature, meta)
        else:
            model, fit_ids, fit_xy = _fit(index, feature, ids, params)
            with open(reducer_file.with_suffix(".tmp"), "wb") as f:
                pickle.dump(model, f)
            reducer_file.with_suffix(".tmp").replace(reducer_file)
            store.write_rows(name, fit_ids, fit_xy)
            fitted = int(fit_ids.size)
            todo = np.setdiff1d(ids, fit_ids)
        for start in range(0, todo.size, batch_size):
            block = todo[start : start + batch_size]
            values, _ = _prepare_input(feature, store.read_rows(feature, block))
            store.write_rows(name, block, _transform(model, values))
        xy = store.read_rows(name, ids)
        labels = _cluster(xy, cluster_params, params["random_state"])
        store.write_rows(f"cluster/{feature}", ids, labels)
        catalog.set_meta(
            _meta_key(feature),
            {"params": params, "clusters": cluster_params, "updated_at": time.time(),
             "fitted": fitted},
        )
    return Projection(
        feature, ids, xy, labels, params, transformed=int(todo.size), fitted=fitted,
        seconds=time.perf_counter() - started,
    )


def _fit(index: ImageIndex, feature: str, ids: np.ndarray, params: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray]:
    import warnings

    rng = np.random.default_rng(params["random_state"])
    fit_ids = ids if ids.size <= params["sample_size"] else np.sort(rng.choice(ids, params["sample_size"], replace=False))
    values, metric = _prepare_input(feature, index.store.read_rows(feature, fit_ids))
    pca = None
    if metric == "euclidean" and values.shape[1] > params["pca_dims"] and len(values) > params["pca_dims"]:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=params["pca_dims"], random_state=params["random_state"]).fit(values)
        values = pca.transform(values).astype(np.float32)
    import umap

    reducer = umap.UMAP(
        n_neighbors=params["n_neighbors"],
        min_dist=params["min_dist"],
        metric=metric,
        random_state=params["random_state"],
        n_components=2,
        init="spectral" if len(values) > params["n_neighbors"] + 2 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs / spectral-init chatter from umap-learn
        xy = reducer.fit_transform(values).astype(np.float32)
    return {"pca": pca, "umap": reducer}, fit_ids, xy


def _transform(model: dict[str, Any], values: np.ndarray) -> np.ndarray:
    import warnings

    if model["pca"] is not None:
        values = model["pca"].transform(values).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model["umap"].transform(values).astype(np.float32)


def _cluster(xy: np.ndarray, options: dict[str, Any], random_state: int) -> np.ndarray:
    if options.get("clusters"):
        from sklearn.cluster import KMeans

        k = int(min(options["clusters"], len(xy)))
        return KMeans(n_clusters=k, n_init=4, random_state=random_state).fit_predict(xy).astype(np.int32)
    from sklearn.cluster import HDBSCAN

    size = options.get("min_cluster_size") or max(5, len(xy) // 100)
    return HDBSCAN(min_cluster_size=int(min(size, len(xy))), copy=True).fit_predict(xy).astype(np.int32)


def load(index: ImageIndex, feature: str = "embedding", *, allow_stale: bool = True) -> Projection:
    """The cached map of ``feature`` (ProjectionError when there is none)."""
    state = status(index, feature)
    if state["state"] == "missing":
        raise ProjectionError(
            f"no UMAP map of {feature!r} yet; compute it with idx.umap({feature!r}) or "
            f"`imrec umap {index.root} --feature {feature}`"
        )
    if state["state"] == "stale" and not allow_stale:
        raise ProjectionError(
            f"the map of {feature!r} misses {state['pending']} new or changed images; "
            f"run idx.umap({feature!r}) to add them"
        )
    ids = index.ids()
    xy = index.store.read_rows(f"umap/{feature}", ids)
    placed = ~np.isnan(xy[:, 0])
    meta = index.catalog.get_meta(_meta_key(feature))
    return Projection(
        feature,
        ids[placed],
        xy[placed],
        index.store.read_rows(f"cluster/{feature}", ids[placed]),
        meta["params"],
        fitted=meta.get("fitted", 0),
    )


_REDUCERS: dict[tuple[str, str, float], Any] = {}


def place(index: ImageIndex, feature: str, query: Any) -> np.ndarray:
    """Map position(s) (M x 2) of a query: stored for indexed ids, else transformed into the map."""
    items = list(query) if isinstance(query, (list, tuple)) else [query]
    ids = [int(i) for i in items if isinstance(i, (int, np.integer)) and not isinstance(i, bool)]
    if len(ids) == len(items):
        return index.store.read_rows(f"umap/{feature}", ids)
    vectors, _ = index.searcher.vectors(query, feature)
    path = _reducer_path(index, feature)
    if not path.exists():
        raise ProjectionError(f"no UMAP map of {feature!r} yet")
    key = (str(path), feature, path.stat().st_mtime)
    if key not in _REDUCERS:
        with open(path, "rb") as f:
            _REDUCERS[key] = pickle.load(f)
    values, _ = _prepare_input(feature, vectors)
    return _transform(_REDUCERS[key], values)
