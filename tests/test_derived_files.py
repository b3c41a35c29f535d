"""Every derived file is checked before it is trusted: names read from an index never become
paths outside it, tampered or stale copies never change an answer, damaged files and bad
settings are one readable line (issue 22, items 1-4 and 9)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_ann import assert_exact, opened, stored_queries, write_float_index

from imrec_widgets import ImageIndex, ann, derived
from imrec_widgets.catalog import Catalog
from imrec_widgets.errors import AnnWarning


def ann_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, AnnWarning)]


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("derived")
    write_float_index(folder, rows=2000)
    opened(folder).build_ann("embedding")
    return folder


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "deep" / "er" / "copy"
    shutil.copytree(built, target)
    return target


def set_stamp(folder: Path, **changes: object) -> dict:
    catalog = Catalog(folder / "index" / "catalog.sqlite")
    stamp = {**catalog.get_meta(ann.stamp_key("embedding")), **changes}
    catalog.set_meta(ann.stamp_key("embedding"), stamp)
    catalog.close()
    return stamp


# -- item 1: names from the index never become paths outside it ---------------------------------
def test_checked_name_takes_only_the_names_the_code_writes(tmp_path: Path) -> None:
    pattern = derived.file_name_pattern("f32")
    assert (
        derived.checked_name(tmp_path, "embedding.17.f32", pattern) == tmp_path / "embedding.17.f32"
    )
    for name in (
        "../../../victim.txt",
        "/etc/passwd",
        "embedding.17.f32/../../x",
        "..",
        "embedding.17.f32\n",
        "embedding.-1.f32",
        "embedding.1.faiss",
        "sub/embedding.1.f32",
        "embedding.1.f32\\..",
        17,
        None,
        ["embedding.1.f32"],
    ):
        assert derived.checked_name(tmp_path, name, pattern) is None, name


@pytest.mark.parametrize("name", ["../../../victim.txt", "ABSOLUTE"])
def test_a_crafted_rows_file_name_writes_nothing_outside_the_index(
    copy: Path, tmp_path: Path, name: str
) -> None:
    """The issue's crafted stamp: ``rows_file`` pointing out of the folder, ``covered_until=0``
    so the next refresh rewrites "uncovered" rows. Nothing outside the index is touched, the
    ANN index is rebuilt from the stored feature with one warning, answers stay exact."""
    victim = copy.parent / "victim.txt"
    victim.write_text("precious\n")
    outside = files_under(tmp_path / "deep")
    crafted = str(victim) if name == "ABSOLUTE" else name
    assert (copy / "index" / "ann" / crafted).resolve() == victim.resolve()
    set_stamp(copy, rows_file=crafted, covered_until=0)

    catalog = Catalog(copy / "index" / "catalog.sqlite")
    store = opened(copy).store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = ann.refresh(
            copy / "index", catalog, store, "embedding", {"backbone": "synthetic", "dim": 32}
        )
    catalog.close()
    lines = ann_lines(caught)
    assert len(lines) == 1 and "not a file of this index" in lines[0] and "\n" not in lines[0]
    assert done.startswith("rebuilt")
    assert victim.read_text() == "precious\n"
    changed = {
        path: state
        for path, state in files_under(tmp_path / "deep").items()
        if not path.startswith(str(copy / "index"))
    }
    assert changed == {p: s for p, s in outside.items() if not p.startswith(str(copy / "index"))}

    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    assert ann.stamp_problem(stamp, "embedding") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        for q in stored_queries(idx, 3):
            found = idx.search(q, exact=False)
            assert_exact(found, idx.search(q, exact=True))


@pytest.mark.parametrize(
    "change",
    [
        {"file": "../embedding.1.faiss"},
        {"file": "/tmp/x.faiss"},
        {"sums_file": "../../x.sum"},
        {"rows_file": "rgb.1.f32"},  # another feature's file
        {"rows_bytes": "12"},
        {"dim": True},
        {"params": {"nlist": 10**30}},
        {"covered_until": float("nan")},
        {"sha256": "0" * 10},
    ],
)
def test_a_crafted_stamp_is_never_followed_by_a_search(copy: Path, change: dict) -> None:
    set_stamp(copy, **change)
    idx = opened(copy)
    q = stored_queries(idx, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [idx.search(v, exact=False) for v in q]
    lines = ann_lines(caught)
    assert lines and all("\n" not in line and "not used" in line for line in lines)
    for got, v in zip(found, q, strict=True):
        assert_exact(got, idx.search(v, exact=True))


def test_an_ann_folder_that_is_a_link_out_is_never_written(copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(copy / "index" / "ann")
    (copy / "index" / "ann").symlink_to(elsewhere)
    with pytest.raises(OSError, match="not a folder of this index"):
        opened(copy).build_ann("embedding")
    assert list(elsewhere.iterdir()) == []


def test_a_rows_file_that_is_a_link_is_not_rewritten_in_place(copy: Path, tmp_path: Path) -> None:
    stamp = opened(copy).ann_info()["embedding"]
    rows = copy / "index" / "ann" / stamp["rows_file"]
    victim = tmp_path / "victim.bin"
    shutil.copy(rows, victim)
    before = victim.read_bytes()
    rows.unlink()
    rows.symlink_to(victim)
    with pytest.raises(OSError):
        derived.open_for_update(rows)
    os.link(victim, tmp_path / "second-name.bin")
    with pytest.raises(OSError, match="not a plain file"):
        derived.open_for_update(victim)
    assert victim.read_bytes() == before


# -- item 2: tampered re-rank rows never change an answer ---------------------------------------
def test_a_swapped_ann_row_is_caught_and_the_answer_stays_exact(copy: Path) -> None:
    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    q = stored_queries(idx, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        before = idx.search(q[0], k=10, exact=False)
    target, other = before.ids[0], before.ids[-1]
    rows = copy / "index" / "ann" / stamp["rows_file"]
    data = np.memmap(rows, dtype=np.float32, mode="r+", shape=(stamp["rows_bytes"] // 128, 32))
    data[target] = data[other]  # one row overwritten with another, same size
    data.flush()
    del data

    idx = opened(copy)  # the load-time check (256 rows of one chunk) does not see it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = idx.search(q[0], k=10, exact=False)
        more = [idx.search(v, k=10, exact=False) for v in q[1:]]
    lines = ann_lines(caught)
    assert lines and "do not match their checksums" in lines[0] and "\n" not in lines[0]
    exact = idx.search(q[0], k=10, exact=True)
    assert_exact(found, exact)
    assert target in found.ids
    for got, v in zip(more, q[1:], strict=True):
        assert_exact(got, idx.search(v, k=10, exact=True))
    # "more like this" on the damaged id reads its true row: the other image is not at 0.0
    with pytest.warns(AnnWarning, match="do not match their checksums"):
        like = idx.search(int(target), k=3, exact=False)
    assert_exact(like, idx.search(int(target), k=3, exact=True))
    assert like.distances[0] > 1e-4


# -- item 9: a crafted .faiss with a matching stamp ---------------------------------------------
def test_a_crafted_faiss_file_with_a_matching_stamp_is_refused_before_faiss_reads_it(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import struct

    stamp = opened(copy).ann_info()["embedding"]
    path = copy / "index" / "ann" / stamp["file"]
    data = bytearray(path.read_bytes())
    # the coarse quantizer's centroids declare 2**29 floats (2 GiB) in a file of a few kB
    at = data.index(b"IxFI") + 4 + 33
    struct.pack_into("<Q", data, at, 2**29)
    path.write_bytes(bytes(data))
    set_stamp(copy, sha256=hashlib.sha256(bytes(data)).hexdigest())

    import faiss

    def never(*args: object) -> None:
        raise AssertionError("faiss was asked to read a crafted file")

    monkeypatch.setattr(faiss, "deserialize_index", never)
    idx = opened(copy)
    q = stored_queries(idx, 1)[0]
    with pytest.warns(AnnWarning, match="is not the index its stamp describes"):
        found = idx.search(q, exact=False)
    assert_exact(found, idx.search(q, exact=True))

    set_stamp(copy, bytes=10**12, count=10**9)  # a stamp claiming a huge index
    with pytest.warns(AnnWarning, match="not used"):
        opened(copy).search(q, exact=False)


def test_real_faiss_files_pass_the_layout_check(copy: Path) -> None:
    idx = opened(copy)
    for metric in ("euclidean", "cosine"):
        stamp = idx.build_ann("embedding", metric, nlist=64)
        data = (copy / "index" / "ann" / stamp["file"]).read_bytes()
        assert ann._layout_problem(memoryview(data), stamp) is None
        assert len(data) <= ann._serialized_bytes(stamp)


def update_photos(photos: Path) -> ImageIndex:
    idx = ImageIndex.open(photos, features=["rgb", "thumb"])
    idx.update(progress=False)
    return idx


def test_update_with_a_crafted_stamp_writes_nothing_outside_the_index(
    photos: Path, tmp_path: Path
) -> None:
    """Through ``update()`` on a real index, as the issue found it."""
    idx = update_photos(photos)
    idx.build_ann("rgb")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    catalog = idx.catalog
    stamp = catalog.get_meta(ann.stamp_key("rgb"))
    catalog.set_meta(
        ann.stamp_key("rgb"), {**stamp, "rows_file": "../../../victim.txt", "covered_until": 0}
    )
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(photos / "new.jpg")
    with pytest.warns(AnnWarning, match="not a file of this index"):
        report = idx.update(progress=False)
    assert report.new == 1
    assert victim.read_text() == "precious\n"
    assert ann.stamp_problem(idx.ann_info()["rgb"], "rgb") is None
