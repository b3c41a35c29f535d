"""SearchWidget without a browser: messages as the front end sends them, state as it receives it."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imrec_widgets
from imrec_widgets import ImageIndex
from imrec_widgets import index as index_module
from imrec_widgets.features import DEFAULT_HYBRID_WEIGHTS, MODE_METRICS, MODEL_FREE_FEATURES
from imrec_widgets.widgets._base import STATIC_DIR
from imrec_widgets.widgets.query_display import QUERY_THUMB_SIZE
from imrec_widgets.widgets.search_widget import SearchWidget, check_k
from imrec_widgets.widgets.uploads import DEFAULT_MAX_UPLOAD_BYTES, format_bytes

JPEG_MAGIC = b"\xff\xd8\xff"
MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cheap_index(sample_folder, tmp_path_factory):
    """The sample photos indexed with colour, hashes and thumbnails (no CNN), outside the folder."""
    index = ImageIndex.open(
        sample_folder,
        index_dir=tmp_path_factory.mktemp("idx") / "cheap",
        features=MODEL_FREE_FEATURES,
    )
    index.update(progress=False, workers=0)
    assert len(index) == 18
    return index


@pytest.fixture(scope="module")
def full_index(sample_folder, tmp_path_factory, index_of):
    """The sample photos with every feature, the CNN embedding included (a copy of the folder,
    indexed in it: index_of makes it once a session)."""
    photos = tmp_path_factory.mktemp("full") / "photos"
    shutil.copytree(sample_folder, photos)
    return index_of(photos)


@pytest.fixture
def widget(cheap_index):
    return SearchWidget(cheap_index)


@pytest.fixture(scope="module")
def photo_paths(sample_folder):
    return sorted(sample_folder.rglob("*.jpg"))


def photo(sample_folder, name):
    return next(sample_folder.rglob(f"{name}.jpg"))


def upload(widget, files, chunk_bytes=64 * 1024):
    """Send ``[(name, data, type), ...]`` the way search_widget.js does: chunks, then the query."""
    upload_id = uuid.uuid4().hex
    meta = []
    for position, (name, data, mime) in enumerate(files):
        for start in range(0, len(data), chunk_bytes):
            custom(
                widget,
                {"type": "chunk", "upload": upload_id, "file": position, "offset": start},
                [memoryview(data[start : start + chunk_bytes])],
            )
        meta.append({"name": name, "size": len(data), "type": mime})
    custom(widget, {"type": "query", "upload": upload_id, "files": meta})


def custom(widget, content, buffers=()):
    """A ``model.send(content, undefined, buffers)`` from the browser."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)}
    )


def user_picks(widget, **controls):
    """The user changed controls in the browser: one ``{"type": "set"}`` message each, as
    search_widget.js sends them (it never writes a trait)."""
    for name, value in controls.items():
        custom(widget, {"type": "set", "name": name, "value": value})


def front_end_writes(widget, **state):
    """``model.set(...); model.save_changes()`` from a browser: what the real one never sends."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})


def jpeg_size(data):
    assert data[:3] == JPEG_MAGIC
    return Image.open(io.BytesIO(data)).size


def distances(widget):
    return [hit["distance"] for hit in widget.results]


# -- construction --------------------------------------------------------------------------------


def test_defaults_follow_the_index(widget, cheap_index):
    assert widget.index is cheap_index
    assert widget.modes == ["rgb", "ahash", "dhash", "hybrid"]  # no embedding in this index
    assert (widget.mode, widget.metric) == ("rgb", "euclidean")
    assert widget.weights == {"rgb": 0.3}  # DEFAULT_HYBRID_WEIGHTS, embedding left out
    assert widget.metrics == list(MODE_METRICS["rgb"])
    assert widget.k == 10
    assert widget.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES == 20_000_000
    assert widget.results == [] and widget.thumbnails == [] and widget.error == ""
    assert not widget.busy


def test_keyword_arguments_are_checked(cheap_index):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'kk'.*accepts.*k, layout"):
        SearchWidget(cheap_index, kk=5)
    with pytest.raises(ValueError, match="mode 'embedding' is not in this index"):
        SearchWidget(cheap_index, mode="embedding")
    with pytest.raises(ValueError, match="unknown mode 'colour'"):
        SearchWidget(cheap_index, mode="colour")
    with pytest.raises(ValueError, match="not allowed for mode 'ahash'; choose from hamming"):
        SearchWidget(cheap_index, mode="ahash", metric="cosine")
    with pytest.raises(ValueError, match="k must be from 1 to 100"):
        SearchWidget(cheap_index, k=0)
    with pytest.raises(TypeError, match=r"needs an ImageIndex, not str: SearchWidget\(ImageIndex"):
        SearchWidget("~/Pictures")
    with pytest.raises(ValueError, match="max_upload_bytes must be positive"):
        SearchWidget(cheap_index, max_upload_bytes=0)
    w = SearchWidget(cheap_index, mode="ahash", k=3, max_upload_bytes=1000, layout={"width": "50%"})
    assert (w.mode, w.metric, w.metrics, w.k, w.max_upload_bytes) == (
        "ahash",
        "hamming",
        ["hamming"],
        3,
        1000,
    )
    assert w.layout.width == "50%"


def test_front_end_is_one_module_read_from_its_file(widget):
    """anywidget gets the files themselves (``_esm = Path``), from inside the package."""
    assert STATIC_DIR == Path(imrec_widgets.__file__).resolve().parent / "static"
    module = (STATIC_DIR / "search_widget.js").read_text(encoding="utf-8")
    assert widget._esm == str(SearchWidget._esm) == module
    assert widget._css == str(SearchWidget._css) == (STATIC_DIR / "search_widget.css").read_text()
    assert module.startswith("// @ts-check\n")
    assert "export default { render };" in module and "export function validateFiles(" in module
    # the browser imports it from a blob URL, where no other file can be imported
    assert not re.search(r"^\s*import\b", module, re.M)
    assert ".imrec-search" in widget._css and "--jp-layout-color1" in widget._css


# -- uploads --------------------------------------------------------------------------------------


def test_uploaded_file_gives_k_results_best_first(widget, sample_folder):
    data = photo(sample_folder, "coffee").read_bytes()
    assert len(data) > 3 * 16 * 1024  # arrives in several chunks
    widget.k = 5
    upload(widget, [("coffee.jpg", data, "image/jpeg")], chunk_bytes=16 * 1024)
    assert widget.error == ""
    assert len(widget.results) == 5
    assert distances(widget) == sorted(distances(widget))
    assert [hit["rank"] for hit in widget.results] == list(range(5))
    best = widget.results[0]
    assert Path(best["path"]).name == "coffee.jpg" and best["distance"] == pytest.approx(
        0, abs=1e-4
    )
    assert set(widget.results[0]) == {"id", "path", "distance", "rank"}
    assert json.loads(json.dumps(widget.results)) == widget.results
    side = widget._index.settings["thumb_size"]  # stored thumbnails: longer side, aspect kept
    assert [max(jpeg_size(t)) for t in widget.thumbnails] == [side] * 5
    assert widget.query_names == ["coffee.jpg"]
    (query_thumb,) = widget.query_thumbnails
    assert max(jpeg_size(query_thumb)) == QUERY_THUMB_SIZE  # small, not the original
    assert len(query_thumb) < len(data) / 5
    assert (widget.result_mode, widget.result_metric) == ("rgb", "euclidean")
    assert widget.elapsed_ms > 0 and not widget.busy


def test_several_files_form_one_query(widget, sample_folder):
    files = [
        (f"{name}.jpg", photo(sample_folder, name).read_bytes(), "image/jpeg")
        for name in ("brick", "gravel")
    ]
    upload(widget, files)
    assert widget.error == ""
    assert widget.query_names == ["brick.jpg", "gravel.jpg"]
    assert len(widget.query_thumbnails) == 2
    assert len(widget.results) == 10
    assert distances(widget) == sorted(distances(widget))


def test_thumbnails_reach_the_browser_as_binary_buffers(widget, sample_folder, monkeypatch):
    sent = []
    monkeypatch.setattr(
        widget, "_send", lambda msg, buffers=None: sent.append((msg, buffers or []))
    )
    widget.search(photo(sample_folder, "rocket"), k=3)
    updates = [(msg, buffers) for msg, buffers in sent if "thumbnails" in msg.get("state", {})]
    assert updates, "the results were never sent"
    msg, buffers = updates[-1]
    assert ["thumbnails", 0] in msg["buffer_paths"]
    assert msg["state"]["thumbnails"] == [None, None, None]  # no base64 in the JSON part
    assert all(bytes(b)[:3] == JPEG_MAGIC for b in buffers)
    assert {"results", "query_thumbnails", "elapsed_ms"} <= set(msg["state"])  # one update


# -- controls -------------------------------------------------------------------------------------


def test_mode_switch_sets_metrics_resets_metric_and_reruns(widget, sample_folder):
    widget.search(photo(sample_folder, "astronaut"))
    user_picks(widget, metric="cosine")
    assert (widget.metric, widget.result_metric) == ("cosine", "cosine")
    user_picks(widget, mode="ahash")
    assert widget.metrics == ["hamming"] and widget.metric == "hamming"
    assert (widget.result_mode, widget.result_metric) == ("ahash", "hamming")
    assert all(float(d).is_integer() for d in distances(widget))  # bit counts
    assert widget.results[0]["distance"] == 0
    user_picks(widget, mode="rgb")
    assert widget.metrics == ["euclidean", "manhattan", "cosine"]
    assert widget.metric == "euclidean"  # back to the default, not the earlier cosine
    assert widget.result_metric == "euclidean"
    user_picks(widget, k=4)
    assert len(widget.results) == 4
    assert widget.query_names == ["astronaut.jpg"]  # the same query, re-run each time


def test_metric_not_allowed_from_python_shows_error_and_widget_still_works(widget, sample_folder):
    widget.search(photo(sample_folder, "moon"), k=3)
    before = widget.results
    widget.metric = "hamming"  # no exception escapes
    assert "metric 'hamming' is not allowed for mode 'rgb'" in widget.error
    assert "euclidean, manhattan, cosine" in widget.error
    assert widget.metric == "euclidean" and widget.results == before
    widget.mode = "embedding"
    assert "mode 'embedding' is not in this index" in widget.error and widget.mode == "rgb"
    widget.metric = "manhattan"
    assert widget.error == "" and widget.result_metric == "manhattan"
    upload(widget, [("moon.jpg", photo(sample_folder, "moon").read_bytes(), "image/jpeg")])
    assert widget.error == "" and len(widget.results) == 3


def test_a_metric_refused_from_the_browser_is_refused_and_its_control_reset(widget, sample_folder):
    widget.search(photo(sample_folder, "moon"), k=3)
    before = widget.results
    sent = []
    widget._send = lambda msg, buffers=None: sent.append(msg)
    user_picks(widget, metric="hamming")
    assert "metric 'hamming' is not allowed for mode 'rgb'" in widget.error
    assert widget.metric == "euclidean" and widget.results == before
    # The trait never changed; the browser is told to show it again in its menu.
    assert {"type": "refused", "name": "metric"} in [m.get("content") for m in sent]
    assert not [m for m in sent if "metric" in m.get("state", {})]
    assert widget.rejected == 0  # a stale menu can send this: refused, not malformed


def test_refused_metric_without_a_query_clears_on_next_good_value(widget):
    widget.metric = "hamming"
    assert "not allowed" in widget.error
    widget.metric = "cosine"
    assert widget.error == "" and widget.metric == "cosine"


def test_k_bounds(widget, sample_folder):
    assert check_k(1) == 1 and check_k(100) == 100
    for bad in (0, 101, -5, 2.5, True, "7"):
        with pytest.raises(ValueError, match="k must be"):
            check_k(bad)
    widget.search(photo(sample_folder, "grass"), k=2)
    widget.k = 0
    assert "k must be from 1 to 100, not 0" in widget.error and widget.k == 2
    widget.k = 101
    assert "not 101" in widget.error and widget.k == 2
    assert len(widget.results) == 2
    widget.k = 100
    assert widget.error == "" and len(widget.results) == 18  # every indexed image
    with pytest.raises(ValueError, match="k must be"):
        widget.search(photo(sample_folder, "grass"), k=500)
    assert "k must be" in widget.error


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        ("notes.txt", b"a shopping list, not a picture\n", "text/plain"),
        ("paper.pdf", MINIMAL_PDF, "application/pdf"),
        ("holiday.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40, "image/jpeg"),  # corrupt
    ],
)
def test_non_images_show_an_error_and_keep_the_widget_usable(
    widget, sample_folder, name, data, mime
):
    widget.search(photo(sample_folder, "coins"), k=4)
    before = widget.results
    busy = []
    widget.observe(lambda change: busy.append(change["new"]), "busy")
    upload(widget, [(name, data, mime)])
    assert widget.error.startswith(f"{name}: ")
    assert "image" in widget.error
    assert widget.results == before and widget.query_names == ["coins.jpg"]
    assert busy == [True, False]  # the browser stops its spinner on the False
    user_picks(widget, k=6)  # the last good query is still there
    assert len(widget.results) == 6 and widget.error == ""


def test_the_file_that_is_not_an_image_is_named_among_several(widget, sample_folder):
    coffee = photo(sample_folder, "coffee").read_bytes()
    files = [
        ("coffee.jpg", coffee, "image/jpeg"),
        ("notes.jpg", b"not a picture" * 9, "image/jpeg"),
    ]
    upload(widget, files)
    assert widget.error.startswith("notes.jpg: ") and widget.results == []
    upload(widget, files[::-1])
    assert widget.error.startswith("notes.jpg: ")


def test_an_uploaded_image_is_decoded_once(widget, sample_folder, monkeypatch):
    """The search decodes the query and makes its thumbnail from that decode."""
    from imrec_widgets import imageio

    decoded = []
    real = imageio.decode

    def counting(source, **options):
        decoded.append(type(source).__name__)
        return real(source, **options)

    for name, module in list(sys.modules.items()):  # wherever the package imported it
        if name.startswith("imrec_widgets") and getattr(module, "decode", None) is real:
            monkeypatch.setattr(module, "decode", counting)
    data = photo(sample_folder, "rocket").read_bytes()
    upload(widget, [("rocket.jpg", data, "image/jpeg")])
    assert widget.error == "" and len(widget.results) == 10
    assert decoded == ["bytes"]
    (thumbnail,) = widget.query_thumbnails
    width, height = Image.open(io.BytesIO(data)).size
    size = jpeg_size(thumbnail)
    assert max(size) == QUERY_THUMB_SIZE and abs(size[0] / size[1] - width / height) < 0.05


def test_truncated_jpeg_is_refused_with_a_message(widget, sample_folder):
    data = photo(sample_folder, "chelsea").read_bytes()
    upload(widget, [("chelsea.jpg", data[: len(data) // 3], "image/jpeg")])
    assert widget.error.startswith("chelsea.jpg: ") and widget.results == []


def test_oversize_upload_is_refused_and_not_kept(widget, sample_folder):
    data = photo(sample_folder, "retina").read_bytes()
    widget.max_upload_bytes = 50_000
    assert len(data) > 50_000
    upload(widget, [("retina.jpg", data, "image/jpeg")])
    assert widget.error == (
        f"retina.jpg is {format_bytes(len(data))}, over the upload limit of 50 kB "
        "(SearchWidget.max_upload_bytes)"
    )
    assert widget.results == [] and widget._uploads.parts == {}
    widget.max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES
    upload(widget, [("retina.jpg", data, "image/jpeg")])
    assert widget.error == "" and widget.results[0]["distance"] == pytest.approx(0, abs=1e-4)


def test_incomplete_or_empty_uploads_are_errors(widget, sample_folder):
    data = photo(sample_folder, "page").read_bytes()
    custom(widget, {"type": "chunk", "upload": "u1", "file": 0, "offset": 0}, [data[:1000]])
    custom(
        widget,
        {"type": "query", "upload": "u1", "files": [{"name": "page.jpg", "size": len(data)}]},
    )
    assert "page.jpg arrived incomplete" in widget.error
    custom(widget, {"type": "query", "upload": "u2", "files": [{"name": "e.png", "size": 0}]})
    assert widget.error == "e.png is empty (0 bytes)"
    custom(widget, {"type": "query", "upload": "u3", "files": []})
    assert widget.error == "no file was uploaded"
    custom(widget, {"type": "more_like", "id": "seven"})
    assert "cannot search from result 'seven'" in widget.error
    upload(widget, [("page.jpg", data, "image/jpeg")])
    assert widget.error == "" and len(widget.results) == 10


def test_empty_index_shows_an_error_then_works_once_filled(tmp_path, sample_folder):
    folder = tmp_path / "photos"
    folder.mkdir()
    index = ImageIndex.open(folder, index_dir=tmp_path / "idx", features=MODEL_FREE_FEATURES)
    w = SearchWidget(index)  # never updated: no catalog on disk yet
    data = photo(sample_folder, "camera").read_bytes()
    upload(w, [("camera.jpg", data, "image/jpeg")])
    assert "no index" in w.error or "no searchable images" in w.error
    index.update(progress=False, workers=0)  # an empty folder: an empty index
    upload(w, [("camera.jpg", data, "image/jpeg")])
    assert "no searchable images" in w.error and w.results == []
    (folder / "camera.jpg").write_bytes(data)
    index.update(progress=False, workers=0)
    upload(w, [("camera.jpg", data, "image/jpeg")])
    assert w.error == "" and [Path(h["path"]).name for h in w.results] == ["camera.jpg"]


def test_unexpected_failure_is_shown_not_raised_from_the_browser(
    widget, sample_folder, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(widget.index, "search", broken)
    with caplog.at_level(logging.ERROR, logger="imrec_widgets"):
        upload(widget, [("gravel.jpg", photo(sample_folder, "gravel").read_bytes(), "image/jpeg")])
    # a bug: shown as one, never as if the user caused it, and logged with its traceback
    assert widget.error == "unexpected error (see log)" and not widget.busy
    [record] = [r for r in caplog.records if r.name.startswith("imrec_widgets")]
    assert record.exc_info is not None and "disk on fire" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text
    monkeypatch.undo()
    upload(widget, [("gravel.jpg", photo(sample_folder, "gravel").read_bytes(), "image/jpeg")])
    assert widget.error == "" and widget.results


# -- hybrid mode ----------------------------------------------------------------------------------


def hybrid_hits(index, query, weights, k=10, **options):
    return index.search(query, mode="hybrid", weights=weights, k=k, **options).to_dicts()


def test_hybrid_mode_has_no_metric_and_searches_with_the_weights(
    widget, cheap_index, sample_folder
):
    query = photo(sample_folder, "astronaut")
    widget.search(query, k=6)
    user_picks(widget, mode="hybrid")
    assert widget.error == ""
    assert (widget.mode, widget.metrics, widget.metric) == ("hybrid", [], "")
    assert (widget.result_mode, widget.result_metric) == ("hybrid", "1 rgb/euclidean")
    assert widget.results == hybrid_hits(cheap_index, query, {"rgb": 0.3}, k=6)
    assert widget.query_names == ["astronaut.jpg"]  # the same query, re-run

    weights = {"rgb": 0.5, "dhash": 0.25, "ahash": 0.25}
    user_picks(widget, weights=weights)  # a slider moved
    assert widget.error == "" and widget.weights == weights
    assert widget.result_metric == "0.5 rgb/euclidean + 0.25 dhash/hamming + 0.25 ahash/hamming"
    assert widget.results == hybrid_hits(cheap_index, query, weights, k=6)
    assert widget.results != hybrid_hits(cheap_index, query, {"rgb": 1}, k=6)

    user_picks(widget, k=3)
    assert widget.results == hybrid_hits(cheap_index, query, weights, k=3)
    user_picks(widget, mode="rgb")  # back: the mode's metrics and default metric again
    assert (widget.metrics, widget.metric) == (list(MODE_METRICS["rgb"]), "euclidean")
    assert (widget.result_mode, widget.result_metric) == ("rgb", "euclidean")
    before = widget.results
    user_picks(widget, weights={"dhash": 1})  # kept for later; nothing to re-run now
    assert widget.weights == {"dhash": 1.0} and widget.results == before
    user_picks(widget, mode="hybrid")
    assert widget.result_metric == "1 dhash/hamming"
    assert widget.results == hybrid_hits(cheap_index, query, {"dhash": 1}, k=3)


class FailIfCalled:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        raise AssertionError("searched again")


def test_refused_weights_show_an_error_and_the_widget_stays_usable(
    widget, cheap_index, sample_folder, monkeypatch
):
    query = photo(sample_folder, "coffee")
    widget.search(query, mode="hybrid", k=4)
    before = widget.results
    sent = []
    monkeypatch.setattr(widget, "_send", lambda msg, buffers=None: sent.append(msg))
    monkeypatch.setattr(widget.index, "search", failing_search := FailIfCalled())
    user_picks(widget, weights={"rgb": 0, "ahash": 0})  # every slider at 0
    assert widget.error == "hybrid weights are all zero; give at least one mode a positive weight"
    assert widget.weights == {"rgb": 0.3} and widget.results == before
    assert not failing_search.calls  # nothing re-run
    # the browser shows the refused sliders: it is told to show the kept weights again
    assert [m["content"] for m in sent if "content" in m] == [
        {"type": "refused", "name": "weights"}
    ]
    assert [m["state"] for m in sent if "state" in m] == [{"error": widget.error}]
    monkeypatch.undo()
    for bad, message in [
        ({"embedding": 1}, "mode 'embedding' in weights is not in this index"),
        ({"rgb": -0.5}, "the weight of 'rgb' must not be negative"),
        ({"rgb": "heavy"}, "the weight of 'rgb' must be a finite number"),
        ({"rgb": (0.5, "cosine")}, "the weight of 'rgb' must be a number"),
        ({"colour": 1}, "unknown mode 'colour' in weights"),
    ]:
        widget.weights = bad  # from Python: no exception escapes either
        assert message in widget.error, widget.error
        assert widget.weights == {"rgb": 0.3} and widget.results == before
    user_picks(widget, metric="cosine")
    assert "the hybrid mode has no metric of its own" in widget.error and widget.metric == ""
    user_picks(widget, weights={"rgb": 0, "ahash": 0.4})
    assert widget.error == "" and widget.result_metric == "1 ahash/hamming"
    assert widget.results == hybrid_hits(cheap_index, query, {"ahash": 0.4}, k=4)
    upload(widget, [("coffee.jpg", query.read_bytes(), "image/jpeg")])
    assert widget.error == "" and widget.result_mode == "hybrid" and len(widget.results) == 4


def test_hybrid_from_python_and_within_a_scope(cheap_index, sample_folder):
    query = photo(sample_folder, "brick")
    weights = {"rgb": 0.6, "dhash": 0.4}
    w = SearchWidget(cheap_index, mode="hybrid", weights=weights, k=5)
    assert (w.mode, w.metric, w.metrics, w.weights) == ("hybrid", "", [], weights)
    results = w.search(query)
    assert w.results == results.to_dicts() == hybrid_hits(cheap_index, query, weights, k=5)
    assert Path(w.results[0]["path"]) == query

    results = w.search(query, weights={"ahash": 1}, k=3)
    assert w.weights == {"ahash": 1.0} and results.metric == w.result_metric == "1 ahash/hamming"
    controls = (w.mode, w.metric, w.k, w.weights)
    with pytest.raises(ValueError, match="no metric of its own"):
        w.search(query, metric="cosine", k=7, weights={"rgb": 1})
    with pytest.raises(ValueError, match="all zero"):
        w.search(query, k=7, weights={"rgb": 0})
    assert (w.mode, w.metric, w.k, w.weights) == controls  # nothing half-applied

    scope = [int(i) for i in cheap_index.ids()[::3]]
    w.scope = scope  # a UMAP selection: the hybrid search stays inside it
    assert w.error == "" and w.scope_size == len(scope)
    assert {hit["id"] for hit in w.results} <= set(scope)
    assert w.results == hybrid_hits(cheap_index, query, {"ahash": 1}, k=3, ids=scope)

    w.search(query, mode="rgb", metric="manhattan")
    assert (w.metric, w.result_mode, w.result_metric) == ("manhattan", "rgb", "manhattan")
    with pytest.raises(ValueError, match="all zero"):
        SearchWidget(cheap_index, weights={"rgb": 0})
    with pytest.raises(ValueError, match="no metric of its own"):
        SearchWidget(cheap_index, mode="hybrid", metric="euclidean")


# -- a hostile browser: it sends messages, Python owns every trait --------------------------------


def test_the_browser_cannot_raise_k_by_writing_state(widget):
    front_end_writes(widget, k=200_000)  # then "more like this"
    custom(widget, {"type": "more_like", "id": 0})
    assert widget.k == 10 and len(widget.results) == 10 and widget.error == ""
    assert widget.rejected == 1


@pytest.mark.parametrize("k", [200_000, 0, -5, 1000, 10**400])
def test_a_k_out_of_bounds_from_the_browser_is_refused_and_later_searches_work(widget, k):
    sent = []
    widget._send = lambda msg, buffers=None: sent.append(msg)
    custom(widget, {"type": "set", "name": "k", "value": k})
    assert widget.k == 10 and "k must be from 1 to 100" in widget.error
    assert {"type": "refused", "name": "k"} in [m.get("content") for m in sent]
    custom(widget, {"type": "more_like", "id": 0})
    assert len(widget.results) == 10 and widget.error == ""


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "set", "name": "weights", "value": {"rgb": 1e400}}',  # json: inf
        '{"type": "set", "name": "weights", "value": {"rgb": NaN}}',
        '{"type": "set", "name": "weights", "value": {"rgb": -1e400}}',
        '{"type": "set", "name": "weights", "value": {"rgb": 1' + "0" * 400 + "}}",  # 10**400
        '{"type": "set", "name": "weights", "value": {"rgb": 0}}',
    ],
)
def test_weights_that_are_no_finite_numbers_are_refused_and_later_searches_work(
    widget, cheap_index, sample_folder, message
):
    query = photo(sample_folder, "coffee")
    widget.search(query, mode="hybrid", k=4)
    custom(widget, json.loads(message))
    assert widget.weights == {"rgb": 0.3} and "weight" in widget.error
    assert "Overflow" not in widget.error and widget.rejected == 0
    custom(widget, {"type": "set", "name": "k", "value": 5})
    assert widget.error == "" and widget.results == hybrid_hits(cheap_index, query, {"rgb": 1}, 5)


def test_weights_whose_sum_overflows_rank_like_their_shares(widget, cheap_index, sample_folder):
    query = photo(sample_folder, "coffee")
    huge = {"rgb": 1e308, "ahash": 1e308}
    hits = hybrid_hits(cheap_index, query, huge, k=6)
    assert hits == hybrid_hits(cheap_index, query, {"rgb": 1, "ahash": 1}, k=6)
    assert any(hit["distance"] > 0 for hit in hits)  # an overflowed sum made every one 0
    widget.search(query, mode="hybrid", k=6)
    custom(widget, {"type": "set", "name": "weights", "value": huge})
    assert widget.error == "" and widget.results == hits


@pytest.mark.parametrize(
    "content",
    [
        {"type": "set", "name": "max_upload_bytes", "value": 10**12},
        {"type": "set", "name": "results", "value": []},
        {"type": "set", "name": ["k"], "value": 5},
        {"type": "set", "name": "k"},
        {"type": "set", "name": "mode", "value": "x" * 10_000},
        {"type": "set", "name": "weights", "value": {f"m{i}": 1 for i in range(10_000)}},
        {"type": "set", "name": "weights", "value": {"rgb": True}},
        {"type": "set", "name": "weights", "value": {"rgb": None}},
        {"type": "file_error", "message": 5},
    ],
)
def test_malformed_control_messages_change_nothing(widget, content):
    before = {name: getattr(widget, name) for name in widget.keys if name != "error"}
    custom(widget, content)
    assert widget.rejected == 1 and widget.error and len(widget.error) < 200
    assert {name: getattr(widget, name) for name in widget.keys if name != "error"} == before


def test_the_front_end_module_sends_messages_and_writes_no_trait():
    source = (STATIC_DIR / "search_widget.js").read_text(encoding="utf-8")
    assert "model.send(" in source
    assert "model.set(" not in source and "save_changes(" not in source.replace(
        "`set`/`save_changes`", ""
    )


def test_the_browser_dismisses_its_error_by_message(widget):
    custom(widget, {"type": "set", "name": "k", "value": 0})
    assert widget.error
    custom(widget, {"type": "dismiss"})
    assert widget.error == "" and widget.k == 10


def test_no_hybrid_mode_without_embedding_or_colour(photos, index_of):
    index = index_of(photos, features=["ahash", "thumb"])
    w = SearchWidget(index, k=3)
    assert (w.modes, w.mode, w.weights) == (["ahash"], "ahash", {})
    w.search(0)
    before = w.results
    w.mode = "hybrid"
    assert w.mode == "ahash" and w.results == before
    assert w.error.startswith("mode 'hybrid' is not available: the default hybrid weights need")
    user_picks(w, k=2)
    assert w.error == "" and len(w.results) == 2
    with pytest.raises(ValueError, match="mode 'hybrid' is not available"):
        SearchWidget(index, mode="hybrid")
    with pytest.raises(ValueError, match="weights= is for the hybrid mode, which this index lacks"):
        SearchWidget(index, weights={"ahash": 1})


def test_hybrid_with_an_embedding_uploads_and_finds_the_photo(full_index, sample_folder):
    w = SearchWidget(full_index, mode="hybrid", k=3)
    assert w.weights == {"embedding": 0.7, "rgb": 0.3}
    data = photo(sample_folder, "rocket").read_bytes()
    upload(w, [("rocket.jpg", data, "image/jpeg")])
    assert w.error == "" and w.result_metric == "0.7 embedding/cosine + 0.3 rgb/euclidean"
    assert Path(w.results[0]["path"]).name == "rocket.jpg"
    assert w.results == hybrid_hits(full_index, data, DEFAULT_HYBRID_WEIGHTS, k=3)
    user_picks(w, weights={"embedding": 0.2, "rgb": 0.6, "dhash": 0.2})
    assert w.results == hybrid_hits(
        full_index, data, {"embedding": 0.2, "rgb": 0.6, "dhash": 0.2}, k=3
    )
    assert w.result_metric == "0.2 embedding/cosine + 0.6 rgb/euclidean + 0.2 dhash/hamming"


# -- more like this, programmatic search -------------------------------------------------------------


def test_clicking_a_result_searches_more_like_it_without_itself(widget, sample_folder):
    widget.search(photo(sample_folder, "hubble_deep_field"), k=5)
    clicked = widget.results[2]
    custom(widget, {"type": "more_like", "id": clicked["id"]})
    assert widget.error == ""
    assert clicked["id"] not in [hit["id"] for hit in widget.results]
    assert len(widget.results) == 5
    assert widget.query_names == [Path(clicked["path"]).name]
    stored = widget._index.thumbnail_bytes([clicked["id"]])[0]
    assert widget.query_thumbnails[0] == stored  # the stored thumbnail
    custom(widget, {"type": "more_like", "id": 10_000})
    assert widget.error == "no image with id 10000 in the index (removed or never indexed)"
    assert widget.query_names == [Path(clicked["path"]).name]


def test_search_from_python_with_paths_and_ids(widget, sample_folder, photo_paths):
    path = photo(sample_folder, "flower")
    results = widget.search(path, mode="dhash", k=3)
    assert (widget.mode, widget.metric, widget.k) == ("dhash", "hamming", 3)
    assert [hit["id"] for hit in widget.results] == results.ids
    assert widget.results == results.to_dicts()
    assert widget.query_names == ["flower.jpg"] and len(widget.query_thumbnails) == 1
    assert Path(widget.results[0]["path"]) == path

    results = widget.search(results.ids[0], mode="rgb", metric="manhattan", k=4)
    assert results.ids[0] not in widget.results and len(widget.results) == 4
    assert widget.result_metric == "manhattan"

    widget.search([photo_paths[0], photo_paths[1]], k=2)
    assert widget.query_names == [photo_paths[0].name, photo_paths[1].name]

    before = widget.results
    with pytest.raises(FileNotFoundError):
        widget.search(sample_folder / "missing.jpg")
    assert "no such image file" in widget.error and widget.results == before
    controls = (widget.mode, widget.metric, widget.k)
    with pytest.raises(ValueError, match="not allowed"):
        widget.search(path, mode="ahash", metric="cosine", k=7)
    assert (widget.mode, widget.metric, widget.k) == controls  # nothing half-applied
    widget.search(np.asarray(Image.open(path)), k=1)
    assert widget.error == "" and Path(widget.results[0]["path"]) == path


def test_an_index_without_thumbnails_shows_ones_made_from_the_files(photos, index_of):
    index = index_of(photos, features=["ahash"])
    w = SearchWidget(index, k=3)
    custom(w, {"type": "more_like", "id": 0})
    assert w.error == "" and len(w.results) == 3
    sizes = [jpeg_size(t) for t in [*w.thumbnails, *w.query_thumbnails]]
    assert all(max(size) == QUERY_THUMB_SIZE for size in sizes), sizes


def test_thumbnails_made_from_files_are_decoded_once_until_the_file_changes(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    # a big PNG: no draft decoding (stored, not deflated: random pixels do not shrink anyway)
    Image.fromarray(pixels).save(folder / "big.png", compress_level=0)
    Image.fromarray(pixels[:300, :400]).save(folder / "small.png")
    index = ImageIndex.open(folder, index_dir=tmp_path / "idx", features=["ahash"])
    index.update(progress=False, workers=0)
    decoded = []
    real_decode = index_module.decode
    monkeypatch.setattr(
        index_module, "decode", lambda path, **kw: decoded.append(path) or real_decode(path, **kw)
    )
    big = next(r.id for r in index.records(index.ids()) if r.path == "big.png")
    first = index.thumbnail_bytes([big])  # hovering the same point again and again
    for _ in range(5):
        assert index.thumbnail_bytes([big]) == first
    side = index_module.THUMBNAIL_SIDE  # the longer side of a 2000 x 1500 image
    assert len(decoded) == 1 and jpeg_size(first[0]) == (side, side * 3 // 4)
    assert index.thumbnail_bytes([big], side=128) != first and len(decoded) == 2  # own key
    stat = (folder / "big.png").stat()
    edited = Image.fromarray(pixels[::-1])
    edited.save(folder / "big.png", compress_level=0)  # edited since: decoded again
    os.utime(folder / "big.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert index.thumbnail_bytes([big]) != first and len(decoded) == 3
    (folder / "big.png").unlink()
    assert index.thumbnail_bytes([big]) == [b""]


def test_the_thumbnail_cache_is_bounded_in_bytes(photos, index_of, monkeypatch):
    monkeypatch.setattr(index_module, "THUMBNAIL_CACHE_BYTES", 20_000)
    index = index_of(photos, features=["ahash"])
    thumbnails = index.thumbnail_bytes(index.ids())
    assert sum(map(len, thumbnails)) > 40_000  # more than the cache holds
    cache = index._thumbnails
    assert 0 < cache.held_bytes <= 20_000 and 0 < len(cache) < len(thumbnails)
    assert index.thumbnail_bytes(index.ids()) == thumbnails  # evicted ones are made again


def test_clear_forgets_the_query(widget, sample_folder):
    widget.search(photo(sample_folder, "brick"))
    widget.clear()
    assert widget.results == [] and widget.query_thumbnails == [] and widget.query_names == []
    user_picks(widget, k=3)  # nothing to re-run
    assert widget.results == [] and widget.error == ""


def test_embedding_mode_finds_the_photo_itself(full_index, sample_folder):
    w = SearchWidget(full_index, k=3)
    assert (w.mode, w.metric) == ("embedding", "cosine")
    assert w.modes == ["embedding", "rgb", "ahash", "dhash", "hybrid"]
    assert w.weights == DEFAULT_HYBRID_WEIGHTS == {"embedding": 0.7, "rgb": 0.3}
    upload(w, [("rocket.jpg", photo(sample_folder, "rocket").read_bytes(), "image/jpeg")])
    assert w.error == ""
    assert Path(w.results[0]["path"]).name == "rocket.jpg"
    assert w.results[0]["distance"] == pytest.approx(0, abs=1e-3)
    assert distances(w) == sorted(distances(w))
    user_picks(w, metric="euclidean")
    assert w.result_metric == "euclidean" and Path(w.results[0]["path"]).name == "rocket.jpg"


def test_nothing_is_written_into_the_image_folder(cheap_index, sample_folder):
    before = sorted(p.relative_to(sample_folder) for p in sample_folder.rglob("*"))
    w = SearchWidget(cheap_index)
    upload(w, [("brick.jpg", photo(sample_folder, "brick").read_bytes(), "image/jpeg")])
    upload(w, [("notes.txt", b"text", "text/plain")])
    custom(w, {"type": "more_like", "id": w.results[1]["id"]})
    assert sorted(p.relative_to(sample_folder) for p in sample_folder.rglob("*")) == before


# -- the shared base ------------------------------------------------------------------------------


_HOT_RELOAD = """\
import json, sys, time
import imrec_widgets
from imrec_widgets import ImageIndex, SearchWidget

root, index_dir, module = sys.argv[1:]
assert imrec_widgets.__file__.startswith(module.rsplit("/static/", 1)[0]), imrec_widgets.__file__
widget = SearchWidget(ImageIndex.open(root, index_dir=index_dir))
original = open(module, encoding="utf-8").read()
before = widget._esm == original
seen, deadline, attempt = None, time.monotonic() + 60, 0
while seen is None and time.monotonic() < deadline:
    attempt += 1  # saved again until seen: the watcher may start after the first save
    marker = f"// edited {attempt}"
    with open(module, "w", encoding="utf-8") as f:
        f.write(original + marker + "\\n")
    until = time.monotonic() + 1
    while time.monotonic() < until:
        if widget._esm == original + marker + "\\n":
            seen = marker
            break
        time.sleep(0.05)
print(json.dumps({"before": before, "seen": seen, "end": widget._esm[-40:]}))
"""


def test_an_edited_front_end_reaches_live_widgets_with_anywidget_hmr(cheap_index, tmp_path):
    """``ANYWIDGET_HMR=1`` in a checkout: anywidget watches the widget's file (``watchfiles``)
    and sends the edited module to live widgets. Done on a copy of the package, never the
    checkout itself."""
    copy = tmp_path / "checkout" / "imrec_widgets"
    package = Path(imrec_widgets.__file__).resolve().parent
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "ANYWIDGET_HMR": "1", "PYTHONPATH": str(copy.parent)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _HOT_RELOAD,
            str(cheap_index.root),
            str(cheap_index.index_dir),
            str(copy / "static" / "search_widget.js"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["before"] is True
    assert report["seen"] is not None, report


def test_backend_imports_without_widget_libraries():
    code = (
        "import sys, imrec_widgets, imrec_widgets.index, imrec_widgets.features;"
        "bad = [m for m in ('anywidget', 'ipywidgets', 'imrec_widgets.widgets') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- curation: pick and tag results, search within a tag, 👍/👎 and refine ---------------------


@pytest.fixture
def own_index(cheap_index, tmp_path):
    """A writable copy of the cheap index (tags are written to its catalog)."""
    shutil.copytree(cheap_index.index_dir, tmp_path / "index")
    return ImageIndex.open(cheap_index.root, index_dir=tmp_path / "index")


def shown_ids(widget):
    return [hit["id"] for hit in widget.results]


def pick(widget, ids, picked=True):
    custom(widget, {"type": "pick", "ids": list(ids), "picked": picked})


def test_picks_follow_clicks_and_ranges_in_result_order(own_index, sample_folder):
    w = SearchWidget(own_index, k=6)
    w.search(photo(sample_folder, "coffee"))
    ids = shown_ids(w)
    pick(w, [ids[4]])
    pick(w, ids[0:3])  # a shift-click range
    assert w.picked == [ids[0], ids[1], ids[2], ids[4]]  # in result order
    pick(w, [ids[1]], picked=False)
    assert w.picked == [ids[0], ids[2], ids[4]]
    assert w.rejected == 0 and w.error == ""
    w.k = 3  # a re-run: the picks still shown stay
    assert w.picked == [ids[0], ids[2]]
    w.search(photo(sample_folder, "moon"))  # a new query: no picks
    assert w.picked == []


@pytest.mark.parametrize(
    "message",
    [
        {"type": "pick", "ids": [10**6], "picked": True},  # not a result shown
        {"type": "pick", "ids": [], "picked": True},
        {"type": "pick", "ids": "1", "picked": True},
        {"type": "pick", "ids": [True], "picked": True},
        {"type": "pick", "ids": [0] * (101), "picked": True},
        {"type": "pick", "ids": None, "picked": True},
        {"type": "pick", "ids": [1.5], "picked": True},
        {"type": "pick", "picked": "yes", "ids": "first"},
        {"type": "mark", "id": 10**6, "mark": "relevant"},
        {"type": "mark", "id": "SHOWN", "mark": "maybe"},
        {"type": "mark", "id": None, "mark": "relevant"},
        {"type": "tag", "name": 3, "add": True},
        {"type": "tag", "name": "cats", "add": "yes"},
        {"type": "tag", "name": "x" * 5000, "add": True},
    ],
)
def test_malformed_pick_mark_and_tag_messages_are_rejected_and_counted(
    own_index, sample_folder, message
):
    w = SearchWidget(own_index, k=4)
    w.search(photo(sample_folder, "coffee"))
    first = shown_ids(w)[0]
    pick(w, [first])
    message = {key: first if value == "SHOWN" else value for key, value in message.items()}
    custom(w, message)
    assert w.rejected == 1 and w.error
    assert w.picked == [first] and w.relevant == [] and w.not_relevant == []
    assert own_index.tags() == {}
    custom(w, {"type": "dismiss"})
    pick(w, shown_ids(w)[1:2])  # still usable
    assert w.picked == shown_ids(w)[:2] and w.error == ""


def test_tag_picked_results_writes_the_catalog_and_reports_it(own_index, sample_folder):
    w = SearchWidget(own_index, k=6)
    w.search(photo(sample_folder, "coffee"))
    assert w.tags == []
    ids = shown_ids(w)
    pick(w, [ids[0]])
    pick(w, ids[2:4])
    custom(w, {"type": "tag", "name": "  mugs ", "add": True})
    assert w.error == "" and w.rejected == 0
    assert own_index.tagged("mugs").tolist() == sorted([ids[0], ids[2], ids[3]])
    assert w.notice == "tagged 3 images 'mugs'"
    assert w.tags == [{"name": "mugs", "count": 3}]  # what the tag box now suggests
    pick(w, [ids[3]], picked=False)
    custom(w, {"type": "tag", "name": "mugs", "add": False})
    assert own_index.tagged("mugs").tolist() == [ids[3]]
    assert w.notice == "untagged 2 images 'mugs'"
    assert w.tags == [{"name": "mugs", "count": 1}]


@pytest.mark.parametrize(
    ("name", "picks", "expected"),
    [
        ("   ", True, "a tag name needs at least one visible character"),
        ("bad\x07name", True, "holds the control character U+0007"),
        ("y" * 101, True, "is 101 characters; at most 100"),
        ("cats", False, "no result is picked; tick the results to tag first"),
    ],
)
def test_a_bad_tag_or_an_empty_pick_is_one_line_and_the_widget_stays_usable(
    own_index, sample_folder, name, picks, expected
):
    w = SearchWidget(own_index, k=4)
    w.search(photo(sample_folder, "coffee"))
    if picks:
        pick(w, shown_ids(w)[:2])
    custom(w, {"type": "tag", "name": name, "add": True})
    assert expected in w.error and "\n" not in w.error
    assert w.rejected == 0  # a user can type this: refused, not malformed
    assert own_index.tags() == {} and w.notice == ""
    pick(w, shown_ids(w)[:1])
    custom(w, {"type": "tag", "name": "cats", "add": True})
    assert w.error == "" and own_index.tags() == {"cats": len(w.picked)}


def test_tagging_a_read_only_index_says_so(cheap_index, sample_folder, tmp_path):
    from test_scan_and_shares import read_only

    shutil.copytree(cheap_index.index_dir, tmp_path / "index")
    with read_only(tmp_path / "index") as mounted:
        index = ImageIndex.open(cheap_index.root, index_dir=mounted)
        assert index.read_only
        w = SearchWidget(index, k=3)
        w.search(photo(sample_folder, "coffee"))
        pick(w, shown_ids(w))
        custom(w, {"type": "tag", "name": "cats", "add": True})
        assert "is read-only here" in w.error and "\n" not in w.error
        assert w.rejected == 0 and w.notice == ""
        w.search(photo(sample_folder, "moon"))  # still usable
        assert w.error == "" and len(w.results) == 3
        index.close()


def test_search_within_a_tag_restricts_results_and_follows_tagging(own_index, sample_folder):
    from imrec_widgets.errors import TagError

    query = photo(sample_folder, "coffee")
    own_index.tag([1, 4, 9, 12], "set")
    w = SearchWidget(own_index, k=4)
    assert w.tags == [{"name": "set", "count": 4}]
    w.search(query)
    user_picks(w, within_tag="set")
    assert w.within_tag == "set" and w.error == ""
    expected = own_index.search(query, mode="rgb", k=4, tags=["set"])
    assert shown_ids(w) == expected.ids and sorted(expected.ids) == [1, 4, 9, 12]
    sent = []
    w._send = lambda msg, buffers=None: sent.append(msg)
    user_picks(w, within_tag="nope")  # a stale menu: refused, the menu told to show "set"
    assert "no image is tagged 'nope'" in w.error and w.within_tag == "set"
    assert {"type": "refused", "name": "within_tag"} in [m.get("content") for m in sent]
    assert w.rejected == 0
    # untagging the last of them from the widget: the search goes back to every image
    pick(w, shown_ids(w))
    custom(w, {"type": "tag", "name": "set", "add": False})
    assert w.error == "" and w.tags == [] and w.within_tag == ""
    assert shown_ids(w) == own_index.search(query, mode="rgb", k=4).ids
    # a tag taken away elsewhere: the search within it says so once, then searches all
    own_index.tag([2, 3], "pair")
    assert w.tags == []
    w.refresh_tags()  # tagged elsewhere (the map): the menu offers it at once
    assert w.tags == [{"name": "pair", "count": 2}]
    user_picks(w, within_tag="pair")
    assert sorted(shown_ids(w)) == [2, 3]
    own_index.untag([2, 3], "pair")
    with pytest.raises(TagError, match="no searchable image is tagged 'pair'"):
        w.search(photo(sample_folder, "moon"))
    assert w.tags == [] and w.within_tag == "" and "'pair'" in w.error
    w.search(photo(sample_folder, "moon"))
    assert w.error == "" and len(w.results) == 4


def test_marks_and_refine_search_with_the_marks_as_feedback(full_index):
    w = SearchWidget(full_index, k=6)
    assert "search first" in w.refine_reason
    w.search(3)
    assert "mark results" in w.refine_reason
    ids = shown_ids(w)
    custom(w, {"type": "mark", "id": ids[1], "mark": "relevant"})
    custom(w, {"type": "mark", "id": ids[3], "mark": "relevant"})
    custom(w, {"type": "mark", "id": ids[0], "mark": "not_relevant"})
    custom(w, {"type": "mark", "id": ids[2], "mark": "relevant"})
    custom(w, {"type": "mark", "id": ids[2], "mark": "none"})  # changed their mind
    assert (w.relevant, w.not_relevant, w.refine_reason) == ([ids[1], ids[3]], [ids[0]], "")
    custom(w, {"type": "refine"})
    expected = full_index.search([3, ids[1], ids[3]], negatives=[ids[0]], mode="embedding", k=6)
    assert w.error == "" and w.rejected == 0 and w.refined
    assert shown_ids(w) == expected.ids and shown_ids(w) != ids
    assert (w.result_mode, w.result_metric) == ("embedding", "cosine")
    assert len(w.query_names) == 3  # the query and the two 👍
    # a second round adds to the marks; a mark of a result no longer shown can be taken back
    custom(w, {"type": "mark", "id": ids[3], "mark": "none"})
    custom(w, {"type": "mark", "id": shown_ids(w)[0], "mark": "not_relevant"})
    assert w.rejected == 0 and w.relevant == [ids[1]]
    second = w.not_relevant
    custom(w, {"type": "refine"})
    expected = full_index.search([3, ids[1]], negatives=second, mode="embedding", k=6)
    assert shown_ids(w) == expected.ids and len(w.query_names) == 2
    w.k = 4  # a control re-runs the refined search
    assert shown_ids(w) == expected.ids[:4] and w.refined
    w.search(5)  # a new query: the marks go
    assert (w.relevant, w.not_relevant, w.refined) == ([], [], False)
    assert "mark results" in w.refine_reason


def test_refine_with_nothing_marked_or_no_embedding_says_why(
    full_index, cheap_index, sample_folder
):
    w = SearchWidget(full_index, k=4)
    w.search(3)
    custom(w, {"type": "refine"})  # a stale button: refused, not malformed
    assert "mark results 👍" in w.error and w.rejected == 0 and not w.refined and not w.busy
    cheap = SearchWidget(cheap_index, k=4)
    cheap.search(photo(sample_folder, "moon"))
    first = shown_ids(cheap)[0]
    custom(cheap, {"type": "mark", "id": first, "mark": "relevant"})
    assert "refine needs the embedding feature" in cheap.refine_reason
    custom(cheap, {"type": "refine"})
    assert "refine needs the embedding feature" in cheap.error and cheap.rejected == 0
    with pytest.raises(ValueError, match="refine needs the embedding feature"):
        cheap.refine()


def test_front_end_curation_constants_match_python():
    from imrec_widgets.widgets import search_widget

    node = shutil.which("node")
    assert node, "node (>= 20) is needed to check the front end's constants"
    script = (
        f"const m = await import({json.dumps((STATIC_DIR / 'search_widget.js').as_uri())});"
        "console.log(JSON.stringify({controls: m.CONTROLS, marks: m.MARKS, maxPick: m.MAX_PICK}));"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    js = json.loads(done.stdout)
    assert js["controls"] == list(search_widget.CONTROLS)
    assert js["marks"] == list(search_widget.MARKS)
    assert js["maxPick"] == search_widget.K_MAX
