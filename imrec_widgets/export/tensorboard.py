"""Export one feature of an index as a TensorBoard Embedding Projector run, without TensorFlow.

A run is a folder that TensorBoard lists as a run (it holds a tiny event file) with:

- ``tensor.bytes``: the vectors as raw little-endian float32, one row per image. Hash features
  are unpacked to one 0.0/1.0 value per bit; embeddings and colour histograms go as stored.
  TensorBoard first tries to read a tensor file as TSV text and only falls back to raw bytes on a
  UTF-8 decoding error, so the rare tensor whose bytes read as text (say, every value 0.0 or 0.5)
  is written as ``tensor.tsv`` instead.
- ``metadata.tsv``: a header row, then ``id, file, folder, cluster, status`` for each row;
  ``cluster`` comes from a stored ``cluster/<feature>`` labelling (-1 = noise), else stays empty.
  Tabs and line breaks in file names appear as ``\\t``, ``\\n``, ``\\r``.
- ``sprite.jpg``: the stored thumbnails on a square grid, shrunk so the image fits the
  projector's 8192 x 8192 pixel limit (see ``sprite_layout``).
- ``projector_config.pbtxt``: the text-format ``ProjectorConfig`` tying these together, with
  paths relative to the run folder, so the folder can be moved or copied as a whole.

TensorBoard reads a run's files once: restart it to see a run exported again.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import math
import os
import shlex
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import numpy as np

from imrec_widgets.derived import atomic_file, atomic_write
from imrec_widgets.errors import UsageError

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

MAX_SPRITE_SIDE = 8192
"""The projector refuses sprite images wider or taller than this (``MAX_SPRITE_IMAGE_SIZE_PX``)."""

METADATA_COLUMNS = ("id", "file", "folder", "cluster", "status")
CONFIG_NAME = "projector_config.pbtxt"

_ROWS_PER_BLOCK = 4096
_SAMPLE_SEED = 0


def export_tensorboard(
    index: IndexView,
    logdir: str | os.PathLike[str],
    feature: str = "embedding",
    *,
    run: str | None = None,
    ids: Sequence[int] | np.ndarray | None = None,
    sprite: bool | None = None,
    max_points: int | None = None,
) -> Path:
    """Write ``feature`` of ``index`` as a projector run ``logdir/run``; return that folder.

    View it with ``tensorboard --logdir <logdir>`` (see ``tensorboard_command``), tab PROJECTOR.
    ``run`` defaults to ``<image folder name>-<feature>``, so several folders and features can
    share one ``logdir``. ``ids`` picks the images (default: every searchable one), in that
    order; ``max_points`` keeps a fixed random sample of at most that many of them.
    ``sprite``: ``None`` adds the thumbnail sprite when the index stores thumbnails, ``True``
    requires it, ``False`` leaves it out. TensorFlow is not needed, neither here nor to view.
    """
    from imrec_widgets.features import feature_class, mappable_features

    exportable = [name for name in index.settings["features"] if name in mappable_features()]
    if feature not in exportable:
        raise UsageError(
            f"cannot export feature {feature!r}; this index has {', '.join(exportable) or 'none'} "
            "(thumbnails go into the sprite)"
        )
    has_thumbs = "thumb" in index.settings["features"]
    if sprite and not has_thumbs:
        raise UsageError(
            "this index stores no thumbnails for the sprite; add them with "
            "`imrec index --features ...,thumb` or export with sprite=False"
        )
    chosen = _chosen_ids(index, ids, max_points)
    run_dir = Path(logdir).expanduser().resolve() / _run_name(run, index.root.name, feature)
    run_dir.mkdir(parents=True, exist_ok=True)

    vectors = feature_class(feature).vectors

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, chosen.size, _ROWS_PER_BLOCK):
            yield vectors(index.features(feature, chosen[start : start + _ROWS_PER_BLOCK]))

    tensor_file, dim = write_tensor(run_dir, blocks)
    write_metadata(run_dir / "metadata.tsv", index, chosen, feature)

    sprite_entry = None
    if sprite is not False and has_thumbs:
        side = _write_sprite(run_dir / "sprite.jpg", index, chosen)
        sprite_entry = ("sprite.jpg", side)
    else:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "sprite.jpg").unlink()

    config = projector_config(
        feature, tensor_file, (chosen.size, dim), "metadata.tsv", sprite_entry
    )
    atomic_write(run_dir / CONFIG_NAME, config.encode())
    if not any(run_dir.glob("events.out.tfevents.*")):
        atomic_write(run_dir / f"events.out.tfevents.{int(time.time())}.imrec", _event_file())
    return run_dir


def tensorboard_command(logdir: str | os.PathLike[str]) -> str:
    """The shell command that shows the runs under ``logdir`` (tab PROJECTOR)."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"


def sprite_layout(
    count: int, thumb_size: int = 64, max_side: int = MAX_SPRITE_SIDE
) -> tuple[int, int]:
    """``(cell side, columns)`` of a square sprite grid for ``count`` thumbnails.

    ``columns = ceil(sqrt(count))``; the cell is the stored thumbnail size, or less so that
    ``columns * cell <= max_side``.
    """
    if count < 1:
        raise ValueError("a sprite needs at least one image")
    columns = math.isqrt(count - 1) + 1
    cell = min(thumb_size, max_side // columns)
    if cell < 1:
        raise UsageError(
            f"{count} images do not fit one {max_side} px sprite; pass max_points= or sprite=False"
        )
    return cell, columns


def projector_config(
    tensor_name: str,
    tensor_path: str,
    shape: tuple[int, int],
    metadata_path: str,
    sprite: tuple[str, int] | None = None,
) -> str:
    """A one-tensor ``ProjectorConfig`` in protobuf text format; ``sprite`` is (path, cell side)."""
    lines = [
        "embeddings {",
        f"  tensor_name: {_quoted(tensor_name)}",
        f"  tensor_path: {_quoted(tensor_path)}",
        f"  tensor_shape: {int(shape[0])}",
        f"  tensor_shape: {int(shape[1])}",
        f"  metadata_path: {_quoted(metadata_path)}",
    ]
    if sprite is not None:
        image_path, side = sprite
        lines += [
            "  sprite {",
            f"    image_path: {_quoted(image_path)}",
            f"    single_image_dim: {int(side)}",
            f"    single_image_dim: {int(side)}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_tensor(run_dir: Path, blocks: Callable[[], Iterator[np.ndarray]]) -> tuple[str, int]:
    """Write the rows ``blocks()`` yields as ``tensor.bytes`` (or ``tensor.tsv``); return (file name, dim).

    ``blocks`` is called again for the TSV form when the raw bytes would read as text.
    """
    sniffer = _TextSniffer()
    dim = 0
    binary = run_dir / "tensor.bytes"
    with atomic_file(binary) as out:
        for block in blocks():
            data = np.ascontiguousarray(block, dtype="<f4")
            dim = data.shape[1]
            raw = data.tobytes()
            sniffer.feed(raw)
            out.write(raw)
    if not sniffer.reads_as_text():
        _unlink(run_dir / "tensor.tsv")
        return binary.name, dim
    text = run_dir / "tensor.tsv"
    with atomic_file(text) as out:
        for block in blocks():
            np.savetxt(out, np.asarray(block, dtype=np.float32), fmt="%.9g", delimiter="\t")
    _unlink(binary)
    return text.name, dim


def write_metadata(path: Path, index: IndexView, ids: np.ndarray, feature: str) -> None:
    """``metadata.tsv`` for ``ids``: header row, then one escaped row per image."""
    cluster_array = f"cluster/{feature}"
    has_clusters = cluster_array in index.store.names()
    with atomic_file(path) as out:
        out.write(("\t".join(METADATA_COLUMNS) + "\n").encode())
        for start in range(0, ids.size, _ROWS_PER_BLOCK):
            block = ids[start : start + _ROWS_PER_BLOCK]
            clusters = index.store.read_rows(cluster_array, block) if has_clusters else None
            lines = []
            for row, record in enumerate(index.records(block)):
                relative = PurePath(record.path)
                folder = relative.parent.as_posix()
                cluster = "" if clusters is None else str(int(clusters[row]))
                fields = (str(record.id), relative.name, folder, cluster, record.status)
                lines.append("\t".join(tsv_field(value) for value in fields) + "\n")
            out.write("".join(lines).encode("utf-8", errors="backslashreplace"))


def tsv_field(value: str) -> str:
    """``value`` safe for one TSV cell: tabs and line breaks shown as ``\\t``, ``\\n``, ``\\r``."""
    return value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# -- helpers -----------------------------------------------------------------------------------
def _chosen_ids(
    index: IndexView, ids: Sequence[int] | np.ndarray | None, max_points: int | None
) -> np.ndarray:
    searchable = index.ids()
    if ids is None:
        chosen = searchable
    else:
        chosen = np.asarray(ids, dtype=np.int64).ravel()
        unknown = np.setdiff1d(chosen, searchable)
        if unknown.size:
            raise UsageError(f"id {int(unknown[0])} is not a searchable image of this index")
    if chosen.size == 0:
        raise UsageError(
            f"nothing to export: no searchable images; run `imrec index {index.root}` first"
        )
    if max_points is not None:
        if max_points < 1:
            raise UsageError(f"max_points must be at least 1, not {max_points}")
        if chosen.size > max_points:
            keep = np.random.default_rng(_SAMPLE_SEED).choice(
                chosen.size, max_points, replace=False
            )
            chosen = chosen[np.sort(keep)]
    return chosen


def _run_name(run: str | None, folder_name: str, feature: str) -> str:
    name = run if run is not None else f"{folder_name or 'images'}-{feature}"
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"run name {name!r} must be a plain folder name (no slashes)")
    return name


def _write_sprite(path: Path, index: IndexView, ids: np.ndarray) -> int:
    """Paste the thumbnails of ``ids`` on a square grid, row by row; return the cell side."""
    from PIL import Image

    from imrec_widgets.features.thumbnails import PAD_COLOR, row_image

    cell, columns = sprite_layout(ids.size, int(index.settings["thumb_size"]))
    sheet = np.zeros((columns * cell, columns * cell, 3), dtype=np.uint8)
    for start in range(0, ids.size, _ROWS_PER_BLOCK):
        block = ids[start : start + _ROWS_PER_BLOCK]
        thumbs = index.features("thumb", block)
        for offset, (stored, record) in enumerate(zip(thumbs, index.records(block), strict=True)):
            # Each thumbnail whole, centred in its square cell (the projector's sprites are square).
            picture = row_image(stored, record.width, record.height)
            picture.thumbnail((cell, cell), Image.Resampling.BOX)
            square = Image.new("RGB", (cell, cell), PAD_COLOR)
            square.paste(picture, ((cell - picture.width) // 2, (cell - picture.height) // 2))
            row, column = divmod(start + offset, columns)
            sheet[row * cell : (row + 1) * cell, column * cell : (column + 1) * cell] = np.asarray(
                square
            )
    with atomic_file(path) as out:
        # 4:4:4 so colours do not bleed between neighbouring thumbnails.
        Image.fromarray(sheet).save(out, format="JPEG", quality=90, subsampling=0)
    return cell


class _TextSniffer:
    """Whether TensorBoard would take raw tensor bytes for TSV text.

    The projector opens a tensor file as UTF-8 text and parses it as TSV, falling back to raw
    float32 only on a decoding error; bytes that decode up to the end of their first line would
    be parsed as numbers and fail. Fed the bytes in order, this answers conservatively.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._verdict: bool | None = None

    def feed(self, data: bytes) -> None:
        if self._verdict is not None:
            return
        breaks = [found for found in (data.find(b"\n"), data.find(b"\r")) if found >= 0]
        line_end = min(breaks) if breaks else -1
        try:
            self._decoder.decode(data if line_end < 0 else data[:line_end])
        except UnicodeDecodeError:
            self._verdict = False
            return
        if line_end >= 0:
            self._verdict = True

    def reads_as_text(self) -> bool:
        if self._verdict is None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                return False
            return True
        return self._verdict


def _event_file() -> bytes:
    """One ``Event{wall_time, file_version}`` record: what makes TensorBoard list a folder as a run."""
    version = b"brain.Event:2"
    event = b"\x09" + struct.pack("<d", time.time()) + b"\x1a" + bytes([len(version)]) + version
    header = struct.pack("<Q", len(event))
    return (
        header
        + struct.pack("<I", _masked_crc32c(header))
        + event
        + struct.pack("<I", _masked_crc32c(event))
    )


@functools.cache
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _masked_crc32c(data: bytes) -> int:
    """CRC-32C as TFRecord files store it (rotated and offset)."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
