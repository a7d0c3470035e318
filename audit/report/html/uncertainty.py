"""The uncertainty section: per-group uncertainty rates and histograms of p."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report import svg
from audit.report._format import fmt_num, get, graded_level, is_number, levels
from audit.report.html.cells import Plot, PlotGroup
from audit.report.html.readers import (
    cells_by_value,
    float_or_inf,
    model_label,
    targets,
)


def uncertainty_plots(report: Mapping[str, Any]) -> tuple[list[PlotGroup], str | None]:
    """Per target: uncertainty rate by group value, dense vs the sparsest level; a note."""
    lvls = levels(report)
    top = max(lvls, key=lambda lv: lv.get("sparsity") or 0.0) if lvls else None
    band = get(report, "inputs", "uncertainty_band") or [0.1, 0.9]
    label_top = model_label(top)
    out: list[PlotGroup] = []
    for target in targets(report):
        pg = PlotGroup(target)
        dense_t = get(report, "dense", "default", target) or {}
        top_t = get(top, "metrics", "default", target) or {}
        for gk, entry in (dense_t.get("by_group") or {}).items():
            dense_cells = cells_by_value(entry)
            top_cells = cells_by_value(get(top_t, "by_group", gk))
            cats = ["overall"] + list(dense_cells)
            bars = [
                svg.Series(
                    "dense",
                    [get(dense_t, "overall", "uncertainty_rate")]
                    + [get(c, "uncertainty_rate") for c in dense_cells.values()],
                    svg.PALETTE[0],
                )
            ]
            if top is not None:
                bars.append(
                    svg.Series(
                        label_top,
                        [get(top_t, "overall", "uncertainty_rate")]
                        + [get(top_cells.get(v), "uncertainty_rate") for v in dense_cells],
                        svg.PALETTE[1],
                    )
                )
            chart = svg.bar_chart(
                title=f"{target}: uncertainty rate by {gk} value",
                key=f"uncertainty|{target}|{gk}",
                categories=cats,
                bars=bars,
                y_label=f"share with p in ({band[0]}, {band[1]})",
            )
            pg.plots.append(Plot(chart))
        out.append(pg)
    note = (
        f"Bars are the per-group uncertainty rates recorded in the report (share of samples "
        f"whose p lies in the band ({band[0]}, {band[1]})), dense vs "
        f"{label_top if top is not None else 'no pruned model (not validated)'}"
    )
    if isinstance(report.get("uncertainty_histograms"), Mapping):
        note += "; the histograms below show the whole distribution of p behind each rate."
    else:
        note += (
            "; this report.json has no uncertainty_histograms (it predates them), so these "
            "are rates, not histograms of p."
        )
    return out, note


def histogram_plots(
    report: Mapping[str, Any],
) -> tuple[list[PlotGroup], list[dict[str, Any]], str]:
    """Histogram panels (one per target × group key × value), the level choices, a note.

    The pruned level drawn without a script is the one the forecast was graded at (the
    policy's target sparsity), else the highest; the page's selector switches it.
    """
    hist = report.get("uncertainty_histograms")
    if not isinstance(hist, Mapping) or not isinstance(hist.get("targets"), Mapping):
        return [], [], ""
    edges = [float(e) for e in hist.get("edges") or [] if is_number(e)]
    if len(edges) < 2:
        return [], [], ""
    raw_band = hist.get("band")
    band = (
        (float(raw_band[0]), float(raw_band[1]))
        if isinstance(raw_band, list) and len(raw_band) == 2 and all(map(is_number, raw_band))
        else None
    )
    multiclass = hist.get("quantity") == "top_class_probability"
    by_target = hist["targets"]
    cells = [
        cell
        for by_key in by_target.values()
        if isinstance(by_key, Mapping)
        for entries in by_key.values()
        if isinstance(entries, list)
        for cell in entries
        if isinstance(cell, Mapping) and isinstance(cell.get("counts"), Mapping)
    ]
    level_keys = sorted(
        {k for cell in cells for k in cell["counts"] if k != "dense"}, key=float_or_inf
    )
    graded = graded_level(report)
    shown = graded[1] if graded is not None and graded[1] in level_keys else None
    if shown is None and level_keys:
        shown = level_keys[-1]
    choices = [{"key": k, "label": f"sparsity {k}", "selected": k == shown} for k in level_keys]
    order = [t for t in targets(report) if t in by_target]
    order += [t for t in by_target if t not in order]
    groups: list[PlotGroup] = []
    for target in order:
        by_key = by_target.get(target)
        if not isinstance(by_key, Mapping):
            continue
        for gk, entries in by_key.items():
            pg = PlotGroup(f"{target} × {gk}")
            for cell in entries if isinstance(entries, list) else []:
                if not isinstance(cell, Mapping) or not isinstance(cell.get("counts"), Mapping):
                    continue
                counts = cell["counts"]
                value, n = str(cell.get("value")), cell.get("n")
                chart = svg.histogram_chart(
                    title=f"{target}: {gk}={value} (n={fmt_num(n)})",
                    key=f"histogram|{target}|{gk}|{value}",
                    edges=edges,
                    base=svg.Histogram("dense", _counts(counts.get("dense"))),
                    overlays=[
                        svg.Histogram(f"sparsity {k}", _counts(counts.get(k)), k)
                        for k in level_keys
                        if k in counts
                    ],
                    shown=shown,
                    band=band,
                    x_label="top-class probability" if multiclass else f"p({target})",
                )
                pg.plots.append(Plot(chart))
            if pg.plots:
                groups.append(pg)
    what = "the top-class probability" if multiclass else "each target's probability p"
    parts = [
        f"Counts of {what} in {len(edges) - 1} equal-width bins, one panel per group value; "
        "the dense model as bars"
        + (", a pruned model (chosen above) as an outline." if level_keys else ".")
    ]
    if band:
        parts.append(f"The shaded band ({band[0]:g}, {band[1]:g}) holds the uncertain samples.")
    parts.append("Hover a bin for every model's count.")
    note = " ".join(parts)
    if multiclass:
        note += (
            " For multiclass models uncertainty is a small top-1 − top-2 margin; the band "
            "matches it exactly only for two classes."
        )
    return groups, choices, note


def _counts(values: Any) -> list[int]:
    return [int(v) for v in values if is_number(v)] if isinstance(values, list) else []
