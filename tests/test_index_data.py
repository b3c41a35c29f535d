"""Values read from an index folder that came from elsewhere (catalog paths, the move log,
stamps) are checked against the file system before any file is read, moved or trusted."""

from __future__ import annotations

import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest
from index_cache import IndexOf
from test_moves import write_copies

from imrec_widgets import ImageIndex, duplicates
from imrec_widgets.errors import IndexDataWarning


def data_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, IndexDataWarning)]


def set_path(root: Path, id_: int, path: str, **columns: object) -> None:
    with sqlite3.connect(root / ".imrec" / "catalog.sqlite") as db:
        db.execute("UPDATE images SET path = ? WHERE id = ?", (path, id_))
        for column, value in columns.items():
            db.execute(f"UPDATE images SET {column} = ? WHERE id = ?", (value, id_))
    db.close()


@pytest.fixture
def secret_and_index(
    photos: Path, tmp_path: Path, index_of: IndexOf
) -> tuple[Path, ImageIndex, list[int]]:
    """An index of ``photos`` (no stored thumbnails) whose catalog row of image 1 was crafted
    to name ``secret.jpg`` outside the collection, a copy of image 0 (same size, same bytes)."""
    idx = index_of(photos, features=["rgb", "dhash"])
    a, b = (int(i) for i in idx.ids()[:2])
    secret = tmp_path / "home" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(idx.path(a), secret)
    size = secret.stat().st_size
    idx.close()
    set_path(photos, b, str(secret), size=size)
    return secret, ImageIndex.open(photos), [a, b]


@pytest.mark.parametrize("how", ["absolute", "through a sibling link"])
def test_a_crafted_absolute_catalog_path_is_never_read(
    secret_and_index, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    secret, idx, (a, b) = secret_and_index
    if how == "through a sibling link":
        # a link that exists, but outside the root: only links under the root count
        (tmp_path / "elsewhere").symlink_to(secret.parent, target_is_directory=True)
    read: list[Path] = []
    real_sha = duplicates._sha256
    monkeypatch.setattr(duplicates, "_sha256", lambda p: (read.append(Path(p)), real_sha(p))[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [path] = idx.paths([b])
        thumbs = idx.thumbnail_bytes([a, b])
        hits = idx.search(a, mode="rgb", k=2, exclude_self=False)
        groups = duplicates.find_duplicates(idx, "dhash")
        report = idx.export([a, b], tmp_path / "out", layout="flat")
    assert not path.exists() and path.resolve().is_relative_to(photos.resolve())
    assert thumbs[0] != b"" and thumbs[1] == b""
    assert all(not str(hit.path).startswith(str(secret.parent)) for hit in hits)
    assert all(not p.resolve().is_relative_to(secret.parent) for p in read)
    assert all(b not in group.ids or not group.identical for group in groups)
    assert len(report.written) == 1 and report.missing == [path]
    assert not any(p.name == "secret.jpg" for p in (tmp_path / "out").iterdir())
    lines = data_lines(caught)
    assert lines and all("\n" not in line and "treated as missing" in line for line in lines)


def test_a_crafted_absolute_path_is_never_moved(secret_and_index, photos: Path) -> None:
    secret, idx, (a, b) = secret_and_index
    before = secret.read_bytes()
    from imrec_widgets.duplicates import DuplicateGroup

    group = DuplicateGroup(ids=[a, b], paths=[], distances=[0.0, 0.0], identical=True)
    with pytest.warns(IndexDataWarning, match="treated as missing"):
        report = idx.move_duplicates([group], keepers={0: a})
    assert not report.moved and secret.read_bytes() == before


def test_files_under_a_real_link_are_read_and_a_retargeted_link_is_not_followed(
    photos: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next(photos.rglob("*.jpg")), elsewhere / "far.jpg")
    (photos / "sub").mkdir()
    (photos / "sub" / "linked").symlink_to(elsewhere, target_is_directory=True)
    idx = ImageIndex.open(photos, features=["rgb"])
    idx.update(progress=False)
    [far] = [r for r in idx.records() if r.path.endswith("far.jpg")]
    assert far.path.startswith("/")
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexDataWarning)
        assert idx.paths([far.id]) == [elsewhere.resolve() / "far.jpg"]
        assert idx.thumbnail_bytes([far.id])[0] != b""
    other = tmp_path / "other"
    other.mkdir()
    (photos / "sub" / "linked").unlink()
    (photos / "sub" / "linked").symlink_to(other, target_is_directory=True)
    with pytest.warns(IndexDataWarning, match="treated as missing"):
        [path] = idx.paths([far.id])
    assert not path.exists()


# -- the move log ---------------------------------------------------------------------------------
def log_row(root: Path, state: str, source: str, destination: str, image_id: int = 0) -> None:
    with sqlite3.connect(root / ".imrec" / "catalog.sqlite") as db:
        db.execute(
            "INSERT INTO moves(batch, image_id, source, destination, state, changed_at) "
            "VALUES('crafted', ?, ?, ?, ?, 0)",
            (image_id, source, destination, state),
        )
    db.close()


@pytest.fixture
def indexed(photos: Path, index_of: IndexOf) -> Path:
    index_of(photos, features=["dhash"]).close()
    return photos


def test_a_crafted_moved_row_never_brings_a_file_in_from_elsewhere(
    indexed: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("private")
    log_row(indexed, "moved", "stolen.jpg", str(secret))
    idx = ImageIndex.open(indexed)
    with pytest.warns(IndexDataWarning, match="left alone"):
        report = idx.undo_moves()
    assert not report.restored and len(report.skipped) == 1
    assert secret.read_text() == "private" and not (indexed / "stolen.jpg").exists()


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_crafted_planned_row_never_deletes_a_file(
    indexed: Path, tmp_path: Path, where: str
) -> None:
    """Recovery finishes a cross-device copy by deleting its source: only a source inside the
    collection, and only when the destination holds the same bytes."""
    victim = tmp_path / "victim.txt" if where == "outside" else indexed / "victim.jpg"
    victim.write_text("keep me")
    other = indexed / ".imrec-moved" / "x" / "other.jpg"
    other.parent.mkdir(parents=True)
    other.write_text("something else")
    source = str(victim) if where == "outside" else "victim.jpg"
    log_row(indexed, "planned", source, str(other))
    idx = ImageIndex.open(indexed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from imrec_widgets.moves import recover

        assert recover(idx.catalog, idx.root) == 1
    assert victim.read_text() == "keep me" and other.read_text() == "something else"
    assert [r.state for r in idx.catalog.moves()] == ["cancelled"]
    assert len(data_lines(caught)) == (1 if where == "outside" else 0)


def test_an_undo_trusts_only_folders_marked_by_this_index(
    sample_folder: Path, tmp_path: Path, index_of: IndexOf
) -> None:
    write_copies(sample_folder, tmp_path / "dups")
    idx = index_of(tmp_path / "dups", features=["dhash"])
    attic = tmp_path / "attic"
    report = idx.move_duplicates(idx.duplicates(), attic)
    assert report.moved
    markers = list(attic.glob(".imrec-moves.*"))
    assert len(markers) == 1 and markers[0].read_text().strip() == idx.catalog.get_meta("index_id")
    # A log that names the marked folder of another index (here: a changed id) is not followed.
    real_id = idx.catalog.get_meta("index_id")
    idx.catalog.set_meta("index_id", "0" * 32)
    with pytest.warns(IndexDataWarning):
        refused = idx.undo_moves()
    assert not refused.restored and all(m.destination.exists() for m in report.moved)
    idx.catalog.set_meta("index_id", real_id)
    undone = idx.undo_moves()
    assert len(undone.restored) == len(report.moved)
    assert all(m.source.exists() and not m.destination.exists() for m in report.moved)


@pytest.mark.parametrize("features", ['["../../outside"]', '"embedding"', '["rgb", 3]'])
def test_crafted_feature_names_are_one_line_on_opening(indexed: Path, features: str) -> None:
    from imrec_widgets.errors import IndexFileError

    with sqlite3.connect(indexed / ".imrec" / "catalog.sqlite") as db:
        settings = db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()[0]
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'settings'",
            (settings.replace('"features": ["dhash"]', f'"features": {features}'),),
        )
    db.close()
    with pytest.raises(IndexFileError, match="not ones this version knows") as raised:
        ImageIndex.open(indexed)
    assert "\n" not in str(raised.value)
