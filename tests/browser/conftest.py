"""Fixtures of the real-browser tests: a JupyterLab server and headless Chromium per module.

Every test in this folder is marked ``browser`` (``make test-fast`` leaves them out; CI runs them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROWSER_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def server():
    """A JupyterLab server on 127.0.0.1 for one test module (a missing browser fails in CI)."""
    from harness import JupyterLabServer, require_browser

    require_browser()
    with JupyterLabServer() as lab_server:
        yield lab_server


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright, for one test module."""
    from harness import chromium

    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture
def step(lab, request):
    """The module's open notebook (its ``lab`` fixture); on failure a screenshot and the logs."""
    from harness import dump_failure

    failures = request.session.testsfailed
    started = time.monotonic()
    yield lab
    if request.session.testsfailed > failures:
        dump_failure(lab.page, lab.server, f"{request.node.name}_FAILED")
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f}s")
