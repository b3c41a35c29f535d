"""Duplicate clean-up: move the extra copies out of a collection, never delete, and undo it.

Every move is logged in the catalog (``moves`` table, state ``planned``) before any file moves,
and marked ``moved`` after; an undo marks ``undoing`` before it moves a file back and
``restored`` after. A process killed between two files leaves log rows that say what was under
way: ``recover`` (run first by every move and undo) looks at where each such file is and
settles its row, so no file is lost and none stays in two places. A move is one ``rename`` where
source and destination share a file system; across file systems the file is copied to a
temporary name, synced, renamed into place, and only then is the source unlinked.

The log lives in the catalog, which may come from someone else, so no row of it is followed
blindly. A source must be a name ``catalog.ImagePaths`` accepts (inside the collection, or
inside a folder a link under it points to now). A destination must lie in a folder that holds
this index's marker file, ``.imrec-moves.<index id>``, written there by ``move`` before any
file moved (the id is random, kept in the catalog), or in the collection's own hidden
``.imrec-moved`` folder, with no link leading out of that folder on the way. A crafted
catalog can name any id, but it cannot create the marker on the disk of whoever opens it: so
an undo only ever brings back files that a move of an index with that id took out of a
collection, into the collection, never over a file. A row that fails a check is left alone
(undo: skipped; recovery: cancelled) with one ``IndexDataWarning`` line, and recovery deletes
the source of a finished cross-device copy only when the copy holds the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import errno
import filecmp
import os
import re
import secrets
import shutil
import stat
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import ImagePaths, contained_path
from .errors import IndexDataWarning, MoveError

if TYPE_CHECKING:
    from .catalog import Catalog, Record
    from .duplicates import DuplicateGroup

MOVED_FOLDER = ".imrec-moved"
"""Default home of moved files, inside the collection: hidden, so a scan never indexes it."""

MARKER_PREFIX = ".imrec-moves."
"""``<destination folder>/.imrec-moves.<index id>``: written by ``move``; an undo takes files
back only from under a folder holding the marker of its index (or from ``MOVED_FOLDER``)."""

_INDEX_ID = re.compile(r"[0-9a-f]{32}")
_INDEX_ID_KEY = "index_id"


def index_id(catalog: Catalog, *, create: bool = False) -> str | None:
    """This index's random id (``create``: made and kept in the catalog when it has none or
    holds one of another shape); None when there is none."""
    found = catalog.get_meta(_INDEX_ID_KEY)
    if isinstance(found, str) and _INDEX_ID.fullmatch(found):
        return found
    if not create:
        return None
    made = secrets.token_hex(16)
    catalog.set_meta(_INDEX_ID_KEY, made)
    return made


def write_marker(folder: Path, id_: str) -> None:
    """Put this index's marker in ``folder`` (made if needed); MoveError when it cannot."""
    marker = folder / f"{MARKER_PREFIX}{id_}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(marker, flags, 0o644)
    except FileExistsError:
        if _is_marker(marker, id_):
            return
        raise MoveError(
            f"{marker} is not a marker of this index; remove it or choose another folder"
        ) from None
    except OSError as exc:
        raise MoveError(
            f"cannot write to {folder} ({exc.strerror}); choose a folder you can write to"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(id_ + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _is_marker(path: Path, id_: str) -> bool:
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > 64:
            return False
        return path.read_text("ascii").strip() == id_
    except (OSError, UnicodeDecodeError):
        return False


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def trusted_destination(name: Any, root: Path, id_: str | None) -> Path | None:
    """``name`` (a destination from the move log) as a path when a move of this index can have
    put a file there (see the module's docstring); None otherwise."""
    if not isinstance(name, str) or "\x00" in name or not os.path.isabs(name):
        return None
    if os.path.normpath(name) != name:
        return None
    destination = Path(name)
    real_parent = os.path.realpath(destination.parent)
    moved_home = os.path.join(os.path.realpath(root), MOVED_FOLDER)
    if _inside(real_parent, moved_home) and real_parent != moved_home:
        return destination
    if id_ is None:
        return None
    for folder in destination.parents:
        if _is_marker(folder / f"{MARKER_PREFIX}{id_}", id_):
            return destination if _inside(real_parent, os.path.realpath(folder)) else None
    return None


class _CheckedLog:
    """The move log's names, checked: sources by ``ImagePaths``, destinations by marker."""

    def __init__(self, catalog: Catalog, root: Path) -> None:
        self.root = root
        self.paths = ImagePaths(root)
        self.id = index_id(catalog)
        self.refused: list[str] = []

    def places(self, row: Any) -> tuple[Path, Path] | None:
        destination = trusted_destination(row.destination, self.root, self.id)
        source = None
        if isinstance(row.source, str) and "\x00" not in row.source:
            name = contained_path(row.source)
            [source] = self.paths._resolve([name]) if name == row.source else [None]
        if source is None or destination is None:
            self.refused.append(row.source if source is None else row.destination)
            return None
        return source, destination

    def warn(self) -> None:
        if self.refused:
            warnings.warn(
                f"{len(self.refused)} logged move(s) name a file this index never moved (first: "
                f"{self.refused[0]!r}); they are left alone: the move log was made or changed "
                "elsewhere",
                IndexDataWarning,
                stacklevel=4,
            )


@dataclass(frozen=True)
class PlannedMove:
    """One file to move: image ``image_id`` from ``source`` (absolute) to ``destination``."""

    image_id: int
    source: Path
    destination: Path


@dataclass
class MoveReport:
    """What a move, an undo or a recovery did: files ``moved`` / ``restored``, those left
    where they were with why (``skipped``), and the log rows a crash had left open and this run
    settled (``recovered``)."""

    batch: str = ""
    moved: list[PlannedMove] = field(default_factory=list)
    restored: list[PlannedMove] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    recovered: int = 0

    def summary(self) -> str:
        parts = []
        if self.moved:
            parts.append(f"moved {_files(len(self.moved))}")
        if self.restored:
            parts.append(f"put back {_files(len(self.restored))}")
        if self.skipped:
            parts.append(f"left {_files(len(self.skipped))} where they were")
        if self.recovered:
            parts.append(f"settled {self.recovered} interrupted move(s)")
        return "; ".join(parts) or "nothing to do"


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def suggest_keeper(records: Sequence[Record]) -> int:
    """The image of a group to keep: the most pixels, then the oldest file, then the lowest id."""
    if not records:
        raise MoveError("a duplicate group needs at least one image")
    best = max(records, key=lambda r: ((r.width or 0) * (r.height or 0), -(r.mtime_ns or 0), -r.id))
    return best.id


def default_destination(root: Path, now: _dt.datetime | None = None) -> Path:
    """``<root>/.imrec-moved/<YYYY-MM-DD>``: hidden, so the next scan does not index it."""
    stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d")
    return root / MOVED_FOLDER / stamp


def check_destination(dest: Path, root: Path, index_dir: Path) -> Path:
    """The absolute destination folder, or a ``MoveError`` saying why it cannot be used."""
    dest = Path(os.path.abspath(os.path.expanduser(dest)))
    real = Path(os.path.realpath(dest))
    index_real = Path(os.path.realpath(index_dir))
    root_real = Path(os.path.realpath(root))
    if real == index_real or index_real in real.parents:
        raise MoveError(f"{dest} is inside the index folder {index_dir}; choose another folder")
    if real == root_real:
        raise MoveError(f"{dest} is the collection itself; choose another folder")
    if root_real in real.parents:
        inside = real.relative_to(root_real).parts
        if not any(part.startswith(".") for part in inside):
            raise MoveError(
                f"{dest} is inside the indexed folder {root}, so the moved files would be indexed "
                f"again; choose a folder outside it or a hidden one such as {root / MOVED_FOLDER}"
            )
    existing = next((p for p in (real, *real.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise MoveError(f"cannot write to {dest}; choose a folder you can write to")
    return dest


def plan_moves(
    catalog: Catalog,
    root: Path,
    groups: Iterable[DuplicateGroup],
    dest: Path,
    keepers: Mapping[int, int] | None = None,
) -> list[PlannedMove]:
    """The moves that leave one image of each group: ``keepers`` maps a group's position to
    the id to keep (default: ``suggest_keeper``). Destinations keep the files' relative paths
    under ``dest`` and never name a file that exists."""
    keepers = dict(keepers or {})
    planned: list[PlannedMove] = []
    taken: set[Path] = set()
    image_paths = ImagePaths(root)
    for position, group in enumerate(groups):
        records = catalog.records(group.ids)
        sources = image_paths.resolve([record.path for record in records])
        keep = keepers.pop(position, None)
        if keep is None:
            keep = suggest_keeper(records)
        elif keep not in group.ids:
            raise MoveError(f"image {keep} is not in duplicate group {position}")
        for record, source in zip(records, sources, strict=True):
            if record.id == keep or record.status != "ok" or source is None:
                continue
            relative = Path(record.path.lstrip("/"))
            target = _free_name(dest / relative, taken)
            taken.add(target)
            planned.append(PlannedMove(record.id, source, target))
    if keepers:
        raise MoveError(f"no duplicate group {min(keepers)}")
    return planned


def _free_name(target: Path, taken: set[Path]) -> Path:
    candidate, n = target, 1
    while candidate in taken or os.path.lexists(candidate):
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        n += 1
    return candidate


def move(
    catalog: Catalog, root: Path, planned: Sequence[PlannedMove], dest: Path | None = None
) -> MoveReport:
    """Move ``planned`` files (logged first) under ``dest`` (default: the folder their
    destinations share), mark them removed in the catalog; the caller holds the index's write
    lock. ``dest`` gets this index's marker first (so an undo can trust the log)."""
    report = MoveReport(batch=uuid.uuid4().hex[:12], recovered=recover(catalog, root))
    if not planned:
        return report
    if dest is None:
        dest = Path(os.path.commonpath([str(m.destination.parent) for m in planned]))
    write_marker(Path(dest), str(index_id(catalog, create=True)))
    seqs = catalog.log_moves(
        report.batch,
        [(m.image_id, _catalog_name(m.source, root), str(m.destination)) for m in planned],
    )
    for seq, item in zip(seqs, planned, strict=True):
        try:
            if os.path.lexists(item.destination):
                raise FileExistsError(errno.EEXIST, "destination exists", str(item.destination))
            _relocate(item.source, item.destination)
        except OSError as exc:
            catalog.set_move_state(seq, "cancelled")
            report.skipped.append((item.source, exc.strerror or str(exc)))
            continue
        catalog.set_move_state(seq, "moved")
        catalog.set_status([item.image_id], "removed")
        report.moved.append(item)
    return report


def undo(catalog: Catalog, root: Path, batch: str | None = None) -> MoveReport:
    """Put moved files back, newest first (``batch``: only that clean-up's); rows whose file
    comes back unchanged are searchable again at once. A file whose old place is taken stays."""
    report = MoveReport(batch=batch or "", recovered=recover(catalog, root))
    rows = catalog.moves(states=("moved",), batch=batch)
    if not rows and not report.recovered:
        raise MoveError("nothing to undo: no moved files are logged for this index")
    log = _CheckedLog(catalog, root)
    for row in rows:
        places = log.places(row)
        if places is None:
            report.skipped.append((Path(str(row.source)), "the move log does not hold it"))
            continue
        item = PlannedMove(row.image_id, *places)
        if os.path.lexists(item.source):
            report.skipped.append((item.source, "a file is there again"))
            continue
        if not os.path.lexists(item.destination):
            report.skipped.append((item.source, f"the moved copy {item.destination} is gone"))
            continue
        catalog.set_move_state(row.seq, "undoing")
        try:
            _relocate(item.destination, item.source)
        except OSError as exc:
            catalog.set_move_state(row.seq, "moved")
            report.skipped.append((item.source, exc.strerror or str(exc)))
            continue
        catalog.set_move_state(row.seq, "restored")
        _reinstate(catalog, root, [item.image_id])
        report.restored.append(item)
    log.warn()
    return report


def recover(catalog: Catalog, root: Path) -> int:
    """Settle log rows a killed move or undo left open, from where their files are now."""
    open_rows = catalog.moves(states=("planned", "undoing"))
    back: list[int] = []
    log = _CheckedLog(catalog, root)
    for row in open_rows:
        places = log.places(row)
        if places is None:  # never followed: nothing is touched
            catalog.set_move_state(row.seq, "cancelled")
            continue
        source, destination = places
        _remove_partial(destination)
        _remove_partial(source)
        at_source, at_destination = os.path.lexists(source), os.path.lexists(destination)
        if at_source and at_destination:
            # A cross-device copy reached its place (it is renamed there only once complete)
            # but the other side was not unlinked yet: finish the interrupted step, only when
            # the two hold the same bytes (else the file that was there stays where it is).
            if not _same_file_content(source, destination):
                catalog.set_move_state(row.seq, "cancelled" if row.state == "planned" else "moved")
                continue
            os.unlink(source if row.state == "planned" else destination)
            at_source = row.state != "planned"
            at_destination = not at_source
        if at_destination and not at_source:
            catalog.set_move_state(row.seq, "moved")
            catalog.set_status([row.image_id], "removed")
        elif at_source and row.state == "undoing":
            catalog.set_move_state(row.seq, "restored")
            back.append(row.image_id)
        else:  # never moved (or the file was taken away by hand): nothing to put back
            catalog.set_move_state(row.seq, "cancelled")
    _reinstate(catalog, root, back)
    log.warn()
    return len(open_rows)


def _same_file_content(first: Path, second: Path) -> bool:
    try:
        return (
            first.is_file()
            and second.is_file()
            and not first.is_symlink()
            and not second.is_symlink()
            and filecmp.cmp(first, second, shallow=False)
        )
    except OSError:
        return False


def _reinstate(catalog: Catalog, root: Path, ids: Sequence[int]) -> None:
    """Rows whose file is back with the size and time it was indexed with are ok again; others
    stay removed until ``update()`` indexes them afresh."""
    same = []
    records = catalog.records(ids)
    for record, path in zip(
        records, ImagePaths(root).resolve([r.path for r in records]), strict=True
    ):
        if path is None:
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        if info.st_size == record.size and info.st_mtime_ns == record.mtime_ns:
            same.append(record.id)
    if same:
        catalog.set_status(same, "ok")


def _catalog_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


_PARTIAL = ".imrec-partial"


def _remove_partial(path: Path) -> None:
    partial = path.with_name(path.name + _PARTIAL)
    if os.path.lexists(partial):
        os.unlink(partial)


def _relocate(source: Path, destination: Path) -> None:
    """Move one file: a rename, or across file systems copy + sync + rename + unlink."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        _sync_folder(destination.parent)
        return
    partial = destination.with_name(destination.name + _PARTIAL)
    try:
        shutil.copy2(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.rename(partial, destination)
    except BaseException:
        if os.path.lexists(partial):
            os.unlink(partial)
        raise
    _sync_folder(destination.parent)
    os.unlink(source)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_groups(catalog: Catalog, groups: Sequence[DuplicateGroup]) -> list[dict[str, Any]]:
    """What a person needs to pick a keeper, per group: each image's id, path, pixel size, file
    size, modification time (seconds) and distance to the group's first image, plus the
    suggested ``keep``."""
    described = []
    for group in groups:
        records = catalog.records(group.ids)
        described.append(
            {
                "keep": suggest_keeper(records),
                "identical": bool(group.identical),
                "items": [
                    {
                        "id": record.id,
                        "path": record.path,
                        "width": record.width or 0,
                        "height": record.height or 0,
                        "bytes": record.size,
                        "modified": record.mtime_ns / 1e9,
                        "distance": float(distance),
                    }
                    for record, distance in zip(records, group.distances, strict=True)
                ],
            }
        )
    return described
