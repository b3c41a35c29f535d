"""What every imrec anywidget shares: where the front-end files are, strict keyword arguments."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import anywidget

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
"""The widgets' ES modules and CSS (``imrec_widgets/static/``), in a checkout, an editable
install and a wheel alike. Each widget's front end is one ES module that anywidget loads from
its path (``_esm = STATIC_DIR / "x.js"``), so with ``ANYWIDGET_HMR=1`` (and ``watchfiles``)
live widgets reload when the file is edited in a checkout."""


class BaseWidget(anywidget.AnyWidget):
    """An anywidget that refuses unknown keyword arguments instead of silently ignoring them.

    A subclass names its own keyword arguments in its ``__init__`` and passes the rest here;
    of those only ``layout`` (ipywidgets sizing) is accepted.
    """

    def __init__(self, **kwargs: Any) -> None:
        for name in kwargs:
            if name != "layout":
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {name!r}; "
                    f"it accepts {', '.join(self._accepted_keywords())}"
                )
        super().__init__(**kwargs)

    @classmethod
    def _accepted_keywords(cls) -> list[str]:
        """The keyword arguments of ``cls.__init__`` and ``layout``, sorted."""
        named = {
            parameter.name
            for parameter in inspect.signature(cls.__init__).parameters.values()
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        }
        return sorted((named - {"self"}) | {"layout"})
