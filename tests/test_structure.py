"""The shape of the code that issue 12 asks for, checked so it stays true.

* no function or method in ``audit/`` is longer than 100 lines (decorators and docstring
  included: ``end_lineno - lineno + 1`` of the ``def``);
* ``audit.pipeline.run_audit`` (what ``audit.run_audit`` calls), the whole pipeline as a
  newcomer first reads it, is at most 60.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import audit

PACKAGE = Path(audit.__file__).parent
MAX_FUNCTION_LINES = 100
MAX_RUN_AUDIT_LINES = 60


def _lengths(source: str, filename: str) -> list[tuple[str, int]]:
    """(line and name, length in lines) of every function and method, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            out.append((f"{filename}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1))
    return out


def test_no_function_in_the_package_is_over_100_lines() -> None:
    long = [
        f"{where} ({n} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for where, n in _lengths(
            path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent))
        )
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


def test_the_length_check_sees_a_long_method() -> None:
    # the walker must count nested and method definitions, or the test above proves nothing
    body = "\n".join(f"            x{i} = {i}" for i in range(120))
    src = f"class A:\n    def m(self):\n        def inner():\n{body}\n"
    assert [n for _, n in _lengths(src, "probe.py")] == [122, 121]


def test_run_audit_is_a_short_sequence_of_stages() -> None:
    from audit import pipeline

    lines, _ = inspect.getsourcelines(inspect.unwrap(pipeline.run_audit))
    assert len(lines) <= MAX_RUN_AUDIT_LINES, f"run_audit is {len(lines)} lines"
