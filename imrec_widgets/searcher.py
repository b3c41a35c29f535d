"""The query side of an index: queries -> feature vectors -> exact top-k over the store.

Arrays that fit the memory budget are loaded once (with their norms) and reloaded only when the
catalog's generation changes; larger ones are streamed chunk by chunk from Zarr.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ann, compact, feedback, search
from .ann import AnnIndex
from .compact import CompactData, Quantizer
from .errors import ImageDecodeError, QuantizerMismatchWarning, UsageError
from .features import HYBRID_MODE, check_hybrid_weights, check_mode_metric
from .imageio import encode_thumbnail
from .indexer import decode_one
from .results import Hit, QueryItemShown, SearchResults

if TYPE_CHECKING:
    from .protocols import IndexView
    from .request import SearchOptions


def default_memory_budget() -> int:
    """A quarter of physical memory: feature arrays up to this size are kept in RAM."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2 << 30


_CONTROLLER: Any = None


def _blas_single_thread() -> Any:
    """Limit BLAS to one thread: right after a model forward pass, OpenBLAS's spinning worker
    threads and torch's OpenMP threads fight over the cores and both run 2-3x slower."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _in_sorted(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in the ascending ``sorted_ids``."""
    if sorted_ids.size == 0:
        return np.zeros(np.shape(values), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_ids, values), sorted_ids.size - 1)
    return np.asarray(sorted_ids[position] == values)


def _stamp_key(stamp: Any) -> tuple[str, str]:
    if not isinstance(stamp, dict):  # a crafted stamp: ann.load says why it is not used
        return "", repr(stamp)
    return str(stamp.get("file")), str(stamp.get("sha256"))


def _contains(sorted_ids: np.ndarray, id_: int) -> bool:
    position = int(np.searchsorted(sorted_ids, id_))
    return position < sorted_ids.size and int(sorted_ids[position]) == id_


def _uses_model(queries: Sequence[Any], modes: Any) -> bool:
    """Whether any query image goes through the CNN (ids and vectors do not)."""
    return "embedding" in modes and any(
        not isinstance(q, (int, np.integer))
        for query in queries
        for q in (query if _is_batch(query) else [query])
    )


def _rerank(
    matrix: np.ndarray,
    metric: str,
    k: int,
    candidates: Callable[[int, np.ndarray], np.ndarray],
    vectors: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each block of queries over the float32 rows (``vectors``) of the union
    of their candidate ids (``candidates(first query's position, block)``)."""
    found_ids, found_dist = [], []
    for start in range(0, matrix.shape[0], _RERANK_QUERIES):
        queries = matrix[start : start + _RERANK_QUERIES]
        chosen = np.unique(candidates(start, queries))
        ids, dist = search.topk(queries, vectors(chosen), metric, k, ids=chosen)
        found_ids.append(ids)
        found_dist.append(dist)
    return np.concatenate(found_ids), np.concatenate(found_dist)


def _ids_of(prepared: search.PreparedData) -> np.ndarray:
    """The ids of a searcher's prepared rows (it always prepares them with ids)."""
    if prepared.ids is None:
        raise ValueError("prepared rows without ids")
    return prepared.ids


def _is_batch(query: Any) -> bool:
    return isinstance(query, (list, tuple))


_SCALE_PAIRS = 4096
_FUSED_BLOCK_BYTES = 16 << 20
_FUSED_MIN_ROWS = 256
_RERANK_QUERIES = 32


def _decode_query(features: dict[str, Any], item: Any, position: int) -> Any:
    """``decode_one`` for item ``position`` of a query; a file that is not an image is named in
    the error, whose ``query_position`` is ``position``."""
    try:
        return decode_one(features, item)
    except ImageDecodeError as exc:
        if isinstance(item, os.PathLike):
            named = ImageDecodeError(f"{os.fspath(item)}: {exc}")
            named.query_position = position
            raise named from exc
        exc.query_position = position
        raise


def _paired_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` distance between ``a[i]`` and ``b[i]`` for every row i."""
    if metric == "hamming":
        return np.asarray(
            np.unpackbits(np.bitwise_xor(a, b), axis=1).sum(axis=1).astype(np.float64)
        )
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return np.asarray(np.sqrt(((a - b) ** 2).sum(axis=1)))
    if metric == "manhattan":
        return np.asarray(np.abs(a - b).sum(axis=1))
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(norms > 0, 1.0 - dots / np.where(norms > 0, norms, 1.0), 1.0)


class Searcher:
    """Answers ``ImageIndex.search`` calls; one per index, holding its hot arrays."""

    def __init__(self, index: IndexView, memory_budget: int | None = None) -> None:
        self.index = index
        self.memory_budget = default_memory_budget() if memory_budget is None else memory_budget
        self._hot: dict[tuple[str, str], tuple[int, search.PreparedData]] = {}
        self._status: tuple[int, np.ndarray] | None = None
        self._scales: dict[tuple[str, str], tuple[int, float]] = {}
        self._compact: dict[str, tuple[int, str, CompactData]] = {}
        self.rerank = compact.DEFAULT_RERANK
        """With a compact ``vector_dtype``: ``rerank * k`` candidates are re-ranked exactly."""
        self.client: Any = None
        """A Dask client whose workers run every top-k (a ``search(client=)`` overrides it)."""
        self.path_map: dict[str, str] | None = None
        """Index path prefix -> the workers' one, when they mount the store elsewhere."""
        self._ann: dict[str, tuple[tuple[str, str], AnnIndex | str]] = {}
        self._uncovered: dict[str, tuple[tuple[int, str], np.ndarray, np.ndarray | None]] = {}
        self._shards: dict[str, tuple[tuple[int, str, int], Any]] = {}
        self.ann_candidates: int | None = None
        """Candidates asked of an ANN index per query (None: its own, at least ``rerank * k``)."""
        self.ann_nprobe: int | None = None
        """IVF lists an ANN search visits (None: the index's own ``nprobe``)."""
        self.feedback_method = feedback.DEFAULT_METHOD
        """How ``negatives=`` searches model relevance (one of ``feedback.METHODS``)."""

    # -- what is searchable ---------------------------------------------------------------------
    def _generation(self) -> int:
        return self.index.catalog.generation()

    def ok_ids(self) -> np.ndarray:
        generation = self._generation()
        if self._status is None or self._status[0] != generation:
            self._status = (generation, np.asarray(self.index.catalog.ids("ok"), dtype=np.int64))
        return self._status[1]

    def _feature_bytes(self, mode: str, rows: int) -> int:
        array = self.index.store.array(mode)
        return int(rows * int(np.prod(array.shape[1:])) * np.dtype(array.dtype).itemsize)

    def prepared(self, mode: str, metric: str) -> search.PreparedData:
        """The in-memory array of ``mode`` for ``metric`` over every ok image (cached)."""
        generation = self._generation()
        cached = self._hot.get((mode, metric))
        if cached is not None and cached[0] == generation:
            return cached[1]
        ids = self.ok_ids()
        stop = int(ids[-1]) + 1 if ids.size else 0
        data = self.index.store.read_range(mode, stop)[ids]
        prepared = search.prepare(data, metric, ids=ids)
        self._hot = {key: value for key, value in self._hot.items() if key[0] != mode}
        self._hot[(mode, metric)] = (generation, prepared)
        return prepared

    def _chunks(self, mode: str, allowed: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        stop = int(allowed[-1]) + 1
        for start, block in self.index.store.iter_chunks(mode, stop):
            lo, hi = np.searchsorted(allowed, [start, start + len(block)])
            if hi > lo:
                rows = allowed[lo:hi]
                yield rows, block[rows - start]

    # -- queries -> vectors ---------------------------------------------------------------------
    def vectors(self, query: Any, mode: str) -> tuple[np.ndarray, list[int]]:
        """Feature rows for one query (several rows for a list) and the indexed ids it names."""
        rows, self_ids, _shown = self._query_vectors(query, mode)
        return rows, self_ids

    def _query_vectors(
        self, query: Any, mode: str
    ) -> tuple[np.ndarray, list[int], list[QueryItemShown]]:
        """``vectors``, and how each item of the query is shown (see ``QueryItemShown``)."""
        items = list(query) if _is_batch(query) else [query]
        if not items:
            raise UsageError("empty query: pass at least one image, path or id")
        rows: list[np.ndarray] = []
        self_ids: list[int] = []
        shown: list[bytes | int | None] = []
        for position, item in enumerate(items):
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                self_ids.append(int(item))
                rows.append(self._stored_row(mode, int(item)))
                shown.append(int(item))
            elif isinstance(item, np.ndarray) and item.ndim == 1:
                rows.append(item)
                shown.append(None)
            else:
                row, thumbnail = self._extract(mode, item, position)
                rows.append(row)
                shown.append(thumbnail)
        return np.stack(rows), self_ids, shown

    def _stored_row(self, mode: str, id_: int) -> np.ndarray:
        ok = self.ok_ids()
        if not _contains(ok, id_):
            raise UsageError(f"no searchable image with id {id_} in this index")
        return np.asarray(self._rows(mode, np.array([id_], dtype=np.int64))[0])

    def _extract(self, mode: str, item: Any, position: int) -> tuple[np.ndarray, bytes]:
        """The ``mode`` row of an image query item, and its thumbnail (from the same decode)."""
        if isinstance(item, str):
            item = Path(item)
        feature = self.index.feature_extractors()[mode]
        decoded, values, model_input = _decode_query({mode: feature}, item, position)
        thumbnail = encode_thumbnail(decoded.image)
        if mode == "embedding":
            return feature.embed(model_input[None])[0], thumbnail
        return values[mode], thumbnail

    # -- top-k ----------------------------------------------------------------------------------
    def search_many(
        self, queries: Sequence[Any], options: SearchOptions, allowed: np.ndarray | None
    ) -> list[SearchResults]:
        """The best ``options.k`` of ``allowed`` (every searchable image when None) for each
        query, by ``options.mode`` (not hybrid: see ``search_hybrid``)."""
        started = time.perf_counter()
        mode, metric, negatives = options.mode, options.metric, options.negatives
        if mode not in self.index.settings["features"] or mode == "thumb":
            check_mode_metric(mode, metric)
            raise UsageError(
                f"mode {mode!r} is not in this index; it has {', '.join(self.index.settings['features'])}"
            )
        if negatives is not None:
            metric = self._check_feedback(mode, metric)
        metric = check_mode_metric(mode, metric)
        self._check_searchable()
        exclude_self, k = options.exclude_self, options.k

        marked = self._negatives(mode, negatives) if negatives is not None else None
        combined, excluded, shown = [], [], []
        for query in queries:
            rows, self_ids, query_shown = self._query_vectors(query, mode)
            if marked is not None:
                combined.append(self._feedback_vector(mode, rows, marked[1]))
                excluded.append((set(self_ids) if exclude_self else set()) | set(marked[0]))
            else:
                combined.append(search.combine_queries(rows, metric) if len(rows) > 1 else rows[0])
                excluded.append(set(self_ids) if exclude_self else set())
            shown.append(query_shown)
        if allowed is not None and allowed.size == 0:
            return [self._results([], [], mode, metric, started, query) for query in shown]
        matrix = np.stack(combined)
        extra = max(len(e) for e in excluded)
        with _blas_single_thread() if _uses_model(queries, [mode]) else contextlib.nullcontext():
            found_ids, found_dist = self._topk(
                matrix,
                mode,
                metric,
                int(k) + extra,
                allowed,
                self.client if options.client is None else options.client,
                options.exact,
            )
        return self._trimmed(found_ids, found_dist, excluded, k, mode, metric, started, shown)

    # -- relevance feedback -----------------------------------------------------------------------
    def _check_feedback(self, mode: str, metric: str | None) -> str:
        """The metric of a search with ``negatives=``: cosine, on a float feature."""
        if np.dtype(self.index.store.array(mode).dtype) != np.float32:
            raise UsageError(
                f"negatives= refines searches of float features (embedding, rgb), not {mode!r}"
            )
        if metric not in (None, "cosine"):
            raise UsageError(
                f"negatives= ranks by the cosine of a model of relevant vs not relevant; "
                f"leave metric= unset (not {metric!r})"
            )
        return "cosine"

    def _negatives(
        self, mode: str, negatives: Sequence[int] | np.ndarray
    ) -> tuple[list[int], np.ndarray]:
        """The ids marked not relevant (each a searchable image) and their ``mode`` rows."""
        values = np.asarray(list(negatives) if not isinstance(negatives, np.ndarray) else negatives)
        if values.size and (values.dtype == bool or not np.issubdtype(values.dtype, np.integer)):
            raise UsageError(f"negatives= takes image ids, not {values.ravel()[:3].tolist()!r}")
        ids = sorted({int(v) for v in values.ravel()})
        ok = self.ok_ids()
        for id_ in ids:
            if not _contains(ok, id_):
                raise UsageError(f"negatives=: no searchable image with id {id_} in this index")
        rows = self._rows(mode, np.asarray(ids, dtype=np.int64)) if ids else None
        return ids, np.zeros((0, 0), np.float32) if rows is None else rows

    def _feedback_vector(self, mode: str, relevant: np.ndarray, not_relevant: np.ndarray) -> Any:
        """``feedback.query_vector`` of one query's rows, with the index's background rows."""
        background = None
        if self.feedback_method != "rocchio":
            ok = self.ok_ids()
            if self._feature_bytes(mode, len(ok)) <= self.memory_budget:
                self.prepared(mode, "cosine")  # rows from memory, not a Zarr chunk each
            background = self._rows(mode, feedback.background_ids(ok))
        # small dense algebra: one BLAS thread is faster than several waking up (146 -> 2 ms
        # per 276 x 276 solve measured on 2 busy cores)
        with _blas_single_thread():
            return feedback.query_vector(
                relevant,
                not_relevant if not_relevant.size else None,
                background,
                self.feedback_method,
            )

    def _check_searchable(self) -> None:
        if not self.index.exists() or self.ok_ids().size == 0:
            from .errors import EmptyIndexError

            raise EmptyIndexError(
                f"the index of {self.index.root} has no searchable images yet; run idx.update() first"
            )

    def _trimmed(
        self,
        found_ids: np.ndarray,
        found_dist: np.ndarray,
        excluded: list[set[int]],
        k: int,
        mode: str,
        metric: str,
        started: float,
        shown: Sequence[Sequence[QueryItemShown]] | None = None,
    ) -> list[SearchResults]:
        """Per query: drop empty slots (-1) and the query's own ids, keep the best ``k``."""
        out = []
        queries_shown = shown if shown is not None else [()] * len(excluded)
        for row_ids, row_dist, skip, query in zip(
            found_ids, found_dist, excluded, queries_shown, strict=True
        ):
            keep = [i for i, id_ in enumerate(row_ids) if id_ >= 0 and int(id_) not in skip][
                : int(k)
            ]
            out.append(self._results(row_ids[keep], row_dist[keep], mode, metric, started, query))
        return out

    def _topk(
        self,
        matrix: np.ndarray,
        mode: str,
        metric: str,
        k: int,
        allowed: np.ndarray | None,
        client: Any = None,
        exact: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        ok = self.ok_ids()
        if client is None and exact is not True:
            ann_index = self.ann(mode, metric, exact)
            if ann_index is not None:
                found = self._topk_ann(matrix, mode, metric, k, allowed, ann_index)
                if found is not None:
                    return found
        vector_dtype = self.index.settings.get("vector_dtype", "float32")
        if client is not None and vector_dtype != "float32" and metric in search.FLOAT_METRICS:
            return self._topk_compact_dask(client, matrix, mode, metric, k, allowed, vector_dtype)
        if client is not None:
            from .distributed import topk_dask

            store = self.index.store
            return topk_dask(
                client,
                store.path,
                mode,
                matrix,
                metric,
                k,
                ok if allowed is None else allowed,
                store.array(mode).chunks[0],
                path_map=self.path_map,
            )
        if vector_dtype != "float32" and metric in search.FLOAT_METRICS:
            compact_data = self.compact(mode, vector_dtype)
            if compact_data is not None:
                return self._topk_compact(matrix, mode, metric, k, allowed, compact_data)
        if self._feature_bytes(mode, len(ok)) > self.memory_budget:
            return search.topk_chunks(
                matrix, self._chunks(mode, ok if allowed is None else allowed), metric, k
            )
        prepared = self.prepared(mode, metric)
        if allowed is None:
            return search.topk(matrix, prepared, metric, k)
        rows = np.searchsorted(_ids_of(prepared), allowed)
        norms = prepared.norms[rows] if prepared.norms is not None else None
        return search.topk(matrix, prepared.data[rows], metric, k, ids=allowed, data_norms=norms)

    # -- compact vectors, exact re-rank ------------------------------------------------------------
    def compact(self, mode: str, vector_dtype: str) -> CompactData | None:
        """The compact copy of ``mode`` over every ok image (cached), None if over the budget."""
        generation = self._generation()
        cached = self._compact.get(mode)
        if cached is not None and cached[:2] == (generation, vector_dtype):
            return cached[2]
        ok = self.ok_ids()
        array = self.index.store.array(mode)
        if np.dtype(array.dtype) != np.float32 or array.ndim != 2:
            return None
        dim = int(array.shape[1])
        itemsize = 1 if vector_dtype == "int8" else 2
        if ok.size * (dim * itemsize + 12) > self.memory_budget:
            return None
        quantizer = self._quantizer(mode, vector_dtype, ok, dim)
        self._compact.pop(mode, None)
        rows_file = compact.RowsFile(
            self.index.index_dir / "search", mode, generation, ok.size, dim
        )
        data = compact.build_fitted(
            lambda: self._chunks(mode, ok), ok.size, dim, vector_dtype, quantizer, rows_file
        )
        if data.refit is not None:
            warnings.warn(
                compact.refit_message(mode, data.refit[1]), QuantizerMismatchWarning, stacklevel=5
            )
        self._compact[mode] = (generation, vector_dtype, data)
        return data

    def _quantizer(
        self, mode: str, vector_dtype: str, ok: np.ndarray, dim: int
    ) -> Quantizer | None:
        """The int8 quantizer of ``mode`` (the stored one, else one trained now); None for float16."""
        if vector_dtype != "int8":
            return None
        config = self.index.catalog.get_meta("feature_config", {}, dict).get(mode, {})
        quantizer = compact.Quantizer.load(self.index.store, mode, config, dim)
        if quantizer is None:
            quantizer = compact.Quantizer.train(compact.training_sample(self.index.store, mode, ok))
        return quantizer

    def _topk_compact_dask(
        self,
        client: Any,
        matrix: np.ndarray,
        mode: str,
        metric: str,
        k: int,
        allowed: np.ndarray | None,
        vector_dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The compact scan on the workers (shards kept in their memory), then an exact re-rank
        here of each query's best candidates against their float32 rows."""
        from .distributed import CompactShards

        generation = self._generation()
        key = (generation, vector_dtype, id(client))
        cached = self._shards.get(mode)
        if cached is None or cached[0] != key:
            if cached is not None:
                cached[1].release()
            ok = self.ok_ids()
            store = self.index.store
            array = store.array(mode)
            quantizer = self._quantizer(mode, vector_dtype, ok, int(array.shape[1]))
            shards = CompactShards(
                client, store.path, mode, ok, array.chunks[0], vector_dtype, quantizer,
                path_map=self.path_map,
            )  # fmt: skip
            cached = (key, shards)
            self._shards[mode] = cached
        pool = self.ok_ids().size if allowed is None else allowed.size
        want = min(pool, max(1, self.rerank) * k)
        candidates = cached[1].candidates(matrix, metric, want, allowed)
        return _rerank(
            matrix,
            metric,
            k,
            lambda start, queries: np.concatenate(candidates[start : start + len(queries)]),
            lambda chosen: self.index.store.read_rows(mode, chosen),
        )

    def _topk_compact(
        self,
        matrix: np.ndarray,
        mode: str,
        metric: str,
        k: int,
        allowed: np.ndarray | None,
        data: CompactData,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the compact copy, then exact top-``k`` over their float32 rows."""
        rows = None if allowed is None else np.searchsorted(data.ids, allowed)
        candidate_ids = data.ids if allowed is None else allowed
        want = min(candidate_ids.size, max(1, self.rerank) * k)

        def candidates(_start: int, queries: np.ndarray) -> np.ndarray:
            if want >= candidate_ids.size:
                return candidate_ids
            scores = compact.approximate_scores(queries, data, metric, rows)
            return candidate_ids[np.argpartition(scores, want - 1, axis=1)[:, :want]]

        def vectors(chosen: np.ndarray) -> np.ndarray:
            if data.rows is not None:
                return data.rows[np.searchsorted(data.ids, chosen)]
            return self.index.store.read_rows(mode, chosen)

        return _rerank(matrix, metric, k, candidates, vectors)

    # -- ANN candidates, exact re-rank --------------------------------------------------------------
    def ann(self, mode: str, metric: str, exact: bool | None = False) -> AnnIndex | None:
        """The usable ANN index of ``mode`` for ``metric``, or None (then the search is exact).

        ``exact=None`` (the default of ``search``) asks only from ``ANN_MIN_ROWS`` searchable
        rows up and stays quiet when none is built; ``exact=False`` always asks and warns
        (``AnnWarning``, one line) when there is none to use. A built one that cannot be used
        (extra missing, damaged, stale, other settings) warns either way.
        """
        if exact is None and self.ok_ids().size < ann.ANN_MIN_ROWS:
            return None
        catalog = self.index.catalog
        stamp = catalog.get_meta(ann.stamp_key(mode))
        if not stamp:
            if exact is False:
                ann.warn(
                    mode,
                    f"none is built; build it with idx.build_ann({mode!r}) (CLI: `imrec ann ROOT`)",
                )
            return None
        cached = self._ann.get(mode)
        if cached is None or cached[0] != _stamp_key(stamp):
            config = catalog.get_meta("feature_config", {}, dict).get(mode, {})
            loaded = ann.load(self.index.index_dir, catalog, self.index.store, mode, config)
            if isinstance(loaded, str) and catalog.get_meta(ann.stamp_key(mode)) != stamp:
                # A writer replaced the file between reading the stamp and loading: once more.
                loaded = ann.load(self.index.index_dir, catalog, self.index.store, mode, config)
            if loaded is None:
                return None
            key = _stamp_key(loaded.stamp) if isinstance(loaded, AnnIndex) else _stamp_key(stamp)
            cached = (key, loaded)
            self._ann[mode] = cached
        found = cached[1]
        if isinstance(found, str):
            ann.warn(mode, found)
            return None
        if found.metric != metric:
            if exact is False:
                ann.warn(mode, f"it was built for {found.metric}, not {metric}")
            return None
        return found

    def _uncovered_rows(self, mode: str, index: AnnIndex) -> tuple[np.ndarray, np.ndarray | None]:
        """Searchable ids indexed since the ANN index was built or extended, and their rows."""
        key = (self._generation(), str(index.stamp["file"]))
        cached = self._uncovered.get(mode)
        if cached is None or cached[0] != key:
            ids = np.asarray(
                self.index.catalog.ids_indexed_after(index.stamp["covered_until"]), dtype=np.int64
            )
            limit = max(ann.EXACT_FILTER_ROWS, ann.MAX_UNCOVERED_FRACTION * index.stamp["count"])
            rows = self.index.store.read_rows(mode, ids) if ids.size <= limit else None
            cached = (key, ids, rows)
            self._uncovered[mode] = cached
        return cached[1], cached[2]

    def _topk_ann(
        self,
        matrix: np.ndarray,
        mode: str,
        metric: str,
        k: int,
        allowed: np.ndarray | None,
        index: AnnIndex,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """ANN candidates re-ranked exactly, plus the uncovered rows; None: search exactly.

        Candidates outside ``allowed`` or no longer searchable are dropped (the ANN index is
        asked for proportionally more when a filter keeps a fraction of the rows); a filter
        keeping few rows is searched exactly over their float32 rows instead.
        """
        ok = self.ok_ids()
        stored = index.rows
        if stored is None:  # loaded without its rows: nothing to re-rank against
            return None
        uncovered, uncovered_rows = self._uncovered_rows(mode, index)
        if uncovered_rows is None:
            ann.warn(
                mode,
                f"it is stale, {uncovered.size} rows were indexed since it was built; "
                f"run idx.update() or idx.build_ann({mode!r})",
            )
            return None
        pool = ok if allowed is None else allowed
        extra = np.ones(uncovered.size, dtype=bool)
        if allowed is not None:
            extra = _in_sorted(allowed, uncovered)
        extra_ids, extra_rows = uncovered[extra], uncovered_rows[extra]
        if allowed is not None and (
            allowed.size <= ann.EXACT_FILTER_ROWS
            or allowed.size < ann.MIN_FILTER_FRACTION * ok.size
        ):
            covered = allowed[~_in_sorted(uncovered, allowed)]
            covered_rows = self._checked_ann_rows(mode, index, covered)
            if covered_rows is None:
                return None
            ids = np.concatenate([covered, extra_ids])
            vectors = np.concatenate([covered_rows, extra_rows])
            order = np.argsort(ids)
            return search.topk(matrix, vectors[order], metric, k, ids=ids[order])
        wanted = max(
            self.ann_candidates or int(index.stamp["params"]["candidates"]), self.rerank * k
        )
        count = math.ceil(wanted * ok.size / max(1, pool.size))
        labels = index.search(matrix, count, self.ann_nprobe)
        need = min(k, pool.size)
        found_ids, found_dist = [], []
        for start in range(0, matrix.shape[0], _RERANK_QUERIES):
            block = labels[start : start + _RERANK_QUERIES]
            valid = (block >= 0) & (block < stored.shape[0])
            valid[valid] = _in_sorted(pool, block[valid]) & ~_in_sorted(uncovered, block[valid])
            if np.any(valid.sum(axis=1) + extra_ids.size < need):
                return None  # too few candidates survive the filter: search exactly
            chosen = np.unique(block[valid])
            chosen_rows = self._checked_ann_rows(mode, index, chosen)
            if chosen_rows is None:
                return None
            ids = np.concatenate([chosen, extra_ids])
            vectors = np.concatenate([chosen_rows, extra_rows])
            order = np.argsort(ids)
            found = search.topk(
                matrix[start : start + _RERANK_QUERIES], vectors[order], metric, k, ids=ids[order]
            )
            found_ids.append(found[0])
            found_dist.append(found[1])
        return np.concatenate(found_ids), np.concatenate(found_dist)

    def _checked_ann_rows(self, mode: str, index: AnnIndex, ids: np.ndarray) -> np.ndarray | None:
        """Rows of ``ids`` from the ANN index's float32 copy if they match their checksums; else
        one ``AnnWarning``, the index is set aside and None (the search runs exactly)."""
        rows = index.rows_of(ids)
        if rows is None:
            problem = index.problem or "its float32 rows cannot be read"
            ann.warn(mode, problem, stacklevel=6)
            if index.problem:  # the next update() rebuilds it
                ann.mark_damaged(self.index.catalog, mode, str(index.stamp["rows_file"]))
            cached = self._ann.get(mode)
            if cached is not None and cached[1] is index:
                self._ann[mode] = (cached[0], problem)
        return rows

    # -- hybrid: several modes, one fused ranking --------------------------------------------------
    def distance_scale(self, mode: str, metric: str) -> float:
        """The typical ``metric`` distance between two images of this index under ``mode``.

        The median distance over a fixed random sample (seed 0) of pairs of searchable images,
        cached per catalog generation; 1.0 when there are fewer than two images or every
        sampled distance is 0. Hybrid search divides each mode's distances by it.
        """
        generation = self._generation()
        cached = self._scales.get((mode, metric))
        if cached is not None and cached[0] == generation:
            return cached[1]
        ok = self.ok_ids()
        scale = 1.0
        if ok.size >= 2:
            rng = np.random.default_rng(0)
            first = rng.integers(ok.size, size=_SCALE_PAIRS)
            second = rng.integers(ok.size - 1, size=_SCALE_PAIRS)
            second += second >= first
            sampled, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
            rows = self._rows(mode, ok[sampled])[inverse]
            pair_distances = _paired_distances(rows[:_SCALE_PAIRS], rows[_SCALE_PAIRS:], metric)
            positive = pair_distances[pair_distances > 0]
            if positive.size:
                scale = float(np.median(pair_distances)) or float(np.median(positive))
        self._scales[(mode, metric)] = (generation, scale)
        return scale

    def _rows(self, mode: str, ids: np.ndarray) -> np.ndarray:
        """Stored rows of ``ids``: from an in-memory or memory-mapped copy of this generation
        when there is one (a Zarr read decompresses a whole chunk for one row), else the store."""
        generation = self._generation()
        for (hot_mode, _metric), (hot_generation, prepared) in self._hot.items():
            if hot_mode == mode and hot_generation == generation:
                return prepared.data[np.searchsorted(_ids_of(prepared), ids)]
        compact_entry = self._compact.get(mode)
        if compact_entry is not None and compact_entry[0] == generation:
            data = compact_entry[2]
            at = np.searchsorted(data.ids, ids)
            if data.rows is not None and np.all(at < data.ids.size):
                if np.array_equal(data.ids[at], ids):
                    return np.asarray(data.rows[at])
        covered = self._covered_ann_rows(mode, ids, generation)
        if covered is not None:
            return covered
        return self.index.store.read_rows(mode, ids)

    def _covered_ann_rows(self, mode: str, ids: np.ndarray, generation: int) -> np.ndarray | None:
        """Rows of ``ids`` from a loaded ANN index's float32 copy, if none changed since it."""
        cached = self._ann.get(mode)
        found = None if cached is None else cached[1]
        if not isinstance(found, AnnIndex) or found.rows is None:
            return None
        uncovered = self._uncovered.get(mode)
        if uncovered is None or uncovered[0] != (generation, str(found.stamp["file"])):
            return None
        if ids.size == 0 or ids.max() >= found.rows.shape[0] or np.isin(ids, uncovered[1]).any():
            return None
        return found.rows_of(ids)

    def _hybrid_vectors(
        self, query: Any, modes: Sequence[str]
    ) -> tuple[dict[str, list[np.ndarray]], list[int], list[QueryItemShown]]:
        """Each mode's feature rows for one query (decoding each image once), the ids it names
        and how each of its items is shown."""
        items = list(query) if _is_batch(query) else [query]
        if not items:
            raise UsageError("empty query: pass at least one image, path or id")
        rows: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
        self_ids = []
        shown: list[QueryItemShown] = []
        extractors = self.index.feature_extractors()
        for position, item in enumerate(items):
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                self_ids.append(int(item))
                shown.append(int(item))
                for mode in modes:
                    rows[mode].append(self._stored_row(mode, int(item)))
                continue
            if isinstance(item, np.ndarray) and item.ndim == 1:
                raise UsageError(
                    "a feature vector belongs to one mode; hybrid search needs images or ids"
                )
            decoded, values, model_input = _decode_query(
                {mode: extractors[mode] for mode in modes},
                Path(item) if isinstance(item, str) else item,
                position,
            )
            shown.append(encode_thumbnail(decoded.image))
            for mode in modes:
                if mode == "embedding":
                    rows[mode].append(extractors[mode].embed(model_input[None])[0])
                else:
                    rows[mode].append(values[mode])
        return rows, self_ids, shown

    def search_hybrid(
        self, queries: Sequence[Any], options: SearchOptions, allowed: np.ndarray | None
    ) -> list[SearchResults]:
        """Exact top-``k`` of ``allowed`` by a weighted sum of normalised distances of several
        modes.

        ``options.weights`` as for ``check_hybrid_weights``. Each mode's distances are divided by its
        ``distance_scale`` (the median distance between random pairs of indexed images), so
        1.0 means "as far apart as two typical images" in every mode; the fused distance is
        the weighted mean of those (weights sum to 1). Every candidate's fused distance is
        computed, in row blocks, before the top-k is taken.
        """
        started = time.perf_counter()
        available = [mode for mode in self.index.settings["features"] if mode != "thumb"]
        parts = check_hybrid_weights(options.weights, available)
        self._check_searchable()
        k, exclude_self = options.k, options.exclude_self
        metric = " + ".join(f"{weight:.3g} {mode}/{name}" for mode, (weight, name) in parts.items())

        matrices: dict[str, list[np.ndarray]] = {mode: [] for mode in parts}
        excluded, shown = [], []
        for query in queries:
            rows, self_ids, query_shown = self._hybrid_vectors(query, list(parts))
            for mode, (_w, name) in parts.items():
                vectors = np.stack(rows[mode])
                matrices[mode].append(
                    search.combine_queries(vectors, name) if len(vectors) > 1 else vectors[0]
                )
            excluded.append(set(self_ids) if exclude_self else set())
            shown.append(query_shown)
        if allowed is not None and allowed.size == 0:
            return [self._results([], [], HYBRID_MODE, metric, started, query) for query in shown]
        ok = self.ok_ids()
        candidates = ok if allowed is None else allowed
        in_memory = sum(self._feature_bytes(mode, len(ok)) for mode in parts) <= self.memory_budget
        prepared = (
            {mode: self.prepared(mode, name) for mode, (_w, name) in parts.items()}
            if in_memory
            else {}
        )
        factors = {
            mode: weight / self.distance_scale(mode, name) for mode, (weight, name) in parts.items()
        }
        stacked = {mode: np.stack(vectors) for mode, vectors in matrices.items()}
        kk = int(k) + max(len(e) for e in excluded)
        best = search.TopKAccumulator(len(queries), kk)
        step = max(_FUSED_MIN_ROWS, _FUSED_BLOCK_BYTES // (4 * len(queries)))
        with _blas_single_thread() if _uses_model(queries, parts) else contextlib.nullcontext():
            for start in range(0, candidates.size, step):
                block_ids = candidates[start : start + step]
                fused = np.zeros((len(queries), block_ids.size), dtype=np.float32)
                for mode, (_w, name) in parts.items():
                    block = self._hybrid_block(
                        mode, name, prepared.get(mode), block_ids, start, allowed is None
                    )
                    fused += factors[mode] * search.distances(stacked[mode], block, name)
                best.update(np.broadcast_to(block_ids, fused.shape), fused)
        found_ids, found_dist = best.result()
        return self._trimmed(
            found_ids, found_dist, excluded, k, HYBRID_MODE, metric, started, shown
        )

    def _hybrid_block(
        self,
        mode: str,
        metric: str,
        prepared: search.PreparedData | None,
        block_ids: np.ndarray,
        start: int,
        everything: bool,
    ) -> search.PreparedData:
        if prepared is None:
            return search.prepare(self.index.store.read_rows(mode, block_ids), metric)
        if everything:
            rows: Any = slice(start, start + block_ids.size)
        else:
            rows = np.searchsorted(_ids_of(prepared), block_ids)
        norms = prepared.norms[rows] if prepared.norms is not None else None
        return search.prepare(prepared.data[rows], metric, data_norms=norms)

    def _results(
        self,
        ids: Any,
        distances: Any,
        mode: str,
        metric: str,
        started: float,
        query: Sequence[QueryItemShown] = (),
    ) -> SearchResults:
        ids = [int(i) for i in ids]
        paths = self.index.paths(ids) if ids else []
        hits = [
            Hit(id_, path, _without_rounding_noise(float(distance)), rank)
            for rank, (id_, path, distance) in enumerate(zip(ids, paths, distances, strict=True))
        ]
        return SearchResults(
            hits,
            mode=mode,
            metric=metric,
            seconds=time.perf_counter() - started,
            thumbnails=self.index.thumbnail_bytes,
            query=query,
        )


ROUNDING_NOISE = 1e-6
"""Distances closer to 0 than this are float32 rounding (an image's own copy scores ~2e-7 by
cosine), not a difference: results give them as 0."""


def _without_rounding_noise(distance: float) -> float:
    return 0.0 if abs(distance) < ROUNDING_NOISE else distance
