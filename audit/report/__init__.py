"""Reports: ``report.json``, ``report.md``, ``report.html`` and ``predictions.npz``.

Renderers format and never compute a metric: each one reads the report dict the runner
built (docs/report-json.md) and turns it into text. Undefined values (``None`` with a
reason) are shown as "n/a (reason)", never as 0, and every data-derived string is escaped
for the format it lands in.
"""

from __future__ import annotations

from audit.report.html import render_html
from audit.report.json_report import render_json
from audit.report.markdown import md_escape, render_markdown
from audit.report.schema import SCHEMA_PATH, validate_report
from audit.report.writer import write_reports

__all__ = [
    "SCHEMA_PATH",
    "md_escape",
    "render_html",
    "render_json",
    "render_markdown",
    "validate_report",
    "write_reports",
]
