"""Real sample photographs shipped by installed packages (scikit-image, scikit-learn), as files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# scikit-image's bundled photographs (no download needed), grouped into folders by subject.
# Its `cat` is the very same photo as `chelsea`, so it is left out.
SKIMAGE_PHOTOS = {
    "people/astronaut": "astronaut",
    "people/camera": "camera",
    "animals/chelsea": "chelsea",
    "objects/motorcycle": "stereo_motorcycle",
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


def _photo_loaders() -> Iterator[tuple[str, Callable[[], Image.Image]]]:
    """``(name, load)`` for every bundled real photograph that is available; nothing decoded yet."""
    from skimage import data

    def skimage_photo(attribute: str) -> Image.Image:
        array = getattr(data, attribute)()
        if isinstance(array, tuple):  # stereo_motorcycle: (left, right, disparity)
            array = array[0]
        return Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")

    for name, attribute in SKIMAGE_PHOTOS.items():
        yield name, partial(skimage_photo, attribute)
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        return

    def sklearn_photo(filename: str) -> Image.Image:
        return Image.fromarray(load_sample_image(filename)).convert("RGB")

    for name, filename in SKLEARN_PHOTOS.items():
        yield name, partial(sklearn_photo, filename)


def sample_photos() -> Iterator[tuple[str, Image.Image]]:
    """``(name, RGB image)`` for every bundled real photograph that is available."""
    for name, load in _photo_loaders():
        yield name, load()


def variants(image: Image.Image) -> Iterator[tuple[str, Image.Image]]:
    """A few edited copies of a photo: the near-duplicates a real collection is full of."""
    width, height = image.size
    yield (
        "crop",
        image.crop((width // 10, height // 10, width - width // 10, height - height // 10)),
    )
    yield "small", image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.LANCZOS)
    yield "mirror", ImageOps.mirror(image)
    yield "warm", ImageEnhance.Color(image).enhance(1.6)


VARIANTS = ("crop", "small", "mirror", "warm")
"""The suffixes of ``variants``' copies, in its order."""


def write_sample_photos(
    folder: str | os.PathLike[str], *, with_variants: bool = False, overwrite: bool = True
) -> list[Path]:
    """Write the sample photos as JPEG files under ``folder`` (sub-folders by subject).

    With ``with_variants``, each photo also gets cropped, rescaled, mirrored and
    colour-shifted copies beside it. With ``overwrite=False`` files that exist are left
    alone (a photo whose files all exist is not even decoded). Returns the paths written.
    """
    root = Path(folder).expanduser()
    written = []
    for name, load in _photo_loaders():
        target = root / f"{name}.jpg"
        copies = {
            suffix: root / f"{name}_{suffix}.jpg" for suffix in (VARIANTS if with_variants else ())
        }
        wanted = [path for path in (target, *copies.values()) if overwrite or not path.exists()]
        if not wanted:
            continue
        image = load()
        target.parent.mkdir(parents=True, exist_ok=True)
        if target in wanted:
            image.save(target, quality=92)
            written.append(target)
        if copies:
            for suffix, copy in variants(image):
                if copies[suffix] in wanted:
                    copy.save(copies[suffix], quality=88)
                    written.append(copies[suffix])
    return written


PHOTOS_ENV = "IMREC_PHOTOS"
"""Environment variable naming the photo folder the example notebooks use (``imrec demo`` sets it)."""


def sample_cache_folder() -> Path:
    """Where the sample photos are written once for notebooks started anywhere:
    ``$XDG_CACHE_HOME/imrec-widgets/sample-photos`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imrec-widgets" / "sample-photos"


def notebook_photos(beside: str | os.PathLike[str] = ".", *, announce: bool = True) -> Path:
    """The photo folder of the example notebooks; says which one it is and why.

    ``IMREC_PHOTOS`` when set (the samples are written there if it does not exist); else
    ``photos/`` in ``beside`` (the notebook's folder) when it exists; else the sample photos with
    their variants, written once to ``sample_cache_folder()`` and reused by every later run, so
    that no kernel run leaves a copy of its own behind.
    """
    named = os.environ.get(PHOTOS_ENV)
    if named:
        folder, why = Path(named).expanduser(), f"from {PHOTOS_ENV}"
        fill = not folder.exists()
    elif (Path(beside) / "photos").is_dir():
        folder, why, fill = (
            Path(beside) / "photos",
            "the photos/ folder beside this notebook",
            False,
        )
    else:
        folder, fill = sample_cache_folder(), True
        why = (
            f"the sample photos, kept for every run; put your own in photos/ beside this "
            f"notebook or name a folder in {PHOTOS_ENV}"
        )
    folder = folder.expanduser().resolve()
    written = write_sample_photos(folder, with_variants=True, overwrite=False) if fill else []
    if announce:
        wrote = f"; wrote {len(written)} sample photo{'' if len(written) == 1 else 's'}"
        print(f"photos: {folder} ({why}){wrote if written else ''}")
    return folder
