"""Duplicate clean-up: move the extra copies out of a collection, never delete, and undo it.

Every move is logged in the catalog (``moves`` table, state ``planned``) before any file moves,
and marked ``moved`` after; an undo marks ``undoing`` before it moves a file back and
``restored`` after. A process killed between two files leaves log rows that say what was under
way: ``recover`` (run first by every move and undo) looks at where each such file is and
settles its row, so no file is lost and none stays in two places. A move is one ``rename`` where
source and destination share a file system; across file systems the file is copied to a
temporary name, synced, renamed into place, and only then is the source unlinked.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MoveError

if TYPE_CHECKING:
    from .catalog import Catalog, Record
    from .duplicates import DuplicateGroup

MOVED_FOLDER = ".imrec-moved"
"""Default home of moved files, inside the collection: hidden, so a scan never indexes it."""


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
    for position, group in enumerate(groups):
        records = catalog.records(group.ids)
        keep = keepers.pop(position, None)
        if keep is None:
            keep = suggest_keeper(records)
        elif keep not in group.ids:
            raise MoveError(f"image {keep} is not in duplicate group {position}")
        for record in records:
            if record.id == keep or record.status != "ok":
                continue
            relative = Path(record.path.lstrip("/"))
            target = _free_name(dest / relative, taken)
            taken.add(target)
            planned.append(PlannedMove(record.id, root / record.path, target))
    if keepers:
        raise MoveError(f"no duplicate group {min(keepers)}")
    return planned


def _free_name(target: Path, taken: set[Path]) -> Path:
    candidate, n = target, 1
    while candidate in taken or os.path.lexists(candidate):
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        n += 1
    return candidate


def move(catalog: Catalog, root: Path, planned: Sequence[PlannedMove]) -> MoveReport:
    """Move ``planned`` files (logged first), mark them removed in the catalog; the caller holds
    the index's write lock."""
    report = MoveReport(batch=uuid.uuid4().hex[:12], recovered=recover(catalog, root))
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
    for row in rows:
        item = PlannedMove(row.image_id, root / row.source, Path(row.destination))
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
    return report


def recover(catalog: Catalog, root: Path) -> int:
    """Settle log rows a killed move or undo left open, from where their files are now."""
    open_rows = catalog.moves(states=("planned", "undoing"))
    back: list[int] = []
    for row in open_rows:
        source, destination = root / row.source, Path(row.destination)
        _remove_partial(destination)
        _remove_partial(source)
        at_source, at_destination = os.path.lexists(source), os.path.lexists(destination)
        if at_source and at_destination:
            # A cross-device copy reached its place (it is renamed there only once complete)
            # but the other side was not unlinked yet: finish the interrupted step.
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
    return len(open_rows)


def _reinstate(catalog: Catalog, root: Path, ids: Sequence[int]) -> None:
    """Rows whose file is back with the size and time it was indexed with are ok again; others
    stay removed until ``update()`` indexes them afresh."""
    same = []
    for record in catalog.records(ids):
        try:
            info = (root / record.path).stat()
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
