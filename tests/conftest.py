"""Shared fixtures: folders of real photographs written from package-shipped images."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from index_cache import IndexOf, folder_state

from imrec_widgets import ImageIndex
from imrec_widgets.samples import write_sample_photos


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Exported ONNX graphs go to the checkout's pytest cache (``.pytest_cache/d/imrec``), never
    the user's cache: exported once per checkout, not once per test run (~5-9 s of torch and
    export). A graph is used only if its checksum file says this version made it, and the
    tests of the export itself each use a folder of their own. ``-p no:cacheprovider`` (and a
    clean clone, as in CI) exports into a session temp folder."""
    from imrec_widgets.features.engines import CACHE_ENV

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("imrec") if cache is not None else tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder / "onnx"


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


@pytest.fixture(scope="session")
def index_of(tmp_path_factory: pytest.TempPathFactory) -> IndexOf:
    """``index_of(folder, **settings)``: ``folder`` indexed in place (``ImageIndex.open(folder,
    **settings).update()``), as a test's set-up.

    The first folder in a given state (each file's path, size and mtime: what ``update()``
    compares; ``photos`` copies keep the originals' mtimes) is indexed for real, and its
    ``.imrec`` is kept; a later folder in the same state with the same settings gets a copy of
    it, with the catalog's ``root`` set to its own path: what indexing it would have written,
    in milliseconds instead of a quarter second. A folder in any other state is indexed."""
    made: dict[tuple[Any, ...], Path] = {}

    def index_of(folder: Path, **settings: Any) -> ImageIndex:
        from imrec_widgets.catalog import Catalog

        key = (folder_state(folder), repr(sorted(settings.items())))
        target = folder / ".imrec"
        if key in made and not target.exists():
            shutil.copytree(made[key], target, symlinks=True)
            catalog = Catalog(target / "catalog.sqlite")
            catalog.set_meta("root", str(folder.resolve()))
            catalog.close()
            return ImageIndex.open(folder, **settings)
        index = ImageIndex.open(folder, **settings)
        index.update(progress=False, workers=0)
        if key not in made and index.index_dir == target:
            index.close()  # the WAL checkpointed into catalog.sqlite before it is copied
            kept = tmp_path_factory.mktemp("indexed") / ".imrec"
            shutil.copytree(target, kept, symlinks=True)
            made[key] = kept
        return index

    return index_of


@pytest.fixture(scope="session")
def labeled_index(tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    """Read-only index of 12 real photos x 6 copies (crop, half-size, JPEG q30, colour, dark),
    one sub-folder per photo (see ``labeled_photos.py``); indexed once per session."""
    from labeled_photos import write_labeled_photos

    root = tmp_path_factory.mktemp("labeled") / "photos"
    write_labeled_photos(root)
    index = ImageIndex.open(root)
    index.update(progress=False)
    return index


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The labelled index runs the CNN over 72 photos: whatever uses it is slow.
    for item in items:
        if "labeled_index" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
