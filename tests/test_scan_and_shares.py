"""Odd file names, special files, read-only shares and many processes updating one index."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image
from skimage import data

from imrec_widgets import (
    ImageIndex,
    ImrecError,
    IndexBusyWarning,
    IndexReadOnlyError,
    WriteLock,
)
from imrec_widgets.cli import main, shown
from imrec_widgets.features import MODEL_FREE_FEATURES
from imrec_widgets.indexer import scan

BAD = b"bad\xff\xfename.jpg"
"""A file name that is not UTF-8 (an old archive's, or a zip's from another system)."""

IMREC = [sys.executable, "-m", "imrec_widgets.cli"]


def cheap_index(root: Path, **kwargs: object) -> ImageIndex:
    return ImageIndex.open(root, features=MODEL_FREE_FEATURES, **kwargs)


def save(image: np.ndarray, path: Path | bytes) -> None:
    Image.fromarray(image).save(path, format="JPEG")


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    """Photos with a non-UTF-8 name (also in a non-UTF-8 folder), a newline in a name, and a
    broken file with a non-UTF-8 name, next to plain ones."""
    root = tmp_path / "photos"
    (root / "plain").mkdir(parents=True)
    save(data.coffee(), root / "plain" / "coffee.jpg")
    save(data.rocket(), root / "plain" / "rocket.jpg")
    save(data.astronaut(), os.fsencode(root) + b"/" + BAD)
    folder = os.fsencode(root) + b"/old\xe9archive"
    os.mkdir(folder)
    save(data.chelsea(), folder + b"/cat.jpg")
    save(data.camera()[..., None].repeat(3, axis=2), root / "new\nline.jpg")
    with open(os.fsencode(root) + b"/broken\xff.jpg", "wb") as f:
        f.write(b"not an image")
    return root


def test_names_that_are_not_utf8_are_indexed_searched_and_opened(odd_names: Path) -> None:
    index = cheap_index(odd_names)
    report = index.update(progress=False, workers=0)
    assert (report.new, report.errors) == (6, 1), str(report)
    by_name = {os.fsencode(r.path): r for r in index.records()}
    assert set(by_name) == {
        b"plain/coffee.jpg",
        b"plain/rocket.jpg",
        BAD,
        b"old\xe9archive/cat.jpg",
        b"new\nline.jpg",
        b"broken\xff.jpg",
    }
    bad = by_name[BAD]
    assert bad.status == "ok" and (bad.width, bad.height) == (512, 512)
    assert os.fsencode(index.path(bad.id)) == os.fsencode(odd_names) + b"/" + BAD, "lossless"
    assert index.path(bad.id).read_bytes()[:3] == b"\xff\xd8\xff", "the stored path opens"
    assert "broken" in str(index.errors()[0][0]) and index.errors()[0][1]

    by_file = index.search(index.path(bad.id), mode="rgb", k=1, exclude_self=False)
    by_id = index.search(bad.id, mode="dhash", k=2, exclude_self=False)
    assert by_file[0].id == bad.id and by_file[0].distance == pytest.approx(0, abs=1e-6)
    assert by_id[0].id == bad.id and by_id[0].path == index.path(bad.id)
    cat = by_name[b"old\xe9archive/cat.jpg"].id
    assert index.search(bad.id, mode="rgb", folder=os.fsdecode(b"old\xe9archive")).ids == [cat]
    assert bad.id in index.search(0, mode="rgb", path_glob="bad*", exclude_self=False).ids
    assert len(index.thumbnail_bytes([bad.id])[0]) > 100

    again = cheap_index(odd_names).update(progress=False, workers=0)
    assert (again.new, again.changed, again.removed, again.unchanged) == (0, 0, 0, 5), str(again)


def test_search_output_is_one_line_per_hit_whatever_the_names(odd_names: Path) -> None:
    cheap_index(odd_names).update(progress=False, workers=0)
    coffee = str(odd_names / "plain" / "coffee.jpg")
    run = subprocess.run(
        [*IMREC, "search", "--root", str(odd_names), "--mode", "rgb", "-k", "5", coffee],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.decode("utf-8").splitlines()
    assert len(lines) == 2 + 5, lines  # a title, the column headers and one line per hit
    assert lines[1].split() == ["rank", "distance", "path"]
    names = {line.split(None, 2)[2] for line in lines[2:]}
    assert f"$'{odd_names}/new\\nline.jpg'" in names
    assert f"$'{odd_names}/bad\\xff\\xfename.jpg'" in names
    assert coffee in names, "plain names are printed as they are"

    as_json = subprocess.run(
        [*IMREC, "search", "--root", str(odd_names), "--mode", "rgb", "-k", "5", "--json", coffee],
        capture_output=True,
    )
    paths = {os.fsencode(hit["path"]) for hit in json.loads(as_json.stdout)["hits"]}
    assert os.fsencode(odd_names) + b"/" + BAD in paths, "JSON gives the bytes back"


def test_shown_quotes_only_what_a_terminal_would_mangle() -> None:
    assert shown("cats/tabby cat.jpg") == "cats/tabby cat.jpg"
    assert shown("ünïcødé/猫.jpg") == "ünïcødé/猫.jpg"
    assert shown("a\nb.jpg") == "$'a\\nb.jpg'"
    assert shown("\x1b[31mred.jpg") == "$'\\x1b[31mred.jpg'"
    assert shown(os.fsdecode(b"it's\xff.jpg")) == "$'it\\'s\\xff.jpg'"
    assert shown("zero\u200bwidth.jpg") == "$'zero\\xe2\\x80\\x8bwidth.jpg'"


# -- special files -----------------------------------------------------------------------------
@pytest.fixture
def special_files(tmp_path: Path) -> Path:
    """Two photos among links to /proc, a pipe, a device, dangling links and a loop of links."""
    root = tmp_path / "photos"
    root.mkdir()
    save(data.coffee(), root / "coffee.jpg")
    Image.fromarray(data.rocket()).save(root / "no_suffix", format="PNG")
    os.symlink("/proc/1", root / "p")  # its cwd/root lead to the whole machine
    os.symlink("/proc/kmsg", root / "kmsg")  # reading it blocks
    os.symlink("/proc/self/status", root / "status")  # a "regular" file of size 0
    os.symlink("/dev/zero", root / "zero.png")
    os.mkfifo(root / "pipe.jpg")
    os.mkfifo(root / "fifo")
    os.symlink(root / "nowhere.jpg", root / "gone.jpg")
    os.symlink(root / "loop2", root / "loop1")
    os.symlink(root / "loop1", root / "loop2")
    return root


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and /dev are Linux's")
def test_the_scan_opens_only_regular_files_and_nothing_stops_it(
    special_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def recording_open(path: object, *args: object, **kwargs: object) -> object:
        opened.append(os.fsdecode(path) if isinstance(path, (str, bytes)) else repr(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    def recording_os_open(path: object, *args: object, **kwargs: object) -> int:
        opened.append(os.fsdecode(path))  # type: ignore[arg-type]
        return real_os_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(os, "open", recording_os_open)
    found = scan([special_files])
    monkeypatch.undo()

    assert sorted(found.files) == ["coffee.jpg", "no_suffix"]
    assert {Path(p).name for p in found.skipped} == {
        "p",
        "kmsg",
        "status",
        "zero.png",
        "pipe.jpg",
        "fifo",
        "gone.jpg",
        "loop1",
        "loop2",
    }
    assert found.skipped_dirs == [] and found.unlisted == []
    assert [Path(p).name for p in opened] == ["no_suffix"], "only the one file sniffed is read"

    report = cheap_index(special_files).update(progress=False, workers=0)
    assert (report.new, report.errors, report.skipped) == (2, 0, 9), str(report)
    assert "9 entries skipped (not regular files" in str(report)


def test_a_folder_whose_real_path_cannot_be_read_is_still_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    (root / "shared").mkdir(parents=True)
    save(data.coffee(), root / "coffee.jpg")
    save(data.rocket(), root / "shared" / "rocket.jpg")
    real_realpath = os.path.realpath

    def no_access(path: str, *args: object, **kwargs: object) -> str:
        if str(path).endswith("shared"):  # what /proc/1/cwd does to realpath
            raise PermissionError(13, "Permission denied", str(path))
        return real_realpath(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os.path, "realpath", no_access)
    found = scan([root])
    assert sorted(found.files) == ["coffee.jpg", "shared/rocket.jpg"]


# -- read-only shares ----------------------------------------------------------------------------
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` made really read-only: a read-only bind mount of it as root (root ignores
    permissions), ``chmod -R a-w`` otherwise. Yields the path to read it by."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mount = folder.with_name(folder.name + "-ro")
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)
        mount.rmdir()


def read_only_view(root: Path, *, update: bool = False, map_: bool = False) -> dict:
    """What a reader of the index at ``root`` sees (its searches, records and thumbnails), and
    with ``update`` what ``update()`` says; JSON-shaped, the index closed after (so a read-only
    mount of it can be unmounted)."""
    index = ImageIndex.open(root)
    out: dict[str, object] = {"read_only": index.read_only, "count": len(index)}
    out["hits"] = index.search(0, mode="rgb", k=3, exclude_self=False).ids
    out["by_file"] = index.search(str(index.path(2)), mode="dhash", k=1).ids
    out["where"] = index.search(0, mode="rgb", where="width > 0", k=50).ids
    folder = index.records()[0].path.rsplit("/", 1)[0]
    out["folder"] = index.search(0, mode="rgb", folder=folder, k=50, exclude_self=False).ids
    out["records"] = [r.path for r in index.records()]
    out["thumbs"] = [len(t) for t in index.thumbnail_bytes(index.ids())]
    if map_:
        out["map"] = len(index.umap("dhash").ids)
        out["projection"] = len(index.projection("dhash").ids)
    if update:
        try:
            index.update(progress=False)
        except ImrecError as exc:
            out["update"] = [type(exc).__name__, str(exc)]
    index.close()
    return dict(json.loads(json.dumps(out)))


def test_a_read_only_index_is_searched_and_refuses_updates_in_one_line(
    photos: Path, index_of: IndexOf, capsys: pytest.CaptureFixture[str]
) -> None:
    index_of(photos, features=MODEL_FREE_FEATURES).close()
    expected = read_only_view(photos)
    assert not expected["read_only"] and 0 < len(expected["folder"]) < expected["count"]
    with read_only(photos) as mounted:
        assert not os.access(mounted / ".imrec", os.W_OK)
        seen = read_only_view(mounted, update=True)
        capsys.readouterr()
        cli_code = main(["search", "--root", str(mounted), "--mode", "rgb", "0"])
        cli = capsys.readouterr()
        cli_index_code = main(["index", str(mounted), "-q"])
        cli_index = capsys.readouterr()
        assert sorted(p.name for p in (mounted / ".imrec").iterdir()) == sorted(
            p.name for p in (photos / ".imrec").iterdir()
        )
    name, message = seen.pop("update")
    assert seen.pop("read_only") and expected.pop("read_only") is False
    assert seen == expected and min(seen["thumbs"]) > 100
    assert name == "IndexReadOnlyError" and "read-only" in message and "\n" not in message
    assert cli_code == 0 and len(cli.out.splitlines()) == 2 + 10, cli.err
    assert cli_index_code == 1
    assert cli_index.err.count("\n") == 1 and "is read-only" in cli_index.err


@pytest.mark.slow
def test_a_stored_map_is_shown_from_a_read_only_index(photos: Path) -> None:
    index = cheap_index(photos)
    index.update(progress=False, workers=0)
    index.umap("dhash", clusters=3)
    index.close()
    expected = read_only_view(photos, map_=True)
    with read_only(photos) as mounted:
        seen = read_only_view(mounted, map_=True)
    assert seen.pop("read_only") and not expected.pop("read_only")
    assert seen == expected and seen["map"] == seen["projection"] == 18


def test_an_index_that_cannot_be_made_says_where_to_put_it(
    sample_folder: Path, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    shutil.copytree(sample_folder, root)
    with read_only(root) as mounted:
        with pytest.raises(IndexReadOnlyError, match="index_dir="):
            cheap_index(mounted).update(progress=False)
        report = cheap_index(mounted, index_dir=tmp_path / "elsewhere").update(
            progress=False, workers=0
        )
    assert report.new == 18


# -- many processes updating one index ---------------------------------------------------------------
VIEWER = textwrap.dedent(
    """
    import json, sys
    from imrec_widgets import ImageIndex
    index = ImageIndex.open(sys.argv[1], features=["rgb", "dhash", "thumb"])
    report = index.update(progress=True, workers=0)  # what a dashboard's first cell does
    hits = index.search(0, mode="rgb", k=3)
    print(json.dumps({"new": report.new, "unchanged": report.unchanged, "hits": len(hits)}))
    """
)


def wait_for_output(process: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Reads ``process``'s stderr until ``text`` appears (or it ends)."""
    assert process.stderr is not None
    seen = b""
    while text not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


# Slow: three Python processes start, race for the lock and one indexes while two wait (~4-6 s).
@pytest.mark.slow
def test_three_viewers_updating_at_once_all_get_the_index(photos: Path) -> None:
    index_dir = photos / ".imrec"
    index_dir.mkdir()
    lock = WriteLock(index_dir / "write.lock")
    viewers: list[subprocess.Popen[bytes]] = []
    with lock:  # an update already running when the viewers open the dashboard
        for _ in range(3):
            viewers.append(
                subprocess.Popen(
                    [sys.executable, "-c", VIEWER, str(photos)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        said = [wait_for_output(v, f"waiting for pid {os.getpid()}".encode()) for v in viewers]
        assert all(f"waiting for pid {os.getpid()} to finish updating".encode() in s for s in said)
    results = []
    for viewer in viewers:
        out, err = viewer.communicate()
        assert viewer.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert sorted(r["new"] for r in results) == [0, 0, 18], "one indexed, the others waited"
    assert sorted(r["unchanged"] for r in results) == [0, 18, 18]
    assert [r["hits"] for r in results] == [3, 3, 3]


def test_update_without_waiting_returns_at_once_and_says_who_updates(
    photos: Path, index_of: IndexOf, capsys: pytest.CaptureFixture[str]
) -> None:
    index_of(photos, features=MODEL_FREE_FEATURES).close()
    save(data.coffee(), photos / "coffee.jpg")
    with WriteLock(photos / ".imrec" / "write.lock"):
        for wait in (0, 0.5):
            with pytest.warns(IndexBusyWarning, match=f"pid {os.getpid()} was still updating"):
                report = cheap_index(photos).update(progress=False, wait=wait)
            assert not report.updated and report.busy == str(os.getpid())
            assert report.new == 0 and "not updated" in str(report)
        capsys.readouterr()
        cli_code = main(["index", str(photos), "--wait", "0"])
        cli = capsys.readouterr()
        assert len(cheap_index(photos)) == 18, "readers work meanwhile"
    assert cli_code == 1 and cli.out == ""
    assert cli.err.count("\n") == 1 and f"pid {os.getpid()} was still updating" in cli.err
    assert cheap_index(photos).update(progress=False, workers=0).new == 1


def test_wait_must_be_seconds(photos: Path) -> None:
    with pytest.raises(ValueError, match="wait="):
        cheap_index(photos).update(wait=-1)


def test_a_duplicate_with_a_non_utf8_name_is_moved_and_put_back(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    save(data.coffee(), root / "coffee.jpg")
    save(data.rocket(), root / "rocket.jpg")
    copy = os.fsencode(root) + b"/" + BAD
    shutil.copyfile(root / "coffee.jpg", copy)
    index = ImageIndex.open(root, features=["dhash"])
    index.update(progress=False, workers=0)
    index.move_duplicates()
    assert not os.path.exists(copy) and (root / "coffee.jpg").exists()
    moved = index.catalog.moves()
    assert [os.fsencode(m.source) for m in moved] == [BAD], "the log keeps the bytes"
    index.undo_moves()
    assert os.path.exists(copy)
