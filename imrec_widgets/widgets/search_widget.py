"""``SearchWidget``: upload, drop or paste images (or click a result) and see the nearest ones."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import traitlets

from imrec_widgets.errors import (
    ImageDecodeError,
    ImrecError,
    MalformedMessage,
    TagError,
    UsageError,
)
from imrec_widgets.features import (
    DEFAULT_HYBRID_WEIGHTS,
    HYBRID_MODE,
    check_hybrid_weights,
    check_mode_metric,
    mode_metrics,
    search_modes,
)
from imrec_widgets.tags import describe_tagging

from ._base import STATIC_DIR, BaseWidget
from .query_display import (
    QUERY_THUMB_SIZE,
    check_image_ids,
    is_image_id,
    query_items,
    query_label,
    shown_thumbnails,
)
from .uploads import (
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOAD_TOTAL_BYTES,
    Uploads,
    is_whole,
)

if TYPE_CHECKING:
    from imrec_widgets.index import ImageIndex
    from imrec_widgets.results import SearchResults

K_MIN, K_MAX = 1, 100
"""Bounds of ``SearchWidget.k`` (the front end's number input uses the same)."""

CONTROLS = ("mode", "metric", "k", "weights", "within_tag")
"""The controls the browser may ask to change, each with a ``{"type": "set", "name", "value"}``
message that is checked here like an assignment from Python. The browser writes no trait."""

MARKS = ("relevant", "not_relevant", "none")
"""What a ``{"type": "mark", "id", "mark"}`` message may set a result to (👍, 👎, neither)."""

REFINE_MODE = "embedding"
"""The feature "refine" searches (relevance feedback on the CNN embedding, cosine)."""

MAX_ERROR_CHARS = 1000
"""Longest error text accepted from the browser's own file checks (longer is cut)."""

MAX_NAME_CHARS = 100
"""Longest mode or metric name (or weights key) accepted from the browser."""

MAX_IMAGE_ID = 2**63 - 1

_log = logging.getLogger(__name__)  # under "imrec_widgets"
UNEXPECTED_ERROR = "unexpected error (see log)"


def available_modes(index: ImageIndex) -> list[str]:
    """The search modes whose feature ``index`` holds, in the feature table's order."""
    features = set(index.settings.get("features", ()))
    return [mode for mode in search_modes() if mode in features]


def hybrid_unavailable(index: ImageIndex) -> str:
    """Why ``index`` cannot offer the hybrid mode ("" when it can)."""
    try:
        check_hybrid_weights(None, available_modes(index))
    except ValueError as exc:
        return str(exc)
    return ""


def default_weights(modes: Sequence[str]) -> dict[str, float]:
    """``DEFAULT_HYBRID_WEIGHTS`` restricted to ``modes``."""
    return {mode: weight for mode, weight in DEFAULT_HYBRID_WEIGHTS.items() if mode in modes}


def check_weights(weights: Any, modes: Sequence[str]) -> dict[str, float]:
    """``weights`` as ``{mode: float}`` for the hybrid mode; ValueError saying what is wrong.

    Every key must be one of ``modes`` (the index's search modes), every value a finite
    number >= 0, and at least one of them positive (see ``check_hybrid_weights``).
    """
    if not isinstance(weights, Mapping):
        raise UsageError(
            f"weights must map modes to numbers, like {DEFAULT_HYBRID_WEIGHTS}, not "
            f"{repr(weights)[:80]}"
        )
    for mode, weight in weights.items():
        if isinstance(weight, (tuple, list)):
            raise UsageError(
                f"the weight of {mode!r} must be a number (the widget uses each mode's default "
                f"metric), not {weight!r}"
            )
    check_hybrid_weights(weights, list(modes))
    return {str(mode): float(weight) for mode, weight in weights.items()}


def default_mode(modes: Sequence[str]) -> str:
    """``"embedding"`` when available, else the first of ``modes`` ("" when there are none)."""
    if "embedding" in modes:
        return "embedding"
    return modes[0] if modes else ""


def check_k(k: Any) -> int:
    """``k`` as an int within [K_MIN, K_MAX]; ValueError otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UsageError(f"k must be a whole number from {K_MIN} to {K_MAX}, not {k!r}")
    if not K_MIN <= int(k) <= K_MAX:
        raise UsageError(f"k must be from {K_MIN} to {K_MAX}, not {int(k)}")
    return int(k)


class _Query:
    """A query as it will be re-run when a control changes: what, and the name of each item.

    ``uploaded``: its items are files from the browser, named in decoding errors (the search
    knows them only as bytes).
    """

    def __init__(
        self,
        query: Any,
        names: list[str],
        *,
        uploaded: bool = False,
        refine: tuple[list[int], list[int]] | None = None,
    ) -> None:
        self.query = query
        self.names = names
        self.uploaded = uploaded
        self.refine = refine
        self.base_names = names[: len(query_items(query))]
        """The names of the query's own items (a refined query's ``names`` add the 👍 ones)."""
        """(ids marked relevant, ids marked not relevant) of a refined search, else None."""

    def refined(self, relevant: list[int], not_relevant: list[int], index: ImageIndex) -> _Query:
        """This query refined by marks: its items and the relevant ids are the positives."""
        names = self.base_names + [query_label(id_, index) for id_ in relevant]
        return _Query(
            self.query, names, uploaded=self.uploaded, refine=(list(relevant), list(not_relevant))
        )

    def positives(self) -> list[Any]:
        """A refined search's relevant images: the query's items, then the ids marked relevant."""
        return query_items(self.query) + list(self.refine[0] if self.refine else [])

    def explain(self, exc: Exception) -> Exception:
        """``exc``, naming the uploaded file it is about."""
        position = getattr(exc, "query_position", None)
        if self.uploaded and isinstance(exc, ImageDecodeError) and position is not None:
            return ImageDecodeError(f"{self.names[position]}: {exc}")
        return exc


class SearchWidget(BaseWidget):
    """Search an ``ImageIndex`` by example, inside a notebook.

    Drop, paste or choose image files (several form one query), or click a result for more
    like it; pick the mode, metric and number of results. The "hybrid" mode (offered when the
    index has an embedding or colour histogram) ranks by a weighted mix of the other modes,
    set with one slider per mode (``weights``). ``search(query)`` does the same from
    Python. Every error a user can cause shows in the widget, which stays usable.

    >>> w = SearchWidget(ImageIndex.open("~/Pictures"))
    >>> w.search("beach.jpg")
    >>> w.results  # [{"id", "path", "distance", "rank"}, ...]
    """

    _esm = STATIC_DIR / "search_widget.js"
    _css = STATIC_DIR / "search_widget.css"

    # -- controls: Python's traits; the browser asks for changes with messages ---------------
    # A value refused (from Python or the browser) keeps the old one and says why in ``error``.
    mode = traitlets.Unicode("").tag(sync=True)
    """str: the feature compared, one of ``modes``. Default: "embedding" if indexed, else the first."""

    metric = traitlets.Unicode("").tag(sync=True)
    """str: distance measure, one of ``metrics``. Reset to the mode's default when ``mode`` changes.
    "" in the hybrid mode (each mode in ``weights`` uses its default metric)."""

    weights = traitlets.Dict().tag(sync=True)
    """dict[str, float]: weight of each search mode in the hybrid mode (scaled to sum to 1 when
    searching; 0 or missing leaves a mode out). Default: ``DEFAULT_HYBRID_WEIGHTS`` restricted to
    the index's modes."""

    k = traitlets.Int(10).tag(sync=True)
    """int: number of results, 1 to 100. Default 10."""

    max_upload_bytes = traitlets.Int(DEFAULT_MAX_UPLOAD_BYTES).tag(sync=True)
    """int: largest accepted file, checked in the browser and again in Python. Default 20 MB.
    Synced so the browser can check first."""

    # -- state shown by the front end (read-only) -----------------------------------------------
    modes = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: the modes this index can search."""

    metrics = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: metrics allowed for ``mode``, its default first (none for hybrid)."""

    results = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    """list[dict]: the hits of the last query, best first: ``id``, ``path``, ``distance``, ``rank``."""

    thumbnails = traitlets.List(traitlets.Bytes(), read_only=True).tag(sync=True)
    """list[bytes]: a small JPEG per result (sent as binary buffers)."""

    result_mode = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: the mode ``results`` were found with."""

    result_metric = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: the metric ``results`` were found with (hybrid: the weights, "0.7 embedding/cosine + ...")."""

    query_thumbnails = traitlets.List(traitlets.Bytes(), read_only=True).tag(sync=True)
    """list[bytes]: a small JPEG per query image."""

    query_names = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: file name (or description) of each query image."""

    elapsed_ms = traitlets.Float(0.0, read_only=True).tag(sync=True)
    """float: how long the last search took, in milliseconds."""

    busy = traitlets.Bool(False, read_only=True).tag(sync=True)
    """bool: True while a search runs."""

    error = traitlets.Unicode("").tag(sync=True)
    """str: the last error a user caused ("" when none); cleared by the next successful search."""

    _hybrid_reason = (
        ""  # why the index has no hybrid mode (set in __init__; traits validate before)
    )

    # -- curation: picks, tags, relevance marks (Python's; the browser sends messages) ---------
    picked = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    """list[int]: ids of the shown results the user picked (ticked), in result order. Picks
    of results no longer shown are dropped; a new query clears them."""

    tags = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    """list[dict]: the index's tags, ``{"name", "count"}`` by name; refreshed after every search
    and every tagging (what the tag box suggests and "search within tag" offers)."""

    within_tag = traitlets.Unicode("").tag(sync=True)
    """str: search only images with this tag ("" searches all); one of ``tags``' names."""

    relevant = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    """list[int]: ids marked 👍 (more like this) since the query was made; "refine" adds them
    to the query. A new query clears the marks."""

    not_relevant = traitlets.List(traitlets.Int(), read_only=True).tag(sync=True)
    """list[int]: ids marked 👎 (not like this) since the query was made."""

    refine_reason = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: why "refine" cannot run now ("" when it can): no embedding, no query, no marks."""

    refined = traitlets.Bool(False, read_only=True).tag(sync=True)
    """bool: True when ``results`` come from a refined search (the marks as feedback)."""

    notice = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: what the last tagging did ("tagged 3 images 'cats' (1 had it already)"); "" after a new query."""

    scope: Any = traitlets.List(traitlets.Int(), allow_none=True, default_value=None)
    """Ids the search is restricted to (e.g. a UMAP selection); None searches everything."""

    scope_size = traitlets.Int(-1, read_only=True).tag(sync=True)
    """Number of images in ``scope`` (shown beside the results), -1 when unrestricted."""

    def __init__(
        self,
        index: ImageIndex,
        *,
        mode: str | None = None,
        metric: str | None = None,
        k: int = 10,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not all(hasattr(index, name) for name in ("search", "settings", "thumbnail_bytes")):
            raise TypeError(
                f"SearchWidget needs an ImageIndex, not {type(index).__name__}: "
                "SearchWidget(ImageIndex.open(folder))"
            )
        self._index = index
        self._ready = False
        self._rerun_paused = 0
        self._last: _Query | None = None
        self._seen: dict[str, Any] = {}  # control values last acted on (see _is_new)
        self._refusals = 0  # values refused so far (see _refuse)
        self._uploads = Uploads(max_upload_bytes, DEFAULT_MAX_UPLOAD_TOTAL_BYTES)
        self.rejected = 0
        """Front-end messages refused as malformed, and trait values the browser tried to write."""

        self._search_modes = available_modes(index)
        self._hybrid_reason = hybrid_unavailable(index)
        modes = list(self._search_modes)
        if not self._hybrid_reason:
            modes.append(HYBRID_MODE)
        mode = default_mode(modes) if mode is None else mode
        if mode not in modes:
            raise UsageError(self._mode_message(mode, modes))
        metric = self._check_metric(mode, metric) if mode else ""
        if weights is None:
            weights = default_weights(self._search_modes)
        elif not self._hybrid_reason:
            weights = check_weights(weights, self._search_modes)
        else:
            raise UsageError(
                f"weights= is for the hybrid mode, which this index lacks: {self._hybrid_reason}"
            )
        if max_upload_bytes < 1:
            raise UsageError(f"max_upload_bytes must be positive, not {max_upload_bytes}")
        self.set_trait("modes", modes)
        self.set_trait("metrics", list(mode_metrics().get(mode, ())))
        self.mode = mode
        self.metric = metric
        if weights:  # an index without the hybrid mode keeps {}
            self.weights = weights
        self.k = check_k(k)
        self.max_upload_bytes = max_upload_bytes
        if not modes:
            self.error = (
                "this index has no searchable feature; open it with features including one of "
                + ", ".join(search_modes())
            )
        super().__init__(**kwargs)
        self._refresh_tags()
        self._update_refine_reason()
        self.on_msg(self._on_message)
        self._ready = True

    # -- public API ---------------------------------------------------------------------------------
    @property
    def index(self) -> ImageIndex:
        """The ``ImageIndex`` this widget searches."""
        return self._index

    @property
    def max_upload_total_bytes(self) -> int:
        """Most bytes one upload may hold, all files together (Python-only: not synced)."""
        return self._uploads.max_total_bytes

    @max_upload_total_bytes.setter
    def max_upload_total_bytes(self, value: int) -> None:
        if value < 1:
            raise UsageError(f"max_upload_total_bytes must be positive, not {value}")
        self._uploads.max_total_bytes = int(value)

    def search(
        self,
        query: Any,
        *,
        mode: str | None = None,
        metric: str | None = None,
        k: int | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> SearchResults:
        """Search ``query`` and show it with its results, as if its files had been dropped.

        ``query``: a path, bytes, PIL image, image array, an indexed id ("more like this"), or a
        list of them (one query). ``mode``/``metric``/``k``/``weights`` also set the widget's
        controls (``weights`` is for ``mode="hybrid"``). Errors are shown in the widget and raised.
        """
        try:
            new_mode = self.mode if mode is None else mode
            if new_mode not in self.modes:
                raise UsageError(self._mode_message(new_mode, self.modes))
            if metric is not None or new_mode != self.mode:
                new_metric = self._check_metric(new_mode, metric)  # None: the mode's default
            else:
                new_metric = self.metric
            new_k = self.k if k is None else check_k(k)
            new_weights = (
                dict(self.weights)
                if weights is None
                else check_weights(weights, self._search_modes)
            )
            with self._paused_reruns():
                self.mode = new_mode
                self.metric = new_metric
                self.k = new_k
                self.weights = new_weights
            check_image_ids(query, self._index)
            prepared = _Query(
                query, [query_label(item, self._index) for item in query_items(query)]
            )
        except Exception as exc:
            self._show_error(exc)
            raise
        results = self._run(prepared, raise_errors=True, new=True)
        if results is None:  # raise_errors: a failed search raised instead
            raise RuntimeError("the search returned nothing")
        return results

    @property
    def query(self) -> Any:
        """The last query that gave results (a path, bytes, id, or a list of them), or None."""
        return None if self._last is None else self._last.query

    def clear(self) -> None:
        """Forget the query and its results (the controls keep their values)."""
        self._last = None
        with self.hold_sync():
            self.error = ""
            self.set_trait("query_thumbnails", [])
            self.set_trait("query_names", [])
            self._forget_marks()
            self._set_results(None, None)

    def refine(self) -> SearchResults:
        """Search again with the marks as feedback: ``index.search([query items and every 👍
        id], negatives=[every 👎 id], mode="embedding")`` (see ``ImageIndex.search``).

        Sets the mode to "embedding" (cosine). The marks stay (later rounds add to them) until
        the query changes. Raises (and shows) why when it cannot run (``refine_reason``).
        """
        if self.refine_reason or self._last is None:
            error = UsageError(self.refine_reason or "search first, then mark results")
            self._show_error(error)
            raise error
        query = self._last.refined(list(self.relevant), list(self.not_relevant), self._index)
        with self._paused_reruns():
            self.mode = REFINE_MODE
            self.metric = mode_metrics()[REFINE_MODE][0]
        results = self._run(query, raise_errors=True)
        if results is None:  # raise_errors: a failed search raised instead
            raise RuntimeError("the search returned nothing")
        return results

    def refresh_tags(self) -> None:
        """Read ``tags`` from the index again, after tagging elsewhere (``idx.tag``, the map);
        every search and every tagging here does it too. A ``within_tag`` no image has any
        more goes back to "" and the query runs over every image."""
        self._refresh_tags()

    def tag_picked(self, name: str, *, add: bool = True) -> int:
        """Tag the picked results ``name`` (``add=False``: untag them) with ``index.tag``;
        says what it did in ``notice``. Returns how many images changed."""
        try:
            if not self.picked:
                raise TagError("no result is picked; tick the results to tag first")
            ids = list(self.picked)
            changed = self._index.tag(ids, name) if add else self._index.untag(ids, name)
        except Exception as exc:
            self._show_error(exc)
            raise
        with self.hold_sync():
            self.error = ""
            self.set_trait("notice", describe_tagging(name, len(set(ids)), changed, add=add))
            self._refresh_tags()
        return int(changed)

    # -- state from the browser: none; it sends messages ------------------------------------------
    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Ignore state sent by the front end: every trait here is Python's.

        The browser asks for a control change with a message (see ``CONTROLS``); each trait it
        tries to write instead counts in ``rejected``.
        """
        self.rejected += len(sync_data) if isinstance(sync_data, dict) and sync_data else 1

    # -- validation: refused values keep the old one and say why in the widget -------------------
    def _mode_message(self, mode: str, modes: Sequence[str]) -> str:
        if mode == HYBRID_MODE and self._hybrid_reason:
            return f"mode 'hybrid' is not available: {self._hybrid_reason}"
        if mode in search_modes():
            return (
                f"mode {mode!r} is not in this index; it can search "
                f"{', '.join(modes) or 'nothing'} (open the index with features=[..., {mode!r}])"
            )
        return f"unknown mode {mode!r}; choose from {', '.join(modes) or ', '.join(search_modes())}"

    @staticmethod
    def _check_metric(mode: str, metric: str | None) -> str:
        """``check_mode_metric``, except that the hybrid mode has no metric of its own ("")."""
        if mode != HYBRID_MODE:
            return check_mode_metric(mode, metric)
        if metric:
            raise UsageError(
                f"the hybrid mode has no metric of its own (each mode in weights uses its "
                f"default), not {metric!r}"
            )
        return ""

    def _refuse(self, name: str, message: str) -> Any:
        if not self._ready:
            raise UsageError(message)
        self.error = message
        self._refusals += 1
        return getattr(self, name)

    def _is_new(self, name: str) -> bool:
        """Whether control ``name`` differs from its value last acted on (and note it): an
        assignment of the same value (e.g. the same weights as new floats) re-runs nothing."""
        value = getattr(self, name)
        if name in self._seen and self._seen[name] == value:
            return False
        self._seen[name] = value
        return True

    @traitlets.validate("mode")
    def _validate_mode(self, proposal: Any) -> str:
        mode = proposal["value"]
        if mode not in self.modes and (self.modes or mode):
            return str(self._refuse("mode", self._mode_message(mode, self.modes)))
        return str(mode)

    @traitlets.validate("metric")
    def _validate_metric(self, proposal: Any) -> str:
        if not self.mode:
            return str(proposal["value"])
        try:
            return self._check_metric(self.mode, proposal["value"])
        except ValueError as exc:
            return str(self._refuse("metric", str(exc)))

    @traitlets.validate("weights")
    def _validate_weights(self, proposal: Any) -> dict[str, float]:
        try:
            return check_weights(proposal["value"], self._search_modes)
        except ValueError as exc:
            kept: dict[str, float] = self._refuse("weights", str(exc))
            return kept

    @traitlets.validate("k")
    def _validate_k(self, proposal: Any) -> int:
        try:
            return check_k(proposal["value"])
        except ValueError as exc:
            return int(self._refuse("k", str(exc)))

    @traitlets.validate("within_tag")
    def _validate_within_tag(self, proposal: Any) -> str:
        name = str(proposal["value"])
        names = list(self._index.tags()) if name else []
        if name == "" or name in names:
            return name
        known = ", ".join(repr(tag) for tag in names[:10]) or "none yet"
        return str(
            self._refuse(
                "within_tag", f"no image is tagged {name[:100]!r}; search within one of: {known}"
            )
        )

    @traitlets.validate("max_upload_bytes")
    def _validate_max_upload_bytes(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise traitlets.TraitError(
                f"max_upload_bytes must be positive, not {proposal['value']}"
            )
        return int(proposal["value"])

    @traitlets.observe("max_upload_bytes")
    def _max_upload_bytes_changed(self, change: Any) -> None:
        self._uploads.max_file_bytes = change["new"]

    # -- reacting to controls ---------------------------------------------------------------------
    @traitlets.observe("mode")
    def _mode_changed(self, change: Any) -> None:
        if not self._is_new("mode"):
            return
        allowed = list(mode_metrics().get(self.mode, ()))
        with self._paused_reruns(), self.hold_sync():
            self.set_trait("metrics", allowed)
            self.metric = allowed[0] if allowed else ""
        self._rerun()

    @traitlets.observe("weights")
    def _weights_changed(self, _change: Any) -> None:
        if self._is_new("weights") and self.mode == HYBRID_MODE:
            self._rerun()

    @traitlets.observe("scope")
    def _scope_changed(self, change: Any) -> None:
        self.set_trait("scope_size", -1 if change["new"] is None else len(change["new"]))
        self._rerun()

    @traitlets.observe("metric", "k", "within_tag")
    def _control_changed(self, change: Any) -> None:
        if self._is_new(change["name"]):
            self._rerun()

    @contextlib.contextmanager
    def _paused_reruns(self) -> Iterator[None]:
        self._rerun_paused += 1
        try:
            yield
        finally:
            self._rerun_paused -= 1

    def _rerun(self) -> None:
        if not self._ready or self._rerun_paused:
            return
        if self._last is not None:
            self._run(self._last, raise_errors=False)
        else:
            self.error = ""  # an accepted control value ends the complaint about a refused one

    # -- running a query -------------------------------------------------------------------------
    def _search(self, query: _Query) -> tuple[SearchResults, bool]:
        """``query`` searched with the controls; and whether it was refined by marks."""
        filters: dict[str, Any] = {"k": self.k, "ids": self.scope}
        if self.within_tag:
            filters["tags"] = [self.within_tag]
        refinable = self.mode == REFINE_MODE and self.metric == mode_metrics()[REFINE_MODE][0]
        if query.refine is not None and refinable:
            negatives = query.refine[1]
            return self._index.search(
                query.positives(), mode=REFINE_MODE, negatives=negatives, **filters
            ), True
        if self.mode == HYBRID_MODE:
            return self._index.search(
                query.query, mode=HYBRID_MODE, weights=dict(self.weights), **filters
            ), False
        return self._index.search(query.query, mode=self.mode, metric=self.metric, **filters), False

    def _run(self, query: _Query, *, raise_errors: bool, new: bool = False) -> SearchResults | None:
        """Search ``query`` and show it; ``new``: a new query (the marks and picks go)."""
        self.set_trait("busy", True)
        try:
            results, refined = self._search(query)
            thumbnails = self._index.thumbnail_bytes(results.ids, side=QUERY_THUMB_SIZE)
            query_thumbnails = shown_thumbnails(results)
        except Exception as exc:
            self.set_trait("busy", False)
            self._refresh_tags(rerun=False)  # a tag searched within may be gone: say so
            self._show_error(query.explain(exc))
            if raise_errors:
                raise
            return None
        self._last = query
        # One message to the browser; `results` changes last, so its observers see the rest.
        with self.hold_sync():
            try:
                self.error = ""
                self.set_trait("query_thumbnails", query_thumbnails)
                self.set_trait("query_names", query.names)
                if new:
                    self._forget_marks()
                shown = set(results.ids)
                self.set_trait("picked", [id_ for id_ in self.picked if id_ in shown])
                self.set_trait("refined", refined)
                self._refresh_tags(rerun=False)
                self._update_refine_reason()
                self._set_results(results, thumbnails)
            finally:
                self.set_trait("busy", False)
        return results

    # -- curation state ------------------------------------------------------------------------
    def _forget_marks(self) -> None:
        """A new query (or none): no picks, no marks, no notice."""
        self.set_trait("picked", [])
        self.set_trait("relevant", [])
        self.set_trait("not_relevant", [])
        self.set_trait("refined", False)
        self.set_trait("notice", "")
        self._update_refine_reason()

    def _refresh_tags(self, *, rerun: bool = True) -> None:
        """``tags`` from the catalog; a ``within_tag`` no image has any more is dropped (and,
        with ``rerun``, the query re-run over every image)."""
        try:
            counts = self._index.tags()
        except (ImrecError, OSError):  # e.g. a catalog that cannot be read: nothing to offer
            _log.debug("SearchWidget: could not read the tags", exc_info=True)
            counts = {}
        tags = [{"name": name, "count": int(count)} for name, count in counts.items()]
        if tags != self.tags:
            self.set_trait("tags", tags)
        if self.within_tag and self.within_tag not in counts:
            with contextlib.nullcontext() if rerun else self._paused_reruns():
                self.within_tag = ""

    def _update_refine_reason(self) -> None:
        if REFINE_MODE not in self._search_modes:
            reason = (
                f"refine needs the {REFINE_MODE} feature, which this index lacks "
                f"(open it with features=[..., {REFINE_MODE!r}])"
            )
        elif self._last is None:
            reason = "search first, then mark results 👍 or 👎 and refine"
        elif not self.relevant and not self.not_relevant:
            reason = "mark results 👍 (more like this) or 👎 (not like this) first"
        else:
            reason = ""
        self.set_trait("refine_reason", reason)

    def _set_results(self, results: SearchResults | None, thumbnails: list[bytes] | None) -> None:
        self.set_trait("thumbnails", list(thumbnails or []))
        self.set_trait("result_mode", results.mode if results is not None else "")
        self.set_trait("result_metric", results.metric if results is not None else "")
        self.set_trait("elapsed_ms", results.seconds * 1000.0 if results is not None else 0.0)
        self.set_trait("results", results.to_dicts() if results is not None else [])

    def _show_error(self, exc: BaseException) -> None:
        """What the user can fix (``ImrecError``, an ``OSError`` of the system) is shown as its
        message; anything else is a bug: logged with its traceback (logger ``imrec_widgets``),
        and shown as such, never as if the user caused it."""
        if isinstance(exc, (ImrecError, OSError)):
            self.error = str(exc) or type(exc).__name__
        else:
            _log.error("SearchWidget: unexpected error", exc_info=exc)
            self.error = UNEXPECTED_ERROR

    # -- messages from the browser ------------------------------------------------------------------
    def _on_message(self, _widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "chunk":
            try:
                self._uploads.receive(content, buffers)
            except MalformedMessage as exc:
                self.rejected += 1
                self._show_error(exc)
            except Exception as exc:
                self._show_error(exc)
            return
        if kind in ("set", "dismiss", "file_error", "pick", "mark", "tag", "refine"):
            try:
                self._browser_intent(kind, content)
            except MalformedMessage as exc:
                self.rejected += 1
                self._show_error(exc)
            except Exception:
                if kind not in ("tag", "refine"):
                    raise
                # tag_picked and refine show their errors in the widget themselves
            return
        if kind not in ("query", "more_like"):
            self.rejected += 1
            return
        # busy goes True then False for every query, failed ones included: the browser
        # waits for that to stop showing its spinner.
        self.set_trait("busy", True)
        try:
            if kind == "query":
                self._query_upload(content)
            else:
                self._more_like(content.get("id"))
        except Exception as exc:
            self._show_error(exc)
        finally:
            self.set_trait("busy", False)

    def _browser_intent(self, kind: str, content: dict[str, Any]) -> None:
        """A control the user changed, the error they dismissed, or a file the browser refused."""
        if kind == "dismiss":
            self.error = ""
            return
        if kind == "file_error":
            message = content.get("message")
            if not isinstance(message, str):
                raise MalformedMessage("a file error must be text")
            self.error = message[:MAX_ERROR_CHARS]
            return
        if kind == "pick":
            ids, picked = self._shown_ids(content.get("ids")), content.get("picked")
            if not isinstance(picked, bool):
                raise MalformedMessage("a pick says picked: true or false")
            chosen = (set(self.picked) | set(ids)) if picked else (set(self.picked) - set(ids))
            order = [hit["id"] for hit in self.results]
            self.set_trait("picked", [id_ for id_ in order if id_ in chosen])
            return
        if kind == "mark":
            (id_,) = self._shown_ids([content.get("id")], marked_too=True)
            mark = content.get("mark")
            if mark not in MARKS:
                raise MalformedMessage(f"a mark is one of {', '.join(MARKS)}")
            relevant = [i for i in self.relevant if i != id_]
            not_relevant = [i for i in self.not_relevant if i != id_]
            if mark == "relevant":
                relevant.append(id_)
            elif mark == "not_relevant":
                not_relevant.append(id_)
            with self.hold_sync():
                self.set_trait("relevant", relevant)
                self.set_trait("not_relevant", not_relevant)
                self._update_refine_reason()
            return
        if kind == "tag":
            name, add = content.get("name"), content.get("add")
            if (
                not isinstance(name, str)
                or len(name) > MAX_ERROR_CHARS
                or not isinstance(add, bool)
            ):
                raise MalformedMessage("a tag message holds a name (text) and add: true or false")
            self.tag_picked(name, add=add)
            return
        if kind == "refine":
            # busy goes True then False, a refused refine included: the browser's spinner stops
            self.set_trait("busy", True)
            try:
                self.refine()
            finally:
                self.set_trait("busy", False)
            return
        name, value = content.get("name"), content.get("value")
        problem = _control_problem(name, value)
        if problem or not isinstance(name, str):
            raise MalformedMessage(problem)
        refusals = self._refusals
        setattr(self, name, value)
        if self._refusals != refusals:
            # The browser's control shows what the user picked: tell it to show the kept value.
            self.send({"type": "refused", "name": name})

    def _shown_ids(self, ids: Any, *, marked_too: bool = False) -> list[int]:
        """``ids`` from a message, each a shown result's (``marked_too``: or a marked one's);
        MalformedMessage otherwise (an honest front end only sends ids it shows)."""
        if not isinstance(ids, list) or not 1 <= len(ids) <= K_MAX:
            raise MalformedMessage(f"a pick or mark names 1 to {K_MAX} result ids")
        allowed = {hit["id"] for hit in self.results}
        if marked_too:
            allowed |= set(self.relevant) | set(self.not_relevant)
        checked = []
        for id_ in ids:
            if isinstance(id_, float) and math.isfinite(id_) and id_.is_integer():
                id_ = int(id_)
            if not is_image_id(id_) or id_ not in allowed:
                raise MalformedMessage(f"{repr(id_)[:40]} is not a result shown")
            checked.append(int(id_))
        return checked

    def _query_upload(self, content: dict[str, Any]) -> None:
        try:
            uploads = self._uploads.finish(content)
        except MalformedMessage:
            self.rejected += 1
            raise
        query = uploads[0][1] if len(uploads) == 1 else [data for _name, data in uploads]
        names = [name for name, _data in uploads]
        self._run(_Query(query, names, uploaded=True), raise_errors=False, new=True)

    def _more_like(self, id_: Any) -> None:
        if isinstance(id_, float) and math.isfinite(id_) and id_.is_integer():
            id_ = int(id_)
        if not (is_image_id(id_) and 0 <= id_ <= MAX_IMAGE_ID):
            self.rejected += 1
            raise UsageError(f"cannot search from result {repr(id_)[:40]}: not an image id")
        item = int(id_)
        check_image_ids(item, self._index)
        self._run(_Query(item, [query_label(item, self._index)]), raise_errors=False, new=True)


def _control_problem(name: Any, value: Any) -> str:
    """Why ``{"name": name, "value": value}`` is no control change an honest front end sends
    ("" when its name and type are right; its value is then checked like one from Python)."""
    if name not in CONTROLS:
        return f"{repr(name)[:40]} is not a control; the browser may set {', '.join(CONTROLS)}"
    if name in ("mode", "metric", "within_tag"):
        if isinstance(value, str) and len(value) <= MAX_NAME_CHARS:
            return ""
        return f"{name} must be a name of at most {MAX_NAME_CHARS} characters"
    if name == "k":
        return "" if is_whole(value) else f"k must be a whole number from {K_MIN} to {K_MAX}"
    if (
        isinstance(value, dict)
        and len(value) <= len(search_modes())
        and all(
            isinstance(mode, str)
            and len(mode) <= MAX_NAME_CHARS
            and isinstance(weight, (int, float))
            and not isinstance(weight, bool)
            for mode, weight in value.items()
        )
    ):
        return ""
    return f"weights must map modes to numbers, like {DEFAULT_HYBRID_WEIGHTS}"
