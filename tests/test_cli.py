from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imrec_widgets import __version__
from imrec_widgets.cli import main


def imrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imrec_widgets.cli", *args], capture_output=True, text=True)


def test_index_then_info(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(photos), "--features", "rgb,dhash,thumb", "-q", "--workers", "0"]) == 0
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
    assert main(["index", str(photos), "--index-dir", str(target), "--features", "ahash", "-q"]) == 0
    assert (target / "catalog.sqlite").exists()
    assert not (photos / ".imrec").exists()


def test_user_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    result = imrec("index", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"imrec index: error: image folder not found: {tmp_path / 'missing'}"
    assert "Traceback" not in result.stderr

    result = imrec("index", str(tmp_path), "--features", "colour")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown feature 'colour'" in result.stderr


def test_version_and_help() -> None:
    assert imrec("--version").stdout.strip() == f"imrec {__version__}"
    help_text = imrec("--help").stdout
    assert "index" in help_text and "info" in help_text


def test_demo_writes_indexes_and_copies_the_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(tmp_path / "demo"), "--no-lab", "-q"]) == 0
    out = capsys.readouterr().out
    photos = tmp_path / "demo" / "photos"
    count = len(list(photos.rglob("*.jpg")))
    assert count >= 80 and f"{count} new, 0 changed, 0 removed, 0 errors" in out
    assert (tmp_path / "demo" / "01_quickstart.ipynb").is_file()
    assert f"IMREC_PHOTOS={photos}" in out


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


def test_info_errors_lists_the_unreadable_files(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    result = imrec("search", str(photos / "animals" / "chelsea.jpg"), "--root", str(empty), "--mode", "rgb")
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
