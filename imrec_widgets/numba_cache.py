"""numba's compiled code kept on disk per machine, for the umap-learn and quantizer kernels."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def use_numba_cache() -> Path | None:
    """Point numba's on-disk cache at the user's cache folder, unless ``NUMBA_CACHE_DIR`` is set.

    ``$XDG_CACHE_HOME/imrec-widgets/numba`` (default ``~/.cache/...``), so the functions
    umap-learn and pynndescent compile with ``cache=True`` are compiled once per machine even
    where the installed packages are read-only. Returns the folder set, None when left alone.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(base) / "imrec-widgets" / "numba"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    config: Any = sys.modules.get("numba.core.config")
    if config is not None and not getattr(config, "CACHE_DIR", ""):
        config.CACHE_DIR = str(folder)  # numba read its environment already
    return folder


def _compiled_marker() -> Path | None:
    """The file that says umap-learn's code is compiled in this machine's numba cache (per
    umap-learn and numba version); None without a cache folder."""
    use_numba_cache()
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = f"umap-{version('umap-learn')}-numba-{version('numba')}"
    except PackageNotFoundError:
        return None
    return Path(folder) / f"imrec-{versions}.compiled"


def umap_compiled() -> bool:
    """Whether a UMAP fit ran to the end with this machine's numba cache (the next is quick)."""
    marker = _compiled_marker()
    return marker is not None and marker.exists()


def mark_umap_compiled() -> None:
    """Record that a UMAP fit finished, so its compiled code is in the cache."""
    marker = _compiled_marker()
    if marker is not None:
        try:
            marker.touch()
        except OSError:
            pass  # a read-only cache: the message shows again, nothing worse
