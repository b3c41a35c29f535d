"""What every imrec anywidget shares: finding the front-end files and strict keyword arguments."""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import Any

import anywidget
from anywidget._file_contents import FileContents, VirtualFileContents

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def static_dir() -> Path:
    """The folder holding the widgets' ES modules and CSS.

    A built wheel ships ``js/`` as ``imrec_widgets/static/``; a source checkout uses ``js/``.
    """
    for candidate in (_PACKAGE_DIR / "static", _PACKAGE_DIR.parent / "js"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the widgets' front-end files are missing: neither {_PACKAGE_DIR / 'static'} nor "
        f"{_PACKAGE_DIR.parent / 'js'} exists; reinstall imrec-widgets"
    )


def static_file(name: str) -> Path:
    """Path of one front-end file (``"search_widget.css"``); FileNotFoundError if missing."""
    path = static_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"front-end file missing: {path}; reinstall imrec-widgets")
    return path


# `import { a, b as c } from "./x.js";` or `import * as ns from "./x.js";` (may span lines)
_RELATIVE_IMPORT = re.compile(
    r"""^[ \t]*import\s+(?P<clause>\{[^}]*\}|\*\s+as\s+[A-Za-z_$][\w$]*)\s*
        from\s*(?P<quote>["'])(?P<spec>\./[^"']+)(?P=quote)\s*;?[ \t]*$""",
    re.MULTILINE | re.VERBOSE,
)
_ANY_RELATIVE_IMPORT = re.compile(r"""^\s*import\b[^;]*?["']\.{1,2}/""", re.MULTILINE)
_EXPORT_DECLARATION = re.compile(
    r"^export\s+(?=(?:async\s+)?function\b|const\b|let\b|var\b|class\b)", re.MULTILINE
)
_EXPORTED_NAME = re.compile(
    r"^export\s+(?:async\s+)?(?:function\s*\*?|const|let|var|class)\s+([A-Za-z_$][\w$]*)",
    re.MULTILINE,
)
_OTHER_EXPORT = re.compile(r"^export\b", re.MULTILINE)


def _module_namespace(name: str, source: str) -> tuple[str, list[str]]:
    """``source`` of helper module ``name`` as an expression evaluating to its exports object."""
    if _ANY_RELATIVE_IMPORT.search(source):
        raise ValueError(f"{name}: a module inlined into a widget may not import other local files")
    names = _EXPORTED_NAME.findall(source)
    body = _EXPORT_DECLARATION.sub("", source)
    if _OTHER_EXPORT.search(body):
        raise ValueError(
            f"{name}: only `export function|const|let|var|class NAME` can be inlined into a widget"
        )
    return f"(() => {{\n{body}\nreturn {{ {', '.join(names)} }};\n}})()", names


def _namespace_variable(spec: str) -> str:
    return "__imrec_" + re.sub(r"\W", "_", spec[2:])


def bundle_esm(entry: str, folder: Path | None = None) -> str:
    """The ES module ``entry`` with its relative imports inlined, as one self-contained text.

    anywidget loads ``_esm`` from a blob URL, where ``import ... from "./x.js"`` cannot resolve.
    Each imported helper becomes a closure returning its exports, so its names stay private;
    node can still import the helper files directly (their unit tests do).
    """
    folder = folder or static_dir()
    source = (folder / entry).read_text(encoding="utf-8")
    modules: dict[str, tuple[str, list[str]]] = {}

    def replace(match: re.Match[str]) -> str:
        spec = match["spec"]
        if spec not in modules:
            path = folder / spec[2:]
            if not path.is_file():
                raise FileNotFoundError(f"{entry} imports {spec}, but {path} does not exist")
            modules[spec] = _module_namespace(spec, path.read_text(encoding="utf-8"))
        variable = _namespace_variable(spec)
        exported = modules[spec][1]
        clause = match["clause"]
        if clause.startswith("*"):
            return f"const {clause.split()[-1]} = {variable};"
        bindings = []
        for item in filter(None, (part.strip() for part in clause.strip("{}").split(","))):
            imported, _, local = (s.strip() for s in item.partition(" as "))
            if imported not in exported:
                raise ValueError(f"{entry} imports {imported!r}, which {spec} does not export")
            bindings.append(f"{imported}: {local}" if local else imported)
        return f"const {{ {', '.join(bindings)} }} = {variable};"

    body = _RELATIVE_IMPORT.sub(replace, source)
    if _ANY_RELATIVE_IMPORT.search(body):
        raise ValueError(
            f"{entry}: cannot inline this form of relative import; "
            'write `import { a, b } from "./x.js";` or `import * as x from "./x.js";`'
        )
    prelude = "".join(
        f"const {_namespace_variable(spec)} = {expression};\n"
        for spec, (expression, _names) in modules.items()
    )
    return prelude + body


def _hot_reload_wanted(folder: Path) -> bool:
    # anywidget's own rule for `_esm = Path(...)`: ANYWIDGET_HMR=1, a source checkout, watchfiles.
    return (
        os.environ.get("ANYWIDGET_HMR") == "1"
        and not {"site-packages", "dist-packages"} & set(folder.parts)
        and importlib.util.find_spec("watchfiles") is not None
    )


_WATCHERS: list[FileContents] = []


def esm_module(entry: str, folder: Path | None = None) -> VirtualFileContents:
    """``bundle_esm(entry)`` as an anywidget ``_esm`` value.

    With ``ANYWIDGET_HMR=1`` in a source checkout (and ``watchfiles`` installed) the ``.js``
    files are watched: an edit re-bundles and live widgets reload, as anywidget does for a
    plain ``_esm = Path(...)``.
    """
    folder = folder or static_dir()
    contents = VirtualFileContents(bundle_esm(entry, folder))
    if _hot_reload_wanted(folder):
        for watcher in watch_sources(entry, folder, contents):
            watcher.watch_in_thread()
            _WATCHERS.append(watcher)
    return contents


def watch_sources(entry: str, folder: Path, contents: VirtualFileContents) -> list[FileContents]:
    """Watchers (not yet started) of every ``.js`` file in ``folder`` that re-bundle ``contents``."""

    def rebundle(_new_text: str = "") -> None:
        try:
            contents.contents = bundle_esm(entry, folder)
        except (OSError, ValueError) as exc:  # mid-edit: keep the last good module
            warnings.warn(f"not reloading {entry}: {exc}", RuntimeWarning, stacklevel=2)

    watchers = []
    for source in sorted(folder.glob("*.js")):
        watcher = FileContents(source, start_thread=False)
        watcher.changed.connect(rebundle)
        watchers.append(watcher)
    return watchers


class BaseWidget(anywidget.AnyWidget):
    """An anywidget that refuses unknown keyword arguments instead of silently ignoring them.

    Subclasses list the traits a caller may pass in ``_keyword_traits``; ``layout`` is always
    accepted (ipywidgets sizing).
    """

    _keyword_traits: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        allowed = {*self._keyword_traits, "layout"}
        for name in kwargs:
            if name not in allowed:
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {name!r}; "
                    f"it accepts {', '.join(sorted(allowed))}"
                )
        super().__init__(**kwargs)
