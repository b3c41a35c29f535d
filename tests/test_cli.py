from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from index_cache import IndexOf

from imrec_widgets import __version__
from imrec_widgets.cli import lab_command, main, plural, start_umap_warm_up, terminal_hint


def imrec_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``imrec ARGS`` run as its own process (``python -m imrec_widgets.cli``)."""
    return subprocess.run(
        [sys.executable, "-m", "imrec_widgets.cli", *args], capture_output=True, text=True
    )


@pytest.fixture
def imrec(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``imrec(*args)``: what ``imrec ARGS`` prints and returns, run in this process by the
    console script's own ``main`` (what a process of its own adds is tested where it is the
    point: the exit status in test_version_and_help, names a terminal would mangle in
    test_scan_and_shares). ``--help``/``--version`` end in ``SystemExit``, as in the script."""
    monkeypatch.setenv("COLUMNS", "80")  # argparse's width for a pipe, as in a subprocess

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["imrec", *args], code, out, err)

    return run


@pytest.fixture
def planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """`imrec info` fails with a plain TypeError, as a bug in the package would."""
    from imrec_widgets import cli

    def broken(args: object) -> int:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)


def test_a_bug_is_printed_with_its_traceback_and_a_request_to_report_it(
    planted_bug: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "TypeError: unsupported operand type(s) for +: 'int' and 'str'" in err
    assert err.splitlines()[-1] == (
        "imrec info: this is a bug in imrec-widgets, please report it with the traceback above"
    )
    assert "error:" not in err  # never shown as if the user caused it


def test_a_user_error_is_one_line_and_debug_adds_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["search", "x.jpg", "--root", str(tmp_path), "--weights", "embedding=1", "--mode", "rgb"]
    expected = (
        "imrec search: error: --weights mixes modes and goes with --mode hybrid, not --mode rgb; "
        "drop --mode (or --weights)"
    )
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [expected]

    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "imrec_widgets.errors.UsageError: --weights mixes modes" in err
    assert err.splitlines()[-1] == expected

    monkeypatch.setenv("IMREC_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1] == expected

    monkeypatch.setenv("IMREC_DEBUG", "0")
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [expected]


def test_a_system_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imrec_widgets import cli

    def disk_full(args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(cli.COMMANDS, "info", disk_full)
    assert main(["info", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "imrec info: error: [Errno 28] No space left on device"
    ]


def test_a_missing_file_named_by_the_user_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photos").mkdir()
    argv = ["tag", str(tmp_path / "photos"), "cats", "--from-file", str(tmp_path / "none.txt")]
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"imrec tag: error: --from-file: no such file {tmp_path / 'none.txt'}"
    ]


def test_user_errors_the_package_raises_are_imrec_errors_that_keep_their_builtin() -> None:
    from imrec_widgets.errors import ImrecError, NotFoundError, UsageError
    from imrec_widgets.features import check_mode_metric

    with pytest.raises(UsageError) as raised:
        check_mode_metric("rgb", "hamming")
    assert isinstance(raised.value, (ImrecError, ValueError))
    with pytest.raises(NotFoundError) as missing:
        from imrec_widgets import ImageIndex

        ImageIndex.open("/no/such/folder/anywhere")
    assert isinstance(missing.value, (ImrecError, FileNotFoundError))


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


def test_user_errors_are_one_line_and_non_zero(
    tmp_path: Path, imrec: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = imrec_process("index", str(tmp_path / "missing"))  # the process's exit status
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"imrec index: error: image folder not found: {tmp_path / 'missing'}"
    )
    assert "Traceback" not in result.stderr

    result = imrec("index", str(tmp_path), "--features", "colour")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown feature 'colour'" in result.stderr


def test_version_and_help(imrec: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    assert imrec_process("--version").stdout.strip() == f"imrec {__version__}"  # entry point
    help_text = imrec("--help").stdout
    # every subcommand listed with its one-line help (not just words that appear anyway)
    for command in ("index", "search", "umap", "demo", "info", "export", "evaluate", "duplicates"):
        assert re.search(rf"^\s+{command}\s+\S", help_text, re.M), f"{command} missing from --help"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder made by ``imrec demo --no-lab`` (photos indexed with every feature) and its output."""
    folder = tmp_path_factory.mktemp("demo") / "imrec-demo"
    result = imrec_process("demo", str(folder), "--no-lab", "--no-warm-up", "-q")
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
    hint = terminal_hint()  # `make demo` runs .venv/bin/imrec without activating the venv
    if hint:
        assert out.strip().splitlines()[-1] == hint


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

    result = imrec_process("demo", str(folder), "--no-lab", "--no-warm-up", "-q")
    assert result.returncode == 0, result.stderr
    assert "wrote 1 sample photo (" in result.stdout  # not "1 sample photos"
    assert f"0 new, 1 changed, 0 removed, 0 errors, {len(before)} unchanged" in result.stdout
    assert missing.is_file()
    assert {path: path.stat().st_mtime_ns for path in before} == before  # none rewritten
    assert notebook.read_text() == edited
    assert "kept your 01_quickstart.ipynb" in result.stdout

    result = imrec_process("demo", str(folder), "--no-lab", "--no-warm-up", "-q")
    assert "sample photos already in" in result.stdout
    assert f"0 new, 0 changed, 0 removed, 0 errors, {len(before) + 1} unchanged" in result.stdout


def test_demo_folder_default_is_the_one_the_readme_names(
    imrec: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
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
            [
                sys.executable,
                *("-m", "imrec_widgets.cli", "demo", str(folder)),
                *("--no-browser", "--no-warm-up", "-q"),
            ],
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
        # JupyterLab's banner goes to its log, never between the demo's lines
        assert not any("To access the server" in line for line in seen), seen
        banner = (folder / "jupyterlab.log").read_text(errors="replace")
        assert "ServerApp" in banner
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
    photos: Path, capsys: pytest.CaptureFixture[str], index_of: IndexOf
) -> None:
    index_of(photos, features=["dhash"]).close()
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


def test_cli_errors_say_what_to_type(
    photos: Path,
    tmp_path: Path,
    imrec: Callable[..., subprocess.CompletedProcess[str]],
    index_of: IndexOf,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = imrec(
        "search", str(photos / "animals" / "chelsea.jpg"), "--root", str(empty), "--mode", "rgb"
    )
    assert result.returncode == 1 and "update()" not in result.stderr
    assert result.stderr.strip().endswith(f"run `imrec index {empty}`")

    index_of(photos, features=["rgb", "dhash"]).close()
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


def _make_venv_steps() -> list[str]:
    """What `make venv` would run (with a torch index URL), one command a line."""
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(
        ["make", "-n", "-B", "venv", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def test_make_says_what_it_installs_before_the_long_quiet_install() -> None:
    steps = _make_venv_steps()
    installs = [i for i, step in enumerate(steps) if "pip install" in step]
    announced = [
        i for i, step in enumerate(steps) if step.startswith("echo") and "a few minutes" in step
    ]
    assert installs and announced and announced[0] < installs[0], steps
    assert (
        "torch torchvision --index-url https://download.pytorch.org/whl/cpu" in steps[installs[0]]
    )
    troubleshooting = (
        Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
    ).read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in troubleshooting
    assert "CUDA" in troubleshooting and "GB" in troubleshooting


def test_search_output_has_headers_whole_bits_and_no_rounding_noise(
    photos: Path, capsys: pytest.CaptureFixture[str], index_of: IndexOf
) -> None:
    index_of(photos, features=["rgb", "dhash"]).close()
    chelsea = str(photos / "animals" / "chelsea.jpg")
    assert main(["search", chelsea, "--root", str(photos), "--mode", "dhash", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["rank", "distance", "path"]
    rank, distance, path = lines[2].split()
    assert (rank, distance, path) == ("1", "0", chelsea)  # a bit count, not "0.0000"
    assert all(re.fullmatch(r"\d+", line.split()[1]) for line in lines[2:])
    # its own copy by cosine: float32 rounding (~2e-7) is no distance
    for name in sorted(p.name for p in photos.rglob("*.jpg"))[:6]:
        query = str(next(photos.rglob(name)))
        assert (
            main(
                [
                    "search",
                    query,
                    "--root",
                    str(photos),
                    "--mode",
                    "rgb",
                    "--metric",
                    "cosine",
                    "-k",
                    "1",
                    "--json",
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["hits"][0]["distance"] == 0.0


def test_search_mistakes_are_answered_in_cli_words(
    photos: Path, imrec: Callable[..., subprocess.CompletedProcess[str]], index_of: IndexOf
) -> None:
    index_of(photos, features=["rgb", "dhash"]).close()
    folder = photos / "animals"
    result = imrec("search", str(folder), "--root", str(photos), "--mode", "rgb")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        f"imrec search: error: {folder} is a folder; give image files"
    )
    assert "no such image file" not in result.stderr

    chelsea = str(photos / "animals" / "chelsea.jpg")
    result = imrec("search", chelsea, "--root", str(photos), "--mode", "rgb", "--weights", "rgb=1")
    assert result.returncode == 1
    assert "--weights" in result.stderr and "--mode hybrid" in result.stderr
    assert "weights=" not in result.stderr and "mode='" not in result.stderr
    # --weights alone is a hybrid search
    result = imrec(
        "search", chelsea, "--root", str(photos), "--weights", "rgb=1,dhash=1", "-k", "2"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 nearest by hybrid/")


def test_duplicates_without_groups_and_with_a_header(
    photos: Path, capsys: pytest.CaptureFixture[str], index_of: IndexOf
) -> None:
    index_of(photos, features=["dhash"]).close()
    assert main(["duplicates", str(photos), "--max-distance", "0"]) == 0  # raised IndexError
    assert "group 1" not in capsys.readouterr().out
    shutil.copyfile(photos / "animals" / "chelsea.jpg", photos / "animals" / "chelsea_copy.jpg")
    assert main(["index", str(photos), "-q", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["duplicates", str(photos)]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = lines.index("group 1: 2 identical files")
    assert lines[first + 1].split() == ["distance", "path"]
    assert lines[first + 2].split()[0] == "0"


def test_plural_says_one_photo() -> None:
    assert plural(1, "sample photo") == "1 sample photo"
    assert plural(90, "sample photo") == "90 sample photos"


def test_terminal_hint_says_how_to_get_imrec_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts = Path(sys.executable).parent
    monkeypatch.setenv("PATH", "/nonexistent")
    hint = terminal_hint()
    assert hint is not None and str(scripts) in hint
    if (scripts / "activate").is_file():
        assert f". {scripts / 'activate'}" in hint
    if (scripts / "imrec").is_file():
        monkeypatch.setenv("PATH", str(scripts))
        assert terminal_hint() is None


def test_demo_starts_the_umap_warm_up_in_a_process_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imrec_widgets import numba_cache

    started: list[tuple[list[str], dict]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append((args, kw)))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba_cache, "umap_compiled", lambda: True)
    assert start_umap_warm_up() is None and not started  # compiled already: nothing to do
    monkeypatch.setattr(numba_cache, "umap_compiled", lambda: False)
    log = start_umap_warm_up()
    assert log == tmp_path / "imrec-warm-up.log"
    ((args, options),) = started
    assert args[0] == sys.executable and "warm_umap()" in args[-1]
    assert options["start_new_session"] is True  # outlives `imrec demo` (and its Ctrl-C)


def test_make_shows_the_install_as_it_goes() -> None:
    """`make` was silent for 3.5 minutes of `pip install -q`: pip's own lines, a line per stage."""
    steps = _make_venv_steps()
    installs = [step for step in steps if "pip install" in step]
    assert len(installs) == 2 and not any(" -q" in step for step in installs), installs
    stages = [step for step in steps if step.startswith('echo "==')]
    assert len(stages) == 3 and "activate" in stages[-1]
