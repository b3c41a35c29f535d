from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image, ImageOps
from skimage import data

from imrec_widgets import ImageIndex, projection
from imrec_widgets.errors import IndexLockedError, ProjectionError
from imrec_widgets.indexer import WriteLock
from imrec_widgets.projection import status

FEATURES = ["rgb", "dhash", "thumb"]

# fits UMAP maps
pytestmark = pytest.mark.slow


@pytest.fixture
def index(variant_folder: Path, tmp_path: Path, index_of: IndexOf) -> ImageIndex:
    root = tmp_path / "photos"
    shutil.copytree(variant_folder, root)
    return index_of(root, features=FEATURES)  # indexed once a session, copied after


def test_map_is_cached_then_extended_not_refitted(index: ImageIndex) -> None:
    assert status(index, "rgb") == {"state": "missing", "pending": len(index)}
    first = index.umap("rgb", sample_size=40, clusters=4)
    assert first.xy.shape == (len(index), 2) and np.isfinite(first.xy).all()
    assert first.fitted == 40 and first.transformed == len(index) - 40
    assert set(first.clusters.tolist()) == {0, 1, 2, 3}
    assert status(index, "rgb")["state"] == "fresh"
    np.testing.assert_array_equal(index.projection("rgb").xy, first.xy)

    again = index.umap("rgb", sample_size=40, clusters=4)
    assert again.transformed == 0 and again.fitted == 40
    np.testing.assert_array_equal(again.xy, first.xy)

    Image.fromarray(data.astronaut()).save(index.root / "new1.jpg")
    ImageOps.mirror(Image.fromarray(data.rocket())).save(index.root / "new2.jpg")
    index.update(progress=False, workers=0)
    assert status(index, "rgb") == {"state": "stale", "pending": 2}
    with pytest.raises(ProjectionError, match="misses 2 new or changed images"):
        from imrec_widgets.projection import load

        load(index, "rgb", allow_stale=False)
    extended = index.umap("rgb", sample_size=40, clusters=4)
    assert extended.transformed == 2 and extended.fitted == 40
    old = dict(zip(first.ids.tolist(), first.xy.tolist(), strict=True))
    for id_, xy in zip(extended.ids.tolist(), extended.xy.tolist(), strict=True):
        if id_ in old:
            assert xy == old[id_], "existing points keep their place"
    assert np.isfinite(extended.xy).all() and len(extended) == len(index)

    refit = index.umap("rgb", sample_size=40, clusters=4, refit=True)
    assert refit.fitted == 40 and refit.transformed == len(index) - 40


def test_same_settings_give_the_same_map(index: ImageIndex, tmp_path: Path) -> None:
    a = index.umap("dhash", clusters=3).xy
    other = ImageIndex.open(index.root, index_dir=tmp_path / "second", features=FEATURES)
    other.update(progress=False, workers=0)
    np.testing.assert_allclose(other.umap("dhash", clusters=3).xy, a, atol=1e-4)


def test_similar_images_land_close(index: ImageIndex) -> None:
    projection = index.umap("rgb", clusters=6)
    names = {r.id: Path(r.path).stem for r in index.records(projection.ids)}
    xy = dict(zip(projection.ids.tolist(), projection.xy, strict=True))
    spread = np.ptp(projection.xy, axis=0).max()
    coffee = next(i for i, n in names.items() if n == "coffee")
    mirror = next(i for i, n in names.items() if n == "coffee_mirror")
    assert np.linalg.norm(xy[coffee] - xy[mirror]) < 0.25 * spread


def test_hdbscan_is_the_default_clustering(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither ``clusters`` nor ``min_cluster_size`` (what ``compute`` passes by default),
    HDBSCAN runs with min_cluster_size max(5, 1%): far outliers are noise, which KMeans never gives."""
    from sklearn import cluster

    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(centre, 0.3, (300, 2)) for centre in ((0, 0), (8, 8), (0, 8))])
    xy = np.concatenate([xy, [[40.0, -40.0], [-40.0, 40.0]]]).astype(np.float32)
    real_hdbscan, ran = cluster.HDBSCAN, []

    def spying(real: type) -> type:
        class Spy(real):  # records that it ran, then clusters as the real one does
            def fit_predict(self, X, y=None):
                ran.append(real.__name__)
                return super().fit_predict(X, y)

        return Spy

    monkeypatch.setattr(cluster, "HDBSCAN", spying(cluster.HDBSCAN))
    monkeypatch.setattr(cluster, "KMeans", spying(cluster.KMeans))
    labels = projection.fitting.cluster(xy, {"clusters": None, "min_cluster_size": None}, 42)
    assert ran == ["HDBSCAN"]
    assert labels[-2:].tolist() == [-1, -1] and len(set(labels[:-2].tolist())) == 3
    expected = real_hdbscan(min_cluster_size=max(5, len(xy) // 100), copy=True).fit_predict(xy)
    np.testing.assert_array_equal(labels, expected)


def test_readable_errors(index: ImageIndex, tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match="feature 'embedding' is not in this index"):
        index.umap("embedding")
    with pytest.raises(ProjectionError, match="cannot map 'thumb'"):
        index.umap("thumb")
    with pytest.raises(ProjectionError, match=r"no UMAP map of 'dhash' yet.*imrec umap"):
        index.projection("dhash")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(data.coffee()).save(tiny / f"{name}.jpg")
    small = ImageIndex.open(tiny, features=FEATURES)
    small.update(progress=False, workers=0)
    with pytest.raises(ProjectionError, match="needs at least 5 images; this index has 3"):
        small.umap("rgb")


def test_cli_umap(index: ImageIndex, capsys: pytest.CaptureFixture[str]) -> None:
    from imrec_widgets.cli import main

    assert main(["umap", str(index.root), "--feature", "dhash", "--clusters", "3"]) == 0
    shown = capsys.readouterr()
    assert f"mapped {len(index)} images by dhash" in shown.out
    assert "UMAP fit" in shown.err and "clustering" in shown.err, "progress on stderr by default"
    assert main(["umap", str(index.root), "--feature", "dhash", "--clusters", "3", "-q"]) == 0
    shown = capsys.readouterr()
    assert "(fitted on 90, transformed 0)" in shown.out and shown.err == ""
    assert main(["umap", str(index.root), "--feature", "embedding"]) == 1
    assert "not in this index" in capsys.readouterr().err


# -- placement: plain arrays, never a pickle ---------------------------------------------------


class _WritesAMarker:
    """Unpickling this creates ``marker``: what a crafted file in someone's index could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_WritesAMarker(marker)))


def test_a_planted_pickle_is_never_loaded(index: ImageIndex, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    first = index.umap("rgb", sample_size=40, clusters=4)
    placement = index.index_dir / "umap_rgb.npz"
    assert placement.is_file() and not list(index.index_dir.glob("*.tmp"))
    _plant_pickle(index.index_dir / "umap_rgb.pkl", marker)  # the file older versions loaded

    again = index.umap("rgb", sample_size=40, clusters=4)  # the cached fit is reused
    assert again.fitted == 40 and again.transformed == 0
    np.testing.assert_array_equal(again.xy, first.xy)
    coffee = next(r for r in index.records() if Path(r.path).stem == "coffee")
    mirror = index.root / "coffee_mirror_again.png"
    ImageOps.mirror(Image.open(index.root / coffee.path)).save(mirror)
    spread = np.ptp(first.xy, axis=0).max()
    xy = projection.place(index, "rgb", mirror)
    stored = projection.place(index, "rgb", coffee.id)
    assert xy.shape == (1, 2) and np.linalg.norm(xy - stored) < 0.25 * spread
    assert not marker.exists()

    # a pickle where the placement file belongs: refused, never run, and the map is fitted again
    _plant_pickle(placement, marker)
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(ProjectionError, match=r"cannot place new images.*idx.umap\('rgb'\)"):
        projection.place(index, "rgb", mirror)
    refit = index.umap("rgb", sample_size=40, clusters=4)
    assert refit.fitted == 40 and refit.transformed == len(index) - 40
    np.testing.assert_allclose(projection.place(index, "rgb", mirror), xy, atol=1e-4 * spread)
    assert not (index.index_dir / "umap_rgb.pkl").exists(), "the old reducer file is cleaned up"

    # an .npz whose arrays are pickled objects: numpy refuses them with allow_pickle=False
    with open(placement, "wb") as f:
        np.savez(f, vectors=np.array([_WritesAMarker(marker)], dtype=object))
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(ProjectionError, match="cannot place new images"):
        projection.place(index, "rgb", mirror)
    assert index.umap("rgb", sample_size=40, clusters=4).transformed == len(index) - 40
    assert not marker.exists()


def test_a_map_from_an_older_version_is_fitted_again(index: ImageIndex, tmp_path: Path) -> None:
    """An index mapped before the .npz: a map and a pickled reducer, no placement file."""
    marker = tmp_path / "pwned"
    index.umap("dhash", clusters=3)
    (index.index_dir / "umap_dhash.npz").unlink()
    meta = index.catalog.get_meta("projection/dhash")
    del meta["placement"]
    index.catalog.set_meta("projection/dhash", meta)
    _plant_pickle(index.index_dir / "umap_dhash.pkl", marker)
    assert status(index, "dhash")["state"] == "fresh"  # the map itself is still shown
    with pytest.raises(ProjectionError, match="made by an older version"):
        projection.place(index, "dhash", index.root / index.records()[0].path)
    again = index.umap("dhash", clusters=3)
    assert again.fitted == len(index)
    xy = projection.place(index, "dhash", [index.root / r.path for r in index.records(again.ids)])
    hashes = index.features("dhash", again.ids)
    for hash_, placed in zip(hashes, xy, strict=True):  # on the point of an image with its hash
        same = (hashes == hash_).all(axis=1)
        assert np.abs(again.xy[same] - placed).max(axis=1).min() < 1e-5
    assert not marker.exists() and not (index.index_dir / "umap_dhash.pkl").exists()


def test_a_feature_rebuilt_with_other_settings_is_fitted_again(index: ImageIndex) -> None:
    index.umap("rgb", sample_size=40, clusters=4)
    rebuilt = ImageIndex.open(index.root, features=FEATURES, bins=4, rebuild=["rgb"])
    rebuilt.update(progress=False, workers=0)
    assert status(rebuilt, "rgb") == {"state": "stale", "pending": len(rebuilt)}
    again = rebuilt.umap("rgb", sample_size=40, clusters=4)
    assert again.fitted == 40 and again.transformed == len(rebuilt) - 40
    assert np.isfinite(
        projection.place(rebuilt, "rgb", rebuilt.root / rebuilt.records()[0].path)
    ).all()


def test_query_images_land_where_their_indexed_copies_are(index: ImageIndex) -> None:
    mapped = index.umap("rgb", sample_size=40, clusters=4)
    paths = [index.root / r.path for r in index.records(mapped.ids)]
    placed = projection.place(index, "rgb", paths)
    spread = np.ptp(mapped.xy, axis=0).max()
    # fitted images sit on their points; the rest where compute() placed them
    np.testing.assert_allclose(placed, mapped.xy, atol=1e-4 * spread)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 handwritten digits, and a real 2-D map of them (PCA)."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    values = load_digits().data.astype(np.float32)
    return values, PCA(2, random_state=0).fit_transform(values).astype(np.float32)


def test_placement_is_exact_knn_and_umaps_own_start_of_transform(digits, monkeypatch) -> None:
    from scipy.sparse import coo_matrix
    from sklearn.neighbors import NearestNeighbors
    from umap.umap_ import compute_membership_strengths, init_graph_transform, smooth_knn_dist

    values, xy = digits
    fit, new = values[:1000], values[1000:]
    monkeypatch.setattr(projection.placement, "QUERY_BLOCK", 128)  # several blocks
    model = projection.Placement(None, None, fit, xy[:1000], "euclidean", 15)

    neighbours, distances = model.nearest(new)
    exact, _ = NearestNeighbors(n_neighbors=15).fit(fit).kneighbors(new)
    np.testing.assert_allclose(distances, exact, rtol=1e-5, atol=1e-3)  # digits tie a lot: not ids
    to_found = np.linalg.norm(new[:, None, :] - fit[neighbours], axis=2)
    np.testing.assert_allclose(to_found, distances, rtol=1e-5, atol=1e-3)

    sigmas, rhos = smooth_knn_dist(distances.astype(np.float32), 15.0, local_connectivity=0.0)
    rows, cols, strengths, _ = compute_membership_strengths(
        neighbours.astype(np.int32), distances.astype(np.float32), sigmas, rhos, bipartite=True
    )
    graph = coo_matrix((strengths, (rows, cols)), shape=(len(new), len(fit))).tocsr()
    spread = np.ptp(xy, axis=0).max()
    np.testing.assert_allclose(
        model.place(new), init_graph_transform(graph, xy[:1000]), atol=1e-5 * spread
    )
    np.testing.assert_array_equal(model.place(fit[:50]), xy[:50])  # fitted rows: their own points


def test_hash_placement_ranks_by_hamming_distance(digits) -> None:
    from sklearn.neighbors import NearestNeighbors

    values, xy = digits
    bits = (values > 4).astype(np.float32)  # 64 real bits per digit, as unpacked hashes are
    model = projection.Placement(None, None, bits[:1000], xy[:1000], "hamming", 10)
    _, distances = model.nearest(bits[1000:])
    exact, _ = (
        NearestNeighbors(n_neighbors=10, metric="hamming").fit(bits[:1000]).kneighbors(bits[1000:])
    )
    np.testing.assert_allclose(distances, exact, atol=1e-6)  # neighbours may differ among ties


def test_placement_file_round_trips_as_plain_arrays(index: ImageIndex) -> None:
    index.umap("rgb", sample_size=60, clusters=4)
    path = index.index_dir / "umap_rgb.npz"
    model, token = projection.Placement.read(path)
    assert token == index.catalog.get_meta("projection/rgb")["placement"]
    with np.load(path, allow_pickle=False) as stored:
        assert sorted(stored.files) == [
            "ids",
            "metric",
            "n_neighbors",
            "pca_components",
            "pca_mean",
            "token",
            "vectors",
            "version",
            "xy",
        ]
        assert stored["vectors"].shape == (60, 50) and stored["pca_components"].shape == (50, 512)
        assert str(stored["metric"]) == "euclidean" and int(stored["n_neighbors"]) == 15
        np.testing.assert_array_equal(
            index.store.read_rows("umap/rgb", stored["ids"]), stored["xy"]
        )
    assert model.input_size == 512


# -- freshness -----------------------------------------------------------------------------------


def test_a_reextracted_image_makes_the_map_stale(index: ImageIndex) -> None:
    index.umap("rgb", sample_size=40, clusters=4)
    record = next(r for r in index.records() if Path(r.path).stem == "coffee")
    Image.fromarray(data.astronaut()).save(index.root / record.path)
    index.update(progress=False, workers=0)
    assert index.catalog.ids_indexed_after(
        index.catalog.get_meta("projection/rgb")["updated_at"]
    ) == [record.id]
    assert status(index, "rgb") == {"state": "stale", "pending": 1}
    extended = index.umap("rgb", sample_size=40, clusters=4)
    assert extended.transformed == 1 and status(index, "rgb")["state"] == "fresh"


# -- numba's compile cache -------------------------------------------------------------------------


def test_numba_caches_in_the_users_cache_folder(tmp_path: Path) -> None:
    script = (
        "from imrec_widgets.numba_cache import use_numba_cache; import numba, os; "
        "use_numba_cache(); print(os.environ['NUMBA_CACHE_DIR']); print(numba.config.CACHE_DIR)"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    folder = tmp_path / "cache" / "imrec-widgets" / "numba"
    assert out.stdout.split() == [str(folder), str(folder)] and folder.is_dir()

    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(tmp_path / "mine")] * 2, "a folder the user chose is kept"


@pytest.mark.slow
def test_umap_is_imported_with_its_compiled_code_cached() -> None:
    script = (
        "import numba; njit, jit = numba.njit, numba.jit; "
        "from imrec_widgets.projection.fitting import import_umap; import_umap(); "
        "from umap.umap_ import compute_membership_strengths, smooth_knn_dist; "
        "print(type(smooth_knn_dist._cache).__name__, type(compute_membership_strengths._cache).__name__, "
        "numba.njit is njit and numba.jit is jit)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["FunctionCache", "FunctionCache", "True"]


# -- progress ------------------------------------------------------------------------------------


def test_progress_reports_each_stage_in_order(
    index: ImageIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, int, int]] = []
    index.umap("rgb", sample_size=60, clusters=4, progress=lambda *call: calls.append(call))
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["reading features", "PCA", "UMAP fit", "placing 30 images", "clustering"]
    for stage in stages:
        reported = [(done, total) for name, done, total in calls if name == stage]
        assert reported[0][0] == 0 and reported[-1][0] == reported[-1][1] > 0
    assert ("reading features", 60, 60) in calls and ("placing 30 images", 30, 30) in calls
    assert capsys.readouterr().err == "", "a callable replaces the display"

    calls.clear()
    index.umap("rgb", sample_size=60, clusters=4, progress=lambda *call: calls.append(call))
    assert [stage for stage, _, _ in calls] == [
        "clustering",
        "clustering",
    ]  # nothing to fit or place

    index.umap("rgb", sample_size=60, clusters=4, refit=True, progress=True)
    shown = capsys.readouterr().err
    assert "UMAP fit" in shown and "clustering" in shown
    index.umap("rgb", sample_size=60, clusters=4, refit=True)
    assert capsys.readouterr().err == "", "library calls are quiet by default"
    with pytest.raises(TypeError, match="progress must be"):
        index.umap("rgb", progress="yes")


def test_the_first_fit_on_a_machine_says_it_compiles_ticks_and_clears_its_bars(
    index: ImageIndex,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A first map sat ~70 s behind a finished "PCA 100%" bar while numba compiled; the bars
    then stayed above the map."""
    import tqdm.auto

    from imrec_widgets import numba_cache

    marker = tmp_path / "umap.compiled"
    monkeypatch.setattr(numba_cache, "_compiled_marker", lambda: marker)
    monkeypatch.setattr(projection.stages, "TICK_SECONDS", 0.001)
    bars: list[tqdm.auto.tqdm] = []
    ticks: list[str] = []

    class Recorded(tqdm.auto.tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

        def refresh(self, *args: Any, **kwargs: Any) -> Any:
            ticks.append(str(self.desc))
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    index.umap("rgb", sample_size=60, clusters=4, refit=True, progress=True)
    shown = capsys.readouterr().err
    assert f"UMAP fit ({projection.COMPILE_NOTE})" in shown
    assert ticks.count(f"UMAP fit ({projection.COMPILE_NOTE})") > 2, "no live indicator"
    assert marker.exists(), "a finished fit marks the code compiled"
    assert bars and all(bar.leave is False for bar in bars), "bars stay after the map is made"

    index.umap("rgb", sample_size=60, clusters=4, refit=True, progress=True)
    shown = capsys.readouterr().err
    assert "UMAP fit" in shown and projection.COMPILE_NOTE not in shown


def test_warm_umap_compiles_what_a_first_map_needs() -> None:
    from imrec_widgets.numba_cache import umap_compiled

    assert projection.warm_umap(rows=40) > 0
    assert umap_compiled() or not os.environ.get("NUMBA_CACHE_DIR")


# -- several processes computing one map ------------------------------------------------------------
MAPPER = textwrap.dedent(
    """
    import json, sys
    from imrec_widgets import ImageIndex, index as index_module, projection

    def held(step):  # pause with the lock held until the test writes a line
        print(f"holding the lock: {step}", file=sys.stderr, flush=True)
        sys.stdin.readline()

    role = sys.argv[2]
    index = ImageIndex.open(sys.argv[1], features=["rgb", "dhash", "thumb"])
    if role == "update":  # a dashboard's idx.update(), paused before it scans
        scan = index_module.scan
        index_module.scan = lambda *a, **k: (held("scan"), scan(*a, **k))[1]
        print(json.dumps({"new": index.update(progress=False, workers=0).new}))
        sys.exit()
    if role == "first":  # another viewer's map, paused once made, before it is published
        projection.publishing.publish_step = lambda step: step == "staging" and held(step)
    if role == "reuse":
        def made_again(*args, **kwargs):
            raise AssertionError("the map was made again")
        projection.fitting.fit_map = projection.fitting.cluster = made_again
    made = index.umap("rgb", sample_size=40, clusters=4, progress=role != "first")
    print(json.dumps({
        "fitted": made.fitted,
        "transformed": made.transformed,
        "ids": made.ids.tolist(),
        "xy": made.xy.tolist(),
        "clusters": made.clusters.tolist(),
    }))
    """
)


def start(root: Path, role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", MAPPER, str(root), role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(process: subprocess.Popen[bytes], text: str) -> str:
    """Reads ``process``'s stderr until ``text`` appears (or it ends)."""
    assert process.stderr is not None
    seen = b""
    while text.encode() not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


def go_on_and_finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    import json

    out, err = process.communicate(b"\n")
    assert process.returncode == 0, err.decode()
    return json.loads(out)


def test_a_viewer_waits_for_another_viewers_map_and_uses_it(index: ImageIndex) -> None:
    """Several viewers computing the map at once got IndexLockedError; now the later ones wait,
    say whom for, and take the map the first one published instead of fitting another."""
    first = start(index.root, "first")
    assert "holding the lock: staging" in read_until(first, "holding the lock")
    second = start(index.root, "reuse")
    said = read_until(second, f"waiting for pid {first.pid} to finish")
    assert f"waiting for pid {first.pid} to finish writing {index.index_dir}" in said
    made, reused = go_on_and_finish(first), go_on_and_finish(second)
    assert made["fitted"] == 40 and made["transformed"] == len(index) - 40
    assert reused["fitted"] == 40 and reused["transformed"] == 0
    assert reused["ids"] == made["ids"] == index.ids().tolist()
    assert reused["xy"] == made["xy"] and reused["clusters"] == made["clusters"]
    assert index.projection("rgb").xy.tolist() == made["xy"]
    assert status(index, "rgb")["state"] == "fresh"


def test_a_map_made_after_waiting_for_an_update_holds_the_images_it_added(
    index: ImageIndex,
) -> None:
    before = index.umap("rgb", sample_size=40, clusters=4)
    Image.fromarray(data.astronaut()).save(index.root / "new1.jpg")
    Image.fromarray(data.rocket()).save(index.root / "new2.jpg")
    updater = start(index.root, "update")
    read_until(updater, "holding the lock: scan")
    mapper = start(index.root, "extend")  # counts the images before the update adds two
    assert f"waiting for pid {updater.pid}" in read_until(mapper, f"waiting for pid {updater.pid}")
    assert go_on_and_finish(updater) == {"new": 2}
    extended = go_on_and_finish(mapper)
    assert extended["transformed"] == 2 and extended["fitted"] == before.fitted
    assert len(extended["ids"]) == len(before) + 2 == len(index)
    assert status(index, "rgb") == {"state": "fresh", "pending": 0}


def test_a_map_gives_up_waiting_after_wait_seconds_and_says_whom_for(index: ImageIndex) -> None:
    calls: list[tuple[str, int, int]] = []
    with WriteLock(index.index_dir / "write.lock"):
        with pytest.raises(
            IndexLockedError, match=f"locked by pid {os.getpid()} after waiting 0 s"
        ):
            index.umap("rgb", wait=0)
        with pytest.raises(IndexLockedError, match="wait=None"):
            index.umap("rgb", wait=1, progress=lambda *call: calls.append(call))
    assert calls[0] == (f"waiting for pid {os.getpid()} to finish writing {index.index_dir}", 0, 1)
    assert status(index, "rgb")["state"] == "missing"
    with pytest.raises(ValueError, match="wait="):
        index.umap("rgb", wait=-1)
    assert len(index.umap("rgb", wait=0, sample_size=40)) == len(index), "free again: it runs"


def test_load_or_compute_gives_what_a_viewer_shows(
    index: ImageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProjectionError, match="no UMAP map of 'rgb' yet"):
        projection.load_or_compute(index, "rgb", compute_missing=False)
    first = projection.load_or_compute(index, "rgb", sample_size=40, clusters=4)
    assert status(index, "rgb")["state"] == "fresh" and first.pending == 0

    computed: list[dict] = []
    real_compute = projection.compute

    def counting(*args: Any, **kwargs: Any) -> projection.Projection:
        computed.append(dict(kwargs))
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(projection, "compute", counting)
    stored = projection.load_or_compute(index, "rgb")
    assert computed == []  # a current map is read, not computed
    np.testing.assert_array_equal(stored.xy, first.xy)
    projection.load_or_compute(index, "rgb", sample_size=40, clusters=4)
    assert len(computed) == 1  # asked-for parameters go to compute (which reuses the fit)

    Image.fromarray(data.astronaut()).save(index.root / "new1.jpg")
    index.update(progress=False, workers=0)
    stale = projection.load_or_compute(index, "rgb", compute_missing=False)
    assert stale.pending == 1 and len(computed) == 1
    monkeypatch.setattr(type(index), "read_only", property(lambda self: True))
    assert projection.load_or_compute(index, "rgb").pending == 1  # read-only: shown as stored
    assert len(computed) == 1
    with pytest.raises(ProjectionError, match="read-only index"):
        projection.load_or_compute(index, "dhash")
    monkeypatch.undo()
    monkeypatch.setattr(projection, "compute", counting)
    extended = projection.load_or_compute(index, "rgb")
    assert extended.pending == 0 and len(extended) == len(index) and len(computed) == 2
