"""``UmapExplorer``: a map of the whole collection, coloured by cluster, folder, label or tag.

Every image is a point drawn with WebGL (``MapLayer``) inside a bqplot ``Figure`` that keeps the
scales, pan/zoom and the small SVG marks (result rings, the query marker). Lasso and brush send
their geometry to Python, where the selection is computed over every point with numpy
(``mapdata.MapPoints``), drawn or not; ``selected`` holds the ids. ``link(search_widget)``
connects the map both ways with a ``SearchWidget``: results are ringed, clicking a point searches
"more like this", and "search only inside the selection" restricts the search to it. The tag box
tags (or untags) the selection in the index's catalog; a click on an image in the selection's
gallery leaves it out of what is tagged (and a second click takes it back).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets
import numpy as np
import traitlets

from imrec_widgets import projection as projection_module
from imrec_widgets.errors import ImrecError, ProjectionError
from imrec_widgets.map_colors import COLOR_BY, TAG_PREFIX, is_live, map_categories
from imrec_widgets.mapdata import Categories, MapPoints, display_sample, padded_range

from .map_layer import MapLayer
from .selection_gallery import SelectionGallery

if TYPE_CHECKING:
    from imrec_widgets.index import ImageIndex

    from .search_widget import SearchWidget

MAX_POINTS = 1_000_000
"""Points drawn at most; larger maps draw a fixed random sample (selections still cover all)."""

SVG_MAX_POINTS = 20_000
"""Points drawn at most when the browser has no WebGL and the map falls back to SVG."""

PAGE_SIZE = 40
"""Thumbnails per gallery page."""

GALLERY_HINT = "Lasso or brush points to see them here; click one to leave it out."

_RING_COLOR = "var(--jp-ui-font-color0, #111111)"
_RING_HALO = "var(--jp-layout-color0, #ffffff)"
_QUERY_FILL = "#ffd400"


def gallery_page(
    ids: Sequence[int], page: int, page_size: int = PAGE_SIZE
) -> tuple[list[int], int, int]:
    """The ids on ``page`` (clamped), the clamped page number and the page count."""
    pages = max(1, -(-len(ids) // page_size))
    page = min(max(0, page), pages - 1)
    return list(ids[page * page_size : (page + 1) * page_size]), page, pages


def legend_html(categories: Categories) -> str:
    """The legend: a swatch, the name and the count of each colour category."""
    rows = "".join(
        f'<div class="imrec-umap-legend-row" style="display:flex;align-items:center;gap:6px">'
        f'<span class="imrec-umap-swatch" style="display:inline-block;width:10px;height:10px;'
        f'border-radius:50%;background:{color}"></span>'
        f'<span class="imrec-umap-legend-name" style="flex:1;overflow:hidden;text-overflow:ellipsis;'
        f'white-space:nowrap" title="{html.escape(name)}">{html.escape(name)}</span>'
        f'<span class="imrec-umap-legend-count" style="color:var(--jp-ui-font-color2,#666)">{count:,}</span>'
        "</div>"
        for color, name, count in categories.legend()
    )
    # No height cap: every row shows (at most the palette's colours, "other" and noise).
    return f'<div class="imrec-umap-legend" style="font-size:12px">{rows}</div>'


class UmapExplorer(ipywidgets.VBox):  # type: ignore[misc]  # ipywidgets ships no type information
    """A 2-D UMAP map of ``index`` by ``feature``: computed (or loaded from the cache) on creation.

    ``max_points``: draw at most this many (a fixed random sample beyond); selections always
    cover every image on the map. ``color_by``: "cluster", "folder", "status" (in the UMAP fit
    sample or placed later), "tags" (each image's tag), "label" or "tag:<name>" (tagged or
    not); ``labels``: a CSV of ``id,label`` or ``path,label`` (as ``evaluate`` reads) or a
    mapping id -> label. ``tag_selection(name)`` / ``untag_selection(name)`` (and the tag box)
    tag the ``kept`` images: the selection less those clicked out in the gallery.
    """

    selected: Any = traitlets.List()
    """Ids inside the current selection, ascending (observable; assign a list to select)."""

    left_out: Any = traitlets.List(read_only=True)
    """Ids of the selection clicked out in the gallery, ascending: not tagged, not searched."""

    search_in_selection = traitlets.Bool(False)
    """Whether a linked SearchWidget searches only the selected images."""

    color_by = traitlets.Unicode("cluster")
    """What the points are coloured by: "cluster", "folder", "status", "tags", "label" or
    "tag:<name>"."""

    renderer = traitlets.Unicode("webgl")
    """"webgl" (every point), or "svg" (a sample) when the browser has no WebGL."""

    def __init__(
        self,
        index: ImageIndex,
        feature: str = "embedding",
        *,
        compute: bool = True,
        max_points: int = MAX_POINTS,
        page_size: int = PAGE_SIZE,
        color_by: str = "cluster",
        labels: str | Path | Mapping[int, str] | None = None,
        **umap_params: Any,
    ) -> None:
        from bqplot import Figure, LinearScale, Scatter
        from bqplot.interacts import PanZoom

        super().__init__()
        self.index = index
        self.feature = feature
        self.page_size = page_size
        self.max_points = int(max_points)
        self._page = 0
        self._linked: SearchWidget | None = None
        self._labels = labels
        self._setting_mask = False
        self._setting_menu = False
        self._categories: dict[str, Categories] = {}
        self.color_by = color_by
        self._svg_scatter: Any = None
        self.message = ipywidgets.HTML()
        self.message.add_class("imrec-umap-message")
        self.projection = self._load_projection(compute, umap_params)

        proj = self.projection
        self.points = MapPoints(
            proj.ids if proj else np.empty(0, np.int64),
            proj.xy if proj else np.empty((0, 2), np.float32),
        )
        self._clusters = proj.clusters if proj else np.empty(0, np.int32)
        self._selected_mask = np.zeros(len(self.points), dtype=bool)
        self._drawn = display_sample(len(self.points), self.max_points)
        self._drawn_points = MapPoints(self.points.ids[self._drawn], self.points.xy[self._drawn])
        if len(self._drawn) < len(self.points):
            self._say(
                f"Drawing a random {len(self._drawn):,} of {len(self.points):,} images; "
                "selections cover all of them.",
                level="info",
            )

        self.x_scale, self.y_scale = LinearScale(), LinearScale()
        self.reset_view()
        scales = {"x": self.x_scale, "y": self.y_scale}

        # Result rings: a light halo under a dark ring (theme colours), readable on any background.
        def ring(stroke: str, width: float) -> Scatter:
            return Scatter(
                x=[],
                y=[],
                scales=scales,
                default_size=90,
                colors=["transparent"],
                fill=False,
                stroke=stroke,
                stroke_width=width,
                marker="circle",
            )

        self.hit_halo = ring(_RING_HALO, 4.5)
        self.hits = ring(_RING_COLOR, 2.0)
        self.query_mark = Scatter(
            x=[],
            y=[],
            scales=scales,
            default_size=240,
            colors=[_QUERY_FILL],
            stroke=_RING_COLOR,
            stroke_width=1.5,
            marker="cross",
        )
        # The map layer zooms with the wheel under every tool; bqplot's PanZoom pans.
        self.panzoom = PanZoom(scales={"x": [self.x_scale], "y": [self.y_scale]}, allow_zoom=False)
        self.figure = Figure(
            marks=[self.hit_halo, self.hits, self.query_mark],
            interaction=None,
            # No margin: bqplot sizes its plot area as the figure's size minus the margins, and
            # a figure laid out while hidden (a reloaded page, a closed tab) would get a negative
            # one ("<rect> attribute width: A negative value is not valid"). The scales' padded
            # domains keep the points off the edges instead.
            fig_margin={"top": 0, "bottom": 0, "left": 0, "right": 0},
            layout=ipywidgets.Layout(width="560px", height="520px"),
            animation_duration=0,
            display_toolbar=False,
        )
        self.figure.add_class("imrec-umap")
        self.layer = MapLayer(figure=self.figure, x_scale=self.x_scale, y_scale=self.y_scale)
        self.layer.on_event(self._on_map_event)

        self.tool = ipywidgets.ToggleButtons(
            options=["lasso", "brush", "pan/zoom", "click"],
            value="lasso",
            style={"button_width": "auto"},
            tooltips=[
                "draw around points to select them (shift adds)",
                "drag a rectangle to select points (shift adds)",
                "drag to pan (the wheel zooms with every tool)",
                "click a point to search for images like it",
            ],
        )
        self.tool.layout = ipywidgets.Layout(width="auto")
        self.tool.add_class("imrec-umap-tool")
        self.color_menu = ipywidgets.Dropdown(
            options=self._color_options(color_by),
            value=color_by,
            description="colour",
            layout=ipywidgets.Layout(width="170px"),
        )
        self.color_menu.add_class("imrec-umap-color-by")
        self.count = ipywidgets.HTML(layout=ipywidgets.Layout(width="auto"))
        self.count.add_class("imrec-umap-count")
        self.legend = ipywidgets.HTML(layout=ipywidgets.Layout(width="200px"))
        # Hidden until link(): without a SearchWidget there is no search to restrict.
        self.scope_box = ipywidgets.Checkbox(
            description="search only inside the selection",
            indent=False,
            layout=ipywidgets.Layout(width="auto", display="none"),
        )
        self.clear_button = ipywidgets.Button(
            description="clear",
            layout=ipywidgets.Layout(width="60px"),
            tooltip="forget the selection",
        )
        self.clear_button.add_class("imrec-umap-clear")
        self.reset_button = ipywidgets.Button(
            description="whole map",
            layout=ipywidgets.Layout(width="auto"),
            tooltip="zoom out to show every point",
        )
        self.reset_button.add_class("imrec-umap-reset")
        self.prev_button = ipywidgets.Button(
            description="◀", layout=ipywidgets.Layout(width="36px")
        )
        self.next_button = ipywidgets.Button(
            description="▶", layout=ipywidgets.Layout(width="36px")
        )
        self.page_label = ipywidgets.HTML()
        self.gallery = SelectionGallery(layout=ipywidgets.Layout(width="420px"))
        self.gallery.on_toggle(self.toggle)
        self.tag_box = ipywidgets.Combobox(
            placeholder="tag name",
            options=list(index.tags()),
            ensure_option=False,
            layout=ipywidgets.Layout(width="160px"),
        )
        self.tag_box.add_class("imrec-umap-tag-name")
        self.tag_button = ipywidgets.Button(
            description="tag selection",
            layout=ipywidgets.Layout(width="auto"),
            tooltip="give this tag to the selected images (those not clicked out below)",
        )
        self.tag_button.add_class("imrec-umap-tag")
        self.untag_button = ipywidgets.Button(
            description="untag selection",
            layout=ipywidgets.Layout(width="auto"),
            tooltip="take this tag off the selected images (those not clicked out below)",
        )
        self.untag_button.add_class("imrec-umap-untag")

        self.tool.observe(self._tool_changed, "value")
        self.color_menu.observe(self._menu_picked, "value")
        self.clear_button.on_click(lambda _button: self.clear())
        self.reset_button.on_click(lambda _button: self.reset_view())
        self.prev_button.on_click(lambda _button: self._show_page(self._page - 1))
        self.next_button.on_click(lambda _button: self._show_page(self._page + 1))
        self.tag_button.on_click(lambda _button: self._tag_clicked(add=True))
        self.untag_button.on_click(lambda _button: self._tag_clicked(add=False))
        traitlets.link((self.scope_box, "value"), (self, "search_in_selection"))

        toolbar = ipywidgets.HBox(
            [
                self.tool,
                self.reset_button,
                self.color_menu,
                self.count,
                self.clear_button,
                self.scope_box,
            ],
            layout=ipywidgets.Layout(
                flex_flow="row wrap", align_items="center", grid_gap="4px 8px"
            ),
        )
        pager = ipywidgets.HBox([self.prev_button, self.page_label, self.next_button])
        tag_bar = ipywidgets.HBox(
            [self.tag_box, self.tag_button, self.untag_button],
            layout=ipywidgets.Layout(flex_flow="row wrap", align_items="center", grid_gap="4px"),
        )
        tag_bar.add_class("imrec-umap-tag-bar")
        self.children = [
            self.message,
            toolbar,
            ipywidgets.HBox(
                [
                    self.figure,
                    ipywidgets.VBox([self.legend, tag_bar, pager, self.gallery]),
                    self.layer,
                ]
            ),
        ]
        self.add_class("imrec-umap-explorer")
        self._recolor()
        self._update_count()
        self._show_page(0)

    def _load_projection(
        self, compute: bool, umap_params: dict[str, Any]
    ) -> projection_module.Projection | None:
        feature = self.feature
        try:
            loaded = projection_module.load_or_compute(
                self.index, feature, compute_missing=compute, progress=True, **umap_params
            )
        except ImrecError as exc:  # what the user can fix; anything else is a bug and raises
            self._say(str(exc))
            return None
        if loaded.pending:
            self._say(
                f"The map misses {loaded.pending} new or changed images; run idx.umap({feature!r}) to add them."
            )
        return loaded

    def __repr__(self) -> str:
        return f"UmapExplorer({self.feature!r}, {len(self.points)} points, {len(self.selected)} selected)"

    # -- messages ---------------------------------------------------------------------------------
    def _say(self, text: str, level: str = "error") -> None:
        color = (
            "var(--jp-error-color1, #d32f2f)"
            if level == "error"
            else "var(--jp-ui-font-color2, #555)"
        )
        self.message.value = f'<div style="color:{color};font-size:13px">{html.escape(text)}</div>'

    # -- colours ------------------------------------------------------------------------------------
    def categories(self, color_by: str | None = None) -> Categories:
        """Colour categories of every point on the map for ``color_by`` (default: the current);
        ``UsageError`` for a kind ``map_colors.map_categories`` does not know."""
        kind = color_by or self.color_by
        if is_live(kind) or kind not in self._categories:
            categories = map_categories(
                self.index,
                self.feature,
                self.points.ids,
                kind,
                clusters=self._clusters,
                labels=self._labels,
            )
            if is_live(kind):  # tags change any time: never cached
                return categories
            self._categories[kind] = categories
        return self._categories[kind]

    @traitlets.validate("color_by")
    def _valid_color_by(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        allowed = [c for c in COLOR_BY if c != "label" or self._labels is not None]
        if isinstance(value, str) and value.startswith(TAG_PREFIX):
            from imrec_widgets.tags import check_tag_name

            try:
                return TAG_PREFIX + check_tag_name(value[len(TAG_PREFIX) :])
            except ValueError as exc:
                raise traitlets.TraitError(str(exc)) from None
        if value not in allowed:
            raise traitlets.TraitError(
                f"color_by must be one of {', '.join(allowed)}; got {value!r}"
            )
        return str(value)

    @traitlets.observe("color_by")
    def _color_by_changed(self, _change: dict[str, Any]) -> None:
        if hasattr(self, "color_menu"):
            options = list(self.color_menu.options)
            self._show_in_menu(options if self.color_by in options else [*options, self.color_by])
        if hasattr(self, "layer"):
            self._recolor()

    def _show_in_menu(self, options: list[str]) -> None:
        """Give the colour menu ``options`` and show ``color_by`` in it, without the menu's
        passing moments (new options select the first) reaching ``color_by``."""
        self._setting_menu = True
        try:
            if list(self.color_menu.options) != options:
                self.color_menu.options = options
            self.color_menu.value = self.color_by
        finally:
            self._setting_menu = False

    def _menu_picked(self, change: dict[str, Any]) -> None:
        if not self._setting_menu and change["new"] is not None:
            self.color_by = change["new"]

    def _color_options(self, current: str) -> list[str]:
        """The colour menu: the fixed kinds, then "tag:<name>" for every tag (and ``current``)."""
        options = [c for c in COLOR_BY if c != "label" or self._labels is not None]
        options += [TAG_PREFIX + name for name in self.index.tags()]
        if current.startswith(TAG_PREFIX) and current not in options:
            options.append(current)
        return options

    def _refresh_colors(self) -> None:
        """New colours and legend for the same points (after tags changed)."""
        categories = self.categories()
        self.legend.value = legend_html(categories)
        if self.renderer == "svg":
            self._draw_svg()
        else:
            self.layer.set_colors(categories.codes[self._drawn], categories.colors)

    def _recolor(self) -> None:
        categories = self.categories()
        self.legend.value = legend_html(categories)
        if self.renderer == "svg":
            self._draw_svg()
            return
        self.layer.set_points(
            self.points.xy[self._drawn], categories.codes[self._drawn], categories.colors
        )
        self.layer.set_selection(self._selected_mask[self._drawn])

    # -- SVG fallback -----------------------------------------------------------------------------
    def _use_svg(self, reason: str) -> None:
        if self.renderer == "svg":
            return
        count = min(self.max_points, SVG_MAX_POINTS)
        self._drawn = display_sample(len(self.points), count)
        self._drawn_points = MapPoints(self.points.ids[self._drawn], self.points.xy[self._drawn])
        self._say(
            f"{reason}: the map is drawn as SVG, {len(self._drawn):,} of {len(self.points):,} points; "
            "selections still cover every image.",
            level="info",
        )
        self._draw_svg()
        self.renderer = "svg"

    def _draw_svg(self) -> None:
        from bqplot import ColorScale, Scatter

        categories = self.categories()
        colors = categories.colors or ["#4e79a7"]
        color_scale = ColorScale(
            colors=colors if len(colors) > 1 else colors * 2, min=0, max=max(1, len(colors) - 1)
        )
        xy = self.points.xy[self._drawn]
        scatter = Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            color=categories.codes[self._drawn].astype(np.float32),
            scales={"x": self.x_scale, "y": self.y_scale, "color": color_scale},
            default_size=16,
            stroke=None,
        )
        marks = [m for m in self.figure.marks if m is not self._svg_scatter]
        self._svg_scatter = scatter
        self.figure.marks = [scatter, *marks]
        self._show_svg_selection()

    def _show_svg_selection(self) -> None:
        if self._svg_scatter is None:
            return
        drawn_selected = np.flatnonzero(self._selected_mask[self._drawn])
        # The faded look only while something is selected: clearing restores the normal look.
        self._svg_scatter.unselected_style = {"opacity": 0.2} if self._selected_mask.any() else {}
        self._svg_scatter.selected = drawn_selected if drawn_selected.size else None

    # -- selection ----------------------------------------------------------------------------------
    def _tool_changed(self, change: dict[str, Any]) -> None:
        self.layer.tool = change["new"]
        self.figure.interaction = self.panzoom if change["new"] == "pan/zoom" else None

    def _on_map_event(self, message: dict[str, Any], _buffers: list[bytes]) -> None:
        event = message["event"]
        if event == "lasso":
            self.select_polygon(message["polygon"], add=message["add"])
        elif event == "brush":
            (x0, x1), (y0, y1) = message["x"], message["y"]
            self.select_box(x0, x1, y0, y1, add=message["add"])
        elif event == "click":
            self._map_clicked(message)
        elif event == "hover":
            self._hovered(message)
        elif event in ("webgl", "unsupported"):
            self._use_svg(
                f"No WebGL map in this browser ({message['message']})"
                if event == "webgl"
                else f"This bqplot version is not supported by the map ({message['message']})"
            )
        elif event == "error":
            self._say(f"The map could not start: {message['message']}")

    def _set_selection(self, mask: np.ndarray, add: bool = False) -> None:
        if add:
            mask = mask | self._selected_mask
        self._selected_mask = mask
        self._setting_mask = True
        try:
            self.selected = self.points.ids[mask].tolist()
        finally:
            self._setting_mask = False
        self._show_selection()

    @traitlets.validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> list[int]:
        value: list[int] = proposal["value"]
        if self._setting_mask:
            return value
        unique: list[int] = np.unique(np.asarray(value, dtype=np.int64).reshape(-1)).tolist()
        return unique

    @property
    def kept(self) -> list[int]:
        """The selection less the images clicked out in the gallery: what the tag buttons tag."""
        if not self.left_out:
            return list(self.selected)
        kept: list[int] = np.setdiff1d(self.selected, self.left_out).tolist()
        return kept

    def toggle(self, id_: int) -> None:
        """Leave the selected image ``id_`` out of the selection (or take it back, if left out)."""
        if id_ not in self.selected:
            raise ValueError(f"image {id_} is not in the selection")
        left_out = set(self.left_out) ^ {int(id_)}
        self.set_trait("left_out", sorted(left_out))
        self._update_count()
        self._show_page(self._page)
        self._apply_scope()

    @traitlets.observe("selected")
    def _selected_changed(self, change: dict[str, Any]) -> None:
        if not self._setting_mask:
            # Assigned from outside: on-map ids only.
            self._selected_mask = np.isin(
                self.points.ids, np.asarray(change["new"], dtype=np.int64)
            )
            on_map = self.points.ids[self._selected_mask].tolist()
            if on_map != change["new"]:
                self._set_selection(self._selected_mask)
                return
            self._show_selection()
        if self.left_out:  # a new selection keeps only the left-out images still in it
            self.set_trait("left_out", np.intersect1d(self.left_out, change["new"]).tolist())
        self._update_count()
        self._show_page(0)
        self._apply_scope()

    def _show_selection(self) -> None:
        if self.renderer == "svg":
            self._show_svg_selection()
        else:
            self.layer.set_selection(self._selected_mask[self._drawn])

    @traitlets.observe("search_in_selection")
    def _scope_toggled(self, _change: dict[str, Any]) -> None:
        self._apply_scope()

    def _apply_scope(self) -> None:
        if self._linked is not None:
            kept = self.kept
            self._linked.scope = kept if self.search_in_selection and kept else None

    def select(self, ids: Sequence[int] | np.ndarray, *, add: bool = False) -> None:
        """Select these ids (those on the map; others are ignored)."""
        self._set_selection(np.isin(self.points.ids, np.asarray(ids, dtype=np.int64)), add)

    def select_box(self, x0: float, x1: float, y0: float, y1: float, *, add: bool = False) -> None:
        """Select every point inside the rectangle [x0, x1] x [y0, y1] (map coordinates)."""
        self._set_selection(self.points.in_box((x0, x1), (y0, y1)), add)

    def select_polygon(
        self, polygon: Sequence[Sequence[float]] | np.ndarray, *, add: bool = False
    ) -> None:
        """Select every point inside ``polygon`` ([(x, y), ...] in map coordinates, even-odd rule)."""
        self._set_selection(self.points.in_polygon(polygon), add)

    def clear(self) -> None:
        """Forget the selection and remove the lasso and brush outlines; every point looks as before."""
        self._set_selection(np.zeros(len(self.points), dtype=bool))
        self.layer.clear_outlines()

    def reset_view(self) -> None:
        """Zoom and pan back to the whole map."""
        for scale, axis in ((self.x_scale, 0), (self.y_scale, 1)):
            scale.min, scale.max = padded_range(self.points.xy[:, axis])

    def _update_count(self) -> None:
        total = len(self.points)
        left_out = f" ({len(self.left_out):,} left out)" if self.left_out else ""
        self.count.value = (
            f'<span class="imrec-umap-selected" style="font-size:13px;white-space:nowrap">'
            f"{len(self.selected):,} of {total:,} selected{left_out}</span>"
        )

    # -- tags ---------------------------------------------------------------------------------------
    def tag_selection(self, name: str) -> int:
        """Give tag ``name`` to the ``kept`` images; how many did not have it yet (``TagError``
        for a bad name, an empty selection or a read-only index)."""
        count = self.index.tag(self._kept_or_raise(), name)
        self._tags_changed()
        return count

    def untag_selection(self, name: str) -> int:
        """Take tag ``name`` off the ``kept`` images; how many had it."""
        count = self.index.untag(self._kept_or_raise(), name)
        self._tags_changed()
        return count

    def _kept_or_raise(self) -> list[int]:
        from imrec_widgets.errors import TagError

        kept = self.kept
        if not kept:
            raise TagError(
                "every selected image is left out; click one in the gallery to take it back"
                if self.selected
                else "the selection is empty; lasso or brush some points first"
            )
        return kept

    def _tag_clicked(self, *, add: bool) -> None:
        """The tag box's buttons: tag or untag, and say what happened in one line."""
        from imrec_widgets.tags import check_tag_name, describe_tagging

        try:
            name = check_tag_name(self.tag_box.value)
            kept = len(self._kept_or_raise())
            changed = self.tag_selection(name) if add else self.untag_selection(name)
        except ImrecError as exc:
            self._say(str(exc))
            return
        self._say(describe_tagging(name, kept, changed, add=add), level="info")

    def _tags_changed(self) -> None:
        """Tags were written here: show them, and in a linked SearchWidget's "Within" menu."""
        self._show_tags()
        if self._linked is not None:
            self._linked.refresh_tags()

    def _linked_tags_changed(self, _change: Any) -> None:
        # the linked SearchWidget re-read the tags (it tagged results, or was told to): show them
        self._show_tags()

    def _show_tags(self) -> None:
        """Suggest the index's tags, offer them as colours, recolour if coloured by tags."""
        self.tag_box.options = list(self.index.tags())
        self._show_in_menu(self._color_options(self.color_by))
        if self.color_by == "tags" or self.color_by.startswith(TAG_PREFIX):
            self._refresh_colors()

    # -- gallery ---------------------------------------------------------------------------------------
    def _show_page(self, page: int) -> None:
        ids, self._page, pages = gallery_page(self.selected, page, self.page_size)
        self.page_label.value = f'<span style="font-size:12px">page {self._page + 1}/{pages}</span>'
        if not ids:
            self.gallery.show([], [], GALLERY_HINT)
            return
        left_out = set(self.left_out)
        items = [
            {"id": record.id, "path": record.path, "out": record.id in left_out}
            for record in self.index.records(ids)
        ]
        self.gallery.show(items, self.index.thumbnail_bytes(ids))

    # -- hover and click --------------------------------------------------------------------------------
    def _point_at(self, message: dict[str, Any]) -> int | None:
        """Position (in the drawn points) of the point under the pointer, if any."""
        return self._drawn_points.nearest(
            message["x"], message["y"], dx=message["dx"], dy=message["dy"], radius=message["radius"]
        )

    def _hovered(self, message: dict[str, Any]) -> None:
        position = self._point_at(message)
        if position is None:
            self.layer.send({"event": "hover", "id": None})
            return
        id_ = int(self._drawn_points.ids[position])
        record = self.index.records([id_])[0]
        x, y = (float(v) for v in self._drawn_points.xy[position])
        self.layer.send(
            {"event": "hover", "id": id_, "name": record.path, "x": x, "y": y},
            buffers=self.index.thumbnail_bytes([id_]),
        )

    def _map_clicked(self, message: dict[str, Any]) -> None:
        if message.get("add"):
            return
        if self.tool.value == "click":
            position = self._point_at(message)
            if position is not None and self._linked is not None:
                self._linked.search(int(self._drawn_points.ids[position]))
        elif self.selected:
            # A click without a drag (a lasso or box of no area) clears, as in other scatter tools.
            self.clear()

    # -- linking ------------------------------------------------------------------------------------------
    def link(self, search_widget: SearchWidget) -> UmapExplorer:
        """Link with a SearchWidget: highlight its results, search from clicked points, share scope."""
        self._linked = search_widget
        self.scope_box.layout.display = None
        search_widget.observe(self._results_changed, "results")
        search_widget.observe(self._linked_tags_changed, "tags")
        self._apply_scope()
        self._results_changed({"new": search_widget.results})
        return self

    def highlight(self, ids: Sequence[int], query_xy: np.ndarray | None = None) -> None:
        """Ring the points ``ids`` on the map and mark the query's position."""
        on_map = np.isin(self.points.ids, np.asarray(list(ids), dtype=np.int64))
        xy = self.points.xy[on_map]
        with self.figure.hold_sync():
            for mark in (self.hit_halo, self.hits):
                mark.x, mark.y = xy[:, 0], xy[:, 1]
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


def __getattr__(name: str) -> Any:
    # App moved to widgets/app.py, which imports this module; the old name still works, looked
    # up on first use by name (not an import statement: app.py depends on this module, never
    # the other way round, and tests/test_structure.py keeps the import graph free of cycles).
    if name == "App":
        import importlib

        return importlib.import_module(".app", __package__).App
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
