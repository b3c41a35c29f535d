"""``ImageIndex``: one folder of images, its catalog and feature store, and every query on them."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .ann import refresh_built as refresh_built_ann
from .catalog import SCHEMA_VERSION, Catalog, ImagePaths, Record
from .compact import check_vector_dtype, train_quantizers
from .errors import (
    EmptyIndexError,
    ImageDecodeError,
    IndexBusyWarning,
    IndexConfigError,
    IndexFileError,
    IndexReadOnlyError,
    NotFoundError,
    UsageError,
)
from .features import build_features, feature_names, setting_features
from .features.engines import check_model_precision
from .features.thumbnails import THUMB_FORMATS, is_jpeg_rows, row_image, row_jpeg
from .imageio import THUMBNAIL_SIDE, decode, encode_thumbnail
from .indexer import (
    UpdateReport,
    WriteLock,
    batched,
    default_workers,
    plan_rebuild,
    plan_update,
    run_batches,
    scan,
    write_batch,
)
from .progress import progress_bar
from .request import Scope, SearchOptions
from .results import SearchResults
from .searcher import Searcher
from .settings import IndexSettings, default_settings
from .store import FeatureStore

if TYPE_CHECKING:
    from PIL import Image
    from typing_extensions import Unpack

    from .duplicates import DuplicateGroup, DuplicateGroups
    from .evaluation import EvaluationReport
    from .moves import MoveReport
    from .projection import Projection

INDEX_DIRNAME = ".imrec"

UPDATE_WAIT_S = 600.0
"""Seconds ``update()`` waits, by default, for another process's update of the index to end."""

THUMBNAIL_CACHE_BYTES = 8_000_000
"""Most bytes of thumbnails made from image files that one ``ImageIndex`` keeps in memory, so
hovering a point again does not decode its (maybe big) image again; least recently used first out."""


def find_indexes(
    folder: str | os.PathLike[str], max_depth: int = 3, max_folders: int = 10_000
) -> list[Path]:
    """Image folders below ``folder`` (not itself) that hold an index in the default place.

    Looks ``max_depth`` levels down and at most ``max_folders`` folders, skipping hidden ones,
    so pointing it at a home folder stays quick.
    """
    top = Path(folder).expanduser().resolve()
    found: list[Path] = []
    level = [top]
    visited = 0
    for _depth in range(max_depth):
        below = []
        for parent in level:
            try:
                children = sorted(
                    entry.path
                    for entry in os.scandir(parent)
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
                )
            except OSError:
                continue
            for child in map(Path, children):
                visited += 1
                if visited > max_folders:
                    return found
                if (child / INDEX_DIRNAME / "catalog.sqlite").is_file():
                    found.append(child)
                below.append(child)
        level = below
    return found


class ImageIndex:
    """A searchable index of the images under ``root``, stored in ``index_dir``.

    Open with ``ImageIndex.open(root)``; ``update()`` scans and extracts what changed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None = None,
        *,
        rebuild: Sequence[str] = (),
        engine: str = "auto",
        **settings: Unpack[IndexSettings],
    ) -> None:
        from .features.engines import ENGINES

        if engine not in ENGINES:
            raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.engine = engine
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise NotFoundError(f"image folder not found: {self.root}")
        self._store_url: str | None = None
        if isinstance(index_dir, str) and "://" in index_dir:
            index_dir, self._store_url = _local_index_dir(index_dir)
        self.index_dir = (
            Path(index_dir).expanduser().resolve() if index_dir else self.root / INDEX_DIRNAME
        )
        defaults = default_settings()
        unknown = set(settings) - set(defaults)
        if unknown:
            raise TypeError(
                f"unknown setting {sorted(unknown)[0]!r}; choose from {', '.join(defaults)}"
            )
        self._requested: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
        unknown = set(rebuild) - set(feature_names())
        if unknown:
            raise UsageError(
                f"cannot rebuild {sorted(unknown)[0]!r}; choose from {', '.join(feature_names())}"
            )
        self._rebuild = set(rebuild)
        self._catalog: Catalog | None = None
        self._store: FeatureStore | None = None
        self._features: dict[str, Any] | None = None
        self._searcher: Searcher | None = None
        self._thumbnails = _ThumbnailCache(THUMBNAIL_CACHE_BYTES)
        self._image_paths: ImagePaths | None = None
        self.settings = self._resolve_settings(self._stored_settings())

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None = None,
        *,
        rebuild: Sequence[str] = (),
        engine: str = "auto",
        **settings: Unpack[IndexSettings],
    ) -> ImageIndex:
        """Open (or prepare to create) the index of ``root``.

        Settings (``features``, ``backbone``, ``weights``, ``bins``, ``hash_size``,
        ``thumb_size``, ``vector_dtype``, ``model_precision``) default to what the index was built with, or to ``DEFAULT_SETTINGS``
        for a new one. Asking for a different value than the stored one raises
        ``IndexConfigError`` unless ``rebuild`` names the features it changes; the next
        ``update()`` then recomputes them for every image.

        ``engine`` runs the embedding model (``"auto"``, ``"torch"``, ``"onnxruntime"``,
        ``"openvino"``; see ``EmbeddingFeature``). It is not stored: every engine gives the same
        features, so any engine reads and updates any index.
        ``vector_dtype`` (``float32``, ``float16`` or ``int8``) is the copy of float features
        that searches scan; the compact ones pick ``rerank * k`` candidates that are re-ranked
        exactly against the float32 rows (see ``imrec_widgets.compact``). It can change freely;
        ``int8`` trains a quantizer on the index at ``update()``.
        """
        return cls(root, index_dir, rebuild=rebuild, engine=engine, **settings)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        return self.index_dir / "catalog.sqlite"

    @property
    def store_path(self) -> Path:
        return self.index_dir / "features.zarr"

    @property
    def store_location(self) -> str | Path:
        """Where Zarr opens the feature store: ``store_path``, or its URL when opened by URL."""
        return self._store_url or self.store_path

    def exists(self) -> bool:
        """True once the index has been created on disk by ``update()``."""
        return self.catalog_path.exists()

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if not self.exists():
                raise EmptyIndexError(
                    f"no index at {self.index_dir} yet; run idx.update() or `imrec index {self.root}`"
                )
            self._catalog = Catalog(self.catalog_path, read_only=self.read_only)
        return self._catalog

    @property
    def read_only(self) -> bool:
        """True when the index exists on a folder (or mount) this process cannot write: it is
        opened read-only, searches, records, thumbnails and a stored map work, and ``update()``
        raises ``IndexReadOnlyError``."""
        return self.exists() and not (
            os.access(self.index_dir, os.W_OK) and os.access(self.catalog_path, os.W_OK)
        )

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(
                self.store_location, read_only=self.read_only or not self.store_path.exists()
            )
        return self._store

    def _stored_settings(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        catalog = Catalog(self.catalog_path, read_only=self.read_only)
        try:
            stored: dict[str, Any] | None = catalog.get_meta("settings", None, dict)
            return stored
        finally:
            catalog.close()

    def _resolve_settings(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        """Stored settings overridden by the requested ones; a conflict needs a rebuild."""
        # settings added since an index was built take their defaults (what it was built with)
        defaults = default_settings()
        settings = {**defaults, **(stored or {})}
        listed, known = settings["features"], feature_names()
        if not isinstance(listed, list) or not all(name in known for name in listed):
            # a catalog made or changed elsewhere: its names would become array and file names
            raise IndexFileError(
                f"the catalog of {self.index_dir} lists features {listed!r}, not ones this "
                f"version knows ({', '.join(known)}); index the images into a new index_dir"
            )
        if stored is not None and "thumb_format" not in stored and "thumb" in stored["features"]:
            settings["thumb_format"] = "pixels"  # the only layout before the setting existed
        if "thumb" in self._rebuild and settings["thumb_format"] != defaults["thumb_format"]:
            # Rebuilding old thumbnails makes today's (unless other values are asked for).
            for key in ("thumb_format", "thumb_size"):
                self._requested.setdefault(key, defaults[key])
        owners = setting_features()
        for key, value in self._requested.items():
            if key == "features":
                value = _checked_features(value)
            if key == "vector_dtype":
                value = check_vector_dtype(value)
            if key == "model_precision":
                value = check_model_precision(value)
            if key == "thumb_format" and value not in THUMB_FORMATS:
                raise UsageError(
                    f"thumb_format must be one of {', '.join(THUMB_FORMATS)}, not {value!r}"
                )
            affected = owners.get(key, ())
            if stored is not None and affected and settings.get(key) != value:
                if not set(affected) <= self._rebuild:
                    raise IndexConfigError(
                        f"index {self.index_dir} was built with {key}={settings.get(key)!r}, not "
                        f"{value!r}; open it without {key}=, or recompute with "
                        f"ImageIndex.open(..., {key}={value!r}, rebuild={list(affected)!r}) "
                        f"then update() (CLI: `imrec index --rebuild {','.join(affected)}`)"
                    )
            settings[key] = value
        return settings

    def feature_extractors(self) -> dict[str, Any]:
        """The extractors for this index's features (the model is loaded on first use)."""
        if self._features is None:
            self._features = build_features({**self.settings, "engine": self.engine})
        return self._features

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
        self._catalog = None
        self._store = None

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        count = len(self) if self.exists() else 0
        return f"ImageIndex({str(self.root)!r}, {count} images, index_dir={str(self.index_dir)!r})"

    # -- writing --------------------------------------------------------------------------------
    def update(
        self,
        progress: bool = True,
        client: Any = None,
        *,
        workers: int | None = None,
        batch_size: int = 64,
        path_map: Mapping[str, str] | None = None,
        engine: str | None = None,
        wait: float | None = UPDATE_WAIT_S,
    ) -> UpdateReport:
        """Scan the folder and index what is new or changed; mark what vanished as removed.

        Files that failed before are tried again (the error is kept if they fail again). Images
        under a folder that cannot be listed this time are kept as they were, not removed; the
        folder is named in ``report.skipped_dirs``.

        Features named in ``open(..., rebuild=)`` are recomputed for every image.
        ``workers`` processes decode ahead of the model (default: ``indexer.default_workers``:
        one per core, each also embedding, with onnxruntime; cores - 1 otherwise; 0 = none).
        With a Dask ``client`` (``dask.distributed.Client``) its workers read the files, by path,
        and compute every feature; this process scans and writes. ``path_map``
        (``{"/data/images": "/mnt/images"}``) rewrites path prefixes for workers that mount
        the images elsewhere. See ``imrec_widgets.distributed``. ``engine`` replaces the one
        given to ``open`` (for this and later calls).

        When another process is updating the index (or computing its map), this waits up to
        ``wait`` seconds (default ``UPDATE_WAIT_S``; None: as long as it takes; 0: not at all)
        for it to finish, showing whom it waits for when ``progress``, then runs. If it is still
        running after that, nothing is done and nothing is raised: the report says so
        (``report.updated`` is False, ``report.busy`` the other pid) and an ``IndexBusyWarning``
        line is given; searches meanwhile see what the other process has indexed so far. So
        several viewers of one dashboard can all call ``update()`` at once.

        An index on a read-only folder raises ``IndexReadOnlyError`` (it can still be searched).
        """
        started = time.perf_counter()
        self._check_update_args(client, batch_size, path_map, engine)
        wait = _checked_wait(wait)
        self._make_index_dir()
        with self._update_lock(wait, progress, started) as busy:
            if busy is not None:
                return busy
            catalog, store, features, done = self._open_for_update()
            found = scan([self.root], exclude=[self.index_dir])
            plan = plan_update(found, catalog.stat_map(), catalog.next_id(), done)
            catalog.mark_removed(plan.removed)
            report = plan.report(found, str(self.index_dir))
            bar = progress_bar(len(plan.tasks), progress, unit="img", desc="indexing")

            def on_batch(decoded: list[Any]) -> None:
                report.errors += write_batch(store, catalog, features, decoded)
                report.processed += len(decoded)
                bar.update(len(decoded))

            with bar:
                self._run_tasks(
                    plan.tasks, features, on_batch, workers, batch_size, client, path_map
                )
            catalog.set_meta("pending_rebuild", [])
            catalog.set_meta("rebuild_started_at", None)
            self._rebuild = set()
            if self.settings.get("vector_dtype") == "int8":
                changed = bool(report.processed or report.removed)
                train_quantizers(catalog, store, features, only_missing=not changed)
            refresh_built_ann(self.index_dir, catalog, store, features, progress=progress)
        report.seconds = time.perf_counter() - started
        return report

    def _check_update_args(
        self, client: Any, batch_size: int, path_map: Mapping[str, str] | None, engine: str | None
    ) -> None:
        if engine is not None and engine != self.engine:
            from .features.engines import ENGINES

            if engine not in ENGINES:
                raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
            self.engine = engine
            self._features = None
        if path_map and client is None:
            raise UsageError("path_map= rewrites paths for Dask workers; pass client= as well")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {batch_size}")

    def _make_index_dir(self) -> None:
        if self.read_only:
            raise IndexReadOnlyError(
                f"index {self.index_dir} is read-only (a read-only folder or mount): it can be "
                "searched but not updated; copy it to a writable folder to update it"
            )
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexReadOnlyError(
                f"cannot make the index folder {self.index_dir} ({exc.strerror}); keep the index "
                "in a writable folder with index_dir= (CLI: --index-dir)"
            ) from None

    def _open_for_update(self) -> tuple[Catalog, FeatureStore, dict[str, Any], set[int] | None]:
        """Under the write lock: the catalog, store and extractors with today's settings, the
        arrays of a rebuild dropped and created; and, when features are being recomputed, the
        ids already done (written since the rebuild started), else None."""
        self.close()
        catalog = Catalog(self.catalog_path)
        self._catalog = catalog
        stored = catalog.get_meta("settings", None, dict)
        self.settings = self._resolve_settings(stored)
        self._features = None
        features = self.feature_extractors()
        store = FeatureStore(self.store_location)
        self._store = store
        self._cleanup_partial_writes()
        rebuild = plan_rebuild(
            features,
            None if stored is None else stored["features"],
            self._rebuild,
            catalog.get_meta("pending_rebuild", [], list) or [],
            catalog.get_meta("rebuild_started_at", None, (int, float)),
        )
        # Recorded before any array is dropped, so a killed rebuild is finished by the next run.
        # Rows written since the rebuild started (``indexed_at``) are done: a rerun resumes.
        if rebuild.restart:
            catalog.set_meta("rebuild_started_at", time.time())
        catalog.set_meta("pending_rebuild", sorted(rebuild.recompute))
        done = (
            set(
                catalog.ids_indexed_after(
                    catalog.get_meta("rebuild_started_at", None, (int, float))
                )
            )
            if rebuild.recompute
            else None
        )
        for name in rebuild.drop:
            store.delete(name)
        for name, feature in features.items():
            store.ensure(
                name, feature.shape, feature.dtype, rows=getattr(feature, "chunk_rows", None)
            )
        if stored is None:
            catalog.set_meta("schema_version", SCHEMA_VERSION)
            catalog.set_meta("created_at", time.time())
        catalog.set_meta("settings", self.settings)
        catalog.set_meta("feature_config", {n: f.config() for n, f in features.items()})
        catalog.set_meta("root", str(self.root))
        return catalog, store, features, done

    def _run_tasks(
        self,
        tasks: list[tuple[int, Any]],
        features: dict[str, Any],
        on_batch: Callable[[list[Any]], None],
        workers: int | None,
        batch_size: int,
        client: Any,
        path_map: Mapping[str, str] | None,
    ) -> None:
        """Decode and extract ``tasks`` in batches (here, or on a Dask ``client``'s workers)."""
        batches = list(batched(tasks, batch_size))
        model = features.get("embedding")
        if client is None:
            workers = default_workers(model) if workers is None else workers
            run_batches(batches, self.settings, workers, on_batch, model=model)
        else:
            from .distributed import run_batches_dask

            run_batches_dask(client, batches, self.settings, on_batch, path_map=path_map)

    @contextlib.contextmanager
    def _update_lock(
        self, wait: float | None, progress: bool, started: float
    ) -> Iterator[UpdateReport | None]:
        """Holds the write lock for ``update()``; yields None, or, when another process still
        updates after ``wait`` seconds, the report saying so (given as a warning too)."""
        waiting = _Waiting(self.index_dir, progress)
        lock = WriteLock(self.index_dir / "write.lock", wait=wait, on_wait=waiting.show)
        try:
            acquired = lock.acquire()
        finally:
            waiting.close()
        if not acquired:
            import warnings

            busy = UpdateReport(
                busy=lock.holder,
                index_dir=str(self.index_dir),
                seconds=time.perf_counter() - started,
            )
            warnings.warn(str(busy), IndexBusyWarning, stacklevel=4)
            yield busy
            return
        try:
            yield None
        finally:
            lock.release()

    # -- ANN --------------------------------------------------------------------------------------
    def build_ann(
        self,
        feature: str = "embedding",
        metric: str | None = None,
        *,
        progress: bool = False,
        **params: Any,
    ) -> dict[str, Any]:
        """Build (or rebuild) the approximate nearest-neighbour index of ``feature``.

        Needs the ``ann`` extra (``pip install 'imrec-widgets[ann]'``: faiss). A faiss IVF-PQ
        index of every searchable row of a float feature, for ``metric`` (cosine or euclidean;
        default the mode's), stored under ``<index>/ann/`` with a float32 copy of the rows for
        re-ranking. ``search(exact=False)`` then asks it for candidates and re-ranks them
        exactly; ``search()`` does so by itself from ``ann.ANN_MIN_ROWS`` (1,000,000) rows up.
        ``update()`` keeps it current. ``params``: ``nlist``, ``m``, ``nbits``, ``nprobe``,
        ``train_rows``, ``candidates`` (see ``imrec_widgets.ann.default_params``). Returns the
        stamp recorded in the catalog (sizes, parameters, ``build_seconds``).
        """
        from . import ann
        from .features import check_mode_metric

        if feature not in self.settings["features"] or feature == "thumb":
            raise UsageError(
                f"feature {feature!r} is not searchable in this index; it has "
                f"{', '.join(f for f in self.settings['features'] if f != 'thumb')}"
            )
        metric = check_mode_metric(feature, metric)
        ann.require_faiss()
        if not self.exists():
            raise EmptyIndexError(f"no index at {self.index_dir} yet; run idx.update() first")
        self._check_not_rebuilding([feature])
        with WriteLock(self.index_dir / "write.lock"):
            catalog, store = self.catalog, self.store
            config = catalog.get_meta("feature_config", {}, dict).get(feature, {})
            return ann.build(
                self.index_dir, catalog, store, feature, metric, config, progress=progress, **params
            )

    def drop_ann(self, feature: str = "embedding") -> bool:
        """Delete the ANN index of ``feature``; False if there was none."""
        from . import ann

        if not self.exists():
            return False
        with WriteLock(self.index_dir / "write.lock"):
            had = bool(self.catalog.get_meta(ann.stamp_key(feature)))
            self.catalog.set_meta(ann.stamp_key(feature), None)
            ann.remove_unused(self.index_dir, feature, None)
        return had

    def ann_info(self) -> dict[str, dict[str, Any] | None]:
        """Per searchable feature: the stamp of its ANN index (with ``rows_bytes`` on disk), or None."""
        from . import ann

        out: dict[str, dict[str, Any] | None] = {}
        for name in self.settings["features"]:
            if name == "thumb":
                continue
            stamp = (
                self.catalog.get_meta(ann.stamp_key(name), None, dict) if self.exists() else None
            )
            out[name] = dict(stamp) if stamp else None
        return out

    def _cleanup_partial_writes(self) -> None:
        # A writer killed mid-chunk leaves zarr's temporary "*.partial" files; never read, just litter.
        if self.store_path.is_dir():
            for leftover in self.store_path.rglob("*.partial"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    # -- reading -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.catalog.count("ok") if self.exists() else 0

    def ids(self) -> np.ndarray:
        """Ids of every searchable image (status ok), ascending."""
        return np.asarray(self.catalog.ids("ok"), dtype=np.int64)

    def records(self, ids: Sequence[int] | np.ndarray | None = None) -> list[Record]:
        """Catalog rows for ``ids`` (all rows when None)."""
        return self.catalog.records(None if ids is None else [int(i) for i in np.ravel(ids)])

    def path(self, id_: int) -> Path:
        """Absolute path of image ``id_``."""
        return self.paths([id_])[0]

    def paths(self, ids: Sequence[int] | np.ndarray) -> list[Path]:
        """Absolute paths of ``ids``, in order (checked: see ``catalog.ImagePaths``)."""
        return self.image_paths.paths([r.path for r in self.records(ids)])

    @property
    def image_paths(self) -> ImagePaths:
        """The checked way from catalog names to files (every reader of image files uses it)."""
        if self._image_paths is None:
            self._image_paths = ImagePaths(self.root, exclude=[self.index_dir])
        return self._image_paths

    def features(self, name: str, ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Stored feature ``name`` for ``ids`` (all searchable images when None), one row each."""
        if name not in self.settings["features"]:
            raise UsageError(
                f"feature {name!r} is not in this index; it has {', '.join(self.settings['features'])}"
            )
        return self.store.read_rows(name, self.ids() if ids is None else ids)

    def thumbnail(self, id_: int) -> Image.Image:
        """The stored thumbnail of image ``id_`` as a ``PIL.Image`` (aspect kept, no margins)."""
        (record,) = self.records([int(id_)])
        row = self.store.read_rows("thumb", [int(id_)])[0]
        return row_image(row, record.width, record.height)

    def thumbnail_bytes(
        self, ids: Sequence[int] | np.ndarray, format: str = "JPEG", *, side: int = THUMBNAIL_SIDE
    ) -> list[bytes]:
        """Encoded thumbnails of ``ids`` (small JPEG or PNG files), in order.

        The stored ones (longer side ``thumb_size`` pixels, as stored: no re-encoding) when the
        index has the ``thumb`` feature; else made from the image files, their longer side
        ``side`` pixels, kept (up to ``THUMBNAIL_CACHE_BYTES``) until the file changes. An image whose file cannot be read any more gives ``b""`` (shown as an
        empty cell). Thumbnails of an index made before JPEG rows (white-padded squares) come
        without their margins until ``rebuild=["thumb"]``.
        """
        ids = [int(id_) for id_ in np.ravel(ids)]
        if not ids:
            return []
        if "thumb" in self.settings["features"]:
            rows = self.store.read_rows("thumb", ids)
            if is_jpeg_rows(rows) and format.upper() in ("JPEG", "JPG"):
                return [row_jpeg(row) for row in rows]
            records = self.records(ids)
            return [
                encode_thumbnail(row_image(row, record.width, record.height), None, format)
                for row, record in zip(rows, records, strict=True)
            ]
        out = []
        for id_, path in zip(ids, self.paths(ids), strict=True):
            try:
                stat = path.stat()
                key = (id_, side, format, str(path), stat.st_size, stat.st_mtime_ns)
                thumbnail = self._thumbnails.get(key)
                if thumbnail is None:
                    thumbnail = encode_thumbnail(decode(path, min_side=side).image, side, format)
                    self._thumbnails.put(key, thumbnail)
                out.append(thumbnail)
            except (ImageDecodeError, OSError):
                out.append(b"")
        return out

    def errors(self) -> list[tuple[Path, str]]:
        """``(path, message)`` of every file that could not be read."""
        records = self.catalog.records(status="error")
        paths = self.image_paths.paths([r.path for r in records])
        return [(path, r.error or "") for path, r in zip(paths, records, strict=True)]

    def info(self) -> dict[str, Any]:
        """Counts by status, settings, features present and sizes on disk.

        With no index here, ``indexes_below`` lists the folders below ``root`` that have one.
        """
        if not self.exists():
            return {
                "root": str(self.root),
                "index_dir": str(self.index_dir),
                "exists": False,
                "indexes_below": [str(folder) for folder in find_indexes(self.root)],
            }
        catalog = self.catalog
        return {
            "root": str(self.root),
            "index_dir": str(self.index_dir),
            "exists": True,
            "counts": catalog.counts(),
            "rebuild": self._rebuild_progress(),
            "settings": self.settings,
            "feature_config": catalog.get_meta("feature_config", {}, dict),
            "stored": self.store.names(),
            "catalog_bytes": _size_on_disk(self.index_dir, "catalog.sqlite*"),
            "features_bytes": self.store.nbytes_stored(),
            "ann": self._ann_summary(),
        }

    def _ann_summary(self) -> dict[str, dict[str, Any]]:
        """Per feature with an ANN stamp: its sizes, or ``{"invalid": why}`` for a stamp this
        version does not write (searches do not use it; the next ``update()`` rebuilds it)."""
        from . import ann

        out: dict[str, dict[str, Any]] = {}
        for name in self.settings["features"]:
            stamp = self.catalog.get_meta(ann.stamp_key(name)) if name != "thumb" else None
            if not stamp:
                continue
            problem = ann.stamp_problem(stamp, name)
            if problem is not None:
                out[name] = {"invalid": problem}
                continue
            out[name] = {
                key: stamp.get(key)
                for key in ("metric", "count", "bytes", "rows_bytes", "params", "built_at")
            }
        return out

    def _rebuild_progress(self) -> dict[str, Any] | None:
        """``{"features", "done", "total"}`` of a rebuild that is running or was stopped, else None."""
        catalog = self.catalog
        pending = catalog.get_meta("pending_rebuild", [], list) or []
        if not pending:
            return None
        started = catalog.get_meta("rebuild_started_at", None, (int, float))
        done = len(catalog.ids_indexed_after(started)) if started is not None else 0
        return {"features": list(pending), "done": done, "total": catalog.count("ok")}

    def export_tensorboard(
        self, logdir: str | os.PathLike[str], feature: str = "embedding", **options: Any
    ) -> Path:
        """Write ``feature`` as a TensorBoard projector run under ``logdir``; return its folder.

        Options (``run``, ``ids``, ``sprite``, ``max_points``): see
        ``imrec_widgets.export.tensorboard.export_tensorboard``. View with
        ``tensorboard --logdir <logdir>``; TensorFlow is not needed.
        """
        from .export.tensorboard import export_tensorboard

        return export_tensorboard(self, logdir, feature, **options)

    # -- tags and exports ----------------------------------------------------------------------
    def tag(self, ids: Any, name: str) -> int:
        """Give tag ``name`` to images ``ids`` (an id, ids, or search results), in one
        transaction; returns how many did not have it yet.

        A name is trimmed, 1-100 characters, any script, no control character (``TagError``
        otherwise). Tags stay with an image across ``update()``: a changed file keeps them,
        a removed one keeps them hidden and shows them again if it returns at the same path.
        Unknown or removed ids, or an empty selection, are a ``TagError`` and nothing is written.
        """
        from . import tags

        return tags.tag(self, ids, name)

    def untag(self, ids: Any, name: str) -> int:
        """Take tag ``name`` off images ``ids`` (one transaction); returns how many had it."""
        from . import tags

        return tags.untag(self, ids, name)

    def tags(self) -> dict[str, int]:
        """Every tag of a searchable image and how many have it, ``{name: count}`` by name."""
        return self.catalog.tag_counts() if self.exists() else {}

    def tagged(self, name: str | Sequence[str]) -> np.ndarray:
        """Ids of the searchable images with tag ``name`` (or any of several names), ascending."""
        from . import tags

        names = tags.check_tag_names(name, "tagged()")
        return np.asarray(self.catalog.tagged_ids(names), dtype=np.int64)

    def tags_of(self, id_: int) -> list[str]:
        """The tags of searchable image ``id_``, sorted (``TagError`` for an unknown or removed id)."""
        from .errors import TagError
        from .tags import selected_ids

        (wanted,) = selected_ids(id_)
        try:
            self.catalog.require_ok([wanted])
        except KeyError as exc:
            raise TagError(str(exc.args[0])) from None
        return self.catalog.tags_by_id([wanted]).get(wanted, [])

    def export(
        self,
        selection: Any,
        dest: str | os.PathLike[str],
        how: str = "copy",
        layout: str = "by_tag",
    ) -> Any:
        """Write the image files of ``selection`` into folder ``dest``; an ``ExportReport``.

        ``selection``: ids (or search results), or a tag name or list of names (their images).
        ``how``: "copy", "symlink" or "hardlink". ``layout="by_tag"``: one sub-folder per tag
        (the layout torchvision's ``ImageFolder``, Keras and FiftyOne read), an image in the
        folder of each of its tags (of the named ones, when tags were named); ``"flat"``: all
        in ``dest``. ``dest/labels.csv`` lists ``path,tag``. Never overwrites a file: a name
        taken by another file gets ``-1``, ``-2``...; a rerun adds only what is missing. See
        ``imrec_widgets.export.files.export_files``.
        """
        from .export.files import export_files

        return export_files(self, selection, dest, how=how, layout=layout)

    # -- searching ---------------------------------------------------------------------------------
    @property
    def searcher(self) -> Searcher:
        """The query engine; its ``memory_budget`` (bytes) decides in-RAM vs streamed search."""
        if self._searcher is None:
            self._searcher = Searcher(self)
        return self._searcher

    def search(
        self,
        query: Any,
        mode: str = "embedding",
        metric: str | None = None,
        k: int = 10,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        where: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        path_glob: str | None = None,
        tags: str | Sequence[str] | None = None,
        exclude_tags: str | Sequence[str] | None = None,
        negatives: Sequence[int] | np.ndarray | None = None,
        exclude_self: bool = True,
        weights: Mapping[str, Any] | None = None,
        client: Any = None,
        exact: bool | None = None,
        scope: Scope | None = None,
    ) -> SearchResults:
        """The ``k`` indexed images nearest to ``query``, best first.

        ``query``: a path, bytes, PIL image, image array, an indexed id ("more like this"; the
        image itself is left out unless ``exclude_self=False``), a 1-D feature vector, or a list
        of these (one query: mean feature, bitwise majority for hashes). ``metric`` defaults to
        the mode's (see ``MODE_METRICS``). ``ids`` restricts the search to those images;
        ``folder`` to the images below that folder (relative to the root, or absolute inside
        it), ``path_glob`` to paths (relative, ``/``-separated) matching a case-sensitive glob
        like ``"cats/*.jpg"`` (``*`` also crosses ``/``). ``where`` is SQL: a condition on the
        catalog's ``images`` table (``"path LIKE 'cats/%' AND width >= 1000"``; columns in
        ``Catalog.ids_where``), run read-only and stopped after ``WHERE_TIME_BUDGET_S``.
        ``tags`` keeps the images with any of these tags (a name or a list), ``exclude_tags``
        drops those with any of them (see ``tag``). ``scope``: a ``request.Scope`` holding
        these filters, in their place (passing both is a ValueError).

        Relevance feedback: ``query`` lists the images marked relevant (ids or images) and
        ``negatives`` the ids marked not relevant: the ranking then follows a linear classifier
        of relevant vs not relevant and random indexed images, on the normalised features
        (see ``imrec_widgets.feedback``), and the negatives are left out of the results.
        For float modes (embedding, rgb) with the cosine metric.

        ``mode="hybrid"`` ranks by a weighted mean of several modes' distances, each divided by
        that mode's median distance between random pairs of indexed images (so 1.0 means
        "typically far"): ``weights={"embedding": 0.7, "rgb": 0.3}`` (the default), a value may
        be ``(weight, metric)``. See ``Searcher.search_hybrid``.

        With a Dask ``client`` the top-k runs on its workers, one task per row chunk of the
        store, which each worker reads itself (see ``imrec_widgets.distributed.topk_dask``).

        ``exact``: None (default) searches exactly below ``ann.ANN_MIN_ROWS`` (1,000,000)
        searchable rows or when no ANN index of the mode is built (``build_ann``), and through
        the ANN index above; False uses the ANN index whenever one is built for the mode and
        metric (without one: an ``AnnWarning`` line and an exact search); True always searches
        exactly. ANN candidates are re-ranked exactly, so distances are exact and filters and
        removed images are respected; only which images make the top-k is approximate.
        A built ANN index that cannot be used (extra not installed, file damaged or stale) gives
        one ``AnnWarning`` line and an exact search.
        """
        return self.search_many(
            [query],
            mode,
            metric,
            k,
            ids=ids,
            where=where,
            folder=folder,
            path_glob=path_glob,
            tags=tags,
            exclude_tags=exclude_tags,
            negatives=negatives,
            exclude_self=exclude_self,
            weights=weights,
            client=client,
            exact=exact,
            scope=scope,
        )[0]

    def search_many(
        self,
        queries: Sequence[Any],
        mode: str = "embedding",
        metric: str | None = None,
        k: int = 10,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        where: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        path_glob: str | None = None,
        tags: str | Sequence[str] | None = None,
        exclude_tags: str | Sequence[str] | None = None,
        negatives: Sequence[int] | np.ndarray | None = None,
        exclude_self: bool = True,
        weights: Mapping[str, Any] | None = None,
        client: Any = None,
        exact: bool | None = None,
        scope: Scope | None = None,
    ) -> list[SearchResults]:
        """``search`` for each of ``queries``, as one vectorised top-k call."""
        return self.run_search(
            queries,
            SearchOptions(mode, metric, k, negatives, exclude_self, weights, client, exact),
            Scope.of(scope, ids, where, folder, path_glob, tags, exclude_tags),
        )

    def run_search(
        self, queries: Sequence[Any], options: SearchOptions, scope: Scope | None = None
    ) -> list[SearchResults]:
        """One search request: the best ``options.k`` images in ``scope`` (default: all) for
        each query."""
        if self.exists():
            self._check_not_rebuilding(options.modes(self.settings["features"]))
        allowed = None if scope is None else scope.resolve(self)
        if options.hybrid:
            return self.searcher.search_hybrid(list(queries), options, allowed)
        return self.searcher.search_many(list(queries), options, allowed)

    def _check_not_rebuilding(self, modes: Sequence[str]) -> None:
        """ValueError when a feature in ``modes`` is being rebuilt (or a rebuild was stopped):
        its stored rows are a mix of old, new and empty ones until ``update()`` finishes."""
        pending = set(self.catalog.get_meta("pending_rebuild", [], list) or [])
        rebuilding = [mode for mode in modes if mode in pending]
        if rebuilding:
            raise UsageError(
                f"feature {rebuilding[0]!r} is being rebuilt (or its rebuild was stopped before it "
                "finished), so its stored values are incomplete; run idx.update() (`imrec index`) "
                "to finish, then search again"
            )

    # -- measuring and cleaning -----------------------------------------------------------------
    def evaluate(
        self,
        labels: str | os.PathLike[str] | Mapping[int, str] | None = None,
        k: int = 10,
        modes: Sequence[str] | None = None,
        weights: Mapping[str, Any] | None = None,
    ) -> EvaluationReport:
        """Retrieval quality of every mode and metric on labelled images: an ``EvaluationReport``.

        Labels come from each image's parent folder (None), its tag (``"tags"``: images with
        exactly one tag), a CSV of ``id,label`` or ``path,label``, or a ``{id: label}`` mapping. Each labelled image queries the others;
        rows give precision@k, recall@k, mAP@k and ms per query for each mode/metric, hybrid
        (``weights``) and a seeded random ranking. See ``imrec_widgets.evaluation.evaluate``.
        """
        from .evaluation import evaluate

        return evaluate(self, labels=labels, k=k, modes=modes, weights=weights)

    def duplicates(
        self, mode: str = "dhash", max_distance: float | None = None, *, metric: str | None = None
    ) -> DuplicateGroups:
        """Groups of near-identical images (``DuplicateGroups``), largest first.

        Images within ``max_distance`` of each other under ``mode`` (default 4 bits for hashes)
        are linked, as are byte-identical files; each group is a connected set of links. See
        ``imrec_widgets.duplicates.find_duplicates``.
        """
        from .duplicates import find_duplicates

        return find_duplicates(self, mode=mode, max_distance=max_distance, metric=metric)

    def move_duplicates(
        self,
        groups: Sequence[DuplicateGroup] | None = None,
        dest: str | os.PathLike[str] | None = None,
        *,
        keepers: Mapping[int, int] | None = None,
        dry_run: bool = False,
    ) -> MoveReport:
        """Move every image but one of each duplicate group out of the collection; delete nothing.

        ``groups`` defaults to ``duplicates()``; ``keepers`` maps a group's position to the id to
        keep (default: the most pixels, then the oldest file). Files go to ``dest`` (default
        ``<root>/.imrec-moved/<date>/``) under their relative paths, never over an existing
        file; each move is logged first, so a crash is settled by the next call and
        ``undo_moves()`` puts the files back. ``dry_run`` returns the plan as ``report.moved``
        without touching anything.
        """
        from . import moves

        if groups is None:
            groups = self.duplicates()
        root = self.root
        target = moves.check_destination(
            Path(dest) if dest is not None else moves.default_destination(root),
            root,
            self.index_dir,
        )
        planned = moves.plan_moves(self.catalog, root, groups, target, keepers)
        if dry_run:
            return moves.MoveReport(moved=planned)
        with WriteLock(self.index_dir / "write.lock"):
            return moves.move(self.catalog, root, planned, target)

    def undo_moves(self, batch: str | None = None) -> MoveReport:
        """Put back files that ``move_duplicates`` moved (only ``batch``'s when given), newest
        first; those that come back unchanged are searchable again at once."""
        from . import moves

        with WriteLock(self.index_dir / "write.lock"):
            return moves.undo(self.catalog, self.root, batch)

    # -- maps --------------------------------------------------------------------------------------
    def umap(
        self,
        feature: str = "embedding",
        *,
        refit: bool = False,
        progress: bool | Callable[[str, int, int], None] = False,
        **params: Any,
    ) -> Projection:
        """Compute or extend the cached 2-D UMAP map of ``feature`` with cluster labels.

        ``progress``: True shows the stages as they run, a callable gets ``(stage, done,
        total)``. On a read-only index the stored map is returned as it is (``ProjectionError``
        when there is none). See ``imrec_widgets.projection.compute`` for ``params`` (n_neighbors, min_dist,
        pca_dims, sample_size, clusters, min_cluster_size, random_state).
        """
        from . import projection

        if self.read_only:  # the stored map as it is: nothing can be added to it here
            if refit:
                raise IndexReadOnlyError(
                    f"index {self.index_dir} is read-only: its map cannot be refitted here"
                )
            return projection.load_or_compute(self, feature)
        return projection.compute(self, feature, refit=refit, progress=progress, **params)

    def projection(self, feature: str = "embedding") -> Projection:
        """The cached map of ``feature`` (``ProjectionError`` if it was never computed)."""
        from . import projection

        return projection.load(self, feature)


def _checked_features(names: Sequence[str]) -> list[str]:
    known = feature_names()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UsageError(f"unknown feature {unknown[0]!r}; choose from {', '.join(known)}")
    if not names:
        raise UsageError(f"choose at least one feature of {', '.join(known)}")
    return [name for name in known if name in set(names)]


def _local_index_dir(url: str) -> tuple[Path, str]:
    """A ``file://`` index URL as (local folder for the catalog, URL Zarr opens the store by)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise UsageError(
            f"index_dir {url!r}: the catalog is SQLite and needs a local folder, a path or a "
            "file:// URL"
        )
    return Path(unquote(parsed.path)), url.rstrip("/") + "/features.zarr"


def _checked_wait(wait: float | bool | None) -> float | None:
    """``update(wait=)`` as seconds, or None: as long as it takes (True is None, False is 0)."""
    if isinstance(wait, bool):
        return None if wait else 0.0
    if wait is not None and not wait >= 0:
        raise UsageError(f"wait= is seconds to wait (>= 0) or None, not {wait!r}")
    return wait


def _size_on_disk(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


class _Waiting:
    """Shows, while ``update()`` waits for another process's update, whom it waits for.

    In a notebook the display is removed afterwards, not just closed: a closed bar's output
    reads "Error displaying widget: model not found" wherever the output is shown later (a
    Voila dashboard, a saved notebook reloaded).
    """

    def __init__(self, index_dir: Path, enabled: bool) -> None:
        self.index_dir = index_dir
        self.enabled = enabled
        self._bar: Any = None
        self._displays: Any = None

    def show(self, holder: str, waited: float) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from .progress import RemovedDisplays

            self._displays = RemovedDisplays()
            self._bar = progress_bar(
                None,
                True,
                desc=f"waiting for pid {holder} to finish updating {self.index_dir}",
                bar_format="{desc} ({elapsed})",
                leave=False,
            )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._displays is not None:
            self._displays.remove()
            self._displays = None


class _ThumbnailCache:
    """Encoded thumbnails by key, at most ``max_bytes`` of them, least recently used first out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """Bytes held now (at most ``max_bytes``)."""
        return self._bytes

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _key, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
