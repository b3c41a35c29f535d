"""Real sample photographs shipped by installed packages (scikit-image, scikit-learn), as files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# scikit-image's bundled photographs (no download needed), grouped into folders by subject.
SKIMAGE_PHOTOS = {
    "people/astronaut": "astronaut",
    "people/camera": "camera",
    "animals/chelsea": "chelsea",
    "animals/cat": "cat",
    "objects/coffee": "coffee",
    "objects/rocket": "rocket",
    "objects/coins": "coins",
    "space/hubble_deep_field": "hubble_deep_field",
    "space/moon": "moon",
    "science/immunohistochemistry": "immunohistochemistry",
    "science/retina": "retina",
    "textures/grass": "grass",
    "textures/gravel": "gravel",
    "textures/brick": "brick",
    "graphics/colorwheel": "colorwheel",
    "graphics/page": "page",
}
SKLEARN_PHOTOS = {"places/china": "china.jpg", "nature/flower": "flower.jpg"}


def sample_photos() -> Iterator[tuple[str, Image.Image]]:
    """``(name, RGB image)`` for every bundled real photograph that is available."""
    from skimage import data

    for name, attribute in SKIMAGE_PHOTOS.items():
        array = getattr(data, attribute)()
        yield name, Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        return
    for name, filename in SKLEARN_PHOTOS.items():
        yield name, Image.fromarray(load_sample_image(filename)).convert("RGB")


def variants(image: Image.Image) -> Iterator[tuple[str, Image.Image]]:
    """A few edited copies of a photo: the near-duplicates a real collection is full of."""
    width, height = image.size
    yield "crop", image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
    yield "small", image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.LANCZOS)
    yield "mirror", ImageOps.mirror(image)
    yield "warm", ImageEnhance.Color(image).enhance(1.6)


def write_sample_photos(folder: str | os.PathLike[str], *, with_variants: bool = False) -> list[Path]:
    """Write the sample photos as JPEG files under ``folder`` (sub-folders by subject).

    With ``with_variants``, each photo also gets cropped, rescaled, mirrored and
    colour-shifted copies beside it. Returns the paths written.
    """
    root = Path(folder).expanduser()
    written = []
    for name, image in sample_photos():
        target = root / f"{name}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=92)
        written.append(target)
        if with_variants:
            for suffix, copy in variants(image):
                path = root / f"{name}_{suffix}.jpg"
                copy.save(path, quality=88)
                written.append(path)
    return written
