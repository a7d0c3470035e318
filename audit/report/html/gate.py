"""The gate section's table: every check with its value, CI, limit and outcome."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report._format import fmt_ci, fmt_settle, get
from audit.report.html.cells import Col, Table, num_cell, outcome_cell, sparsity_cell, text_cell


def gate_table(report: Mapping[str, Any]) -> Table:
    """Every gate check with its value, CI, limit, outcome and the samples a settle needs."""
    table = Table(
        "gate-checks",
        "Every gate check, with its value, limit and outcome",
        [
            Col("check"),
            Col("target"),
            Col("group"),
            Col("sparsity", "num"),
            Col("value", "num"),
            Col("95% CI"),
            Col("limit", "num"),
            Col("outcome"),
            Col("samples needed"),
            Col("detail"),
        ],
    )
    for c in get(report, "gate", "checks") or []:
        if not isinstance(c, Mapping):
            continue
        table.rows.append(
            [
                text_cell(c.get("name")),
                text_cell(c.get("target")),
                text_cell(c.get("group")),
                sparsity_cell(c.get("sparsity")),
                num_cell(c.get("value"), reason="undefined"),
                text_cell(fmt_ci(c.get("ci"))),
                num_cell(c.get("limit")),
                outcome_cell(c.get("outcome")),
                text_cell(fmt_settle(c)),
                text_cell(c.get("detail")),
            ]
        )
    return table
