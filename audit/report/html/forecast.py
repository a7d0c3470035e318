"""The forecast section: the per-pair forecast table and its grading against pruning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report._format import fmt_pct, fmt_signed, fmt_sparsity, get
from audit.report.html.cells import (
    Col,
    Table,
    Td,
    hit_cell,
    interval_cell,
    num_cell,
    signed_cell,
    text_cell,
)
from audit.risk import DIRECTION_NOTE


def forecast_tables(report: Mapping[str, Any]) -> tuple[Table, Table | None, dict[str, str]]:
    """The per-pair forecast table, the agreement table (None unless graded), its summary."""
    pairs = Table(
        "forecast-pairs",
        "Forecast per target × group (dense model only)",
        [
            Col("target"),
            Col("group"),
            Col("forecast Δ FNR gap", "num"),
            Col("interval", "num"),
            Col("forecast Δ FPR gap", "num"),
            Col("interval", "num"),
            Col("forecast Δ BA", "num"),
            Col("interval", "num"),
            Col("per sparsity (FNR / FPR / BA)"),
            Col("interdependence excess", "num"),
            Col("dense FNR gap", "num"),
            Col("dense FPR gap", "num"),
            Col("risk"),
            Col("reason"),
        ],
    )
    for p in get(report, "forecast", "pairs") or []:
        if not isinstance(p, Mapping):
            continue
        pairs.rows.append(
            [
                text_cell(p.get("target")),
                text_cell(p.get("group")),
                signed_cell(get(p, "predicted_delta", "fnr_gap"), reason="not estimable"),
                interval_cell(get(p, "interval", "fnr_gap")),
                signed_cell(get(p, "predicted_delta", "fpr_gap"), reason="not estimable"),
                interval_cell(get(p, "interval", "fpr_gap")),
                signed_cell(
                    get(p, "predicted_delta", "bias_amplification"), reason="not estimable"
                ),
                interval_cell(get(p, "interval", "bias_amplification")),
                text_cell(
                    "; ".join(
                        f"{fmt_sparsity(b.get('sparsity'))}: "
                        + " / ".join(
                            fmt_signed(get(b, "predicted_delta", m))
                            for m in ("fnr_gap", "fpr_gap", "bias_amplification")
                        )
                        + f" ({b.get('risk')})"
                        for b in p.get("by_sparsity") or []
                        if isinstance(b, Mapping)
                    )
                    or "—"
                ),
                num_cell(p.get("interdependence_excess"), reason="not computed"),
                num_cell(get(p, "dense_gap", "fnr_gap"), reason="undefined"),
                num_cell(get(p, "dense_gap", "fpr_gap"), reason="undefined"),
                Td(
                    str(p.get("risk")),
                    {"low": "0", "medium": "1", "high": "2"}.get(str(p.get("risk")), ""),
                    f"risk-{p.get('risk')}",
                ),
                text_cell(p.get("reason")),
            ]
        )
    table, summary = _agreement(get(report, "validation", "forecast_agreement"))
    return pairs, table, summary


def _agreement(agreement: Any) -> tuple[Table | None, dict[str, str]]:
    """The forecast-vs-measured table and its hit-rate summary (none when not graded)."""
    summary: dict[str, str] = {}
    table = None
    if isinstance(agreement, Mapping):
        at = fmt_sparsity(agreement.get("sparsity"))
        summary = {
            "sparsity": at,
            "direction": fmt_pct(agreement.get("direction_hit_rate"), reason="no defined pairs"),
            "risk": fmt_pct(agreement.get("risk_hit_rate"), reason="no defined pairs"),
            "interval": fmt_pct(agreement.get("interval_coverage"), reason="no intervals"),
            "note": DIRECTION_NOTE,
        }
        table = Table(
            "forecast-agreement",
            f"Forecast vs measured change at sparsity {at}",
            [
                Col("target"),
                Col("group"),
                Col("metric"),
                Col("forecast Δ", "num"),
                Col("forecast interval", "num"),
                Col("measured Δ", "num"),
                Col("in interval"),
                Col("direction hit"),
                Col("predicted risk"),
                Col("measured risk"),
                Col("risk hit"),
            ],
        )
        for a in agreement.get("pairs") or []:
            if not isinstance(a, Mapping):
                continue
            table.rows.append(
                [
                    text_cell(a.get("target")),
                    text_cell(a.get("group")),
                    text_cell(a.get("metric")),
                    signed_cell(a.get("predicted_delta"), reason="not estimable"),
                    interval_cell(a.get("predicted_interval")),
                    signed_cell(a.get("measured_delta"), reason="undefined"),
                    hit_cell(a.get("interval_hit")),
                    hit_cell(a.get("direction_hit")),
                    text_cell(a.get("predicted_risk")),
                    text_cell(a.get("measured_risk")),
                    hit_cell(a.get("risk_hit")),
                ]
            )
    return table, summary
