"""Reports: ``report.json``/``.md``/``.html``/``.junit.xml`` and ``predictions.npz``.

Which formats exist is the registry's business (:mod:`audit.report.formats`): each format is
one :class:`~audit.report.formats.ReportFormat` (name, file name, renderer) registered there,
built in or by a plug-in through :func:`~audit.report.formats.register_report_format`.

Renderers format and never compute a metric: each one reads the report dict the runner
built (docs/report-json.md) and turns it into text. Undefined values (``None`` with a
reason) are shown as "n/a (reason)", never as 0, and every data-derived string is escaped
for the format it lands in.
"""

from __future__ import annotations

from audit.report import formats
from audit.report.formats import ReportFormat, register_report_format, report_format_names
from audit.report.html import render_html
from audit.report.json_report import render_json
from audit.report.junit import render_junit
from audit.report.markdown import md_escape, render_markdown
from audit.report.schema import SCHEMA_PATH, validate_report
from audit.report.writer import write_reports

__all__ = [
    "SCHEMA_PATH",
    "ReportFormat",
    "formats",
    "md_escape",
    "render_html",
    "register_report_format",
    "render_json",
    "render_junit",
    "render_markdown",
    "report_format_names",
    "validate_report",
    "write_reports",
]
