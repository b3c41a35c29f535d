"""The ``index_of`` fixture's helpers (a module of its own: test files import ``IndexOf``, and
``conftest`` is not a name they can import while tests/browser has one too)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from imrec_widgets import ImageIndex

IndexOf = Callable[..., ImageIndex]


def folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What ``update()`` looks at in ``folder``: each file's relative path, size and mtime."""
    state = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(name for name in dirnames if name != ".imrec")
        for name in filenames:
            stat = os.stat(os.path.join(dirpath, name))
            relative = os.path.relpath(os.path.join(dirpath, name), folder)
            state.append((relative, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(state))
