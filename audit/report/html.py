"""The HTML renderer: one self-contained ``report.html`` (no network, no external assets).

Owns: turning the report dict into a page -- verdict banner, inputs, gate checks, plots of
metrics against sparsity with CI bands, uncertainty and calibration charts, the
susceptible-sample gallery, the forecast and its grading, and sortable tables of every
number. Renderers format and never compute a metric: values are read from the dict (the
only arithmetic is placing a CI band at dense gap + Δ CI, and picking which level to draw).

Safety: templates use Jinja2 autoescape; SVG is built in :mod:`audit.report.svg`, where
every string is escaped before it becomes ``Markup``; thumbnails are accepted only as
``data:image/...;base64`` URIs; and a Content-Security-Policy allows nothing but the two
inline scripts (by hash), the inline stylesheet (by hash) and ``data:`` images, so even a
missed escape could neither run code nor reach the network.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
from markupsafe import Markup

from audit.forecast import DIRECTION_NOTE
from audit.report import svg
from audit.report._format import (
    GAP_METRICS,
    fmt_ci,
    fmt_num,
    fmt_pct,
    fmt_settle,
    fmt_signed,
    fmt_sparsity,
    forecast_benchmark_lines,
    get,
    is_number,
    level_label,
    levels,
    na,
    sort_key,
    verdict,
)
from audit.report.schema import to_plain

TEMPLATES = Path(__file__).with_name("templates")
_THUMBNAIL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$")
_PLOT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("fnr", "fnr_gap", "false-negative rate"),
    ("fpr", "fpr_gap", "false-positive rate"),
    ("accuracy", "accuracy_gap", "accuracy"),
)
_CELL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("tpr", "TPR"),
    ("fpr", "FPR"),
    ("fnr", "FNR"),
    ("selection_rate", "selection rate"),
    ("uncertainty_rate", "uncertainty rate"),
    ("ece", "ECE"),
    ("underprediction", "U"),
)
_OUTCOMES = ("TP", "FP", "TN", "FN")
_OUTCOME_NAMES = {
    "TP": "true positives",
    "FP": "false positives",
    "TN": "true negatives",
    "FN": "false negatives",
}


# ------------------------------------------------------------------ view-model types


@dataclass(frozen=True)
class Col:
    """A table column; ``num`` columns sort numerically."""

    label: str
    kind: Literal["num", "text"] = "text"


@dataclass(frozen=True)
class Td:
    """A table cell: display text (str is escaped by the template) and its sort key."""

    text: str | Markup
    sort: str | None = None
    cls: str = ""


@dataclass
class Table:
    """A sortable table."""

    id: str
    caption: str
    columns: list[Col]
    rows: list[list[Td]] = field(default_factory=list)


@dataclass(frozen=True)
class Plot:
    """One chart with its caption."""

    svg: Markup
    caption: str = ""


@dataclass
class PlotGroup:
    """Charts shown together under one heading."""

    heading: str
    plots: list[Plot] = field(default_factory=list)


# ------------------------------------------------------------------ cell helpers


def _na_markup(reason: str | None) -> Markup:
    if reason:
        return Markup('<span class="na">n/a</span> <span class="why">({})</span>').format(reason)
    return Markup('<span class="na">n/a</span>')


def _num(value: Any, *, digits: int = 3, reason: str | None = None) -> Td:
    if not is_number(value):
        return Td(_na_markup(reason), "", "na-cell")
    return Td(fmt_num(value, digits=digits), sort_key(value), "num")


def _signed(value: Any, *, reason: str | None = None) -> Td:
    if not is_number(value):
        return Td(_na_markup(reason), "", "na-cell")
    return Td(fmt_signed(value), sort_key(value), "num")


def _interval(value: Any) -> Td:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(map(is_number, value))):
        return Td("—", "")
    return Td(fmt_ci(value), sort_key(value[0]), "num")


def _text(value: Any) -> Td:
    return Td("—" if value is None else str(value), None if value is None else str(value))


def _sparsity(value: Any) -> Td:
    return Td(fmt_sparsity(value) if value is not None else "—", sort_key(value), "num")


def _hit(value: Any) -> Td:
    if value is True:
        return Td("✔ yes", "1")
    if value is False:
        return Td("✘ no", "0")
    return Td(_na_markup("undefined"), "")


def _outcome(value: Any) -> Td:
    # Text symbols rather than emoji: they render with any system font.
    label = {
        "pass": "✔ pass",
        "fail": "✘ fail",
        "inconclusive": "? inconclusive",
        "undefined": "⚠ undefined",
    }
    return Td(
        label.get(str(value), str(value)), str(value), f"outcome-{value}" if value in label else ""
    )


# ------------------------------------------------------------------ report readers


def _targets(report: Mapping[str, Any]) -> list[str]:
    block = get(report, "dense", "default") or {}
    listed = [t for t in get(report, "inputs", "targets") or [] if t in block]
    return listed + [t for t in block if t not in listed]


def _cells_by_value(entry: Any) -> dict[str, Mapping[str, Any]]:
    cells = get(entry, "cells") or []
    return {str(c.get("value")): c for c in cells if isinstance(c, Mapping)}


def _model_label(level: Mapping[str, Any] | None) -> str:
    if level is not None and level.get("source") == "supplied":
        return level_label(level)
    return "dense" if level is None else f"sparsity {fmt_sparsity(level.get('sparsity'))}"


# ------------------------------------------------------------------ sections


def _inputs(report: Mapping[str, Any]) -> tuple[list[tuple[str, str]], Table]:
    inp = report.get("inputs") if isinstance(report.get("inputs"), Mapping) else {}
    model, data = inp.get("model") or {}, inp.get("data") or {}
    splits, pre = inp.get("splits") or {}, inp.get("preprocessing") or {}
    sizes = splits.get("sizes") or {}
    band = inp.get("uncertainty_band") or []
    validation = report.get("validation")

    def size(name: str) -> str:
        return f" ({fmt_num(sizes.get(name))} samples)" if is_number(sizes.get(name)) else ""

    items = [
        (
            "model",
            f"{model.get('path', '—')} · format {model.get('format', '—')} · "
            f"arch {model.get('arch') or 'not recorded'} · "
            f"{fmt_num(model.get('n_parameters'))} parameters",
        ),
        ("data", f"{data.get('path', '—')} · layout {data.get('layout', '—')}"),
        ("task", str(inp.get("task", "—"))),
        ("evaluated samples", fmt_num(inp.get("n_samples"))),
        ("targets", ", ".join(map(str, inp.get("targets") or [])) or "—"),
        ("group attributes", ", ".join(map(str, inp.get("groups") or [])) or "none"),
        (
            "splits",
            f"eval {splits.get('eval', '—')}{size('eval')} · calibration "
            f"{splits.get('calib', '—')}{size('calib')}"
            + (" (seeded holdout of the eval split)" if splits.get("calib_is_holdout") else "")
            + f" · train {splits.get('train') or 'none'}{size('train')}",
        ),
        (
            "preprocessing",
            f"{pre.get('image_size', '—')} px · mean {pre.get('mean', '—')} · "
            f"std {pre.get('std', '—')} · from {pre.get('source', '—')}",
        ),
        ("device / precision", f"{inp.get('device', '—')} / {inp.get('precision', '—')}"),
        (
            "seed / bootstrap",
            f"{inp.get('seed', '—')} / {fmt_num(inp.get('bootstrap'))} paired resamples",
        ),
        ("uncertainty band", f"p in ({band[0]}, {band[1]})" if len(band) == 2 else "—"),
        (
            "pruning",
            "not validated (forecast only)"
            if not isinstance(validation, Mapping)
            else f"{validation.get('method', '—')} magnitude pruning, recovery "
            f"{validation.get('recovery', '—')}, sparsities "
            + ", ".join(fmt_sparsity(lv.get("sparsity")) for lv in levels(report)),
        ),
        ("skipped images", str(len(inp.get("skipped_images") or []))),
    ]
    th = Table(
        "thresholds",
        "Decision thresholds per target",
        [Col("target"), Col("default", "num"), Col("calibrated", "num")],
    )
    thresholds = inp.get("thresholds") or {}
    for t in _targets(report):
        th.rows.append(
            [_text(t), _num(get(thresholds, "default", t)), _num(get(thresholds, "calibrated", t))]
        )
    return items, th


def _gate_table(report: Mapping[str, Any]) -> Table:
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
                _text(c.get("name")),
                _text(c.get("target")),
                _text(c.get("group")),
                _sparsity(c.get("sparsity")),
                _num(c.get("value"), reason="undefined"),
                _text(fmt_ci(c.get("ci"))),
                _num(c.get("limit")),
                _outcome(c.get("outcome")),
                _text(fmt_settle(c)),
                _text(c.get("detail")),
            ]
        )
    return table


def _metric_plots(report: Mapping[str, Any], mode: str) -> list[PlotGroup]:
    lvls = levels(report)
    x_labels = ["dense"] + [level_label(lv) for lv in lvls]
    groups: list[PlotGroup] = []
    for target in _targets(report):
        by_group = get(report, "dense", mode, target, "by_group") or {}
        for gk, dense_entry in by_group.items():
            pg = PlotGroup(f"{target} × {gk}")
            dense_cells = _cells_by_value(dense_entry)
            level_entries = [get(lv, "metrics", mode, target, "by_group", gk) for lv in lvls]
            level_cells = [_cells_by_value(e) for e in level_entries]
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


def _uncertainty_plots(report: Mapping[str, Any]) -> tuple[list[PlotGroup], str | None]:
    lvls = levels(report)
    top = max(lvls, key=lambda lv: lv.get("sparsity") or 0.0) if lvls else None
    band = get(report, "inputs", "uncertainty_band") or [0.1, 0.9]
    label_top = _model_label(top)
    out: list[PlotGroup] = []
    for target in _targets(report):
        pg = PlotGroup(target)
        dense_t = get(report, "dense", "default", target) or {}
        top_t = get(top, "metrics", "default", target) or {}
        for gk, entry in (dense_t.get("by_group") or {}).items():
            dense_cells = _cells_by_value(entry)
            top_cells = _cells_by_value(get(top_t, "by_group", gk))
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


def _histogram_plots(
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
        {k for cell in cells for k in cell["counts"] if k != "dense"}, key=_float_or_inf
    )
    graded = get(report, "validation", "forecast_agreement", "sparsity")
    shown = next((k for k in level_keys if _same_sparsity(graded, k)), None)
    if shown is None and level_keys:
        shown = level_keys[-1]
    choices = [{"key": k, "label": f"sparsity {k}", "selected": k == shown} for k in level_keys]
    order = [t for t in _targets(report) if t in by_target]
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


def _calibration_plots(report: Mapping[str, Any]) -> list[Plot]:
    curves_by_target = report.get("calibration_curves")
    if not isinstance(curves_by_target, Mapping):
        return []
    lvls = levels(report)
    plots = []
    for target, by_model in curves_by_target.items():
        if not isinstance(by_model, Mapping):
            continue
        keys = ["dense"] + sorted((k for k in by_model if k != "dense"), key=_float_or_inf)
        curves = []
        for i, key in enumerate(k for k in keys if isinstance(by_model.get(k), Mapping)):
            data = by_model[key]
            level = next((lv for lv in lvls if _level_key_matches(lv, key)), None)
            metrics = get(report, "dense") if key == "dense" else get(level, "metrics")
            ece = get(metrics, "default", target, "overall", "ece")
            name = "dense" if key == "dense" else _model_label(level) if level else key
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


def _float_or_inf(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        return float("inf")


def _level_key_matches(level: Mapping[str, Any], key: str) -> bool:
    """Plot data is keyed by each level's label (its sparsity, or a supplied file's name)."""
    if level.get("source") == "supplied":
        return level.get("label") == key
    return _same_sparsity(level.get("sparsity"), key)


def _same_sparsity(value: Any, key: str) -> bool:
    return is_number(value) and abs(float(value) - _float_or_inf(key)) < 1e-9


def _gallery(
    report: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Table]:
    """Gallery grid rows, the top-k strip (only when the grid has its own items), the table.

    The grid shows ``report["gallery"]`` when present (examples picked per
    outcome × confidence cell); otherwise the susceptible top-k, which are mostly uncertain.
    """
    items = [s for s in report.get("susceptible") or [] if isinstance(s, Mapping)]
    own = report.get("gallery")
    grid_items = [g for g in own if isinstance(g, Mapping)] if isinstance(own, list) else items
    strip = [_card(s) for s in items] if isinstance(own, list) else []
    rows = []
    for outcome in _OUTCOMES:
        row = {"outcome": outcome, "name": _OUTCOME_NAMES[outcome], "cells": []}
        for confident in (True, False):
            cards = [
                _card(s)
                for s in grid_items
                if s.get("outcome") == outcome and bool(s.get("confident")) is confident
            ]
            row["cells"].append({"confident": confident, "cards": cards})
        rows.append(row)
    table = Table(
        "susceptible",
        "Susceptible samples, most susceptible first",
        [
            Col("rank", "num"),
            Col("id"),
            Col("target"),
            Col("susceptibility", "num"),
            Col("p", "num"),
            Col("outcome"),
            Col("confident"),
            Col("groups"),
        ],
    )
    for s in items:
        p = get(s, "probs", s.get("target"))
        table.rows.append(
            [
                _num(s.get("rank")),
                _text(s.get("id")),
                _text(s.get("target")),
                _num(s.get("susceptibility")),
                _num(p),
                _text(s.get("outcome")),
                _text("yes" if s.get("confident") else "no"),
                _text(_pairs(s.get("groups"))),
            ]
        )
    return rows, strip, table


def _pairs(mapping: Any) -> str:
    if not isinstance(mapping, Mapping):
        return "—"
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def _card(s: Mapping[str, Any]) -> dict[str, Any]:
    thumb = s.get("thumbnail")
    target = s.get("target")
    probs = s.get("probs") or {}
    p = probs.get(target) if isinstance(probs, Mapping) else None
    rank = s.get("rank")
    return {
        # gallery-only examples carry rank 0: they are not part of the ranked top-k
        "rank": rank if is_number(rank) and rank >= 1 else None,
        "id": str(s.get("id", "")),
        "target": str(target),
        "p": fmt_num(p),
        "susceptibility": fmt_num(s.get("susceptibility")),
        "labels": _pairs(s.get("labels")),
        "groups": _pairs(s.get("groups")),
        "probs": ", ".join(f"{k}={fmt_num(v)}" for k, v in probs.items())
        if isinstance(probs, Mapping)
        else "—",
        # Only inline images: a URL here would make the page fetch from the network.
        "thumbnail": thumb if isinstance(thumb, str) and _THUMBNAIL.match(thumb) else None,
        "thumbnail_refused": isinstance(thumb, str) and not _THUMBNAIL.match(thumb),
    }


def _forecast(report: Mapping[str, Any]) -> tuple[Table, Table | None, dict[str, str]]:
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
                _text(p.get("target")),
                _text(p.get("group")),
                _signed(get(p, "predicted_delta", "fnr_gap"), reason="not estimable"),
                _interval(get(p, "interval", "fnr_gap")),
                _signed(get(p, "predicted_delta", "fpr_gap"), reason="not estimable"),
                _interval(get(p, "interval", "fpr_gap")),
                _signed(get(p, "predicted_delta", "bias_amplification"), reason="not estimable"),
                _interval(get(p, "interval", "bias_amplification")),
                _text(
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
                _num(p.get("interdependence_excess"), reason="not computed"),
                _num(get(p, "dense_gap", "fnr_gap"), reason="undefined"),
                _num(get(p, "dense_gap", "fpr_gap"), reason="undefined"),
                Td(
                    str(p.get("risk")),
                    {"low": "0", "medium": "1", "high": "2"}.get(str(p.get("risk")), ""),
                    f"risk-{p.get('risk')}",
                ),
                _text(p.get("reason")),
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
                    _text(a.get("target")),
                    _text(a.get("group")),
                    _text(a.get("metric")),
                    _signed(a.get("predicted_delta"), reason="not estimable"),
                    _interval(a.get("predicted_interval")),
                    _signed(a.get("measured_delta"), reason="undefined"),
                    _hit(a.get("interval_hit")),
                    _hit(a.get("direction_hit")),
                    _text(a.get("predicted_risk")),
                    _text(a.get("measured_risk")),
                    _hit(a.get("risk_hit")),
                ]
            )
    return table, summary


def _ranking(report: Mapping[str, Any]) -> Table:
    table = Table(
        "ranking-quality",
        "Susceptibility ranking vs the predictions that actually flipped",
        [
            Col("sparsity", "num"),
            Col("target"),
            Col("AUROC", "num"),
            Col("precision@k", "num"),
            Col("recall@k", "num"),
            Col("lift", "num"),
            Col("k", "num"),
            Col("flips", "num"),
        ],
    )
    for lv in levels(report):
        for key, rq in (lv.get("ranking_quality") or {}).items():
            if not isinstance(rq, Mapping):
                continue
            why = "no flips" if rq.get("n_flips") == 0 else "undefined"
            table.rows.append(
                [
                    _sparsity(lv.get("sparsity")),
                    _text(key),
                    _num(rq.get("auroc"), reason=why),
                    _num(rq.get("precision_at_k"), reason=why),
                    _num(rq.get("recall_at_k"), reason=why),
                    _num(rq.get("lift"), digits=2, reason=why),
                    _num(rq.get("k")),
                    _num(rq.get("n_flips")),
                ]
            )
    return table


def _cell_table(report: Mapping[str, Any], mode: str) -> Table:
    table = Table(
        f"cells-{mode}",
        f"Per-group metrics ({mode} thresholds), dense and pruned",
        [
            Col("model"),
            Col("target"),
            Col("group"),
            Col("value"),
            Col("n", "num"),
            Col("positives", "num"),
            Col("negatives", "num"),
            Col("small"),
        ]
        + [Col(label, "num") for _, label in _CELL_COLUMNS],
    )
    models: list[tuple[str, Any, Mapping[str, Any] | None]] = [("dense", "0", get(report, "dense"))]
    models += [
        (_model_label(lv), sort_key(lv.get("sparsity")), lv.get("metrics")) for lv in levels(report)
    ]
    for label, key, metrics in models:
        for target in _targets(report):
            tb = get(metrics, mode, target)
            if not isinstance(tb, Mapping):
                continue
            rows = [("—", "overall", tb.get("overall"))]
            for gk, entry in (tb.get("by_group") or {}).items():
                rows += [(gk, str(c.get("value")), c) for c in _cells_by_value(entry).values()]
            for gk, value, cell in rows:
                if not isinstance(cell, Mapping):
                    continue
                reasons = cell.get("reasons") or {}
                small = cell.get("small")
                table.rows.append(
                    [
                        Td(label, key),
                        _text(target),
                        _text(gk),
                        _text(value),
                        _num(cell.get("n")),
                        _num(cell.get("positives")),
                        _num(cell.get("negatives")),
                        _text("—" if small is None else "yes" if small else "no"),
                    ]
                    + [_num(cell.get(m), reason=reasons.get(m)) for m, _ in _CELL_COLUMNS]
                )
    return table


def _change_table(report: Mapping[str, Any], mode: str) -> Table:
    table = Table(
        f"changes-{mode}",
        f"Gaps and their change with pruning ({mode} thresholds)",
        [
            Col("sparsity", "num"),
            Col("target"),
            Col("group"),
            Col("metric"),
            Col("dense", "num"),
            Col("pruned", "num"),
            Col("Δ", "num"),
            Col("95% CI"),
            Col("CI upper", "num"),
        ],
    )
    for target in _targets(report):
        dense_t = get(report, "dense", mode, target) or {}
        for lv in levels(report):
            level_t = get(lv, "metrics", mode, target) or {}
            acc = get(lv, "delta", mode, target, "accuracy")
            table.rows.append(
                _change_row(
                    lv,
                    target,
                    "—",
                    "accuracy (overall)",
                    {"value": get(dense_t, "overall", "accuracy")},
                    {"value": get(level_t, "overall", "accuracy")},
                    acc,
                )
            )
            for gk, entry in (dense_t.get("by_group") or {}).items():
                deltas = get(lv, "delta", mode, target, "by_group", gk) or {}
                metrics = [m for m in GAP_METRICS if m in (entry.get("gaps") or {})]
                metrics += [m for m in deltas if m not in metrics and m != "bias_amplification"]
                for m in [*metrics, "bias_amplification"]:
                    if m == "bias_amplification":
                        dense, pruned = entry.get(m), get(level_t, "by_group", gk, m)
                    else:
                        dense = get(entry, "gaps", m)
                        pruned = get(level_t, "by_group", gk, "gaps", m)
                    table.rows.append(_change_row(lv, target, gk, m, dense, pruned, deltas.get(m)))
    return table


def _change_row(
    lv: Mapping[str, Any], target: str, group: str, metric: str, dense: Any, pruned: Any, d: Any
) -> list[Td]:
    ci = get(d, "ci")
    upper = ci[1] if isinstance(ci, list) and len(ci) == 2 else None
    return [
        _sparsity(lv.get("sparsity")),
        _text(target),
        _text(group),
        _text(metric.replace("_", " ")),
        _num(get(dense, "value"), reason=get(dense, "reason")),
        _num(get(pruned, "value"), reason=get(pruned, "reason")),
        _signed(get(d, "value"), reason=get(d, "reason") or "not in report"),
        Td(fmt_ci(ci) or "—", sort_key(ci[0]) if upper is not None else ""),
        _num(upper, reason="no CI"),
    ]


def _flip_table(report: Mapping[str, Any]) -> Table:
    table = Table(
        "flips",
        "Prediction flips (dense → pruned, default thresholds)",
        [
            Col("sparsity", "num"),
            Col("target"),
            Col("group"),
            Col("value"),
            Col("n", "num"),
            Col("flips", "num"),
            Col("flip rate", "num"),
            Col("pos → neg rate", "num"),
            Col("neg → pos rate", "num"),
        ],
    )
    for lv in levels(report):
        for target, f in (lv.get("flips") or {}).items():
            entries = [("—", "overall", f.get("overall"))]
            for gk, cells in (f.get("by_group") or {}).items():
                entries += [
                    (gk, str(c.get("value")), c) for c in cells or [] if isinstance(c, Mapping)
                ]
            for gk, value, c in entries:
                if not isinstance(c, Mapping):
                    continue
                table.rows.append(
                    [
                        _sparsity(lv.get("sparsity")),
                        _text(target),
                        _text(gk),
                        _text(value),
                        _num(c.get("n")),
                        _num(c.get("flips")),
                        _num(c.get("flip_rate"), reason="empty"),
                        _num(c.get("pos_to_neg_flip_rate"), reason="no positive predictions"),
                        _num(c.get("neg_to_pos_flip_rate"), reason="no negative predictions"),
                    ]
                )
    return table


def _interdependence_table(report: Mapping[str, Any]) -> Table | None:
    table = Table(
        "interdependence",
        "Interdependence: R² of each prediction from the others",
        [
            Col("model"),
            Col("target"),
            Col("R² predictions", "num"),
            Col("R² labels", "num"),
            Col("excess", "num"),
        ],
    )
    models = [("dense", "0", get(report, "dense", "interdependence"))]
    models += [
        (_model_label(lv), sort_key(lv.get("sparsity")), get(lv, "metrics", "interdependence"))
        for lv in levels(report)
    ]
    for label, key, block in models:
        if not isinstance(block, Mapping):
            continue
        for target, v in block.items():
            table.rows.append(
                [
                    Td(label, key),
                    _text(target),
                    _num(get(v, "predictions"), reason="undefined"),
                    _num(get(v, "labels"), reason="undefined"),
                    _signed(get(v, "excess"), reason="undefined"),
                ]
            )
    return table if table.rows else None


def _level_details(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for lv in levels(report):
        layers = Table(
            f"layers-{sort_key(lv.get('sparsity'))}",
            f"Per-layer sparsity at {fmt_sparsity(lv.get('sparsity'))}",
            [Col("layer"), Col("weights", "num"), Col("sparsity", "num")],
        )
        for layer in lv.get("per_layer") or []:
            if isinstance(layer, Mapping):
                layers.rows.append(
                    [
                        _text(layer.get("name")),
                        _num(layer.get("numel")),
                        _num(layer.get("sparsity"), digits=4),
                    ]
                )
        cie = lv.get("cie") or {}
        out.append(
            {
                "sparsity": fmt_sparsity(lv.get("sparsity")),
                "achieved": fmt_num(lv.get("achieved_sparsity"), digits=4),
                "layers": layers,
                "cie_count": fmt_num(cie.get("count")),
                "cie_ids": [str(i) for i in cie.get("ids") or []],
            }
        )
    return out


# ------------------------------------------------------------------ assembly


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _asset(name: str) -> tuple[Markup, str]:
    """Read an inline asset and its CSP hash (the page allows exactly these bytes)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    # Package files, not data: safe to inline verbatim.
    return Markup(text), f"'sha256-{digest}'"


def render_html(report: Mapping[str, Any]) -> str:
    """Render the report as one self-contained HTML page.

    Parameters
    ----------
    report : Mapping
        The report dict (docs/report-json.md); ``calibration_curves`` and
        ``uncertainty_histograms`` are drawn when present.

    Returns
    -------
    str
        The HTML document: no external resources, scripts or fonts; thumbnails inline.
    """
    plain = to_plain(report)
    head_js, head_hash = _asset("report-head.js")
    body_js, body_hash = _asset("report.js")
    css, css_hash = _asset("report.css")
    csp = (
        f"default-src 'none'; img-src data:; style-src {css_hash}; "
        f"script-src {head_hash} {body_hash}; base-uri 'none'; form-action 'none'"
    )
    v = verdict(plain)
    inputs, thresholds = _inputs(plain)
    gallery, top_cards, susceptible = _gallery(plain)
    forecast_pairs, agreement, agreement_summary = _forecast(plain)
    uncertainty, uncertainty_note = _uncertainty_plots(plain)
    histograms, histogram_levels, histogram_note = _histogram_plots(plain)
    validated = isinstance(plain.get("validation"), Mapping)
    context = {
        "report": plain,
        "v": v,
        "safe": fmt_sparsity(v["max_safe_sparsity"])
        if v["max_safe_sparsity"] is not None
        else na(v["max_safe_reason"]),
        "tool": plain.get("tool") or {},
        "csp": csp,
        "css": css,
        "head_js": head_js,
        "body_js": body_js,
        "inputs": inputs,
        "thresholds": thresholds,
        "gate": plain.get("gate") or {},
        "gate_table": _gate_table(plain),
        "validated": validated,
        "metric_plots": _metric_plots(plain, "default"),
        "metric_plots_calibrated": _metric_plots(plain, "calibrated"),
        "uncertainty": uncertainty,
        "uncertainty_note": uncertainty_note,
        "histograms": histograms,
        "histogram_levels": histogram_levels,
        "histogram_note": histogram_note,
        "calibration": _calibration_plots(plain),
        "gallery": gallery,
        "top_cards": top_cards,
        "susceptible": susceptible,
        "forecast": plain.get("forecast") or {},
        "forecast_benchmark": forecast_benchmark_lines(plain.get("forecast")),
        "forecast_pairs": forecast_pairs,
        "agreement": agreement,
        "agreement_summary": agreement_summary,
        "ranking": _ranking(plain) if validated else None,
        "cells_default": _cell_table(plain, "default"),
        "cells_calibrated": _cell_table(plain, "calibrated"),
        "changes_default": _change_table(plain, "default") if validated else None,
        "changes_calibrated": _change_table(plain, "calibrated") if validated else None,
        "flips": _flip_table(plain) if validated else None,
        "interdependence": _interdependence_table(plain),
        "level_details": _level_details(plain),
        "warnings": [str(w) for w in plain.get("warnings") or []],
        "skipped": [
            s for s in get(plain, "inputs", "skipped_images") or [] if isinstance(s, Mapping)
        ],
    }
    return _environment().get_template("report.html.j2").render(**context)


__all__: Sequence[str] = ["render_html"]
