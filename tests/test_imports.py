"""The package's import graph: no cycles, and every module imports alone in a fresh process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import audit

PACKAGE_DIR = Path(audit.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its body, functions included.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
    imports under ``if TYPE_CHECKING:`` never run and are left out. A parent package's
    ``__init__`` running first is Python's package machinery, not an edge.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    edges: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        edges.update(t for t in targets if t in modules and t != name)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    # The walker itself, on the shape of the cycle audit.data used to have: a module-level
    # import one way, an import inside a function the other way.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "dataset.py").write_text("def load():\n    from pkg import reader\n")
    (pkg / "reader.py").write_text("from pkg.dataset import load\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.reader import load\n"
    )
    modules = {
        "pkg": pkg / "__init__.py",
        **{f"pkg.{m}": pkg / f"{m}.py" for m in ("dataset", "reader", "typed")},
    }
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.dataset"] == {"pkg.reader"} and graph["pkg.typed"] == set()
    assert _cycles(graph) == [["pkg.dataset", "pkg.reader"]]


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 20  # the walk found the package
    assert _cycles(graph) == []


def test_the_dataset_record_imports_no_layout() -> None:
    graph = _graph()
    assert not {m for m in graph["audit.data.dataset"] if m.startswith("audit.data.layouts")}
    assert "audit.data.dataset" in graph["audit.data.layouts.npz"]


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    # One interpreter (third-party packages stay imported, which keeps this fast); before
    # each module every audit module is forgotten, so each one is imported as if first.
    # audit.__main__ is left out: importing it runs the CLI.
    names = sorted(m for m in _modules() if m != "audit.__main__")
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'audit' or m.startswith('audit.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(" + repr(names) + "))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {len(names)}"
