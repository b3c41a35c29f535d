"""Scan -> decode -> extract -> write: the incremental, resumable indexing pipeline.

Decoding and the cheap features run in worker processes, a bounded number of batches ahead of
the model, which runs in the writing process. Each batch's features are written to Zarr before
its catalog rows commit in one transaction, so a killed run redoes at most one batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import stat
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Catalog, Entry, special_folder
from .errors import (
    EngineFallbackWarning,
    EngineUnavailableError,
    ImageDecodeError,
    IndexLockedError,
    IndexReadOnlyError,
)
from .imageio import DecodedImage, decode, has_image_suffix, sniff_image
from .store import FeatureStore

DECODE_MIN_SIDE = 256
"""JPEGs are draft-decoded no smaller than this (shorter side), enough for every feature."""


@dataclass
class ScannedFile:
    """A file found by the scan: catalog path (relative to the root when inside it)."""

    path: str
    abspath: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: dict[str, ScannedFile]
    skipped_dirs: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    """Catalog paths of folders (ending in ``/``; ``""`` for everything) and files that could not
    be read this time: what the catalog holds under them is kept as it was, not marked removed."""

    skipped: list[str] = field(default_factory=list)
    """Entries passed over without being opened: not regular files (pipes, devices, sockets),
    dangling links, loops of links, links into ``catalog.SPECIAL_FOLDERS``."""

    def kept(self, path: str) -> bool:
        """Whether catalog ``path`` lies in something that could not be listed this scan."""
        return any(
            path == p or ((p == "" or p.endswith("/")) and path.startswith(p))
            for p in self.unlisted
        )


@dataclass
class UpdateReport:
    """What one ``ImageIndex.update()`` did."""

    new: int = 0
    changed: int = 0
    removed: int = 0
    errors: int = 0
    unchanged: int = 0
    rebuilt: int = 0
    retried: int = 0
    processed: int = 0
    seconds: float = 0.0
    skipped_dirs: list[str] = field(default_factory=list)
    skipped: int = 0
    """Entries passed over unopened (pipes, devices, dangling links, link loops, ``/proc``)."""
    busy: str | None = None
    """When ``update()`` gave up waiting: the pid of the process still updating; nothing was
    done (``updated`` is False)."""
    index_dir: str = ""

    @property
    def updated(self) -> bool:
        """False when another process was still updating and this update did not run."""
        return self.busy is None

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        if self.busy is not None:
            return (
                f"not updated: pid {self.busy} was still updating {self.index_dir or 'the index'} "
                f"after {self.seconds:.0f} s of waiting; searches see what it has indexed so far "
                "(call update() again later, or with a longer wait=)"
            )
        return (
            f"indexed {self.processed} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s): {self.new} new, {self.changed} changed, "
            f"{self.removed} removed, {self.errors} errors, {self.unchanged} unchanged"
            + (f", {self.rebuilt} rebuilt" if self.rebuilt else "")
            + (f", {self.retried} retried" if self.retried else "")
            + (
                f", {len(self.skipped_dirs)} folders unreadable (kept as they were)"
                if self.skipped_dirs
                else ""
            )
            + (
                f", {self.skipped} entries skipped (not regular files: pipes, devices, "
                "dangling or looping links, system folders)"
                if self.skipped
                else ""
            )
        )


# -- plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RebuildPlan:
    """Which features an ``update()`` recomputes for every image, and how it resumes."""

    recompute: frozenset[str]
    """Features recomputed for every image: asked to rebuild, newly added, or still pending
    from a rebuild that was stopped."""
    drop: frozenset[str]
    """Stored arrays deleted before the update (a stopped rebuild's are kept: it resumes)."""
    restart: bool
    """True when the rebuild starts now (``rebuild_started_at`` is set again); False when it
    resumes a stopped one, so rows written since it started are not redone."""


def plan_rebuild(
    features: Iterable[str],
    stored_features: Iterable[str] | None,
    rebuild: Iterable[str],
    pending: Iterable[str],
    started_at: float | None,
) -> RebuildPlan:
    """The ``RebuildPlan`` of an update: ``features`` the index has now, ``stored_features``
    those it was built with (None: a new index), ``rebuild`` those asked to be recomputed,
    ``pending`` and ``started_at`` what the catalog recorded of a rebuild not yet finished."""
    wanted = set(features)
    backfill = wanted - set(stored_features) if stored_features is not None else set()
    drop = (set(rebuild) & wanted) | backfill
    waiting = set(pending)
    recompute = drop | waiting
    restart = bool(recompute) and (bool(recompute - waiting) or started_at is None)
    return RebuildPlan(frozenset(recompute), frozenset(drop), restart)


@dataclass
class UpdatePlan:
    """What an ``update()`` does with each file: ``tasks`` (id, file) to decode and write, in
    path order, and ``removed`` ids to mark removed; the counts go to its ``UpdateReport``."""

    tasks: list[tuple[int, ScannedFile]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    retried: int = 0
    rebuilt: int = 0
    unchanged: int = 0

    def report(self, found: ScanResult, index_dir: str) -> UpdateReport:
        """The report this plan starts (``processed``, ``errors`` are counted as it runs)."""
        return UpdateReport(
            new=self.new,
            changed=self.changed,
            retried=self.retried,
            rebuilt=self.rebuilt,
            unchanged=self.unchanged,
            removed=len(self.removed),
            skipped_dirs=found.skipped_dirs,
            skipped=len(found.skipped),
            index_dir=index_dir,
        )


def plan_update(
    found: ScanResult,
    known: dict[str, tuple[int, int, int, str]],
    next_id: int,
    done: Iterable[int] | None = None,
) -> UpdatePlan:
    """Compare a scan with the catalog (``known``: path -> (id, size, mtime_ns, status), as
    ``Catalog.stat_map``): new files get ids from ``next_id``; changed files, files that
    returned, and files that failed before are redone; while features are recomputed
    (``done`` given: the ids written since that rebuild started), so is every other ok image.
    Catalog paths no longer found are removed, unless they lie in something the scan could
    not list (``ScanResult.kept``)."""
    plan = UpdatePlan()
    rebuilding = done is not None
    finished = set(done or ())
    for path in sorted(found.files):
        scanned = found.files[path]
        if path not in known:
            plan.tasks.append((next_id, scanned))
            next_id += 1
            plan.new += 1
            continue
        id_, size, mtime_ns, status = known[path]
        if status == "removed" or size != scanned.size or mtime_ns != scanned.mtime_ns:
            plan.tasks.append((id_, scanned))
            plan.changed += 1
        elif status == "error":  # transient failures get another chance every run
            plan.tasks.append((id_, scanned))
            plan.retried += 1
        elif rebuilding and status == "ok" and id_ not in finished:
            plan.tasks.append((id_, scanned))
            plan.rebuilt += 1
        else:
            plan.unchanged += 1
    plan.removed = [
        id_
        for path, (id_, _size, _mtime, status) in known.items()
        if path not in found.files and status != "removed" and not found.kept(path)
    ]
    return plan


# -- scan -------------------------------------------------------------------------------------
def catalog_path(abspath: str, root: str) -> str:
    """The catalog's name for a file: POSIX path relative to ``root``, absolute outside it."""
    relative = os.path.relpath(abspath, root)
    if relative.startswith(os.pardir + os.sep) or relative == os.pardir:
        return Path(abspath).as_posix()
    return Path(relative).as_posix()


def _real(path: str) -> str:
    """``os.path.realpath``, or the absolute path where a link on the way cannot be read."""
    try:
        return os.path.realpath(path)
    except OSError:
        return os.path.abspath(path)


def scan(
    roots: Sequence[str | os.PathLike[str]], exclude: Iterable[str | os.PathLike[str]] = ()
) -> ScanResult:
    """Walk ``roots`` for image files (by suffix, or by content for files without a suffix).

    Hidden files and folders, and the folders in ``exclude`` (the index itself), are skipped;
    symlinked folders are followed once (loops are cut); unreadable folders are reported, not fatal.
    Only regular files are taken (checked after following links, before any is opened): pipes,
    devices, sockets, dangling links, loops of links and anything under ``catalog.SPECIAL_FOLDERS``
    are counted in ``skipped`` and never opened. No single entry can stop the scan.
    """
    primary = os.path.realpath(roots[0])
    excluded = {os.path.realpath(p) for p in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    result = ScanResult(files={})
    stack = [os.path.abspath(os.path.expanduser(r)) for r in reversed(roots)]

    while stack:
        folder = stack.pop()
        real_folder = _real(folder)
        if special_folder(real_folder):
            result.skipped.append(folder)
            continue
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in seen_dirs or real_folder in excluded:
                continue
            seen_dirs.add(key)
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError:
            name = catalog_path(real_folder, primary)
            result.skipped_dirs.append(folder)
            result.unlisted.append("" if name == "." else name + "/")
            continue
        subfolders = []
        for entry in listing:
            if entry.name.startswith("."):
                continue
            name = catalog_path(os.path.join(real_folder, entry.name), primary)
            try:
                if entry.is_symlink() and special_folder(_real(entry.path)):
                    result.skipped.append(entry.path)
                    continue
                st = entry.stat()  # follows links
                if stat.S_ISDIR(st.st_mode):
                    subfolders.append(entry.path)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    result.skipped.append(entry.path)
                    continue
                if not has_image_suffix(entry.name) and (
                    Path(entry.name).suffix or st.st_size == 0 or not sniff_image(entry.path)
                ):
                    continue
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP) and entry.is_symlink():
                    result.skipped.append(entry.path)  # a dangling link, or a loop of links
                else:  # a flaky entry (a file or a folder): what the catalog holds there is kept
                    result.unlisted += [name, name + "/"]
                continue
            result.files[name] = ScannedFile(name, entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subfolders))
    return result


# -- per-image work (runs in worker processes) -------------------------------------------------
_EXTRACTORS: dict[str, dict[str, Any]] = {}


def worker_setup(settings: dict[str, Any]) -> dict[str, Any]:
    key = repr(sorted(settings.items()))
    if key not in _EXTRACTORS:
        from .features import build_features

        _EXTRACTORS.clear()
        _EXTRACTORS[key] = build_features(settings)
    return _EXTRACTORS[key]


@dataclass
class Decoded:
    """One file after decoding: catalog entry plus its cheap features and model input.

    ``embedding`` is set when the model already ran where the file was decoded (a Dask
    worker); the writer then stores it as is instead of running ``model_input`` through its model.
    """

    entry: Entry
    features: dict[str, np.ndarray] | None = None
    model_input: np.ndarray | None = None
    embedding: np.ndarray | None = None


def decode_one(
    features: dict[str, Any], source: Any
) -> tuple[DecodedImage, dict[str, np.ndarray], np.ndarray | None]:
    """Decode ``source`` once and compute every cheap feature plus the model's input array."""
    decoded = decode(source, min_side=DECODE_MIN_SIDE)
    values = {
        name: feature.extract_one(decoded.image)
        for name, feature in features.items()
        if name != "embedding"
    }
    model_input = features["embedding"].prepare(decoded.image) if "embedding" in features else None
    return decoded, values, model_input


def process_batch(
    settings: dict[str, Any], tasks: list[tuple[int, ScannedFile]], embed: bool = False
) -> list[Decoded]:
    """Decode each file of a batch and compute its cheap features; errors become entries.

    ``embed``: embed them here too, on one thread, if the model runs here on its engine (never
    on a torch fallback in a forked worker); otherwise the writer's model embeds them.
    """
    features = worker_setup(settings)
    out = []
    for id_, scanned in tasks:
        try:
            decoded, values, model_input = decode_one(features, scanned.abspath)
        except (ImageDecodeError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            out.append(
                Decoded(Entry(id_, scanned.path, scanned.size, scanned.mtime_ns, error=error))
            )
            continue
        entry = Entry(
            id_,
            scanned.path,
            scanned.size,
            scanned.mtime_ns,
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
        )
        out.append(Decoded(entry, values, model_input))
    model = features.get("embedding") if embed else None
    if model is not None and model.engine_used != "torch":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EngineFallbackWarning)  # the writer's model warns
            with model.using_threads(1):
                model.load()
                if model.engine_used != "torch":
                    embed_decoded(model, out)
    return out


# -- the writer ---------------------------------------------------------------------------------
def batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


WORKER_ENGINES = ("onnxruntime",)
"""Engines that each worker process runs itself (measured, 768 2 MP JPEGs on 2 cores: ONNX
Runtime 83 vs 73 images/s with the model in the writing process). Not torch (it must not run
in a process forked from one using it, and loads slowly) nor OpenVINO (compiling per worker
made it slower: 45 vs 63 images/s on 256)."""

DECODE_CHUNK = 16
"""Files per decoding task: the model starts on the first few files, not after a whole batch."""


def run_batches(
    batches: list[list[tuple[int, ScannedFile]]],
    settings: dict[str, Any],
    workers: int,
    on_batch: Callable[[list[Decoded]], None],
    model: Any = None,
) -> None:
    """Process ``batches`` in order, ``workers`` processes decoding ahead (0 = in this process).

    Workers decode chunks of ``DECODE_CHUNK`` files. With ``model`` (the embedding feature) on
    one of ``WORKER_ENGINES`` and a worker per core, each worker also embeds its chunks (one
    thread each) and this process only writes; otherwise the model embeds each chunk here as
    it arrives, on the cores the workers leave free, and on every core once the workers have
    nothing left to decode. ``on_batch`` gets each batch whole, in order.
    """
    if workers <= 0 or sum(map(len, batches)) <= DECODE_CHUNK:
        for batch in batches:
            on_batch(process_batch(settings, batch))
        return
    import multiprocessing

    # fork: workers start in milliseconds and never re-run the user's script (spawn would).
    # They never run torch (PIL/numpy/imagehash, and ONNX Runtime where they embed), so a parent
    # holding torch is safe.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    cores = os.cpu_count() or 1
    # with a worker per core each embeds too; with fewer the model takes the cores they leave
    embed = model is not None and model.engine_used in WORKER_ENGINES and workers >= cores
    if embed:
        try:  # exported (with torch) here, once, before the workers fork: they only read it
            model.graph_file()
        except EngineUnavailableError:
            embed = False  # the model here falls back to torch, with its warning
        else:
            settings = {**settings, "engine": model.engine_used}
    chunks = [
        (chunk, start + DECODE_CHUNK >= len(batch))
        for batch in batches
        for start, chunk in zip(
            range(0, len(batch), DECODE_CHUNK), batched(batch, DECODE_CHUNK), strict=True
        )
    ]
    ahead = 2 * workers * -(-max(map(len, batches)) // DECODE_CHUNK)
    with (
        model.using_threads(max(1, cores - workers))
        if model is not None
        else contextlib.nullcontext(),
        ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        ) as pool,
    ):
        pending: deque[tuple[Future[list[Decoded]], bool]] = deque()
        queue = iter(chunks)
        exhausted = False

        def submit() -> None:
            nonlocal exhausted
            while len(pending) < ahead and not exhausted:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                else:
                    pending.append((pool.submit(process_batch, settings, item[0], embed), item[1]))

        try:
            submit()
            if model is not None and not embed:  # load while the workers decode the first chunks
                model.load()
                with model.using_threads(cores):  # for the tail, when the workers are done
                    model.load()
            done: list[Decoded] = []
            while pending:
                future, last = pending.popleft()
                decoded = future.result()
                submit()
                if model is not None:  # what the workers did not embed
                    idle = exhausted and all(f.done() for f, _ in pending)
                    embed_decoded(model, decoded, cores if idle else None)
                done += decoded
                if last:
                    on_batch(done)
                    done = []
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise


def embed_decoded(model: Any, decoded: list[Decoded], threads: int | None = None) -> None:
    """Embed the decoded files that have a model input (on ``threads``, default the current
    ones); the writer stores the embeddings as they are."""
    todo = [d for d in decoded if d.model_input is not None]
    if not todo:
        return
    with model.using_threads(threads) if threads else contextlib.nullcontext():
        values = model.embed(model_inputs(todo))
    for d, value in zip(todo, values, strict=True):
        d.embedding, d.model_input = value, None


INHERITED_FDS: set[int] = set()
"""File descriptors (the index's write lock) that forked workers must close at start."""


def _worker_init(parent_pid: int) -> None:
    for fd in INHERITED_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    if sys.platform == "linux":
        # Die with the writer: a SIGKILLed writer must not leave decoding processes behind.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)


def default_workers(model: Any = None) -> int:
    """Worker processes: one per core where each decodes and embeds (``WORKER_ENGINES``) or there
    is no model; else one core fewer, left to the model in the writing process."""
    cores = os.cpu_count() or 1
    return cores if model is None or model.engine_used in WORKER_ENGINES else max(1, cores - 1)


def write_batch(
    store: FeatureStore,
    catalog: Catalog,
    features: dict[str, Any],
    decoded: list[Decoded],
) -> int:
    """Store one batch: features to Zarr first, then the catalog rows in one transaction."""
    ok = [d for d in decoded if d.features is not None]
    if ok:
        ids = np.array([d.entry.id for d in ok], dtype=np.int64)
        for name in features:
            if name == "embedding":
                values = _embeddings(features["embedding"], ok)
            else:
                values = np.stack([d.features[name] for d in ok if d.features is not None])
            store.write_rows(name, ids, values)
    catalog.commit_entries(d.entry for d in decoded)
    return len(decoded) - len(ok)


def _embeddings(feature: Any, ok: list[Decoded]) -> np.ndarray:
    """Embeddings of ``ok``: precomputed ones as they are, the rest through the local model."""
    missing = [i for i, d in enumerate(ok) if d.embedding is None]
    if len(missing) == len(ok):
        return np.asarray(feature.embed(model_inputs(ok)))
    values = np.empty((len(ok), *feature.shape), dtype=feature.dtype)
    for i, d in enumerate(ok):
        if d.embedding is not None:
            values[i] = d.embedding
    if missing:
        values[missing] = feature.embed(model_inputs([ok[i] for i in missing]))
    return values


def model_inputs(decoded: Sequence[Decoded]) -> np.ndarray:
    """The model inputs of decoded files, as one batch (each must have one)."""
    inputs = [d.model_input for d in decoded]
    if any(x is None for x in inputs):
        raise ValueError("a decoded file has no model input (the index has no embedding feature)")
    return np.stack([x for x in inputs if x is not None])


def _not_a_plain_lock(path: Path) -> str:
    return (
        f"{path} is a link or not a plain file, so the index cannot be locked safely; "
        "remove it (it holds nothing but a pid) and run again"
    )


class WriteLock:
    """The one writer of an index: an exclusive ``flock`` on ``<index>/write.lock``.

    ``with WriteLock(index_dir / "write.lock"):`` raises ``IndexLockedError`` (naming the pid
    holding it) when another process writes; the OS releases it if the holder dies. Readers
    never take it. ``update()`` and map computation hold it while they write. ``wait`` seconds
    (None: no limit) it first waits for the other writer to finish, calling
    ``on_wait(holder_pid, seconds_waited)`` between tries. A folder where the lock file cannot
    be made (read-only) raises ``IndexReadOnlyError``.
    """

    POLL_S = 0.2
    """Seconds between two tries for a lock another process holds."""

    def __init__(
        self,
        path: Path,
        *,
        wait: float | None = 0.0,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.path = path
        self.wait = wait
        self.on_wait = on_wait
        self.holder = ""
        """The pid (as written in the lock file) of the writer last found holding the lock."""
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock, waiting up to ``wait`` seconds; False if another writer still holds it."""
        import fcntl

        try:
            # Never through a link: a planted write.lock -> ~/.bashrc would be truncated.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IndexLockedError(_not_a_plain_lock(self.path)) from None
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise IndexReadOnlyError(
                    f"index {self.path.parent} is read-only ({exc.strerror}): it can be searched "
                    "but not written; copy it to a writable folder to update it"
                ) from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise IndexLockedError(_not_a_plain_lock(self.path))
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            self.holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            waited = time.monotonic() - started
            if self.wait is not None and waited >= self.wait:
                os.close(fd)
                return False
            if self.on_wait is not None:
                self.on_wait(self.holder, waited)
            time.sleep(self.POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        INHERITED_FDS.add(fd)
        return True

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            INHERITED_FDS.discard(self._fd)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        if not self.acquire():
            raise IndexLockedError(
                f"index {self.path.parent} is locked by pid {self.holder} (another update is "
                "running); wait for it to finish"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
