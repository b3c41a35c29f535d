"""Shared fixtures: folders of real photographs written from package-shipped images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imrec_widgets.samples import write_sample_photos

CHEAP_FEATURES = ["rgb", "ahash", "dhash", "thumb"]


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only folder of the bundled real photos (18 JPEGs in subject sub-folders)."""
    folder = tmp_path_factory.mktemp("samples")
    write_sample_photos(folder)
    return folder


@pytest.fixture(scope="session")
def variant_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only folder of the photos plus cropped/rescaled/mirrored/colour-shifted copies."""
    folder = tmp_path_factory.mktemp("variants")
    write_sample_photos(folder, with_variants=True)
    return folder


@pytest.fixture
def photos(sample_folder: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the sample photos."""
    target = tmp_path / "photos"
    shutil.copytree(sample_folder, target)
    return target
