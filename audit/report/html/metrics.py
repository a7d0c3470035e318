"""The metric charts: each group's FNR, FPR and accuracy against sparsity, with the gap.

The only arithmetic on the page is here: a gap's CI band is drawn at dense gap + Δ CI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report import svg
from audit.report._format import fmt_num, get, is_number, level_label, levels, na
from audit.report.html.cells import Plot, PlotGroup
from audit.report.html.readers import cells_by_value, targets

_PLOT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("fnr", "fnr_gap", "false-negative rate"),
    ("fpr", "fpr_gap", "false-positive rate"),
    ("accuracy", "accuracy_gap", "accuracy"),
)


def metric_plots(report: Mapping[str, Any], mode: str) -> list[PlotGroup]:
    """Per target × group key: FNR, FPR and accuracy by group value against sparsity."""
    lvls = levels(report)
    x_labels = ["dense"] + [level_label(lv) for lv in lvls]
    groups: list[PlotGroup] = []
    for target in targets(report):
        by_group = get(report, "dense", mode, target, "by_group") or {}
        for gk, dense_entry in by_group.items():
            pg = PlotGroup(f"{target} × {gk}")
            dense_cells = cells_by_value(dense_entry)
            level_entries = [get(lv, "metrics", mode, target, "by_group", gk) for lv in lvls]
            level_cells = [cells_by_value(e) for e in level_entries]
            for rate, gap, name in _PLOT_METRICS:
                series = []
                for i, value in enumerate(dense_cells):
                    colour, dash, marker = svg.style(i)
                    values = [get(dense_cells[value], rate)] + [
                        get(cells.get(value), rate) for cells in level_cells
                    ]
                    series.append(svg.Series(f"{gk}={value}", values, colour, dash, marker))
                dense_gap = get(dense_entry, "gaps", gap, "value")
                centre = [dense_gap] + [get(e, "gaps", gap, "value") for e in level_entries]
                lower: list[float | None] = [dense_gap]
                upper: list[float | None] = [dense_gap]
                for lv in lvls:
                    ci = get(lv, "delta", mode, target, "by_group", gk, gap, "ci")
                    ok = is_number(dense_gap) and isinstance(ci, list) and len(ci) == 2
                    # The band shows where the pruned gap lies: dense gap + the Δ interval.
                    lower.append(dense_gap + ci[0] if ok else None)
                    upper.append(dense_gap + ci[1] if ok else None)
                band = svg.Band(
                    f"{gap.replace('_', ' ')} (band: dense gap + Δ 95% CI)", centre, lower, upper
                )
                chart = svg.line_chart(
                    title=f"{target}: {name} by {gk}",
                    key=f"metric|{mode}|{target}|{gk}|{rate}",
                    x_labels=x_labels,
                    series=series,
                    band=band,
                    y_label=name,
                    x_label="sparsity (levels evenly spaced; dense = 0)",
                )
                reason = get(dense_entry, "gaps", gap, "reason")
                caption = f"Dense {gap.replace('_', ' ')}: " + (
                    fmt_num(dense_gap) if is_number(dense_gap) else na(reason)
                )
                pg.plots.append(Plot(chart, caption))
            groups.append(pg)
    return groups
