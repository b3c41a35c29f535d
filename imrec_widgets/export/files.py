"""Export the image files of a selection or of tags into a folder, as a labelled dataset.

``layout="by_tag"`` writes ``DEST/<tag>/<file>``: the folder-per-class layout that
torchvision's ``ImageFolder``, Keras' ``image_dataset_from_directory`` and FiftyOne's
``ImageClassificationDirectoryTree`` read; ``"flat"`` writes ``DEST/<file>``. Beside them,
``DEST/labels.csv`` lists ``path,tag`` (path relative to DEST, ``/``-separated; an untagged
image of a flat export has an empty tag; an image with several tags has a row per tag).

Safe to repeat and to stop: a file already in DEST is never replaced (a name taken by another
file gets ``-1``, ``-2``... before its suffix); a file that is already the exported image (same
file, or same bytes) counts as done, so a rerun adds only what is missing; each copy is written
under a temporary name and linked to its final name only once complete, so a failure (a full
disk) leaves no partial file, and ``labels.csv`` is rewritten (merged, never shrunk) the same way.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import filecmp
import hashlib
import io
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imrec_widgets.derived import atomic_write
from imrec_widgets.errors import ExportError, TagError, UsageError
from imrec_widgets.tags import existing_tag_names, selected_ids

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

HOWS = ("copy", "symlink", "hardlink")
LAYOUTS = ("by_tag", "flat")
LABELS_FILE = "labels.csv"
LABELS_HEADER = ("path", "tag")
_MAX_NAME_BYTES = 200  # below the usual 255-byte limit on a file or folder name
_PART = ".imrec-part"


@dataclass
class ExportReport:
    """What ``export_files`` did."""

    dest: Path
    written: list[Path] = field(default_factory=list)
    """Files this run wrote (or linked), in order."""
    present: int = 0
    """Files that were already there from an earlier export."""
    renamed: int = 0
    """Of ``written``, those under another name because theirs was taken by another file."""
    missing: list[Path] = field(default_factory=list)
    """Indexed images whose file is gone (run ``update()``): not exported."""

    @property
    def labels(self) -> Path:
        return self.dest / LABELS_FILE

    def __str__(self) -> str:
        parts = [
            f"exported {len(self.written)} file{'' if len(self.written) == 1 else 's'} to {self.dest}"
        ]
        if self.present:
            parts.append(f"{self.present} already there")
        if self.renamed:
            parts.append(f"{self.renamed} renamed to keep a file there")
        if self.missing:
            parts.append(f"{len(self.missing)} missing on disk (run update())")
        return ", ".join(parts) + f"; labels in {self.labels}"


def export_files(
    index: IndexView,
    selection: Any,
    dest: str | os.PathLike[str],
    *,
    how: str = "copy",
    layout: str = "by_tag",
) -> ExportReport:
    """Write the files of ``selection`` (ids, search results, or tag name(s)) into ``dest``.

    See the module docstring for the layouts and guarantees. ``TagError``: an empty
    selection, an unknown or removed id, an unknown tag, or (``by_tag``) an image with no tag.
    ``ExportError``: a destination inside the index (or where ``update()`` would index the
    copies), one that cannot be written, a full disk, hard links across file systems.
    """
    if how not in HOWS:
        raise UsageError(f"how= takes {', '.join(map(repr, HOWS))}, not {how!r}")
    if layout not in LAYOUTS:
        raise UsageError(f"layout= takes {', '.join(map(repr, LAYOUTS))}, not {layout!r}")
    labels_of = _labels(index, selection)
    if layout == "by_tag":
        untagged = [id_ for id_, labels in labels_of.items() if not labels]
        if untagged:
            raise TagError(
                f"{len(untagged)} of the {len(labels_of)} selected images have no tag (image "
                f"{untagged[0]} first), so layout='by_tag' has no folder for them; tag them or "
                "use layout='flat'"
            )
    target = _checked_dest(index, dest)
    chosen = sorted(labels_of)
    sources = dict(zip(chosen, index.paths(chosen), strict=True))
    folders = _folder_names({label for labels in labels_of.values() for label in labels})

    report = ExportReport(target)
    rows: list[tuple[str, str]] = []
    claimed: set[Path] = set()
    plan = sorted(
        (label, id_) for id_, labels in labels_of.items() for label in (labels if labels else [""])
    )
    placed: dict[int, str] = {}  # flat: an image goes in once, whatever its tags
    try:
        for label, id_ in plan:
            source = sources[id_]
            if layout == "flat" and id_ in placed:
                rows.append((placed[id_], label))
                continue
            if not source.is_file():
                if source not in report.missing:
                    report.missing.append(source)
                continue
            folder = target / folders[label] if layout == "by_tag" else target
            written = _place(source, folder, how, claimed, report)
            relative = written.relative_to(target).as_posix()
            placed[id_] = relative
            rows.append((relative, label))
    except OSError as exc:
        with contextlib.suppress(OSError):
            _write_labels(target, rows)
        done = len(report.written) + report.present
        raise ExportError(
            f"export to {target} stopped after {done} of {len(plan)} files: "
            f"{exc.strerror or exc}; fix that and run it again (it adds only what is missing)"
        ) from None
    try:
        _write_labels(target, rows)
    except OSError as exc:
        raise ExportError(
            f"could not write {target / LABELS_FILE}: {exc.strerror or exc}"
        ) from None
    return report


def _labels(index: IndexView, selection: Any) -> dict[int, list[str]]:
    """``{id: the tags it is exported under}``: named tags, or every tag of the chosen ids."""
    catalog = index.catalog
    named = isinstance(selection, str) or (
        isinstance(selection, (list, tuple))
        and selection
        and all(isinstance(s, str) for s in selection)
    )
    if named:
        names = existing_tag_names(catalog, selection, "the tags to export")
        tagged = catalog.tags_by_id(catalog.tagged_ids(names))
        return {id_: [n for n in names_of if n in names] for id_, names_of in tagged.items()}
    ids = selected_ids(selection)
    try:
        catalog.require_ok(ids)
    except KeyError as exc:
        raise TagError(str(exc.args[0]).replace("tagged", "exported")) from None
    tags = catalog.tags_by_id(ids)
    return {id_: tags.get(id_, []) for id_ in ids}


def _checked_dest(index: IndexView, dest: str | os.PathLike[str]) -> Path:
    """``dest`` made absolute and created; ExportError where it must not or cannot be."""
    target = Path(dest).expanduser().resolve()
    for inside, why in (
        (index.index_dir.resolve(), "the index folder"),
        (index.root.resolve(), "the indexed folder"),
    ):
        if target == inside or inside in target.parents:
            hidden = any(part.startswith(".") for part in target.relative_to(inside).parts)
            if why == "the index folder" or not hidden:
                raise ExportError(
                    f"{target} is inside {why} {inside}"
                    + ("" if why == "the index folder" else ", so update() would index the copies")
                    + "; export to a folder outside it"
                )
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file, not a folder; choose a folder to export to")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f"{_PART}-probe-{os.getpid()}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"cannot write to {target}: {exc.strerror or exc}") from None
    return target


def _folder_names(labels: Iterable[str]) -> dict[str, str]:
    """A distinct, safe folder name for each label (``/`` and ``\\`` become ``_``; ``.`` and
    ``..`` get a ``_`` in front; long names are shortened, with a hash to keep them apart)."""
    out: dict[str, str] = {"": ""}
    taken: set[str] = set()
    for label in sorted(set(labels) - {""}):
        name = label.replace("/", "_").replace("\\", "_")
        if name in (".", ".."):
            name = "_" + name
        if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
            digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:8]
            while len(name.encode("utf-8")) > _MAX_NAME_BYTES - 9:
                name = name[:-1]
            name = f"{name}-{digest}"
        base, number = name, 1
        while name in taken:
            number += 1
            name = f"{base}~{number}"
        taken.add(name)
        out[label] = name
    return out


def _candidates(name: str) -> Iterable[str]:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    ending = f".{suffix}" if suffix else ""
    yield name
    number = 1
    while True:
        yield f"{stem}-{number}{ending}"
        number += 1


def _same_content(target: Path, source: Path) -> bool:
    """Whether ``target`` already is ``source`` (the same file, or a file of the same bytes)."""
    try:
        if os.path.samefile(target, source):
            return True
        return (
            target.is_file()
            and target.stat().st_size == source.stat().st_size
            and filecmp.cmp(target, source, shallow=False)
        )
    except OSError:
        return False


def _place(source: Path, folder: Path, how: str, claimed: set[Path], report: ExportReport) -> Path:
    """Put ``source`` in ``folder`` under its name or the first free variant; the path used."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(_candidates(source.name)):
        target = folder / name
        if target in claimed:
            continue
        if os.path.lexists(target):
            if _same_content(target, source):
                claimed.add(target)
                report.present += 1
                return target
            continue
        if not _write(source, target, how):
            continue  # another writer took the name between the check and the write
        claimed.add(target)
        report.written.append(target)
        report.renamed += number > 0
        return target
    raise AssertionError("unreachable")  # pragma: no cover - _candidates never ends


def _write(source: Path, target: Path, how: str) -> bool:
    """Create ``target`` from ``source``, never replacing a file; False if the name was taken."""
    try:
        if how == "symlink":
            os.symlink(source.resolve(), target)
            return True
        if how == "hardlink":
            try:
                os.link(source, target)
            except OSError as exc:
                if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise ExportError(
                        f"cannot hard-link {source} into {target.parent}: {exc.strerror}; "
                        "hard links need both on one file system: use how='copy' or 'symlink'"
                    ) from None
                raise
            return True
    except FileExistsError:
        return False
    partial = target.with_name(f"{_PART}-{os.getpid()}-{target.name}")
    try:
        shutil.copy2(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(partial, target)  # fails, atomically, if the name is taken
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                return False
            os.rename(partial, target)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _write_labels(target: Path, rows: Sequence[tuple[str, str]]) -> None:
    """Merge ``rows`` into ``target/labels.csv`` (``derived.atomic_write``)."""
    path = target / LABELS_FILE
    known: set[tuple[str, str]] = set()
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is not None and tuple(header) != LABELS_HEADER:
                raise ExportError(
                    f"{path} exists and is not a path,tag list an export wrote; move it away"
                )
            known = {(row[0], row[1]) for row in reader if len(row) >= 2}
    merged = sorted(known | set(rows))
    if merged == sorted(known) and path.exists():
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABELS_HEADER)
    writer.writerows(merged)
    atomic_write(path, buffer.getvalue().encode("utf-8"), hidden=True)
