"""The real-browser harness for benchmarks: a throw-away JupyterLab driven by Debian's Chromium.

The same code as the browser tests' (``tests/browser/harness.py``, loaded by ``_tests``), so a
benchmark and a test drive the widgets the same way. Benchmarks import these names from here.
"""

from __future__ import annotations

from _tests import load

_harness = load("browser/harness.py")

DUMP_JSON_HELPER = _harness.DUMP_JSON_HELPER
NOTEBOOK_PANEL = _harness.NOTEBOOK_PANEL
WEBGL_CHROMIUM_ARGS = _harness.WEBGL_CHROMIUM_ARGS
JupyterLabServer = _harness.JupyterLabServer
cell_errors = _harness.cell_errors
chromium = _harness.chromium
dump_failure = _harness.dump_failure
new_page = _harness.new_page
open_notebook = _harness.open_notebook
run_command_via_menu = _harness.run_command_via_menu
wait_for_file = _harness.wait_for_file
wait_for_kernel_idle = _harness.wait_for_kernel_idle
write_notebook = _harness.write_notebook

__all__ = [
    "DUMP_JSON_HELPER",
    "NOTEBOOK_PANEL",
    "WEBGL_CHROMIUM_ARGS",
    "JupyterLabServer",
    "cell_errors",
    "chromium",
    "dump_failure",
    "new_page",
    "open_notebook",
    "run_command_via_menu",
    "wait_for_file",
    "wait_for_kernel_idle",
    "write_notebook",
]
