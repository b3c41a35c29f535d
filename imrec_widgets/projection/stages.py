"""The progress display of a map computation: named stages shown on one bar
(``progress.StageBar``: a widget in a notebook, removed once the map is made), given to a
callable, or nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imrec_widgets.progress import RemovedDisplays, StageBar

ProgressCallback = Callable[[str, int, int], None]


class Stages:
    """Reports the named stages of a computation: a progress display, a callable, or nothing."""

    def __init__(self, progress: bool | ProgressCallback | None) -> None:
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(
                f"progress must be True, False or a callable(stage, done, total), not {progress!r}"
            )
        self._callback = progress if callable(progress) else None
        self._show = progress is True
        self._stage: str | None = None
        # made now, before any bar: umap-learn's epoch bars are removed with ours
        self._bar = StageBar() if self._show else None

    def waiting(self, holder: str, index_dir: Path) -> None:
        """Say whom the computation waits for (called between tries for the write lock)."""
        stage = f"waiting for pid {holder} to finish writing {index_dir}"
        if stage != self._stage:
            self(stage, 0, 1)
        elif self._bar is not None:
            self._bar.refresh()  # its elapsed time moves

    def live(self, stage: str, note: str = "") -> _Ticker:
        """Report ``stage`` (0 of 1) and keep its display ticking (elapsed time) until the block
        ends, for a stage with no steps to count; ``note`` is shown beside it, never given to a
        callback."""
        self(stage, 0, 1)
        if self._bar is not None and note:
            self._bar.describe(f"{stage} ({note})")
        return _Ticker(self._bar)

    @property
    def umap_tqdm_kwds(self) -> dict[str, Any] | None:
        """umap-learn's own epoch display, shown only beside a progress display."""
        return {"disable": False, "desc": "UMAP epochs", "leave": False} if self._show else None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._callback is not None:
            self._callback(stage, done, total)
        self._stage = stage
        if self._bar is not None:
            self._bar.show(stage, done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


TICK_SECONDS = 1.0
"""How often a stage with no steps to count redraws its display (its elapsed time moves)."""


class _Ticker:
    """Refreshes a progress display every ``TICK_SECONDS`` while its block runs."""

    def __init__(self, bar: StageBar | None) -> None:
        self._bar = bar
        self._interval = TICK_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        bar = self._bar
        while bar is not None and not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a display closed under it: just stop
                bar.refresh()

    def __enter__(self) -> _Ticker:
        if self._bar is not None:
            self._thread = threading.Thread(target=self._run, name="imrec-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


__all__ = ["TICK_SECONDS", "ProgressCallback", "RemovedDisplays", "Stages"]
