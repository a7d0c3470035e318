"""The JSON renderer: ``report.json`` exactly as the runner built the dict.

Owns: serialisation (two-space indent, UTF-8, no NaN). Renderers format and never compute a
metric: this one only converts numpy types to plain Python and refuses NaN/inf.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from audit.report.schema import check_finite, to_plain


def render_json(report: Mapping[str, Any]) -> str:
    """Serialise the report dict as indented JSON.

    Parameters
    ----------
    report : Mapping
        The report dict (docs/report-json.md).

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
    plain = to_plain(report)
    check_finite(plain)
    return json.dumps(plain, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
