"""Thumbnails for galleries, results and sprites: small JPEG files, aspect kept, no padding.

Each stored row is a fixed-width byte row: an 8-byte header (width and height as uint16, the
JPEG's length as uint32, little-endian) then the JPEG file, then zeros, which the store's zstd
squeezes away, so a row costs about its JPEG on disk. Indexes made before this layout store
``size`` x ``size`` RGB pixels, the image centred on white; they are read as they are (the white
margins cut off) until ``rebuild=["thumb"]`` rewrites them (``THUMB_FORMATS``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from imrec_widgets.errors import UsageError

from .base import FeatureBase

PAD_COLOR = (255, 255, 255)
"""Margin colour of the old, square ``pixels`` thumbnails."""

THUMB_FORMATS = ("jpeg", "pixels")
"""``jpeg``: JPEG bytes, aspect kept (new indexes); ``pixels``: the old padded RGB squares."""

HEADER_BYTES = 8
JPEG_QUALITIES = (80, 70, 60, 50, 40)
"""Tried in turn until the JPEG fits its row (busy photos at 256 px are ~28 KB at quality 80)."""


def row_bytes(size: int) -> int:
    """Width of a stored row for thumbnails whose longer side is ``size``: room for a quality-80
    JPEG of a detailed photo (measured: at most ~0.4 bytes per pixel of a square)."""
    return HEADER_BYTES + max(4096, size * size // 2)


class ThumbnailFeature(FeatureBase):
    """A JPEG of each image, its longer side ``size`` pixels (smaller images kept as they are).

    ``format="pixels"`` keeps writing the old layout (``size`` x ``size`` x 3, centred on white)
    into an index that has it, so one index never mixes the two.
    """

    name = "thumb"
    settings: ClassVar[Mapping[str, Any]] = {"thumb_size": 256, "thumb_format": "jpeg"}
    dtype = np.dtype("uint8")
    chunk_rows = 64
    """Rows per stored chunk: a gallery page reads a few dozen scattered rows, so chunks are small."""

    def __init__(self, size: int = 256, format: str = "jpeg") -> None:
        if not 8 <= int(size) <= 512:
            raise UsageError(f"thumbnail size must be between 8 and 512, not {size}")
        if format not in THUMB_FORMATS:
            raise UsageError(
                f"thumbnail format must be one of {', '.join(THUMB_FORMATS)}, not {format!r}"
            )
        self.size = int(size)
        self.format = format

    @property
    def shape(self) -> tuple[int, ...]:
        if self.format == "pixels":
            return (self.size, self.size, 3)
        return (row_bytes(self.size),)

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "format": self.format}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ThumbnailFeature:
        # an index from before the thumb_format setting holds the padded squares
        return cls(size=settings["thumb_size"], format=settings.get("thumb_format") or "pixels")

    def extract_one(self, image: Image.Image) -> np.ndarray:
        small = image.convert("RGB")
        small.thumbnail((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if self.format == "pixels":
            canvas = Image.new("RGB", (self.size, self.size), PAD_COLOR)
            canvas.paste(small, ((self.size - small.width) // 2, (self.size - small.height) // 2))
            return np.asarray(canvas, dtype=np.uint8)
        return pack_jpeg(small, self.shape[0])

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.extract_one(image) for image in images])


def pack_jpeg(image: Image.Image, width: int) -> np.ndarray:
    """``image`` as one stored row of ``width`` bytes: header, JPEG, zeros.

    The quality steps down until the file fits; should even the lowest not fit, the picture is
    halved until it does.
    """
    while True:
        for quality in JPEG_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            data = buffer.getvalue()
            if len(data) <= width - HEADER_BYTES:
                row = np.zeros(width, dtype=np.uint8)
                header = np.array([image.width, image.height], "<u2").tobytes()
                header += np.array([len(data)], "<u4").tobytes()
                row[:HEADER_BYTES] = np.frombuffer(header, np.uint8)
                row[HEADER_BYTES : HEADER_BYTES + len(data)] = np.frombuffer(data, np.uint8)
                return row
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))


def row_size(row: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of the thumbnail in a stored JPEG row; (0, 0) for an empty row."""
    width, height = np.frombuffer(row[:4].tobytes(), "<u2").tolist()
    return int(width), int(height)


def row_jpeg(row: np.ndarray) -> bytes:
    """The JPEG file in a stored row; ``b""`` for a row never written."""
    length = int(np.frombuffer(row[4:HEADER_BYTES].tobytes(), "<u4")[0])
    if length == 0 or length > row.size - HEADER_BYTES:
        return b""
    return row[HEADER_BYTES : HEADER_BYTES + length].tobytes()


def is_jpeg_rows(rows: np.ndarray) -> bool:
    """Whether stored thumbnail rows are JPEG rows (1-D), not the old pixel squares."""
    return rows.ndim == 2


def unpadded(pixels: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """An old square thumbnail without its white margins, for an image ``width`` x ``height``.

    The box ``extract_one`` pasted the picture in, from the image's aspect (PIL's thumbnail
    rounding); the square as it is when the size is unknown.
    """
    side = pixels.shape[0]
    if not width or not height:
        return pixels
    inner_w, inner_h = fitted_size(width, height, side)
    left, top = (side - inner_w) // 2, (side - inner_h) // 2
    return pixels[top : top + inner_h, left : left + inner_w]


def fitted_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size ``PIL.Image.thumbnail((side, side))`` gives an image ``width`` x ``height``."""
    if width <= side and height <= side:
        return width, height
    aspect = width / height

    def nearest(number: float, error: Any) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if aspect <= 1:
        return nearest(side * aspect, lambda n: abs(aspect - n / side)), side
    return side, nearest(side / aspect, lambda n: 0 if n == 0 else abs(aspect - side / n))


def row_image(row: np.ndarray, width: int | None = None, height: int | None = None) -> Image.Image:
    """A stored row (either layout) as a ``PIL.Image``; old ones without margins when the
    image's ``width`` and ``height`` are given."""
    if row.ndim == 1:
        data = row_jpeg(row)
        if not data:
            return Image.new("RGB", (1, 1), PAD_COLOR)
        with Image.open(io.BytesIO(data)) as image:
            converted: Image.Image = image.convert("RGB")
            return converted
    return Image.fromarray(np.ascontiguousarray(unpadded(row, width, height)))
