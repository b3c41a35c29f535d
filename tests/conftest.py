"""Shared fixtures: folders of real photographs written from package-shipped images."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imrec_widgets import ImageIndex
from imrec_widgets.samples import write_sample_photos

CHEAP_FEATURES = ["rgb", "ahash", "dhash", "thumb"]


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exported ONNX graphs go to a session temp folder, never the user's cache."""
    from imrec_widgets.features.engines import CACHE_ENV

    folder = tmp_path_factory.mktemp("cache")
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
def labeled_index(tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    """Read-only index of 12 real photos x 6 copies (crop, half-size, JPEG q30, colour, dark),
    one sub-folder per photo (see ``labeled_photos.py``); indexed once per session."""
    from labeled_photos import write_labeled_photos

    root = tmp_path_factory.mktemp("labeled") / "photos"
    write_labeled_photos(root)
    index = ImageIndex.open(root)
    index.update(progress=False)
    return index


@pytest.fixture(scope="module")
def server():
    """A JupyterLab server on 127.0.0.1 for one test module (a missing browser fails in CI)."""
    from browser import JupyterLabServer, require_browser

    require_browser()
    with JupyterLabServer() as lab_server:
        yield lab_server


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright, for one test module."""
    from browser import chromium

    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture
def step(lab, request):
    """The module's open notebook (its ``lab`` fixture); on failure a screenshot and the logs."""
    from browser import dump_failure

    failures = request.session.testsfailed
    started = time.monotonic()
    yield lab
    if request.session.testsfailed > failures:
        dump_failure(lab.page, lab.server, f"{request.node.name}_FAILED")
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f}s")
