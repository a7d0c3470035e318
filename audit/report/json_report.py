"""The JSON renderer: ``report.json``, the one place typed results become JSON text.

Owns: serialisation (two-space indent, UTF-8, no NaN) of a :class:`audit.results.Report`
(through its ``to_json()``) or of a report dict in the same shape. Renderers format and never
compute a metric: this one only converts numpy types to plain Python and refuses NaN/inf.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from audit.report.schema import check_finite, to_plain
from audit.results import Report


def render_json(report: Report | Mapping[str, Any]) -> str:
    """Serialise the report as indented JSON.

    Parameters
    ----------
    report : Report or Mapping
        The typed report, or the report dict (docs/report-json.md).

    Returns
    -------
    str
        The JSON text, ending with a newline.

    Raises
    ------
    ValueError
        If a NaN or infinite number is present (the message names its key path): undefined
        values must be ``None`` with a reason.
    TypeError
        If a value cannot be represented in JSON.
    """
    plain = to_plain(report.to_json() if isinstance(report, Report) else report)
    check_finite(plain)
    return json.dumps(plain, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
