"""Approximate nearest-neighbour candidates for large indexes: faiss IVF-PQ, exact re-rank.

The optional extra ``imrec-widgets[ann]`` (faiss-cpu). ``ImageIndex.build_ann(feature)`` (CLI
``imrec ann ROOT``) trains a faiss ``IndexIVFPQ`` on the feature's searchable rows and adds
them all, keyed by catalog id; ``search(..., exact=False)`` asks it for ``candidates`` ids per
query and re-ranks them exactly against their float32 rows, so every distance returned is the
exact one and only the membership of the top-k is approximate. faiss IVF-PQ was chosen over
usearch HNSW by measuring both on the same data (``benchmarks/bench_ann.py compare``): both
meet recall@10 >= 0.95 at p50 <= 10 ms on a million rows; usearch answers faster, but its graph
holds every vector (1.36 GB at 1M rows in i8 against 136 MiB), it built slower at 1M, and
IVF-PQ adds and removes ids in place. Float features only (cosine or euclidean); 64-bit
hashes are searched exactly (under a millisecond at a million rows). The default 400
candidates keep recall@10 near 0.97 for new images at 1M rows (0.84 with 100).

Rows are "covered" by ``indexed_at`` (seconds since the epoch, from the writer's clock): a
clock set back between an ANN build and a later change could hide that change from the
coverage test; the re-rank would then use that image's old float32 row.

Files, under ``<index>/ann/``:

``<feature>.<token>.faiss``
    The serialised faiss index. Written to a temporary name, fsynced, renamed, and only then
    recorded in the catalog (``meta["ann/<feature>"]``, the *stamp*: file name, size, SHA-256,
    library and version, metric, feature configuration, dimension, the rows it covers). A
    reader loads the file the stamp names and checks all of it; a missing, truncated or
    altered file, one built for other feature settings, by another faiss major version, or
    with faiss not installed gives one ``AnnWarning`` line and the search runs exactly.
``<feature>.<token>.f32``
    The float32 rows for re-ranking, row = catalog id (uncompressed, memory-mapped; Zarr
    would decompress a whole chunk per scattered row). Written like the index file at a full
    build; ``update()`` writes only rows the current stamp does not cover, so a kill during
    an update never touches a row a reader may read.

Coverage: the stamp records ``covered_until``, the latest ``indexed_at`` among the rows it
holds. Rows indexed later (new or changed since) are *uncovered*: their ANN entries (old
vectors) are ignored and they are searched exactly beside the ANN candidates; rows no longer
searchable (removed, now unreadable) and rows outside ``ids=`` / ``where=`` / ``folder=`` are
dropped from the candidates. ``update()`` adds the uncovered rows to the index (and removes
the stale ones), so that set stays small; it retrains from scratch when the feature was
recomputed with other settings or the rows more than doubled since training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import struct
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import derived
from .errors import AnnWarning, UsageError
from .progress import progress_bar

LIBRARY = "faiss"
EXTRA_HINT = "pip install 'imrec-widgets[ann]'"
ANN_MIN_ROWS = 1_000_000
"""``search(exact=None)`` uses a built ANN index from this many searchable rows up."""
ANN_METRICS = ("cosine", "euclidean")
DEFAULT_CANDIDATES = 400
"""Ids asked of the ANN index per query (at least ``rerank * k``), all re-ranked exactly."""
MIN_FILTER_FRACTION = 1 / 32
"""A filter (``ids=``, ``where=``, ``folder=``) keeping fewer of the rows is searched exactly."""
EXACT_FILTER_ROWS = 20_000
"""A filter keeping at most this many rows is searched exactly (over the memory-mapped rows)."""
MAX_UNCOVERED_FRACTION = 0.1
"""More uncovered rows than this fraction of the index: it is stale, the search runs exactly."""
TRAIN_ROWS = 65_536


def stamp_key(feature: str) -> str:
    return f"ann/{feature}"


def damaged_key(feature: str) -> str:
    """Catalog key naming the rows file a search found not to match its checksums."""
    return f"{stamp_key(feature)}/damaged"


def mark_damaged(catalog: Any, feature: str, rows_file: str) -> None:
    """Record that ``rows_file`` failed its checksums, so the next ``update()`` rebuilds the
    ANN index (skipped on a read-only catalog or a busy one: the search is exact either way)."""
    if getattr(catalog, "read_only", False):
        return
    with contextlib.suppress(sqlite3.Error):
        catalog.set_meta(damaged_key(feature), rows_file)


def require_faiss() -> Any:
    """The faiss module, or an ImportError saying how to install the extra."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            f"the ANN extra is not installed (faiss is missing): {EXTRA_HINT}"
        ) from exc
    return faiss


def _major(version: str) -> str:
    return str(version).split(".")[0]


def pq_subquantizers(dim: int) -> int:
    """PQ sub-quantizers for ``dim`` dimensions: a divisor of ``dim``, sub-vectors near 10-d."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(dim / m - 10), -m))


def default_params(rows: int, dim: int) -> dict[str, int]:
    """IVF lists, PQ sub-quantizers and bits, lists probed, and training rows for ``rows``."""
    train = min(rows, TRAIN_ROWS)
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(rows))))
    nlist = int(max(1, min(nlist, train // 39)))
    return {
        "nlist": nlist,
        "m": pq_subquantizers(dim),
        "nbits": int(max(1, min(8, math.floor(math.log2(max(2, train)))))),
        "nprobe": int(max(nlist // 64, min(nlist, 8))),
        "train_rows": int(train),
        "candidates": DEFAULT_CANDIDATES,
    }


# -- files ------------------------------------------------------------------------------------
def ann_dir(index_dir: Path) -> Path:
    return Path(index_dir) / "ann"


def _name(feature: str) -> str:
    return feature.replace("/", "_")


def _before_replace(temporary: Path) -> None:
    """Called with the complete, fsynced temporary file just before it is renamed (tests)."""


_INDEX_FILE = derived.file_name_pattern("faiss")
_ROWS_FILE = derived.file_name_pattern("f32")
_SUMS_FILE = derived.file_name_pattern("sum")


def _write_atomically(path: Path, chunks: Iterator[bytes] | bytes | memoryview) -> tuple[int, str]:
    """``derived.atomic_write`` with this module's test hook; (bytes, SHA-256)."""
    return derived.atomic_write(path, chunks, before_replace=lambda temp: _before_replace(temp))


def _folder(index_dir: Path) -> Path:
    """``<index>/ann``, made if missing; an error when it is a link or not a folder."""
    folder = derived.inner_folder(Path(index_dir), "ann", create=True)
    if folder is None:
        raise OSError(f"{ann_dir(index_dir)} is not a folder of this index (a link?)")
    return folder


def remove_unused(index_dir: Path, feature: str, stamp: dict[str, Any] | None) -> None:
    """Delete this feature's ANN files the stamp does not name (older builds, temporaries)."""
    folder = ann_dir(index_dir)
    if not folder.is_dir():
        return
    if folder.is_symlink():
        return
    keep = {stamp.get(key) for key in ("file", "rows_file", "sums_file")} if stamp else set()
    for path in folder.glob(f"{_name(feature)}.*"):
        if path.name not in keep and path.name.split(".")[0] == _name(feature):
            path.unlink(missing_ok=True)


# -- building ---------------------------------------------------------------------------------
def _normalised(block: np.ndarray, metric: str) -> np.ndarray:
    block = np.ascontiguousarray(block, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.maximum(norms, np.float32(1e-30))
    return block


def _chunks(store: Any, feature: str, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, rows)`` of the store's chunks that hold any of the sorted ``ids``."""
    if ids.size == 0:
        return
    array = store.array(feature)
    step = array.chunks[0]
    for chunk in np.unique(ids // step):
        lo, hi = np.searchsorted(ids, [chunk * step, (chunk + 1) * step])
        members = ids[lo:hi]
        block = np.asarray(array[int(chunk * step) : int(members[-1]) + 1])
        yield members, block[members - chunk * step]


def _snapshot(catalog: Any) -> tuple[np.ndarray, float]:
    """Searchable ids and the latest ``indexed_at`` among them (taken under the write lock)."""
    return np.asarray(catalog.ids("ok"), dtype=np.int64), catalog.latest_indexed_at()


def _write_rows(handle: Any, ids: np.ndarray, rows: np.ndarray, dim: int) -> np.ndarray:
    """Write float32 ``rows`` at row ``ids`` (ascending) of an open id-addressed rows file;
    returns their checksums (``derived.row_digests``)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    runs = np.flatnonzero(np.diff(ids) != 1) + 1
    for part_ids, part_rows in zip(np.split(ids, runs), np.split(rows, runs), strict=True):
        handle.seek(int(part_ids[0]) * dim * 4)
        handle.write(part_rows.tobytes())
    return derived.row_digests(rows)


def build(
    index_dir: Path,
    catalog: Any,
    store: Any,
    feature: str,
    metric: str,
    config: dict[str, Any],
    *,
    progress: bool = False,
    **params: Any,
) -> dict[str, Any]:
    """Train and fill a fresh IVF-PQ index of every searchable row; record and return its stamp.

    Call under the index's write lock. ``params`` override ``default_params`` (``nlist``,
    ``m``, ``nbits``, ``nprobe``, ``train_rows``, ``candidates``).
    """
    faiss = require_faiss()
    started = time.perf_counter()
    array = store.array(feature)
    if array.ndim != 2 or np.dtype(array.dtype) != np.float32:
        raise UsageError(
            f"an ANN index needs a float feature; {feature!r} is {array.dtype} {tuple(array.shape[1:])} "
            "(hashes are searched exactly, under a millisecond at a million rows)"
        )
    if metric not in ANN_METRICS:
        raise UsageError(f"an ANN index supports {' or '.join(ANN_METRICS)}, not {metric!r}")
    dim = int(array.shape[1])
    ok, covered_until = _snapshot(catalog)
    if ok.size == 0:
        raise ValueError("the index has no searchable images yet; run idx.update() first")
    unknown = set(params) - set(default_params(1, 1))
    if unknown:
        raise TypeError(f"unknown ANN parameter {sorted(unknown)[0]!r}")
    chosen = {**default_params(int(ok.size), dim), **{k: int(v) for k, v in params.items()}}
    if dim % chosen["m"]:
        raise UsageError(f"m={chosen['m']} does not divide the {dim} dimensions of {feature!r}")

    from .compact import training_sample

    sample = _normalised(training_sample(store, feature, ok, chosen["train_rows"]), metric)
    index = _new_index(faiss, dim, metric, chosen)
    index.train(sample)
    del sample

    folder = _folder(index_dir)
    token = time.time_ns()
    rows_path = folder / f"{_name(feature)}.{token}.f32"
    row_count = int(ok[-1]) + 1
    sums = np.zeros(row_count, dtype=np.uint64)
    bar = progress_bar(int(ok.size), progress, desc=f"ANN {feature}", unit="row")
    with (
        bar,
        derived.atomic_file(rows_path, before_replace=lambda temp: _before_replace(temp)) as handle,
    ):
        handle.truncate(row_count * dim * 4)
        for ids, block in _chunks(store, feature, ok):
            sums[ids] = _write_rows(handle, ids, block, dim)
            index.add_with_ids(_normalised(block, metric), ids)
            bar.update(ids.size)
    stamp = {
        "library": LIBRARY,
        "version": faiss.__version__,
        "kind": "IVFPQ",
        "metric": metric,
        "dim": dim,
        "feature_config": config,
        "params": chosen,
        "rows_file": rows_path.name,
        "rows_bytes": row_count * dim * 4,
        "trained_rows": int(ok.size),
        "built_at": time.time(),
    }
    stamp = _save(index_dir, catalog, feature, index, stamp, token, covered_until, sums)
    stamp["build_seconds"] = time.perf_counter() - started
    catalog.set_meta(stamp_key(feature), stamp)
    return stamp


def _new_index(faiss: Any, dim: int, metric: str, params: dict[str, int]) -> Any:
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    coarse = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFPQ(
        coarse, dim, params["nlist"], params["m"], params["nbits"], faiss_metric
    )
    index.own_fields = True
    coarse.this.disown()
    # Small indexes train on few rows; faiss would print a warning line per sub-quantizer.
    index.cp.min_points_per_centroid = 1
    index.pq.cp.min_points_per_centroid = 1
    index.nprobe = params["nprobe"]
    return index


def _save(
    index_dir: Path,
    catalog: Any,
    feature: str,
    index: Any,
    stamp: dict[str, Any],
    token: int,
    covered_until: float,
    sums: np.ndarray,
) -> dict[str, Any]:
    """Write ``index`` and the rows' checksums atomically and record the stamp naming them;
    drop the files they replace."""
    faiss = require_faiss()
    folder = _folder(index_dir)
    sums_path = folder / f"{_name(feature)}.{token}.sum"
    sums_bytes, sums_checksum = _write_atomically(
        sums_path, np.ascontiguousarray(sums, dtype="<u8").tobytes()
    )
    path = folder / f"{_name(feature)}.{token}.faiss"
    data = faiss.serialize_index(index)
    size, checksum = _write_atomically(path, memoryview(data))
    stamp = {
        **stamp,
        "sums_file": sums_path.name,
        "sums_bytes": sums_bytes,
        "sums_sha256": sums_checksum,
        "file": path.name,
        "bytes": size,
        "sha256": checksum,
        "count": int(index.ntotal),
        "covered_until": covered_until,
        "generation": catalog.generation(),
    }
    catalog.set_meta(stamp_key(feature), stamp)
    damaged = catalog.get_meta(damaged_key(feature))
    if damaged is not None and damaged != stamp["rows_file"]:  # that file was replaced
        catalog.set_meta(damaged_key(feature), None)
    remove_unused(index_dir, feature, stamp)
    return stamp


def refresh_built(
    index_dir: Path, catalog: Any, store: Any, features: dict[str, Any], *, progress: bool = False
) -> None:
    """``refresh`` the ANN index of each of ``features`` that has one, after ``update()``.

    Without faiss installed here an index cannot be extended: one ``AnnWarning`` says so, and
    searches use it for the rows it holds and search the rest exactly.
    """
    for name, feature in features.items():
        if not catalog.get_meta(stamp_key(name)):
            continue
        config = json.loads(json.dumps(feature.config()))
        try:
            refresh(index_dir, catalog, store, name, config, progress=progress)
        except ImportError as exc:
            warnings.warn(
                f"the ANN index of {name!r} was not updated ({exc}); searches use it for the "
                "rows it holds and search the rest exactly",
                AnnWarning,
                stacklevel=3,
            )


def refresh(
    index_dir: Path,
    catalog: Any,
    store: Any,
    feature: str,
    config: dict[str, Any],
    *,
    progress: bool = False,
) -> str:
    """Bring the ANN index of ``feature`` up to date after ``update()``; what was done, in words.

    Adds the rows indexed since the stamp (removing their old entries and those of rows no
    longer searchable), or rebuilds with the same parameters when the feature's settings
    changed or the rows more than doubled since training. A stamp that is not one this code
    writes (a file name outside ``ann/``, fields of the wrong type) is never followed: the
    index is rebuilt from the stored feature, with one ``AnnWarning``. Call under the write lock.
    """
    stamp = catalog.get_meta(stamp_key(feature))
    if not stamp:
        return "none built"
    faiss = require_faiss()
    if feature not in store or store.array(feature).ndim != 2:
        catalog.set_meta(stamp_key(feature), None)
        remove_unused(index_dir, feature, None)
        return "dropped (the feature is gone)"
    ok, covered_until = _snapshot(catalog)
    problem = stamp_problem(stamp, feature)
    if problem is not None:
        catalog.set_meta(stamp_key(feature), None)
        remove_unused(index_dir, feature, None)
        metric = stamp.get("metric") if isinstance(stamp, dict) else None
        if ok.size == 0 or metric not in ANN_METRICS:
            warn(feature, f"{problem}; it was dropped", stacklevel=3)
            return "dropped (its stamp is not one this version writes)"
        warn(feature, f"{problem}; it is rebuilt", stacklevel=3)
        rebuilt = build(index_dir, catalog, store, feature, metric, config, progress=progress)
        return f"rebuilt ({rebuilt['count']} rows)"
    params = {k: v for k, v in stamp["params"].items() if k in ("m", "candidates")}
    uncovered = np.asarray(catalog.ids_indexed_after(stamp["covered_until"]), dtype=np.int64)
    loaded = load(index_dir, catalog, store, feature, config)
    damaged = catalog.get_meta(damaged_key(feature)) == stamp["rows_file"]
    if damaged:
        warn(feature, f"its float32 rows {stamp['rows_file']} did not match their checksums "
             "in a search; it is rebuilt", stacklevel=3)  # fmt: skip
    if (
        damaged
        or loaded is None
        or isinstance(loaded, str)
        or uncovered.size > stamp["trained_rows"]
        or ok.size == 0
    ):
        if ok.size == 0:
            catalog.set_meta(stamp_key(feature), None)
            remove_unused(index_dir, feature, None)
            return "dropped (no searchable rows)"
        dim = int(store.array(feature).shape[1])
        if dim % params["m"]:
            params.pop("m")
        rebuilt = build(
            index_dir, catalog, store, feature, stamp["metric"], config, progress=progress, **params
        )
        return f"rebuilt ({rebuilt['count']} rows)"
    index = loaded.index
    held = ids_in(index)
    gone = np.setdiff1d(held, ok, assume_unique=True)
    stale = np.union1d(gone, np.intersect1d(held, uncovered, assume_unique=True))
    if uncovered.size == 0 and gone.size == 0:
        return "up to date"
    if stale.size:
        index.remove_ids(faiss.IDSelectorBatch(stale))
    rows_path = _folder(index_dir) / stamp["rows_file"]
    dim = int(stamp["dim"])
    assert loaded.sums is not None
    row_count = max(loaded.sums.size, int(uncovered[-1]) + 1 if uncovered.size else 0)
    sums = np.zeros(row_count, dtype=np.uint64)
    sums[: loaded.sums.size] = loaded.sums
    # Only rows the current stamp does not cover are overwritten (readers never read those
    # from this file), so a kill here leaves every row a reader may use intact. The file is
    # rewritten in place only when it is a plain file of this index (never through a link).
    bar = progress_bar(int(uncovered.size), progress, desc=f"ANN {feature}", unit="row")
    try:
        with derived.open_for_update(rows_path) as handle:
            for ids, block in _chunks(store, feature, uncovered):
                sums[ids] = _write_rows(handle, ids, block, dim)
                index.add_with_ids(_normalised(block, stamp["metric"]), ids)
                bar.update(ids.size)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        bar.close()
    rows_bytes = max(int(stamp["rows_bytes"]), row_count * dim * 4)
    token = time.time_ns()
    _save(
        index_dir,
        catalog,
        feature,
        index,
        {**stamp, "rows_bytes": rows_bytes, "version": faiss.__version__},
        token,
        max(covered_until, float(stamp["covered_until"])),
        sums,
    )
    return f"added {uncovered.size}, dropped {gone.size} rows"


def ids_in(index: Any) -> np.ndarray:
    """The ids an IVF index holds, sorted."""
    faiss = require_faiss()
    lists = index.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(index.nlist)
        if lists.list_size(i)
    ]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


# -- loading and searching ----------------------------------------------------------------------
@dataclass
class AnnIndex:
    """A loaded, checked ANN index of one feature, its memory-mapped float32 rows and their
    checksums (each row is compared with its checksum the first time a search reads it)."""

    stamp: dict[str, Any]
    index: Any
    rows: np.ndarray | None
    sums: np.ndarray | None = None
    checked: np.ndarray | None = None
    feature: str = ""
    problem: str | None = None
    """Why the rows cannot be trusted, once a row failed its checksum (then never used again)."""

    @property
    def metric(self) -> str:
        return str(self.stamp["metric"])

    def search(self, queries: np.ndarray, count: int, nprobe: int | None = None) -> np.ndarray:
        """Candidate ids, (Q, count), -1 where fewer were found."""
        self.index.nprobe = int(nprobe or self.stamp["params"]["nprobe"])
        count = int(max(1, min(count, self.index.ntotal)))
        _dist, labels = self.index.search(_normalised(queries, self.metric), count)
        return np.asarray(labels)

    def rows_of(self, ids: np.ndarray) -> np.ndarray | None:
        """The float32 rows of ``ids`` (covered, ascending or not) if each matches the checksum
        recorded when it was written; None (and ``problem`` set) when one does not."""
        if self.rows is None or self.sums is None or self.checked is None or self.problem:
            return None
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.asarray(self.rows[ids])
        todo = ~self.checked[ids]
        if todo.any():
            fresh = ids[todo]
            if not np.array_equal(derived.row_digests(rows[todo]), self.sums[fresh]):
                self.problem = (
                    f"its float32 rows {self.stamp['rows_file']} do not match their checksums "
                    f"(changed since written); rebuild it with idx.build_ann({self.feature!r})"
                )
                return None
            self.checked[fresh] = True
        return rows


def _is_int(value: Any, low: int = 0, high: int = 2**62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def stamp_problem(stamp: Any, feature: str) -> str | None:
    """None when ``stamp`` is one this code writes for ``feature``; else what is wrong, in words.

    Every file it names must be ``<feature>.<token>.faiss|f32|sum`` inside ``ann/`` (never a
    separator, ``..`` or an absolute path), and every number of the right type and range.
    """
    if not isinstance(stamp, dict):
        return "its stamp is not a record"
    prefix = _name(feature) + "."
    for key, pattern in (
        ("file", _INDEX_FILE),
        ("rows_file", _ROWS_FILE),
        ("sums_file", _SUMS_FILE),
    ):
        name = stamp.get(key)
        if key == "sums_file" and name is None:
            return "it was built by an older version (no row checksums)"
        if derived.checked_name(Path("ann"), name, pattern) is None or not str(name).startswith(
            prefix
        ):
            return f"its stamp names {key} {str(name)[:80]!r}, not a file of this index"
    for key in ("dim", "count", "bytes", "rows_bytes", "sums_bytes", "trained_rows"):
        if not _is_int(stamp.get(key)):
            return f"its stamp holds {key}={str(stamp.get(key))[:40]!r}, not a count"
    if not 1 <= stamp["dim"] <= 1 << 20:
        return f"its stamp holds dim={stamp['dim']}"
    for key in ("sha256", "sums_sha256"):
        digest = stamp.get(key)
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or not set(digest) <= set("0123456789abcdef")
        ):
            return f"its stamp holds no {key} checksum"
    covered = stamp.get("covered_until")
    if (
        not isinstance(covered, (int, float))
        or isinstance(covered, bool)
        or not math.isfinite(covered)
    ):
        return "its stamp holds no covered_until time"
    if stamp.get("metric") not in ANN_METRICS:
        return f"its stamp holds metric {str(stamp.get('metric'))[:40]!r}"
    params = stamp.get("params")
    if not isinstance(params, dict) or set(params) != set(default_params(1, 1)):
        return "its stamp holds no parameters"
    if not all(_is_int(value, 1, 1 << 24) for value in params.values()):
        return f"its stamp holds parameters {str(params)[:80]}"
    if stamp["dim"] % params["m"] or params["nbits"] > 16:
        return f"its stamp holds parameters {str(params)[:80]}"
    rows = stamp["rows_bytes"] // (stamp["dim"] * 4)
    if stamp["sums_bytes"] != 8 * rows or stamp["count"] > rows:
        return "its stamp's row counts do not agree"
    if stamp["bytes"] > _serialized_bytes(stamp):
        return f"its stamp records {stamp['bytes']:,} bytes, more than an index of its size takes"
    return None


def _serialized_bytes(stamp: dict[str, Any]) -> int:
    """Bytes faiss writes for an IVF-PQ index of the stamp's shape (lists in the "full" layout,
    the larger of faiss's two)."""
    dim, params = int(stamp["dim"]), stamp["params"]
    nlist, m, nbits = int(params["nlist"]), int(params["m"]), int(params["nbits"])
    code_size = (m * nbits + 7) // 8
    header = 4 + 33 + 8 + 8
    quantizer = 4 + 33 + 8 + nlist * dim * 4
    pq = 1 + 8 + 24 + 8 + dim * (1 << nbits) * 4
    lists = 4 + 8 + 8 + 4 + 8 + nlist * 8
    return header + quantizer + 9 + pq + lists + int(stamp["count"]) * (code_size + 8)


def _layout_problem(data: memoryview, stamp: dict[str, Any]) -> str | None:
    """None when ``data`` is laid out as faiss writes an IVF-PQ index of the stamp's shape,
    every size it declares within the file; faiss allocates what a file declares before
    reading it, so a crafted file is refused here, before faiss sees it."""
    dim, params = int(stamp["dim"]), stamp["params"]
    nlist, m, nbits = int(params["nlist"]), int(params["m"]), int(params["nbits"])
    code_size = (m * nbits + 7) // 8
    at = 0

    def take(fmt: str) -> Any:
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise ValueError("it ends early")
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values if len(values) > 1 else values[0]

    def skip(count: int) -> None:
        nonlocal at
        if count < 0 or at + count > len(data):
            raise ValueError("it declares more data than it holds")
        at += count

    def header(kinds: tuple[bytes, ...], ntotal: int) -> None:
        if bytes(data[at : at + 4]) not in kinds:
            raise ValueError("it is not an IVF-PQ index over a flat quantizer")
        skip(4)
        d, count, _a, _b, _trained, metric = take("<iqqqBi")
        if d != dim or count != ntotal or metric not in (0, 1):
            raise ValueError("its header does not match the stamp")

    try:
        header((b"IwPQ",), int(stamp["count"]))
        if take("<QQ")[0] != nlist:
            raise ValueError("its list count does not match the stamp")
        header((b"IxFI", b"IxF2"), nlist)
        if take("<Q") * 4 != nlist * dim * 4:
            raise ValueError("its coarse centroids do not match the stamp")
        skip(nlist * dim * 4)
        direct_map = take("<B")
        if direct_map != 0 or take("<Q") != 0:
            raise ValueError("it holds a direct map this version never writes")
        take("<B")
        if take("<Q") != code_size or take("<QQQ") != (dim, m, nbits):
            raise ValueError("its product quantizer does not match the stamp")
        if take("<Q") != dim * (1 << nbits):
            raise ValueError("its product quantizer does not match the stamp")
        skip(dim * (1 << nbits) * 4)
        if bytes(data[at : at + 4]) != b"ilar":
            raise ValueError("its inverted lists are not stored in it")
        skip(4)
        if take("<QQ") != (nlist, code_size):
            raise ValueError("its inverted lists do not match the stamp")
        kind = bytes(data[at : at + 4])
        skip(4)
        entries = take("<Q")
        if kind == b"full" and entries == nlist:
            skip(8 * nlist)
            sizes = np.frombuffer(data[at - 8 * nlist : at], dtype="<u8")
        elif kind == b"sprs" and entries % 2 == 0 and entries <= 2 * nlist:
            skip(8 * entries)
            pairs = np.frombuffer(data[at - 8 * entries : at], dtype="<u8").reshape(-1, 2)
            if pairs.size and pairs[:, 0].max() >= nlist:
                raise ValueError("its inverted lists do not match the stamp")
            sizes = pairs[:, 1]
        else:
            raise ValueError("its inverted lists do not match the stamp")
        if np.any(sizes > int(stamp["count"])) or int(sizes.sum()) != int(stamp["count"]):
            raise ValueError("its inverted lists do not hold the rows the stamp records")
        skip(int(stamp["count"]) * (code_size + 8))
    except (ValueError, struct.error) as exc:
        return f"{stamp['file']} is not the index its stamp describes ({exc})"
    if at != len(data):
        return f"{stamp['file']} is not the index its stamp describes (it has trailing data)"
    return None


def load(
    index_dir: Path,
    catalog: Any,
    store: Any,
    feature: str,
    config: dict[str, Any],
    *,
    check_rows: bool = True,
) -> AnnIndex | str | None:
    """The ANN index of ``feature`` if its stamp and files check out; else why not, or None.

    None when none was built; a one-line reason (for an ``AnnWarning``) when one was built but
    cannot be used. The stamp is checked first (``stamp_problem``), then the file's size and
    layout against it, before faiss reads a byte.
    """
    stamp = catalog.get_meta(stamp_key(feature))
    if not stamp:
        return None
    problem = stamp_problem(stamp, feature)
    if problem is not None:
        return problem
    try:
        faiss = require_faiss()
    except ImportError as exc:
        return str(exc)
    if stamp.get("library") != LIBRARY:
        return f"it was built with {stamp.get('library')!r}, this version uses {LIBRARY}"
    if _major(stamp.get("version", "")) != _major(faiss.__version__):
        return f"it was built with faiss {stamp.get('version')}, faiss {faiss.__version__} is installed"
    if stamp.get("feature_config") != config:
        return f"it was built on {feature} settings {stamp.get('feature_config')}, the index has {config}"
    if feature not in store or tuple(store.array(feature).shape[1:]) != (stamp.get("dim"),):
        return f"it has {stamp.get('dim')} dimensions, the stored feature does not"
    folder = derived.inner_folder(Path(index_dir), "ann", create=False)
    if folder is None:
        return f"{ann_dir(index_dir)} is not a folder of this index"
    path = folder / stamp["file"]
    try:
        size = path.stat().st_size
        if size != stamp["bytes"]:
            return f"{path.name} has {size} bytes, not {stamp['bytes']} (half written?)"
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return f"cannot read {path.name}: {exc.strerror or exc}"
    except MemoryError:
        return f"{path.name} does not fit in memory ({stamp['bytes']:,} bytes)"
    if data.size != stamp["bytes"] or hashlib.sha256(data.data).hexdigest() != stamp["sha256"]:
        return f"{path.name} is damaged (checksum mismatch)"
    problem = _layout_problem(data.data, stamp)
    if problem is not None:
        return problem
    try:
        index = faiss.deserialize_index(data)
    except RuntimeError as exc:
        return f"faiss cannot read {path.name}: {str(exc).strip().splitlines()[0]}"
    except MemoryError:
        return f"faiss cannot read {path.name}: out of memory"
    if index.d != stamp["dim"] or index.ntotal != stamp["count"]:
        return f"{path.name} holds {index.ntotal} x {index.d}, not what was recorded"
    loaded = AnnIndex(stamp, index, None, feature=feature)
    if check_rows:
        opened = _open_rows(folder, stamp)
        if isinstance(opened, str):
            return opened
        rows, sums = opened
        problem = _check_rows(catalog, store, feature, stamp, rows)
        if problem:
            return problem
        loaded.rows, loaded.sums = rows, sums
        loaded.checked = np.zeros(sums.size, dtype=bool)
    return loaded


def _open_rows(folder: Path, stamp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | str:
    """The memory-mapped float32 rows and their checksums (checked against the stamp)."""
    path = folder / stamp["rows_file"]
    dim = int(stamp["dim"])
    count = int(stamp["rows_bytes"]) // (dim * 4)
    try:
        size = path.stat().st_size
    except OSError:
        return f"its float32 rows {path.name} are missing"
    if size < stamp["rows_bytes"]:
        return f"its float32 rows {path.name} are cut short ({size} bytes, half written?)"
    sums_path = folder / stamp["sums_file"]
    try:
        raw = sums_path.read_bytes() if sums_path.stat().st_size == stamp["sums_bytes"] else b""
    except OSError:
        raw = b""
    if len(raw) != stamp["sums_bytes"] or hashlib.sha256(raw).hexdigest() != stamp["sums_sha256"]:
        return f"the checksums of its float32 rows ({sums_path.name}) are missing or damaged"
    sums = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    if count == 0:
        return np.empty((0, dim), dtype=np.float32), sums
    # An update killed while appending may leave rows past the recorded ones: never read.
    # A plain ndarray over the mapping: indexing a np.memmap subclass costs ~10 us per call more.
    rows = np.asarray(np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim)))
    return rows, sums


def _check_rows(
    catalog: Any, store: Any, feature: str, stamp: dict[str, Any], rows: np.ndarray
) -> str | None:
    """Compare the covered rows of one Zarr chunk (the middle one) with the rows file."""
    ok = np.asarray(catalog.ids("ok"), dtype=np.int64)
    covered = np.setdiff1d(
        ok, np.asarray(catalog.ids_indexed_after(stamp["covered_until"]), dtype=np.int64)
    )
    covered = covered[covered < rows.shape[0]]
    if covered.size == 0:
        return None
    step = store.array(feature).chunks[0]
    middle = int(covered[covered.size // 2]) // step
    sample = covered[(covered // step) == middle][:256]
    if not np.array_equal(np.asarray(rows[sample]), store.read_rows(feature, sample)):
        return f"its float32 rows {stamp['rows_file']} differ from the stored feature"
    return None


def warn(feature: str, problem: str, *, stacklevel: int = 5) -> None:
    """One ``AnnWarning`` line: the ANN index of ``feature`` is not used, and why."""
    warnings.warn(
        f"the ANN index of {feature!r} is not used, searched exactly: {problem}",
        AnnWarning,
        stacklevel=stacklevel,
    )
