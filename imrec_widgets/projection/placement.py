"""The placement file of a map (``umap_<feature>.npz``): what placing rows on a fitted map
needs, as plain arrays read with ``allow_pickle=False`` and a size cap checked before any array
is decompressed, and the placing itself (weighted k nearest fitted rows)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from imrec_widgets.derived import atomic_file
from imrec_widgets.errors import ProjectionError
from imrec_widgets.settings import env_count

PLACEMENT_VERSION = 1

QUERY_BLOCK = 2048
"""Rows are placed a block at a time, so memory stays bounded at any size."""


def prepare_input(feature: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Stored rows of ``feature`` as UMAP input, and the metric they are compared by (the
    feature class's ``map_input`` and ``map_metric``, see ``features.register``)."""
    from imrec_widgets.features import feature_class

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
        return reduce_dims(values, self.pca_mean, self.pca_components)

    def place(self, values: np.ndarray) -> np.ndarray:
        """Map positions (M x 2) of prepared feature rows (M x ``input_size``)."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != self.input_size:
            raise ProjectionError(
                f"rows of {values.shape[-1]} values do not fit a map made from {self.input_size}; "
                "the feature changed since the map was made: compute it again"
            )
        out = np.empty((len(values), 2), dtype=np.float32)
        for start in range(0, len(values), QUERY_BLOCK):
            block = self.reduce(values[start : start + QUERY_BLOCK])
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
        except UNREADABLE as exc:
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

UNREADABLE = (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError)
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
    except (*UNREADABLE, ValueError) as exc:
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


def reduce_dims(
    values: np.ndarray, mean: np.ndarray | None, components: np.ndarray | None
) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if components is None:
        return values
    return np.asarray(((values - mean) @ components.T).astype(np.float32, copy=False))
