from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex, TagError
from imrec_widgets.cli import main
from imrec_widgets.tags import MAX_TAG_LENGTH, check_tag_name, describe_tagging

FEATURES = ["rgb", "dhash", "thumb"]


def _id_of(index: ImageIndex, relative: str) -> int:
    id_ = index.catalog.id_for_path(relative)
    assert id_ is not None, relative
    return id_


@pytest.fixture
def index(photos: Path, index_of: IndexOf) -> ImageIndex:
    return index_of(photos, features=FEATURES)


def test_tag_untag_and_the_reads(index: ImageIndex) -> None:
    ids = index.ids()[:5].tolist()
    assert index.tags() == {}
    assert index.tag(ids, "keep") == 5
    assert index.tag(ids[:2], "keep") == 0  # already tagged: nothing new
    assert index.tag(np.asarray(ids[3:]), " best ") == 2  # trimmed
    assert index.tags() == {"best": 2, "keep": 5}
    assert index.tagged("keep").tolist() == sorted(ids)
    assert index.tagged(["best", "keep"]).tolist() == sorted(ids)
    assert index.tags_of(ids[4]) == ["best", "keep"]
    assert index.tags_of(ids[0]) == ["keep"]
    assert index.untag(ids[:2] + ids[:1], "keep") == 2
    assert index.untag(ids[:2], "keep") == 0
    assert index.tags() == {"best": 2, "keep": 3}
    assert index.tags_of(ids[0]) == []
    # search results are a selection too
    hits = index.search(ids[0], mode="rgb", k=3)
    assert index.tag(hits, "near") == 3
    assert index.tagged("near").tolist() == sorted(hit.id for hit in hits)
    # stored in the catalog, read by a fresh ImageIndex
    again = ImageIndex.open(index.root)
    assert again.tags() == {"best": 2, "keep": 3, "near": 3}


def test_bad_selections_write_nothing(index: ImageIndex) -> None:
    first = int(index.ids()[0])
    unknown = int(index.ids().max()) + 100
    with pytest.raises(TagError, match=f"no image with id {unknown}"):
        index.tag([first, unknown], "keep")
    assert index.tags() == {}  # one transaction: the valid id was not tagged either
    for empty in ([], np.array([], dtype=np.int64)):
        with pytest.raises(TagError, match="selection is empty"):
            index.tag(empty, "keep")
    with pytest.raises(TagError, match="integers"):
        index.tag(["a.jpg"], "keep")
    with pytest.raises(TagError, match="integers"):
        index.tag([True], "keep")
    with pytest.raises(TagError, match=f"no image with id {unknown}"):
        index.tags_of(unknown)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("keep", "keep"),
        ("  spaced out\t", "spaced out"),
        ("猫 🐱", "猫 🐱"),
        ("cafe\u0301", "caf\u00e9"),  # NFC: the same tag however the é was typed
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # joiners are not control characters
        ("a/b..\\c", "a/b..\\c"),
        ("x" * MAX_TAG_LENGTH, "x" * MAX_TAG_LENGTH),
    ],
)
def test_tag_names_any_unicode(name: str, stored: str) -> None:
    assert check_tag_name(name) == stored


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "at least one visible character"),
        ("  \t ", "at least one visible character"),
        ("x" * (MAX_TAG_LENGTH + 1), "at most 100"),
        ("two\nlines", "U\\+000A"),
        ("nul\x00", "U\\+0000"),
        ("bell\x07", "U\\+0007"),
        ("line\u2028sep", "U\\+2028"),
        (3, "is a str"),
        (None, "is a str"),
    ],
)
def test_bad_tag_names_are_one_line_errors(index: ImageIndex, name: object, message: str) -> None:
    with pytest.raises(TagError, match=message) as caught:
        index.tag(index.ids()[:1], name)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert index.tags() == {}


def test_tags_survive_update_change_removal_and_return(
    photos: Path, tmp_path: Path, index_of: IndexOf
) -> None:
    index = index_of(photos, features=FEATURES)
    changed, removed = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))[:2]
    changed_id, removed_id = _id_of(index, changed), _id_of(index, removed)
    index.tag([changed_id, removed_id], "keep")
    index.tag([removed_id], "other")

    with Image.open(photos / changed) as image:  # new content, same path
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / changed, quality=70)
    kept = tmp_path / "kept.jpg"
    shutil.move(photos / removed, kept)
    report = index.update(progress=False, workers=0)
    assert (report.changed, report.removed) == (1, 1)
    assert _id_of(index, changed) == changed_id
    assert index.tags_of(changed_id) == ["keep"]
    # a removed image keeps its tags, hidden from every read
    assert index.tagged("keep").tolist() == [changed_id]
    assert index.tags() == {"keep": 1}
    with pytest.raises(TagError, match=f"image {removed_id} was removed"):
        index.tag([removed_id], "keep")
    with pytest.raises(TagError, match=f"image {removed_id} was removed"):
        index.tags_of(removed_id)
    with pytest.raises(TagError, match="no searchable image is tagged 'other'"):
        index.search(changed_id, mode="rgb", tags=["other"])

    shutil.move(kept, photos / removed)  # back at the same path: the same id, its tags again
    index.update(progress=False, workers=0)
    assert _id_of(index, removed) == removed_id
    assert index.tags_of(removed_id) == ["keep", "other"]
    assert index.tags() == {"keep": 2, "other": 1}


def test_search_filters_by_tags(index: ImageIndex) -> None:
    ids = index.ids().tolist()
    query = ids[0]
    cats, dogs = ids[1:6], ids[6:9]
    index.tag(cats, "cats")
    index.tag(dogs, "dogs")
    index.tag(cats[:2], "reviewed")
    found = index.search(query, mode="rgb", k=50, tags=["cats"])
    assert sorted(found.ids) == sorted(cats)
    found = index.search(query, mode="rgb", k=50, tags="dogs")
    assert sorted(found.ids) == sorted(dogs)
    found = index.search(query, mode="rgb", k=50, tags=["cats", "dogs"], exclude_tags="reviewed")
    assert sorted(found.ids) == sorted(cats[2:] + dogs)
    found = index.search(query, mode="rgb", k=50, exclude_tags=["cats", "dogs", "nothing-yet"])
    assert sorted(found.ids) == sorted(set(ids) - set(cats) - set(dogs) - {query})
    # beside the other filters
    folder = index.records([cats[0]])[0].path.rpartition("/")[0]
    found = index.search(query, mode="rgb", k=50, tags="cats", folder=folder)
    in_folder = {r.id for r in index.records(cats) if r.path.startswith(folder + "/")}
    assert set(found.ids) == in_folder
    found = index.search(query, mode="hybrid", k=50, tags=["dogs"], weights={"rgb": 1, "dhash": 1})
    assert sorted(found.ids) == sorted(dogs)
    with pytest.raises(TagError, match="no searchable image is tagged 'catz'; tags: 'cats'"):
        index.search(query, mode="rgb", tags=["catz"])
    with pytest.raises(TagError, match="empty"):
        index.search(query, mode="rgb", tags=[])


def test_evaluate_with_tags_as_labels(index: ImageIndex) -> None:
    records = index.records(index.ids())
    by_folder: dict[str, list[int]] = {}
    for record in records:
        by_folder.setdefault(record.path.split("/")[0], []).append(record.id)
    with pytest.raises(TagError, match="none is tagged yet"):
        index.evaluate(labels="tags", modes=["rgb"])
    for folder, ids in by_folder.items():
        index.tag(ids, f"tag-{folder}")
    by_tags = index.evaluate(labels="tags", k=3, modes=["rgb"])
    by_folders = index.evaluate(k=3, modes=["rgb"])
    assert by_tags.images == len(records)
    assert [row["precision"] for row in by_tags] == [row["precision"] for row in by_folders]


def test_cli_tag_untag_tags(
    index: ImageIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(index.root)
    ids = index.ids().tolist()
    assert main(["tag", root, "keep", "--ids", str(ids[0]), f"{ids[1]},{ids[2]}"]) == 0
    assert "tagged 3 images 'keep'; 3 images have it" in capsys.readouterr().out
    listing = tmp_path / "paths.txt"
    paths = index.paths(ids[2:4])
    listing.write_text(f"{paths[0]}\n\n{paths[1].relative_to(index.root)}\n", encoding="utf-8")
    assert main(["tag", root, "keep", "--from-file", str(listing)]) == 0
    assert "tagged 2 images 'keep' (1 had it already); 4 images have it" in capsys.readouterr().out
    assert main(["tag", root, "near", "--query", str(ids[0]), "-k", "5", "--mode", "rgb"]) == 0
    capsys.readouterr()
    assert index.tagged("near").size == 5 and ids[0] not in index.tagged("near")
    assert main(["tags", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"keep": 4, "near": 5}
    assert main(["tags", root, "--show", "keep"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in shown] == [str(p) for p in index.paths(ids[:4])]
    assert main(["untag", root, "keep", "--ids", str(ids[0])]) == 0
    assert "untagged 1 image 'keep'" in capsys.readouterr().out
    assert main(["untag", root, "near", "--all"]) == 0
    assert "untagged 5 images 'near'" in capsys.readouterr().out
    assert index.tags() == {"keep": 3}
    assert main(["tags", root]) == 0
    assert capsys.readouterr().out.split() == ["3", "keep"]

    missing = tmp_path / "missing.jpg"
    listing.write_text(f"{missing}\n", encoding="utf-8")
    for argv, message in [
        (["tag", root, "keep", "--from-file", str(listing)], "is not inside the index root"),
        (["tag", root, "keep", "--ids", "999999"], "no image with id 999999"),
        (["tag", root, "bad\x01", "--ids", str(ids[0])], "control character U+0001"),
        (["tag", root, "keep", "--ids", "x"], "--ids takes image ids"),
    ]:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_catalog_from_before_tags_reads_as_untagged(index: ImageIndex) -> None:
    index.close()
    with sqlite3.connect(index.catalog_path) as db:
        db.execute("DROP TABLE tags")
    from imrec_widgets.catalog import Catalog

    read_only = Catalog(index.catalog_path, read_only=True)
    try:
        assert read_only.tag_counts() == {}
        assert read_only.tagged_ids(["keep"]) == []
        assert read_only.tags_by_id() == {}
    finally:
        read_only.close()
    assert index.tags() == {}  # a writable open adds the table
    assert index.tag(index.ids()[:1], "keep") == 1


def test_the_map_colours_by_a_tag(tmp_path: Path) -> None:
    from imrec_widgets import UmapExplorer
    from imrec_widgets.synthetic import write_map_index

    write_map_index(tmp_path / "index", 500)
    (tmp_path / "root").mkdir()
    index = ImageIndex.open(tmp_path / "root", index_dir=tmp_path / "index")
    index.tag(list(range(0, 500, 5)), "group zero")
    explorer = UmapExplorer(index, feature="rgb", compute=False, color_by="tag:group zero")
    assert "tag:group zero" in explorer.color_menu.options
    categories = explorer.categories()
    names = [categories.names[c] for c in categories.codes.tolist()]
    ids = explorer.points.ids.tolist()
    assert names == ["group zero" if i % 5 == 0 else "(not tagged)" for i in ids]
    assert "group zero" in explorer.legend.value
    index.tag([1], "late")  # a tag made after the widget: still a choice, read fresh
    explorer.color_by = " tag:late ".strip()
    assert explorer.color_menu.value == "tag:late"
    assert sorted(explorer.categories().counts) == [1, 499]
    with pytest.raises(Exception, match="control character"):
        explorer.color_by = "tag:bad\x01"


@pytest.mark.parametrize(
    ("asked", "changed", "add", "line"),
    [
        (12, 1, True, "tagged 12 images 'keep' (11 had it already)"),
        (1, 1, True, "tagged 1 image 'keep'"),
        (3, 2, False, "untagged 3 images 'keep' (1 did not have it)"),
        (2000, 0, False, "untagged 2,000 images 'keep' (2,000 did not have it)"),
    ],
)
def test_one_line_says_what_a_tagging_did_for_the_cli_and_both_widgets(
    asked: int, changed: int, add: bool, line: str
) -> None:
    assert describe_tagging(" keep ", asked, changed, add=add) == line
