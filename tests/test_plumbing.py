"""The plumbing every writer and long job shares: ``derived.atomic_file`` and
``progress.progress_bar``, and checks that nothing writes or shows progress another way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_structure import parsed

import imrec_widgets
from imrec_widgets import derived
from imrec_widgets.progress import StageBar, progress_bar

PACKAGE = Path(imrec_widgets.__file__).resolve().parent


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"old")
    seen = []

    def before_replace(temporary: Path) -> None:
        seen.append((temporary.name, temporary.read_bytes(), path.read_bytes()))

    with derived.atomic_file(path, hidden=True, before_replace=before_replace) as handle:
        handle.write(b"new ")
        handle.write(b"rows")
    assert path.read_bytes() == b"new rows"
    ((temporary, content, meanwhile),) = seen
    assert temporary.startswith(".labels.csv.tmp") and content == b"new rows"
    assert meanwhile == b"old"  # until the rename, readers see the old file
    assert _leftovers(tmp_path, "labels.csv") == []

    with pytest.raises(RuntimeError, match="stopped"), derived.atomic_file(path) as handle:
        handle.write(b"half")
        raise RuntimeError("stopped")
    assert path.read_bytes() == b"new rows"
    assert _leftovers(tmp_path, "labels.csv") == []
    assert derived.atomic_write(path, [b"a", memoryview(b"bc")])[0] == 3
    assert path.read_bytes() == b"abc"


def test_a_planted_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    derived.atomic_write(folder / "config.json", b"{}")
    assert outside.read_bytes() == b"keep"
    assert not (folder / "config.json").is_symlink()
    assert (folder / "config.json").read_bytes() == b"{}"


def test_a_finished_file_is_moved_over_the_target(tmp_path: Path) -> None:
    (tmp_path / "staged.npz").write_bytes(b"map")
    (tmp_path / "umap.npz").write_bytes(b"old map")
    derived.durable_replace(tmp_path / "staged.npz", tmp_path / "umap.npz")
    assert _leftovers(tmp_path, "umap.npz") == []
    assert (tmp_path / "umap.npz").read_bytes() == b"map"


def _calls(path: Path) -> list[str]:
    """Dotted names of the calls in a module (``os.replace``, ``tempfile.mkstemp``, ...)."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name):
                found.append(f"{owner.id}.{node.func.attr}")
    return found


# Files of the user's that are moved or copied without ever replacing one (no-clobber links and
# renames), and exporters that write by path into a temporary folder published by
# ``derived.durable_replace``: not writes of a file the package owns.
NOT_ATOMIC_WRITES = {
    "moves.py": {"os.rename"},
    "export/files.py": {"os.rename"},
    "features/engines.py": {"tempfile.mkstemp", "tempfile.mkdtemp"},
}


def test_every_file_the_package_writes_goes_through_derived() -> None:
    renames = {"os.replace", "os.rename", "tempfile.mkstemp", "tempfile.mkdtemp"}
    renames |= {"tempfile.NamedTemporaryFile"}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "derived.py":
            continue
        used = set(_calls(path)) & renames
        assert used <= NOT_ATOMIC_WRITES.get(name, set()), (name, used)


def test_one_progress_display_for_every_long_job() -> None:
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "from tqdm" in source or "import tqdm" in source:
            importers.append(path.relative_to(PACKAGE).as_posix())
    assert importers == ["progress.py"]
    with progress_bar(3, False, desc="indexing") as quiet:
        assert quiet.disable
    assert progress_bar(0, True, desc="nothing to do").disable
    with progress_bar(3, True, desc="indexing", unit="img") as shown:
        shown.update(2)
        assert (shown.n, shown.total, shown.unit, shown.disable) == (2, 3, "img", False)


def test_a_stage_bar_resets_between_stages_and_shows_stages_with_nothing_to_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm.auto

    bars: list[tqdm.auto.tqdm] = []

    class Recorded(tqdm.auto.tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    stages = StageBar()
    stages.show("placing 0 images", 0, 0)  # nothing to count: shown all the same
    ((bar,),) = (bars,)
    assert not bar.disable and bar.desc == "placing 0 images" and bar.leave is False
    stages.show("reading features", 3, 10)
    assert (bar.desc, bar.n, bar.total, stages.stage) == (
        "reading features",
        3,
        10,
        "reading features",
    )
    stages.show("reading features", 10, 10)
    stages.show("PCA", 0, 1)  # a new stage starts the same bar again
    assert (bar.desc, bar.n, bar.total) == ("PCA", 0, 1)
    stages.describe("PCA (a note)")
    assert (bar.desc, stages.stage) == ("PCA (a note)", "PCA")
    stages.close()
    assert bars == [bar] and bar.disable  # closed, and never a second bar


class _Handle:
    def __init__(self, objs: tuple[object, ...]) -> None:
        self.objs, self.updates = objs, []

    def update(self, *objs: object, **kwargs: object) -> None:
        self.updates.append((objs, kwargs))


def test_notebook_bars_are_removed_once_the_job_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed widget bar left in the saved notebook reads "Error displaying widget: model not
    found" after every reload: every bar shown while a StageBar is open is emptied on close."""
    import tqdm.notebook

    shown: list[tuple[tuple[object, ...], dict[str, object]]] = []
    handles: list[_Handle] = []

    def display(*objs: object, **kwargs: object) -> _Handle:  # IPython's, as in a notebook
        shown.append((objs, kwargs))
        handles.append(_Handle(objs))
        return handles[-1]

    monkeypatch.setattr(tqdm.notebook, "display", display)
    stages = StageBar()
    tqdm.notebook.display("our bar")
    tqdm.notebook.display("umap-learn's epochs")
    assert [kwargs for _, kwargs in shown] == [{"display_id": True}] * 2
    stages.close()
    assert [handle.updates for handle in handles] == [[(({"text/plain": ""},), {"raw": True})]] * 2
    assert tqdm.notebook.display is display  # put back as it was
    tqdm.notebook.display("a later bar")
    assert shown[-1] == (("a later bar",), {})
