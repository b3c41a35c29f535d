"""``MapLayer``: the WebGL points and the pointer gestures of a map, drawn inside a bqplot Figure.

Python owns every trait: positions, colour codes, palette, the selection mask and the tool go to
the browser as binary arrays and are never taken back from it (``set_state`` from the front end
is ignored). The browser only sends messages: a lasso polygon, a brush rectangle, a click or the
pointer's position, in map coordinates. Each is validated here before a handler sees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anywidget
import numpy as np
import traitlets
from bqplot import Figure, LinearScale
from ipywidgets import widget_serialization

from imrec_widgets.errors import MapMessageError

from ._base import STATIC_DIR

TOOLS = ("lasso", "brush", "pan/zoom", "click")
"""The map's tools; lasso, brush and click are this layer's gestures, pan/zoom is bqplot's."""

MAX_VERTICES = 50_000
"""A lasso polygon with more vertices than this is refused (a front end cannot send a huge one)."""

Handler = Callable[[dict[str, Any], list[bytes]], None]


def _number(content: dict[str, Any], key: str) -> float:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MapMessageError(f"{key!r} must be a finite number")
    try:
        number = float(value)  # an int past float's range (JSON allows 10**400) overflows here
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MapMessageError(f"{key!r} must be a finite number")
    return number


def _pair(content: dict[str, Any], key: str) -> tuple[float, float]:
    value = content.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MapMessageError(f"{key!r} must be two numbers")
    return _number({"v": value[0]}, "v"), _number({"v": value[1]}, "v")


def parse_message(content: Any) -> dict[str, Any]:
    """A front-end message, checked and normalised, or MapMessageError.

    ``lasso``: ``polygon`` (V x 2 array); ``brush``: ``x``, ``y`` ranges; ``click`` and ``hover``:
    ``x``, ``y`` plus ``dx``, ``dy`` (map units per pixel); ``ready``/``webgl``/``unsupported``/
    ``error``: a ``message`` string. Selections carry ``add`` (shift held).
    """
    if not isinstance(content, dict):
        raise MapMessageError("a message must be an object")
    event = content.get("event")
    if event in ("ready", "webgl", "unsupported", "error"):
        message = content.get("message", "")
        return {"event": event, "message": str(message)[:500] if isinstance(message, str) else ""}
    add = content.get("add", False)
    if not isinstance(add, bool):
        raise MapMessageError("'add' must be true or false")
    if event == "lasso":
        polygon = content.get("polygon")
        if not isinstance(polygon, list) or len(polygon) > MAX_VERTICES:
            raise MapMessageError(f"'polygon' must be a list of at most {MAX_VERTICES} points")
        try:
            vertices = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MapMessageError("'polygon' must hold [x, y] number pairs") from exc
        if vertices.size and (
            vertices.ndim != 2 or vertices.shape[1] != 2 or not np.isfinite(vertices).all()
        ):
            raise MapMessageError("'polygon' must hold finite [x, y] pairs")
        return {"event": "lasso", "polygon": vertices.reshape(-1, 2), "add": add}
    if event == "brush":
        return {"event": "brush", "x": _pair(content, "x"), "y": _pair(content, "y"), "add": add}
    if event in ("click", "hover"):
        parsed = {"event": event, "add": add}
        for key in ("x", "y", "dx", "dy"):
            parsed[key] = _number(content, key)
        parsed["radius"] = (
            min(max(_number(content, "radius"), 0.0), 50.0) if "radius" in content else 8.0
        )
        return parsed
    raise MapMessageError(f"unknown map event {event!r}")


class MapLayer(anywidget.AnyWidget):
    """Every point of a map, drawn with WebGL in ``figure`` on its ``x_scale``/``y_scale``.

    Not displayed on its own: put it in the same container as ``figure`` (it draws into the
    figure's plot area). ``on_event(handler)`` receives the parsed front-end messages.
    """

    _esm = STATIC_DIR / "umap_map.js"
    _css = STATIC_DIR / "umap_map.css"

    figure = traitlets.Instance(Figure).tag(sync=True, **widget_serialization)
    """The bqplot Figure to draw into."""

    x_scale = traitlets.Instance(LinearScale).tag(sync=True, **widget_serialization)
    """The figure's x scale (its min/max follow pan and zoom)."""

    y_scale = traitlets.Instance(LinearScale).tag(sync=True, **widget_serialization)
    """The figure's y scale."""

    x = traitlets.Bytes(b"").tag(sync=True)
    """float32 x of every drawn point."""

    y = traitlets.Bytes(b"").tag(sync=True)
    """float32 y of every drawn point."""

    codes = traitlets.Bytes(b"").tag(sync=True)
    """uint8 colour code (index into ``palette``) of every drawn point."""

    palette = traitlets.List(traitlets.Unicode()).tag(sync=True)
    """CSS hex colours, one per code."""

    mask = traitlets.Bytes(b"").tag(sync=True)
    """uint8 1/0 per drawn point: selected or not; empty when nothing is selected."""

    tool = traitlets.Enum(TOOLS, default_value="lasso").tag(sync=True)
    """Which gesture the pointer makes."""

    point_size = traitlets.Float(0.0).tag(sync=True)
    """Point diameter in pixels; 0 picks one by the number of points."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers: list[Handler] = []
        self.rejected = 0
        """Front-end messages refused as malformed (a hostile or broken front end)."""
        self.on_msg(self._received)

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Ignore state sent by the front end: every trait here is Python's."""
        return

    def set_points(self, xy: np.ndarray, codes: np.ndarray, palette: list[str]) -> None:
        """Draw ``xy`` (N x 2) coloured by ``codes`` into ``palette``; clears the selection look."""
        xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
        codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
        if len(codes) != len(xy):
            raise ValueError(f"{len(xy)} points but {len(codes)} colour codes")
        with self.hold_sync():
            self.x = np.ascontiguousarray(xy[:, 0]).tobytes()
            self.y = np.ascontiguousarray(xy[:, 1]).tobytes()
            self.codes = codes.tobytes()
            self.palette = list(palette)
            self.mask = b""

    def set_colors(self, codes: np.ndarray, palette: list[str]) -> None:
        """New colour codes for the drawn points."""
        with self.hold_sync():
            self.codes = np.asarray(codes, dtype=np.uint8).tobytes()
            self.palette = list(palette)

    def set_selection(self, mask: np.ndarray | None) -> None:
        """Show ``mask`` (bool per drawn point) as selected; None or no True shows no selection."""
        self.mask = (
            b"" if mask is None or not np.any(mask) else np.asarray(mask, dtype=np.uint8).tobytes()
        )

    def clear_outlines(self) -> None:
        """Remove the lasso and brush outlines the browser keeps after a gesture."""
        self.send({"event": "clear"})

    def on_event(self, handler: Handler) -> None:
        """Call ``handler(parsed_message, buffers)`` for every valid front-end message."""
        self._handlers.append(handler)

    def _received(self, _widget: Any, content: Any, buffers: list[bytes]) -> None:
        try:
            message = parse_message(content)
        except MapMessageError:
            self.rejected += 1
            return
        for handler in self._handlers:
            handler(message, buffers)
