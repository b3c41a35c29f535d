"""Dask-distributed indexing and search on one LocalCluster of two worker processes."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pytest
from PIL import Image

from imrec_widgets import ImageIndex, search
from imrec_widgets import index as index_module
from imrec_widgets.cli import main
from imrec_widgets.distributed import map_path, parse_path_map, path_rules, topk_dask
from imrec_widgets.features import MODEL_FREE_FEATURES
from imrec_widgets.synthetic import write_feature_index

WAIT_S = 120


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(2, timeout=WAIT_S)
    yield client
    client.close()
    cluster.close(timeout=WAIT_S)


def snapshot(index: ImageIndex) -> tuple[list[tuple], dict[str, np.ndarray]]:
    rows = [
        (r.id, r.path, r.size, r.mtime_ns, r.width, r.height, r.format, r.status, r.error)
        for r in index.records()
    ]
    ids = [r[0] for r in rows if r[7] == "ok"]
    return rows, {name: index.store.read_rows(name, ids) for name in index.settings["features"]}


def assert_same_index(got: ImageIndex, expected: ImageIndex) -> None:
    got_rows, got_values = snapshot(got)
    expected_rows, expected_values = snapshot(expected)
    assert got_rows == expected_rows
    assert (
        set(got_values) == set(expected_values) == {"embedding", "rgb", "ahash", "dhash", "thumb"}
    )
    for name in ("rgb", "ahash", "dhash", "thumb"):
        np.testing.assert_array_equal(got_values[name], expected_values[name], err_msg=name)
    np.testing.assert_allclose(
        got_values["embedding"], expected_values["embedding"], rtol=1e-4, atol=1e-5
    )


@pytest.fixture(scope="module")
def local_index(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    """The sample photos indexed by the local pipeline: the reference every Dask run must equal."""
    index = ImageIndex.open(sample_folder, index_dir=tmp_path_factory.mktemp("local") / "index")
    index.update(progress=False, workers=0)
    return index


@pytest.fixture(scope="module")
def dask_index(
    sample_folder: Path, tmp_path_factory: pytest.TempPathFactory, client: distributed.Client
) -> ImageIndex:
    index = ImageIndex.open(sample_folder, index_dir=tmp_path_factory.mktemp("dask") / "index")
    report = index.update(progress=False, client=client, batch_size=4)
    count = len(list(sample_folder.rglob("*.jpg")))
    assert (report.new, report.processed, report.errors) == (count, count, 0)
    return index


# -- indexing ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_index_equals_local_index(dask_index: ImageIndex, local_index: ImageIndex) -> None:
    assert_same_index(dask_index, local_index)
    assert len(dask_index) == len(local_index) > 0


@pytest.mark.slow
def test_rerun_on_dask_is_incremental(
    photos: Path, tmp_path: Path, client: distributed.Client
) -> None:
    index = ImageIndex.open(photos, index_dir=tmp_path / "index", features=MODEL_FREE_FEATURES)
    index.update(progress=False, client=client)
    (photos / "animals" / "chelsea.jpg").unlink()
    Image.open(photos / "objects" / "coffee.jpg").rotate(90, expand=True).save(
        photos / "rotated.jpg"
    )
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    report = index.update(progress=False, client=client)
    assert (report.new, report.changed, report.removed, report.errors) == (2, 0, 1, 1)
    assert [path.name for path, _message in index.errors()] == ["broken.jpg"]
    assert report.processed == 2

    reference = ImageIndex.open(
        photos, index_dir=tmp_path / "reference", features=MODEL_FREE_FEATURES
    )
    reference.update(progress=False, workers=0)
    ok = reference.ids()
    assert sorted(p.name for p in index.paths(index.ids())) == sorted(
        p.name for p in reference.paths(ok)
    )
    by_path = {r.path: r.id for r in index.records() if r.status == "ok"}
    ids = [by_path[r.path] for r in reference.records(ok)]
    for name in MODEL_FREE_FEATURES:
        np.testing.assert_array_equal(
            index.features(name, ids), reference.features(name, ok), err_msg=name
        )


@pytest.mark.slow
def test_worker_killed_mid_run_still_ends_with_a_complete_index(
    sample_folder: Path,
    tmp_path: Path,
    client: distributed.Client,
    local_index: ImageIndex,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed: list[int] = []
    real_write_batch = index_module.write_batch

    def write_then_kill(*args: object) -> int:
        written = real_write_batch(*args)
        if not killed:
            # First batch committed, later batches in flight: kill the worker with the most of
            # them, running or finished but not yet gathered (a fast engine finishes them before
            # the writer asks); either way their work is lost with the worker and must be redone.
            processing, held = client.processing(), client.has_what()
            load = {
                a: len(processing.get(a, ())) + len(held.get(a, ())) for a in {*processing, *held}
            }
            busiest = max(load, key=load.__getitem__)
            assert load[busiest], "no batch was running on or held by a worker"
            pid = client.run(os.getpid, workers=[busiest])[busiest]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return written

    monkeypatch.setattr(index_module, "write_batch", write_then_kill)
    index = ImageIndex.open(sample_folder, index_dir=tmp_path / "index")
    report = index.update(progress=False, client=client, batch_size=2)
    assert killed, "no worker was killed"
    assert (report.processed, report.errors) == (len(local_index), 0)
    assert_same_index(index, local_index)

    client.wait_for_workers(2, timeout=WAIT_S)  # the nanny restarts the killed worker
    assert killed[0] not in client.run(os.getpid).values()


@pytest.mark.slow
def test_path_map_lets_workers_read_the_images_elsewhere(
    sample_folder: Path, tmp_path: Path, client: distributed.Client, local_index: ImageIndex
) -> None:
    alias = tmp_path / "mnt" / "images"
    alias.parent.mkdir()
    alias.symlink_to(sample_folder, target_is_directory=True)
    index = ImageIndex.open(sample_folder, index_dir=tmp_path / "index")
    index.update(
        progress=False, client=client, batch_size=8, path_map={str(sample_folder): str(alias)}
    )
    assert_same_index(index, local_index)

    # Workers that cannot see the mapped folder: a clear error, and no file recorded as broken.
    missing = tmp_path / "not-mounted"
    index = ImageIndex.open(
        sample_folder, index_dir=tmp_path / "missing", features=MODEL_FREE_FEATURES
    )
    with pytest.raises(
        FileNotFoundError, match=rf"workers cannot read {re.escape(str(missing))}/.*path_map"
    ):
        index.update(progress=False, client=client, path_map={str(sample_folder): str(missing)})
    assert len(index) == 0 and index.errors() == []


def test_path_rules_map_whole_folders_longest_prefix_first(tmp_path: Path) -> None:
    rules = path_rules({"/data/images": "/mnt/images", "/data/images/raw/": "/fast/raw"})
    assert map_path("/data/images/a/b.jpg", rules) == "/mnt/images/a/b.jpg"
    assert map_path("/data/images/raw/c.jpg", rules) == "/fast/raw/c.jpg"
    assert map_path("/data/images", rules) == "/mnt/images"
    assert map_path("/data/images2/d.jpg", rules) == "/data/images2/d.jpg", "whole folders only"
    assert map_path("/elsewhere/e.jpg", rules) == "/elsewhere/e.jpg"

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    resolved = path_rules({str(link): "/worker"})
    assert map_path(str(tmp_path.resolve() / "real" / "x.jpg"), resolved) == "/worker/x.jpg"

    assert parse_path_map(["/a=/b", "/c=/d=e"]) == {"/a": "/b", "/c": "/d=e"}
    for bad in ("/a", "=/b", "/a="):
        with pytest.raises(ValueError, match="SRC=DST"):
            parse_path_map([bad])
    with pytest.raises(ValueError, match="client="):
        ImageIndex.open(tmp_path, index_dir=tmp_path / "i").update(path_map={"/a": "/b"})


# -- search ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "metric"),
    [
        ("embedding", "cosine"),
        ("embedding", "euclidean"),
        ("embedding", "manhattan"),
        ("rgb", "euclidean"),
        ("ahash", "hamming"),
        ("dhash", "hamming"),
    ],
)
def test_search_on_workers_equals_local_search(
    dask_index: ImageIndex, client: distributed.Client, mode: str, metric: str
) -> None:
    queries = [0, 5, [3, 7], dask_index.features(mode, [11])[0]]
    local = dask_index.search_many(queries, mode, metric, k=8)
    remote = dask_index.search_many(queries, mode, metric, k=8, client=client)
    for mine, theirs in zip(remote, local, strict=True):
        assert [hit.id for hit in mine] == [hit.id for hit in theirs]
        np.testing.assert_allclose(
            [h.distance for h in mine], [h.distance for h in theirs], rtol=1e-5, atol=1e-5
        )
    some = dask_index.ids()[::2]
    restricted = dask_index.search(2, mode, metric, k=5, ids=some, client=client)
    assert [h.id for h in restricted] == [
        h.id for h in dask_index.search(2, mode, metric, k=5, ids=some)
    ]
    assert {h.id for h in restricted} <= set(some.tolist())


@pytest.mark.slow
def test_search_on_workers_skips_removed_and_broken_rows(
    photos: Path, tmp_path: Path, client: distributed.Client
) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    index = ImageIndex.open(photos, index_dir=tmp_path / "index", features=MODEL_FREE_FEATURES)
    index.update(progress=False, client=client)
    (photos / "objects" / "coins.jpg").unlink()
    index.update(progress=False, client=client)
    statuses = {r.status: r.id for r in index.records()}
    assert set(statuses) == {"ok", "removed", "error"}
    everything = len(index.records())
    query = int(index.ids()[0])
    for mode, metric in (("rgb", "manhattan"), ("dhash", "hamming")):
        remote = index.search(query, mode, metric, k=everything, client=client)
        local = index.search(query, mode, metric, k=everything)
        assert [h.id for h in remote] == [h.id for h in local]
        assert len(remote) == len(index) - 1
        assert statuses["removed"] not in {h.id for h in remote}
        assert statuses["error"] not in {h.id for h in remote}


@pytest.mark.slow
def test_topk_over_many_chunks_equals_one_topk(
    dask_index: ImageIndex, client: distributed.Client
) -> None:
    rng = np.random.default_rng(0)
    ok = dask_index.ids()
    allowed = np.sort(rng.choice(ok, size=len(ok) - 4, replace=False))
    for mode, metric in (("embedding", "cosine"), ("dhash", "hamming")):
        data = dask_index.features(mode, allowed)
        queries = dask_index.features(mode, ok[:3])
        expected = search.topk(queries, data, metric, 6, ids=allowed)
        got = topk_dask(
            client, dask_index.store.path, mode, queries, metric, 6, allowed, chunk_rows=4
        )
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
    nothing = np.zeros((3, 512), np.float32)
    empty = topk_dask(client, dask_index.store.path, "rgb", nothing, "euclidean", 3, allowed[:0], 4)
    assert empty[0].shape == (3, 0)
    with pytest.raises(ValueError, match="not mode='hybrid'"):
        dask_index.search(0, "hybrid", client=client)


@pytest.mark.slow
def test_store_opened_by_file_url(
    dask_index: ImageIndex, photos: Path, tmp_path: Path, client: distributed.Client
) -> None:
    by_url = ImageIndex.open(dask_index.root, index_dir=dask_index.index_dir.as_uri())
    assert str(by_url.store_location).startswith("file://")
    assert type(by_url.store._group.store).__name__ == "FsspecStore"
    assert by_url.index_dir == dask_index.index_dir
    np.testing.assert_array_equal(by_url.features("embedding"), dask_index.features("embedding"))
    for client_or_none in (None, client):
        got = by_url.search(4, "embedding", k=6, client=client_or_none)
        assert [h.id for h in got] == [h.id for h in dask_index.search(4, "embedding", k=6)]
    assert by_url.info()["features_bytes"] == dask_index.info()["features_bytes"] > 0

    # Written through the URL too.
    written = ImageIndex.open(
        photos, index_dir=(tmp_path / "url-index").as_uri(), features=MODEL_FREE_FEATURES
    )
    written.update(progress=False, workers=0)
    by_path = ImageIndex.open(photos, index_dir=tmp_path / "url-index")
    assert len(by_path) == len(written) > 0
    np.testing.assert_array_equal(by_path.features("dhash"), written.features("dhash"))
    with pytest.raises(ValueError, match="local folder"):
        ImageIndex.open(photos, index_dir="s3://bucket/index")


# -- command line and packaging ----------------------------------------------------------------------
@pytest.mark.slow
def test_cli_index_on_a_scheduler_and_on_a_local_cluster(
    photos: Path, tmp_path: Path, client: distributed.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    count = len(list(photos.rglob("*.jpg")))
    alias = tmp_path / "alias"
    alias.symlink_to(photos, target_is_directory=True)
    args = ["--features", "rgb,dhash,thumb", "-q"]
    address = client.scheduler.address
    assert (
        main(["index", str(photos), *args, "--dask", address, "--path-map", f"{photos}={alias}"])
        == 0
    )
    assert f"{count} new, 0 changed, 0 removed, 0 errors" in capsys.readouterr().out
    assert client.status == "running", "the CLI closes only its own client"

    children = {p.pid for p in multiprocessing.active_children()}
    elsewhere = tmp_path / "local-index"
    assert (
        main(
            [
                "index",
                str(photos),
                *args,
                "--index-dir",
                str(elsewhere),
                "--dask",
                "local",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert f"{count} new, 0 changed" in capsys.readouterr().out
    assert {p.pid for p in multiprocessing.active_children()} <= children, (
        "the local cluster was closed"
    )
    np.testing.assert_array_equal(
        ImageIndex.open(photos, index_dir=elsewhere).features("dhash"),
        ImageIndex.open(photos).features("dhash"),
    )

    assert main(["index", str(photos), "--path-map", "/a=/b", "-q"]) == 1
    assert "use it with --dask" in capsys.readouterr().err
    assert main(["index", str(photos), "--dask", address, "--path-map", "nonsense", "-q"]) == 1
    assert "SRC=DST" in capsys.readouterr().err


def test_package_indexes_locally_without_dask(photos: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["dask"] = sys.modules["distributed"] = None  # as if not installed
        from imrec_widgets import ImageIndex
        from imrec_widgets.cli import main
        index = ImageIndex.open({str(photos)!r}, features=["dhash"])
        print(index.update(progress=False, workers=0))
        try:
            index.update(progress=False, client=object())
        except ImportError as exc:
            print("ImportError:", exc)
        print("exit", main(["index", {str(photos)!r}, "--dask", "local", "-q"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 0, result.stderr
    count = len(list(photos.rglob("*.jpg")))
    assert f"{count} new, 0 changed" in result.stdout
    assert "ImportError: Dask-distributed indexing needs dask.distributed" in result.stdout
    assert "exit 1" in result.stdout and "pip install 'imrec-widgets[dask]'" in result.stderr


def test_shared_sample_folder_is_left_untouched(sample_folder: Path) -> None:
    assert not (sample_folder / ".imrec").exists()


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
def test_compact_scan_on_workers_equals_the_local_compact_search(
    tmp_path: Path, client: distributed.Client, metric: str
) -> None:
    """vector_dtype=int8 with client=: shards of int8 codes live on the workers, each query is
    scanned there and re-ranked exactly here: the same hits as the local compact search."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (40, 96)).astype(np.float32)
    catalog, _store = write_feature_index(
        tmp_path,
        60_000,
        {
            "embedding": lambda ids: (
                centres[ids % 40] + rng.normal(0, 0.3, (ids.size, 96)).astype(np.float32)
            )
        },
        settings={"vector_dtype": "int8"},
        feature_config={"embedding": {"dim": 96}},
    )
    catalog.close()
    index = ImageIndex.open(tmp_path, index_dir=tmp_path)
    queries = [0, 12_345, [7, 8], rng.normal(0, 1, 96).astype(np.float32)]
    local = index.search_many(queries, "embedding", metric, k=10)
    remote = index.search_many(queries, "embedding", metric, k=10, client=client)
    assert index.searcher._compact["embedding"][1] == "int8"  # the local search was compact
    shards = index.searcher._shards["embedding"][1].shards
    assert len(shards) >= 2 and all(s.status == "finished" for s in shards)
    for mine, theirs in zip(remote, local, strict=True):
        assert [h.id for h in mine] == [h.id for h in theirs]
        np.testing.assert_allclose(
            [h.distance for h in mine], [h.distance for h in theirs], rtol=1e-5, atol=1e-5
        )
    some = np.arange(0, 60_000, 3)
    restricted = index.search(5, "embedding", metric, k=10, ids=some, client=client)
    assert [h.id for h in restricted] == [
        h.id for h in index.search(5, "embedding", metric, k=10, ids=some)
    ]
    assert {h.id for h in restricted} <= set(some.tolist())
    nearest = [h.id for h in local[0]]
    index.catalog.mark_removed(nearest[:3])  # a new generation: the shards are built again
    again = index.search(0, "embedding", metric, k=10, client=client)
    assert not {h.id for h in again} & set(nearest[:3])
    assert [h.id for h in again] == [h.id for h in index.search(0, "embedding", metric, k=10)]
