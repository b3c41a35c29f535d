"""The README stays one screen that opens with the two commands; the docs site holds the rest.

The site itself is built by `make docs` (`mkdocs build --strict`, in CI): these checks need no
mkdocs, only the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 150
TWO_COMMANDS = "```bash\nmake demo\nmake test\n```"
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def local_targets(markdown: str) -> list[str]:
    """Relative link and image targets of a markdown text, without anchors; code is left out."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [a or b for a, b in LINK.findall(text)]
    return [
        t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")
    ]


def test_the_readme_is_one_screen_that_opens_with_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move text to docs/"
    assert lines[0].startswith("# imrec-widgets")
    first_section = readme.find("\n## ")
    first_code = readme.find("```")
    assert readme.find(TWO_COMMANDS) == first_code, "the first code block is the two commands"
    assert first_code < first_section


def test_ci_builds_the_docs_and_runs_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines() if line.startswith("make ")]
    assert commands == ["make docs", "make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs:.*\n(\t.*\n)*\t.*mkdocs build --strict", makefile, re.M)
    assert re.search(r"^lint:.*\btsc\b", makefile, re.M), "make lint type-checks the JS"
    assert re.search(r"^tsc:\n\t.*tsc -p js/", makefile, re.M)
    assert re.search(r"^test:.*\blint\b", makefile, re.M), "make test lints first"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs" and config["strict"] is True
    pages = nav_pages(config["nav"])
    assert len(pages) == len(set(pages)), "a page is listed twice"
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_links_outside_the_site_point_at_files_that_exist(name):
    """mkdocs checks the links inside docs/; these two files are read on GitHub and PyPI."""
    text = (REPO / name).read_text(encoding="utf-8")
    targets = local_targets(text)
    assert name != "README.md" or len(targets) >= 10
    missing = [t for t in targets if not (REPO / t).exists()]
    assert missing == []


def test_every_benchmark_script_is_in_the_benchmarks_page_with_its_command():
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
    assert scripts
    assert [s for s in scripts if f"python benchmarks/{s}" not in page] == []


def test_the_docs_extra_and_strict_pytest_config(request):
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    docs = re.search(r"^docs = \[(.*)\]$", pyproject, re.M)
    assert docs, "pyproject.toml has a `docs` extra"
    for package in ("mkdocs", "mkdocs-material", "mkdocstrings[python]"):
        assert f'"{package}>=' in docs[1]
    assert {"--strict-config", "--strict-markers"} <= set(request.config.getini("addopts"))


def test_make_test_fast_runs_with_the_projects_pytest_options_but_nbval():
    import tomllib

    addopts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "pytest"
    ]["ini_options"]["addopts"].split()
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    fast = re.search(r"^FAST_ADDOPTS := (.*)$", makefile, flags=re.M)
    assert fast is not None and "--nbval-lax" in addopts
    assert fast.group(1).split() == [opt for opt in addopts if opt != "--nbval-lax"]
    target = makefile.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    assert '-o addopts="$(FAST_ADDOPTS)"' in target and "-p no:nbval" in target
