"""How SearchWidget shows a query: a name under each of its images, and their thumbnails.

The thumbnails themselves come with the search: ``SearchResults.query_thumbnails`` are made
from the images the search decoded (an indexed id's from ``ImageIndex.thumbnail_bytes``), so
nothing here decodes a query again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imrec_widgets.errors import UsageError
from imrec_widgets.imageio import THUMBNAIL_SIDE

if TYPE_CHECKING:
    from imrec_widgets.index import ImageIndex
    from imrec_widgets.results import SearchResults

QUERY_THUMB_SIZE = THUMBNAIL_SIDE
"""Longer side, in pixels, of the thumbnails the widget shows (query and results) when the index
stores none."""


def query_items(query: Any) -> list[Any]:
    """The items of a query: each of a list or tuple, else the query itself."""
    return list(query) if isinstance(query, (list, tuple)) else [query]


def is_image_id(item: Any) -> bool:
    """Whether a query item is an indexed image's id ("more like this")."""
    return isinstance(item, (int, np.integer)) and not isinstance(item, bool)


def query_label(item: Any, index: ImageIndex | None = None) -> str:
    """How a query item is named under its thumbnail."""
    if is_image_id(item):
        if index is not None:
            try:
                return index.path(int(item)).name
            except (LookupError, ValueError):
                pass
        return f"image #{int(item)}"
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "uploaded image"
    return type(item).__name__


def check_image_ids(query: Any, index: ImageIndex) -> None:
    """ValueError naming the first id of ``query`` that is not a searchable image of ``index``."""
    ids = [int(item) for item in query_items(query) if is_image_id(item)]
    if not ids:
        return
    known = index.ids()
    for id_ in ids:
        if not np.any(known == id_):
            raise UsageError(f"no image with id {id_} in the index (removed or never indexed)")


def shown_thumbnails(results: SearchResults) -> list[bytes]:
    """The query's thumbnails as the widget shows them: none for a feature vector."""
    return [thumbnail for thumbnail in results.query_thumbnails if thumbnail is not None]
