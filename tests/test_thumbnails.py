"""Stored thumbnails: JPEG rows with the aspect kept, and indexes made with the old padded squares."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.catalog import Catalog
from imrec_widgets.features.thumbnails import (
    ThumbnailFeature,
    fitted_size,
    pack_jpeg,
    row_bytes,
    row_image,
    row_jpeg,
    row_size,
    unpadded,
)


def _size(jpeg: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(jpeg)).size


def _coffee(index: ImageIndex) -> int:
    return next(r.id for r in index.records(index.ids()) if r.path.endswith("coffee.jpg"))


def test_a_row_holds_the_jpeg_and_its_size() -> None:
    picture = Image.new("RGB", (300, 120), (200, 40, 40))
    row = ThumbnailFeature(224).extract_one(picture)
    assert row.shape == (row_bytes(224),) and row.dtype == np.uint8
    assert row_size(row) == (224, 90)
    jpeg = row_jpeg(row)
    assert jpeg[:3] == b"\xff\xd8\xff" and _size(jpeg) == (224, 90)
    assert np.abs(np.asarray(row_image(row), np.int16) - (200, 40, 40)).max() < 8
    assert row_jpeg(np.zeros(row_bytes(224), np.uint8)) == b""  # a row never written


def test_noise_that_does_not_fit_at_quality_80_still_fits_its_row() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    row = pack_jpeg(Image.fromarray(noise), row_bytes(224))
    assert 0 < len(row_jpeg(row)) <= row_bytes(224) - 8
    assert _size(row_jpeg(row))[0] <= 224


def test_the_old_padding_is_cut_where_pil_put_the_picture() -> None:
    for width, height in [(600, 400), (400, 600), (641, 99), (50, 30), (64, 64)]:
        picture = Image.new("RGB", (width, height), (10, 120, 30))
        square = ThumbnailFeature(64, format="pixels").extract_one(picture)
        assert square.shape == (64, 64, 3)
        inner = unpadded(square, width, height)
        assert inner.shape[:2] == fitted_size(width, height, 64)[::-1]
        assert (inner != 255).all(), (width, height)  # no white margin left


def _as_written_before_jpeg_rows(index_dir: Path) -> None:
    """What the catalog of an index made before JPEG rows said: no ``thumb_format`` setting, a
    thumbnail config of its size only (the arrays are the same: 64 x 64 x 3 padded squares)."""
    catalog = Catalog(index_dir / "catalog.sqlite")
    try:
        settings = dict(catalog.get_meta("settings"))
        assert settings.pop("thumb_format") == "pixels" and settings["thumb_size"] == 64
        catalog.set_meta("settings", settings)
        config = dict(catalog.get_meta("feature_config"))
        config["thumb"] = {"size": 64}
        catalog.set_meta("feature_config", config)
    finally:
        catalog.close()


@pytest.fixture
def old_index(photos: Path, index_of: IndexOf) -> ImageIndex:
    old = index_of(photos, features=["dhash", "thumb"], thumb_size=64, thumb_format="pixels")
    assert old.features("thumb").shape[1:] == (64, 64, 3)
    old.close()
    _as_written_before_jpeg_rows(old.index_dir)
    return ImageIndex.open(photos)


def test_an_old_index_shows_its_thumbnails_without_white_margins(old_index: ImageIndex) -> None:
    assert old_index.settings["thumb_format"] == "pixels"
    coffee = _coffee(old_index)  # 600 x 400
    (jpeg,) = old_index.thumbnail_bytes([coffee])
    assert _size(jpeg) == (64, 43)
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert pixels[0].mean() < 230 and pixels[-1].mean() < 230, "white bar left in"
    assert old_index.thumbnail(coffee).size == (64, 43)


def test_an_old_index_keeps_updating_then_a_rebuild_makes_jpeg_rows(
    old_index: ImageIndex, photos: Path
) -> None:
    shutil.copyfile(photos / "animals" / "chelsea.jpg", photos / "animals" / "chelsea2.jpg")
    report = old_index.update(progress=False, workers=0)
    assert (report.new, report.errors) == (1, 0)
    assert old_index.features("thumb").shape[1:] == (64, 64, 3)  # one layout per index

    rebuilt = ImageIndex.open(photos, old_index.index_dir, rebuild=["thumb"])
    rebuilt.update(progress=False, workers=0)
    assert rebuilt.settings["thumb_format"] == "jpeg" and rebuilt.settings["thumb_size"] == 256
    assert rebuilt.features("thumb").shape[1:] == (row_bytes(256),)
    assert _size(rebuilt.thumbnail_bytes([_coffee(rebuilt)])[0]) == (256, 171)
    reopened = ImageIndex.open(photos, old_index.index_dir)
    assert reopened.settings["thumb_format"] == "jpeg"
