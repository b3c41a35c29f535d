"""The shipped artifacts: what the wheel and the sdist contain, and a wheel installed elsewhere.

The wheel is built offline from the checkout (``pip wheel --no-build-isolation`` with the
installed hatchling) and installed into a fresh virtual environment that sees the test
environment's dependencies but not the checkout: the widgets must find their front end inside
the installed package, and the ``imrec`` command must work from that environment's ``bin/``.

``build_wheel``, ``make_venv`` and ``venv_env`` are reused by ``test_browser_pip_install.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from imrec_widgets import __version__
from imrec_widgets.cli import build_parser
from imrec_widgets.samples import write_sample_photos

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "imrec_widgets"
DIST_NAME = "imrec-widgets"


# --------------------------------------------------------------------------------------------
# Helpers (also used by the browser test of `%pip install`)
# --------------------------------------------------------------------------------------------


def _run(command: list[str | os.PathLike[str]], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(map(str, command))}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )
    return result


def build_wheel(dest: Path, source: Path = REPO_ROOT) -> Path:
    """Build the project's wheel into ``dest`` offline (the installed hatchling, no isolation)."""
    dest.mkdir(parents=True, exist_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            source,
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            dest,
        ],
        cwd=dest,
    )
    (wheel,) = dest.glob(f"{PACKAGE}-*.whl")
    return wheel


def build_sdist(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", dest], cwd=REPO_ROOT)
    (sdist,) = dest.glob(f"{PACKAGE}-*.tar.gz")
    return sdist


def _is_this_project(name: str) -> bool:
    # the editable install's dist-info and its .pth (which puts the checkout on sys.path)
    normalized = name.lower().replace("-", "_")
    return normalized.startswith(PACKAGE) or (normalized.endswith(".pth") and PACKAGE in normalized)


def make_venv(path: Path) -> Path:
    """A fresh virtual environment that sees the test environment's packages, not this project.

    Installing every heavy dependency again would take minutes and need the network, so the
    new environment gets a ``.pth`` line naming a folder of symlinks to everything in this
    environment's site-packages except imrec-widgets itself (its dist-info, and the editable
    install's ``.pth`` that would put the checkout on ``sys.path``). A plain ``.pth`` path
    line comes after the environment's own site-packages and its ``.pth`` files are not run.
    pip comes from there too (``--without-pip`` saves the ensurepip step). Returns the python.
    """
    deps = path / "deps"
    deps.mkdir(parents=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    platlib = Path(sysconfig.get_paths()["platlib"])
    for site in dict.fromkeys([purelib, platlib]):
        for entry in site.iterdir():
            if not _is_this_project(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    venv = path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=path)
    python = venv / "bin" / "python"
    new_site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=path,
        env=venv_env(venv),
    ).stdout.strip()
    Path(new_site, "_imrec_test_dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    return python


def venv_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a process run "inside" ``venv``: no PYTHONPATH, its bin/ first."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"  # everything is local; never wait on a package index
    env.update(extra)
    return env


def frontend_files() -> set[str]:
    """The files the widgets load from ``static/``: each ``_esm``/``_css = STATIC_DIR / "name"``
    of their modules (one ES module per widget: it imports no other file)."""
    names: set[str] = set()
    for source in sorted((REPO_ROOT / PACKAGE / "widgets").glob("*.py")):
        text = source.read_text(encoding="utf-8")
        names.update(
            re.findall(r"""^\s*_(?:esm|css) = STATIC_DIR / ["']([^"']+)["']""", text, re.M)
        )
    return names


def subcommands() -> list[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(action.choices)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    dest = tmp_path_factory.mktemp("dist")
    t0 = time.monotonic()
    wheel = build_wheel(dest / "wheel")
    sdist = build_sdist(dest / "sdist")
    print(f"\nbuilt {wheel.name} and {sdist.name} in {time.monotonic() - t0:.1f}s")
    return wheel, sdist


@pytest.fixture(scope="module")
def wheel_names(artifacts) -> set[str]:
    with zipfile.ZipFile(artifacts[0]) as archive:
        return set(archive.namelist())


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_dir_lists_the_lazy_public_names_without_importing_them():
    code = (
        "import sys, imrec_widgets\n"
        "names = dir(imrec_widgets)\n"
        "print(sorted(set(imrec_widgets.__all__) - set(names)), 'anywidget' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "False"], done.stdout + done.stderr


def test_the_umap_notebook_says_how_long_the_first_map_takes():
    """The first map was 74 s on the 2-core machine (numba compiling), not the ~15 s once said."""
    notebook = json.loads((REPO_ROOT / "notebooks" / "02_explore_umap.ipynb").read_text())
    source = "".join("".join(cell["source"]) for cell in notebook["cells"])
    assert "~15 s" not in source
    assert "first map on a new machine takes a minute or more while numba compiles" in source


def test_the_widgets_front_end_files_are_known():
    names = frontend_files()
    assert names == {
        "search_widget.js",
        "search_widget.css",
        "umap_map.js",
        "umap_map.css",
        "duplicates_widget.js",
        "duplicates_widget.css",
        "selection_gallery.js",
        "selection_gallery.css",
    }
    # and nothing else is there
    assert {p.name for p in (REPO_ROOT / PACKAGE / "static").iterdir()} == names
    for name in names:
        text = (REPO_ROOT / PACKAGE / "static" / name).read_text(encoding="utf-8")
        assert not re.search(r"^\s*import\b", text, re.M), f"{name} imports another file"


def test_wheel_carries_the_package_front_end_and_notebooks(artifacts, wheel_names):
    wheel, _ = artifacts
    assert wheel.name == f"{PACKAGE}-{__version__}-py3-none-any.whl"

    modules = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / PACKAGE).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules - wheel_names == set(), "package modules missing from the wheel"
    assert f"{PACKAGE}/py.typed" in wheel_names, "the type-hints marker is not shipped"

    static = {n.removeprefix(f"{PACKAGE}/static/") for n in wheel_names if "/static/" in n}
    for name in sorted(frontend_files()):
        assert f"{PACKAGE}/static/{name}" in wheel_names, f"{name} (loaded by a widget) not shipped"
    # the package's static/ as the checkout has it, and nothing else (js/ holds tests, config)
    assert (
        static == {p.name for p in (REPO_ROOT / PACKAGE / "static").iterdir()} == frontend_files()
    )

    notebooks = {p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks, "no example notebooks in the checkout"
    assert {f"{PACKAGE}/notebooks/{n}" for n in notebooks} <= wheel_names
    assert {n for n in wheel_names if n.startswith(f"{PACKAGE}/notebooks/")} == {
        f"{PACKAGE}/notebooks/{n}" for n in notebooks
    }

    junk = [
        n
        for n in wheel_names
        if re.search(r"(^|/)(__pycache__|\.ipynb_checkpoints|tests?)/|\.pyc$|^(js|notebooks)/", n)
    ]
    assert junk == []

    dist_info = f"{PACKAGE}-{__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert re.search(r"^imrec = imrec_widgets\.cli:main$", entry_points, re.M), entry_points
    assert f"\nVersion: {__version__}\n" in metadata
    for requirement in ("anywidget", "ipywidgets", "bqplot", "zarr", "torch"):
        assert re.search(rf"^Requires-Dist: {requirement}\b", metadata, re.M), requirement
    assert f"{dist_info}/licenses/LICENSE" in wheel_names
    print(f"\n{wheel.name}: {len(wheel_names)} files, {wheel.stat().st_size / 1024:.0f} KiB")


def test_sdist_carries_sources_tests_and_builds_the_same_wheel(artifacts, wheel_names, tmp_path):
    wheel, sdist = artifacts
    top = f"{PACKAGE}-{__version__}"
    with tarfile.open(sdist) as archive:
        names = {n.removeprefix(f"{top}/") for n in archive.getnames()}
        archive.extractall(tmp_path, filter="data")

    def checkout(pattern: str) -> set[str]:
        return {
            p.relative_to(REPO_ROOT).as_posix()
            for p in REPO_ROOT.glob(pattern)
            if p.is_file() and "__pycache__" not in p.parts
        }

    for pattern in ("js/**/*", "notebooks/*.ipynb", "tests/*.py", "imrec_widgets/**/*.py"):
        expected = checkout(pattern)
        assert expected, pattern
        assert expected - names == set(), f"{pattern}: missing from the sdist"
    assert {"js/tests/search_widget.test.mjs", "js/tsconfig.json"} <= names
    assert "tests/test_packaging.py" in names
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= names
    assert not [n for n in names if re.match(r"(\.venv|test-artifacts|dist|\.git)/", n)]
    assert not [n for n in names if "__pycache__" in n or ".ipynb_checkpoints" in n]

    rebuilt = build_wheel(tmp_path / "from-sdist", source=tmp_path / top)
    with zipfile.ZipFile(rebuilt) as archive:
        rebuilt_names = set(archive.namelist())
    assert rebuilt.name == wheel.name
    assert rebuilt_names == wheel_names


_CHECK_INSTALLED = """\
import argparse, importlib.metadata as md, json, sys
from packaging.requirements import Requirement

import imrec_widgets
from imrec_widgets import SearchWidget, UmapExplorer
from imrec_widgets.cli import build_parser, example_notebooks
from imrec_widgets.widgets import _base

parser = build_parser()
(sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
dist = md.distribution("imrec-widgets")
unmet = []
for text in dist.requires or ():
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        unmet.append(f"{text} (not installed)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{text} (found {version})")
print(json.dumps({
    "file": imrec_widgets.__file__,
    "version": imrec_widgets.__version__,
    "dist_version": dist.version,
    "dist_location": str(dist.locate_file("")),
    "sys_path": sys.path,
    "static_dir": str(_base.STATIC_DIR),
    "esm": str(SearchWidget._esm),
    "css": str(SearchWidget._css),
    "umap_module": UmapExplorer.__module__,
    "notebooks": [str(p) for p in example_notebooks()],
    "commands": sorted(sub.choices),
    "unmet": unmet,
}))
"""


def test_installed_wheel_works_without_the_checkout(artifacts, tmp_path):
    wheel, _ = artifacts
    t0 = time.monotonic()
    python = make_venv(tmp_path / "env")
    venv = python.parent.parent
    env = venv_env(venv)
    work = tmp_path / "elsewhere"  # never the checkout: it must not end up on sys.path
    work.mkdir()

    probe = "import importlib.util; print(importlib.util.find_spec('imrec_widgets'))"
    assert _run([python, "-c", probe], cwd=work, env=env).stdout.strip() == "None", (
        "the fresh environment sees the checkout before anything is installed"
    )
    _run([python, "-m", "pip", "install", "--no-deps", wheel], cwd=work, env=env)
    print(f"\nvenv + pip install: {time.monotonic() - t0:.1f}s")

    script = work / "check_installed.py"
    script.write_text(_CHECK_INSTALLED, encoding="utf-8")
    info = json.loads(_run([python, script], cwd=work, env=env).stdout)
    site = Path(info["dist_location"]).resolve()
    package = site / PACKAGE
    assert site.is_relative_to(venv.resolve()) and site.name == "site-packages", site
    assert Path(info["file"]).resolve() == package / "__init__.py"
    assert not any(Path(p or ".").resolve() == REPO_ROOT for p in info["sys_path"])
    assert info["version"] == info["dist_version"] == __version__
    assert info["unmet"] == [], "the wheel's requirements are not met by the environment"
    assert info["umap_module"] == "imrec_widgets.widgets.umap_explorer"

    # the front end comes from site-packages/imrec_widgets/static/, the files as they are
    assert Path(info["static_dir"]).resolve() == package / "static"
    assert info["esm"] == (package / "static" / "search_widget.js").read_text(encoding="utf-8")
    assert info["esm"] == (REPO_ROOT / PACKAGE / "static" / "search_widget.js").read_text()
    assert "export default { render };" in info["esm"]
    assert info["css"] == (package / "static" / "search_widget.css").read_text(encoding="utf-8")
    assert "imrec-dropzone" in info["css"]
    notebooks = [Path(p).resolve() for p in info["notebooks"]]
    assert notebooks and all(p.parent == package / "notebooks" for p in notebooks)

    # the console script of the new environment
    imrec = venv / "bin" / "imrec"
    assert imrec.is_file()
    version = _run([imrec, "--version"], cwd=work, env=env).stdout.strip()
    assert version == f"imrec {info['version']}"
    help_text = _run([imrec, "--help"], cwd=work, env=env).stdout
    assert info["commands"] == subcommands()
    listed = set(re.findall(r"^\s{4}(\w+)\b", help_text, re.M))
    assert set(info["commands"]) <= listed, help_text

    # and it does its job: index a few real photos, search one of them
    photos = work / "photos"
    write_sample_photos(photos)
    _run(
        [imrec, "index", photos, "--features", "rgb,dhash,thumb", "--workers", "0", "-q"],
        cwd=work,
        env=env,
    )
    query = next(photos.rglob("coffee.jpg"))
    found = json.loads(
        _run(
            [imrec, "search", query, "--root", photos, "--mode", "rgb", "-k", "3", "--json"],
            cwd=work,
            env=env,
        ).stdout
    )
    assert len(found["hits"]) == 3
    assert Path(found["hits"][0]["path"]).name == "coffee.jpg"
    print(f"installed wheel checks: {time.monotonic() - t0:.1f}s")
