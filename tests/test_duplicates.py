from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.spatial.distance import cdist

from imrec_widgets import ImageIndex, duplicates, search
from imrec_widgets.cli import main
from imrec_widgets.duplicates import DuplicateGroups, close_pairs, connected_components


@pytest.fixture(scope="module")
def groups(labeled_index: ImageIndex) -> DuplicateGroups:
    return labeled_index.duplicates()


def relative(index: ImageIndex, paths: list[Path]) -> list[str]:
    return [path.relative_to(index.root).as_posix() for path in paths]


def test_dhash_finds_rescaled_and_recompressed_copies(labeled_index: ImageIndex) -> None:
    by_path = {r.path: r.id for r in labeled_index.records(labeled_index.ids())}
    for label in ("astronaut", "china", "coins", "flower"):
        hits = labeled_index.search(by_path[f"{label}/original.jpg"], mode="dhash", k=3)
        found = dict(zip(relative(labeled_index, hits.paths), hits.distances, strict=True))
        # Measured over all 12 photos: half-size copies 0-1 bits away, JPEG q=30 copies 0-3.
        assert found[f"{label}/small.jpg"] <= 1
        assert found.get(f"{label}/recompressed.jpg", 99) <= 3


def test_groups_hold_the_planted_copies_and_nothing_else(
    labeled_index: ImageIndex, groups: DuplicateGroups
) -> None:
    assert (groups.mode, groups.metric, groups.max_distance) == ("dhash", "hamming", 4.0)
    # Different photos are 15+ bits apart, so no group mixes them; one group per photo.
    labels = [{p.split("/")[0] for p in relative(labeled_index, g.paths)} for g in groups]
    assert all(len(found) == 1 for found in labels)
    assert len(groups) == 12 and len(set().union(*labels)) == 12
    for group in groups:
        names = {p.split("/")[1] for p in relative(labeled_index, group.paths)}
        assert {"original.jpg", "small.jpg", "recompressed.jpg"} <= names
        assert "crop.jpg" not in names  # crops are 13+ bits from their original
        assert group.ids == sorted(group.ids) and group.distances[0] == 0.0
        assert max(group.distances) <= 4 * len(group.ids)
        assert not group.identical
    assert [len(g.ids) for g in groups] == sorted((len(g.ids) for g in groups), reverse=True)
    assert groups.hashed_files == 0  # no two files of this set have the same size
    assert len(groups.redundant()) == groups.images - len(groups)


def test_threshold_controls_the_links(labeled_index: ImageIndex, groups: DuplicateGroups) -> None:
    strict = labeled_index.duplicates(max_distance=0)
    assert sum(len(g.ids) for g in strict) < groups.images
    for group in strict:
        assert set(group.distances) == {0.0}
    everything = labeled_index.duplicates(max_distance=64)
    assert len(everything) == 1 and len(everything[0].ids) == len(labeled_index)
    by_embedding = labeled_index.duplicates(mode="embedding", max_distance=0.05)
    for group in by_embedding:
        assert len({p.split("/")[0] for p in relative(labeled_index, group.paths)}) == 1
        assert max(group.distances) <= 0.05 * len(group.ids)


def test_identical_files_are_found_by_content_hash(
    photos: Path, monkeypatch: pytest.MonkeyPatch, index_of: IndexOf
) -> None:
    coffee = photos / "objects" / "coffee.jpg"
    shutil.copy(coffee, photos / "copy_one.jpg")
    shutil.copy(coffee, photos / "copy_two.jpg")
    index = index_of(photos, features=["dhash", "thumb"])
    hashed: list[Path] = []
    real_sha256 = duplicates._sha256

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return real_sha256(path)

    monkeypatch.setattr(duplicates, "_sha256", counting_sha256)
    found = index.duplicates(max_distance=0)
    sizes: dict[int, list[Path]] = {}
    for path in photos.rglob("*.jpg"):
        sizes.setdefault(path.stat().st_size, []).append(path)
    same_size = {p for paths in sizes.values() if len(paths) > 1 for p in paths}
    assert set(hashed) == same_size and len(hashed) == found.hashed_files
    assert len(hashed) < len(index)  # only files sharing their size are read
    identical = sorted(sorted(p.name for p in g.paths) for g in found if g.identical)
    assert identical == [["coffee.jpg", "copy_one.jpg", "copy_two.jpg"]]
    assert all(g.distances == [0.0] * len(g.ids) for g in found if g.identical)


def test_html_view_shows_every_image(groups: DuplicateGroups) -> None:
    page = groups._repr_html_()
    assert page.count("<img ") == groups.images
    assert page.count("data:image/jpeg;base64,/9j/") == groups.images  # real JPEG thumbnails
    assert "12 groups of near-duplicates" in page and "group 12:" in page
    assert groups._repr_html_(max_groups=2).count("<img ") == len(groups[0].ids) + len(
        groups[1].ids
    )
    assert "10 more groups" in groups._repr_html_(max_groups=2)


def test_cli_duplicates(labeled_index: ImageIndex, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["duplicates", str(labeled_index.root), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "dhash" and document["max_distance"] == 4.0
    assert len(document["groups"]) == 12
    assert all(Path(p).is_file() for g in document["groups"] for p in g["paths"])
    assert (
        main(["duplicates", str(labeled_index.root), "--mode", "ahash", "--max-distance", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("") and "by ahash/hamming <= 1" in out.splitlines()[0]
    assert "group 1:" in out
    assert main(["duplicates", str(labeled_index.root), "--mode", "rgb"]) == 1
    assert "--mode rgb has no default distance; pass --max-distance" in capsys.readouterr().err


def test_bad_arguments(labeled_index: ImageIndex, photos: Path) -> None:
    with pytest.raises(ValueError, match="max_distance must be a number >= 0"):
        labeled_index.duplicates(max_distance=-1)
    with pytest.raises(ValueError, match="choose from hamming"):
        labeled_index.duplicates(mode="dhash", metric="cosine")
    cheap = ImageIndex.open(photos, features=["rgb"])
    cheap.update(progress=False)
    with pytest.raises(ValueError, match="'dhash' is not in this index"):
        cheap.duplicates()


@pytest.mark.parametrize("metric", ["hamming", "cosine", "euclidean", "manhattan"])
def test_close_pairs_matches_brute_force_over_many_blocks(
    metric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    if metric == "hamming":
        data = rng.integers(0, 256, size=(300, 2), dtype=np.uint8)
        data[150:] = data[:150] ^ (rng.random((150, 2)) < 0.05).astype(
            np.uint8
        )  # planted neighbours
        bits = np.unpackbits(data, axis=1).astype(bool)
        reference = cdist(bits, bits, "hamming") * 16
        threshold = 2.0
    else:
        data = rng.normal(size=(300, 6)).astype(np.float32)
        data[150:] = data[:150] + rng.normal(scale=0.05, size=(150, 6)).astype(np.float32)
        reference = cdist(
            data.astype(np.float64),
            data.astype(np.float64),
            {"manhattan": "cityblock"}.get(metric, metric),
        )
        threshold = float(np.quantile(reference[np.triu_indices(300, 1)], 0.01))
    monkeypatch.setattr(duplicates, "_BLOCK_BYTES", 4 * 300 * 7)  # 7 rows per block
    first, second = close_pairs(search.prepare(data, metric), metric, threshold)
    expected = {(i, j) for i, j in zip(*np.nonzero(reference <= threshold), strict=True) if i < j}
    got = set(zip(first.tolist(), second.tolist(), strict=True))
    margin = {(i, j) for i, j in expected | got if abs(reference[i, j] - threshold) < 1e-4}
    assert got - margin == expected - margin and len(expected) > 100


def test_connected_components_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    for n, edges in ((1, 0), (50, 0), (200, 150), (500, 600), (50, 1000)):
        first, second = rng.integers(0, n, size=edges), rng.integers(0, n, size=edges)
        parent = connected_components(n, first, second)
        graph = coo_matrix((np.ones(edges), (first, second)), shape=(n, n))
        _count, labels = scipy_components(graph, directed=False)
        # Same partition, and each node points at the smallest node of its component.
        for component in np.unique(labels):
            nodes = np.flatnonzero(labels == component)
            assert set(parent[nodes].tolist()) == {int(nodes.min())}
    chain = connected_components(6, np.array([4, 3, 2, 1]), np.array([5, 4, 3, 2]))
    assert chain.tolist() == [0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("rows", "width", "radius", "values"),
    [(3000, 8, 4.0, 256), (2500, 128, 40.0, 256), (4000, 2, 4.0, 16), (3000, 8, 0.0, 256)],
)
def test_hash_links_group_like_every_close_pair(rows, width, radius, values, monkeypatch) -> None:
    """Multi-index hashing finds the groups the all-pairs scan finds: planted near copies,
    a run of identical hashes, 16-valued bytes (block values shared by thousands of rows: the
    blockwise fallback), and radius 0."""
    monkeypatch.setattr(duplicates, "_MIH_GROUP_ROWS", 300)  # the fallback runs at this size
    rng = np.random.default_rng(rows + width)
    data = rng.integers(0, values, (rows, width), dtype=np.uint8)
    for start in range(0, rows - 4, 50):
        data[start + 1] = data[start]
        data[start + 2] = data[start]
        data[start + 2, 0] ^= 1
        data[start + 3] = data[start + 2]
        data[start + 3, -1] ^= 16
    data[2000:2100] = data[2000]
    all_first, all_second = close_pairs(search.prepare(data, "hamming"), "hamming", radius)
    first, second = duplicates.hamming_links(data, radius)
    expected = connected_components(rows, all_first, all_second)
    np.testing.assert_array_equal(connected_components(rows, first, second), expected)
    if values == 256:  # (16-valued 2-byte hashes all chain into one group)
        assert (np.bincount(expected) >= 2).sum() > 40
    bits = np.unpackbits(data[first] ^ data[second], axis=1).sum(axis=1)
    assert bits.size and bits.max() <= radius  # every link is a real one
