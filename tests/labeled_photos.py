"""A labelled folder of real photos: each photo and its edited copies form one label folder."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageEnhance

from imrec_widgets.samples import sample_photos

# Twelve distinct photos.
PHOTOS = (
    "people/astronaut",
    "people/camera",
    "animals/chelsea",
    "objects/coffee",
    "objects/rocket",
    "objects/coins",
    "space/hubble_deep_field",
    "science/immunohistochemistry",
    "science/retina",
    "textures/brick",
    "places/china",
    "nature/flower",
)
COPIES = ("original", "crop", "small", "recompressed", "warm", "dark")
"""The files of each label folder; ``small`` and ``recompressed`` are near-identical to ``original``."""


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def copies(image: Image.Image) -> Iterator[tuple[str, Image.Image]]:
    """The photo and five edited copies: crop, half-size, JPEG q=30, colour shift, darker."""
    width, height = image.size
    yield "original", image
    yield "crop", image.crop((width // 8, height // 8, width - width // 8, height - height // 8))
    yield "small", image.resize((width // 2, height // 2), Image.Resampling.LANCZOS)
    yield "recompressed", _jpeg(image, 30)
    red, green, blue = ImageEnhance.Color(image).enhance(1.5).split()
    yield (
        "warm",
        Image.merge(
            "RGB",
            (
                red.point(lambda v: min(255, int(v * 1.15))),
                green,
                blue.point(lambda v: int(v * 0.8)),
            ),
        ),
    )
    yield "dark", ImageEnhance.Brightness(image).enhance(0.7)


def write_labeled_photos(folder: Path) -> dict[str, list[Path]]:
    """Write ``folder/<label>/<copy>.jpg`` for the twelve photos; returns the paths by label."""
    wanted = dict.fromkeys(PHOTOS)
    written: dict[str, list[Path]] = {}
    for name, image in sample_photos():
        if name not in wanted:
            continue
        label = name.rsplit("/", 1)[1]
        target = folder / label
        target.mkdir(parents=True, exist_ok=True)
        written[label] = []
        for copy, edited in copies(image):
            path = target / f"{copy}.jpg"
            edited.save(path, quality=92)
            written[label].append(path)
    assert len(written) == len(PHOTOS), sorted(written)
    return written
