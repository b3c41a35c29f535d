"""One progress display for every long job (indexing, ANN builds, maps): a tqdm bar in a
terminal, a widget bar in a notebook (``tqdm.auto`` picks), or nothing when not asked for.

``progress_bar`` counts the steps of one job; ``StageBar`` shows the named stages of one (a
map's "reading features", "PCA", "UMAP fit", ...) on one bar, reset between stages; and
``RemovedDisplays`` takes notebook bars out of the saved notebook once a job is done. This is
the only module that imports tqdm.
"""

from __future__ import annotations

import contextlib
from typing import Any


def progress_bar(
    total: int | None,
    enabled: bool,
    *,
    desc: str,
    unit: str = "it",
    leave: bool = True,
    bar_format: str | None = None,
) -> Any:
    """A ``tqdm`` bar of ``total`` steps; disabled (drawing nothing) unless ``enabled`` and
    there is something to count (``total`` None: an open-ended count, as for waiting).

    Use it as a context manager or call ``close()``; ``update(n)`` advances it.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        disable=not enabled or total == 0,
        unit=unit,
        desc=desc,
        leave=leave,
        bar_format=bar_format,
        dynamic_ncols=True,
    )


class StageBar:
    """One bar showing the named stages of a job in turn: ``show(stage, done, total)`` draws
    ``stage`` at ``done`` of ``total``, resetting the bar when the stage changes.

    A stage with nothing to count (``total`` 0) is still shown, by name, and later stages on
    the same bar too. The bar goes away when closed (``leave=False``), and in a notebook its
    widget (with every other tqdm bar shown meanwhile, as umap-learn's epochs) is removed from
    the saved notebook (see ``RemovedDisplays``): the result is shown below it.
    """

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage: str | None = None
        self._displays = RemovedDisplays()

    @property
    def stage(self) -> str | None:
        """The stage shown now (None before the first)."""
        return self._stage

    def show(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            # Not progress_bar: a first stage with nothing to count must not disable the bar.
            self._bar = tqdm(
                total=total,
                desc=stage,
                bar_format=self.FORMAT,
                dynamic_ncols=True,
                leave=False,
            )
        elif stage != self._stage:
            self._bar.set_description_str(stage, refresh=False)
            self._bar.reset(total=total)
        self._stage = stage
        self._bar.n = done
        self._bar.refresh()

    def describe(self, text: str) -> None:
        """Show ``text`` in place of the stage's name (the stage itself stays the same)."""
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=True)

    def refresh(self) -> None:
        """Redraw the bar (its elapsed time moves)."""
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
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
