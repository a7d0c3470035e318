"""The calibration section: one reliability diagram per target, every model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report import svg
from audit.report._format import fmt_num, get, is_number, named_levels
from audit.report.html.cells import Plot
from audit.report.html.readers import float_or_inf, model_label


def calibration_plots(report: Mapping[str, Any]) -> list[Plot]:
    """One reliability diagram per target: dense and every level, ECE in the legend."""
    curves_by_target = report.get("calibration_curves")
    if not isinstance(curves_by_target, Mapping):
        return []
    # Plot data is keyed by each level's name (its label, or its sparsity as text).
    by_name = {name: lv for lv, name in named_levels(report)}
    plots = []
    for target, by_model in curves_by_target.items():
        if not isinstance(by_model, Mapping):
            continue
        keys = ["dense"] + sorted((k for k in by_model if k != "dense"), key=float_or_inf)
        curves = []
        for i, key in enumerate(k for k in keys if isinstance(by_model.get(k), Mapping)):
            data = by_model[key]
            level = by_name.get(key)
            metrics = get(report, "dense") if key == "dense" else get(level, "metrics")
            ece = get(metrics, "default", target, "overall", "ece")
            name = "dense" if key == "dense" else model_label(level) if level else key
            colour, dash, marker = svg.style(i)
            curves.append(
                svg.Curve(
                    f"{name} (ECE {fmt_num(ece)})" if is_number(ece) else name,
                    data.get("mean_p") or [],
                    data.get("mean_y") or [],
                    data.get("count") or [],
                    colour,
                    dash,
                    marker,
                )
            )
        plots.append(
            Plot(
                svg.reliability_chart(
                    title=f"{target}: calibration", key=f"calibration|{target}", curves=curves
                )
            )
        )
    return plots
