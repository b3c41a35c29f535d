"""Files uploaded from the browser: chunks reassembled into whole files, within limits.

The browser sends each file of a query as ``chunk`` messages (an upload id, the file's
position, the offset and the bytes as a buffer), then one ``query`` message listing the
files' names and sizes. Every field is untrusted: ``Uploads`` checks each one, holds at most
``max_file_bytes`` per file and ``max_total_bytes`` per upload, and keeps one upload at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from imrec_widgets.errors import MalformedMessage, UsageError

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
"""Largest file accepted as an upload (20 MB); see ``SearchWidget.max_upload_bytes``."""

DEFAULT_MAX_UPLOAD_TOTAL_BYTES = 100_000_000
"""Most bytes all files of one upload may hold together (100 MB); Python-only, see
``SearchWidget.max_upload_total_bytes``."""

MAX_QUERY_IMAGES = 16
"""Most files one upload may hold (they form one query)."""

MAX_NAME_CHARS = 300
"""Longest file name or upload id accepted from the browser (longer names are cut)."""

_INCOMPLETE = "the upload arrived incomplete; please try again"


def format_bytes(size: int) -> str:
    """``20_000_000`` -> ``"20 MB"`` (decimal units, like the front end's ``formatBytes``)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    if unit == "B":
        return f"{int(value)} B"
    number = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{number.removesuffix('.0')} {unit}"


def check_upload_size(name: str, size: int, max_bytes: int) -> None:
    """ValueError naming the file when ``size`` is over ``max_bytes`` (or empty)."""
    if size == 0:
        raise UsageError(f"{name} is empty (0 bytes)")
    if size > max_bytes:
        raise UsageError(
            f"{name} is {format_bytes(size)}, over the upload limit of {format_bytes(max_bytes)} "
            "(SearchWidget.max_upload_bytes)"
        )


def is_whole(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an integer (bool is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class Uploads:
    """Reassembles the browser's uploads, one at a time, within limits.

    ``receive(chunk)`` for each ``chunk`` message, then ``finish(query)`` for the ``query``
    message gives the whole files. A chunk of a new upload drops any unfinished one. A file
    over ``max_file_bytes``, or an upload over ``max_total_bytes`` in all, is dropped as soon
    as it is over (its later chunks are ignored) and ``finish`` says so. Messages no honest
    front end sends raise ``MalformedMessage``; other problems raise ``ValueError``, each with
    a message for the user.
    """

    def __init__(
        self,
        max_file_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_total_bytes: int = DEFAULT_MAX_UPLOAD_TOTAL_BYTES,
        max_files: int = MAX_QUERY_IMAGES,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self.parts: dict[int, bytearray] = {}
        """The files of the upload being received, by position, as far as they arrived."""
        self._upload: str | None = None
        self._oversize: set[int] = set()
        self._bytes = 0
        self._refused = ""

    @property
    def held_bytes(self) -> int:
        """Bytes held for the upload being received."""
        return sum(len(part) for part in self.parts.values())

    def _start(self, upload: str | None) -> None:
        self._upload = upload
        self.parts = {}
        self._oversize = set()
        self._bytes = 0
        self._refused = ""

    def receive(self, content: Mapping[str, Any], buffers: Sequence[Any]) -> None:
        """Take one ``chunk`` message: ``upload`` (its id), ``file`` (position in the query),
        ``offset`` (where ``buffers`` go in that file)."""
        upload = _upload_id(content)
        position = content.get("file")
        offset = content.get("offset")
        if not (is_whole(position) and 0 <= position < self.max_files):
            raise MalformedMessage(
                f"an upload chunk names file {position!r}; one query takes files 0 to "
                f"{self.max_files - 1}"
            )
        if not (is_whole(offset) and offset >= 0):
            raise MalformedMessage(_INCOMPLETE)
        if upload != self._upload:  # a new upload replaces any unfinished one
            self._start(upload)
        if self._refused or position in self._oversize:
            return
        part = self.parts.setdefault(position, bytearray())
        if offset != len(part):
            raise UsageError(_INCOMPLETE)
        size = sum(memoryview(buffer).nbytes for buffer in buffers)
        if self._bytes + size > self.max_total_bytes:
            self._refused = (
                f"the upload is over {format_bytes(self.max_total_bytes)} in total "
                "(SearchWidget.max_upload_total_bytes); send fewer or smaller files"
            )
            self.parts = {}
            self._bytes = 0
            return
        if len(part) + size > self.max_file_bytes:
            self._oversize.add(position)
            self._bytes -= len(part)
            del self.parts[position]
            return
        for buffer in buffers:
            part += memoryview(buffer).cast("B")
        self._bytes += size

    def finish(self, content: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """``[(name, data), ...]`` of a ``query`` message's ``files`` (``{"name", "size"}``
        each), every one whole and within the limits; the upload is forgotten either way."""
        files = content.get("files") or []
        same_upload = self._upload is not None and _upload_id(content) == self._upload
        parts, oversize, refused = self.parts, self._oversize, self._refused
        self._start(None)
        if not isinstance(files, list):
            raise MalformedMessage("the upload's file list is malformed; please try again")
        if not files:
            raise UsageError("no file was uploaded")
        if len(files) > self.max_files:
            raise UsageError(
                f"{len(files)} files at once is too many; one query takes at most {self.max_files}"
            )
        if same_upload and refused:
            raise UsageError(refused)
        uploads = []
        for position, meta in enumerate(files):
            name, size = _file_meta(meta)
            check_upload_size(name, size, self.max_file_bytes)
            data = bytes(parts.get(position, b"")) if same_upload else b""
            if same_upload and position in oversize:
                check_upload_size(name, max(size, self.max_file_bytes + 1), self.max_file_bytes)
            if len(data) != size:
                raise UsageError(
                    f"{name} arrived incomplete ({len(data)} of {size} bytes); try again"
                )
            uploads.append((name, data))
        return uploads


def _upload_id(content: Mapping[str, Any]) -> str:
    upload = content.get("upload")
    return upload[:MAX_NAME_CHARS] if isinstance(upload, str) else ""


def _file_meta(meta: Any) -> tuple[str, int]:
    """``(name, size)`` of one entry of an upload's file list; ValueError when malformed."""
    if not isinstance(meta, dict):
        raise UsageError("the upload's file list is malformed; please try again")
    name = meta.get("name")
    name = name[:MAX_NAME_CHARS] if isinstance(name, str) and name else "uploaded image"
    size = meta.get("size", 0)
    if not (is_whole(size) and size >= 0):
        raise UsageError(f"{name}: the upload gave no valid size; please try again")
    return name, int(size)
