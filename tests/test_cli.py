from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from imrec_widgets import __version__
from imrec_widgets.cli import lab_command, main


def imrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imrec_widgets.cli", *args], capture_output=True, text=True
    )


def test_index_then_info(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["index", str(photos), "--features", "rgb,dhash,thumb", "-q", "--workers", "0"]) == 0
    )
    line = capsys.readouterr().out.strip()
    count = len(list(photos.rglob("*.jpg")))
    assert re.fullmatch(
        rf"indexed {count} images in [\d.]+ s \([\d.]+ images/s\): {count} new, 0 changed, "
        r"0 removed, 0 errors, 0 unchanged",
        line,
    ), line

    assert main(["index", str(photos), "-q"]) == 0
    assert "0 new, 0 changed, 0 removed, 0 errors" in capsys.readouterr().out

    assert main(["info", str(photos)]) == 0
    out = capsys.readouterr().out
    assert f"{count} ok, 0 error, 0 removed" in out
    assert "features    : dhash, rgb, thumb" in out

    assert main(["info", str(photos), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["ok"] == count and info["features_bytes"] > 0


def test_index_dir_option(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "kept-elsewhere"
    assert (
        main(["index", str(photos), "--index-dir", str(target), "--features", "ahash", "-q"]) == 0
    )
    assert (target / "catalog.sqlite").exists()
    assert not (photos / ".imrec").exists()


def test_index_vector_dtype_option(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "index",
                str(photos),
                "--features",
                "rgb",
                "--vector-dtype",
                "int8",
                "-q",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert (photos / ".imrec" / "features.zarr" / "quantizer" / "rgb").is_dir()
    capsys.readouterr()
    assert main(["info", str(photos), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["vector_dtype"] == "int8"


def test_user_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    result = imrec("index", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"imrec index: error: image folder not found: {tmp_path / 'missing'}"
    )
    assert "Traceback" not in result.stderr

    result = imrec("index", str(tmp_path), "--features", "colour")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown feature 'colour'" in result.stderr


def test_version_and_help() -> None:
    assert imrec("--version").stdout.strip() == f"imrec {__version__}"
    help_text = imrec("--help").stdout
    # every subcommand listed with its one-line help (not just words that appear anyway)
    for command in ("index", "search", "umap", "demo", "info", "export", "evaluate", "duplicates"):
        assert re.search(rf"^\s+{command}\s+\S", help_text, re.M), f"{command} missing from --help"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder made by ``imrec demo --no-lab`` (photos indexed with every feature) and its output."""
    folder = tmp_path_factory.mktemp("demo") / "imrec-demo"
    result = imrec("demo", str(folder), "--no-lab", "-q")
    assert result.returncode == 0, result.stderr
    return folder, result.stdout


@pytest.mark.slow
def test_demo_writes_indexes_and_copies_the_notebooks(demo: tuple[Path, str]) -> None:
    folder, out = demo
    photos = folder / "photos"
    count = len(list(photos.rglob("*.jpg")))
    assert count >= 80 and f"wrote {count} sample photos" in out
    assert f"{count} new, 0 changed, 0 removed, 0 errors" in out
    assert (folder / "01_quickstart.ipynb").is_file()
    assert f"IMREC_PHOTOS={photos}" in out


@pytest.mark.slow
def test_demo_rerun_changes_nothing_that_exists(demo: tuple[Path, str]) -> None:
    folder, _out = demo
    photos = folder / "photos"
    notebook = folder / "01_quickstart.ipynb"
    notebook.write_text(notebook.read_text().replace("quick start", "quick start, my notes"))
    edited = notebook.read_text()
    missing = photos / "objects" / "coffee_warm.jpg"
    missing.unlink()
    before = {path: path.stat().st_mtime_ns for path in photos.rglob("*.jpg")}

    result = imrec("demo", str(folder), "--no-lab", "-q")
    assert result.returncode == 0, result.stderr
    assert "wrote 1 sample photos" in result.stdout
    assert f"0 new, 1 changed, 0 removed, 0 errors, {len(before)} unchanged" in result.stdout
    assert missing.is_file()
    assert {path: path.stat().st_mtime_ns for path in before} == before  # none rewritten
    assert notebook.read_text() == edited
    assert "kept your 01_quickstart.ipynb" in result.stdout

    result = imrec("demo", str(folder), "--no-lab", "-q")
    assert "sample photos already in" in result.stdout
    assert f"0 new, 0 changed, 0 removed, 0 errors, {len(before) + 1} unchanged" in result.stdout


def test_demo_folder_default_is_the_one_the_readme_names() -> None:
    help_text = " ".join(imrec("demo", "--help").stdout.split())
    assert "(default ~/imrec-demo)" in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "to `~/imrec-demo`" in readme
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "DEMO_DIR ?= $(HOME)/imrec-demo" in makefile


def test_lab_command_allows_root_only_as_root(tmp_path: Path) -> None:
    as_root = lab_command(tmp_path, open_browser=True, as_root=True)
    assert "--allow-root" in as_root and "--no-browser" not in as_root
    as_user = lab_command(tmp_path, open_browser=False, as_root=False)
    assert "--allow-root" not in as_user and "--no-browser" in as_user
    assert f"--ServerApp.root_dir={tmp_path}" in as_user


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.slow
def test_demo_starts_jupyterlab_and_prints_its_url(demo: tuple[Path, str], tmp_path: Path) -> None:
    """`imrec demo` as it runs here (root in CI): the printed URL answers, token and all."""
    folder, _out = demo
    # Jupyter's own folders in tmp_path: no user config, and the server's files land here.
    env = {
        **os.environ,
        **{
            name: str(tmp_path / name.lower())
            for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")
        },
    }
    with open(tmp_path / "stderr.log", "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "imrec_widgets.cli", "demo", str(folder), "--no-browser", "-q"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            start_new_session=True,
        )
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(server.stdout, printed), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(queue.Empty):
                seen.append(printed.get(timeout=1))
                found = re.search(r"JupyterLab is running at (\S+)", seen[-1])
                url = found and found[1]
        log = (tmp_path / "stderr.log").read_text(errors="replace")[-3000:]
        assert url, f"no URL printed; stdout: {seen}\nstderr: {log}"
        assert "/lab/tree/01_quickstart.ipynb?token=" in url
        assert ("--allow-root" in "".join(seen)) == (os.geteuid() == 0)
        status = None
        while status != 200 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    status, page = response.status, response.read().decode()
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        assert status == 200 and "JupyterLab" in page
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def test_info_on_a_folder_above_an_index_lists_the_indexes_below(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", str(photos), "--features", "dhash", "-q", "--workers", "0"]) == 0
    capsys.readouterr()
    above = photos.parent
    assert main(["info", str(above)]) == 0
    out = capsys.readouterr().out
    assert "no index yet" not in out
    assert f"  {photos}\n" in out and f"imrec info {photos}" in out
    assert main(["info", str(above), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexes_below"] == [str(photos)]


def test_info_errors_lists_the_unreadable_files(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "notes.jpg").write_text("not a picture\n")
    assert main(["index", str(photos), "--features", "dhash", "-q", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["info", str(photos)]) == 0
    assert "1 error, 0 removed (list them with --errors)" in capsys.readouterr().out
    assert main(["info", str(photos), "--errors"]) == 0
    out = capsys.readouterr().out
    assert "unreadable  : 1 file\n" in out
    assert f"  {photos / 'notes.jpg'}: not a recognised image format" in out
    assert main(["info", str(photos), "--errors", "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert errors == [{"path": str(photos / "notes.jpg"), "error": "not a recognised image format"}]


def test_cli_errors_say_what_to_type(photos: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = imrec(
        "search", str(photos / "animals" / "chelsea.jpg"), "--root", str(empty), "--mode", "rgb"
    )
    assert result.returncode == 1 and "update()" not in result.stderr
    assert result.stderr.strip().endswith(f"run `imrec index {empty}`")

    assert main(["index", str(photos), "--features", "rgb,dhash", "-q", "--workers", "0"]) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    result = imrec("search", str(notes), "--root", str(photos), "--mode", "rgb")
    assert result.returncode == 1
    assert result.stderr.strip() == f"imrec search: error: {notes}: not a recognised image format"

    result = imrec("duplicates", str(photos), "--mode", "rgb")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--max-distance" in result.stderr and "max_distance" not in result.stderr

    missing = tmp_path / "labels.csv"
    result = imrec("evaluate", str(photos), "--labels", str(missing))
    assert result.returncode == 1
    assert result.stderr.strip() == f"imrec evaluate: error: labels file not found: {missing}"


def test_make_says_what_it_installs_before_the_long_quiet_install() -> None:
    repo = Path(__file__).resolve().parents[1]
    steps = subprocess.run(
        ["make", "-n", "-B", "venv", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    installs = [i for i, step in enumerate(steps) if "pip install" in step]
    announced = [
        i for i, step in enumerate(steps) if step.startswith("echo") and "a few minutes" in step
    ]
    assert installs and announced and announced[0] < installs[0], steps
    assert (
        "torch torchvision --index-url https://download.pytorch.org/whl/cpu" in steps[installs[0]]
    )
    troubleshooting = (repo / "docs" / "troubleshooting.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in troubleshooting
    assert "CUDA" in troubleshooting and "GB" in troubleshooting
