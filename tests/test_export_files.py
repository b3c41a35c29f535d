from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path

import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ExportError, ImageIndex, TagError
from imrec_widgets.cli import main
from imrec_widgets.export import files as export_module

FEATURES = ["rgb", "dhash", "thumb"]


@pytest.fixture
def index(photos: Path, index_of: IndexOf) -> ImageIndex:
    return index_of(photos, features=FEATURES)


def _by_folder(index: ImageIndex) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for record in index.records(index.ids()):
        groups.setdefault(record.path.split("/")[0], []).append(record.id)
    return groups


def _labels_csv(dest: Path) -> list[tuple[str, str]]:
    with (dest / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "tag"]
    return [(row[0], row[1]) for row in rows[1:]]


def _no_partial_files(dest: Path) -> None:
    assert not [p for p in dest.rglob("*") if ".imrec-part" in p.name]


# slow: the only test that imports torchvision (5-10 s on the 2-core machine); CI runs it
@pytest.mark.slow
def test_by_tag_is_what_torchvision_image_folder_reads(index: ImageIndex, tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    groups = _by_folder(index)
    (_first, first_ids), (_second, second_ids) = sorted(groups.items())[:2]
    index.tag(first_ids, "cats")
    index.tag(second_ids, "猫/ネコ")  # any Unicode; "/" cannot name a folder
    index.tag(first_ids[:1], "keep")  # a tag not exported
    dest = tmp_path / "dataset"
    report = index.export(["cats", "猫/ネコ"], dest)
    assert len(report.written) == len(first_ids) + len(second_ids) and report.present == 0

    dataset = ImageFolder(str(dest))
    assert dataset.classes == ["cats", "猫_ネコ"]
    assert len(dataset) == len(first_ids) + len(second_ids)
    sources = {
        tag: [index.path(i).read_bytes() for i in ids]
        for tag, ids in (("cats", first_ids), ("猫_ネコ", second_ids))
    }
    for path, class_index in dataset.samples:
        assert Path(path).read_bytes() in sources[dataset.classes[class_index]]
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and label == 0

    rows = _labels_csv(dest)
    assert sorted(tag for _path, tag in rows) == sorted(
        ["cats"] * len(first_ids) + ["猫/ネコ"] * len(second_ids)
    )
    assert {Path(dest / path) for path, _tag in rows} == {Path(p) for p, _c in dataset.samples}


@pytest.mark.parametrize("how", ["copy", "symlink", "hardlink"])
def test_flat_export_of_ids_each_way(index: ImageIndex, tmp_path: Path, how: str) -> None:
    ids = index.ids()[:4].tolist()
    index.tag(ids[:2], "keep")
    index.tag(ids[:1], "best")
    dest = tmp_path / "out"
    report = index.export(ids, dest, how=how, layout="flat")
    assert len(report.written) == 4
    for id_ in ids:
        exported = dest / index.path(id_).name
        assert exported.read_bytes() == index.path(id_).read_bytes()
        assert exported.is_symlink() == (how == "symlink")
        assert os.path.samefile(exported, index.path(id_)) == (how != "copy")
    names = {id_: index.path(id_).name for id_ in ids}
    assert sorted(_labels_csv(dest)) == sorted(
        [(names[ids[0]], "best"), (names[ids[0]], "keep"), (names[ids[1]], "keep")]
        + [(names[i], "") for i in ids[2:]]
    )


def test_clashes_get_new_names_and_nothing_is_overwritten(
    index: ImageIndex, tmp_path: Path
) -> None:
    root = index.root
    first = index.path(int(index.ids()[0]))
    other_folder = next(p for p in root.iterdir() if p.is_dir() and p != first.parent)
    twin = other_folder / first.name  # same name, other bytes
    with Image.open(first) as image:
        image.rotate(90).save(twin, quality=80)
    index.update(progress=False, workers=0)
    twin_id = index.catalog.id_for_path(twin.relative_to(root).as_posix())
    first_id = int(index.ids()[0])
    dest = tmp_path / "out"
    dest.mkdir()
    theirs = dest / first.name
    theirs.write_bytes(b"the user's own file")

    report = index.export([first_id, twin_id], dest, layout="flat")
    assert theirs.read_bytes() == b"the user's own file"
    stem, suffix = first.stem, first.suffix
    assert (dest / f"{stem}-1{suffix}").read_bytes() == first.read_bytes()
    assert (dest / f"{stem}-2{suffix}").read_bytes() == twin.read_bytes()
    assert report.renamed == 2

    again = index.export([first_id, twin_id], dest, layout="flat")
    assert (len(again.written), again.present) == (0, 2)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [first.name, f"{stem}-1{suffix}", f"{stem}-2{suffix}", "labels.csv"]
    )


def test_a_rerun_adds_only_what_is_missing(index: ImageIndex, tmp_path: Path) -> None:
    ids = index.ids().tolist()
    index.tag(ids[:6], "keep")
    dest = tmp_path / "out"
    first = index.export("keep", dest)
    assert len(first.written) == 6
    removed = first.written[0]
    removed.unlink()
    kept = first.written[1]
    stamp = kept.stat().st_mtime_ns
    index.tag(ids[6:7], "keep")
    second = index.export("keep", dest)
    assert sorted(second.written) == sorted([removed, dest / "keep" / index.path(ids[6]).name])
    assert second.present == 5
    assert kept.stat().st_mtime_ns == stamp
    assert len(_labels_csv(dest)) == 7
    assert "exported 2 files" in str(second) and "5 already there" in str(second)


def test_a_full_disk_mid_export_leaves_no_partial_file(
    index: ImageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = index.ids()[:5].tolist()
    index.tag(ids, "keep")
    calls = []
    real_copy = shutil.copy2

    def copy_until_full(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> object:
        calls.append(source)
        if len(calls) == 3:
            with open(target, "wb") as handle:  # half a file, then the disk is full
                handle.write(Path(source).read_bytes()[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_copy(source, target)

    monkeypatch.setattr(export_module.shutil, "copy2", copy_until_full)
    dest = tmp_path / "out"
    with pytest.raises(
        ExportError, match="stopped after 2 of 5 files: No space left on device"
    ) as caught:
        index.export("keep", dest)
    assert "\n" not in str(caught.value) and "run it again" in str(caught.value)
    _no_partial_files(dest)
    done = sorted((dest / "keep").iterdir())
    assert len(done) == 2
    sources = {index.path(i).name: index.path(i).read_bytes() for i in ids}
    for path in done:
        assert path.read_bytes() == sources[path.name]  # complete files only
    assert len(_labels_csv(dest)) == 2

    monkeypatch.setattr(export_module.shutil, "copy2", real_copy)
    report = index.export("keep", dest)
    assert (len(report.written), report.present) == (3, 2)
    assert len(list((dest / "keep").iterdir())) == 5
    assert len(_labels_csv(dest)) == 5
    _no_partial_files(dest)


def test_bad_destinations_are_one_line(index: ImageIndex, tmp_path: Path) -> None:
    ids = index.ids()[:2].tolist()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for dest, message in [
        (index.index_dir / "export", "inside the index folder"),
        (index.index_dir, "inside the index folder"),
        (index.root / "exported", "so update\\(\\) would index the copies"),
        (index.root, "so update\\(\\) would index the copies"),
        (blocker, "is a file, not a folder"),
        (blocker / "below", "cannot write to"),
    ]:
        with pytest.raises(ExportError, match=message) as caught:
            index.export(ids, dest, layout="flat")
        assert "\n" not in str(caught.value)
    # a hidden folder under the root is skipped by the scan: allowed
    report = index.export(ids, index.root / ".exports", layout="flat")
    assert len(report.written) == 2
    assert index.update(progress=False, workers=0).new == 0


def test_bad_selections_are_one_line(index: ImageIndex, tmp_path: Path) -> None:
    ids = index.ids().tolist()
    dest = tmp_path / "out"
    index.tag(ids[:1], "keep")
    for selection, message in [
        ([], "selection is empty"),
        ([ids[0], 999_999], "no image with id 999999"),
        ("nothing", "no searchable image is tagged 'nothing'; tags: 'keep'"),
        (ids[:3], "2 of the 3 selected images have no tag"),
    ]:
        with pytest.raises(TagError, match=message):
            index.export(selection, dest)
    with pytest.raises(ValueError, match="how= takes"):
        index.export(ids[:1], dest, how="move")
    with pytest.raises(ValueError, match="layout= takes"):
        index.export(ids[:1], dest, layout="tree")
    gone = index.path(ids[1])
    gone.unlink()
    index.update(progress=False, workers=0)
    with pytest.raises(TagError, match=f"image {ids[1]} was removed"):
        index.export(ids[:2], dest, layout="flat")
    assert not dest.exists() or not any(dest.iterdir())


def test_cli_export_files(
    index: ImageIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = index.ids().tolist()
    index.tag(ids[:3], "keep")
    dest = tmp_path / "out"
    assert main(["export", "files", str(index.root), str(dest), "--tag", "keep"]) == 0
    assert f"exported 3 files to {dest}; labels in {dest / 'labels.csv'}" in capsys.readouterr().out
    assert len(list((dest / "keep").iterdir())) == 3
    flat = tmp_path / "flat"
    argv = [
        "export",
        "files",
        str(index.root),
        str(flat),
        "--ids",
        str(ids[3]),
        "--layout",
        "flat",
        "--how",
        "symlink",
    ]
    assert main(argv) == 0
    assert (flat / index.path(ids[3]).name).is_symlink()
    assert main(["export", "files", str(index.root), str(index.root / "x"), "--tag", "keep"]) == 1
    err = capsys.readouterr().err
    assert "would index the copies" in err and err.count("\n") == 1
