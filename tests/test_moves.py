"""Duplicate clean-up: moves logged before they happen, settled after a crash, undone on request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.cli import main
from imrec_widgets.moves import MOVED_FOLDER, MoveError, recover, suggest_keeper


def write_copies(sample_folder: Path, root: Path) -> dict[str, list[str]]:
    """Three photos, each with a half-size copy and a recompressed copy: 3 groups of 3."""
    groups: dict[str, list[str]] = {}
    for source in sorted(sample_folder.rglob("*.jpg"))[:3]:
        name = source.stem
        (root / name).mkdir(parents=True)
        image = Image.open(source).convert("RGB")
        image.save(root / name / "original.jpg", quality=95)
        image.resize((image.width // 2, image.height // 2)).save(root / name / "small.jpg")
        image.save(root / name / "recompressed.jpg", quality=30)
        groups[name] = [f"{name}/original.jpg", f"{name}/small.jpg", f"{name}/recompressed.jpg"]
    return groups


@pytest.fixture(scope="module")
def copies(
    sample_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, list[str]]]:
    """``write_copies`` once per module, into a folder that is only copied (file times kept)."""
    folder = tmp_path_factory.mktemp("copies") / "photos"
    return folder, write_copies(sample_folder, folder)


@pytest.fixture
def dup_index(
    copies: tuple[Path, dict[str, list[str]]], tmp_path: Path, index_of: IndexOf
) -> tuple[ImageIndex, dict[str, list[str]]]:
    written, groups = copies
    root = tmp_path / "photos"
    shutil.copytree(written, root)
    return index_of(root, features=["dhash"]), groups


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")}


def in_collection(root: Path) -> set[str]:
    """The photos a scan sees: everything outside hidden folders."""
    return {name for name in files_under(root) if not name.startswith(".")}


def test_suggested_keeper_has_most_pixels_then_is_oldest(dup_index) -> None:
    index, _ = dup_index
    for group in index.duplicates():
        keep = suggest_keeper(index.records(group.ids))
        assert index.path(keep).name in {"original.jpg", "recompressed.jpg"}
        full = [
            r
            for r in index.records(group.ids)
            if r.path.endswith(("original.jpg", "recompressed.jpg"))
        ]
        assert keep == min(full, key=lambda r: (r.mtime_ns, r.id)).id


def test_move_then_undo_puts_every_file_back(dup_index) -> None:
    index, _ = dup_index
    root = index.root
    before = files_under(root)
    found = index.duplicates()
    assert len(found) == 3

    plan = index.move_duplicates(found, dry_run=True)
    assert len(plan.moved) == 6 and files_under(root) == before  # a dry run moves nothing

    report = index.move_duplicates(found)
    assert len(report.moved) == 6 and not report.skipped
    moved_to = root / MOVED_FOLDER
    assert in_collection(root) == before - {
        m.source.relative_to(root).as_posix() for m in report.moved
    }
    for item in report.moved:
        assert not item.source.exists() and item.destination.is_file()
        # the original relative path is kept under the dated folder
        assert (
            item.destination.relative_to(moved_to).parts[1:] == item.source.relative_to(root).parts
        )
    # gone from search at once, one survivor per group, and update() does not index the moved copies
    assert len(index) == 3
    update = index.update(progress=False)
    assert (update.new, update.removed) == (0, 0)
    assert len(index.duplicates()) == 0

    undone = index.undo_moves()
    assert len(undone.restored) == 6
    assert in_collection(root) == before
    assert files_under(moved_to) == set()
    assert len(index) == 9  # unchanged files are searchable again without an update
    update = index.update(progress=False)
    assert (update.new, update.changed, update.unchanged) == (0, 0, 9)
    with pytest.raises(MoveError, match="nothing to undo"):
        index.undo_moves()


def test_keepers_and_no_overwrite(dup_index) -> None:
    index, _ = dup_index
    root = index.root
    found = index.duplicates()
    small = next(i for i in found[0].ids if index.path(i).name == "small.jpg")
    dest = root / ".attic"
    taken = dest / index.records([found[0].ids[0]])[0].path
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"someone else's file")
    report = index.move_duplicates(found[:1], dest, keepers={0: small})
    assert index.path(small).exists() and len(report.moved) == 2
    assert taken.read_bytes() == b"someone else's file"
    assert any(m.destination.name.endswith(" (1).jpg") for m in report.moved)
    with pytest.raises(MoveError, match="not in duplicate group"):
        index.move_duplicates(found[1:2], dest, keepers={0: small})


def test_bad_destinations_are_one_line(dup_index, tmp_path: Path) -> None:
    index, _ = dup_index
    found = index.duplicates()
    with pytest.raises(MoveError, match="inside the index folder"):
        index.move_duplicates(found, index.index_dir / "moved")
    with pytest.raises(MoveError, match="would be indexed again"):
        index.move_duplicates(found, index.root / "moved")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MoveError, match="cannot write"):
        index.move_duplicates(found, blocker / "sub")
    assert len(index) == 9


KILL_AFTER_TWO = textwrap.dedent(
    """
    import os, signal, sys
    from imrec_widgets import ImageIndex, moves
    real = moves._relocate
    done = []
    def relocate(source, destination):
        real(source, destination)
        done.append(source)
        if len(done) == int(sys.argv[2]):  # killed after the file moved, before the log says so
            os.kill(os.getpid(), signal.SIGKILL)
    moves._relocate = relocate
    index = ImageIndex.open(sys.argv[1])
    if sys.argv[3] == "move":
        index.move_duplicates()
    else:
        index.undo_moves()
    """
)


def run_killed(root: Path, after: int, action: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_TWO, str(root), str(after), action], check=False
    )
    assert child.returncode == -9


# slow: two Python processes started and killed with SIGKILL (1-2 s); CI runs it
@pytest.mark.slow
def test_kill_9_mid_move_and_mid_undo_loses_nothing(dup_index) -> None:
    index, _ = dup_index
    root = index.root
    before = files_under(root)
    index.close()
    run_killed(root, 3, "move")
    moved_to = root / MOVED_FOLDER
    # every file is in exactly one place: 3 moved, the rest untouched
    assert len(in_collection(root)) == 6 and len(files_under(moved_to)) == 3

    index = ImageIndex.open(root)
    states = sorted(r.state for r in index.catalog.moves())
    assert states == ["moved"] * 2 + ["planned"] * 4  # the log says what was under way
    assert recover(index.catalog, root) == 4
    states = sorted(r.state for r in index.catalog.moves())
    assert states == ["cancelled"] * 3 + ["moved"] * 3
    assert len(index) == 6  # the three moved files left the search

    report = index.move_duplicates()  # a rerun finishes the job
    assert len(report.moved) == 3 and len(index) == 3
    index.close()
    run_killed(root, 2, "undo")
    assert len(in_collection(root)) == 3 + 2
    index = ImageIndex.open(root)
    undone = index.undo_moves()  # settles the killed undo, then puts back the rest
    assert undone.recovered == 1 and len(undone.restored) == 4
    assert in_collection(root) == before and not files_under(moved_to)
    assert len(index) == 9


def test_recover_finishes_a_copy_that_reached_its_place(dup_index) -> None:
    """Across file systems a move is copy, sync, rename, unlink: killed before the unlink, both
    places hold the file, and the next run removes the source; a partial copy is deleted."""
    index, _ = dup_index
    root = index.root
    record = index.records(index.ids())[0]
    destination = root / MOVED_FOLDER / "x" / record.path
    destination.parent.mkdir(parents=True)
    shutil.copy2(root / record.path, destination)
    partial = root / MOVED_FOLDER / "x" / "other.jpg.imrec-partial"
    partial.write_bytes(b"half")
    index.catalog.log_moves("b1", [(record.id, record.path, str(destination))])
    index.catalog.log_moves(
        "b1", [(record.id + 1, "nope.jpg", str(partial)[: -len(".imrec-partial")])]
    )
    assert recover(index.catalog, root) == 2
    assert not (root / record.path).exists() and destination.exists() and not partial.exists()
    assert sorted(r.state for r in index.catalog.moves()) == ["cancelled", "moved"]


def test_cli_dry_run_yes_and_restore(dup_index, capsys) -> None:
    index, _ = dup_index
    root = index.root
    before = files_under(root)
    index.close()
    assert main(["duplicates", str(root), "--move-extras"]) == 0
    out = capsys.readouterr().out
    assert out.count("would move ") == 6 and "6 file(s) would move" in out and "add --yes" in out
    assert files_under(root) == before
    target = root.parent / "attic"
    assert main(["duplicates", str(root), "--move-extras", str(target), "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.count(" -> ") == 6 and "moved 6 files; undo with" in out
    assert len(files_under(target)) == 6
    assert main(["restore", str(root)]) == 0
    assert "put back 6 files" in capsys.readouterr().out
    assert files_under(root) == before and not files_under(target)
    assert main(["duplicates", str(root), "--move-extras", str(root / "sub"), "--yes"]) == 1
    assert "would be indexed again" in capsys.readouterr().err
    assert os.listdir(target) == [] or not any(target.rglob("*.jpg"))
