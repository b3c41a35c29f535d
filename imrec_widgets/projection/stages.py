"""The progress display of a map computation: named stages shown as one tqdm bar (a widget in
a notebook, removed once the map is made), given to a callable, or nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ProgressCallback = Callable[[str, int, int], None]


class Stages:
    """Reports the named stages of a computation: a tqdm display, a callable, or nothing."""

    _BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"

    def __init__(self, progress: bool | ProgressCallback | None) -> None:
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(
                f"progress must be True, False or a callable(stage, done, total), not {progress!r}"
            )
        self._callback = progress if callable(progress) else None
        self._show = progress is True
        self._stage: str | None = None
        self._bar: Any = None
        self._displays = RemovedDisplays() if self._show else None

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
            self._bar.set_description_str(f"{stage} ({note})", refresh=True)
        return _Ticker(self._bar)

    @property
    def umap_tqdm_kwds(self) -> dict[str, Any] | None:
        """umap-learn's own epoch display, shown only beside a progress display."""
        return {"disable": False, "desc": "UMAP epochs", "leave": False} if self._show else None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._callback is not None:
            self._callback(stage, done, total)
        if not self._show:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            # leave=False: the bars go away once the map is made (an explorer shows it below).
            self._bar = tqdm(
                total=total,
                desc=stage,
                bar_format=self._BAR_FORMAT,
                dynamic_ncols=True,
                leave=False,
            )
        elif stage != self._stage:
            self._bar.set_description_str(stage, refresh=False)
            self._bar.reset(total=total)
        self._stage = stage
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._displays is not None:
            self._displays.remove()


class RemovedDisplays:
    """Shows tqdm's notebook bars (ours and umap-learn's) under a display id until ``remove()``,
    which replaces each with an empty output.

    A closed bar would otherwise leave a view of a widget that no longer exists in the saved
    notebook: "Error displaying widget: model not found" after every browser reload.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._module: Any = None
        self._display: Any = None
        try:
            import tqdm.notebook as module
        except ImportError:
            return
        display = getattr(module, "display", None)
        if display is None or getattr(display, "__module__", "").startswith("tqdm"):
            return  # not in a notebook (tqdm's own stand-in)
        self._module, self._display = module, display

        def keep(*objs: Any, **kwargs: Any) -> Any:
            kwargs["display_id"] = True
            handle = display(*objs, **kwargs)
            if handle is not None:
                self._handles.append(handle)
            return handle

        module.display = keep

    def remove(self) -> None:
        if self._module is not None:
            self._module.display, self._module = self._display, None
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.update({"text/plain": ""}, raw=True)
        self._handles.clear()


TICK_SECONDS = 1.0
"""How often a stage with no steps to count redraws its display (its elapsed time moves)."""


class _Ticker:
    """Refreshes a progress display every ``TICK_SECONDS`` while its block runs."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._interval = TICK_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a display closed under it: just stop
                self._bar.refresh()

    def __enter__(self) -> _Ticker:
        if self._bar is not None:
            self._thread = threading.Thread(target=self._run, name="imrec-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
