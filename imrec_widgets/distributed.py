"""Dask-distributed feature extraction and chunked top-k search.

Indexing: the scan and the catalog stay with the single writer (``ImageIndex.update``). Dask
workers get batches of file paths (never image bytes), read the files from shared storage,
compute every feature including the embedding (each worker process loads the model once) and
send back arrays; the writer stores each batch, in order, Zarr first and then its catalog rows in
one transaction, exactly as the local pipeline does. A bounded number of batches is in flight,
and a batch whose worker dies is run again elsewhere.

Search: each worker reads one row chunk of a feature straight from the store (a local path
every worker mounts, or any fsspec URL Zarr accepts), computes that chunk's top-k and sends back
only ``(ids, distances)``, which the caller merges.

``distributed`` is imported on first use: the rest of the package works without Dask.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import search
from .errors import UsageError
from .indexer import Decoded, ScannedFile, embed_decoded, process_batch, worker_setup

WAIT_FOR_WORKERS_S = 120.0
"""How long ``run_batches_dask`` waits for a first worker to join the scheduler."""

PathRules = list[tuple[str, str]]


def require_distributed() -> Any:
    """The ``distributed`` module, or an ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "Dask-distributed indexing needs dask.distributed: "
            "pip install 'imrec-widgets[dask]' (or 'dask[distributed]')"
        ) from exc
    return distributed


# -- paths as the workers see them ----------------------------------------------------------------
def path_rules(path_map: Mapping[str, str] | None) -> PathRules:
    """``path_map`` (writer prefix -> worker prefix) as rules, longest prefix first.

    A writer prefix matches both as written and with symlinks resolved, because the scan
    reports resolved paths.
    """
    rules: dict[str, str] = {}
    for source, target in (path_map or {}).items():
        source, target = str(source), str(target)
        if not source or not target:
            raise UsageError(
                f"path_map entries need a source and a target, got {source!r}: {target!r}"
            )
        expanded = os.path.expanduser(source)
        for form in (os.path.normpath(expanded), os.path.realpath(expanded)):
            rules[form] = target
    return sorted(rules.items(), key=lambda rule: len(rule[0]), reverse=True)


def map_path(path: str, rules: PathRules) -> str:
    """``path`` with its longest matching prefix (whole folders only) replaced; else unchanged."""
    for source, target in rules:
        if path == source:
            return target
        prefix = source if source.endswith("/") else source + "/"
        if path.startswith(prefix):
            return target.rstrip("/") + "/" + path[len(prefix) :]
    return path


def map_location(location: str, rules: PathRules) -> str:
    """A store location (local path or ``file://`` URL) as the workers see it."""
    if location.startswith("file://"):
        return "file://" + map_path(location[len("file://") :], rules)
    if "://" in location:
        return location
    return map_path(location, rules)


def parse_path_map(items: Sequence[str]) -> dict[str, str]:
    """``["SRC=DST", ...]`` (the CLI's ``--path-map``) as a dict."""
    out = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise UsageError(f"--path-map takes SRC=DST (writer path=worker path), got {item!r}")
        out[source] = target
    return out


@contextlib.contextmanager
def dask_client(address: str, n_workers: int | None = None) -> Iterator[Any]:
    """A client of the scheduler at ``address``, or of a new ``LocalCluster`` for ``"local"``.

    The local cluster has ``n_workers`` single-threaded worker processes (default: one per
    core). Whatever this opens is closed on exit; a remote cluster itself is left running.
    """
    distributed = require_distributed()
    if address != "local":
        with distributed.Client(address) as client:
            yield client
        return
    if n_workers is not None and n_workers < 1:
        raise UsageError(f"a local Dask cluster needs at least 1 worker, not {n_workers}")
    with (
        distributed.LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


# -- indexing -------------------------------------------------------------------------------------
def extract_batch(settings: dict[str, Any], tasks: list[tuple[int, ScannedFile]]) -> list[Decoded]:
    """Worker side: decode one batch from its paths and compute every feature, embedding included.

    The extractors (and so the model) are built once per worker process and reused.
    """
    decoded = process_batch(settings, tasks)
    model = worker_setup(settings).get("embedding")
    if model is not None:
        embed_decoded(model, decoded)
    return decoded


def _worker_settings(settings: dict[str, Any], rules: PathRules) -> dict[str, Any]:
    weights = settings.get("weights")
    if weights is None or not rules:
        return settings
    return {
        **settings,
        "weights": map_path(os.path.abspath(os.path.expanduser(str(weights))), rules),
    }


def _total_threads(client: Any) -> int:
    return int(max(1, sum(client.nthreads().values())))


def _wait_for_workers(client: Any) -> None:
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
    except TimeoutError:
        raise TimeoutError(
            f"no Dask worker joined the scheduler at {client.scheduler.address} within "
            f"{WAIT_FOR_WORKERS_S:.0f} s; start workers with `dask worker {client.scheduler.address}`"
        ) from None


def _check_workers_can_read(client: Any, original: str, mapped: str) -> None:
    if client.submit(os.path.exists, mapped, pure=False).result(timeout=WAIT_FOR_WORKERS_S):
        return
    if not os.path.exists(original):
        return  # gone since the scan: recorded as an error like any unreadable file
    seen = f"{mapped} (the writer's {original})" if mapped != original else mapped
    raise FileNotFoundError(
        f"Dask workers cannot read {seen}; mount the images on the workers, or map the "
        "writer's folder to theirs with path_map={'WRITER_PATH': 'WORKER_PATH'} "
        "(CLI: --path-map SRC=DST)"
    )


def run_batches_dask(
    client: Any,
    batches: list[list[tuple[int, ScannedFile]]],
    settings: dict[str, Any],
    on_batch: Callable[[list[Decoded]], None],
    *,
    path_map: Mapping[str, str] | None = None,
    in_flight: int | None = None,
) -> None:
    """Process ``batches`` on the workers of ``client``; ``on_batch`` gets each result in order.

    Results carry their embeddings (``Decoded.embedding``). At most ``in_flight`` batches
    (default: twice the cluster's threads) are submitted ahead of the writer; a batch lost with
    its worker is retried. ``path_map`` rewrites file paths (and the weights path) for workers
    that mount the data elsewhere.
    """
    require_distributed()
    if not batches:
        return
    rules = path_rules(path_map)
    remote = [
        [
            (id_, replace(scanned, abspath=map_path(scanned.abspath, rules)))
            for id_, scanned in batch
        ]
        for batch in batches
    ]
    worker_settings = _worker_settings(settings, rules)
    _wait_for_workers(client)
    _check_workers_can_read(client, batches[0][0][1].abspath, remote[0][0][1].abspath)
    ahead = in_flight if in_flight is not None else 2 * _total_threads(client)
    pending: deque[Any] = deque()

    def deliver() -> None:
        future = pending.popleft()
        result = future.result()
        future.release()
        on_batch(result)

    try:
        for batch in remote:
            pending.append(
                client.submit(extract_batch, worker_settings, batch, pure=False, retries=2)
            )
            if len(pending) >= max(1, ahead):
                deliver()
        while pending:
            deliver()
    except BaseException:
        if pending:
            client.cancel(list(pending))
        raise


# -- search -----------------------------------------------------------------------------------------
def chunk_masks(allowed: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, packed mask)`` of each row chunk holding some of ``allowed`` (ascending)."""
    if allowed.size == 0:
        return
    end = int(allowed[-1]) + 1
    for start in range(0, end, chunk_rows):
        stop = min(start + chunk_rows, end)
        lo, hi = np.searchsorted(allowed, [start, stop])
        if hi == lo:
            continue
        mask = np.zeros(stop - start, dtype=bool)
        mask[allowed[lo:hi] - start] = True
        yield start, stop, np.packbits(mask)


def read_masked(
    location: str, name: str, start: int, stop: int, packed_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Worker side: the ids and rows of chunk ``start..stop-1`` of ``name`` that the mask keeps."""
    from .store import FeatureStore

    block = np.asarray(FeatureStore(location, read_only=True).array(name)[start:stop])
    rows = np.flatnonzero(np.unpackbits(packed_mask, count=stop - start))
    return rows.astype(np.int64) + start, block[rows]


def chunk_topk(
    location: str,
    name: str,
    start: int,
    stop: int,
    packed_mask: np.ndarray,
    queries: np.ndarray,
    metric: str,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Worker side: top-``k`` of rows ``start..stop-1`` of feature ``name`` that ``packed_mask`` keeps."""
    ids, rows = read_masked(location, name, start, stop, packed_mask)
    if ids.size == 0:
        n_queries = queries.shape[0]
        return np.empty((n_queries, 0), np.int64), np.empty((n_queries, 0), np.float32)
    return search.topk(queries, rows, metric, k, ids=ids)


def topk_dask(
    client: Any,
    location: str | Path,
    name: str,
    queries: np.ndarray,
    metric: str,
    k: int,
    allowed: np.ndarray,
    chunk_rows: int,
    *,
    path_map: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over the rows ``allowed`` (ascending ids) of a stored feature, on the workers.

    One task per row chunk of ``chunk_rows``; each reads its chunk from ``location`` and returns
    its own top-``k``, merged here with ``TopKAccumulator``. Same result as ``search.topk``.
    """
    distributed = require_distributed()
    queries = np.atleast_2d(np.asarray(queries))
    allowed = np.asarray(allowed, dtype=np.int64)
    accumulator = search.TopKAccumulator(queries.shape[0], k)
    if allowed.size == 0:
        return accumulator.result()
    where = map_location(str(location), path_rules(path_map))
    [shared_queries] = client.scatter([queries], hash=False)
    futures = []
    for start, stop, packed in chunk_masks(allowed, chunk_rows):
        futures.append(
            client.submit(
                chunk_topk,
                where,
                name,
                start,
                stop,
                packed,
                shared_queries,
                metric,
                k,
                pure=False,
                retries=2,
            )
        )
    try:
        for future in distributed.as_completed(futures):
            accumulator.update(*future.result())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        del futures, shared_queries
    return accumulator.result()


def chunk_compact(
    location: str,
    name: str,
    start: int,
    stop: int,
    packed_mask: np.ndarray,
    vector_dtype: str,
    quantizer: Any,
) -> Any:
    """Worker side: the compact copy (``compact.CompactData``) of rows ``start..stop-1`` of
    feature ``name`` that ``packed_mask`` keeps; it stays in the worker's memory. A quantizer
    that does not fit these rows is replaced by one fitted to them (``compact.build_fitted``,
    the check the local build makes; ``refit`` says why)."""
    from . import compact

    ids, rows = read_masked(location, name, start, stop, packed_mask)
    return compact.build_fitted(
        lambda: [(ids, rows)], ids.size, rows.shape[1], vector_dtype, quantizer
    )


def refit_reason(shard: Any) -> str | None:
    """Worker side: why a shard's quantizer was replaced, or None."""
    return None if shard.refit is None else str(shard.refit[1])


def shard_candidates(
    shard: Any, queries: np.ndarray, metric: str, want: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Worker side: the ``want`` best ids of one compact shard per query, by approximate score."""
    from . import compact

    rows = None
    ids = shard.ids
    if allowed is not None:
        rows = np.flatnonzero(np.isin(shard.ids, allowed, assume_unique=True))
        ids = shard.ids[rows]
    if ids.size == 0:
        empty = np.empty((queries.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    scores = compact.approximate_scores(queries, shard, metric, rows)
    if want < ids.size:
        best = np.argpartition(scores, want - 1, axis=1)[:, :want]
        return ids[best], np.take_along_axis(scores, best, axis=1)
    return np.broadcast_to(ids, scores.shape).copy(), scores


class CompactShards:
    """The compact copy of one feature spread over a Dask cluster's workers, one shard per row
    chunk, built once from the Zarr store on shared storage and held in the workers' memory.

    A 10M x 1280 feature is 51 GB as float32 but 13 GB as int8: a cluster holds it in RAM and
    answers each query from memory; ``candidates`` returns the best ids of every shard, which
    the caller re-ranks exactly against the float32 rows.
    """

    def __init__(
        self,
        client: Any,
        location: str | Path,
        name: str,
        ok: np.ndarray,
        chunk_rows: int,
        vector_dtype: str,
        quantizer: Any,
        *,
        path_map: Mapping[str, str] | None = None,
    ) -> None:
        require_distributed()
        self.client = client
        where = map_location(str(location), path_rules(path_map))
        [shared_quantizer] = client.scatter([quantizer], hash=False, broadcast=True)
        self.shards = []
        for start, stop, packed in chunk_masks(ok, chunk_rows):
            self.shards.append(
                client.submit(
                    chunk_compact,
                    where,
                    name,
                    start,
                    stop,
                    packed,
                    vector_dtype,
                    shared_quantizer,
                    pure=False,
                    retries=2,
                )
            )
        reasons = client.gather(
            [client.submit(refit_reason, shard, pure=False) for shard in self.shards]
        )
        found = [why for why in reasons if why is not None]
        if found:
            from .compact import refit_message
            from .errors import QuantizerMismatchWarning

            warnings.warn(
                refit_message(name, f"{found[0]} (in {len(found)} of {len(reasons)} shards)"),
                QuantizerMismatchWarning,
                stacklevel=4,
            )

    def candidates(
        self, queries: np.ndarray, metric: str, want: int, allowed: np.ndarray | None
    ) -> list[np.ndarray]:
        """For each query, the ``want`` ids with the best approximate scores over all shards."""
        distributed = require_distributed()
        [shared] = self.client.scatter([(queries, allowed)], hash=False)
        futures = [
            self.client.submit(_shard_candidates, shard, shared, metric, want, pure=False)
            for shard in self.shards
        ]
        try:
            parts = [future.result() for future in distributed.wait(futures).done]
        except BaseException:
            self.client.cancel(futures)
            raise
        if not parts:
            return [np.empty(0, np.int64) for _ in queries]
        ids = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        if ids.shape[1] > want:
            best = np.argpartition(scores, want - 1, axis=1)[:, :want]
            ids = np.take_along_axis(ids, best, axis=1)
        return [row.astype(np.int64) for row in ids]

    def release(self) -> None:
        """Free the shards on the workers."""
        self.client.cancel(self.shards)
        self.shards = []


def _shard_candidates(
    shard: Any, shared: tuple[np.ndarray, np.ndarray | None], metric: str, want: int
) -> tuple[np.ndarray, np.ndarray]:
    queries, allowed = shared
    return shard_candidates(shard, queries, metric, want, allowed)
