from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from imrec_widgets.samples import VARIANTS, sample_photos, variants, write_sample_photos


def test_every_sample_photo_is_a_different_photo() -> None:
    digests: dict[str, str] = {}
    for name, image in sample_photos():
        digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
        assert digest not in digests, f"{name} is the same photo as {digests.get(digest)}"
        digests[digest] = name
    assert len(digests) >= 16


def test_variant_suffixes_match_the_copies() -> None:
    image = Image.new("RGB", (40, 30), "orange")
    assert tuple(suffix for suffix, _copy in variants(image)) == VARIANTS


def test_existing_files_are_left_alone_without_overwrite(tmp_path: Path) -> None:
    written = write_sample_photos(tmp_path, with_variants=True)
    assert len(written) == len(set(written)) == len(list(tmp_path.rglob("*.jpg")))
    mine = tmp_path / "animals" / "chelsea_mirror.jpg"
    mine.write_bytes(b"my own edit")
    (tmp_path / "objects" / "coffee.jpg").unlink()
    again = write_sample_photos(tmp_path, with_variants=True, overwrite=False)
    assert again == [tmp_path / "objects" / "coffee.jpg"]
    assert mine.read_bytes() == b"my own edit"
    assert write_sample_photos(tmp_path, with_variants=True, overwrite=False) == []
