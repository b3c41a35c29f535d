"""Derived files of an index (ANN files, re-rank copies): names checked before they become
paths, writes that can never land outside the index folder, and checksums of rows.

An index folder may come from someone else, so every file name read from it (a catalog stamp,
a placement token) is checked against the exact pattern the code writes before it is joined
to a folder: never a separator, ``..``, an absolute path or a name of another shape. Writers
open temporary files exclusively and without following links, refuse a derived folder that
is a link out of the index folder, and rewrite a file in place only when it is a plain file
with one link, so a planted symlink or hard link can never redirect a write elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FEATURE_PART = r"[a-z][a-z0-9_]*"
"""A feature name as it appears in a file name (``/`` written as ``_``)."""


def file_name_pattern(*suffixes: str) -> re.Pattern[str]:
    """``<feature>.<digits>.<suffix>``: the only shape of derived file names this code writes."""
    return re.compile(rf"{FEATURE_PART}\.[0-9]{{1,20}}\.(?:{'|'.join(map(re.escape, suffixes))})")


def checked_name(folder: Path, name: Any, pattern: re.Pattern[str]) -> Path | None:
    """``folder / name`` when ``name`` (read from index data) is exactly a name the code writes;
    None for anything else (a separator, ``..``, an absolute path, another shape or type)."""
    if not isinstance(name, str) or pattern.fullmatch(name) is None:
        return None
    if "/" in name or "\\" in name or os.sep in name or name in (".", ".."):
        return None  # the patterns allow none of these; kept so a looser pattern cannot
    path = folder / name
    return path if path.parent == folder else None


def inner_folder(index_dir: Path, name: str, *, create: bool) -> Path | None:
    """``index_dir / name`` if it is (or, with ``create``, now is) a real folder directly inside
    the index folder; None when it is a link, not a folder, or cannot be made."""
    folder = Path(index_dir) / name
    try:
        if create:
            folder.mkdir(exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_temporary(path: Path, *, hidden: bool = False) -> tuple[BinaryIO, Path]:
    """A new file beside ``path`` under a random name (starting with ``.`` when ``hidden``),
    opened for writing; never an existing file or the target of a link."""
    dot = "." if hidden and not path.name.startswith(".") else ""
    temporary = path.with_name(f"{dot}{path.name}.tmp{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o644)
    return os.fdopen(fd, "wb"), temporary


def commit_temporary(handle: BinaryIO, temporary: Path, path: Path) -> None:
    """fsync and close ``handle``, rename ``temporary`` to ``path``, fsync the folder."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temporary, path)
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(
    path: Path | str,
    *,
    hidden: bool = False,
    before_replace: Callable[[Path], None] | None = None,
) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only once the ``with`` block ends without an error.

    The one way this package writes a file: a fresh temporary name beside ``path`` (opened
    exclusively, never through a link; ``hidden``: a dot name), fsynced, renamed over
    ``path``, then the folder fsynced, so after a crash ``path`` is the old file or the whole
    new one. An error in the block (or a failed write) removes the temporary file and leaves
    ``path`` as it was. ``before_replace`` gets the complete, fsynced temporary file just
    before the rename (tests kill the process there).
    """
    path = Path(path)
    handle, temporary = create_temporary(path, hidden=hidden)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(temporary)
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    commit_temporary(handle, temporary, path)


def durable_replace(source: Path | str, path: Path | str) -> None:
    """Move a finished file ``source`` (written by a library that needs a path: ONNX exports,
    a staged map file) over ``path`` the way ``atomic_file`` does: fsync it, rename, fsync the
    folder."""
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, path)
    _fsync_dir(Path(path).parent)


def atomic_write(
    path: Path | str,
    chunks: Iterable[bytes | memoryview] | bytes | memoryview,
    *,
    hidden: bool = False,
    before_replace: Callable[[Path], None] | None = None,
) -> tuple[int, str]:
    """Write ``chunks`` to ``path`` through ``atomic_file``; returns (bytes written, SHA-256
    hex)."""
    digest = hashlib.sha256()
    size = 0
    with atomic_file(path, hidden=hidden, before_replace=before_replace) as handle:
        for chunk in [chunks] if isinstance(chunks, (bytes, memoryview)) else chunks:
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def open_for_update(path: Path) -> BinaryIO:
    """``path`` opened to rewrite in place: only a plain file with a single link (OSError else)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(f"{path.name} is not a plain file of this index")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "r+b")


def row_digests(rows: np.ndarray) -> np.ndarray:
    """A 64-bit BLAKE2b digest of each row's bytes (uint64, one per row)."""
    rows = np.ascontiguousarray(rows)
    out = np.empty(rows.shape[0], dtype=np.uint64)
    for i, row in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(row.data, digest_size=8).digest(), "little")
    return out
