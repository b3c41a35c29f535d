"""Exact (brute-force) top-k nearest-neighbour search kernels.

Float embeddings are compared with ``cosine``, ``euclidean`` or ``manhattan`` distance, packed
binary hashes (``uint8`` rows from ``np.packbits``) with ``hamming`` distance. Data is processed
in row blocks, so memory stays bounded for any number of rows and queries, and a
:class:`TopKAccumulator` merges per-block results, which is also how :func:`topk_chunks` searches
data that arrives chunk by chunk (for instance a Zarr store larger than RAM).

Results are deterministic: distances ascend and equal distances are ordered by ascending id.
Cosine and euclidean run on numpy's BLAS threads; hamming and manhattan split large blocks over a
small pool of worker threads (one per usable CPU, at most 8).
"""

from __future__ import annotations

import operator
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = [
    "FLOAT_METRICS",
    "METRICS",
    "PreparedData",
    "TopKAccumulator",
    "combine_queries",
    "distances",
    "prepare",
    "topk",
    "topk_chunks",
]

METRICS = ("cosine", "euclidean", "manhattan", "hamming")
FLOAT_METRICS = ("cosine", "euclidean", "manhattan")

_BLOCK_BYTES = 64 << 20
_SUB_BYTES = 1 << 20
_SUB_ROWS_MAX = 1 << 15
_PARALLEL_MIN_BYTES = 1 << 23
_SAMPLE_SIZE = 2048
_MAX_TILED_QUERIES = 64
_MAX_SWAR_WORDS = 1023
_INVALID = np.iinfo(np.int64).max
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_LANES = np.uint64(0x00FF00FF00FF00FF)
_LANE_SUM = np.uint64(0x0001000100010001)

try:
    _N_THREADS = max(1, min(8, len(os.sched_getaffinity(0))))
except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
    _N_THREADS = max(1, min(8, os.cpu_count() or 1))
_pool: Any = None
_pool_pid = -1
_pool_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# validation


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; allowed metrics: {', '.join(METRICS)}")
    return metric


def _check_k(k: Any) -> int:
    if isinstance(k, bool):
        raise UsageError(f"k must be a positive integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise UsageError(f"k must be a positive integer, got {k!r}") from None
    if k <= 0:
        raise UsageError(f"k must be a positive integer, got {k}")
    return int(k)


def _check_data(data: Any, metric: str, what: str = "data") -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows x features), got shape {data.shape}")
    if metric == "hamming":
        if data.dtype != np.uint8:
            raise ValueError(
                f"{what} for metric 'hamming' must be packed bits (uint8, e.g. from np.packbits), "
                f"got dtype {data.dtype}"
            )
    elif data.dtype != np.float32:
        raise ValueError(
            f"{what} for metric {metric!r} must be float32, got dtype {data.dtype}; "
            "convert it once with .astype(np.float32)"
        )
    return np.asarray(data)


def _check_queries(queries: Any, metric: str, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2:
        raise UsageError(f"queries must be a 1-D vector or a 2-D array, got shape {q.shape}")
    if metric == "hamming":
        if q.dtype != np.uint8:
            raise UsageError(
                f"queries for metric 'hamming' must be packed bits (uint8), got dtype {q.dtype}"
            )
    else:
        if not np.issubdtype(q.dtype, np.floating):
            raise UsageError(
                f"queries for metric {metric!r} must be floating point, got dtype {q.dtype}"
            )
        q = np.ascontiguousarray(q, dtype=np.float32)
    if q.shape[1] != dim:
        unit = "bytes" if metric == "hamming" else "features"
        raise UsageError(f"queries have {q.shape[1]} {unit} per row but data has {dim}")
    return q


def _check_ids(ids: Any, n: int, what: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{what} must be a 1-D array with one id per data row ({n}), got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_exclude(exclude: Any, n_queries: int) -> np.ndarray | None:
    if exclude is None:
        return None
    arr = np.asarray(exclude)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"exclude must be integer ids (-1 for none), got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(n_queries, arr, dtype=np.int64)
    if arr.shape != (n_queries,):
        raise ValueError(
            f"exclude must hold one id per query ({n_queries}, -1 for none), got shape {arr.shape}"
        )
    return arr.astype(np.int64, copy=False)


def _row_norms_sq(data: np.ndarray) -> np.ndarray:
    out = np.empty(data.shape[0], dtype=np.float32)
    step = max(1, _BLOCK_BYTES // max(1, 4 * data.shape[1]))
    for s in range(0, data.shape[0], step):
        block = data[s : s + step]
        np.einsum("ij,ij->i", block, block, out=out[s : s + step])
    return out


# --------------------------------------------------------------------------------------------
# prepared data


class PreparedData:
    """A data matrix validated for one metric, with the per-row values searches reuse.

    ``norms`` holds the row L2 norms for ``cosine``, the squared row L2 norms for ``euclidean``
    and is None for the other metrics. ``ids`` (int64, one per row) or None for row numbers.
    """

    __slots__ = ("_aux", "data", "ids", "metric", "norms")

    def __init__(
        self,
        data: Any,
        metric: str,
        *,
        ids: Any = None,
        data_norms: Any = None,
    ) -> None:
        self.metric = _check_metric(metric)
        self.data = _check_data(data, metric)
        n = self.data.shape[0]
        self.ids = None if ids is None else _check_ids(ids, n)
        if data_norms is not None and metric not in ("cosine", "euclidean"):
            raise ValueError(f"data_norms is only used by cosine and euclidean, not {metric!r}")
        if metric in ("cosine", "euclidean"):
            if data_norms is None:
                sq = _row_norms_sq(self.data)
                norms = np.sqrt(sq) if metric == "cosine" else sq
            else:
                norms = np.asarray(data_norms, dtype=np.float32).reshape(-1)
                if norms.shape[0] != n:
                    raise ValueError(
                        f"data_norms must hold one value per data row ({n}), got {norms.shape[0]}"
                    )
            self.norms: np.ndarray | None = norms
            if metric == "cosine":
                self._aux: np.ndarray | None = _neg_inverse(norms)
            else:
                self._aux = norms
        else:
            self.norms = None
            self._aux = None

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        return f"PreparedData(metric={self.metric!r}, shape={self.data.shape})"


def prepare(data: Any, metric: str, *, ids: Any = None, data_norms: Any = None) -> PreparedData:
    """Validate ``data`` for ``metric`` once and cache its norms, for repeated :func:`topk` calls.

    ``data_norms`` (optional, precomputed): row L2 norms for cosine, squared row L2 norms for
    euclidean.
    """
    return PreparedData(data, metric, ids=ids, data_norms=data_norms)


def _neg_inverse(norms: np.ndarray) -> np.ndarray:
    out = np.zeros(norms.shape, dtype=np.float32)
    np.divide(np.float32(-1.0), norms, out=out, where=norms > 0)
    return out


# --------------------------------------------------------------------------------------------
# streaming merge


class TopKAccumulator:
    """Running best-``k`` (smallest distance, then smallest id) per query over merged blocks."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = _check_k(k)
        self.n_queries = operator.index(n_queries)
        if self.n_queries < 0:
            raise ValueError(f"n_queries must be >= 0, got {n_queries}")
        self._ids = np.empty((self.n_queries, 0), dtype=np.int64)
        self._dist = np.empty((self.n_queries, 0), dtype=np.float32)

    def update(self, idx_block: Any, dist_block: Any) -> None:
        """Merge candidates ``(idx_block, dist_block)``, each (n_queries, m); ids < 0 are empty."""
        ids = np.asarray(idx_block, dtype=np.int64)
        dist = np.asarray(dist_block, dtype=np.float32)
        if ids.ndim == 1 and self.n_queries == 1:
            ids, dist = ids.reshape(1, -1), dist.reshape(1, -1)
        if ids.shape != dist.shape or ids.ndim != 2 or ids.shape[0] != self.n_queries:
            raise ValueError(
                f"idx_block and dist_block must both have shape ({self.n_queries}, m), got "
                f"{ids.shape} and {dist.shape}"
            )
        if ids.shape[1] == 0:
            return
        empty = ids < 0
        if empty.any():
            ids = np.where(empty, _INVALID, ids)
            dist = np.where(empty, np.float32(np.inf), dist)
        if self._ids.shape[1]:
            ids = np.concatenate([self._ids, ids], axis=1)
            dist = np.concatenate([self._dist, dist], axis=1)
        if ids.shape[1] > 2 * self.k + 64:
            keep = np.stack([_select_row(d, self.k, i) for d, i in zip(dist, ids, strict=True)])
            rows = np.arange(self.n_queries)[:, None]
            ids, dist = ids[rows, keep], dist[rows, keep]
        order = np.lexsort((ids, dist), axis=1)[:, : self.k]
        rows = np.arange(self.n_queries)[:, None]
        self._ids = ids[rows, order]
        self._dist = dist[rows, order]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, dist)`` of shape (n_queries, min(k, most candidates any query got)).

        A query with fewer candidates than that width is padded with id -1 and distance inf.
        """
        valid = self._ids != _INVALID
        width = int(np.count_nonzero(valid, axis=1).max()) if self._ids.size else 0
        if valid[:, :width].all():
            return self._ids[:, :width].copy(), self._dist[:, :width].copy()
        ids = np.where(valid, self._ids, -1)[:, :width]
        dist = np.where(valid, self._dist, np.float32(np.inf))[:, :width]
        return np.ascontiguousarray(ids), np.ascontiguousarray(dist)


# --------------------------------------------------------------------------------------------
# parallel helpers


def _thread_pool() -> Any:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        with _pool_lock:
            if _pool is None or _pool_pid != os.getpid():
                from concurrent.futures import ThreadPoolExecutor

                _pool = ThreadPoolExecutor(_N_THREADS, thread_name_prefix="imrec-search")
                _pool_pid = os.getpid()
    return _pool


def _run_rows(work: Callable[[int, int], None], n_rows: int, row_bytes: int) -> None:
    """Run ``work(start, stop)`` over ``[0, n_rows)``, split across threads when large."""
    n_parts = min(_N_THREADS, max(1, (n_rows * row_bytes) // _PARALLEL_MIN_BYTES))
    if n_parts <= 1:
        work(0, n_rows)
        return
    pool = _thread_pool()
    bounds = [n_rows * i // n_parts for i in range(n_parts + 1)]
    futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, n_parts)]
    work(bounds[0], bounds[1])
    for f in futures:
        f.result()


# --------------------------------------------------------------------------------------------
# per-block scores (smaller is better; monotone in the distance for each query)


class _Queries:
    """Per-query values each block kernel needs, computed once per search."""

    def __init__(self, q: np.ndarray, metric: str, n_bytes: int = 0) -> None:
        self.q = q
        self.n = q.shape[0]
        if metric == "cosine":
            self.norm = np.sqrt(_row_norms_sq(q))
        elif metric == "euclidean":
            self.neg2 = q * np.float32(-2.0)
        elif metric == "hamming":
            self.n_bytes = n_bytes
            self.n_words = _padded_words(n_bytes)
            padded = np.zeros((self.n, self.n_words * 8), dtype=np.uint8)
            padded[:, :n_bytes] = q
            self.words = padded.view(np.uint64)
            self.nbits = 8 * n_bytes
            self.score_dtype = (
                np.uint8 if self.nbits <= 255 else np.uint16 if self.nbits <= 65535 else np.uint32
            )
            self._tiles: list[np.ndarray] = []

    def tiles(self, rows: int) -> list[np.ndarray]:
        """Each query's words repeated over ``rows`` rows (XOR then runs on contiguous arrays)."""
        if self.n_words == 1 or self.n > _MAX_TILED_QUERIES:
            return list(self.words)
        if not self._tiles or self._tiles[0].shape[0] < rows:
            self._tiles = [np.tile(w, (rows, 1)) for w in self.words]
        return self._tiles


def _matmul_scores(
    qs: _Queries, block: np.ndarray, aux: np.ndarray | None, metric: str
) -> np.ndarray:
    """Cosine or euclidean scores from one matrix product; ``aux``: the rows' inverse norms
    (cosine) or squared norms (euclidean), which both metrics have."""
    if aux is None:
        raise ValueError(f"{metric} scores need the rows' norms")
    scores = np.empty((qs.n, block.shape[0]), dtype=np.float32)
    lhs = qs.q if metric == "cosine" else qs.neg2
    np.matmul(lhs, block.T, out=scores)
    if metric == "cosine":
        scores *= aux
    else:
        scores += aux
    return scores


def _manhattan_scores(qs: _Queries, block: np.ndarray) -> np.ndarray:
    n, dim = block.shape
    scores = np.empty((qs.n, n), dtype=np.float32)
    step = max(8, _SUB_BYTES // max(1, 4 * dim))

    def work(start: int, stop: int) -> None:
        buf = np.empty((min(step, stop - start), dim), dtype=np.float32)
        for s in range(start, stop, step):
            e = min(stop, s + step)
            rows, tmp = block[s:e], buf[: e - s]
            for i in range(qs.n):
                np.subtract(rows, qs.q[i], out=tmp)
                np.abs(tmp, out=tmp)
                np.sum(tmp, axis=1, out=scores[i, s:e])

    _run_rows(work, n, 4 * dim * max(1, qs.n))
    return scores


def _popcount_words(x: np.ndarray, out: np.ndarray) -> None:
    if _HAS_BITWISE_COUNT:
        np.bitwise_count(x, out=out)
    else:  # pragma: no cover - numpy < 2
        counts = _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8)
        np.sum(counts, axis=-1, dtype=np.uint8, out=out)


def _padded_words(n_bytes: int) -> int:
    """uint64 words per row after padding, so per-word counts sum with whole-lane arithmetic."""
    words = -(-n_bytes // 8)
    if words <= 2:
        return words
    if words <= 4:
        return 4
    return -(-words // 8) * 8


_LANE_CONSTANTS = {
    np.dtype(np.uint32): (np.uint32(0x00FF00FF), np.uint32(0x00010001), np.uint32(16)),
    np.dtype(np.uint64): (_LANES, _LANE_SUM, np.uint64(48)),
}


class _CountSummer:
    """Row sums of per-word bit counts (uint8, width 1, 2, 4 or a multiple of 8) into ``out``."""

    def __init__(self, rows: int, width: int) -> None:
        self.width = width
        self.lane = np.dtype(np.uint64 if width >= 8 else np.uint32 if width == 4 else np.uint16)
        self.a = np.empty(rows, dtype=self.lane)
        self.b = np.empty(rows, dtype=self.lane)
        self.total = np.empty(rows, dtype=self.lane)

    def __call__(self, counts: np.ndarray, out: np.ndarray) -> None:
        r = counts.shape[0]
        if self.width == 1:
            out[...] = counts[:, 0]
            return
        if self.width == 2:
            v = counts.view(np.uint16)[:, 0]
            a = self.a[:r]
            np.right_shift(v, np.uint16(8), out=a)
            np.add(a, v & np.uint16(0xFF), out=a)
            out[...] = a
            return
        if self.width > _MAX_SWAR_WORDS:
            np.sum(counts, axis=1, dtype=out.dtype, out=out)
            return
        mask, spread, shift = _LANE_CONSTANTS[self.lane]
        byte = self.lane.type(8)
        v = counts.view(self.lane)
        m = v.shape[1]
        a, b, total = self.a[:r], self.b[:r], self.total[:r]
        for g in range(0, m, 3):
            if g + 1 < m:
                np.add(v[:, g], v[:, g + 1], out=a)
                if g + 2 < m:
                    np.add(a, v[:, g + 2], out=a)
            else:
                np.copyto(a, v[:, g])
            np.right_shift(a, byte, out=b)
            np.bitwise_and(b, mask, out=b)
            np.bitwise_and(a, mask, out=a)
            if g == 0:
                np.add(a, b, out=total)
            else:
                np.add(total, a, out=total)
                np.add(total, b, out=total)
        np.multiply(total, spread, out=total)
        np.right_shift(total, shift, out=total)
        out[...] = total


def _hamming_scores(qs: _Queries, block: np.ndarray) -> np.ndarray:
    n, n_bytes = block.shape
    width = qs.n_words
    scores = np.empty((qs.n, n), dtype=qs.score_dtype)
    direct = n_bytes == 8 * width and block.flags.c_contiguous
    words = block.view(np.uint64) if direct else None
    step = max(1, min(n, _SUB_ROWS_MAX, _SUB_BYTES // (8 * width)))
    tiles = qs.tiles(step)

    def work(start: int, stop: int) -> None:
        rows = min(step, stop - start)
        xbuf = np.empty((rows, width), dtype=np.uint64)
        cbuf = np.empty((rows, width), dtype=np.uint8)
        summer = _CountSummer(rows, width)
        if not direct:
            pbuf = np.zeros((rows, 8 * width), dtype=np.uint8)
        for s in range(start, stop, step):
            e = min(stop, s + step)
            r = e - s
            if words is not None:
                src = words[s:e]
            else:
                pbuf[:r, :n_bytes] = block[s:e]
                src = pbuf[:r].view(np.uint64)
            x = xbuf[:r]
            for i in range(qs.n):
                tile = tiles[i]
                np.bitwise_xor(src, tile[:r] if tile.ndim == 2 else tile, out=x)
                if width == 1:
                    _popcount_words(x[:, 0], scores[i, s:e])
                else:
                    _popcount_words(x, cbuf[:r])
                    summer(cbuf[:r], scores[i, s:e])

    _run_rows(work, n, 8 * width * max(1, qs.n))
    return scores


# --------------------------------------------------------------------------------------------
# selection


def _pick_ties(row: np.ndarray, t: Any, kk: int, ids: np.ndarray | None) -> np.ndarray:
    """Positions of the ``kk`` best entries of ``row`` whose ``kk``-th smallest value is ``t``."""
    less = np.flatnonzero(row < t)
    eq = np.flatnonzero(row == t)
    need = kk - less.size
    if need < eq.size:
        if ids is None:
            eq = eq[:need]
        elif need > 0:
            eq = eq[np.argpartition(ids[eq], need - 1)[:need]]
        else:
            eq = eq[:0]
    return np.concatenate([less, eq])


def _best_positions(row: np.ndarray, kk: int, ids: np.ndarray | None) -> np.ndarray:
    """Positions of the ``kk`` smallest entries of ``row`` (ties to the smaller id), unordered."""
    if kk >= row.size:
        return np.arange(row.size)
    part = np.argpartition(row, kk - 1)[:kk]
    kth = row[part[kk - 1]]
    if np.count_nonzero(row <= kth) > kk:
        return _pick_ties(row, kth, kk, ids)
    return part


def _select_row(row: np.ndarray, kk: int, ids: np.ndarray | None) -> np.ndarray:
    """Like :func:`_best_positions`, first narrowing ``row`` to the entries that can qualify."""
    stride = row.size // _SAMPLE_SIZE
    if stride >= 4 and kk <= _SAMPLE_SIZE:
        sample = row[::stride]
        bound = np.partition(sample, kk - 1)[kk - 1]
        candidates = np.flatnonzero(row <= bound)
        if candidates.size >= kk:
            sub_ids = None if ids is None else ids[candidates]
            return np.asarray(candidates[_best_positions(row[candidates], kk, sub_ids)])
    return _best_positions(row, kk, ids)


def _select(scores: np.ndarray, kk: int, ids: np.ndarray | None) -> np.ndarray:
    """(Q, kk) positions of the best ``kk`` scores per row, ties to the smaller id (kk < n)."""
    out = np.empty((scores.shape[0], kk), dtype=np.intp)
    for i, row in enumerate(scores):
        out[i] = _select_row(row, kk, ids)
    return out


# --------------------------------------------------------------------------------------------
# search driver


def _exact_l2(block: np.ndarray, pos: np.ndarray, q: np.ndarray) -> np.ndarray:
    """L2 distances from each query to its candidate rows, computed directly (no cancellation)."""
    dim = block.shape[1]
    if pos.size * dim * 4 <= _BLOCK_BYTES // 4:
        diff = block[pos] - q[:, None, :]
        return np.asarray(np.sqrt(np.einsum("qkd,qkd->qk", diff, diff)))
    out = np.empty(pos.shape, dtype=np.float32)
    step = max(1, _BLOCK_BYTES // (16 * dim))
    for i in range(pos.shape[0]):
        for a in range(0, pos.shape[1], step):
            diff = block[pos[i, a : a + step]] - q[i]
            np.sqrt(np.einsum("kd,kd->k", diff, diff), out=out[i, a : a + step])
    return out


def _block_candidates(
    qs: _Queries,
    metric: str,
    block: np.ndarray,
    aux: np.ndarray | None,
    block_ids: np.ndarray | None,
    base: int,
    kk: int,
    exclude: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    n = block.shape[0]
    if metric == "hamming":
        scores = _hamming_scores(qs, block)
    elif metric == "manhattan":
        scores = _manhattan_scores(qs, block)
    else:
        scores = _matmul_scores(qs, block, aux, metric)
    if kk >= n:
        pos = np.broadcast_to(np.arange(n), (qs.n, n))
    else:
        pos = _select(scores, kk, block_ids)
    picked = scores[np.arange(qs.n)[:, None], pos]
    if metric == "cosine":
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(qs.norm[:, None] > 0, picked / qs.norm[:, None], np.float32(0.0))
        dist = np.clip(np.float32(1.0) + cos, 0.0, 2.0, dtype=np.float32)
    elif metric == "euclidean":
        dist = _exact_l2(block, pos, qs.q)
    else:
        dist = picked.astype(np.float32)
    ids = block_ids[pos] if block_ids is not None else pos.astype(np.int64) + base
    if exclude is not None:
        ids = np.where(ids == exclude[:, None], -1, ids)
    return ids, dist


class _Search:
    """One search in progress: per-query state plus the running top-k."""

    def __init__(self, q: np.ndarray, metric: str, k: int, exclude: np.ndarray | None) -> None:
        self.metric = metric
        self.qs = _Queries(q, metric, q.shape[1] if metric == "hamming" else 0)
        self.acc = TopKAccumulator(q.shape[0], k)
        self.kk = k + (1 if exclude is not None else 0)
        self.exclude = exclude

    def feed(self, prepared: PreparedData) -> None:
        x, aux, ids = prepared.data, prepared._aux, prepared.ids
        if self.qs.n == 0:
            return
        step = _block_rows(self.qs.n)
        for s in range(0, x.shape[0], step):
            e = s + step
            self.acc.update(
                *_block_candidates(
                    self.qs,
                    self.metric,
                    x[s:e],
                    None if aux is None else aux[s:e],
                    None if ids is None else ids[s:e],
                    s,
                    self.kk,
                    self.exclude,
                )
            )


def _block_rows(n_queries: int) -> int:
    return max(256, _BLOCK_BYTES // (4 * max(1, n_queries)))


def topk(
    queries: Any,
    data: Any,
    metric: str,
    k: int,
    *,
    ids: Any = None,
    exclude: Any = None,
    data_norms: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``data`` for each query.

    ``queries`` is (Q, D) or one (D,) vector; ``data`` is (N, D), or a :class:`PreparedData`.
    Float metrics need float32 data; ``hamming`` needs packed-bit uint8 rows (N, bytes).
    ``ids`` (int64, one per row) are returned instead of row numbers and break ties; ``exclude``
    holds one id per query to leave out (-1 for none). ``data_norms`` are precomputed row L2
    norms for cosine or squared row L2 norms for euclidean.

    Returns ``(idx, dist)``, each (Q, min(k, candidates)): int64 ids and float32 distances,
    ascending, ties by ascending id. Cosine distance is ``1 - cos`` (1.0 for zero vectors),
    euclidean the L2 distance, manhattan the L1 distance, hamming the count of differing bits.
    """
    _check_metric(metric)
    k = _check_k(k)
    if isinstance(data, PreparedData):
        if data.metric != metric:
            raise ValueError(f"data was prepared for {data.metric!r}, not {metric!r}")
        if ids is not None or data_norms is not None:
            raise ValueError("pass ids and data_norms to prepare(), not with prepared data")
        prepared = data
    else:
        prepared = PreparedData(data, metric, ids=ids, data_norms=data_norms)
    q = _check_queries(queries, metric, prepared.data.shape[1])
    search = _Search(q, metric, k, _check_exclude(exclude, q.shape[0]))
    search.feed(prepared)
    return search.acc.result()


def topk_chunks(
    queries: Any,
    chunks: Iterable[tuple[Any, ...]],
    metric: str,
    k: int,
    exclude: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over data streamed as ``(ids_block, data_block)`` chunks; see :func:`topk`.

    A chunk may carry a third element, that block's ``data_norms``. Chunks are read one at a
    time, so only one needs to be in memory; the result equals :func:`topk` on the concatenated
    chunks with the concatenated ids.
    """
    _check_metric(metric)
    k = _check_k(k)
    search: _Search | None = None
    dim = -1
    for n, chunk in enumerate(chunks):
        if len(chunk) not in (2, 3):
            raise ValueError(
                f"chunk {n} must be (ids_block, data_block[, data_norms]), got {len(chunk)} items"
            )
        block = _check_data(chunk[1], metric, f"data_block of chunk {n}")
        part = PreparedData(
            block,
            metric,
            ids=_check_ids(chunk[0], block.shape[0], f"ids_block of chunk {n}"),
            data_norms=chunk[2] if len(chunk) == 3 else None,
        )
        if search is None:
            dim = block.shape[1]
            q = _check_queries(queries, metric, dim)
            search = _Search(q, metric, k, _check_exclude(exclude, q.shape[0]))
        elif block.shape[1] != dim:
            raise ValueError(
                f"chunk {n} has {block.shape[1]} columns but earlier chunks have {dim}"
            )
        search.feed(part)
    if search is None:
        q = np.asarray(queries)
        n_queries = 1 if q.ndim == 1 else q.shape[0]
        return np.empty((n_queries, 0), np.int64), np.empty((n_queries, 0), np.float32)
    return search.acc.result()


# --------------------------------------------------------------------------------------------
# full distance matrices


def distances(queries: Any, data: Any, metric: str) -> np.ndarray:
    """Every distance from each query to each row of ``data``: a (Q, N) float32 matrix.

    Same inputs and distances as :func:`topk` (``data`` may be a :class:`PreparedData`), for
    callers that combine several distances before ranking; Q x N must fit in memory. Euclidean
    distances come from the expanded dot product here, so they carry float32 rounding (about
    1e-3 of the norms) instead of :func:`topk`'s exact recomputation of the winners.
    """
    _check_metric(metric)
    if isinstance(data, PreparedData):
        if data.metric != metric:
            raise ValueError(f"data was prepared for {data.metric!r}, not {metric!r}")
        prepared = data
    else:
        prepared = PreparedData(data, metric)
    x, aux = prepared.data, prepared._aux
    q = _check_queries(queries, metric, x.shape[1])
    qs = _Queries(q, metric, x.shape[1] if metric == "hamming" else 0)
    out = np.empty((q.shape[0], x.shape[0]), dtype=np.float32)
    step = _block_rows(q.shape[0])
    for s in range(0, x.shape[0], step):
        e = min(x.shape[0], s + step)
        block = out[:, s:e]
        if metric == "hamming":
            block[...] = _hamming_scores(qs, x[s:e])
        elif metric == "manhattan":
            block[...] = _manhattan_scores(qs, x[s:e])
        else:
            block[...] = _matmul_scores(qs, x[s:e], None if aux is None else aux[s:e], metric)
    if metric == "cosine":
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(qs.norm > 0, np.float32(1.0) / qs.norm, np.float32(0.0))
        out *= inverse[:, None]
        out += np.float32(1.0)
        np.clip(out, 0.0, 2.0, out=out)
    elif metric == "euclidean":
        out += _row_norms_sq(q)[:, None]
        np.maximum(out, 0.0, out=out)
        np.sqrt(out, out=out)
    return out


# --------------------------------------------------------------------------------------------
# multi-image queries


def combine_queries(vectors: Any, metric: str) -> np.ndarray:
    """One query vector standing for all rows of ``vectors`` (M, D).

    Float features: the mean (of the L2-normalised rows for cosine). Packed hashes: the bitwise
    majority vote (a bit is set when at least half of the hashes set it).
    """
    _check_metric(metric)
    v = np.asarray(vectors)
    if v.ndim == 1:
        v = v.reshape(1, -1)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (M, D) array, got shape {v.shape}")
    if metric == "hamming":
        if v.dtype != np.uint8:
            raise ValueError(f"hashes must be packed bits (uint8), got dtype {v.dtype}")
        bits = np.unpackbits(v, axis=1)
        return np.packbits(bits.mean(axis=0) >= 0.5)
    if not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"vectors for metric {metric!r} must be floating point, got {v.dtype}")
    v = v.astype(np.float32, copy=False)
    if metric == "cosine":
        norms = np.sqrt(_row_norms_sq(np.ascontiguousarray(v)))
        v = v / np.where(norms > 0, norms, np.float32(1.0))[:, None]
    return np.asarray(v.mean(axis=0, dtype=np.float32))
