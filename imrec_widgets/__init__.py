"""imrec-widgets: notebook-native visual image search.

Index a folder of images (``ImageIndex``), search it by example, and explore it inside Jupyter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AnnWarning,
    DerivedFileWarning,
    EmptyIndexError,
    EngineFallbackWarning,
    EngineUnavailableError,
    ExportError,
    ImageDecodeError,
    ImrecError,
    ImrecWarning,
    IndexBusyWarning,
    IndexConfigError,
    IndexDataWarning,
    IndexFileError,
    IndexLockedError,
    IndexReadOnlyError,
    MalformedMessage,
    MapMessageError,
    MoveError,
    NotFoundError,
    ProjectionError,
    QuantizerMismatchWarning,
    SettingError,
    TagError,
    UnknownImageError,
    UsageError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "AnnWarning",
    "App",
    "DerivedFileWarning",
    "DuplicatesWidget",
    "EmptyIndexError",
    "EngineFallbackWarning",
    "EngineUnavailableError",
    "ExportError",
    "Hit",
    "ImageDecodeError",
    "ImageIndex",
    "ImrecError",
    "ImrecWarning",
    "IndexBusyWarning",
    "IndexConfigError",
    "IndexDataWarning",
    "IndexFileError",
    "IndexLockedError",
    "IndexReadOnlyError",
    "MalformedMessage",
    "MapMessageError",
    "MoveError",
    "NotFoundError",
    "ProjectionError",
    "QuantizerMismatchWarning",
    "SearchResults",
    "SearchWidget",
    "SettingError",
    "TagError",
    "UmapExplorer",
    "UnknownImageError",
    "UsageError",
    "WeightsUnavailableError",
    "WriteLock",
    "__version__",
]

if TYPE_CHECKING:
    from .index import ImageIndex
    from .indexer import WriteLock
    from .results import Hit, SearchResults
    from .widgets.app import App
    from .widgets.duplicates_widget import DuplicatesWidget
    from .widgets.search_widget import SearchWidget
    from .widgets.umap_explorer import UmapExplorer

_LAZY = {
    "ImageIndex": "index",
    "WriteLock": "indexer",
    "Hit": "results",
    "SearchResults": "results",
    "SearchWidget": "widgets.search_widget",
    "DuplicatesWidget": "widgets.duplicates_widget",
    "UmapExplorer": "widgets.umap_explorer",
    "App": "widgets.app",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import imrec_widgets` (and the CLI) starts without torch or widget libraries.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'imrec_widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so tab completion and dir() show the whole public API.
    return sorted({*globals(), *__all__})
