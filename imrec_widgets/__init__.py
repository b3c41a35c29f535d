"""imrec-widgets: notebook-native visual image search.

Index a folder of images (``ImageIndex``), search it by example, and explore it inside Jupyter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Hit", "ImageIndex", "IndexConfigError", "IndexLockedError", "__version__"]

if TYPE_CHECKING:
    from .index import Hit, ImageIndex, IndexConfigError, IndexLockedError


def __getattr__(name: str) -> Any:
    # Lazy so that `import imrec_widgets` (and the CLI) starts without torch or widget libraries.
    if name in ("Hit", "ImageIndex", "IndexConfigError", "IndexLockedError"):
        from . import index

        return getattr(index, name)
    raise AttributeError(f"module 'imrec_widgets' has no attribute {name!r}")
