"""Fitting a map: UMAP on a sample of a feature (after PCA), and clustering the positions.

umap-learn is imported with numba's on-disk cache on (in the user's cache folder), so its
compile is paid once per machine, not once per process.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from imrec_widgets.errors import ProjectionError
from imrec_widgets.numba_cache import mark_umap_compiled, umap_compiled, use_numba_cache

from .placement import Placement, prepare_input, reduce_dims
from .stages import Stages

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

MIN_IMAGES = 5

COMPILE_NOTE = "compiling UMAP for this machine, once, about a minute"
"""Shown beside "UMAP fit" while numba has not compiled umap-learn's code on this machine yet."""


def enough_images(index: IndexView) -> np.ndarray:
    """The ids of every searchable image; ProjectionError when too few to make a map."""
    ids = index.ids()
    if ids.size < MIN_IMAGES:
        raise ProjectionError(
            f"a UMAP map needs at least {MIN_IMAGES} images; this index has {ids.size}"
        )
    return ids


def import_umap() -> Any:
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
    umap = import_umap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=42, init="spectral").fit_transform(
            values
        )
    mark_umap_compiled()
    return time.perf_counter() - started


def fit_map(
    index: IndexView, feature: str, ids: np.ndarray, params: dict[str, Any], stages: Stages
) -> tuple[Placement, np.ndarray, np.ndarray]:
    """Fit UMAP on a sample of ``ids`` (``params["sample_size"]``): the placement it makes,
    the sample's ids and their map positions."""
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
        umap = import_umap()
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


def cluster(xy: np.ndarray, options: dict[str, Any], random_state: int) -> np.ndarray:
    """Cluster labels of map positions (-1 = noise): KMeans with ``options["clusters"]``
    groups, else HDBSCAN with ``options["min_cluster_size"]`` (default about 1%, at least 5)."""
    if options.get("clusters"):
        from sklearn.cluster import KMeans

        k = int(min(options["clusters"], len(xy)))
        labels = KMeans(n_clusters=k, n_init=4, random_state=random_state).fit_predict(xy)
        return np.asarray(labels, dtype=np.int32)
    from sklearn.cluster import HDBSCAN

    size = options.get("min_cluster_size") or max(5, len(xy) // 100)
    labels = HDBSCAN(min_cluster_size=int(min(size, len(xy))), copy=True).fit_predict(xy)
    return np.asarray(labels, dtype=np.int32)
