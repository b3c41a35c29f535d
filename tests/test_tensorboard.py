"""TensorBoard projector export, checked against a real TensorBoard server (no TensorFlow)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.cli import main
from imrec_widgets.export.tensorboard import (
    MAX_SPRITE_SIDE,
    export_tensorboard,
    sprite_layout,
    tsv_field,
    write_tensor,
)

READY_TIMEOUT_S = 60
ODD_NAMES = ("tab\there.jpg", "line\nbreak.jpg", "plain.jpg")


@pytest.fixture(scope="module")
def index(
    variant_folder: Path, tmp_path_factory: pytest.TempPathFactory, index_of: IndexOf
) -> ImageIndex:
    """The 90 variant photos with every feature, embeddings included: the CNN runs over them
    once a session (test_search indexes a copy in the same state with the same settings)."""
    root = tmp_path_factory.mktemp("variants") / "photos"
    shutil.copytree(variant_folder, root)
    return index_of(root)


@pytest.fixture(scope="module")
def odd_index(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    """Three photos whose names hold a tab and a newline, with an ``rgb`` cluster labelling."""
    folder = tmp_path_factory.mktemp("odd")
    (folder / "odd folder").mkdir()
    photos = sorted(sample_folder.rglob("*.jpg"))[: len(ODD_NAMES)]
    for photo, name in zip(photos, ODD_NAMES, strict=True):
        shutil.copy(photo, folder / "odd folder" / name)
    idx = ImageIndex.open(
        folder, index_dir=tmp_path_factory.mktemp("odd-idx"), features=["rgb", "thumb"]
    )
    idx.update(progress=False, workers=0)
    ids = idx.ids()
    idx.store.ensure("cluster/rgb", (), "int32")
    idx.store.write_rows("cluster/rgb", ids, np.arange(len(ids), dtype=np.int32) - 1)
    return idx


@pytest.fixture(scope="module")
def logdir(
    index: ImageIndex, odd_index: ImageIndex, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    index.export_tensorboard(logs, "embedding", run="embedding")
    index.export_tensorboard(logs, "dhash", run="dhash")
    export_tensorboard(index, logs, "rgb", run="sample", max_points=25, sprite=False)
    odd_index.export_tensorboard(logs, "rgb", run="odd")
    return logs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _poll(check: Callable[[], bool], what: str, log: Path | None = None) -> None:
    """Call ``check()`` until it is true, for at most READY_TIMEOUT_S seconds."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    output = f"; its log:\n{log.read_text()}" if log else ""
    pytest.fail(f"TensorBoard: {what} within {READY_TIMEOUT_S} s{output}")


@pytest.fixture(scope="module")
def tensorboard(logdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real ``tensorboard --logdir`` serving the exported runs."""
    home = tmp_path_factory.mktemp("tensorboard")
    log = home / "tensorboard.log"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # TensorBoard keeps its instance files in the temp folder: give it its own.
    env = {**os.environ, "TMPDIR": str(home)}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        expected = {"embedding", "dhash", "sample", "odd"}
        _poll(
            lambda: set(json.loads(_get(f"{base}/data/plugin/projector/runs"))) == expected,
            f"projector runs {sorted(expected)} not listed",
            log,
        )
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _projector(base: str, route: str, run: str, name: str | None = None) -> bytes:
    query = {"run": run} if name is None else {"run": run, "name": name}
    return _get(f"{base}/data/plugin/projector/{route}?{urllib.parse.urlencode(query)}")


# -- against the real server ----------------------------------------------------------------------
# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_projector_tab_is_enabled_without_tensorflow(tensorboard: str) -> None:
    # The plugin decides `is_active` in a background thread: the first listing may still say no.
    def enabled() -> bool:
        return bool(json.loads(_get(f"{tensorboard}/data/plugins_listing"))["projector"]["enabled"])

    _poll(enabled, "projector plugin not enabled")
    assert importlib.util.find_spec("tensorflow") is None


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_served_embedding_equals_the_index(tensorboard: str, index: ImageIndex) -> None:
    stored = index.features("embedding")
    config = json.loads(_projector(tensorboard, "info", "embedding"))
    (embedding,) = config["embeddings"]
    assert embedding["tensorName"] == "embedding"
    assert embedding["tensorShape"] == [len(index), stored.shape[1]]
    side = index.settings["thumb_size"]
    assert embedding["sprite"]["singleImageDim"] == [side, side]

    served = np.frombuffer(_projector(tensorboard, "tensor", "embedding", "embedding"), dtype="<f4")
    np.testing.assert_array_equal(served.reshape(stored.shape), stored)


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_served_hash_is_unpacked_bits(tensorboard: str, index: ImageIndex) -> None:
    bits = np.unpackbits(index.features("dhash"), axis=1).astype(np.float32)
    served = np.frombuffer(_projector(tensorboard, "tensor", "dhash", "dhash"), dtype="<f4")
    np.testing.assert_array_equal(served.reshape(len(index), 64), bits)
    assert set(np.unique(served).tolist()) == {0.0, 1.0}


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_served_metadata_has_a_header_and_one_row_per_point(
    tensorboard: str, index: ImageIndex
) -> None:
    lines = _projector(tensorboard, "metadata", "embedding", "embedding").decode().split("\n")
    assert lines[-1] == ""
    header, *rows = lines[:-1]
    assert header == "id\tfile\tfolder\tcluster\tstatus"
    assert len(rows) == len(index)
    for row, record in zip(rows, index.records(index.ids()), strict=True):
        folder, _, name = record.path.rpartition("/")
        assert row == f"{record.id}\t{name}\t{folder or '.'}\t\tok"


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_served_sprite_is_the_thumbnail_grid(tensorboard: str, index: ImageIndex) -> None:
    sprite = Image.open(
        io.BytesIO(_projector(tensorboard, "sprite_image", "embedding", "embedding"))
    )
    columns = math.ceil(math.sqrt(len(index)))
    side = index.settings["thumb_size"]
    assert sprite.size == (columns * side, columns * side)
    pixels = np.asarray(sprite.convert("RGB"), dtype=np.int16)
    ids = index.ids()
    for position in (0, columns + 1, len(index) - 1):
        # each stored thumbnail whole, centred on a white square cell
        thumb = index.thumbnail(int(ids[position]))
        expected = Image.new("RGB", (side, side), (255, 255, 255))
        expected.paste(thumb, ((side - thumb.width) // 2, (side - thumb.height) // 2))
        row, column = divmod(position, columns)
        cell = pixels[row * side : (row + 1) * side, column * side : (column + 1) * side]
        assert np.abs(cell - np.asarray(expected, dtype=np.int16)).mean() < 8  # JPEG, quality 90


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_sampled_run_without_sprite(tensorboard: str, index: ImageIndex) -> None:
    (embedding,) = json.loads(_projector(tensorboard, "info", "sample"))["embeddings"]
    assert embedding["tensorShape"] == [25, index.features("rgb").shape[1]]
    assert "sprite" not in embedding
    rows = _projector(tensorboard, "metadata", "sample", "rgb").decode().splitlines()[1:]
    ids = [int(row.split("\t")[0]) for row in rows]
    assert len(set(ids)) == 25 and ids == sorted(ids) and set(ids) <= set(index.ids().tolist())
    served = np.frombuffer(_projector(tensorboard, "tensor", "sample", "rgb"), dtype="<f4")
    np.testing.assert_array_equal(served.reshape(25, -1), index.features("rgb", ids))


# a real TensorBoard server: a process that imports tensorboard (~2-3 s to serve)
@pytest.mark.slow
def test_tabs_and_newlines_in_names_are_escaped(tensorboard: str, odd_index: ImageIndex) -> None:
    text = _projector(tensorboard, "metadata", "odd", "rgb").decode()
    lines = text.split("\n")[:-1]
    assert len(lines) == 1 + len(odd_index)
    assert all(line.count("\t") == 4 for line in lines)
    rows = [line.split("\t") for line in lines[1:]]
    assert sorted(row[1] for row in rows) == sorted(
        name.replace("\t", "\\t").replace("\n", "\\n") for name in ODD_NAMES
    )
    assert {row[2] for row in rows} == {"odd folder"}
    assert [row[3] for row in rows] == ["-1", "0", "1"]


# -- units ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("count", "cell", "columns"),
    [(1, 64, 1), (10, 64, 4), (5000, 64, 71), (20000, 57, 142), (450000, 12, 671)],
)
def test_sprite_layout_fits_the_projector_limit(count: int, cell: int, columns: int) -> None:
    assert sprite_layout(count) == (cell, columns)
    assert columns * columns >= count and columns * cell <= MAX_SPRITE_SIDE


def test_sprite_layout_refuses_what_cannot_fit() -> None:
    with pytest.raises(ValueError, match="max_points"):
        sprite_layout(MAX_SPRITE_SIDE**2 + 1)


def test_tsv_field_escapes_separators() -> None:
    assert tsv_field("a\tb\nc\rd.jpg") == "a\\tb\\nc\\rd.jpg"


def test_tensor_bytes_that_read_as_text_are_written_as_tsv(tmp_path: Path) -> None:
    # TensorBoard tries TSV first; these float32 bytes (all 00/3F) decode as UTF-8 text.
    from tensorboard.plugins.projector.projector_plugin import (
        _read_tensor_binary_file,
        _read_tensor_tsv_file,
    )

    def plugin_reads(path: Path, shape: tuple[int, int]) -> np.ndarray:
        try:
            return _read_tensor_tsv_file(str(path))
        except UnicodeDecodeError:
            return _read_tensor_binary_file(str(path), shape)

    halves = np.full((3, 5), 0.5, dtype=np.float32)
    assert write_tensor(tmp_path, lambda: iter([halves])) == ("tensor.tsv", 5)
    np.testing.assert_array_equal(plugin_reads(tmp_path / "tensor.tsv", (3, 5)), halves)

    values = np.random.default_rng(1).normal(size=(7, 16)).astype(np.float32)
    assert write_tensor(tmp_path, lambda: iter([values[:4], values[4:]])) == ("tensor.bytes", 16)
    assert not (tmp_path / "tensor.tsv").exists()
    np.testing.assert_array_equal(plugin_reads(tmp_path / "tensor.bytes", (7, 16)), values)


def test_event_file_is_read_by_tensorboard(logdir: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (events,) = (logdir / "embedding").glob("events.out.tfevents.*")
    (event,) = EventFileLoader(str(events)).Load()
    assert event.file_version == "brain.Event:2"


def test_export_again_replaces_the_run(index: ImageIndex, tmp_path: Path) -> None:
    first = export_tensorboard(index, tmp_path, "rgb", max_points=5)
    assert first == tmp_path.resolve() / f"{index.root.name}-rgb"
    assert (first / "sprite.jpg").exists()
    again = export_tensorboard(index, tmp_path, "rgb", ids=index.ids()[:3], sprite=False)
    assert again == first and not (first / "sprite.jpg").exists()
    assert len(list(first.glob("events.out.tfevents.*"))) == 1
    assert "tensor_shape: 3\n" in (first / "projector_config.pbtxt").read_text()
    assert not list(first.glob("*.partial"))


def test_export_errors(index: ImageIndex, sample_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"cannot export feature 'thumb'.*embedding, rgb, ahash, dhash"
    ):
        index.export_tensorboard(tmp_path, "thumb")
    with pytest.raises(ValueError, match="not a searchable image"):
        index.export_tensorboard(tmp_path, ids=[10_000])
    with pytest.raises(ValueError, match="plain folder name"):
        index.export_tensorboard(tmp_path, run="../elsewhere")
    hashes_only = ImageIndex.open(sample_folder, index_dir=tmp_path / "idx", features=["ahash"])
    hashes_only.update(progress=False, workers=0)
    with pytest.raises(ValueError, match="no thumbnails"):
        hashes_only.export_tensorboard(tmp_path / "logs", "ahash", sprite=True)
    run = hashes_only.export_tensorboard(tmp_path / "logs", "ahash")
    assert "sprite" not in (run / "projector_config.pbtxt").read_text()


# -- command line ------------------------------------------------------------------------------------
def test_cli_export_tensorboard(
    index: ImageIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "logs"
    argv = [
        "export",
        "tensorboard",
        str(index.root),
        "--index-dir",
        str(index.index_dir),
        "--feature",
        "dhash",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    run = out.resolve() / f"{index.root.name}-dhash"
    assert capsys.readouterr().out.splitlines() == [
        f"wrote TensorBoard projector run {run}",
        f"view it with: tensorboard --logdir {out.resolve()}  (then open the PROJECTOR tab)",
    ]
    assert (run / "tensor.bytes").stat().st_size == len(index) * 64 * 4
    assert len((run / "metadata.tsv").read_text().splitlines()) == len(index) + 1


def test_cli_export_unknown_feature_is_one_line(
    index: ImageIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "export",
        "tensorboard",
        str(index.root),
        "--index-dir",
        str(index.index_dir),
        "--feature",
        "colour",
        "--out",
        str(tmp_path / "logs"),
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "imrec export: error: cannot export feature 'colour'; this index has embedding, rgb, "
        "ahash, dhash (thumbnails go into the sprite)"
    ]
    assert not (tmp_path / "logs").exists()
