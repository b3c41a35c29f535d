"""Safe image decoding: any file or buffer a user has -> one RGB ``PIL.Image``.

EXIF orientation applied; every mode (1, L, LA, P, RGBA, CMYK, I;16, I, F, ...) becomes RGB with
alpha composited on white; animated files give their first frame; JPEGs are draft-decoded at a
reduced scale when only a small image is needed; decompression bombs are refused.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError, NotFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File name suffixes (compared lower-case) that are indexed as images."""

_ORIENTATION = 0x0112

DEFAULT_MAX_PIXELS = 120_000_000
"""Images with more pixels than this are refused (errors in the index, naming this limit).

Decoding holds the full image once in its own mode (up to 4 bytes a pixel) before it is
reduced, so this bounds one decode's peak memory to about 0.5-1 GB (see
``benchmarks/bench_decode_memory.py``). 120 MP admits every camera up to medium format (102 MP).
Raise it with the ``IMREC_MAX_PIXELS`` environment variable (read at each decode, so worker
processes see it too) or ``decode(max_pixels=...)``; Pillow's own bomb check (about 179 MP,
``PIL.Image.MAX_IMAGE_PIXELS``) still applies above that.
"""

MAX_PIXELS_VARIABLE = "IMREC_MAX_PIXELS"
"""Environment variable that overrides ``DEFAULT_MAX_PIXELS``."""

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Leading bytes of the formats above, for files that carry no image suffix.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (8, b"WEBP"),
)


def has_image_suffix(name: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of ``IMAGE_EXTENSIONS`` (any case)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def sniff_image(path: str | os.PathLike[str]) -> bool:
    """True when the file's first bytes match a supported image format.

    Only a regular file is read, opened without blocking (a pipe or device put in its place
    since it was listed is never waited on).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 16)
    except OSError:
        return False
    finally:
        os.close(fd)
    return any(head[offset : offset + len(sig)] == sig for offset, sig in _SIGNATURES)


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_uint8(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("empty data (0 bytes) is not an image")
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise NotFoundError(f"no such image file: {path}")
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        return Image.open(path)
    if hasattr(source, "read"):
        return Image.open(source)
    raise TypeError(
        f"cannot read an image from {type(source).__name__}; "
        "pass a path, bytes, a file object, a PIL image or a numpy array"
    )


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageDecodeError(f"an image array must be HxW, HxWx3 or HxWx4, not {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    values = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating):
        values = np.nan_to_num(values)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
    elif values.size and values.max() > 255:
        values = values / (65535.0 if values.max() <= 65535 else values.max()) * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    width, height = size
    scale = min_side / max(1, min(width, height))
    return (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale))))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to RGB, compositing transparency onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _array_to_uint8(np.asarray(image))
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def max_pixels_limit() -> int:
    """The pixel cap in force: ``IMREC_MAX_PIXELS`` when set, else ``DEFAULT_MAX_PIXELS``
    (a ``SettingError`` naming the variable when it is not a whole number)."""
    from .settings import env_count

    return env_count(MAX_PIXELS_VARIABLE, DEFAULT_MAX_PIXELS, "pixels")


_BAND_PIXELS = 4_000_000
"""Source pixels reduced at a time (one band of rows) by ``_reduce_early``."""


def _reduce_early(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` shrunk by a whole factor, its shorter side kept >= 2 * ``min_side``.

    Done right after loading, one band of rows at a time (mode conversion included), so that
    no second full-size copy exists: Pillow's own ``reduce`` of an RGBA image first converts
    all of it to premultiplied alpha.
    """
    factor = min(image.size) // (2 * min_side)
    if factor < 2:
        return image
    width, height = image.size
    rows = factor * max(1, _BAND_PIXELS // (width * factor))
    reduced: Image.Image | None = None
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        if band.mode == "P":  # palette indices cannot be averaged: colours first
            band = band.convert("RGBA" if "transparency" in image.info else "RGB")
        elif band.mode == "PA":
            band = band.convert("RGBA")
        elif band.mode == "1":
            band = band.convert("L")
        elif band.mode.startswith("I;16"):
            band = band.convert("I")
        band = band.reduce(factor)
        if reduced is None:
            reduced = Image.new(band.mode, (-(-width // factor), -(-height // factor)))
        reduced.paste(band, (0, top // factor))
    assert reduced is not None
    return reduced


class DecodedImage(NamedTuple):
    """An RGB image plus what the source said about itself."""

    image: Image.Image
    format: str | None
    width: int
    height: int


def decode(
    source: Any,
    *,
    min_side: int | None = None,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode ``source`` (path, bytes, file object, PIL image or array) into an RGB image.

    With ``min_side``, the image may come back reduced, its shorter side still at least
    ``min_side`` pixels: JPEGs are draft-decoded at a reduced scale, other formats are reduced
    by a whole factor right after loading. ``width``/``height`` are the full size after EXIF
    orientation. ``max_pixels`` (default ``max_pixels_limit()``) refuses larger images. Raises
    ``ImageDecodeError`` for anything that is not a readable image or is over the cap,
    ``FileNotFoundError`` for a missing path.
    """
    if max_pixels is None:
        max_pixels = max_pixels_limit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} pixels per image that bounds decoding memory; to index it, "
                    f"raise the limit with the {MAX_PIXELS_VARIABLE} environment variable "
                    "(e.g. IMREC_MAX_PIXELS=200000000, about 1 GB more memory per 250 MP)"
                )
            source_format = image.format
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if min_side and image.format == "JPEG" and min(width, height) > 2 * min_side:
                image.draft("RGB", _draft_size((width, height), min_side))
            image.load()
            orientation = image.getexif().get(_ORIENTATION, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if min_side:
                image = _reduce_early(image, min_side)
            if orientation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[orientation])
            return DecodedImage(to_rgb(image), source_format, width, height)
    except (ImageDecodeError, FileNotFoundError, TypeError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc


THUMBNAIL_SIDE = 256
"""Longer side, in pixels, of the thumbnails made to show an image (a query, or an indexed image
when the index stores none): crisp in the widgets' ~120 px cells on a 2x screen, as the stored
ones (``DEFAULT_SETTINGS["thumb_size"]``)."""


def encode_thumbnail(
    image: Image.Image | np.ndarray, side: int | None = THUMBNAIL_SIDE, format: str = "JPEG"
) -> bytes:
    """``image`` as a small JPEG (or PNG) file, its longer side at most ``side`` pixels (the
    image's own size when None)."""
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image.copy()
    if side is not None:
        picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format=format, quality=85)
    return buffer.getvalue()


def load_rgb(
    source: Any, *, min_side: int | None = None, max_pixels: int | None = None
) -> Image.Image:
    """The RGB image of ``decode(source, ...)``."""
    return decode(source, min_side=min_side, max_pixels=max_pixels).image
