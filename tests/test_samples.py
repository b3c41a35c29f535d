from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imrec_widgets.samples import (
    PHOTOS_ENV,
    VARIANTS,
    notebook_photos,
    sample_cache_folder,
    sample_photos,
    variants,
    write_sample_photos,
)


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


def test_notebook_photos_are_the_named_folder_then_the_one_beside_then_one_kept_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Started outside `imrec demo`, the notebooks once wrote a new temporary copy of the samples
    on every kernel run; now: IMREC_PHOTOS, else ./photos, else one copy in the cache, reused."""
    monkeypatch.delenv(PHOTOS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()

    kept = notebook_photos(notebook_dir)
    assert kept == sample_cache_folder() == tmp_path / "cache" / "imrec-widgets" / "sample-photos"
    count = len(list(kept.rglob("*.jpg")))
    assert count >= 80
    assert capsys.readouterr().out.startswith(f"photos: {kept} (the sample photos")
    assert notebook_photos(notebook_dir) == kept  # the next kernel run: the same folder, as is
    assert "wrote" not in capsys.readouterr().out

    beside = notebook_dir / "photos"
    beside.mkdir()
    assert notebook_photos(notebook_dir) == beside
    assert (
        capsys.readouterr().out.strip()
        == f"photos: {beside} (the photos/ folder beside this notebook)"
    )
    assert not list(beside.iterdir())  # never written into

    monkeypatch.setenv(PHOTOS_ENV, str(tmp_path / "mine"))
    assert notebook_photos(notebook_dir) == tmp_path / "mine"
    assert f"photos: {tmp_path / 'mine'} (from {PHOTOS_ENV})" in capsys.readouterr().out


def test_the_notebooks_use_notebook_photos_and_make_no_temporary_folders() -> None:
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        code = "\n".join(
            "".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"
        )
        assert "photos = notebook_photos()" in code, path.name
        assert "mkdtemp" not in code, path.name
        assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
