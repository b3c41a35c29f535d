from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image
from skimage import data

from imrec_widgets import (
    ImageIndex,
    IndexBusyWarning,
    IndexConfigError,
    IndexLockedError,
    WriteLock,
)
from imrec_widgets import indexer as indexer_module
from imrec_widgets.features import MODEL_FREE_FEATURES
from imrec_widgets.features.thumbnails import row_bytes
from imrec_widgets.imageio import load_rgb
from imrec_widgets.indexer import (
    DECODE_MIN_SIDE,
    RebuildPlan,
    ScannedFile,
    ScanResult,
    plan_rebuild,
    plan_update,
    scan,
    worker_setup,
)


def cheap_index(root: Path, **kwargs: object) -> ImageIndex:
    return ImageIndex.open(root, features=MODEL_FREE_FEATURES, **kwargs)


def snapshot(index: ImageIndex) -> tuple[list[tuple], dict[str, np.ndarray]]:
    rows = [
        (r.id, r.path, r.size, r.mtime_ns, r.width, r.height, r.format, r.status, r.error)
        for r in index.records()
    ]
    ids = [r[0] for r in rows if r[7] == "ok"]
    return rows, {name: index.store.read_rows(name, ids) for name in index.settings["features"]}


def test_full_index_of_real_photos(photos: Path) -> None:
    index = ImageIndex.open(photos)
    report = index.update(progress=False)
    count = len(list(photos.rglob("*.jpg")))
    assert (report.new, report.changed, report.removed, report.errors) == (count, 0, 0, 0)
    assert len(index) == count
    assert "0 changed, 0 removed, 0 errors" in str(report) and report.images_per_second > 0
    assert (photos / ".imrec" / "catalog.sqlite").is_file()
    assert (photos / ".imrec" / "features.zarr" / "zarr.json").is_file()

    embeddings = index.features("embedding")
    assert embeddings.shape == (count, 1280) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all() and (np.linalg.norm(embeddings, axis=1) > 0).all()
    assert index.features("rgb").shape == (count, 512)
    np.testing.assert_allclose(np.linalg.norm(index.features("rgb"), axis=1), 1.0, rtol=1e-5)
    assert index.features("ahash").shape == (count, 8) and index.features("dhash").dtype == np.uint8
    assert index.features("thumb").shape == (count, row_bytes(256))

    coffee = next(
        i
        for i, p in zip(index.ids(), index.paths(index.ids()), strict=True)
        if p.name == "coffee.jpg"
    )
    record = index.records([coffee])[0]
    assert (record.width, record.height, record.format, record.status) == (600, 400, "JPEG", "ok")
    thumb = np.asarray(index.thumbnail(coffee))
    assert thumb.shape == (171, 256, 3), "the photo's aspect, its longer side 256 px"
    assert not (thumb[:4] == 255).all() and not (thumb[-4:] == 255).all(), "no white padding"
    assert thumb[85].std() > 5
    jpeg = index.thumbnail_bytes([coffee])[0]
    assert jpeg[:3] == b"\xff\xd8\xff" and Image.open(io.BytesIO(jpeg)).size == (256, 171)

    with sqlite3.connect(photos / ".imrec" / "catalog.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ids = [r[0] for r in db.execute("SELECT id FROM images ORDER BY id")]
    assert ids == list(range(count))


def test_rerun_with_nothing_changed_decodes_nothing(
    photos: Path, monkeypatch: pytest.MonkeyPatch, index_of: IndexOf
) -> None:
    index = index_of(photos, features=MODEL_FREE_FEATURES)
    before = snapshot(index)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file was decoded")

    monkeypatch.setattr(indexer_module, "decode", fail)
    report = cheap_index(photos).update(progress=False, workers=0)
    assert (report.new, report.changed, report.removed, report.errors, report.processed) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert "0 new, 0 changed, 0 removed" in str(report)
    rows, _values = snapshot(index)
    assert rows == before[0]


def test_add_modify_delete_is_incremental(photos: Path, index_of: IndexOf) -> None:
    index = index_of(photos, features=MODEL_FREE_FEATURES)
    coffee = photos / "objects" / "coffee.jpg"
    coffee_id = next(r.id for r in index.records() if r.path == "objects/coffee.jpg")
    chelsea_id = next(r.id for r in index.records() if r.path == "animals/chelsea.jpg")
    old_hash = index.features("dhash", [coffee_id])[0].copy()
    total = len(index)

    Image.fromarray(data.rocket()).save(coffee)  # same name, different picture
    os.utime(coffee, ns=(time.time_ns(), time.time_ns() + 10**9))
    (photos / "animals" / "chelsea.jpg").unlink()
    Image.fromarray(data.astronaut()).save(photos / "new_photo.PNG")

    report = index.update(progress=False, workers=0)
    assert (report.new, report.changed, report.removed, report.errors) == (1, 1, 1, 0)
    assert len(index) == total
    record = index.records([coffee_id])[0]
    assert record.path == "objects/coffee.jpg" and record.width == 640, "re-extracted in place"
    assert not np.array_equal(index.features("dhash", [coffee_id])[0], old_hash)
    assert index.records([chelsea_id])[0].status == "removed"
    assert chelsea_id not in index.ids()
    assert index.records([total + 0])[0].path == "new_photo.PNG"

    # A removed file that comes back gets its old id again.
    Image.fromarray(data.chelsea()).save(photos / "animals" / "chelsea.jpg")
    report = index.update(progress=False, workers=0)
    assert (report.new, report.changed) == (0, 1)
    assert chelsea_id in index.ids()


def test_broken_files_are_recorded_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    astronaut = Image.fromarray(data.astronaut())
    (root / "zero.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    astronaut.save(buffer, format="JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[:3000])
    (root / "text.png").write_text("not a png\n")
    Image.fromarray(np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257).save(
        root / "gray16.png"
    )
    astronaut.convert("CMYK").save(root / "cmyk.jpg")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png", transparency=0)
    frames = [astronaut.resize((64, 64)), Image.fromarray(data.coffee()).resize((64, 64))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], loop=0)
    header = bytearray(buffer.getvalue()[:2000])
    sof = header.find(b"\xff\xc0")
    header[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    (root / "huge.jpg").write_bytes(bytes(header) + buffer.getvalue()[2000:])
    astronaut.save(root / "good.JPEG")

    index = ImageIndex.open(root)
    report = index.update(progress=False, workers=1, batch_size=3)
    assert report.errors == 4
    errors = {path.name: message for path, message in index.errors()}
    assert set(errors) == {"zero.jpg", "truncated.jpg", "text.png", "huge.jpg"}
    assert "empty" in errors["zero.jpg"]
    assert "not a recognised image" in errors["text.png"]
    assert "decompression bomb" in errors["huge.jpg"]
    ok = {p.name for p in index.paths(index.ids())}
    assert ok == {"gray16.png", "cmyk.jpg", "palette.png", "anim.gif", "good.JPEG"}
    assert np.isfinite(index.features("embedding")).all()
    # Errored files are retried every run (a failure may have been transient); still broken,
    # they keep their errors.
    again = index.update(progress=False)
    assert (again.retried, again.errors) == (4, 4)
    assert {path.name for path, _ in index.errors()} == set(errors)


def test_scan_skips_index_hidden_loops_and_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(data.coffee()).save(root / "a" / "b" / "x.jpg")
    Image.fromarray(data.coffee()).save(root / ".hidden" / "y.jpg")
    Image.fromarray(data.coffee()).save(root / "a" / "no_suffix", format="PNG")
    (root / "a" / "notes.txt").write_text("hello")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    index_dir = root / "idx"
    index_dir.mkdir()
    Image.fromarray(data.coffee()).save(index_dir / "inside_index.jpg")
    (root / "locked").mkdir()
    Image.fromarray(data.coffee()).save(root / "locked" / "z.jpg")

    real_scandir = os.scandir

    def guarded(path: str) -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    found = scan([root], exclude=[index_dir])
    assert sorted(found.files) == ["a/b/x.jpg", "a/no_suffix"]
    assert [Path(p).name for p in found.skipped_dirs] == ["locked"]


def test_index_kept_elsewhere(photos: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    index = cheap_index(photos, index_dir=elsewhere)
    index.update(progress=False, workers=0)
    assert (elsewhere / "catalog.sqlite").exists() and not (photos / ".imrec").exists()
    assert len(ImageIndex.open(photos, index_dir=elsewhere)) == len(index)


def test_conflicting_configuration_is_a_clear_error(photos: Path, index_of: IndexOf) -> None:
    index_of(photos, features=MODEL_FREE_FEATURES).close()
    with pytest.raises(IndexConfigError, match=r"bins=8, not 4.*rebuild"):
        cheap_index(photos, bins=4)
    rebuilt = cheap_index(photos, bins=4, rebuild=["rgb"])
    report = rebuilt.update(progress=False, workers=0)
    assert report.processed == len(rebuilt)
    assert rebuilt.features("rgb").shape[1] == 64
    assert ImageIndex.open(photos).settings["bins"] == 4


def test_second_writer_is_told_who_holds_the_lock(photos: Path, index_of: IndexOf) -> None:
    index = index_of(photos, features=MODEL_FREE_FEATURES)
    lock = photos / ".imrec" / "write.lock"
    with WriteLock(lock):
        with pytest.raises(IndexLockedError, match=f"locked by pid {os.getpid()}"):
            WriteLock(lock).__enter__()  # what building an ANN index or a map meets
        with pytest.warns(IndexBusyWarning, match=f"pid {os.getpid()} was still updating"):
            assert not cheap_index(photos).update(progress=False, wait=0).updated
        assert len(cheap_index(photos)) == len(index), "readers work while a writer holds the lock"
    cheap_index(photos).update(progress=False)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_clean_run(sample_folder: Path, tmp_path: Path) -> None:
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(sample_folder, clean_root)
    shutil.copytree(sample_folder, killed_root)
    for src, dst in zip(
        sorted(clean_root.rglob("*.jpg")), sorted(killed_root.rglob("*.jpg")), strict=True
    ):
        os.utime(dst, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    batch = 2
    args = [
        "--features",
        "embedding,rgb,dhash,thumb",
        "--batch-size",
        str(batch),
        "-q",
        "--workers",
        "1",
    ]
    command = [sys.executable, "-m", "imrec_widgets.cli", "index"]
    subprocess.run([*command, str(clean_root), *args], check=True, capture_output=True)

    catalog = killed_root / ".imrec" / "catalog.sqlite"
    kills = 0
    for target in (2, 5):  # kill twice, each time once a few batches have committed
        process = subprocess.Popen(
            [*command, str(killed_root), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True) as db:
                    done = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= target * batch:
                time.sleep(0.05)  # land somewhere inside the next batch
                process.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        process.wait(timeout=60)
    assert kills == 2, "the run finished before it could be killed"
    result = subprocess.run(
        [*command, str(killed_root), *args], capture_output=True, text=True, check=True
    )
    assert "errors" in result.stdout

    clean = snapshot(ImageIndex.open(clean_root))
    resumed = snapshot(ImageIndex.open(killed_root))
    strip = [
        row[:2] + row[4:] for row in clean[0]
    ]  # size/mtime equal by construction; compare rest
    assert [row[:2] + row[4:] for row in resumed[0]] == strip
    assert len(resumed[0]) == len(list(killed_root.rglob("*.jpg"))), "no duplicate rows"
    for name in ("rgb", "dhash", "thumb"):
        np.testing.assert_array_equal(resumed[1][name], clean[1][name], err_msg=name)
    # What docs/architecture.md promises: embeddings equal within 1e-5 (each value), the rest identical.
    assert np.abs(resumed[1]["embedding"] - clean[1]["embedding"]).max() <= 1e-5


class RecordingModel:
    """A stand-in embedding model: records each call's batch size and thread count."""

    engine_used = "torch"  # so the writing process embeds, as it does for torch

    def __init__(self) -> None:
        self.threads: int | None = None
        self.loaded: list[int | None] = []
        self.calls: list[tuple[int, int | None]] = []

    def load(self) -> None:
        self.loaded.append(self.threads)

    @contextlib.contextmanager
    def using_threads(self, count: int) -> Iterator[None]:
        before, self.threads = self.threads, count
        try:
            yield
        finally:
            self.threads = before

    def embed(self, batch: np.ndarray) -> np.ndarray:
        assert self.loaded, "embedded before the model was loaded"
        self.calls.append((len(batch), self.threads))
        return batch.reshape(len(batch), -1)[:, :6].astype(np.float32)  # which input it was


def test_the_model_embeds_each_decoded_chunk_and_batches_reach_the_writer_whole(
    photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    settings = ImageIndex.open(photos, features=["embedding", "dhash"]).settings
    found = scan([photos])
    tasks = list(enumerate(found.files[p] for p in sorted(found.files)))
    assert len(tasks) == 19
    monkeypatch.setattr(indexer_module, "DECODE_CHUNK", 5)
    monkeypatch.setattr(indexer_module.os, "cpu_count", lambda: 4)
    model = RecordingModel()
    written: list[list[indexer_module.Decoded]] = []
    batches = list(indexer_module.batched(tasks, 12))
    indexer_module.run_batches(batches, settings, 1, written.append, model=model)

    # The model is loaded for both thread counts before the first chunk is embedded, embeds
    # chunks of at most 5 files (not batches of 12) on the 3 cores the decoder leaves, and
    # the last chunk, with nothing left to decode, on all 4.
    assert model.loaded == [3, 4]
    assert sum(n for n, _ in model.calls) == 18 and max(n for n, _ in model.calls) == 5
    assert {t for _, t in model.calls[:-1]} <= {3, 4} and model.calls[-1][1] == 4
    assert [[d.entry.id for d in batch] for batch in written] == [
        [id_ for id_, _ in batch] for batch in batches
    ]
    prepare = worker_setup(settings)["embedding"].prepare
    for decoded in (d for batch in written for d in batch):
        if decoded.entry.path == "broken.jpg":
            assert decoded.entry.error and decoded.embedding is None
            continue
        assert decoded.model_input is None  # the writer stores the embedding as it is
        want = prepare(load_rgb(photos / decoded.entry.path, min_side=DECODE_MIN_SIDE))
        np.testing.assert_array_equal(decoded.embedding, want.reshape(-1)[:6])


def _scanned(path: str, size: int = 10, mtime_ns: int = 1) -> ScannedFile:
    return ScannedFile(path, "/photos/" + path, size, mtime_ns)


def test_the_update_plan_is_pure_and_sorts_every_file_into_one_pile() -> None:
    found = ScanResult(
        files={
            p.path: p
            for p in [
                _scanned("b/new.jpg"),
                _scanned("a/new.jpg"),
                _scanned("same.jpg"),
                _scanned("grown.jpg", size=11),
                _scanned("touched.jpg", mtime_ns=2),
                _scanned("back.jpg"),
                _scanned("failed.jpg"),
            ]
        },
        unlisted=["locked/"],
    )
    known = {
        "same.jpg": (1, 10, 1, "ok"),
        "grown.jpg": (2, 10, 1, "ok"),
        "touched.jpg": (3, 10, 1, "ok"),
        "back.jpg": (4, 10, 1, "removed"),
        "failed.jpg": (5, 10, 1, "error"),
        "gone.jpg": (6, 10, 1, "ok"),
        "gone-broken.jpg": (7, 10, 1, "error"),
        "long-gone.jpg": (8, 10, 1, "removed"),
        "locked/kept.jpg": (9, 10, 1, "ok"),
    }
    plan = plan_update(found, known, next_id=10)
    assert [(id_, f.path) for id_, f in plan.tasks] == [
        (10, "a/new.jpg"),  # new files get ids in path order
        (11, "b/new.jpg"),
        (4, "back.jpg"),
        (5, "failed.jpg"),
        (2, "grown.jpg"),
        (3, "touched.jpg"),
    ]
    assert (plan.new, plan.changed, plan.retried, plan.rebuilt, plan.unchanged) == (2, 3, 1, 0, 1)
    assert sorted(plan.removed) == [6, 7]  # not the removed one again, not the unlistable one
    report = plan.report(found, "/photos/.imrec")
    assert (report.new, report.changed, report.removed, report.retried) == (2, 3, 2, 1)
    assert report.processed == 0 and report.index_dir == "/photos/.imrec"
    assert plan_update(ScanResult(files={}, unlisted=[""]), known, 10).removed == []


def test_a_rebuild_redoes_every_ok_image_not_yet_done_and_resumes() -> None:
    found = ScanResult(files={p: _scanned(p) for p in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")})
    known = {
        "a.jpg": (1, 10, 1, "ok"),
        "b.jpg": (2, 10, 1, "ok"),
        "c.jpg": (3, 10, 1, "error"),
        "d.jpg": (4, 10, 1, "ok"),
    }
    assert plan_update(found, known, 5).tasks == [(3, found.files["c.jpg"])]
    plan = plan_update(found, known, 5, done={2})
    assert [id_ for id_, _ in plan.tasks] == [1, 3, 4]
    assert (plan.rebuilt, plan.retried, plan.unchanged) == (2, 1, 1)
    assert plan_update(found, known, 5, done=set()).rebuilt == 3  # none done yet: all of them


def test_the_rebuild_plan_drops_what_is_asked_or_new_and_resumes_what_was_stopped() -> None:
    features = ["rgb", "dhash", "thumb"]
    nothing = plan_rebuild(features, features, rebuild=[], pending=[], started_at=None)
    assert nothing == RebuildPlan(frozenset(), frozenset(), restart=False)
    assert plan_rebuild(features, None, [], [], None).recompute == frozenset()  # a new index
    asked = plan_rebuild(
        features, features, rebuild=["rgb", "embedding"], pending=[], started_at=None
    )
    assert asked == RebuildPlan(frozenset({"rgb"}), frozenset({"rgb"}), restart=True)
    added = plan_rebuild(features, ["rgb", "thumb"], rebuild=[], pending=[], started_at=None)
    assert added == RebuildPlan(frozenset({"dhash"}), frozenset({"dhash"}), restart=True)
    # a stopped rebuild resumes: nothing dropped, its clock kept
    stopped = plan_rebuild(features, features, rebuild=[], pending=["rgb"], started_at=5.0)
    assert stopped == RebuildPlan(frozenset({"rgb"}), frozenset(), restart=False)
    # ... unless it never got a clock, or more is asked on top of it
    assert plan_rebuild(features, features, [], ["rgb"], None).restart
    more = plan_rebuild(features, features, rebuild=["dhash"], pending=["rgb"], started_at=5.0)
    assert more == RebuildPlan(frozenset({"rgb", "dhash"}), frozenset({"dhash"}), restart=True)
