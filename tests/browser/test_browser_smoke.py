"""Smoke test of the real-browser harness: an anywidget counter round-trips JS <-> Python."""

from __future__ import annotations

import time

from harness import (
    DUMP_JSON_HELPER,
    console_errors,
    new_page,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_file,
    write_notebook,
)

COUNTER_CELL = '''\
import anywidget, traitlets

class Counter(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        let b = document.createElement('button');
        b.className = 'smoke-btn';
        b.textContent = 'count ' + model.get('value');
        b.onclick = () => { model.set('value', model.get('value') + 1); model.save_changes(); };
        model.on('change:value', () => { b.textContent = 'count ' + model.get('value'); });
        el.appendChild(b);
      }
    }
    """
    value = traitlets.Int(0).tag(sync=True)

counter = Counter()
dump_json("counter.json", {"value": counter.value})
counter.observe(lambda change: dump_json("counter.json", {"value": change["new"]}), "value")
counter
'''


def test_anywidget_counter_roundtrip(server, browser):
    t0 = time.monotonic()
    write_notebook(server.root_dir / "smoke.ipynb", [DUMP_JSON_HELPER, COUNTER_CELL])
    state_file = server.root_dir / "counter.json"
    page = new_page(browser)
    try:
        open_notebook(page, server, "smoke.ipynb")
        t_open = time.monotonic()
        run_all_cells(page)
        wait_for_file(state_file, lambda d: d["value"] == 0)

        button = page.locator(".smoke-btn")
        button.wait_for(state="visible", timeout=30_000)
        for _ in range(3):
            button.click()
        page.wait_for_function(
            "() => document.querySelector('.smoke-btn')?.textContent === 'count 3'",
            timeout=15_000,
        )
        assert button.text_content() == "count 3"
        assert wait_for_file(state_file, lambda d: d["value"] == 3, timeout=15)["value"] == 3
        shot = screenshot(page, "browser_smoke_counter")
        assert shot.exists()
    except BaseException:
        screenshot(page, "browser_smoke_counter_FAILED")
        print("browser console errors:\n" + ("\n".join(console_errors(page)) or "-"))
        print("server log tail:\n" + server.log_tail(3000))
        raise
    finally:
        page.context.close()
    print(
        f"\nbrowser smoke: open {t_open - t0:.1f}s, total {time.monotonic() - t0:.1f}s "
        f"(server started before test); screenshot {shot}"
    )
