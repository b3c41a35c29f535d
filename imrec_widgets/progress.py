"""One progress display for every long job (indexing, ANN builds, maps): a tqdm bar in a
terminal, a widget bar in a notebook (``tqdm.auto`` picks), or nothing when not asked for."""

from __future__ import annotations

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
