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
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np

from .derived import atomic_file, durable_replace
from .errors import IndexLockedError, ProjectionError, SettingError
from .numba_cache import mark_umap_compiled, umap_compiled, use_numba_cache
from .settings import env_count

if TYPE_CHECKING:
    from .protocols import IndexView

MIN_IMAGES = 5
PLACEMENT_VERSION = 1

# Rows are placed a block at a time, so memory stays bounded at any size.
_QUERY_BLOCK = 2048

ProgressCallback = Callable[[str, int, int], None]


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


def _prepare_input(feature: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Stored rows of ``feature`` as UMAP input, and the metric they are compared by (the
    feature class's ``map_input`` and ``map_metric``, see ``features.register``)."""
    from .features import feature_class

    cls = feature_class(feature)
    return cls.map_input(values), cls.map_metric


class Placement:
    """What placing rows on a fitted map needs, as plain arrays: no umap, nothing pickled.

    ``vectors``: the fitted sample's UMAP inputs (after PCA), ``xy``: their map positions,
    ``pca_mean``/``pca_components``: the PCA applied to inputs first (None: none was),
    ``metric``: ``euclidean``, or ``hamming`` over hash bits as 0/1 floats.
    """

    def __init__(
        self,
        pca_mean: np.ndarray | None,
        pca_components: np.ndarray | None,
        vectors: np.ndarray,
        xy: np.ndarray,
        metric: str,
        n_neighbors: int,
    ) -> None:
        if metric not in ("euclidean", "hamming"):
            raise ValueError(f"unknown placement metric {metric!r}")
        self.pca_mean, self.pca_components = pca_mean, pca_components
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.xy = np.ascontiguousarray(xy, dtype=np.float32)
        self.metric = metric
        self.n_neighbors = int(n_neighbors)
        self._search: Any = None

    @property
    def input_size(self) -> int:
        """Length of the rows ``place`` takes (before PCA)."""
        return int(self.vectors.shape[1] if self.pca_mean is None else self.pca_mean.size)

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Prepared feature rows as UMAP inputs: the fitted PCA applied, float32."""
        return _reduce(values, self.pca_mean, self.pca_components)

    def place(self, values: np.ndarray) -> np.ndarray:
        """Map positions (M x 2) of prepared feature rows (M x ``input_size``)."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != self.input_size:
            raise ProjectionError(
                f"rows of {values.shape[-1]} values do not fit a map made from {self.input_size}; "
                "the feature changed since the map was made: compute it again"
            )
        out = np.empty((len(values), 2), dtype=np.float32)
        for start in range(0, len(values), _QUERY_BLOCK):
            block = self.reduce(values[start : start + _QUERY_BLOCK])
            neighbours, distances = self.nearest(block)
            out[start : start + len(block)] = self._weighted_mean(neighbours, distances)
        return out

    def nearest(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and distances (M x k, nearest first) of the k fitted rows nearest each input.

        Exact: scikit-learn's brute-force search (chunked, so memory stays bounded) finds them,
        by euclidean distance, which ranks hash bits as hamming does; distances are then
        computed again directly, so an input equal to a fitted row is at distance 0.
        """
        if self._search is None:
            from sklearn.neighbors import NearestNeighbors

            k = min(self.n_neighbors, len(self.vectors))
            self._search = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.vectors)
        found = self._search.kneighbors(vectors, return_distance=False)
        difference = vectors[:, None, :] - self.vectors[found]
        squared = np.einsum("mkd,mkd->mk", difference, difference)
        order = np.argsort(squared, axis=1, kind="stable")
        squared = np.take_along_axis(squared, order, axis=1)
        found = np.take_along_axis(found, order, axis=1)
        if self.metric == "hamming":  # bits as 0/1: squared distance = differing bits
            return found, squared / vectors.shape[1]
        return found, np.sqrt(squared)

    def _weighted_mean(self, neighbours: np.ndarray, distances: np.ndarray) -> np.ndarray:
        weights = _membership(distances)
        xy = np.einsum("mk,mkc->mc", weights, self.xy[neighbours]) / weights.sum(
            axis=1, keepdims=True
        )
        # an input equal to a fitted row (to float rounding) sits on that row's point
        same = distances[:, 0] <= 1e-5 * distances[:, -1]
        xy[same] = self.xy[neighbours[same, 0]]
        return np.asarray(xy.astype(np.float32))

    # -- the file ---------------------------------------------------------------------------------
    def save(self, path: Path, *, token: str, ids: np.ndarray) -> None:
        """Write to ``path`` atomically (``derived.atomic_file``)."""
        no_pca = self.pca_mean is None
        arrays = {
            "version": np.int64(PLACEMENT_VERSION),
            "token": np.str_(token),
            "metric": np.str_(self.metric),
            "n_neighbors": np.int64(self.n_neighbors),
            "ids": np.asarray(ids, dtype=np.int64),
            "vectors": self.vectors,
            "xy": self.xy,
            "pca_mean": np.empty(0, np.float32) if no_pca else self.pca_mean,
            "pca_components": np.empty((0, 0), np.float32) if no_pca else self.pca_components,
        }
        with atomic_file(path) as handle:  # never through a planted link
            np.savez_compressed(handle, **arrays)

    @classmethod
    def read(cls, path: Path) -> tuple[Placement, str]:
        """The placement stored at ``path`` and its token; ValueError when it is not a valid one."""
        check_npz_size(path)
        names = (
            "version",
            "token",
            "metric",
            "n_neighbors",
            "vectors",
            "xy",
            "pca_mean",
            "pca_components",
        )
        try:
            data = np.load(path, allow_pickle=False)  # refuses pickles: an index may be anyone's
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                arrays = {name: data[name] for name in names}
        except _UNREADABLE as exc:
            raise ValueError(f"unreadable placement file {path.name}: {exc}") from None
        kinds = {"version": "iu", "token": "U", "metric": "U", "n_neighbors": "iu"}
        if any(
            arrays[name].shape != () or arrays[name].dtype.kind not in kind
            for name, kind in kinds.items()
        ):
            raise ValueError(f"placement file {path.name} holds settings of the wrong type")
        if int(arrays["version"]) != PLACEMENT_VERSION:
            raise ValueError(f"placement file {path.name} has an unknown version")
        vectors, xy = arrays["vectors"], arrays["xy"]
        mean, components = arrays["pca_mean"], arrays["pca_components"]
        if not all(a.dtype == np.float32 for a in (vectors, xy, mean, components)):
            raise ValueError(f"placement file {path.name} holds arrays of the wrong type")
        shapes_agree = (
            vectors.ndim == 2
            and len(vectors) > 0
            and xy.shape == (len(vectors), 2)
            and mean.ndim == 1
            and components.ndim == 2
            and (mean.size == 0 or components.shape == (vectors.shape[1], mean.size))
        )
        if not shapes_agree:
            raise ValueError(f"placement file {path.name} holds arrays that do not fit together")
        if not all(np.isfinite(a).all() for a in (xy, vectors, mean, components)):
            raise ValueError(f"placement file {path.name} holds values that are not finite")
        placement = cls(
            None if mean.size == 0 else mean,
            None if mean.size == 0 else components,
            vectors,
            xy,
            str(arrays["metric"]),
            max(1, int(arrays["n_neighbors"])),
        )
        return placement, str(arrays["token"])


MAX_PLACEMENT_BYTES = 2 * 2**30
"""Largest placement file (arrays as stored, uncompressed) read; ``IMREC_MAX_PLACEMENT_BYTES``
raises it. A default fit (20,000 rows after PCA to 50-d) takes 4 MB."""

MAX_PLACEMENT_VARIABLE = "IMREC_MAX_PLACEMENT_BYTES"

_UNREADABLE = (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError)
"""What reading a damaged or crafted ``.npz`` raises besides ValueError (a corrupt deflate
stream is a ``zlib.error``): each makes the placement file unreadable, never a traceback."""


def check_npz_size(path: Path) -> int:
    """Bytes the arrays of the ``.npz`` at ``path`` declare; ValueError over the cap, before any
    is decompressed (a few MB of zeros can declare gigabytes)."""
    import numpy.lib.format as npy_format

    cap = env_count(MAX_PLACEMENT_VARIABLE, MAX_PLACEMENT_BYTES, "bytes")
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as stream:
                    version = npy_format.read_magic(stream)
                    read_header = (
                        npy_format.read_array_header_1_0
                        if version == (1, 0)
                        else npy_format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read_header(stream)
                total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    except (*_UNREADABLE, ValueError) as exc:
        raise ValueError(f"unreadable placement file {path.name}: {exc}") from None
    if total > cap:
        raise ValueError(
            f"placement file {path.name} declares {total:,} bytes of arrays, over the "
            f"{cap:,} read ({MAX_PLACEMENT_VARIABLE} raises it)"
        )
    return total


def _membership(distances: np.ndarray) -> np.ndarray:
    """umap-learn's membership strengths of each row's k nearest neighbours in ``transform``.

    With its default local connectivity (1, less 1 for new points) the offset is 0, so the
    strength is ``exp(-d / sigma)`` with ``sigma`` binary-searched so that the strengths of all
    but the nearest sum to ``log2(k)``, and at least 1/1000 of the mean distance (per row here).
    Returned scaled so the nearest weighs 1 (same ratios; nothing underflows).
    """
    distances = distances.astype(np.float64)
    rows, k = distances.shape
    target = np.log2(k)
    farther = distances[:, 1:]
    low, high, sigma = np.zeros(rows), np.full(rows, np.inf), np.ones(rows)
    for _ in range(64):
        total = np.exp(-farther / sigma[:, None]).sum(axis=1)
        searching = np.abs(total - target) >= 1e-5
        if not searching.any():
            break
        over = searching & (total > target)
        under = searching & ~over
        high = np.where(over, sigma, high)
        low = np.where(under, sigma, low)
        sigma = np.where(searching, np.where(np.isinf(high), sigma * 2, (low + high) / 2), sigma)
    sigma = np.maximum(sigma, 1e-3 * distances.mean(axis=1))
    sigma = np.where(sigma > 0, sigma, 1.0)  # every neighbour at distance 0
    return np.asarray(np.exp(-(distances - distances[:, :1]) / sigma[:, None]))


def _reduce(
    values: np.ndarray, mean: np.ndarray | None, components: np.ndarray | None
) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if components is None:
        return values
    return np.asarray(((values - mean) @ components.T).astype(np.float32, copy=False))


def _input_size(index: IndexView, feature: str, ids: np.ndarray) -> int:
    """Length of the rows ``_prepare_input`` makes of ``feature`` as stored now."""
    return int(_prepare_input(feature, index.store.read_rows(feature, ids[:1]))[0].shape[1])


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
    except (*_UNREADABLE, ValueError):
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


class _Stages:
    """Reports the named stages of a computation: a tqdm display, a callable, or nothing."""

    _BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"

    def __init__(self, progress: bool | ProgressCallback | None) -> None:
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(
                f"progress must be True, False or a callable(stage, done, total), not {progress!r}"
            )
        self._callback = progress if callable(progress) else None
        self._show = progress is True
        self._stage: str | None = None
        self._bar: Any = None
        self._displays = RemovedDisplays() if self._show else None

    def waiting(self, holder: str, index_dir: Path) -> None:
        """Say whom the computation waits for (called between tries for the write lock)."""
        stage = f"waiting for pid {holder} to finish writing {index_dir}"
        if stage != self._stage:
            self(stage, 0, 1)
        elif self._bar is not None:
            self._bar.refresh()  # its elapsed time moves

    def live(self, stage: str, note: str = "") -> _Ticker:
        """Report ``stage`` (0 of 1) and keep its display ticking (elapsed time) until the block
        ends, for a stage with no steps to count; ``note`` is shown beside it, never given to a
        callback."""
        self(stage, 0, 1)
        if self._bar is not None and note:
            self._bar.set_description_str(f"{stage} ({note})", refresh=True)
        return _Ticker(self._bar)

    @property
    def umap_tqdm_kwds(self) -> dict[str, Any] | None:
        """umap-learn's own epoch display, shown only beside a progress display."""
        return {"disable": False, "desc": "UMAP epochs", "leave": False} if self._show else None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._callback is not None:
            self._callback(stage, done, total)
        if not self._show:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            # leave=False: the bars go away once the map is made (an explorer shows it below).
            self._bar = tqdm(
                total=total,
                desc=stage,
                bar_format=self._BAR_FORMAT,
                dynamic_ncols=True,
                leave=False,
            )
        elif stage != self._stage:
            self._bar.set_description_str(stage, refresh=False)
            self._bar.reset(total=total)
        self._stage = stage
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._displays is not None:
            self._displays.remove()


class RemovedDisplays:
    """Shows tqdm's notebook bars (ours and umap-learn's) under a display id until ``remove()``,
    which replaces each with an empty output.

    A closed bar would otherwise leave a view of a widget that no longer exists in the saved
    notebook: "Error displaying widget: model not found" after every browser reload.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._module: Any = None
        self._display: Any = None
        try:
            import tqdm.notebook as module
        except ImportError:
            return
        display = getattr(module, "display", None)
        if display is None or getattr(display, "__module__", "").startswith("tqdm"):
            return  # not in a notebook (tqdm's own stand-in)
        self._module, self._display = module, display

        def keep(*objs: Any, **kwargs: Any) -> Any:
            kwargs["display_id"] = True
            handle = display(*objs, **kwargs)
            if handle is not None:
                self._handles.append(handle)
            return handle

        module.display = keep

    def remove(self) -> None:
        if self._module is not None:
            self._module.display, self._module = self._display, None
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.update({"text/plain": ""}, raw=True)
        self._handles.clear()


TICK_SECONDS = 1.0
"""How often a stage with no steps to count redraws its display (its elapsed time moves)."""


class _Ticker:
    """Refreshes a progress display every ``TICK_SECONDS`` while its block runs."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._interval = TICK_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a display closed under it: just stop
                self._bar.refresh()

    def __enter__(self) -> _Ticker:
        if self._bar is not None:
            self._thread = threading.Thread(target=self._run, name="imrec-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


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
    from .features import mappable_features

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
    from .indexer import WriteLock

    stages = _Stages(progress)
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
                values, _ = _prepare_input(feature, store.read_rows(feature, block))
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
    index: IndexView, feature: str, ids: np.ndarray, params: dict[str, Any], stages: _Stages
) -> tuple[Placement, np.ndarray, np.ndarray]:
    import warnings

    rng = np.random.default_rng(params["random_state"])
    fit_ids = (
        ids
        if ids.size <= params["sample_size"]
        else np.sort(rng.choice(ids, params["sample_size"], replace=False))
    )
    stages("reading features", 0, fit_ids.size)
    values, metric = _prepare_input(feature, index.store.read_rows(feature, fit_ids))
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
    vectors = _reduce(values, mean, components)
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
    values, _ = _prepare_input(feature, vectors)
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
