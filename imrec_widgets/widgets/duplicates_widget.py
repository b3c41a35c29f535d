"""``DuplicatesWidget``: duplicate groups with thumbnails, a keeper per group, move and undo.

Python owns every trait; the browser only sends messages (pick a keeper, move, undo, find
again), each checked here. Nothing is deleted: the others of each group are moved into a folder
and ``undo`` puts them back (see ``imrec_widgets.moves``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import traitlets

from imrec_widgets.errors import ImrecError

from ._base import STATIC_DIR, BaseWidget

if TYPE_CHECKING:
    from imrec_widgets.duplicates import DuplicateGroups
    from imrec_widgets.index import ImageIndex

log = logging.getLogger(__name__)

MAX_GROUPS = 200
"""Groups shown at most (largest first); the rest are named in the summary."""

MAX_DESTINATION_CHARS = 4096


class DuplicatesWidget(BaseWidget):
    """Near-duplicate groups of ``index`` (``index.duplicates(mode, max_distance)``) to clean up.

    Each group shows its images with pixel size, file size and date, and a suggested keeper (most
    pixels, then oldest) that a click on another image changes. "Move the others" moves every
    image but the keeper of each group to ``destination``; "Undo" puts them back.
    """

    _esm = STATIC_DIR / "duplicates_widget.js"
    _css = STATIC_DIR / "duplicates_widget.css"

    groups = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    """Per group: ``keep`` (id), ``identical`` and ``items`` (id, path, width, height, bytes,
    modified, distance)."""

    thumbnails = traitlets.List(traitlets.Bytes(), read_only=True).tag(sync=True)
    """JPEG thumbnails of every item, group after group, in ``items`` order."""

    destination = traitlets.Unicode(read_only=True).tag(sync=True)
    """Where the others are moved (default ``<root>/.imrec-moved/<date>``)."""

    summary = traitlets.Unicode(read_only=True).tag(sync=True)
    """One line: what was found, or what the last move or undo did."""

    error = traitlets.Unicode(read_only=True).tag(sync=True)
    """The last refused request, in words ('' when none)."""

    can_undo = traitlets.Bool(False, read_only=True).tag(sync=True)
    """True while moved files can be put back."""

    def __init__(
        self,
        index: ImageIndex,
        *,
        mode: str = "dhash",
        max_distance: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from imrec_widgets.moves import default_destination

        self._index = index
        self._mode = mode
        self._max_distance = max_distance
        self._found: DuplicateGroups | None = None
        self.rejected = 0
        """Front-end messages refused as malformed."""
        self.last_report: Any = None
        """The ``MoveReport`` of the last move or undo."""
        self.set_trait("destination", str(default_destination(index.root)))
        self.on_msg(self._received)
        self.refresh()

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Ignore state sent by the front end: every trait here is Python's."""
        return

    @property
    def keepers(self) -> list[int]:
        """The id kept in each shown group."""
        return [int(group["keep"]) for group in self.groups]

    def refresh(self) -> None:
        """Find the groups again (after files changed on disk or an update)."""
        from imrec_widgets.moves import describe_groups

        found = self._index.duplicates(mode=self._mode, max_distance=self._max_distance)
        shown = found[:MAX_GROUPS]
        described = describe_groups(self._index.catalog, shown)
        ids = [item["id"] for group in described for item in group["items"]]
        thumbs = self._index.thumbnail_bytes(ids) if ids else []
        self._found = found
        with self.hold_sync():
            self.set_trait("groups", described)
            self.set_trait("thumbnails", thumbs)
            self.set_trait("summary", _found_line(len(found), found.images, len(shown)))
            self.set_trait("can_undo", self._has_moves())

    def keep(self, group: int, id_: int) -> None:
        """Keep image ``id_`` in group ``group`` (its position in ``groups``)."""
        groups = [dict(g) for g in self.groups]
        if not 0 <= group < len(groups):
            raise ImrecError(f"no duplicate group {group}")
        if id_ not in {item["id"] for item in groups[group]["items"]}:
            raise ImrecError(f"image {id_} is not in duplicate group {group}")
        groups[group]["keep"] = int(id_)
        self.set_trait("groups", groups)

    def move_others(self, destination: str | None = None) -> None:
        """Move every shown group's images but its keeper to ``destination``."""
        if self._found is None:
            return
        if destination is not None:
            self.set_trait("destination", destination)
        shown = self._found[: len(self.groups)]
        keepers = dict(enumerate(self.keepers))
        report = self._index.move_duplicates(shown, self.destination, keepers=keepers)
        self.last_report = report
        self.refresh()
        self.set_trait("summary", f"{report.summary()}; Undo puts them back")

    def undo(self) -> None:
        """Put back every moved file."""
        report = self._index.undo_moves()
        self.last_report = report
        self.refresh()
        self.set_trait("summary", report.summary())

    def _has_moves(self) -> bool:
        return bool(self._index.catalog.moves(states=("moved",)))

    def _received(self, _widget: Any, content: Any, _buffers: list[bytes]) -> None:
        try:
            method, args = _parse(content)
        except ValueError:
            self.rejected += 1
            return
        self.set_trait("error", "")
        try:
            if method == "keep":
                self.keep(*args)
            elif method == "move":
                self.move_others(*args)
            elif method == "undo":
                self.undo()
            else:
                self.refresh()
        except ImrecError as exc:
            self.set_trait("error", str(exc))
        except OSError as exc:
            self.set_trait("error", f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "))
        except Exception:
            log.exception("DuplicatesWidget: %s failed", method)
            self.set_trait("error", f"{method} failed unexpectedly; see the log")


def _parse(content: Any) -> tuple[str, tuple[Any, ...]]:
    """A front-end message as (method, arguments), or ValueError."""
    if not isinstance(content, dict):
        raise ValueError("not an object")
    method = content.get("method")
    if method == "keep":
        group, id_ = content.get("group"), content.get("id")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (group, id_)):
            raise ValueError("group and id must be integers")
        return method, (group, id_)
    if method == "move":
        destination = content.get("destination")
        if (
            not isinstance(destination, str)
            or not destination.strip()
            or len(destination) > MAX_DESTINATION_CHARS
            or "\x00" in destination
        ):
            raise ValueError("destination must be a folder name")
        return method, (destination.strip(),)
    if method in ("undo", "refresh"):
        return method, ()
    raise ValueError(f"unknown method {method!r}")


def _found_line(groups: int, images: int, shown: int) -> str:
    if not groups:
        return "no duplicates found"
    line = f"{groups} group(s) of near-duplicates, {images} images"
    return line + (f" (the largest {shown} shown)" if shown < groups else "")
