"""A user's first minutes: ``%pip install`` the wheel inside a running notebook, then search.

JupyterLab runs its ``python3`` kernel in a fresh virtual environment that has the
dependencies but not imrec-widgets (see ``test_packaging.make_venv``) and not the checkout on
``sys.path``. The notebook pip-installs the freshly built wheel, imports the package from the
environment's site-packages, indexes a few real photos and shows a SearchWidget; the test
uploads a photo through the page and checks the results in the browser and in Python.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from harness import (
    DUMP_JSON_HELPER,
    NOTEBOOK_PANEL,
    REPO_ROOT,
    JupyterLabServer,
    console_errors,
    new_page,
    open_notebook,
    require_browser,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)
from test_packaging import build_wheel, make_venv, venv_env

from imrec_widgets import __version__

pytestmark = pytest.mark.slow

K = 5
STATE = "search_state.json"

BEFORE_CELL = """\
import importlib.util, sys
dump_json("before.json", {
    "executable": sys.executable, "prefix": sys.prefix, "sys_path": sys.path,
    "importable": importlib.util.find_spec("imrec_widgets") is not None,
})
"""

PIP_CELL = "%pip install --no-deps {wheel}"

INDEX_CELL = """\
import imrec_widgets
from imrec_widgets import ImageIndex, SearchWidget
from imrec_widgets.samples import write_sample_photos
from imrec_widgets.widgets._base import STATIC_DIR

print("imrec_widgets", imrec_widgets.__version__, "from", imrec_widgets.__file__)
assert not imrec_widgets.__file__.startswith({repo!r}), "imported from the checkout"
write_sample_photos("photos")
idx = ImageIndex.open("photos", index_dir="index", features=["rgb", "dhash", "thumb"])
print(idx.update(progress=False, workers=0))
dump_json("installed.json", {{
    "file": imrec_widgets.__file__, "version": imrec_widgets.__version__,
    "static_dir": str(STATIC_DIR), "indexed": len(idx),
}})
"""

WIDGET_CELL = """\
w = SearchWidget(idx, k={k})
_seq = 0

def _dump(change=None):
    global _seq
    _seq += 1
    dump_json({state!r}, {{
        "seq": _seq, "results": w.results, "error": w.error, "mode": w.mode,
        "query_names": w.query_names, "thumbnails": len(w.thumbnails),
    }})

w.observe(_dump, names=["results", "error", "query_names"])
_dump()
w
"""


def _write_kernelspec(folder: Path, python: Path) -> Path:
    """A ``python3`` kernelspec running ``python``; ``folder`` goes first on JUPYTER_PATH."""
    venv = python.parent.parent
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fresh venv)",
        "language": "python",
        # as if the environment were activated; nothing of the checkout on PYTHONPATH
        "env": {
            k: venv_env(venv)[k]
            for k in ("PATH", "VIRTUAL_ENV", "PIP_NO_INDEX", "PIP_DISABLE_PIP_VERSION_CHECK")
        }
        | {"PYTHONPATH": ""},
        "metadata": {"debugger": False},
    }
    path = folder / "kernels" / "python3" / "kernel.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def kernel_python(tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("kernel-env"))


@pytest.fixture(scope="module")
def server(kernel_python, tmp_path_factory):
    require_browser()
    # JUPYTER_PATH outranks every other kernelspec folder (.venv/share/jupyter included)
    jupyter_path = _write_kernelspec(tmp_path_factory.mktemp("jupyter-path"), kernel_python)
    with JupyterLabServer(env={"JUPYTER_PATH": str(jupyter_path)}, pythonpath=()) as srv:
        yield srv


def test_pip_install_in_a_running_notebook_then_search(server, browser, wheel, kernel_python):
    root = server.root_dir
    cells = [
        DUMP_JSON_HELPER,
        BEFORE_CELL,
        PIP_CELL.format(wheel=wheel),
        INDEX_CELL.format(repo=str(REPO_ROOT)),
        WIDGET_CELL.format(k=K, state=STATE),
    ]
    write_notebook(root / "pip_install.ipynb", cells)
    page = new_page(browser, viewport={"width": 1400, "height": 1320})
    t0 = time.monotonic()
    try:
        open_notebook(page, server, "pip_install.ipynb")
        run_all_cells(page, timeout=300)
        page.locator(".imrec-search").wait_for(state="visible", timeout=60_000)
        print(f"\nnotebook open + %pip install + index + widget: {time.monotonic() - t0:.1f}s")

        before = wait_for_file(root / "before.json")
        venv = kernel_python.parent.parent
        assert Path(before["executable"]) == kernel_python
        assert Path(before["prefix"]) == venv
        assert not before["importable"], "imrec_widgets importable before %pip install"
        assert str(REPO_ROOT) not in before["sys_path"]

        outputs = "\n".join(
            page.locator(f"{NOTEBOOK_PANEL} .jp-OutputArea-output").all_inner_texts()
        )
        assert f"Successfully installed imrec-widgets-{__version__}" in outputs, outputs

        installed = wait_for_file(root / "installed.json")
        package = Path(installed["file"]).resolve().parent
        assert package.parent.name == "site-packages" and package.is_relative_to(venv.resolve())
        assert Path(installed["static_dir"]).resolve() == package / "static"
        assert installed["version"] == __version__ and installed["indexed"] == 18
        assert f"from {installed['file']}" in outputs

        # the front end shipped in the wheel renders and talks to Python
        state = wait_for_file(root / STATE, lambda s: s["mode"] == "rgb" and s["results"] == [])
        t1 = time.monotonic()
        query = next((root / "photos").rglob("coffee.jpg"))
        page.locator(".imrec-search .imrec-file-input").set_input_files(str(query))
        page.wait_for_function(
            """(n) => {
              const cells = document.querySelectorAll('.imrec-search .imrec-result');
              return cells.length === n && !document.querySelector('.imrec-is-busy') &&
                Array.from(cells).every((c) => c.querySelector('img').naturalWidth > 0);
            }""",
            arg=K,
            timeout=30_000,
        )
        state = wait_for_file(
            root / STATE, lambda s: s["query_names"] == ["coffee.jpg"] and len(s["results"]) == K
        )
        print(f"upload -> {K} results: {time.monotonic() - t1:.1f}s")
        names = page.locator(".imrec-result .imrec-result-name").all_inner_texts()
        assert state["error"] == "" and state["thumbnails"] == K
        assert names == [Path(hit["path"]).name for hit in state["results"]]
        assert names[0] == "coffee.jpg"
        # the %pip cell's output at the top, the widget with its results below
        page.locator(f"{NOTEBOOK_PANEL} .jp-CodeCell").nth(2).evaluate(
            "(cell) => cell.scrollIntoView({ block: 'start' })"
        )
        assert screenshot(page, "pip_install").exists()
    except BaseException:
        screenshot(page, "pip_install_FAILED")
        print("browser console errors:\n" + ("\n".join(console_errors(page)) or "-"))
        print("server log tail:\n" + server.log_tail(3000))
        raise
    errors = [e for e in console_errors(page) if "pageerror" in e or "imrec" in e.lower()]
    page.context.close()
    assert not errors, "browser errors:\n" + "\n".join(errors)
