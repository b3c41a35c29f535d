"""Real-browser test harness: a throw-away JupyterLab server driven by headless Chromium.

Test modules here import it as ``from harness import ...`` (pytest puts ``tests/browser/`` on
``sys.path`` because the directory has no ``__init__.py``). Every test under ``tests/browser/``
is marked ``browser`` by this folder's ``conftest.py``.

Typical use::

    from harness import new_page, open_notebook, run_all_cells, screenshot, write_notebook

    # `server` (a JupyterLabServer) and `browser` (chromium()) are module-scoped fixtures in
    # tests/browser/conftest.py; a module that needs another server setup defines its own.
    def test_something(server, browser):
        write_notebook(server.root_dir / "t.ipynb", ["print('hi')"])
        page = new_page(browser)
        open_notebook(page, server, "t.ipynb")
        run_all_cells(page)
        screenshot(page, "something")

Python-side state is observed by letting the notebook write JSON files into the server root
(see ``DUMP_JSON_HELPER``) and polling them with ``wait_for_file``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Software WebGL (SwiftShader) for the map's WebGL layer: --disable-gpu would turn WebGL off.
WEBGL_CHROMIUM_ARGS = [
    *(arg for arg in CHROMIUM_ARGS if arg != "--disable-gpu"),
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
# A browser with no WebGL at all (the map must fall back to SVG and say so).
NO_WEBGL_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--disable-webgl", "--disable-3d-apis"]
DEFAULT_VIEWPORT = {"width": 1400, "height": 900}

# JupyterLab user settings written into the server's private user-settings dir.
#  * notification: without ``fetchNews: "false"`` JupyterLab 4 shows a toast "Would you like to
#    get notified about official Jupyter news?" that can cover the notebook; checkForUpdates and
#    doNotDisturbMode keep other toasts away as well.
#  * tracker.windowingMode "none": JupyterLab >= 4.1 defaults to virtualised/lazy rendering of
#    cells outside the viewport, which makes widgets in off-screen cells not render.
LAB_USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}

# Paste into a notebook cell; then ``dump_json("state.json", {...})`` writes atomically into the
# notebook's directory (the kernel's cwd), so ``wait_for_file`` never sees half-written JSON.
DUMP_JSON_HELPER = """\
import json as _json, os as _os
def dump_json(name, obj):
    _tmp = name + ".tmp"
    with open(_tmp, "w") as _f:
        _json.dump(obj, _f)
    _os.replace(_tmp, name)
"""


def require_browser() -> str:
    """Return the Chromium path; fail (never skip) when the browser stack is missing."""
    problems = []
    if not (os.path.isfile(CHROMIUM_PATH) and os.access(CHROMIUM_PATH, os.X_OK)):
        problems.append(f"{CHROMIUM_PATH} not found (install with: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("python package 'playwright' not installed (pip install playwright)")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        problems.append("python package 'jupyterlab' not installed")
    if problems:
        # Never a skip: `make test` installs all of this, and a skipped test proves nothing.
        pytest.fail("browser tests need: " + "; ".join(problems) + " (`make test` sets them up)")
    return CHROMIUM_PATH


# --------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_user_settings(settings_dir: Path, settings: dict[str, dict[str, Any]]) -> None:
    for plugin_id, values in settings.items():
        package, plugin = plugin_id.split(":", 1)
        path = settings_dir / package / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2), encoding="utf-8")


# The Jupyter front ends a server can run: JupyterLab and Notebook 7 (both Lumino applications
# built from JupyterLab's packages, so the same UI helpers drive either).
APP_CLASSES = {"lab": "LabApp", "notebook": "JupyterNotebookApp"}


class JupyterLabServer:
    """Context manager running an isolated ``jupyter lab`` (or ``jupyter notebook``) on 127.0.0.1.

    Attributes: ``url`` (no trailing slash), ``token``, ``port``, ``root_dir`` (Path; notebooks go
    here), ``base_dir`` (private tmp dir with config/data/runtime/settings), ``log_path``,
    ``app`` ("lab" or "notebook": Notebook 7). ``expose_app_in_browser`` sets
    ``window.jupyterapp`` (tests then run the app's commands, e.g. to change the theme).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        *,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        user_settings: dict[str, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (REPO_ROOT,),
        app: str = "lab",
        expose_app_in_browser: bool = False,
    ) -> None:
        if app not in APP_CLASSES:
            raise ValueError(f"app must be one of {', '.join(APP_CLASSES)}, not {app!r}")
        self.app = app
        self.expose_app_in_browser = expose_app_in_browser
        self._given_root = Path(root_dir) if root_dir is not None else None
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.user_settings = {**LAB_USER_SETTINGS, **(user_settings or {})}
        self.extra_env = dict(env or {})
        self.pythonpath = [str(p) for p in pythonpath]
        self.token = secrets.token_hex(16)
        self.port = 0
        self.url = ""
        self.base_dir: Path | None = None
        self.root_dir: Path = self._given_root or Path()
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> JupyterLabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self.base_dir is not None
        env = dict(os.environ)
        for var in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH"):
            env.pop(var, None)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.base_dir / "config"),
            JUPYTER_DATA_DIR=str(self.base_dir / "data"),
            JUPYTER_RUNTIME_DIR=str(self.base_dir / "runtime"),
            IPYTHONDIR=str(self.base_dir / "ipython"),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
            # kernels launched as "python" must be the venv's interpreter
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        pp = [*self.pythonpath, *filter(None, [env.get("PYTHONPATH", "")])]
        if pp:
            env["PYTHONPATH"] = os.pathsep.join(pp)
        env.update(self.extra_env)
        return env

    def _command(self) -> list[str]:
        assert self.base_dir is not None
        app_class = APP_CLASSES[self.app]
        lab_only = [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        return [
            sys.executable,
            "-m",
            "jupyter",
            self.app,
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.terminals_enabled=False",
            # safety net if the test process dies without stopping us
            "--ServerApp.shutdown_no_activity_timeout=1800",
            f"--{app_class}.user_settings_dir={self.base_dir / 'user-settings'}",
            f"--{app_class}.workspaces_dir={self.base_dir / 'workspaces'}",
            *([f"--{app_class}.expose_app_in_browser=True"] if self.expose_app_in_browser else []),
            *(lab_only if self.app == "lab" else []),
            *self.extra_args,
        ]

    def start(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="imrec-jlab-"))
        if self._given_root is None:
            self.root_dir = self.base_dir / "root"
        self.root_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("config", "data", "runtime", "ipython"):
            (self.base_dir / sub).mkdir()
        _write_user_settings(self.base_dir / "user-settings", self.user_settings)
        self.log_path = self.base_dir / "server.log"
        try:
            last_error = ""
            for _attempt in range(3):  # retry only for port races
                self.port = _free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self._log_file = open(self.log_path, "ab")
                self._proc = subprocess.Popen(
                    self._command(),
                    cwd=self.root_dir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: kernels die with us
                )
                ok, last_error = self._wait_ready()
                if ok:
                    return
                port_race = "already in use" in self.log_tail(4000).lower()
                self._kill()
                if not port_race:
                    break
            raise RuntimeError(
                f"JupyterLab did not start ({last_error}).\n--- server log ---\n{self.log_tail()}"
            )
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> tuple[bool, str]:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        err = "timeout"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False, f"server exited with code {self._proc.returncode}"
            try:
                self.api("GET", "/api/status", timeout=2)
                return True, ""
            except (OSError, urllib.error.URLError, ValueError) as e:
                err = f"timeout after {self.startup_timeout:.0f}s; last error: {e!r}"
            time.sleep(0.2)
        return False, err

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(Exception):
                self.shutdown_kernels()
        self._kill()
        if self.base_dir is not None:
            keep = os.environ.get("IMREC_KEEP_JUPYTER_DIR")
            if not keep:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
            # kernels are started in the server's process group; reap any leftovers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- helpers ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the Jupyter REST API (token auth). Returns parsed JSON (or None for no body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def kernels(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/kernels")

    def shutdown_kernels(self) -> None:
        for k in self.kernels():
            with contextlib.suppress(Exception):
                self.api("DELETE", f"/api/kernels/{k['id']}", timeout=15)

    def lab_url(self, relpath: str = "", *, reset: bool = True) -> str:
        """URL opening ``relpath`` (relative to root_dir) in JupyterLab, token included."""
        tree = f"/tree/{quote(relpath.lstrip('/'))}" if relpath else ""
        query = ("reset&" if reset else "") + f"token={self.token}"
        return f"{self.url}/lab{tree}?{query}"

    def notebook_url(self, relpath: str) -> str:
        """URL opening the notebook ``relpath`` in this server's front end, token included."""
        if self.app == "lab":
            return self.lab_url(relpath)
        return f"{self.url}/notebooks/{quote(relpath.lstrip('/'))}?token={self.token}"

    def log_tail(self, chars: int = 6000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes().decode("utf-8", "replace")
        return text[-chars:]


# --------------------------------------------------------------------------------------------
# Notebook files
# --------------------------------------------------------------------------------------------


def write_notebook(path: str | os.PathLike[str], cells: Sequence[str]) -> Path:
    """Write an nbformat-4 notebook (python3 kernel) with the given code cells, no outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    return path


def css_contrast(colour: str, background: str) -> float:
    """WCAG contrast ratio of two computed CSS colours (``rgb(...)``/``rgba(...)``; alpha
    ignored): 1 for the same colour, 21 for black on white."""

    def luminance(css: str) -> float:
        channels = [float(v) / 255 for v in re.findall(r"[\d.]+", css)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(colour), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def wait_for_file(
    path: str | os.PathLike[str],
    predicate: Callable[[Any], bool] | None = None,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> Any:
    """Poll ``path`` until it exists and ``predicate(content)`` is true; return the content.

    ``*.json`` files are parsed (unparseable content counts as "not yet"); other files are
    returned as text. Raises AssertionError with the last content seen on timeout.
    """
    path = Path(path)
    is_json = path.suffix == ".json"
    deadline = time.monotonic() + timeout
    last: Any = "<file never appeared>"
    while True:
        try:
            text = path.read_text(encoding="utf-8")
            content = json.loads(text) if is_json else text
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as e:
            if path.exists():
                last = f"<unreadable: {e!r}>"
        else:
            last = content
            if predicate is None or predicate(content):
                return content
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{path}: condition not met within {timeout:.0f}s; last content: {repr(last)[:2000]}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium(*, slow_mo: float | None = None, args: Sequence[str] = CHROMIUM_ARGS) -> Iterator[Any]:
    """Start Playwright + Debian's headless Chromium with ``args``; yields a Browser."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=executable, args=list(args), headless=True, slow_mo=slow_mo
        )
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                browser.close()
    finally:
        pw.stop()


@dataclass
class ConsoleLog:
    """Browser-side messages of one page."""

    messages: list[str] = field(default_factory=list)  # every console message, "type: text"
    errors: list[str] = field(default_factory=list)  # console errors + uncaught page errors
    dialogs: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(self.errors) if self.errors else "<no browser console errors>"


_CONSOLE_LOGS: weakref.WeakKeyDictionary[Any, ConsoleLog] = weakref.WeakKeyDictionary()


def collect_console(page: Any) -> ConsoleLog:
    """Start recording console errors / page errors / dialogs of ``page`` (idempotent)."""
    log = _CONSOLE_LOGS.get(page)
    if log is not None:
        return log
    log = ConsoleLog()
    _CONSOLE_LOGS[page] = log

    def on_console(msg: Any) -> None:
        entry = f"{msg.type}: {msg.text}"
        log.messages.append(entry)
        if msg.type == "error":
            loc = msg.location or {}
            where = f" ({loc.get('url', '')}:{loc.get('lineNumber', '')})" if loc else ""
            log.errors.append(f"console.error: {msg.text}{where}")

    def on_pageerror(err: Any) -> None:
        log.errors.append(f"pageerror: {err}")

    def on_dialog(dialog: Any) -> None:
        # JupyterLab registers "beforeunload" when a notebook is dirty; accept it so that
        # navigating away / reloading never hangs. Other dialogs are dismissed (Playwright default).
        log.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(Exception):
            if dialog.type == "beforeunload":
                dialog.accept()
            else:
                dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    page.on("dialog", on_dialog)
    return log


def console_errors(page: Any) -> list[str]:
    """Console errors and uncaught exceptions recorded for ``page`` (see ``collect_console``)."""
    log = _CONSOLE_LOGS.get(page)
    return list(log.errors) if log is not None else []


# Notebook 7.6's shortcuts plugin reads the settings schema of a plugin it has not loaded; it
# throws this on any notebook page, an empty one included (not ours, not JupyterLab's).
NOTEBOOK7_OWN_ERROR = "pageerror: Cannot read properties of undefined (reading 'schema')"


def app_errors(page: Any, server: JupyterLabServer) -> list[str]:
    """Uncaught page errors and imrec's console errors on ``page`` (Notebook 7's own one aside)."""
    errors = [e for e in console_errors(page) if "pageerror" in e or "imrec" in e.lower()]
    if server.app == "notebook":
        errors = [e for e in errors if e != NOTEBOOK7_OWN_ERROR]
    return errors


def new_page(
    browser: Any, viewport: dict[str, int] | None = None, *, device_scale_factor: float = 1
) -> Any:
    """New isolated context + page with console collection attached."""
    context = browser.new_context(
        viewport=viewport or DEFAULT_VIEWPORT, device_scale_factor=device_scale_factor
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    collect_console(page)
    return page


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save a PNG as ``test-artifacts/<name>.png`` in the repo root and return its path."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "screenshot"
    if not safe.endswith(".png"):
        safe += ".png"
    path = ARTIFACTS_DIR / safe
    page.screenshot(path=str(path), full_page=full_page)
    return path


# --------------------------------------------------------------------------------------------
# JupyterLab UI
# --------------------------------------------------------------------------------------------

# The visible (current) notebook panel in the main area: JupyterLab's dock panel, or
# Notebook 7's main panel.
NOTEBOOK_PANEL = ":is(#jp-main-dock-panel, #main-panel) .jp-NotebookPanel:not(.lm-mod-hidden)"
MENU_BAR = ":is(#jp-menu-panel, #menu-panel)"  # JupyterLab's, Notebook 7's

_JS_NOTEBOOK_STATE = """(panelSel) => {
  const panel = document.querySelector(panelSel);
  if (!panel) return null;
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = panel.querySelector('[data-jp-item-name="kernelName"]');
  const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
      .map(p => p.textContent.trim());
  return {
    status: ind ? ind.getAttribute('data-status') : null,
    kernel: kernel ? kernel.textContent.trim() : null,
    prompts,
  };
}"""


def _notebook_state(page: Any) -> dict[str, Any] | None:
    return page.evaluate(_JS_NOTEBOOK_STATE, NOTEBOOK_PANEL)


def _ui_idle(state: dict[str, Any] | None) -> bool:
    # NB: the execution indicator says "idle" *before* a kernel is attached (kernel name
    # "No Kernel"); it then goes initializing -> connecting -> unknown -> idle.
    return bool(
        state
        and state["status"] == "idle"
        and state["kernel"] not in (None, "", "No Kernel")
        and not any("*" in p for p in state["prompts"])
    )


def wait_for_kernel_idle(
    page: Any,
    server: JupyterLabServer | None = None,
    relpath: str | None = None,
    timeout: float = 60.0,
) -> None:
    """Wait until the current notebook has a connected, idle kernel and no cell shows ``[*]``.

    With ``server`` and ``relpath`` the server side is checked too (a session for ``relpath``
    whose kernel is idle and has a websocket connection).
    """
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    server_ok = server is None
    while time.monotonic() < deadline:
        state = _notebook_state(page)
        if _ui_idle(state):
            if not server_ok:
                sessions = [
                    s
                    for s in server.api("GET", "/api/sessions")
                    if relpath is None or s.get("path") == relpath.lstrip("/")
                ]
                server_ok = any(
                    s["kernel"]["execution_state"] == "idle" and s["kernel"]["connections"] > 0
                    for s in sessions
                )
            if server_ok:
                return
        time.sleep(0.1)
    raise AssertionError(
        f"kernel not idle within {timeout:.0f}s; notebook state: {state!r}\n"
        f"browser errors:\n{'; '.join(console_errors(page)) or '-'}"
        + (f"\n--- server log ---\n{server.log_tail(3000)}" if server else "")
    )


def open_notebook(page: Any, server: JupyterLabServer, relpath: str, timeout: float = 90.0) -> None:
    """Open ``relpath`` (relative to ``server.root_dir``) in the server's front end (JupyterLab
    or Notebook 7); wait for an idle kernel.

    JupyterLab opens it with ``?reset`` so the workspace saved by a previous test never restores
    stale tabs; Notebook 7 shows one notebook per page.
    """
    collect_console(page)
    ms = timeout * 1000
    page.goto(server.notebook_url(relpath), timeout=ms, wait_until="domcontentloaded")
    page.wait_for_selector(f"{NOTEBOOK_PANEL} .jp-Notebook", timeout=ms)
    if server.app == "lab":
        name = relpath.rsplit("/", 1)[-1]
        page.locator(
            "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel",
            has_text=re.compile(f"^{re.escape(name)}$"),
        ).wait_for(timeout=ms)
    wait_for_kernel_idle(page, server, relpath, timeout=timeout)


def run_command_via_menu(page: Any, menu: str, item: str) -> None:
    """Click ``menu`` in the main menu bar, then the entry labelled ``item``."""
    page.locator(
        f"{MENU_BAR} .lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")
    ).click()
    entry = page.locator(
        ".lm-Menu:visible .lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
        has_text=re.compile(f"^{re.escape(item)}$"),
    )
    entry.first.click()


_TRACEBACK_RE = re.compile(
    r"Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+", re.M
)


def cell_errors(page: Any) -> list[str]:
    """Text of the error outputs (tracebacks) in the current notebook.

    JupyterLab renders ``error`` outputs with the *stderr* renderer, so they cannot be told
    apart from stderr streams by DOM alone; stderr outputs that look like an IPython traceback
    ("Traceback (most recent call last)" / "Cell In[3], line 1") count as errors.
    """
    texts = page.locator(
        f"{NOTEBOOK_PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    ).all_inner_texts()
    return [t for t in texts if _TRACEBACK_RE.search(t)]


def run_all_cells(page: Any, timeout: float = 120.0, *, raise_on_error: bool = True) -> None:
    """Run > Run All Cells in the current notebook and wait until execution has finished.

    "Finished" means: execution was seen to start (a ``[*]`` prompt, or prompts changed), the
    kernel is idle again and no cell shows ``[*]``. Raises AssertionError (with the traceback
    text) if a cell produced an error output and ``raise_on_error`` is true.
    """
    before = _notebook_state(page)
    if before is None:
        raise AssertionError("no notebook is open (call open_notebook first)")
    # focus the notebook so the menu command targets it
    page.locator(f"{NOTEBOOK_PANEL} .jp-NotebookPanel-toolbar").first.click(
        position={"x": 2, "y": 2}
    )
    run_command_via_menu(page, "Run", "Run All Cells")
    deadline = time.monotonic() + timeout
    saw_running_at: float | None = None
    state: dict[str, Any] | None = before
    while time.monotonic() < deadline:
        state = _notebook_state(page) or {"status": None, "kernel": None, "prompts": []}
        prompts = state["prompts"]
        if any("*" in p for p in prompts):
            saw_running_at = time.monotonic()
        elif _ui_idle(state):
            new_counts = [
                p
                for p, old in zip(prompts, before["prompts"], strict=False)
                if re.search(r"\d", p) and p != old
            ]
            if new_counts:
                break
            if saw_running_at is not None and time.monotonic() - saw_running_at > 3:
                raise AssertionError(
                    f"Run All Cells did not execute anything (no kernel?); state: {state!r}\n"
                    f"browser errors:\n{'; '.join(console_errors(page)) or '-'}"
                )
        time.sleep(0.1)
    else:
        raise AssertionError(
            f"cells did not finish within {timeout:.0f}s; state: {state!r}\n"
            f"cell errors: {cell_errors(page)}\n"
            f"browser errors:\n{'; '.join(console_errors(page)) or '-'}"
        )
    if raise_on_error:
        errors = cell_errors(page)
        if errors:
            raise AssertionError("notebook cell raised:\n" + "\n---\n".join(errors))


def dump_failure(page: Any, server: JupyterLabServer, name: str) -> None:
    """Screenshot ``name`` and print the browser's console errors and the server's log tail."""
    screenshot(page, name)
    print("browser console errors:\n" + ("\n".join(console_errors(page)) or "-"))
    print("server log tail:\n" + server.log_tail(3000))
