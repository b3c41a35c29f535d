"""DuplicatesWidget without a front end: its state, and messages as the browser sends them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from index_cache import IndexOf
from test_moves import files_under, in_collection, write_copies

from imrec_widgets import DuplicatesWidget, ImageIndex
from imrec_widgets.moves import MOVED_FOLDER


@pytest.fixture(scope="module")
def copies(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``write_copies`` once per module, into a folder that is only copied (file times kept)."""
    folder = tmp_path_factory.mktemp("copies") / "photos"
    write_copies(sample_folder, folder)
    return folder


@pytest.fixture
def index(copies: Path, tmp_path: Path, index_of: IndexOf) -> ImageIndex:
    root = tmp_path / "photos"
    shutil.copytree(copies, root)
    return index_of(root, features=["dhash", "thumb"])


def from_front_end(widget: DuplicatesWidget, content) -> None:
    """Deliver ``content`` as the browser would: a comm message of method "custom"."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def test_groups_show_what_a_person_needs_to_choose(index: ImageIndex) -> None:
    widget = DuplicatesWidget(index)
    assert len(widget.groups) == 3 and widget.summary.startswith("3 group(s)")
    assert len(widget.thumbnails) == 9 and all(t[:2] == b"\xff\xd8" for t in widget.thumbnails)
    for group in widget.groups:
        item = group["items"][0]
        assert set(item) == {"id", "path", "width", "height", "bytes", "modified", "distance"}
        kept = next(i for i in group["items"] if i["id"] == group["keep"])
        assert kept["width"] * kept["height"] == max(
            i["width"] * i["height"] for i in group["items"]
        )
    assert widget.destination == str(
        index.root / MOVED_FOLDER / widget.destination.rsplit("/", 1)[1]
    )
    assert not widget.can_undo


def test_keep_move_and_undo_by_messages(index: ImageIndex) -> None:
    root = index.root
    before = in_collection(root)
    widget = DuplicatesWidget(index)
    group = widget.groups[0]
    other = next(i["id"] for i in group["items"] if i["id"] != group["keep"])
    from_front_end(widget, {"method": "keep", "group": 0, "id": other})
    assert widget.keepers[0] == other

    from_front_end(widget, {"method": "move", "destination": str(root / ".attic")})
    assert widget.error == "" and widget.can_undo and widget.groups == []
    assert len(widget.last_report.moved) == 6 and "moved 6 files" in widget.summary
    assert index.path(other).exists()  # the chosen keeper stayed
    assert len(files_under(root / ".attic")) == 6 and len(in_collection(root)) == 3

    from_front_end(widget, {"method": "undo"})
    assert in_collection(root) == before and not files_under(root / ".attic")
    assert len(widget.groups) == 3 and not widget.can_undo


@pytest.mark.parametrize(
    "content",
    [
        None,
        [],
        {"method": "keep", "group": "0", "id": 1},
        {"method": "keep", "group": True, "id": 1},
        {"method": "move", "destination": ""},
        {"method": "move", "destination": "x" * 5000},
        {"method": "move", "destination": "a\x00b"},
        {"method": "delete"},
    ],
)
def test_malformed_messages_are_counted_and_change_nothing(index: ImageIndex, content) -> None:
    widget = DuplicatesWidget(index)
    groups = widget.groups
    from_front_end(widget, content)
    assert widget.rejected == 1 and widget.groups == groups and widget.error == ""


def test_refused_requests_are_one_line_and_the_widget_stays_usable(index: ImageIndex) -> None:
    widget = DuplicatesWidget(index)
    from_front_end(widget, {"method": "keep", "group": 99, "id": 0})
    assert widget.error == "no duplicate group 99"
    from_front_end(widget, {"method": "keep", "group": 0, "id": 10_000})
    assert "not in duplicate group 0" in widget.error
    from_front_end(widget, {"method": "move", "destination": str(index.index_dir / "x")})
    assert "inside the index folder" in widget.error and len(in_collection(index.root)) == 9
    from_front_end(widget, {"method": "undo"})
    assert "nothing to undo" in widget.error
    from_front_end(widget, {"method": "refresh"})
    assert widget.error == "" and len(widget.groups) == 3


def test_the_front_end_cannot_write_state(index: ImageIndex) -> None:
    widget = DuplicatesWidget(index)
    keepers = widget.keepers
    widget._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"destination": "/etc", "groups": []}}
            },
            "buffers": [],
        }
    )
    assert widget.keepers == keepers and widget.destination != "/etc"


def test_unknown_keyword_arguments_are_refused(index: ImageIndex) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'modes'"):
        DuplicatesWidget(index, modes="dhash")
