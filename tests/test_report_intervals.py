"""No interval in any report.json the suite writes excludes its point estimate (issue 13).

The conftest moves this module to the end of the session, so the reports of every earlier
test (under pytest's base temporary folder) and of ``prune-audit demo`` are all on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _intervals(node: Any, where: str = "$") -> Iterator[tuple[str, float, list[float]]]:
    if isinstance(node, dict):
        ci, value = node.get("ci"), node.get("value")
        if (
            isinstance(ci, list)
            and len(ci) == 2
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            yield where, float(value), [float(ci[0]), float(ci[1])]
        for key, child in node.items():
            yield from _intervals(child, f"{where}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _intervals(child, f"{where}[{i}]")


def test_walker_finds_an_excluded_point() -> None:
    bad = {"a": [{"value": 0.0002, "ci": [0.0012, 0.1098]}], "b": {"value": 0.1, "ci": [0, 1]}}
    found = [(w, v, ci) for w, v, ci in _intervals(bad) if not ci[0] <= v <= ci[1]]
    assert found == [("$.a[0]", 0.0002, [0.0012, 0.1098])]


def test_no_report_interval_excludes_its_point(
    demo_report_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Bad-input tests plant folders and damaged files named report.json; only files are read.
    paths = sorted(p for p in tmp_path_factory.getbasetemp().rglob("report.json") if p.is_file())
    assert demo_report_dir / "report.json" in paths
    n_intervals = 0
    bad = []
    for path in paths:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue  # bad-input tests write broken report.json files on purpose
        for where, value, (lo, hi) in _intervals(report):
            n_intervals += 1
            if not lo - 1e-12 <= value <= hi + 1e-12:
                bad.append(f"{path}: {where} = {value} outside [{lo}, {hi}]")
    assert not bad, "\n".join(bad[:20])
    assert n_intervals > 1000
