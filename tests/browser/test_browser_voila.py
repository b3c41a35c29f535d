"""A dashboard in Voilà opened by three people at once (issue #24, item 8).

Each viewer gets a fresh kernel that runs the notebook from the top: ``idx.update()`` on the
same folder, then ``App(idx)``, which computes the map. Viewers once got ``IndexLockedError``
and no widgets; now the later ones wait for the first (update and map alike) and every page
shows the search widget and the map, with no error.

Screenshots go to ``test-artifacts/voila_viewer_*.png``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from harness import (
    DUMP_JSON_HELPER,
    REPO_ROOT,
    WEBGL_CHROMIUM_ARGS,
    _free_port,
    chromium,
    console_errors,
    new_page,
    screenshot,
    wait_for_file,
    write_notebook,
)

from imrec_widgets import ImageIndex, WriteLock
from imrec_widgets.projection import status
from imrec_widgets.samples import write_sample_photos

FEATURES = ["rgb", "dhash", "thumb"]
VIEWERS = 3

DASHBOARD = [
    DUMP_JSON_HELPER,
    """\
import os
from imrec_widgets import App, ImageIndex

idx = ImageIndex.open({photos!r}, features={features!r})
report = idx.update()  # what the quick start does: every viewer's kernel runs it
app = App(idx, "rgb")
dump_json(os.path.join({reports!r}, f"viewer-{{os.getpid()}}.json"), {{
    "updated": report.updated, "new": report.new, "unchanged": report.unchanged,
    "points": len(app.explorer.points), "message": app.explorer.message.value,
}})
""",
    "app",
]

_JS_MAP_DRAWN = """(n) => {
  const canvas = document.querySelector('.imrec-umap-explorer canvas.imrec-map-points');
  return Boolean(canvas && canvas.dataset.webgl === '1' && Number(canvas.dataset.points) === n &&
    Number(canvas.dataset.frame) > 0);
}"""


class VoilaServer:
    """``voila <notebook> --no-browser`` on 127.0.0.1 with private Jupyter folders, as a user
    serves a dashboard (no token: Voilà's default)."""

    def __init__(self, notebook: Path, *, startup_timeout: float = 60.0) -> None:
        self.notebook = notebook
        self.startup_timeout = startup_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix="imrec-voila-"))
        self.log_path = self.base_dir / "voila.log"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH")
        }
        for sub in ("config", "data", "runtime"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.base_dir / "config"),
            JUPYTER_DATA_DIR=str(self.base_dir / "data"),
            JUPYTER_RUNTIME_DIR=str(self.base_dir / "runtime"),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        )
        return env

    def __enter__(self) -> VoilaServer:
        for _attempt in range(3):  # retried only for a port taken meanwhile
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}/"
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "voila", self.notebook.name),
                        *("--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"),
                        "--ServerApp.port_retries=0",
                    ],
                    cwd=self.notebook.parent,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: its kernels end with it
                )
            deadline = time.monotonic() + self.startup_timeout
            while self._proc.poll() is None and time.monotonic() < deadline:
                if "is running at" in self.log():
                    return self
                time.sleep(0.2)
            taken = "already in use" in self.log().lower()
            self.stop()
            if not taken:
                break
        raise RuntimeError(f"Voila did not start:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels left behind

    def log(self) -> str:
        return (
            self.log_path.read_bytes().decode("utf-8", "replace") if self.log_path.exists() else ""
        )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("voila")
    photos, reports = base / "photos", base / "reports"
    write_sample_photos(photos)
    reports.mkdir()
    cells = [
        cell.format(photos=str(photos), features=FEATURES, reports=str(reports))
        for cell in DASHBOARD
    ]
    notebook = write_notebook(base / "app.ipynb", cells)
    return {"photos": photos, "reports": reports, "notebook": notebook}


def test_three_viewers_opening_a_dashboard_at_once_all_get_the_widgets_and_the_map(
    dashboard,
) -> None:
    photos = dashboard["photos"]
    count = sum(1 for path in photos.rglob("*.jpg"))
    with VoilaServer(dashboard["notebook"]) as voila, chromium(args=WEBGL_CHROMIUM_ARGS) as browser:
        pages = [new_page(browser) for _ in range(VIEWERS)]
        (photos / ".imrec").mkdir()
        try:
            # An update already runs when the three open the dashboard: each waits and says so.
            with WriteLock(photos / ".imrec" / "write.lock"):
                for page in pages:  # each page's kernel starts as it is asked for
                    page.goto(voila.url, wait_until="commit", timeout=60_000)
                _wait_for_waiters(photos / ".imrec" / "write.lock", VIEWERS, voila)
            reports = [
                wait_for_file(path, timeout=300)
                for path in _reports(dashboard["reports"], VIEWERS, voila)
            ]
            for number, page in enumerate(pages):
                page.locator(".imrec-search").wait_for(state="visible", timeout=120_000)
                page.locator(".imrec-umap-explorer").wait_for(state="visible", timeout=120_000)
                page.wait_for_function(_JS_MAP_DRAWN, arg=count, timeout=120_000)
                page.wait_for_load_state("load", timeout=120_000)  # every cell has run
                screenshot(page, f"voila_viewer_{number}")
        except BaseException:
            for number, page in enumerate(pages):
                screenshot(page, f"voila_viewer_{number}_FAILED")
            print(voila.log()[-6000:])
            raise
        for page in pages:
            text = page.locator("body").inner_text()
            assert "rror" not in text and "Traceback" not in text, text[-2000:]
            assert not page.locator(".jp-OutputArea-output[data-mime-type*='stderr']").count()
            errors = [e for e in console_errors(page) if "pageerror" in e or "imrec" in e.lower()]
            assert not errors, "\n".join(errors)
    assert all(r["updated"] and r["points"] == count and r["message"] == "" for r in reports)
    assert sorted(r["new"] for r in reports) == [0, 0, count], "one indexed, the others waited"
    assert sorted(r["unchanged"] for r in reports) == [0, count, count]
    index = ImageIndex.open(photos, features=FEATURES)
    assert len(index) == count and index.errors() == []
    assert status(index, "rgb") == {"state": "fresh", "pending": 0}
    assert len(index.projection("rgb")) == count


def _reports(folder: Path, viewers: int, voila: VoilaServer) -> list[Path]:
    """The viewers' report files, once one per kernel exists."""
    wait_for_file(
        voila.log_path,
        lambda log: log.count("Kernel started") >= viewers,
        timeout=120,
    )
    found: list[Path] = []
    deadline = time.monotonic() + 300
    while len(found) < viewers and time.monotonic() < deadline:
        found = sorted(folder.glob("viewer-*.json"))
        time.sleep(0.2)
    assert len(found) == viewers, f"{len(found)} of {viewers} viewers reported:\n{voila.log()}"
    return found


def _wait_for_waiters(lock: Path, viewers: int, voila: VoilaServer) -> None:
    """Until ``viewers`` other processes have ``lock`` open: each kernel waits for it in update()."""
    deadline = time.monotonic() + 180
    waiting: set[int] = set()
    while len(waiting) < viewers:
        assert time.monotonic() < deadline, f"{len(waiting)} of {viewers} waiting:\n{voila.log()}"
        time.sleep(0.2)
        waiting = set()
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            if int(fd_dir.parent.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == str(lock) for fd in fd_dir.iterdir()):
                    waiting.add(int(fd_dir.parent.name))
