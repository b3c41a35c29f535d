from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from imrec_widgets.errors import ImageDecodeError
from imrec_widgets.imageio import decode, has_image_suffix, load_rgb, sniff_image

ASTRONAUT = Image.fromarray(data.astronaut())


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_every_mode_becomes_rgb(tmp_path: Path) -> None:
    gray = ASTRONAUT.convert("L")
    cases = {
        "l.png": gray,
        "one.png": gray.convert("1"),
        "la.png": gray.convert("LA"),
        "rgba.png": ASTRONAUT.convert("RGBA"),
        "palette.png": ASTRONAUT.convert("P"),
        "cmyk.jpg": ASTRONAUT.convert("CMYK"),
        "gray16.png": Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257),
    }
    for name, image in cases.items():
        rgb = load_rgb(save(image, tmp_path / name))
        assert rgb.mode == "RGB", name
        assert rgb.size == ASTRONAUT.size, name
        assert np.asarray(rgb).std() > 10, f"{name} lost its content"


def test_16bit_png_keeps_its_range(tmp_path: Path) -> None:
    gray = np.asarray(ASTRONAUT.convert("L"), dtype=np.uint16)
    path = save(Image.fromarray(gray * 257), tmp_path / "deep.png")
    decoded = np.asarray(load_rgb(path))[:, :, 0].astype(int)
    assert np.abs(decoded - gray).max() <= 1


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png")
    pixels = np.asarray(load_rgb(path))
    assert tuple(pixels[5, 5]) == (255, 0, 0)
    assert tuple(pixels[5, 35]) == (255, 255, 255)

    palette = Image.fromarray(rgba, "RGBA").convert("P")
    palette.info["transparency"] = palette.getpixel((35, 5))
    path = save(palette, tmp_path / "palette_alpha.png", transparency=palette.getpixel((35, 5)))
    pixels = np.asarray(load_rgb(path))
    assert tuple(pixels[5, 35]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise on display
    path = save(Image.fromarray(data.coffee()), tmp_path / "rotated.jpg", exif=exif)
    decoded = decode(path)
    assert decoded.image.size == (400, 600)
    assert (decoded.width, decoded.height) == (400, 600)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    pixels = np.asarray(load_rgb(path))
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def test_large_jpeg_is_draft_decoded(tmp_path: Path) -> None:
    big = ASTRONAUT.resize((6000, 4000))  # 24 megapixels
    path = save(big, tmp_path / "big.jpg", quality=90)
    reduced = decode(path, min_side=256)
    assert min(reduced.image.size) >= 256
    # the decoder's own scaling (draft): 1/8 of the pixels were decoded, not all then resized
    assert reduced.image.size[0] <= 6000 // 8 + 1, "not decoded at 1/8 scale"
    assert (reduced.width, reduced.height) == (6000, 4000)
    assert decode(path).image.size == (6000, 4000)


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # A valid PNG header claiming 100000 x 100000 pixels: nothing is decoded.
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_rgb(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jpg", b""),
        ("text.png", b"this is not an image at all\n" * 20),
        ("pdf.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    ],
)
def test_non_images_raise_decode_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError):
        load_rgb(path)
    with pytest.raises(ImageDecodeError):
        load_rgb(content)


def test_truncated_jpeg_raises(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    ASTRONAUT.save(buffer, format="JPEG", quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError):
        load_rgb(path)


def test_sources_bytes_arrays_and_missing_files(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    ASTRONAUT.save(buffer, format="PNG")
    assert load_rgb(buffer.getvalue()).size == (512, 512)
    assert load_rgb(io.BytesIO(buffer.getvalue())).size == (512, 512)
    assert load_rgb(data.camera()).mode == "RGB"
    assert load_rgb(np.random.default_rng(0).random((8, 9, 3))).size == (9, 8)
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.jpg")
    with pytest.raises(TypeError):
        load_rgb(12.5)


def test_suffix_and_content_sniffing(tmp_path: Path) -> None:
    assert has_image_suffix("a/B.JPG") and has_image_suffix("x.TiFF") and has_image_suffix("y.webp")
    assert not has_image_suffix("notes.txt")
    no_suffix = save(ASTRONAUT, tmp_path / "download", format="JPEG")
    assert sniff_image(no_suffix)
    (tmp_path / "readme").write_text("hello")
    assert not sniff_image(tmp_path / "readme")
