"""Crafted input from a hostile front end, image file or caller: refused, bounded, readable."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex, indexer, projection
from imrec_widgets import catalog as catalog_module
from imrec_widgets.cli import main
from imrec_widgets.errors import ImageDecodeError
from imrec_widgets.features import MODEL_FREE_FEATURES
from imrec_widgets.imageio import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE, decode, to_rgb
from imrec_widgets.widgets.search_widget import SearchWidget
from imrec_widgets.widgets.uploads import DEFAULT_MAX_UPLOAD_BYTES, MAX_QUERY_IMAGES

# -- SearchWidget: every message from the browser is untrusted ----------------------------------


@pytest.fixture(scope="module")
def cheap_index(sample_folder, tmp_path_factory, index_of: IndexOf):
    root = tmp_path_factory.mktemp("cheap") / "photos"
    shutil.copytree(sample_folder, root)  # file times kept: indexed once per session
    return index_of(root, features=MODEL_FREE_FEATURES)


@pytest.fixture
def widget(cheap_index):
    return SearchWidget(cheap_index)


def custom(widget, content, buffers=()):
    """A ``model.send(content, undefined, buffers)`` from the browser."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)}
    )


def front_end_sets(widget, **state):
    """``model.set(...); model.save_changes()`` from the browser."""
    widget._handle_msg(
        {
            "content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
            "buffers": [],
        }
    )


def held_bytes(widget):
    return sum(len(part) for part in widget._uploads.parts.values())


def test_negative_file_indices_do_not_each_get_a_buffer(widget):
    chunk = memoryview(bytes(1_000_000))
    for file_index in range(-1, -301, -1):
        custom(widget, {"type": "chunk", "upload": "u", "file": file_index, "offset": 0}, [chunk])
    assert held_bytes(widget) == 0 and len(widget._uploads.parts) == 0
    assert widget.rejected == 300 and "file" in widget.error


@pytest.mark.parametrize("file_index", [16, 2**70, "0", 0.0, None, True, [0]])
def test_malformed_file_indices_are_refused(widget, file_index):
    custom(widget, {"type": "chunk", "upload": "u", "file": file_index, "offset": 0}, [b"x"])
    assert held_bytes(widget) == 0 and widget.rejected == 1


def test_one_upload_is_bounded_in_total(widget):
    widget.max_upload_total_bytes = 3_000_000
    chunk = memoryview(bytes(1_000_000))
    for file_index in range(MAX_QUERY_IMAGES):
        custom(widget, {"type": "chunk", "upload": "u", "file": file_index, "offset": 0}, [chunk])
        assert held_bytes(widget) <= 3_000_000
    meta = [{"name": f"{i}.png", "size": 1_000_000} for i in range(MAX_QUERY_IMAGES)]
    custom(widget, {"type": "query", "upload": "u", "files": meta})
    assert "over 3 MB in total" in widget.error and "max_upload_total_bytes" in widget.error
    assert widget.results == [] and held_bytes(widget) == 0


def test_the_browser_cannot_raise_the_upload_limit(widget):
    front_end_sets(widget, max_upload_bytes=10**12)
    assert widget.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES and widget.rejected == 1
    big = memoryview(bytes(DEFAULT_MAX_UPLOAD_BYTES // 2 + 1))
    custom(widget, {"type": "chunk", "upload": "u", "file": 0, "offset": 0}, [big])
    custom(widget, {"type": "chunk", "upload": "u", "file": 0, "offset": len(big)}, [big])
    assert held_bytes(widget) == 0


def test_the_browser_cannot_write_python_owned_traits(widget):
    fake = [{"id": 1, "path": "/etc/passwd", "distance": 0.0, "rank": 0}]
    front_end_sets(widget, results=fake, busy=True, modes=["x"], scope_size=5, elapsed_ms=1.0)
    assert widget.results == [] and not widget.busy and widget.modes[0] == "rgb"
    assert widget.scope_size == -1 and widget.elapsed_ms == 0.0 and widget.rejected == 5


def test_the_browser_may_ask_for_its_controls(widget):
    custom(widget, {"type": "set", "name": "mode", "value": "ahash"})
    custom(widget, {"type": "set", "name": "k", "value": 5})
    assert (widget.mode, widget.metric, widget.k) == ("ahash", "hamming", 5)
    custom(widget, {"type": "file_error", "message": "x" * 10_000})
    assert len(widget.error) == 1000 and widget.rejected == 0


def test_the_browser_cannot_write_its_controls_either(widget):
    front_end_sets(widget, mode="ahash", k=5, error="x")
    assert (widget.mode, widget.k, widget.error) == ("rgb", 10, "") and widget.rejected == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("k", "ten"),
        ("k", 2.5),
        ("k", True),
        ("mode", 3),
        ("weights", [1]),
        ("weights", {"rgb": "a"}),
        ("max_upload_bytes", 10**12),
    ],
)
def test_controls_of_the_wrong_type_are_refused_readably(widget, name, value):
    before = (widget.mode, widget.k, dict(widget.weights), widget.max_upload_bytes)
    custom(widget, {"type": "set", "name": name, "value": value})
    assert (widget.mode, widget.k, dict(widget.weights), widget.max_upload_bytes) == before
    assert widget.error and widget.rejected == 1


@pytest.mark.parametrize("bad_id", [1e308, float("inf"), float("nan"), -1, 2**80, "3", None, [1]])
def test_more_like_a_crafted_id_is_a_readable_error(widget, bad_id, caplog):
    custom(widget, {"type": "more_like", "id": bad_id})
    assert widget.error.startswith("cannot search from result") and not widget.busy
    assert "Error" not in widget.error and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "files", [{"a": 1}, [None], [{"name": "a.png", "size": "12"}], [{"name": 5, "size": -1}]]
)
def test_a_malformed_file_list_is_a_readable_error(widget, files, caplog):
    custom(widget, {"type": "query", "upload": "u", "files": files})
    assert widget.error and "Error" not in widget.error and "Traceback" not in caplog.text


def test_unknown_messages_are_counted_and_ignored(widget):
    custom(widget, ["not", "a", "dict"])
    custom(widget, {"type": "exec", "code": "import os"})
    assert widget.rejected == 2 and widget.error == ""


def test_a_valid_upload_still_works(widget, sample_folder):
    data = next(sample_folder.rglob("*.jpg")).read_bytes()
    custom(widget, {"type": "chunk", "upload": "v", "file": 0, "offset": 0}, [memoryview(data)])
    custom(
        widget, {"type": "query", "upload": "v", "files": [{"name": "a.jpg", "size": len(data)}]}
    )
    assert widget.error == "" and len(widget.results) == widget.k


# -- image files: a small file must not take gigabytes to decode ---------------------------------


def flat_png(path, width, height, pixel=(10, 120, 200, 128)):
    """A one-colour RGBA PNG written row by row (small on disk, never whole in memory)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes(pixel) * width
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


PEAK_CHILD = r"""
import sys
from imrec_widgets.imageio import decode

def high_water_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

before = high_water_bytes()
image = decode(sys.argv[1], min_side=256).image
print(high_water_bytes() - before, image.size[0], image.size[1], image.mode)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_large_png_is_decoded_with_one_full_size_copy(tmp_path):
    side = 5000
    path = flat_png(tmp_path / "large.png", side, side)
    assert path.stat().st_size < 200_000
    out = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(path)], capture_output=True, text=True, check=True
    )
    peak, width, height, mode = out.stdout.split()
    full_copy = side * side * 4  # Pillow holds RGBA (and RGB) as 4 bytes a pixel
    assert int(peak) < 1.5 * full_copy, f"peak {int(peak) / 1e6:.0f} MB"
    assert mode == "RGB" and 512 <= min(int(width), int(height)) < 1024


def test_reduced_decoding_keeps_colour_and_alpha_on_white(tmp_path):
    path = flat_png(tmp_path / "half.png", 2600, 1300, pixel=(0, 0, 255, 128))
    image = decode(path, min_side=256).image
    assert image.size == (1300, 650)  # reduced by 2: shorter side stays >= 2 * 256
    assert np.abs(np.asarray(image)[10, 10].astype(int) - [127, 127, 255]).max() <= 1


def test_an_image_over_the_pixel_cap_is_an_error_naming_the_cap(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    flat_png(folder / "huge.png", 3000, 2000)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "small.png")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "5_000_000")
    index = ImageIndex.open(folder, index_dir=tmp_path / "idx", features=MODEL_FREE_FEATURES)
    report = index.update(progress=False, workers=0)
    assert len(index) == 1 and report.errors == 1
    [(path, message)] = index.errors()
    assert path.name == "huge.png"
    assert (
        "6,000,000 pixels" in message and "5,000,000" in message and "IMREC_MAX_PIXELS" in message
    )
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "7000000")
    assert decode(folder / "huge.png", min_side=256).width == 3000


def test_the_default_pixel_cap_is_below_pillows_own_limit():
    assert DEFAULT_MAX_PIXELS <= Image.MAX_IMAGE_PIXELS * 2
    assert DEFAULT_MAX_PIXELS * 4 <= 1_000_000_000  # one full-size copy at 4 bytes a pixel


# -- where=: SQL from a caller is bounded in time and cannot write ---------------------------------

FOREVER = (
    "id IN (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT x FROM n WHERE x < 0)"
)


class _SteppingClock:
    """A clock for the catalog that moves 0.1 s on every read, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        self.now += 0.1
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_where_that_would_run_forever_is_stopped_within_its_budget(cheap_index, monkeypatch):
    # The budget is counted on the catalog's clock: with a clock that moves 0.1 s a read, a 0.5 s
    # budget must stop the query after a handful of reads (a query that never ends would hang).
    monkeypatch.setattr(catalog_module, "WHERE_TIME_BUDGET_S", 0.5)
    clock = _SteppingClock()
    monkeypatch.setattr(catalog_module, "time", clock)
    with pytest.raises(ValueError, match=r"time budget of 0.5 s and was stopped"):
        cheap_index.search(0, mode="ahash", where=FOREVER)
    assert clock.reads <= 10


INTERRUPT_CHILD = r"""
import signal, sys, time
from imrec_widgets import catalog as catalog_module
from imrec_widgets.catalog import Catalog


class Clock:
    # The catalog's clock, counting its reads: ids_where reads it once for its deadline, then
    # once in each run of sqlite's progress handler, i.e. while the query runs.
    def __init__(self):
        self.reads = 0
        self.at_signal = None

    def monotonic(self):
        self.reads += 1
        if self.reads == 2:
            print("running", flush=True)  # inside the query: now Ctrl-C must stop it
        return time.monotonic()

    def __getattr__(self, name):
        return getattr(time, name)


def ctrl_c(signum, frame):
    clock.at_signal = clock.reads
    raise KeyboardInterrupt


clock = Clock()
catalog_module.time = clock
signal.signal(signal.SIGINT, ctrl_c)
catalog = Catalog(sys.argv[1], read_only=True)
try:
    catalog.ids_where(sys.argv[2], time_budget=3600)
except KeyboardInterrupt:
    print(f"interrupted after {clock.reads - clock.at_signal} progress checks", flush=True)
"""


def test_ctrl_c_stops_a_where(cheap_index):
    """Ctrl-C during a where= query stops it in the progress check that sees it (not at its hour-long
    budget). Waits on the child's own signs, never on the clock: holds on a busy machine."""
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_CHILD, str(cheap_index.catalog_path), FOREVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "running"  # the query itself is running
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=600)  # a hang guard only: the budget is an hour
    finally:
        child.kill()
    assert child.returncode == 0, out
    assert out.startswith("interrupted after ") and int(out.split()[2]) == 0, out


def test_a_where_cannot_write(cheap_index):
    before = len(cheap_index)
    sneaky = "id IN (SELECT 1); DELETE FROM images"
    with pytest.raises(ValueError, match="bad where= condition"):
        cheap_index.search(0, mode="ahash", where=sneaky)
    returning = "id IN (SELECT id FROM images) AND 0 = (SELECT count(*) FROM (DELETE FROM images RETURNING id))"
    with pytest.raises(ValueError, match="bad where= condition"):
        cheap_index.search(0, mode="ahash", where=returning)
    assert len(cheap_index) == before


def test_folder_and_path_glob_filter_without_sql(cheap_index):
    paths = {
        p.relative_to(cheap_index.root).as_posix() for p in cheap_index.paths(cheap_index.ids())
    }
    folder = sorted({p.split("/")[0] for p in paths if "/" in p})[0]
    under = {p for p in paths if p.startswith(folder + "/")}
    hits = cheap_index.search(0, mode="ahash", k=50, folder=folder, exclude_self=False)
    assert {p.relative_to(cheap_index.root).as_posix() for p in hits.paths} == under
    hits = cheap_index.search(
        0, mode="ahash", k=50, folder=cheap_index.root / folder, exclude_self=False
    )
    assert len(hits) == len(under)
    hits = cheap_index.search(
        0, mode="ahash", k=50, path_glob=f"{folder}/*.jpg", exclude_self=False
    )
    assert {p.relative_to(cheap_index.root).as_posix() for p in hits.paths} == {
        p for p in under if p.endswith(".jpg")
    }
    assert len(cheap_index.search(0, mode="ahash", folder=folder.upper() + "x")) == 0
    with pytest.raises(ValueError, match="not inside the index root"):
        cheap_index.search(0, mode="ahash", folder="/elsewhere")


# -- a killed `umap --refit` leaves the old map or the new one, never a mixture ---------------------


class Killed(BaseException):
    """Stands for SIGKILL between two steps of publishing a map."""


@pytest.fixture
def mapped_index(variant_folder, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(variant_folder, root)
    index = ImageIndex.open(root, features=["rgb", "dhash"])
    index.update(progress=False, workers=0)
    index.umap("rgb", sample_size=40, clusters=4)
    return index


PUBLISH_STEPS = [
    "staging",
    "switching",
    "moving the placement",
    "copying",
    "copying labels",
    "finishing",
]


@pytest.mark.slow
@pytest.mark.parametrize("step", PUBLISH_STEPS)
def test_a_refit_killed_at_any_step_leaves_one_whole_map(mapped_index, monkeypatch, step):
    old = projection.load(mapped_index, "rgb")

    def kill_at(reached):
        if reached == step:
            raise Killed(step)

    monkeypatch.setattr(projection.publishing, "publish_step", kill_at)
    # A different random_state makes a different fit; its partial writes must not show.
    with pytest.raises(Killed):
        mapped_index.umap("rgb", sample_size=40, clusters=4, refit=True, random_state=7)
    monkeypatch.undo()
    new = projection.compute(
        mapped_index, "rgb", sample_size=40, clusters=4, refit=True, random_state=7
    )

    seen = projection.load(mapped_index, "rgb")  # after the repair: the new map
    np.testing.assert_array_equal(seen.xy, new.xy)
    np.testing.assert_array_equal(seen.clusters, new.clusters)
    assert not np.allclose(old.xy, new.xy)
    assert projection.status(mapped_index, "rgb")["state"] == "fresh"


@pytest.mark.slow
@pytest.mark.parametrize("step", PUBLISH_STEPS)
def test_a_reader_during_a_killed_refit_sees_old_or_new(mapped_index, monkeypatch, step):
    old = projection.load(mapped_index, "rgb")
    fresh_fit = {}

    def kill_at(reached):
        if reached == step:
            raise Killed(step)

    original_publish = projection.publishing.publish

    def remember(index, feature, ids, xy, labels, meta, new_placement):
        fresh_fit["xy"], fresh_fit["labels"] = xy.copy(), labels.copy()
        original_publish(index, feature, ids, xy, labels, meta, new_placement)

    monkeypatch.setattr(projection.publishing, "publish", remember)
    monkeypatch.setattr(projection.publishing, "publish_step", kill_at)
    with pytest.raises(Killed):
        mapped_index.umap("rgb", sample_size=40, clusters=4, refit=True, random_state=7)
    monkeypatch.undo()
    seen = projection.load(mapped_index, "rgb")
    is_old = np.array_equal(seen.xy, old.xy) and np.array_equal(seen.clusters, old.clusters)
    is_new = np.array_equal(seen.xy, fresh_fit["xy"]) and np.array_equal(
        seen.clusters, fresh_fit["labels"]
    )
    assert is_old != is_new, "a reader saw a mixture of two fits"
    assert is_old == (step in ("staging", "switching"))
    # A query is placed by the model of the map the reader sees, never the other fit's.
    placed = projection.place(mapped_index, "rgb", mapped_index.paths([int(seen.ids[0])]))
    assert np.linalg.norm(placed[0] - seen.xy[0]) < 0.05 * np.ptp(seen.xy, axis=0).max()
    if not is_old:  # the next compute finishes the publish and reuses the new fit
        again = projection.compute(mapped_index, "rgb", sample_size=40, clusters=4, random_state=7)
        assert again.transformed == 0
        np.testing.assert_array_equal(again.xy, fresh_fit["xy"])


# -- transient failures: retried every run; a folder that cannot be listed keeps its images ------


@pytest.fixture
def two_folders(sample_folder, tmp_path, index_of: IndexOf):
    root = tmp_path / "photos"
    shutil.copytree(sample_folder, root)
    return index_of(root, features=["ahash"])


def test_an_error_is_retried_on_the_next_update(two_folders, monkeypatch):
    index = two_folders
    victim = sorted(index.paths(index.ids()))[0]
    Path(victim).touch()  # changed: decoded again, and this time it fails
    real = indexer.decode_one

    def fails_for_victim(features, source):
        if Path(source) == victim:
            raise ImageDecodeError("read error (flaky disk)")
        return real(features, source)

    monkeypatch.setattr(indexer, "decode_one", fails_for_victim)
    report = index.update(progress=False, workers=0)
    assert report.errors == 1 and [p for p, _ in index.errors()] == [victim]
    again = index.update(progress=False, workers=0)  # still failing: the error is kept
    assert again.retried == 1 and again.errors == 1 and "flaky disk" in index.errors()[0][1]
    assert "1 retried" in str(again)
    monkeypatch.undo()
    healed = index.update(progress=False, workers=0)
    assert healed.retried == 1 and healed.errors == 0 and index.errors() == []
    assert victim in index.paths(index.ids())
    assert index.update(progress=False, workers=0).retried == 0


def test_a_folder_that_cannot_be_listed_keeps_its_images(two_folders, monkeypatch):
    index = two_folders
    before = sorted(index.paths(index.ids()))
    flaky = sorted({p.parent for p in before if p.parent != index.root})[0]
    under = [p for p in before if flaky in p.parents]
    real = os.scandir

    def unlistable(path="."):
        if Path(path) == flaky:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", unlistable)
    report = index.update(progress=False, workers=0)
    assert report.removed == 0 and sorted(index.paths(index.ids())) == before
    assert report.skipped_dirs == [str(flaky)] and "1 folders unreadable" in str(report)
    monkeypatch.undo()
    assert index.update(progress=False, workers=0).removed == 0
    shutil.rmtree(flaky)  # really gone: now its images are removed
    assert index.update(progress=False, workers=0).removed == len(under) > 0


def test_an_unreadable_root_removes_nothing(two_folders, monkeypatch):
    index = two_folders
    count = len(index)
    real = os.scandir
    monkeypatch.setattr(
        os,
        "scandir",
        lambda path=".": (
            real(path)
            if Path(path) != index.root
            else (_ for _ in ()).throw(OSError(5, "I/O error"))
        ),
    )
    report = index.update(progress=False, workers=0)
    assert report.removed == 0 and len(index) == count


# -- a stopped rebuild: searching the half-rebuilt feature is a clear error ------------------------


def test_searching_a_feature_whose_rebuild_was_stopped_is_a_clear_error(
    sample_folder, tmp_path, monkeypatch, index_of: IndexOf
):
    root = tmp_path / "photos"
    shutil.copytree(sample_folder, root)
    index_of(root, features=["ahash", "rgb"]).close()
    index = ImageIndex.open(root, features=["ahash", "rgb"], rebuild=["rgb"])

    def killed(*args, **kwargs):
        raise Killed("update")

    monkeypatch.setattr("imrec_widgets.index.write_batch", killed)
    with pytest.raises(Killed):
        index.update(progress=False, workers=0)
    monkeypatch.undo()
    reader = ImageIndex.open(root)
    with pytest.raises(ValueError, match=r"feature 'rgb' is being rebuilt .* run idx.update\(\)"):
        reader.search(0, mode="rgb")
    with pytest.raises(ValueError, match="'rgb' is being rebuilt"):
        reader.search(0, mode="hybrid", weights={"rgb": 1.0, "ahash": 1.0})
    assert len(reader.search(0, mode="ahash")) == 10  # the other feature is complete
    reader.update(progress=False, workers=0)
    assert len(reader.search(0, mode="rgb")) == 10


def test_a_stopped_rebuild_shows_its_progress_and_a_rerun_resumes_it(
    sample_folder, tmp_path, monkeypatch, capsys, index_of: IndexOf
):
    root = tmp_path / "photos"
    shutil.copytree(sample_folder, root)

    def open_index(**settings):
        return ImageIndex.open(root, features=["ahash", "rgb"], **settings)

    index_of(root, features=["ahash", "rgb"]).close()
    real_write = indexer.write_batch
    calls = []

    def killed_after_two_batches(*args, **kwargs):
        if len(calls) == 2:
            raise Killed("update")
        calls.append(1)
        return real_write(*args, **kwargs)

    monkeypatch.setattr("imrec_widgets.index.write_batch", killed_after_two_batches)
    with pytest.raises(Killed):
        open_index(bins=4, rebuild=["rgb"]).update(progress=False, workers=0, batch_size=4)
    monkeypatch.undo()

    assert open_index(bins=4).info()["rebuild"] == {"features": ["rgb"], "done": 8, "total": 18}
    assert main(["info", str(root)]) == 0
    assert "rebuilding  : rgb, 8 of 18 images done" in capsys.readouterr().out
    resumed = open_index(bins=4)
    report = resumed.update(progress=False, workers=0)
    assert (report.rebuilt, report.unchanged) == (10, 8)  # only the rows the stopped run left
    assert resumed.info()["rebuild"] is None

    fresh = ImageIndex.open(root, index_dir=tmp_path / "fresh", features=["ahash", "rgb"], bins=4)
    fresh.update(progress=False, workers=0)
    assert [str(p) for p in resumed.paths(range(18))] == [str(p) for p in fresh.paths(range(18))]
    np.testing.assert_array_equal(resumed.features("rgb"), fresh.features("rgb"))


@pytest.mark.parametrize("mode", ["P", "PA", "1", "I;16", "LA", "CMYK", "F"])
def test_every_mode_is_reduced_to_the_right_colour(mode):
    image = (
        Image.new("RGB", (1200, 1100), (200, 40, 40)).convert(mode, dither=Image.Dither.NONE)
        if mode not in ("I;16", "F", "1")
        else Image.new(mode, (1200, 1100), 1)
    )
    expected = np.asarray(to_rgb(image.copy()))[0, 0].astype(int)
    reduced = decode(image, min_side=200).image
    assert reduced.size == (600, 550) and reduced.mode == "RGB"  # factor 1100 // 400
    assert np.abs(np.asarray(reduced)[5, 5].astype(int) - expected).max() <= 2


@pytest.mark.parametrize("mode", ["P", "PA"])
def test_palette_images_are_reduced_by_colour_not_by_index(mode):
    stripes = np.zeros((1100, 1200), dtype=np.uint8)
    stripes[:, 1::2] = 200  # palette entries 0 and 200: black and a bright red
    image = Image.fromarray(stripes, "L").convert("P")
    image.putpalette([0, 0, 0] * 200 + [250, 0, 0] + [0, 0, 0] * 55)
    image = image.convert(mode) if mode == "PA" else image
    reduced = np.asarray(decode(image, min_side=200).image).astype(int)
    assert np.abs(reduced[5, 5] - [125, 0, 0]).max() <= 2  # the mean colour, not entry 100


@pytest.mark.slow
def test_a_placement_file_that_declares_gigabytes_is_refused_before_it_is_decompressed(
    mapped_index, monkeypatch
):
    """A crafted map file: 1 MB of deflated zeros declaring 1 GB of vectors."""
    import zipfile

    import numpy.lib.format as npy_format

    path = mapped_index.index_dir / "umap_rgb.npz"
    genuine, token = projection.Placement.read(path)
    rows = 2**30 // (4 * 64)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("vectors.npy", "w", force_zip64=True) as stream:
            npy_format.write_array_header_1_0(
                stream, {"descr": "<f4", "fortran_order": False, "shape": (rows, 64)}
            )
            zeros = bytes(2**20)
            for _ in range(2**30 // len(zeros)):
                stream.write(zeros)
        for name in (
            "version",
            "token",
            "metric",
            "n_neighbors",
            "xy",
            "pca_mean",
            "pca_components",
        ):
            with archive.open(f"{name}.npy", "w") as stream:
                npy_format.write_array(stream, np.asarray(0, np.float32))
    assert path.stat().st_size < 5 * 2**20
    monkeypatch.setenv(projection.MAX_PLACEMENT_VARIABLE, str(256 * 2**20))
    loads = []
    monkeypatch.setattr(projection.placement.np, "load", lambda *a, **k: loads.append(a) or 1 / 0)
    with pytest.raises(
        ValueError, match=r"declares 1,073,741,8\d\d bytes of arrays, over the 268,435,456"
    ):
        projection.Placement.read(path)
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(projection.ProjectionError, match="cannot place new images"):
        projection.place(mapped_index, "rgb", mapped_index.paths([0]))
    assert projection.fitted_ids(mapped_index, "rgb") is None
    assert loads == [], "the crafted file reached np.load"
    assert genuine.xy.shape[1] == 2 and token
