"""The four chart kinds of the HTML report, drawn on :class:`audit.report.svg.canvas.Canvas`.

Owns: lines over an ordinal x axis with an optional shaded band, grouped bars, a reliability
diagram, and a histogram of p with one switchable overlay per pruned level, and their input
types. Must not read the report dict or compute a metric; callers pass the numbers to draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from audit.report.svg.canvas import (
    BAND_FILL,
    CHAR_W,
    GAP_COLOUR,
    PALETTE,
    PLOT_H,
    Canvas,
    clip,
    draw_marker,
    fmt_tick,
    is_finite,
    nice_range,
    polyline_points,
    split_segments,
    tick_values,
)


@dataclass(frozen=True)
class Series:
    """One line: a value (or None for a gap in the line) per x position."""

    label: str
    values: Sequence[float | None]
    colour: str = PALETTE[0]
    dash: str = ""
    marker: str = "circle"


@dataclass(frozen=True)
class Band:
    """A shaded interval around a centre line; None where the interval is undefined."""

    label: str
    centre: Sequence[float | None]
    lower: Sequence[float | None]
    upper: Sequence[float | None]


@dataclass(frozen=True)
class Histogram:
    """Counts per bin of one model; ``level`` tags an overlay for the page's level selector."""

    label: str
    counts: Sequence[int]
    level: str = ""


@dataclass(frozen=True)
class Curve:
    """One reliability curve: mean predicted p and observed rate per bin, with counts."""

    label: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    counts: Sequence[int] = field(default_factory=tuple)
    colour: str = PALETTE[0]
    dash: str = ""
    marker: str = "circle"


def line_chart(
    *,
    title: str,
    key: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    band: Band | None = None,
    y_label: str,
    x_label: str = "sparsity",
) -> Markup:
    """Draw lines over ordinal x positions, with an optional shaded band and its centre.

    Parameters
    ----------
    title : str
        Chart title (escaped).
    key : str
        Stable identifier written to ``data-plot`` (escaped).
    x_labels : sequence of str
        One label per x position, evenly spaced (``"dense"``, ``"0.8"``, ...).
    series : sequence of Series
        The lines; ``None`` values leave a gap.
    band : Band or None
        A shaded interval (e.g. a gap with its CI) drawn under the lines.
    y_label, x_label : str
        Axis labels (escaped).

    Returns
    -------
    Markup
        The ``<svg>`` element.
    """
    legend = [s.label for s in series] + ([band.label] if band else [])
    c = Canvas(title, legend, key, "line-chart")
    c.open()
    values: list[float | None] = [v for s in series for v in s.values]
    if band:
        values += list(band.lower) + list(band.upper) + list(band.centre)
    lo, hi, step_y = nice_range(values)
    c.y_axis(lo, hi, step_y, y_label)
    n = max(len(x_labels), 1)
    step = (c.x1 - c.x0 - 30) / max(n - 1, 1)

    def sx(i: int) -> float:
        return c.x0 + 15 + i * step

    for i, lab in enumerate(x_labels):
        c.parts.append(
            f'<text class="tick" x="{sx(i):.1f}" y="{c.y0 + 14}" text-anchor="middle">'
            f"{escape(lab)}</text>"
        )
    c.x_label(x_label)
    if band:
        pts = [
            (sx(i), c.sy(lw, lo, hi), c.sy(up, lo, hi)) if is_finite(lw) and is_finite(up) else None
            for i, (lw, up) in enumerate(zip(band.lower, band.upper, strict=False))
        ]
        for seg in split_segments([(p[0], p[1]) if p else None for p in pts]):
            uppers = [next(p for p in pts if p and p[0] == x) for x, _ in seg]
            poly = (
                polyline_points(seg)
                + " "
                + polyline_points([(p[0], p[2]) for p in reversed(uppers)])
            )
            c.parts.append(
                f'<polygon class="band" points="{poly}" fill="{BAND_FILL}" fill-opacity="0.3">'
                f"<title>{escape(band.label)}</title></polygon>"
            )
        _draw_line(
            c,
            band.centre,
            sx,
            lo,
            hi,
            GAP_COLOUR,
            "5 3",
            "diamond",
            band.label,
            x_labels,
            band.lower,
            band.upper,
        )
    for s in series:
        _draw_line(c, s.values, sx, lo, hi, s.colour, s.dash, s.marker, s.label, x_labels)
    c.legend(
        [(s.label, s.colour, s.dash, "line") for s in series]
        + ([(band.label, GAP_COLOUR, "5 3", "band")] if band else [])
    )
    return c.close()


def _draw_line(
    c: Canvas, values, sx, lo, hi, colour, dash, marker, label, x_labels, lower=None, upper=None
) -> None:
    pts = [(sx(i), c.sy(v, lo, hi)) if is_finite(v) else None for i, v in enumerate(values)]
    for seg in split_segments(pts):
        c.parts.append(
            f'<polyline points="{polyline_points(seg)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
    for i, p in enumerate(pts):
        if p is None:
            continue
        tip = f"{label} @ {x_labels[i] if i < len(x_labels) else i}: {values[i]:.3f}"
        if lower is not None and upper is not None and is_finite(lower[i]) and is_finite(upper[i]):
            tip += f" [{lower[i]:.3f}, {upper[i]:.3f}]"
        c.parts.append(draw_marker(marker, p[0], p[1], colour, tip))


def bar_chart(
    *,
    title: str,
    key: str,
    categories: Sequence[str],
    bars: Sequence[Series],
    y_label: str,
    x_label: str = "",
) -> Markup:
    """Draw grouped vertical bars: one group per category, one bar per series.

    Parameters
    ----------
    title : str
        Chart title (escaped).
    key : str
        Stable identifier written to ``data-plot`` (escaped).
    categories : sequence of str
        Group labels along x (escaped).
    bars : sequence of Series
        One value per category per series; ``None`` draws an "n/a" mark instead of a bar.
    y_label, x_label : str
        Axis labels (escaped).

    Returns
    -------
    Markup
        The ``<svg>`` element.
    """
    c = Canvas(title, [b.label for b in bars], key, "bar-chart")
    c.open()
    lo, hi, step_y = nice_range([v for b in bars for v in b.values])
    c.y_axis(lo, hi, step_y, y_label)
    n = max(len(categories), 1)
    group_w = (c.x1 - c.x0) / n
    bar_w = min(28.0, (group_w - 10) / max(len(bars), 1))
    for gi, cat in enumerate(categories):
        gx = c.x0 + gi * group_w + (group_w - bar_w * len(bars)) / 2
        c.parts.append(
            f'<text class="tick" x="{c.x0 + (gi + 0.5) * group_w:.1f}" y="{c.y0 + 14}" '
            f'text-anchor="middle">{escape(clip(cat, max(4, int(group_w / CHAR_W))))}</text>'
        )
        for bi, b in enumerate(bars):
            v = b.values[gi] if gi < len(b.values) else None
            x = gx + bi * bar_w
            if not is_finite(v):
                c.parts.append(
                    f'<text class="na" x="{x + bar_w / 2:.1f}" y="{c.y0 - 4}" '
                    f'text-anchor="middle">n/a<title>{escape(b.label)}, {escape(cat)}: '
                    f"undefined</title></text>"
                )
                continue
            y = c.sy(float(v), lo, hi)
            base = c.sy(max(lo, 0.0), lo, hi)
            top, h = min(y, base), abs(base - y)
            c.parts.append(
                f'<rect x="{x + 1:.1f}" y="{top:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                f'fill="{b.colour}"><title>{escape(b.label)}, {escape(cat)}: {v:.3f}</title></rect>'
            )
    if x_label:
        c.x_label(x_label)
    c.legend([(b.label, b.colour, "", "bar") for b in bars])
    return c.close()


def reliability_chart(*, title: str, key: str, curves: Sequence[Curve]) -> Markup:
    """Draw a reliability diagram: observed positive rate against mean predicted p per bin.

    Parameters
    ----------
    title : str
        Chart title (escaped).
    key : str
        Stable identifier written to ``data-plot`` (escaped).
    curves : sequence of Curve
        One curve per model; bins with ``None`` are skipped.

    Returns
    -------
    Markup
        The ``<svg>`` element, with the diagonal of perfect calibration.
    """
    c = Canvas(title, [cv.label for cv in curves] + ["perfect calibration"], key, "calib-chart")
    c.open()
    c.y_axis(0.0, 1.0, 0.25, "observed positive rate")
    side = c.y0 - c.y1
    x0 = c.x0

    def sx(v: float) -> float:
        return x0 + v * side

    for t in tick_values(0.0, 1.0, 0.25):
        c.parts.append(
            f'<text class="tick" x="{sx(t):.1f}" y="{c.y0 + 14}" text-anchor="middle">'
            f"{fmt_tick(t)}</text>"
        )
    c.parts.append(
        f'<text class="axis" x="{sx(0.5):.0f}" y="{PLOT_H - 6}" text-anchor="middle">'
        f"mean predicted p</text>"
        f'<line class="diag" x1="{sx(0):.1f}" y1="{c.y0}" x2="{sx(1):.1f}" y2="{c.y1}" '
        f'stroke="{BAND_FILL}" stroke-dasharray="3 3"/>'
    )
    for cv in curves:
        pts = [
            (sx(float(x)), c.sy(float(y), 0.0, 1.0)) if is_finite(x) and is_finite(y) else None
            for x, y in zip(cv.x, cv.y, strict=False)
        ]
        for seg in split_segments(pts):
            c.parts.append(
                f'<polyline points="{polyline_points(seg)}" fill="none" stroke="{cv.colour}" '
                f'stroke-width="2" stroke-dasharray="{cv.dash}"/>'
            )
        for i, p in enumerate(pts):
            if p is None:
                continue
            n = cv.counts[i] if i < len(cv.counts) else None
            tip = f"{cv.label}: mean p {cv.x[i]:.3f}, observed {cv.y[i]:.3f}" + (
                f", n={n}" if n is not None else ""
            )
            c.parts.append(draw_marker(cv.marker, p[0], p[1], cv.colour, tip))
    c.legend(
        [(cv.label, cv.colour, cv.dash, "line") for cv in curves]
        + [("perfect calibration", BAND_FILL, "3 3", "line")]
    )
    return c.close()


def histogram_chart(
    *,
    title: str,
    key: str,
    edges: Sequence[float],
    base: Histogram,
    overlays: Sequence[Histogram] = (),
    shown: str | None = None,
    band: tuple[float, float] | None = None,
    x_label: str = "p",
) -> Markup:
    """Draw counts per bin as bars, with each overlay as a step outline over them.

    Every overlay is drawn inside ``<g class="hist-level" data-level="...">`` together with
    its legend entry; all but ``shown`` also carry the class ``off`` (hidden by the page's
    stylesheet), so a page script can switch which overlay is visible without redrawing.

    Parameters
    ----------
    title : str
        Chart title (escaped).
    key : str
        Stable identifier written to ``data-plot`` (escaped).
    edges : sequence of float
        Bin edges, one more than the counts; the x axis spans ``edges[0]..edges[-1]``.
    base : Histogram
        Drawn as filled bars (the dense model).
    overlays : sequence of Histogram
        Drawn as step outlines, one visible at a time (the pruned levels).
    shown : str or None
        ``level`` of the overlay visible without a script; None shows the first.
    band : (float, float) or None
        A shaded x interval (the uncertainty band).
    x_label : str
        X-axis label (escaped).

    Returns
    -------
    Markup
        The ``<svg>`` element; every bin has a tooltip listing all models' counts.
    """
    rows = ["base"] + (["overlay"] if overlays else []) + (["band"] if band else [])
    c = Canvas(title, rows, key, "hist-chart")
    c.open()
    values = [float(v) for h in (base, *overlays) for v in h.counts]
    lo, hi, step_y = nice_range(values)
    if step_y < 1:  # counts: no fractional ticks
        step_y, hi = 1.0, float(max(math.ceil(hi), 1))
    c.y_axis(lo, hi, step_y, "samples")
    e0, e1 = float(edges[0]), float(edges[-1])

    def sx(v: float) -> float:
        return c.x0 + (v - e0) / (e1 - e0) * (c.x1 - c.x0)

    for t in tick_values(e0, e1, 0.25):
        c.parts.append(
            f'<text class="tick" x="{sx(t):.1f}" y="{c.y0 + 14}" text-anchor="middle">'
            f"{fmt_tick(t)}</text>"
        )
    c.x_label(x_label)
    band_label = ""
    if band:
        band_label = f"uncertainty band ({fmt_tick(band[0])}, {fmt_tick(band[1])})"
        c.parts.append(
            f'<rect class="band" x="{sx(band[0]):.1f}" y="{c.y1}" '
            f'width="{sx(band[1]) - sx(band[0]):.1f}" height="{c.y0 - c.y1}" '
            f'fill="{BAND_FILL}" fill-opacity="0.15"><title>{escape(band_label)}</title></rect>'
        )
    _hist_bars(c, sx, edges, base, lo, hi)
    _hist_overlays(c, sx, edges, overlays, shown, lo, hi)
    _hist_tooltips(c, sx, edges, (base, *overlays))
    c.legend([(base.label, PALETTE[0], "", "bar")])
    if band:
        c.legend([(band_label, BAND_FILL, "", "area")], first_row=len(rows) - 1)
    return c.close()


def _hist_bars(
    c: Canvas,
    sx: Callable[[float], float],
    edges: Sequence[float],
    base: Histogram,
    lo: float,
    hi: float,
) -> None:
    """The base model's counts as filled bars (empty bins draw nothing)."""
    for b in range(len(edges) - 1):
        v = base.counts[b] if b < len(base.counts) else 0
        if v > 0:
            y = c.sy(float(v), lo, hi)
            c.parts.append(
                f'<rect class="bar" x="{sx(edges[b]) + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(sx(edges[b + 1]) - sx(edges[b]) - 1, 0.5):.1f}" '
                f'height="{c.y0 - y:.1f}" fill="{PALETTE[0]}" fill-opacity="0.6"/>'
            )


def _hist_overlays(
    c: Canvas,
    sx: Callable[[float], float],
    edges: Sequence[float],
    overlays: Sequence[Histogram],
    shown: str | None,
    lo: float,
    hi: float,
) -> None:
    """Each overlay as a step outline with its legend entry in one switchable group."""
    n_bins = len(edges) - 1
    visible = shown if any(o.level == shown for o in overlays) else None
    # One colour for every overlay (only one is visible at a time), the pruned colour of the
    # other uncertainty charts; the legend names the level.
    ocolour, dash = PALETTE[1], ""
    for i, ov in enumerate(overlays):
        off = (ov.level != visible) if visible is not None else i > 0
        pts = [(sx(edges[0]), float(c.y0))]
        for b in range(n_bins):
            y = c.sy(float(ov.counts[b] if b < len(ov.counts) else 0), lo, hi)
            pts += [(sx(edges[b]), y), (sx(edges[b + 1]), y)]
        pts.append((sx(edges[-1]), float(c.y0)))
        c.parts.append(
            f'<g class="hist-level{" off" if off else ""}" data-level="{escape(ov.level)}">'
            f'<polyline points="{polyline_points(pts)}" fill="none" stroke="{ocolour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        c.legend([(ov.label, ocolour, dash, "line")], first_row=1)
        c.parts.append("</g>")


def _hist_tooltips(
    c: Canvas,
    sx: Callable[[float], float],
    edges: Sequence[float],
    histograms: Sequence[Histogram],
) -> None:
    """An invisible full-height rectangle per bin whose tooltip lists every model's count."""
    n_bins = len(edges) - 1
    for b in range(n_bins):
        tip = f"p in [{edges[b]:.2f}, {edges[b + 1]:.2f}{']' if b == n_bins - 1 else ')'}: " + (
            "; ".join(f"{h.label} {h.counts[b] if b < len(h.counts) else 0}" for h in histograms)
        )
        c.parts.append(
            f'<rect class="hit" x="{sx(edges[b]):.1f}" y="{c.y1}" '
            f'width="{sx(edges[b + 1]) - sx(edges[b]):.1f}" height="{c.y0 - c.y1}" '
            f'fill="#ffffff" fill-opacity="0"><title>{escape(tip)}</title></rect>'
        )
