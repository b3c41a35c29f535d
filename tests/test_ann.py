"""The ANN index (faiss IVF-PQ, the ``ann`` extra): exact re-rank, filters, updates, bad files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex, ann
from imrec_widgets.catalog import Catalog, Entry
from imrec_widgets.cli import main
from imrec_widgets.errors import AnnWarning
from imrec_widgets.store import FeatureStore
from imrec_widgets.synthetic import write_feature_index

ROWS, DIM, K = 3000, 32, 10


def write_float_index(folder: Path, rows: int = ROWS, dim: int = DIM, seed: int = 0) -> Path:
    """An index of ``rows`` clustered ``dim``-d embeddings (no image files); returns its folder."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    data = centres[rng.integers(60, size=rows)] + 0.4 * rng.standard_normal((rows, dim))
    index_dir = folder / "index"
    catalog, _store = write_feature_index(
        index_dir,
        rows,
        {"embedding": lambda ids: data[ids].astype(np.float32)},
        feature_config={"embedding": {"backbone": "synthetic", "dim": dim}},
        path=lambda i: f"{'odd' if i % 2 else 'even'}/{i:06d}.jpg",
        size=(8, 8),
    )
    catalog.close()
    (folder / "images").mkdir(exist_ok=True)
    return index_dir


def opened(folder: Path) -> ImageIndex:
    return ImageIndex.open(folder / "images", folder / "index")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic index with an ANN index of its embeddings (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("ann")
    write_float_index(folder)
    opened(folder).build_ann("embedding")
    return folder


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


def stored_queries(idx: ImageIndex, count: int = 40, seed: int = 1) -> np.ndarray:
    """Stored rows, perturbed: queries with near neighbours, like a real "more like this"."""
    rng = np.random.default_rng(seed)
    rows = idx.features("embedding", rng.choice(len(idx), count, replace=False))
    return (rows + 0.1 * rng.standard_normal(rows.shape)).astype(np.float32)


def ann_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, AnnWarning)]


def assert_exact(found, expected) -> None:
    """Same ids and distances (ids may swap only between equal distances)."""
    np.testing.assert_allclose(found.distances, expected.distances, rtol=1e-5, atol=1e-6)
    for a, b in zip(found, expected, strict=True):
        assert a.id == b.id or abs(a.distance - b.distance) < 1e-6


@pytest.mark.slow
def test_candidates_reranked_exactly(built: Path) -> None:
    idx = opened(built)
    hits = overlap = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        for q in stored_queries(idx):
            exact = idx.search(q, k=K, exact=True)
            approx = idx.search(q, k=K, exact=False)
            assert len(approx) == K
            assert list(approx.distances) == sorted(approx.distances)
            # every distance is the exact one of that image
            truth = dict(zip(exact.ids, exact.distances, strict=True))
            again = idx.search(q, k=len(idx), exact=True)
            every = dict(zip(again.ids, again.distances, strict=True))
            np.testing.assert_allclose(
                approx.distances, [every[i] for i in approx.ids], rtol=1e-5, atol=1e-6
            )
            overlap += len(set(approx.ids) & set(truth))
            hits += K
    assert overlap / hits >= 0.9


def test_euclidean_ann_and_metric_mismatch(copy: Path) -> None:
    idx = opened(copy)
    idx.build_ann("embedding", "euclidean")
    q = stored_queries(idx, 10)
    found = idx.search_many(list(q), metric="euclidean", k=K, exact=False)
    expected = idx.search_many(list(q), metric="euclidean", k=K, exact=True)
    overlap = sum(len(set(a.ids) & set(b.ids)) for a, b in zip(found, expected, strict=True))
    assert overlap / (10 * K) >= 0.9
    with pytest.warns(AnnWarning, match="built for euclidean, not cosine"):
        got = idx.search(q[0], metric="cosine", exact=False)
    assert_exact(got, idx.search(q[0], metric="cosine", exact=True))


def test_default_is_exact_below_the_threshold(built: Path, monkeypatch) -> None:
    idx = opened(built)
    q = stored_queries(idx, 3)
    loads = []
    real_load = ann.load
    monkeypatch.setattr(ann, "load", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    for v in q:
        assert_exact(idx.search(v), idx.search(v, exact=True))
    assert not loads
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", len(idx))
    fresh = opened(built)
    fresh.search(q[0])
    assert loads  # from the threshold up, search() asks the ANN index by itself


def test_filters_are_respected(built: Path) -> None:
    idx = opened(built)
    allowed = np.arange(0, ROWS, 2)
    for q in stored_queries(idx, 10):
        found = idx.search(q, k=K, ids=allowed, exact=False)
        assert len(found) == K and set(found.ids) <= set(allowed.tolist())
        found = idx.search(q, k=K, where="id % 3 = 0", exact=False)
        assert len(found) == K and all(i % 3 == 0 for i in found.ids)
        found = idx.search(q, k=K, folder="odd", exact=False)
        assert len(found) == K and all(i % 2 for i in found.ids)
        # a selective filter: searched exactly over those rows
        few = [5, 17, 300, 1201, 2999]
        assert_exact(
            idx.search(q, k=K, ids=few, exact=False), idx.search(q, k=K, ids=few, exact=True)
        )


def test_removed_and_changed_rows_never_come_back(copy: Path) -> None:
    idx = opened(copy)
    q = stored_queries(idx, 10)
    before = [idx.search(v, k=K, exact=False).ids for v in q]
    gone = sorted({i for ids in before for i in ids[:3]})
    catalog = Catalog(copy / "index" / "catalog.sqlite")
    catalog.mark_removed(gone)
    # a changed row: new vector, re-committed (indexed after the ANN index was built)
    store = FeatureStore(copy / "index" / "features.zarr")
    store.write_rows("embedding", np.array([7]), q[:1])
    catalog.commit_entries([Entry(7, "odd/000007.jpg", 2, 2, 8, 8, "JPEG")])
    catalog.close()
    idx = opened(copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        for v in q:
            found = idx.search(v, k=50, exact=False)
            assert not set(found.ids) & set(gone)
        nearest = idx.search(q[0], k=1, exact=False)
    assert nearest.ids == [7] and nearest.distances[0] < 1e-5  # searched exactly beside the ANN


def test_no_ann_built_warns_and_searches_exactly(tmp_path: Path) -> None:
    write_float_index(tmp_path, rows=300)
    idx = opened(tmp_path)
    q = stored_queries(idx, 1)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = idx.search(q, exact=False)
    lines = ann_warnings(caught)
    assert len(lines) == 1 and "none is built" in lines[0] and "\n" not in lines[0]
    assert_exact(found, idx.search(q, exact=True))
    with pytest.raises(ValueError, match="hybrid"):
        idx.search(q, mode="hybrid", exact=False)
    with pytest.raises(ValueError, match="client"):
        idx.search(q, exact=False, client=object())


@pytest.mark.parametrize(
    "damage", ["flipped", "truncated", "missing", "rows", "settings", "version"]
)
def test_bad_ann_files_warn_and_search_exactly(copy: Path, damage: str) -> None:
    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    path = copy / "index" / "ann" / stamp["file"]
    if damage == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: stamp["bytes"] // 2])
    elif damage == "missing":
        path.unlink()
    elif damage == "rows":
        rows = copy / "index" / "ann" / stamp["rows_file"]
        rows.write_bytes(bytes(rows.stat().st_size))
    elif damage == "settings":  # the feature was recomputed with other settings since
        catalog = Catalog(copy / "index" / "catalog.sqlite")
        catalog.set_meta("feature_config", {"embedding": {"backbone": "other", "dim": DIM}})
        catalog.close()
    else:  # written by a faiss of another major version
        catalog = Catalog(copy / "index" / "catalog.sqlite")
        catalog.set_meta(ann.stamp_key("embedding"), {**stamp, "version": "0.9.0"})
        catalog.close()
    idx = opened(copy)
    q = stored_queries(idx, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [idx.search(v, exact=False) for v in q]
    lines = ann_warnings(caught)
    assert lines and all("\n" not in line for line in lines)
    assert "not used, searched exactly" in lines[0]
    for got, v in zip(found, q, strict=True):
        assert_exact(got, idx.search(v, exact=True))


def test_faiss_missing_warns_once_and_searches_exactly(built: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    idx = opened(built)
    q = stored_queries(idx, 1)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = idx.search(q, exact=False)
    lines = ann_warnings(caught)
    assert len(lines) == 1 and "pip install 'imrec-widgets[ann]'" in lines[0]
    assert_exact(found, idx.search(q, exact=True))
    with pytest.raises(ImportError, match=r"imrec-widgets\[ann\]"):
        idx.build_ann("embedding")
    assert main(["ann", str(built / "images"), "--index-dir", str(built / "index")]) == 1


def test_stale_ann_index_warns(copy: Path, monkeypatch) -> None:
    catalog = Catalog(copy / "index" / "catalog.sqlite")
    catalog.commit_entries(
        Entry(i, f"even/{i:06d}.jpg", 3, 3, 8, 8, "JPEG") for i in range(0, 800, 2)
    )
    catalog.close()
    monkeypatch.setattr(ann, "EXACT_FILTER_ROWS", 10)
    idx = opened(copy)
    q = stored_queries(idx, 1)[0]
    with pytest.warns(AnnWarning, match="stale, 400 rows were indexed since"):
        found = idx.search(q, exact=False)
    assert_exact(found, idx.search(q, exact=True))


CHILD = """
import os, signal, sys
from imrec_widgets import ImageIndex, ann
folder, suffix = sys.argv[1], sys.argv[2]
def killed(temporary):
    # the complete, fsynced temporary file, just before its rename: killed like a power cut
    if temporary.name.split(".tmp")[0].endswith(suffix):
        os.kill(os.getpid(), signal.SIGKILL)
ann._before_replace = killed
ImageIndex.open(folder + "/images", folder + "/index").build_ann("embedding", nlist=8)
"""


@pytest.mark.slow
@pytest.mark.parametrize("file", ["faiss", "f32"])
def test_killed_while_writing_keeps_the_old_index(copy: Path, file: str) -> None:
    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    q = stored_queries(idx, 5)
    before = [idx.search(v, exact=False) for v in q]
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(copy), file],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
    )
    assert child.returncode == -9, child.stderr
    assert [p for p in (copy / "index" / "ann").iterdir() if ".tmp" in p.name]
    idx = opened(copy)
    assert idx.ann_info()["embedding"] == stamp
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        after = [idx.search(v, exact=False) for v in q]
    for a, b in zip(after, before, strict=True):
        assert a.ids == b.ids
    idx.build_ann("embedding", nlist=8)  # the next build clears the leftovers
    assert not [p for p in (copy / "index" / "ann").iterdir() if ".tmp" in p.name]


REFRESH_CHILD = """
import os, signal, sys
import numpy as np
from imrec_widgets import ann
from imrec_widgets.catalog import Catalog, Entry
from imrec_widgets.store import FeatureStore
from imrec_widgets.synthetic import write_feature_index
folder = sys.argv[1]
catalog = Catalog(folder + "/index/catalog.sqlite")
store = FeatureStore(folder + "/index/features.zarr")
ids = np.arange(3000, 3010)
store.write_rows("embedding", ids, np.full((10, 32), 5.0, dtype=np.float32))
catalog.commit_entries(Entry(int(i), f"new/{i}.jpg", 1, 1, 8, 8, "JPEG") for i in ids)
ann._before_replace = lambda temporary: os.kill(os.getpid(), signal.SIGKILL)
config = catalog.get_meta("feature_config")["embedding"]
ann.refresh(folder + "/index", catalog, store, "embedding", config)
"""


# a child process killed with SIGKILL: ~1 s of interpreter start and imports
@pytest.mark.slow
def test_killed_while_extending_keeps_results_right(copy: Path) -> None:
    stamp = opened(copy).ann_info()["embedding"]
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REFRESH_CHILD), str(copy)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
    )
    assert child.returncode == -9, child.stderr
    idx = opened(copy)
    assert idx.ann_info()["embedding"] == stamp  # the new rows are not in it...
    query = np.full(DIM, 5.0, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        found = idx.search(query, k=10, exact=False)
    # ...but searched exactly beside it (their rows were already written to the rows file)
    assert sorted(found.ids) == list(range(3000, 3010)) and max(found.distances) < 1e-6


def test_hashes_are_searched_exactly(photos: Path, index_of: IndexOf) -> None:
    idx = index_of(photos, features=["dhash", "thumb"])
    with pytest.raises(ValueError, match="hashes are searched exactly"):
        idx.build_ann("dhash")
    with pytest.raises(ValueError, match="not searchable"):
        idx.build_ann("thumb")


def _add_photo(folder: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name, quality=90)


@pytest.mark.slow
def test_update_extends_the_ann_index(photos: Path, index_of: IndexOf) -> None:
    idx = index_of(photos, features=["rgb", "thumb"])
    stamp = idx.build_ann("rgb", candidates=4)
    assert stamp["count"] == len(idx)
    files = sorted(p for p in photos.rglob("*.jpg"))
    files[0].unlink()
    removed = idx.catalog.id_for_path(files[0].relative_to(photos).as_posix())
    for n in range(3):
        _add_photo(photos, f"new{n}.jpg", n)
    idx.update(progress=False)
    after = idx.ann_info()["rgb"]
    assert after["count"] == len(idx) and after["file"] != stamp["file"]
    # the old files were deleted: one index, its float32 rows and their checksums remain
    assert sorted(p.name for p in (idx.index_dir / "ann").iterdir()) == sorted(
        [after["file"], after["rows_file"], after["sums_file"]]
    )
    new = [idx.catalog.id_for_path(f"new{n}.jpg") for n in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        for id_ in new:
            found = idx.search(id_, "rgb", k=len(idx), exact=False, exclude_self=False)
            assert found.ids[0] == id_ and removed not in found.ids
            assert_exact(found, idx.search(id_, "rgb", k=len(idx), exact=True, exclude_self=False))
    # the feature recomputed with other settings: the ANN index is rebuilt on them
    idx = ImageIndex.open(photos, bins=4, rebuild=["rgb"])
    idx.update(progress=False)
    rebuilt = idx.ann_info()["rgb"]
    assert rebuilt["dim"] == 64 and rebuilt["count"] == len(idx)
    assert rebuilt["feature_config"] == idx.catalog.get_meta("feature_config")["rgb"]
    q = int(idx.ids()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        assert_exact(idx.search(q, mode="rgb", exact=False), idx.search(q, mode="rgb", exact=True))


def test_update_without_faiss_keeps_results_right(
    photos: Path, index_of: IndexOf, monkeypatch
) -> None:
    idx = index_of(photos, features=["rgb", "thumb"])
    idx.build_ann("rgb")
    _add_photo(photos, "late.jpg", 9)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.warns(AnnWarning, match="was not updated"):
        idx.update(progress=False)
    monkeypatch.delitem(sys.modules, "faiss")
    idx = ImageIndex.open(photos)
    late = idx.catalog.id_for_path("late.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        found = idx.search(late, mode="rgb", exact=False, exclude_self=False)
    assert found.ids[0] == late  # not in the ANN index yet: searched exactly beside it


def test_cli_ann_and_search(copy: Path, capsys) -> None:
    root, index_dir = str(copy / "images"), str(copy / "index")
    assert main(["ann", root, "--index-dir", index_dir, "--nlist", "16"]) == 0
    out = capsys.readouterr().out
    assert "ANN index of embedding" in out and "16 lists" in out
    assert main(["info", root, "--index-dir", index_dir, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ann"]["embedding"]["count"] == ROWS
    for flag in ("--exact", "--ann"):
        assert main(["search", "12", "--root", root, "--index-dir", index_dir, flag, "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert len(hits) == 10 and 12 not in [h["id"] for h in hits]
    assert main(["ann", root, "--index-dir", index_dir, "--drop"]) == 0
    assert opened(copy).ann_info()["embedding"] is None
    assert not list((copy / "index" / "ann").iterdir())


def test_ann_is_in_the_cli_help() -> None:
    import re

    from imrec_widgets.cli import build_parser

    assert re.search(r"^\s+ann\s+\S", build_parser().format_help(), re.M)


def test_update_rebuilds_a_damaged_ann_index(photos: Path, index_of: IndexOf) -> None:
    idx = index_of(photos, features=["rgb", "thumb"])
    stamp = idx.build_ann("rgb")
    (idx.index_dir / "ann" / stamp["file"]).write_bytes(b"garbage")
    _add_photo(photos, "late.jpg", 3)
    idx.update(progress=False)
    after = idx.ann_info()["rgb"]
    assert after["file"] != stamp["file"] and after["count"] == len(idx)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        late = idx.catalog.id_for_path("late.jpg")
        assert idx.search(late, "rgb", exact=False, exclude_self=False).ids[0] == late


def test_more_like_this_reads_the_query_row_from_the_ann_copy(built: Path, monkeypatch) -> None:
    """A query by id takes its row from the ANN index's float32 copy, not a Zarr chunk."""
    idx = opened(built)
    expected = [idx.search(int(q), k=K, exact=False).ids for q in (5, 17, 2999)]
    monkeypatch.setattr(idx.store, "read_rows", lambda *a: 1 / 0)
    assert [idx.search(int(q), k=K, exact=False).ids for q in (5, 17, 2999)] == expected
