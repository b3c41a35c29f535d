"""DuplicatesWidget end to end in JupyterLab and Notebook 7: pick another keeper, move the others,
undo — checked on the files and the catalog, not only on the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    DUMP_JSON_HELPER,
    JupyterLabServer,
    app_errors,
    dump_failure,
    new_page,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)

from imrec_widgets import ImageIndex
from imrec_widgets.samples import write_sample_photos

STATE = "dups_state.json"

WIDGET_CELL = """\
from imrec_widgets import DuplicatesWidget, ImageIndex

idx = ImageIndex.open({root!r})
w = DuplicatesWidget(idx)

def _dump(change=None):
    dump_json({state!r}, {{
        "keepers": w.keepers, "groups": len(w.groups), "error": w.error, "summary": w.summary,
        "can_undo": w.can_undo, "searchable": len(idx),
    }})

w.observe(_dump, names=["groups", "error", "summary", "can_undo"])
_dump()
w
"""


def write_collection(folder: Path) -> Path:
    """Sample photos with their variants: each photo and its rescaled copies form a group."""
    from test_moves import write_copies

    samples = folder / "samples"
    write_sample_photos(samples)
    root = folder / "photos"
    write_copies(samples, root)
    ImageIndex.open(root, features=["dhash", "thumb"]).update(progress=False)
    return root


def photos_in(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.jpg")
        if not p.relative_to(root).as_posix().startswith(".")
    }


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_keep_move_undo(browser, tmp_path: Path, app: str) -> None:
    with JupyterLabServer(tmp_path / "server", app=app) as server:
        root = write_collection(server.root_dir)
        before = photos_in(root)
        write_notebook(
            server.root_dir / "dups.ipynb",
            [DUMP_JSON_HELPER, WIDGET_CELL.format(root=str(root), state=STATE)],
        )
        state_file = server.root_dir / STATE
        page = new_page(browser)
        try:
            open_notebook(page, server, "dups.ipynb")
            run_all_cells(page)
            first = wait_for_file(state_file, lambda s: s["groups"] == 3, timeout=60)
            page.locator(".imrec-dups-group").first.wait_for(timeout=30_000)
            assert page.locator(".imrec-dups-item").count() == 9
            # every thumbnail is drawn
            page.wait_for_function(
                "() => [...document.querySelectorAll('.imrec-dups-image')]"
                ".every((img) => img.complete && img.naturalWidth > 0)",
                timeout=30_000,
            )
            other = (
                page.locator(".imrec-dups-group")
                .first.locator(".imrec-dups-item:not(.imrec-dups-keep)")
                .first
            )
            chosen = int(other.get_attribute("data-id"))
            other.click()
            wait_for_file(state_file, lambda s: s["keepers"][0] == chosen)
            page.locator(".imrec-dups-group").first.locator(
                f".imrec-dups-keep[data-id='{chosen}']"
            ).wait_for(timeout=30_000)
            assert first["keepers"][0] != chosen
            screenshot(page, f"duplicates_widget_{app}")

            page.locator(".imrec-dups-move").click()
            moved = wait_for_file(
                state_file, lambda s: s["can_undo"] and s["groups"] == 0, timeout=60
            )
            assert moved["searchable"] == 3 and moved["error"] == ""
            assert len(photos_in(root)) == 3
            index = ImageIndex.open(root)
            assert (root / index.records([chosen])[0].path).exists()
            assert sorted(r.state for r in index.catalog.moves()) == ["moved"] * 6
            assert len(list((root / ".imrec-moved").rglob("*.jpg"))) == 6

            page.locator(".imrec-dups-undo").click()
            back = wait_for_file(
                state_file, lambda s: not s["can_undo"] and s["groups"] == 3, timeout=60
            )
            assert back["searchable"] == 9 and photos_in(root) == before
            assert sorted(r.state for r in index.catalog.moves()) == ["restored"] * 6
            index.close()
            assert app_errors(page, server) == []
        except BaseException:
            dump_failure(page, server, f"duplicates_widget_{app}_FAILED")
            raise
        finally:
            page.context.close()
