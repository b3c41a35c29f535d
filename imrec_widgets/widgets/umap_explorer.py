"""``UmapExplorer``: a bqplot map of the collection, coloured by cluster, with lasso/brush selection.

The map is an SVG ``Scatter`` (x/y cross to the browser as binary arrays). Selecting shows a paged
gallery of thumbnails; ``selected`` holds the ids. ``link(search_widget)`` connects it both ways
with a ``SearchWidget``: results are highlighted, clicking a point searches "more like this", and
"search only inside the selection" restricts the search widget's scope.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets
import numpy as np
import traitlets

from imrec_widgets import projection as projection_module
from imrec_widgets.projection import ProjectionError

if TYPE_CHECKING:
    from imrec_widgets.index import ImageIndex

    from .search_widget import SearchWidget

MAX_POINTS = 50_000
"""Points drawn at most; larger maps show a fixed random sample of this size."""

PAGE_SIZE = 40
"""Thumbnails per gallery page."""

_CLUSTER_COLORS = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#8c564b",
]
_NOISE_COLOR = "#b0b0b0"


def point_colors(clusters: np.ndarray) -> list[str]:
    """One CSS colour per point: a palette colour per cluster, grey for noise (-1)."""
    palette = np.array(_CLUSTER_COLORS)
    colors = palette[np.mod(clusters, len(palette))].astype(object)
    colors[clusters < 0] = _NOISE_COLOR
    return colors.tolist()


def ids_in_box(ids: np.ndarray, xy: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]) -> np.ndarray:
    """Ids of the points inside the rectangle ``x_range`` x ``y_range`` (either order)."""
    (x0, x1), (y0, y1) = sorted(x_range), sorted(y_range)
    inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    return ids[inside]


def padded_range(values: np.ndarray, margin: float = 0.05) -> dict[str, float]:
    """``min``/``max`` for a scale showing ``values`` with ``margin`` of their span on each side."""
    if len(values) == 0:
        return {}
    low, high = float(np.min(values)), float(np.max(values))
    pad = (high - low) * margin or 1.0
    return {"min": low - pad, "max": high + pad}


def gallery_page(ids: Sequence[int], page: int, page_size: int = PAGE_SIZE) -> tuple[list[int], int, int]:
    """The ids on ``page`` (clamped), the clamped page number and the page count."""
    pages = max(1, -(-len(ids) // page_size))
    page = min(max(0, page), pages - 1)
    return list(ids[page * page_size : (page + 1) * page_size]), page, pages


def display_sample(count: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Positions of the points to draw: all of them, or a fixed random sample of ``max_points``."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_points, replace=False))


class UmapExplorer(ipywidgets.VBox):
    """A 2-D UMAP map of ``index`` by ``feature``: computed (or loaded from the cache) on creation."""

    selected = traitlets.List(traitlets.Int())
    """Ids inside the current lasso or brush selection (observable)."""

    search_in_selection = traitlets.Bool(False)
    """Whether a linked SearchWidget searches only the selected images."""

    def __init__(
        self,
        index: ImageIndex,
        feature: str = "embedding",
        *,
        compute: bool = True,
        max_points: int = MAX_POINTS,
        page_size: int = PAGE_SIZE,
        **umap_params: Any,
    ) -> None:
        from bqplot import Figure, LinearScale, Scatter
        from bqplot.interacts import BrushSelector, LassoSelector, PanZoom

        self.index = index
        self.feature = feature
        self.page_size = page_size
        self._page = 0
        self._linked: SearchWidget | None = None
        self.message = ipywidgets.HTML()
        self.message.add_class("imrec-umap-message")
        try:
            state = projection_module.status(index, feature) if index.exists() else {"state": "missing"}
            # Parameters asked for are honoured: compute() reuses the cached fit when they match.
            if compute and (state["state"] != "fresh" or umap_params):
                self.projection = index.umap(feature, **umap_params)
            else:
                self.projection = index.projection(feature)
                if state["state"] == "stale":
                    self._say(f"The map misses {state['pending']} new or changed images; run idx.umap({feature!r}) to add them.")
        except (ProjectionError, ValueError) as exc:
            self.projection = None
            self._say(str(exc))
        proj = self.projection
        shown = display_sample(len(proj) if proj else 0, max_points)
        self._ids = proj.ids[shown] if proj else np.empty(0, np.int64)
        self._xy = proj.xy[shown] if proj else np.empty((0, 2), np.float32)
        clusters = proj.clusters[shown] if proj else np.empty(0, np.int32)
        self._position = {int(i): n for n, i in enumerate(self._ids)}
        if proj is not None and len(shown) < len(proj):
            self._say(f"Showing a random {len(shown):,} of {len(proj):,} images.", level="info")

        # Padded domains: points at the extremes are drawn whole, and a lasso can go round them.
        self.x_scale, self.y_scale = (LinearScale(**padded_range(self._xy[:, axis])) for axis in (0, 1))
        scales = {"x": self.x_scale, "y": self.y_scale}
        # No "click": "select": a click searches from the point (see `_clicked`) and must not
        # replace the lasso or brush selection with that one point.
        self.scatter = Scatter(
            x=self._xy[:, 0], y=self._xy[:, 1], colors=point_colors(clusters) or ["#4e79a7"],
            scales=scales, default_size=16, stroke=None,
            unselected_style={"opacity": 0.25}, selected_style={"opacity": 1.0},
            interactions={"hover": "tooltip"},
        )
        self.hits = Scatter(x=[], y=[], scales=scales, default_size=80, colors=["transparent"], fill=False,
                            stroke="#111111", stroke_width=2.0, marker="circle")
        self.query_mark = Scatter(x=[], y=[], scales=scales, default_size=220, colors=["#ffd400"],
                                  stroke="#111111", marker="cross")
        self.lasso = LassoSelector(marks=[self.scatter], x_scale=self.x_scale, y_scale=self.y_scale)
        self.brush = BrushSelector(marks=[self.scatter], x_scale=self.x_scale, y_scale=self.y_scale, color="#4e79a7")
        self.panzoom = PanZoom(scales={"x": [self.x_scale], "y": [self.y_scale]})
        self.figure = Figure(
            marks=[self.scatter, self.hits, self.query_mark], interaction=self.lasso,
            fig_margin={"top": 10, "bottom": 10, "left": 10, "right": 10},
            layout=ipywidgets.Layout(width="560px", height="520px"),
            animation_duration=0,
        )
        self.figure.add_class("imrec-umap")

        # Every selector covers the plot with its own event layer, so clicking a point (to search
        # from it) needs a tool with no selector: "click".
        self.tool = ipywidgets.ToggleButtons(
            options=["lasso", "brush", "pan/zoom", "click"], value="lasso", style={"button_width": "auto"},
            tooltips=["draw around points to select them", "drag a rectangle to select points",
                      "drag to pan, scroll to zoom", "click a point to search for images like it"],
        )
        self.tool.add_class("imrec-umap-tool")
        self.count = ipywidgets.HTML()
        self.count.add_class("imrec-umap-count")
        self.hover = ipywidgets.HTML()
        self.scope_box = ipywidgets.Checkbox(description="search only inside the selection", indent=False)
        self.clear_button = ipywidgets.Button(description="clear", layout=ipywidgets.Layout(width="60px"))
        self.prev_button = ipywidgets.Button(description="◀", layout=ipywidgets.Layout(width="36px"))
        self.next_button = ipywidgets.Button(description="▶", layout=ipywidgets.Layout(width="36px"))
        self.page_label = ipywidgets.HTML()
        self.gallery = ipywidgets.HTML(layout=ipywidgets.Layout(width="420px"))
        self.gallery.add_class("imrec-umap-gallery")

        self.tool.observe(self._tool_changed, "value")
        self.scatter.observe(self._mark_selected, "selected")
        self.brush.observe(self._brushed, ["selected_x", "selected_y"])
        self.scatter.on_hover(self._hovered)
        self.scatter.on_element_click(self._clicked)
        self.clear_button.on_click(lambda _button: self.clear())
        self.prev_button.on_click(lambda _button: self._show_page(self._page - 1))
        self.next_button.on_click(lambda _button: self._show_page(self._page + 1))
        traitlets.link((self.scope_box, "value"), (self, "search_in_selection"))

        toolbar = ipywidgets.HBox([self.tool, self.count, self.clear_button, self.scope_box, self.hover])
        pager = ipywidgets.HBox([self.prev_button, self.page_label, self.next_button])
        super().__init__([self.message, toolbar, ipywidgets.HBox([self.figure, ipywidgets.VBox([pager, self.gallery])])])
        self.add_class("imrec-umap-explorer")
        self._update_count()
        self._show_page(0)

    def __repr__(self) -> str:
        return f"UmapExplorer({self.feature!r}, {len(self._ids)} points, {len(self.selected)} selected)"

    # -- messages ---------------------------------------------------------------------------------
    def _say(self, text: str, level: str = "error") -> None:
        color = "var(--jp-error-color1, #d32f2f)" if level == "error" else "var(--jp-ui-font-color2, #555)"
        self.message.value = f'<div style="color:{color};font-size:13px">{html.escape(text)}</div>'

    # -- selection ----------------------------------------------------------------------------------
    def _tool_changed(self, change: dict[str, Any]) -> None:
        tools = {"lasso": self.lasso, "brush": self.brush, "pan/zoom": self.panzoom, "click": None}
        self.figure.interaction = tools[change["new"]]

    def _mark_selected(self, change: dict[str, Any]) -> None:
        positions = change["new"]
        if positions is None:
            return
        ids = self._ids[np.asarray(positions, dtype=np.int64)] if len(positions) else np.empty(0, np.int64)
        self.selected = sorted(int(i) for i in ids)

    def _brushed(self, _change: dict[str, Any]) -> None:
        # Computed here from the rectangle, so a brush whose `brushing` never ends still selects.
        x_range, y_range = self.brush.selected_x, self.brush.selected_y
        if x_range is None or y_range is None or len(x_range) != 2 or len(y_range) != 2:
            return
        self.selected = sorted(int(i) for i in ids_in_box(self._ids, self._xy, x_range, y_range))

    @traitlets.observe("selected")
    def _selected_changed(self, _change: dict[str, Any]) -> None:
        self._update_count()
        self._show_page(0)
        self._apply_scope()

    @traitlets.observe("search_in_selection")
    def _scope_toggled(self, _change: dict[str, Any]) -> None:
        self._apply_scope()

    def _apply_scope(self) -> None:
        if self._linked is not None:
            self._linked.scope = list(self.selected) if self.search_in_selection and self.selected else None

    def clear(self) -> None:
        """Forget the selection, and remove the lasso outlines and the brush rectangle."""
        # bqplot's lasso selects the union of every outline still drawn: without a reset, the
        # next lasso would bring the cleared points back.
        self.lasso.reset()
        self.brush.selected = None
        self.scatter.selected = None
        self.selected = []

    def select(self, ids: Sequence[int]) -> None:
        """Select these ids (those drawn on the map), as if lassoed."""
        wanted = [self._position[int(i)] for i in ids if int(i) in self._position]
        self.scatter.selected = wanted or None
        self.selected = sorted(int(self._ids[p]) for p in wanted)

    def _update_count(self) -> None:
        total = len(self._ids)
        self.count.value = (
            f'<span class="imrec-umap-selected" style="font-size:13px">'
            f"{len(self.selected):,} of {total:,} selected</span>"
        )

    # -- gallery ---------------------------------------------------------------------------------------
    def _show_page(self, page: int) -> None:
        ids, self._page, pages = gallery_page(self.selected, page, self.page_size)
        self.page_label.value = f'<span style="font-size:12px">page {self._page + 1}/{pages}</span>'
        if not ids:
            self.gallery.value = '<div style="font-size:12px;color:var(--jp-ui-font-color2,#666)">Lasso or brush points to see them here.</div>'
            return
        records = self.index.records(ids)
        thumbs = self.index.thumbnail_bytes(ids) if "thumb" in self.index.settings["features"] else [b""] * len(ids)
        cells = []
        for record, jpeg in zip(records, thumbs, strict=True):
            name = html.escape(record.path.rsplit("/", 1)[-1])
            cells.append(
                f'<img class="imrec-umap-thumb" src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}" '
                f'width="64" height="64" title="{html.escape(record.path)}" alt="{name}" '
                'style="border-radius:3px;object-fit:contain">'
            )
        self.gallery.value = f'<div style="display:flex;flex-wrap:wrap;gap:4px">{"".join(cells)}</div>'

    # -- hover and click --------------------------------------------------------------------------------
    def _hovered(self, _mark: Any, target: dict[str, Any]) -> None:
        position = target.get("data", {}).get("index")
        if position is None:
            return
        record = self.index.records([int(self._ids[int(position)])])[0]
        self.hover.value = f'<span style="font-size:12px" title="{html.escape(record.path)}">{html.escape(record.path)}</span>'

    def _clicked(self, _mark: Any, target: dict[str, Any]) -> None:
        position = target.get("data", {}).get("index")
        if position is not None and self._linked is not None:
            self._linked.search(int(self._ids[int(position)]))

    # -- linking ------------------------------------------------------------------------------------------
    def link(self, search_widget: SearchWidget) -> UmapExplorer:
        """Link with a SearchWidget: highlight its results, search from clicked points, share scope."""
        self._linked = search_widget
        search_widget.observe(self._results_changed, "results")
        self._apply_scope()
        self._results_changed({"new": search_widget.results})
        return self

    def highlight(self, ids: Sequence[int], query_xy: np.ndarray | None = None) -> None:
        """Ring the points ``ids`` on the map and mark the query's position."""
        positions = [self._position[int(i)] for i in ids if int(i) in self._position]
        self.hits.x, self.hits.y = self._xy[positions, 0], self._xy[positions, 1]
        if query_xy is None or len(query_xy) == 0:
            self.query_mark.x, self.query_mark.y = [], []
        else:
            self.query_mark.x, self.query_mark.y = query_xy[:, 0], query_xy[:, 1]

    def _results_changed(self, change: dict[str, Any]) -> None:
        hits = change["new"] or []
        self.highlight([hit["id"] for hit in hits], self._query_position())

    def _query_position(self) -> np.ndarray | None:
        query = None if self._linked is None else self._linked.query
        if query is None or self.projection is None:
            return None
        try:
            return projection_module.place(self.index, self.feature, query)
        except (ProjectionError, ValueError, OSError):
            return None


def App(index: ImageIndex, feature: str = "embedding", **options: Any) -> ipywidgets.VBox:
    """A SearchWidget above a UmapExplorer of ``index``, linked both ways."""
    from .search_widget import SearchWidget

    search = SearchWidget(index)
    explorer = UmapExplorer(index, feature, **options).link(search)
    app = ipywidgets.VBox([search, explorer])
    app.search, app.explorer = search, explorer
    return app
