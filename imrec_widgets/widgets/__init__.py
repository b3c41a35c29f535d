"""The notebook widgets. Imported lazily, so ``widgets.uploads`` and ``widgets.query_display``
(plain Python) load without anywidget or bqplot."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .duplicates_widget import DuplicatesWidget
    from .search_widget import SearchWidget
    from .umap_explorer import UmapExplorer

__all__ = ["App", "DuplicatesWidget", "SearchWidget", "UmapExplorer"]

_LAZY = {
    "DuplicatesWidget": "duplicates_widget",
    "SearchWidget": "search_widget",
    "App": "app",
    "UmapExplorer": "umap_explorer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
