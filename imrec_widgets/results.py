"""Search results: ``Hit`` rows and a list of them that shows itself as a thumbnail grid."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Hit(NamedTuple):
    """One result: catalog ``id``, absolute ``path``, ``distance`` (smaller = closer), ``rank`` (0 = best)."""

    id: int
    path: Path
    distance: float
    rank: int


QueryItemShown = bytes | int | None
"""How a search keeps each item of its query to show it: a small JPEG made from the decoded
image, an indexed id (its thumbnail is read when asked for), None for a feature vector."""


class SearchResults(list[Hit]):
    """The hits of one query, best first, with how they were found and how long it took."""

    def __init__(
        self,
        hits: Iterable[Hit],
        *,
        mode: str,
        metric: str,
        seconds: float,
        thumbnails: Callable[[list[int]], list[bytes]] | None = None,
        query: Sequence[QueryItemShown] = (),
    ) -> None:
        super().__init__(hits)
        self.mode = mode
        self.metric = metric
        self.seconds = seconds
        self._thumbnails = thumbnails
        self._query = list(query)
        self._query_thumbnails: list[bytes | None] | None = None

    @property
    def query_thumbnails(self) -> list[bytes | None]:
        """A small JPEG of each item of the query, in order (None for a feature vector): made
        from the image the search decoded, or the thumbnail of an indexed id (``b""`` when it
        has none to show). Empty for results made without their query."""
        if self._query_thumbnails is None:
            ids = [item for item in self._query if isinstance(item, int)]
            made = iter(self._thumbnails(ids) if ids and self._thumbnails else [b""] * len(ids))
            self._query_thumbnails = [
                next(made) if isinstance(item, int) else item for item in self._query
            ]
        return list(self._query_thumbnails)

    @property
    def ids(self) -> list[int]:
        return [hit.id for hit in self]

    @property
    def paths(self) -> list[Path]:
        return [hit.path for hit in self]

    @property
    def distances(self) -> list[float]:
        return [hit.distance for hit in self]

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-able rows: id, path (string), distance, rank."""
        return [
            {"id": h.id, "path": str(h.path), "distance": h.distance, "rank": h.rank} for h in self
        ]

    def __repr__(self) -> str:
        head = ", ".join(f"{h.path.name} {h.distance:.4g}" for h in self[:5])
        more = f", … {len(self) - 5} more" if len(self) > 5 else ""
        return f"<SearchResults {self.mode}/{self.metric}, {len(self)} hits in {self.seconds * 1000:.1f} ms: {head}{more}>"

    def _repr_html_(self) -> str:
        # Classes of its own (imrec-hits*), never the SearchWidget's: that stylesheet is global.
        images = self._thumbnails(self.ids) if self._thumbnails and len(self) else [b""] * len(self)
        cells = []
        for hit, jpeg in zip(self, images, strict=True):
            name = html.escape(hit.path.name)
            source = base64.b64encode(jpeg).decode() if jpeg else ""
            cells.append(
                f'<figure class="imrec-hit" style="margin:0;width:96px;text-align:center" '
                f'title="{html.escape(str(hit.path))}">'
                f'<img src="data:image/jpeg;base64,{source}" width="96" height="96" '
                f'style="object-fit:contain;border-radius:4px" alt="{name}">'
                f'<figcaption style="font-size:11px;line-height:1.3;overflow-wrap:anywhere">'
                f"{hit.rank + 1}. {_wrappable(short_name(hit.path.name))}<br>{hit.distance:.4g}"
                "</figcaption></figure>"
            )
        caption = (
            f"{len(self)} hits · mode {html.escape(self.mode)} · metric {html.escape(self.metric)} · "
            f"{self.seconds * 1000:.1f} ms"
        )
        return (
            f'<div class="imrec-hits"><div style="font-size:12px;margin-bottom:4px">{caption}</div>'
            f'<div class="imrec-hits-grid" style="display:flex;flex-wrap:wrap;gap:6px">{"".join(cells)}</div></div>'
        )


def short_name(name: str, max_chars: int = 26) -> str:
    """``name`` in at most ``max_chars`` characters, shortened in the middle: copies of a photo
    differ at the end (``hubble_deep_field_mirror.jpg``), so the end stays."""
    if len(name) <= max_chars:
        return name
    keep = max(2, max_chars - 1)
    tail = -(-keep * 3 // 5)  # ceil(keep * 0.6), as the widget's fitName
    return f"{name[: keep - tail]}…{name[len(name) - tail :]}"


def _wrappable(name: str) -> str:
    """``name`` as HTML that wraps after ``_`` and ``-`` and before the extension, not mid-word."""
    return "<wbr>".join(
        html.escape(part) for part in re.split(r"(?<=[_-])|(?=\.[^.]*$)", name) if part
    )
