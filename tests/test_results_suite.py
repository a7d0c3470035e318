"""Every report.json the suite writes reads as typed results and writes back exactly.

The conftest runs this module near the end of the session (with test_report_intervals.py),
so the reports of every earlier test and of ``prune-audit demo`` are on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_results import assert_round_trip


def test_every_report_the_suite_wrote_round_trips(
    demo_report_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    paths = sorted(p for p in tmp_path_factory.getbasetemp().rglob("report.json") if p.is_file())
    assert demo_report_dir / "report.json" in paths
    read = 0
    for path in paths:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue  # bad-input tests write broken report.json files on purpose
        if not isinstance(report, dict) or "schema_version" not in report:
            continue  # nor is every planted report.json a report
        try:
            assert_round_trip(report)
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"{path}: {exc}") from None
        read += 1
    assert read >= 1
