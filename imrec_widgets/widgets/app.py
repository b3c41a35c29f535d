"""``App``: the widgets of one index in tabs: "Search & map" (a SearchWidget above a UmapExplorer,
linked both ways) and "Duplicates" (a DuplicatesWidget, made when the tab is first opened)."""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import ipywidgets

from imrec_widgets.errors import ImrecError

from .search_widget import SearchWidget
from .umap_explorer import UmapExplorer

if TYPE_CHECKING:
    from imrec_widgets.index import ImageIndex

    from .duplicates_widget import DuplicatesWidget

log = logging.getLogger(__name__)

TITLES = ("Search & map", "Duplicates")


class App(ipywidgets.Tab):  # type: ignore[misc]  # ipywidgets ships no type information
    """Search, map and duplicates of ``index`` in tabs; ``options`` go to the UmapExplorer.

    ``app.search`` and ``app.explorer`` are linked (results ringed on the map, "search only
    inside the selection"); ``app.duplicates`` is made on first use, since finding the groups
    reads every hash and most sessions never open the tab.
    """

    def __init__(self, index: ImageIndex, feature: str = "embedding", **options: Any) -> None:
        self.index = index
        self.search = SearchWidget(index)
        self.explorer = UmapExplorer(index, feature, **options).link(self.search)
        self._duplicates: DuplicatesWidget | None = None
        self._duplicates_tab = ipywidgets.VBox()
        self._duplicates_tab.add_class("imrec-app-duplicates")
        super().__init__(
            children=[ipywidgets.VBox([self.search, self.explorer]), self._duplicates_tab],
            titles=TITLES,
        )
        self.add_class("imrec-app")
        self.observe(self._tab_opened, "selected_index")

    @property
    def duplicates(self) -> DuplicatesWidget | None:
        """The Duplicates tab's widget, made now if not yet (None if the index cannot find
        duplicates; the tab then says why)."""
        if self._duplicates is None and not self._duplicates_tab.children:
            from .duplicates_widget import DuplicatesWidget

            try:
                self._duplicates = DuplicatesWidget(self.index)
                shown: ipywidgets.Widget = self._duplicates
            # an index without a hash feature (a UsageError): the other tab stays usable and
            # this one says why it is empty
            except ImrecError as exc:
                log.info("App: no duplicates tab: %s", exc)
                shown = ipywidgets.HTML(
                    '<div style="color:var(--jp-error-color1,#d32f2f);font-size:13px">'
                    f"No duplicates to show: {html.escape(str(exc))}</div>"
                )
            self._duplicates_tab.children = [shown]
        return self._duplicates

    def _tab_opened(self, change: dict[str, Any]) -> None:
        if change["new"] == TITLES.index("Duplicates"):
            _ = self.duplicates
