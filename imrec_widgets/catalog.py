"""SQLite catalog: one row per image file; its id is the row of every feature array."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IndexDataWarning, IndexFileError, UnknownImageError, UsageError

SCHEMA_VERSION = 1

WHERE_TIME_BUDGET_S = 10.0
"""Longest a ``where=`` condition may run (seconds) before it is stopped with a ValueError."""

_PROGRESS_STEPS = 5_000
"""SQLite virtual-machine steps between two checks of the time budget."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'removed')),
    error TEXT,
    indexed_at REAL
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS moves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('planned', 'moved', 'undoing', 'restored', 'cancelled')),
    changed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS moves_state ON moves(state);
CREATE TABLE IF NOT EXISTS tags (
    image_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    tagged_at REAL NOT NULL,
    PRIMARY KEY (image_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_name ON tags(name, image_id);
"""


@dataclass(frozen=True)
class Record:
    """One catalog row."""

    id: int
    path: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    format: str | None
    status: str
    error: str | None
    indexed_at: float | None


@dataclass(frozen=True)
class Entry:
    """What the indexer learnt about one file, ready to be committed."""

    id: int
    path: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class MoveRow:
    """One logged file move: ``source`` as the catalog names it, ``destination`` absolute."""

    seq: int
    batch: str
    image_id: int
    source: str
    destination: str
    state: str
    changed_at: float


_MOVE_COLUMNS = "seq, batch, image_id, source, destination, state, changed_at"

_COLUMNS = "id, path, size, mtime_ns, width, height, format, status, error, indexed_at"


def stored_path(path: str) -> str | bytes:
    """How the catalog stores ``path``: as text, or as the file system's bytes (a BLOB) when the
    name is not valid UTF-8 (``os.fsdecode`` gives it back, lossless)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def loaded_path(value: str | bytes) -> str:
    """The path ``stored_path`` stored (non-UTF-8 bytes as ``surrogateescape`` characters)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def contained_path(path: str) -> str:
    """``path`` when it is a name ``update()`` writes: a normalized POSIX path, relative to the
    root, or absolute for a file reached through a linked folder (``indexer.catalog_path``).
    Anything else, which only a crafted catalog holds (a ``..``, ``.`` or empty part, a NUL),
    becomes a hidden name inside the root that names no file, ``.../<its other parts>``: no
    reader (thumbnails, duplicate hashing, moves, exports) follows it out of the root."""
    body = path[1:] if path.startswith("/") else path
    parts = body.split("/")
    if "\x00" not in path and all(part not in ("", ".", "..") for part in parts):
        return path
    return "/".join(["...", *(p.replace("\x00", "") for p in parts if p not in ("", ".", ".."))])


SPECIAL_FOLDERS = ("/proc", "/sys", "/dev")
"""Folders of the system's pseudo file systems: never walked (a link into them is skipped), by
the scan (``indexer.scan``) and by ``linked_folders`` alike."""


def special_folder(real: str) -> bool:
    """Whether ``real`` lies under ``SPECIAL_FOLDERS`` (``/dev/shm``, a RAM disk, does not)."""
    return (
        sys.platform == "linux"
        and any(real == top or real.startswith(top + "/") for top in SPECIAL_FOLDERS)
        and not (real == "/dev/shm" or real.startswith("/dev/shm/"))
    )


def linked_folders(root: Path, exclude: Iterable[Path] = ()) -> dict[str, str]:
    """``{real folder: link}`` for every link to a folder that a scan of ``root`` follows now
    (hidden names, the ``exclude`` folders and system folders skipped, each folder once), links
    inside linked folders included: the folders whose files ``update()`` names by absolute path."""
    excluded = {os.path.realpath(p) for p in exclude}
    found: dict[str, str] = {}
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError:
            continue
        for entry in listing:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_dir():  # follows links
                    continue
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if special_folder(real) or real in excluded:
                        continue
                    found.setdefault(real, entry.path)
                elif os.path.realpath(entry.path) in excluded:
                    continue
            except OSError:
                continue
            stack.append(entry.path)
    return found


class ImagePaths:
    """Where the files a catalog names are, checked against the file system before any is read.

    A catalog may come from someone else, so a name from it is used only where ``update()``
    could have found a file: a relative name (normalized by ``contained_path``: no ``..``)
    under the root, or an absolute one (written for files reached through a linked folder)
    inside a folder that a link under the root, followed the way the scan follows them, really
    points to now. Any other name gives ``<root>/.../<its parts>``: inside the root, naming no
    file, so every reader treats it as missing; one ``IndexDataWarning`` line per call says so.
    The links are looked up (one walk of the folders) only when an absolute name is met, and
    each one used is checked again on every call.
    """

    def __init__(self, root: Path, exclude: Iterable[Path] = ()) -> None:
        self.root = Path(root)
        self._exclude = [Path(p) for p in exclude]
        self._root_real = os.path.realpath(self.root)
        self._links: dict[str, str] | None = None

    def _linked_folder(self, name: str, checked: dict[str, bool]) -> bool:
        if self._links is None:
            self._links = linked_folders(self.root, self._exclude)
        for real, link in self._links.items():
            if name.startswith(real.rstrip("/") + "/"):
                if real not in checked:  # the link still leads there
                    checked[real] = os.path.realpath(link) == real
                if checked[real]:
                    return True
        return False

    def resolve(self, names: Sequence[str]) -> list[Path | None]:
        """The path of each name, None where it is refused (one warning for all)."""
        resolved = self._resolve(names)
        refused = [name for name, path in zip(names, resolved, strict=True) if path is None]
        if refused:
            warnings.warn(
                f"{len(refused)} image path(s) of this catalog lead out of {self.root} (first: "
                f"{refused[0]!r}); they are treated as missing files: a catalog made or changed "
                "elsewhere names files the scan of this folder never finds",
                IndexDataWarning,
                stacklevel=3,
            )
        return resolved

    def _resolve(self, names: Sequence[str]) -> list[Path | None]:
        out: list[Path | None] = []
        checked: dict[str, bool] = {}
        refreshed = False
        for name in names:
            if not name.startswith("/"):
                out.append(None if name.startswith(".../") else self.root / name)
                continue
            if name.startswith(self._root_real.rstrip("/") + "/"):
                out.append(Path(name))
                continue
            found = self._linked_folder(name, checked)
            if not found and not refreshed:  # links may have changed since the last walk
                self._links, checked, refreshed = None, {}, True
                found = self._linked_folder(name, checked)
            out.append(Path(name) if found else None)
        return out

    def paths(self, names: Sequence[str]) -> list[Path]:
        """The path of each name; a refused one as ``<root>/.../<its parts>`` (one warning)."""
        resolved = self.resolve(names)
        return [
            path if path is not None else self.root / "..." / name.lstrip("/").removeprefix(".../")
            for name, path in zip(names, resolved, strict=True)
        ]


def _record(row: Sequence[Any]) -> Record:
    return Record(row[0], contained_path(loaded_path(row[1])), *row[2:])


def _text(message: str | None) -> str | None:
    """``message`` as valid UTF-8 text (a file name's undecodable bytes as ``\\xNN``)."""
    if message is None:
        return None
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the catalog at ``path``, one that works on a read-only folder.

    ``mode=ro`` reads a WAL database while its ``-shm`` file exists or can be made; on a
    read-only folder after a clean close neither holds, and the database is opened
    ``immutable=1`` (no locks, no WAL: nothing can change it there).
    """
    uri = Path(os.path.abspath(path)).as_uri()
    for options in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=30, check_same_thread=False)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            db.close()
            if "immutable" in options:
                raise
            continue
        return db
    raise AssertionError("unreachable")


def refuse_linked_files(path: Path) -> None:
    """Raise ``IndexFileError`` when the catalog at ``path`` or its ``-wal``, ``-shm`` or
    ``-journal`` file is a symbolic link, a hard link or not a plain file: a writer would write
    through it, to wherever it leads (a missing file is fine: SQLite makes it)."""
    for name in (path.name, *(f"{path.name}{suffix}" for suffix in ("-wal", "-shm", "-journal"))):
        try:
            info = (path.parent / name).lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise IndexFileError(f"cannot check {path.parent / name} ({exc.strerror})") from None
        if stat.S_ISLNK(info.st_mode):
            kind = "a symbolic link"
        elif not stat.S_ISREG(info.st_mode):
            kind = "not a plain file"
        elif info.st_nlink != 1:
            kind = f"a hard link ({info.st_nlink} names)"
        else:
            continue
        raise IndexFileError(
            f"{path.parent / name} is {kind}, not a file of this index: it is not written "
            "through; replace it with a plain copy (cp without -l or -s) to update the index"
        )


class Catalog:
    """The ``catalog.sqlite`` of an index: images table plus a key/value ``meta`` table."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self._db = connect_read_only(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            refuse_linked_files(self.path)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(
        self, key: str, default: Any = None, kind: type | tuple[type, ...] | None = None
    ) -> Any:
        """The value stored under ``key`` (``default`` when there is none). With ``kind``, a
        value of another type (only a catalog made or changed elsewhere holds one), like one
        that is not JSON, is one ``IndexDataWarning`` line and ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if not row:
            return default
        try:
            value = json.loads(row[0])
        except (TypeError, ValueError, RecursionError):
            value, kind = row[0], ()
        if kind is None or value is None or (kind != () and isinstance(value, kind)):
            return value
        warnings.warn(
            f"the catalog's {key!r} entry is not one this version writes (a "
            f"{type(value).__name__}); it is not used",
            IndexDataWarning,
            stacklevel=2,
        )
        return default

    def set_meta(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value, sort_keys=True)),
            )

    def _bump_generation(self) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    # -- reads --------------------------------------------------------------------------------
    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        return int(
            self._db.execute("SELECT COUNT(*) FROM images WHERE status = ?", (status,)).fetchone()[
                0
            ]
        )

    def counts(self) -> dict[str, int]:
        found = dict(self._db.execute("SELECT status, COUNT(*) FROM images GROUP BY status"))
        return {status: found.get(status, 0) for status in ("ok", "error", "removed")}

    def generation(self) -> int:
        """A counter bumped by every write, so readers know when cached arrays are stale."""
        return int(self.get_meta("generation", 0, int))

    def ids_where(
        self, where: str, params: Sequence[Any] = (), *, time_budget: float | None = None
    ) -> list[int]:
        """Ids of ok rows matching ``where``, an SQL condition on the ``images`` table, ascending.

        ``where`` is SQL over the columns ``id, path`` (relative to the root, ``/``-separated),
        ``size, mtime_ns, width, height, format, status, error, indexed_at``: e.g.
        ``"path LIKE 'cats/%' AND width >= 1000"``. It runs on a read-only connection, as one
        statement, and is stopped after ``time_budget`` seconds (default ``WHERE_TIME_BUDGET_S``)
        or by Ctrl-C (KeyboardInterrupt), so a condition from elsewhere cannot change the
        index or run forever. Bad SQL or a stopped one is a ValueError.
        """
        if not isinstance(where, str):
            raise TypeError(f"where= must be an SQL condition as a str, not {type(where).__name__}")
        budget = WHERE_TIME_BUDGET_S if time_budget is None else float(time_budget)
        deadline = time.monotonic() + budget
        stopped: list[str] = []

        def keep_going() -> int:
            try:
                if time.monotonic() > deadline:
                    stopped.append("time")
                    return 1
            except KeyboardInterrupt:
                stopped.append("interrupt")
                return 1
            return 0

        query = f"SELECT id FROM images WHERE status = 'ok' AND ({where}) ORDER BY id"
        db = connect_read_only(self.path)
        try:
            db.execute("PRAGMA query_only = ON")
            db.set_progress_handler(keep_going, _PROGRESS_STEPS)
            return [r[0] for r in db.execute(query, tuple(params))]
        except sqlite3.Error as exc:
            if "interrupt" in stopped or (not stopped and "interrupted" in str(exc)):
                # Ctrl-C raised inside the progress handler, which sqlite3 swallows.
                raise KeyboardInterrupt from None
            if stopped:
                raise UsageError(
                    f"where= condition {where!r} ran over its time budget of {budget:g} s and was "
                    "stopped; simplify it (catalog.WHERE_TIME_BUDGET_S sets the budget)"
                ) from None
            raise UsageError(f"bad where= condition {where!r}: {exc}") from None
        finally:
            db.close()

    def ids_indexed_after(self, timestamp: float) -> list[int]:
        """Ids of ok rows (re-)indexed after ``timestamp`` (seconds since the epoch), ascending."""
        query = "SELECT id FROM images WHERE status = 'ok' AND indexed_at > ? ORDER BY id"
        return [r[0] for r in self._db.execute(query, (float(timestamp),))]

    def latest_indexed_at(self) -> float:
        """The latest ``indexed_at`` of an ok row (0.0 when there is none)."""
        row = self._db.execute("SELECT MAX(indexed_at) FROM images WHERE status = 'ok'").fetchone()
        return float(row[0] or 0.0)

    def next_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM images").fetchone()[0])

    def stat_map(self) -> dict[str, tuple[int, int, int, str]]:
        """``path -> (id, size, mtime_ns, status)`` for every row, for change detection."""
        return {
            loaded_path(path): (id_, size, mtime_ns, status)
            for id_, path, size, mtime_ns, status in self._db.execute(
                "SELECT id, path, size, mtime_ns, status FROM images"
            )
        }

    def ids(self, status: str = "ok") -> list[int]:
        return [
            r[0]
            for r in self._db.execute(
                "SELECT id FROM images WHERE status = ? ORDER BY id", (status,)
            )
        ]

    def records(
        self, ids: Sequence[int] | None = None, *, status: str | None = None
    ) -> list[Record]:
        """Rows for ``ids`` in the order given (all rows, optionally of one status, when None)."""
        if ids is None:
            query = f"SELECT {_COLUMNS} FROM images"
            args: tuple[Any, ...] = ()
            if status is not None:
                query += " WHERE status = ?"
                args = (status,)
            return [_record(row) for row in self._db.execute(query + " ORDER BY id", args)]
        wanted = [int(i) for i in ids]
        found: dict[int, Record] = {}
        for start in range(0, len(wanted), 900):
            block = wanted[start : start + 900]
            marks = ",".join("?" * len(block))
            for row in self._db.execute(
                f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", block
            ):
                found[row[0]] = _record(row)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnknownImageError(f"no image with id {missing[0]} in the catalog")
        return [found[i] for i in wanted]

    def id_for_path(self, path: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM images WHERE path = ?", (stored_path(path),)
        ).fetchone()
        return row[0] if row else None

    # -- writes -------------------------------------------------------------------------------
    def commit_entries(self, entries: Iterable[Entry]) -> None:
        """Insert or replace rows, all in one transaction (ok unless the entry has an error)."""
        now = time.time()
        rows = [
            (
                e.id,
                stored_path(e.path),
                e.size,
                e.mtime_ns,
                e.width,
                e.height,
                e.format,
                "error" if e.error else "ok",
                _text(e.error),
                now,
            )
            for e in entries
        ]
        with self._db:
            self._db.executemany(
                f"INSERT INTO images({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET path=excluded.path, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, width=excluded.width, height=excluded.height, "
                "format=excluded.format, status=excluded.status, error=excluded.error, "
                "indexed_at=excluded.indexed_at",
                rows,
            )
            self._bump_generation()

    def mark_removed(self, ids: Iterable[int]) -> None:
        self.set_status(ids, "removed")

    # -- the move log (duplicate clean-up, see moves.py) -----------------------------------------
    def log_moves(self, batch: str, moves: Iterable[tuple[int, str, str]]) -> list[int]:
        """Record ``(image_id, source, destination)`` moves as planned, in one transaction,
        before any file moves; returns their sequence numbers."""
        now = time.time()
        seqs = []
        with self._db:
            for image_id, source, destination in moves:
                cursor = self._db.execute(
                    "INSERT INTO moves(batch, image_id, source, destination, state, changed_at) "
                    "VALUES(?, ?, ?, ?, 'planned', ?)",
                    (batch, int(image_id), stored_path(source), stored_path(destination), now),
                )
                seqs.append(int(cursor.lastrowid or 0))
        return seqs

    def set_move_state(self, seq: int, state: str) -> None:
        with self._db:
            self._db.execute(
                "UPDATE moves SET state = ?, changed_at = ? WHERE seq = ?",
                (state, time.time(), int(seq)),
            )

    def moves(self, states: Sequence[str] = (), batch: str | None = None) -> list[MoveRow]:
        """Logged moves, newest first, optionally only those in ``states`` or of one ``batch``."""
        query = f"SELECT {_MOVE_COLUMNS} FROM moves WHERE 1"
        args: list[Any] = []
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        if batch is not None:
            query += " AND batch = ?"
            args.append(batch)
        return [
            MoveRow(seq, batch_, image_id, loaded_path(source), loaded_path(destination), *rest)
            for seq, batch_, image_id, source, destination, *rest in self._db.execute(
                query + " ORDER BY seq DESC", args
            )
        ]

    def set_status(self, ids: Iterable[int], status: str) -> None:
        """Set the status of rows whose file left (``removed``) or came back unchanged (``ok``)."""
        with self._db:
            self._db.executemany(
                "UPDATE images SET status = ?, error = NULL WHERE id = ?",
                [(status, int(i)) for i in ids],
            )
            self._bump_generation()

    # -- tags -----------------------------------------------------------------------------------
    # Tags belong to an image id, which update() keeps for a changed file and gives back to a
    # file that returns at the same path, so they survive both; a removed image keeps its tags,
    # hidden from every read below (which all look at ok images only) until it returns.
    def _has_tags(self) -> bool:
        """False for an index made before tags whose catalog is opened read-only."""
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tags'"
        ).fetchone()
        return row is not None

    def require_ok(self, ids: Sequence[int]) -> list[int]:
        """``ids`` (ascending, distinct) when every one is an ok image, else KeyError naming one."""
        wanted = sorted({int(i) for i in ids})
        status: dict[int, str] = {}
        for start in range(0, len(wanted), 900):
            block = wanted[start : start + 900]
            marks = ",".join("?" * len(block))
            status.update(
                self._db.execute(f"SELECT id, status FROM images WHERE id IN ({marks})", block)
            )
        for id_ in wanted:
            if id_ not in status:
                raise UnknownImageError(f"no image with id {id_} in the catalog")
            if status[id_] != "ok":
                state = "was removed" if status[id_] == "removed" else "could not be read"
                raise UnknownImageError(f"image {id_} {state}; it cannot be tagged")
        return wanted

    def add_tag(self, ids: Sequence[int], name: str) -> int:
        """Tag ok images ``ids`` with ``name`` in one transaction; how many were not tagged yet.

        KeyError (nothing written) when an id is unknown or not an ok image.
        """
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            wanted = self.require_ok(ids)
            before = self._db.total_changes
            now = time.time()
            self._db.executemany(
                "INSERT OR IGNORE INTO tags(image_id, name, tagged_at) VALUES(?, ?, ?)",
                [(id_, name, now) for id_ in wanted],
            )
            return self._db.total_changes - before

    def remove_tag(self, ids: Sequence[int], name: str) -> int:
        """Take tag ``name`` off ok images ``ids`` in one transaction; how many had it."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            wanted = self.require_ok(ids)
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM tags WHERE image_id = ? AND name = ?",
                [(id_, name) for id_ in wanted],
            )
            return self._db.total_changes - before

    def tag_counts(self) -> dict[str, int]:
        """``{name: ok images with it}``, names sorted (tags only removed images hold are left out)."""
        if not self._has_tags():
            return {}
        return dict(
            self._db.execute(
                "SELECT t.name, COUNT(*) FROM tags t JOIN images i ON i.id = t.image_id "
                "WHERE i.status = 'ok' GROUP BY t.name ORDER BY t.name"
            )
        )

    def tagged_ids(self, names: Sequence[str]) -> list[int]:
        """Ids of ok images with any of ``names``, ascending."""
        if not self._has_tags() or not names:
            return []
        marks = ",".join("?" * len(names))
        return [
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT t.image_id FROM tags t JOIN images i ON i.id = t.image_id "
                f"WHERE i.status = 'ok' AND t.name IN ({marks}) ORDER BY t.image_id",
                list(names),
            )
        ]

    def tags_by_id(self, ids: Sequence[int] | None = None) -> dict[int, list[str]]:
        """``{id: sorted tag names}`` of the ok images among ``ids`` (every ok image when None)
        that have at least one tag."""
        if not self._has_tags():
            return {}
        query = (
            "SELECT t.image_id, t.name FROM tags t JOIN images i ON i.id = t.image_id "
            "WHERE i.status = 'ok'"
        )
        found: dict[int, list[str]] = {}
        if ids is None:
            rows: Iterable[tuple[int, str]] = self._db.execute(query + " ORDER BY 1, 2")
        else:
            wanted = sorted({int(i) for i in ids})
            rows = []
            for start in range(0, len(wanted), 900):
                block = wanted[start : start + 900]
                marks = ",".join("?" * len(block))
                rows.extend(
                    self._db.execute(query + f" AND t.image_id IN ({marks}) ORDER BY 1, 2", block)
                )
        for id_, name in rows:
            found.setdefault(id_, []).append(name)
        return found
