"""The shape of the code: imports point down only, errors live in one module and are exported."""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import imrec_widgets
from imrec_widgets import errors

PACKAGE = Path(imrec_widgets.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


@functools.cache
def parsed(path: Path) -> ast.Module:
    """``path``'s syntax tree, parsed once a session (the checks here and in test_plumbing
    only read the trees)."""
    return ast.parse(path.read_text(encoding="utf-8"))


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Module -> package modules it imports (anywhere in it, type-only imports included), and
    every ``(module, imported module, name)`` that imports another module's private name."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package[: len(package) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [(f"{base}.{alias.name}", (base, alias.name)) for alias in node.names]
            else:
                continue
            for target, origin in targets:
                if target in modules:
                    graph[name].add(target)
                elif origin and origin[0] in modules:
                    graph[name].add(origin[0])
                    if origin[1].startswith("_") and not origin[1].startswith("__"):
                        private.append((name, origin[0], origin[1]))
        graph[name].discard(name)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (each holds an import cycle)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_and_no_private_name_imported_across_modules():
    graph, private = import_graph()
    assert (
        "imrec_widgets.protocols" in graph["imrec_widgets.searcher"]
    )  # the graph sees type-only imports
    assert cycles(graph) == []
    assert private == []


def test_services_below_the_index_never_import_it():
    graph, _ = import_graph()
    above = {"imrec_widgets", "imrec_widgets.index", "imrec_widgets.cli"}
    for name, imported in graph.items():
        if name not in above and not name.startswith("imrec_widgets.widgets"):
            assert "imrec_widgets.index" not in imported, f"{name} imports the index facade"


def test_every_exception_the_package_defines_lives_in_errors_and_is_exported():
    defined = {}
    for path in _modules().values():
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith(("Error", "Warning", "Exception"))
                for base in node.bases
            ):
                defined[node.name] = path.name
    assert defined and set(defined.values()) == {"errors.py"}, defined
    for name in defined:
        assert getattr(imrec_widgets, name) is getattr(errors, name)
        assert name in imrec_widgets.__all__


OTHER_BUILTINS = {errors.NotFoundError: FileNotFoundError, errors.UnknownImageError: KeyError}


def test_every_error_is_an_imrec_error_and_keeps_its_builtin_base():
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    raised = [c for c in classes if issubclass(c, Exception) and not issubclass(c, Warning)]
    assert len(raised) >= 8
    for error in raised:
        assert issubclass(error, errors.ImrecError)
        if error is not errors.ImrecError:
            # what a user caused is a bad value or a failed run; a missing file or an unknown id
            # keeps the built-in that says so
            builtin = OTHER_BUILTINS.get(error, (ValueError, RuntimeError))
            assert issubclass(error, builtin), error
    for warning in (c for c in classes if issubclass(c, Warning)):
        assert issubclass(warning, errors.ImrecWarning)


def test_the_plain_python_parts_of_the_widgets_load_without_widget_libraries():
    import subprocess
    import sys

    code = (
        "import sys, imrec_widgets.widgets.uploads, imrec_widgets.widgets.query_display; "
        "print(sorted(m for m in ('anywidget', 'bqplot', 'ipywidgets', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
