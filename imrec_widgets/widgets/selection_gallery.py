"""``SelectionGallery``: one page of a map selection's thumbnails; a click leaves an image out.

Python owns every trait; the browser only sends ``{"event": "toggle", "id": N}`` for an image on
the page it was shown, checked here before a handler sees it (``set_state`` from the browser is
ignored and malformed messages are counted in ``rejected``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import traitlets

from ._base import STATIC_DIR, BaseWidget

ToggleHandler = Callable[[int], None]


class SelectionGallery(BaseWidget):
    """Thumbnails of the images on one gallery page; images left out are shown dimmed and crossed."""

    _esm = STATIC_DIR / "selection_gallery.js"
    _css = STATIC_DIR / "selection_gallery.css"

    items = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    """Per image on the page: ``id``, ``path`` and ``out`` (left out of the selection)."""

    thumbnails = traitlets.List(traitlets.Bytes(), read_only=True).tag(sync=True)
    """JPEG thumbnail of each item, in ``items`` order."""

    hint = traitlets.Unicode(read_only=True).tag(sync=True)
    """Shown when the page is empty (what to do to fill it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers: list[ToggleHandler] = []
        self.rejected = 0
        """Front-end messages refused as malformed or naming an image not on the page."""
        self.on_msg(self._received)

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Ignore state sent by the front end: every trait here is Python's."""
        return

    @property
    def ids(self) -> list[int]:
        """Ids of the images on the page, in order."""
        return [int(item["id"]) for item in self.items]

    def show(
        self, items: Sequence[dict[str, Any]], thumbnails: Sequence[bytes], hint: str = ""
    ) -> None:
        """Show ``items`` (id, path, out) with their JPEG ``thumbnails``, or ``hint`` when empty."""
        if len(items) != len(thumbnails):
            raise ValueError(f"{len(items)} items but {len(thumbnails)} thumbnails")
        with self.hold_sync():
            self.set_trait("items", [dict(item) for item in items])
            self.set_trait("thumbnails", list(thumbnails))
            self.set_trait("hint", hint)

    def on_toggle(self, handler: ToggleHandler) -> None:
        """Call ``handler(id)`` when the user clicks the image ``id`` shown on the page."""
        self._handlers.append(handler)

    def _received(self, _widget: Any, content: Any, _buffers: list[bytes]) -> None:
        id_ = content.get("id") if isinstance(content, dict) else None
        if (
            not isinstance(content, dict)
            or content.get("event") != "toggle"
            or not isinstance(id_, int)
            or isinstance(id_, bool)
            or id_ not in self.ids
        ):
            self.rejected += 1
            return
        for handler in self._handlers:
            handler(id_)
