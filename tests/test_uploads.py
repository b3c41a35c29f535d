"""``Uploads``: the browser's chunked uploads reassembled within limits, without a widget."""

from __future__ import annotations

import pytest

from imrec_widgets.errors import MalformedMessage
from imrec_widgets.widgets.uploads import (
    MAX_QUERY_IMAGES,
    Uploads,
    format_bytes,
)


def chunks(uploads, upload, position, data, size):
    """Send ``data`` as file ``position`` of ``upload`` in pieces of ``size`` bytes."""
    for start in range(0, len(data), size):
        piece = memoryview(data[start : start + size])
        uploads.receive({"upload": upload, "file": position, "offset": start}, [piece])


def query(upload, *files):
    return {"upload": upload, "files": [{"name": name, "size": size} for name, size in files]}


def test_files_are_reassembled_in_order_then_forgotten():
    uploads = Uploads()
    first, second = bytes(range(256)) * 40, b"\x89PNG" + bytes(999)
    chunks(uploads, "u", 1, second, 7)
    chunks(uploads, "u", 0, first, 1000)
    assert uploads.held_bytes == len(first) + len(second)
    files = uploads.finish(query("u", ("a.jpg", len(first)), ("b.png", len(second))))
    assert files == [("a.jpg", first), ("b.png", second)]
    assert uploads.parts == {} and uploads.held_bytes == 0
    with pytest.raises(ValueError, match=r"a.jpg arrived incomplete \(0 of 10240 bytes\)"):
        uploads.finish(query("u", ("a.jpg", len(first))))  # the same upload, finished already


def test_buffers_of_any_kind_and_several_per_chunk():
    uploads = Uploads()
    uploads.receive({"upload": "u", "file": 0, "offset": 0}, [b"ab", bytearray(b"cd")])
    uploads.receive({"upload": "u", "file": 0, "offset": 4}, [memoryview(b"ef")])
    assert uploads.finish(query("u", ("x.jpg", 6))) == [("x.jpg", b"abcdef")]


def test_a_new_upload_drops_the_unfinished_one():
    uploads = Uploads()
    chunks(uploads, "old", 0, b"x" * 100, 10)
    chunks(uploads, "new", 0, b"y" * 50, 10)
    assert uploads.held_bytes == 50
    with pytest.raises(ValueError, match=r"old.jpg arrived incomplete \(0 of 100 bytes\)"):
        uploads.finish(query("old", ("old.jpg", 100)))
    assert uploads.held_bytes == 0  # finishing forgets whatever was held


def test_a_gap_or_a_repeated_chunk_is_an_incomplete_upload():
    uploads = Uploads()
    uploads.receive({"upload": "u", "file": 0, "offset": 0}, [b"abc"])
    with pytest.raises(ValueError, match="arrived incomplete") as caught:
        uploads.receive({"upload": "u", "file": 0, "offset": 10}, [b"def"])
    assert not isinstance(caught.value, MalformedMessage)  # it happens: not counted as hostile
    with pytest.raises(ValueError, match="arrived incomplete"):
        uploads.receive({"upload": "u", "file": 0, "offset": 0}, [b"abc"])
    with pytest.raises(ValueError, match=r"x.jpg arrived incomplete \(3 of 6 bytes\)"):
        uploads.finish(query("u", ("x.jpg", 6)))


@pytest.mark.parametrize(
    ("file", "offset"),
    [(-1, 0), (MAX_QUERY_IMAGES, 0), ("0", 0), (0.0, 0), (True, 0), (None, 0), (0, -1), (0, "0")],
)
def test_malformed_chunks_are_refused_and_hold_nothing(file, offset):
    uploads = Uploads()
    with pytest.raises(MalformedMessage):
        uploads.receive({"upload": "u", "file": file, "offset": offset}, [bytes(1000)])
    assert uploads.parts == {} and uploads.held_bytes == 0


def test_a_file_over_its_limit_is_dropped_at_once_and_refused():
    uploads = Uploads(max_file_bytes=1000)
    chunks(uploads, "u", 0, bytes(900), 300)
    chunks(uploads, "u", 1, bytes(3000), 300)  # over after 4 chunks; the rest are ignored
    assert uploads.held_bytes == 900 and set(uploads.parts) == {0}
    with pytest.raises(ValueError) as caught:
        uploads.finish(query("u", ("ok.jpg", 900), ("big.jpg", 999)))  # it lies about the size
    assert str(caught.value) == (
        "big.jpg is 1 kB, over the upload limit of 1 kB (SearchWidget.max_upload_bytes)"
    )
    uploads.max_file_bytes = 5000  # limits may change between uploads
    chunks(uploads, "v", 0, bytes(3000), 300)
    assert uploads.finish(query("v", ("big.jpg", 3000))) == [("big.jpg", bytes(3000))]


def test_one_upload_is_bounded_in_total():
    uploads = Uploads(max_file_bytes=1000, max_total_bytes=2500)
    for position in range(5):
        chunks(uploads, "u", position, bytes(1000), 500)
        assert uploads.held_bytes <= 2500
    assert uploads.held_bytes == 0  # over: everything is dropped, later chunks ignored
    with pytest.raises(ValueError, match=r"over 2.5 kB in total.*max_upload_total_bytes"):
        uploads.finish(query("u", *[(f"{i}.jpg", 1000) for i in range(5)]))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "no file was uploaded"),
        ([{"name": "e.png", "size": 0}], "e.png is empty (0 bytes)"),
        ([{"name": "a.png", "size": "12"}], "a.png: the upload gave no valid size"),
        ([{"name": 5, "size": -1}], "uploaded image: the upload gave no valid size"),
        ([None], "the upload's file list is malformed"),
        ([{"name": "x.jpg", "size": 1}] * (MAX_QUERY_IMAGES + 1), "17 files at once is too many"),
    ],
)
def test_a_bad_file_list_says_what_is_wrong(files, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Uploads().finish({"upload": "u", "files": files})


def test_a_file_list_that_is_not_a_list_is_malformed():
    with pytest.raises(MalformedMessage, match="malformed"):
        Uploads().finish({"upload": "u", "files": {"a": 1}})


def test_long_names_and_ids_are_cut():
    uploads = Uploads()
    long_id = "u" * 10_000
    uploads.receive({"upload": long_id, "file": 0, "offset": 0}, [b"abc"])
    ((name, data),) = uploads.finish(
        {"upload": long_id, "files": [{"name": "n" * 5000, "size": 3}]}
    )
    assert (len(name), data) == (300, b"abc")


def test_format_bytes_uses_decimal_units():
    sizes = [0, 999, 1500, 20_000_000, 25_300_000, 3_000_000_000]
    assert [format_bytes(s) for s in sizes] == ["0 B", "999 B", "1.5 kB", "20 MB", "25 MB", "3 GB"]
