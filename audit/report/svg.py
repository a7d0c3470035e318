"""Hand-built inline SVG charts for the HTML report (no plotting library, no network).

Owns: geometry and drawing of four chart kinds -- lines over an ordinal x axis with an
optional shaded band, grouped bars, a reliability diagram, and a histogram of p with one
switchable overlay per pruned level. Must not: read the report
dict or compute a metric; callers pass the numbers to draw. Every string that reaches the
SVG (titles, legend entries, tooltips) is escaped here, and the result is returned as
``markupsafe.Markup`` only after escaping.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#000000",
)
#: Dash patterns and marker shapes repeat the colour cue so that no series relies on hue.
DASHES: tuple[str, ...] = ("", "6 3", "2 2", "8 3 2 3", "1 3", "10 4")
MARKERS: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
BAND_FILL = "#7f7f7f"
GAP_COLOUR = "#333333"

_W, _H = 380, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 14, 30, 40
_LEGEND_LINE = 15
_CHAR_W = 6.4
_ids = itertools.count()


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


def style(i: int) -> tuple[str, str, str]:
    """Colour, dash pattern and marker of the ``i``-th series.

    Parameters
    ----------
    i : int
        Series index.

    Returns
    -------
    tuple of str
        ``(colour, dash, marker)``.
    """
    return PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)]


def _ok(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _nice_range(values: Sequence[float | None]) -> tuple[float, float, float]:
    """Y range covering the values and 0, with ends on multiples of a 1-2-2.5-5 step."""
    finite = [float(v) for v in values if _ok(v)]
    lo = min(min(finite, default=0.0), 0.0)
    hi = max(finite, default=1.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    step = _nice_step((hi - lo) / 5)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, step


def _nice_step(raw: float) -> float:
    exp = math.floor(math.log10(raw)) if raw > 0 else 0
    base = raw / 10**exp
    nice = next(n for n in (1, 2, 2.5, 5, 10) if n >= base - 1e-12)
    return nice * 10**exp


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    """Ticks on the multiples of ``step`` within [lo, hi]."""
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [i * step for i in range(first, last + 1)]


def _fmt_tick(v: float) -> str:
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    title = f"<title>{escape(tip)}</title>"
    if shape == "square":
        return (
            f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" '
            f'fill="{colour}">{title}</rect>'
        )
    if shape == "triangle":
        pts = f"{x:.1f},{y - 4.5:.1f} {x + 4.2:.1f},{y + 3:.1f} {x - 4.2:.1f},{y + 3:.1f}"
        return f'<polygon points="{pts}" fill="{colour}">{title}</polygon>'
    if shape == "diamond":
        pts = (
            f"{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y:.1f} "
            f"{x:.1f},{y + 4.5:.1f} {x - 4.5:.1f},{y:.1f}"
        )
        return f'<polygon points="{pts}" fill="{colour}">{title}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.6" fill="{colour}">{title}</circle>'


def _segments(points: Sequence[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Split a polyline where values are undefined: an undefined value is a gap, not zero."""
    out: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if out[-1]:
                out.append([])
        else:
            out[-1].append(p)
    return [s for s in out if s]


def _path(seg: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)


class _Canvas:
    """Plot area bookkeeping shared by the three chart kinds."""

    def __init__(self, title: str, legend: Sequence[str], key: str, css: str) -> None:
        self.id = f"plot{next(_ids)}"
        self.title = title
        self.key = key
        self.css = css
        self.legend_h = _LEGEND_LINE * len(legend) + (6 if legend else 0)
        self.height = _H + self.legend_h
        self.x0, self.x1 = _LEFT, _W - _RIGHT
        self.y0, self.y1 = _H - _BOTTOM, _TOP
        self.parts: list[str] = []

    def open(self) -> None:
        self.parts.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {self.css}" '
            f'data-plot="{escape(self.key)}" viewBox="0 0 {_W} {self.height}" '
            f'width="{_W}" height="{self.height}" role="img" aria-labelledby="{self.id}-t">'
            f'<title id="{self.id}-t">{escape(self.title)}</title>'
            f'<text class="ptitle" x="{_W / 2:.0f}" y="16" text-anchor="middle">'
            f"{escape(_clip(self.title, 58))}</text>"
        )

    def y_axis(self, lo: float, hi: float, step: float, label: str) -> None:
        for t in _ticks(lo, hi, step):
            y = self.sy(t, lo, hi)
            self.parts.append(
                f'<line class="grid" x1="{self.x0}" x2="{self.x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{self.x0 - 5}" y="{y + 3.5:.1f}" text-anchor="end">'
                f"{_fmt_tick(t)}</text>"
            )
        mid = (self.y0 + self.y1) / 2
        self.parts.append(
            f'<text class="axis" transform="translate(12 {mid:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(label)}</text>'
            f'<line class="axisline" x1="{self.x0}" x2="{self.x0}" y1="{self.y0}" '
            f'y2="{self.y1}"/><line class="axisline" x1="{self.x0}" x2="{self.x1}" '
            f'y1="{self.y0}" y2="{self.y0}"/>'
        )

    def x_label(self, label: str) -> None:
        self.parts.append(
            f'<text class="axis" x="{(self.x0 + self.x1) / 2:.0f}" y="{_H - 6}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )

    def sy(self, v: float, lo: float, hi: float) -> float:
        return self.y0 - (v - lo) / (hi - lo) * (self.y0 - self.y1)

    def legend(self, entries: Sequence[tuple[str, str, str, str]], *, first_row: int = 0) -> None:
        """Entries: (label, colour, dash, kind) with kind 'line', 'band', 'area' or 'bar'."""
        for i, (label, colour, dash, kind) in enumerate(entries, start=first_row):
            y = _H + 4 + i * _LEGEND_LINE
            if kind == "band":
                sw = (
                    f'<rect x="{_LEFT}" y="{y - 5}" width="22" height="10" fill="{BAND_FILL}" '
                    f'fill-opacity="0.3"/><line x1="{_LEFT}" x2="{_LEFT + 22}" y1="{y}" '
                    f'y2="{y}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
                )
            elif kind == "area":
                sw = (
                    f'<rect x="{_LEFT}" y="{y - 5}" width="22" height="10" fill="{colour}" '
                    f'fill-opacity="0.3"/>'
                )
            elif kind == "bar":
                sw = f'<rect x="{_LEFT + 5}" y="{y - 5}" width="12" height="10" fill="{colour}"/>'
            else:
                sw = (
                    f'<line x1="{_LEFT}" x2="{_LEFT + 22}" y1="{y}" y2="{y}" stroke="{colour}" '
                    f'stroke-width="2" stroke-dasharray="{dash}"/>'
                )
            self.parts.append(
                f'<g class="legend">{sw}<text x="{_LEFT + 28}" y="{y + 4}">'
                f"{escape(_clip(label, 48))}</text></g>"
            )

    def close(self) -> Markup:
        self.parts.append("</svg>")
        # Every data-derived string above went through escape(); numbers are formatted here.
        return Markup("".join(self.parts))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


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
    c = _Canvas(title, legend, key, "line-chart")
    c.open()
    values: list[float | None] = [v for s in series for v in s.values]
    if band:
        values += list(band.lower) + list(band.upper) + list(band.centre)
    lo, hi, step_y = _nice_range(values)
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
            (sx(i), c.sy(lw, lo, hi), c.sy(up, lo, hi)) if _ok(lw) and _ok(up) else None
            for i, (lw, up) in enumerate(zip(band.lower, band.upper, strict=False))
        ]
        for seg in _segments([(p[0], p[1]) if p else None for p in pts]):
            uppers = [next(p for p in pts if p and p[0] == x) for x, _ in seg]
            poly = _path(seg) + " " + _path([(p[0], p[2]) for p in reversed(uppers)])
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
    c: _Canvas, values, sx, lo, hi, colour, dash, marker, label, x_labels, lower=None, upper=None
) -> None:
    pts = [(sx(i), c.sy(v, lo, hi)) if _ok(v) else None for i, v in enumerate(values)]
    for seg in _segments(pts):
        c.parts.append(
            f'<polyline points="{_path(seg)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{dash}"/>'
        )
    for i, p in enumerate(pts):
        if p is None:
            continue
        tip = f"{label} @ {x_labels[i] if i < len(x_labels) else i}: {values[i]:.3f}"
        if lower is not None and upper is not None and _ok(lower[i]) and _ok(upper[i]):
            tip += f" [{lower[i]:.3f}, {upper[i]:.3f}]"
        c.parts.append(_marker(marker, p[0], p[1], colour, tip))


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
    c = _Canvas(title, [b.label for b in bars], key, "bar-chart")
    c.open()
    lo, hi, step_y = _nice_range([v for b in bars for v in b.values])
    c.y_axis(lo, hi, step_y, y_label)
    n = max(len(categories), 1)
    group_w = (c.x1 - c.x0) / n
    bar_w = min(28.0, (group_w - 10) / max(len(bars), 1))
    for gi, cat in enumerate(categories):
        gx = c.x0 + gi * group_w + (group_w - bar_w * len(bars)) / 2
        c.parts.append(
            f'<text class="tick" x="{c.x0 + (gi + 0.5) * group_w:.1f}" y="{c.y0 + 14}" '
            f'text-anchor="middle">{escape(_clip(cat, max(4, int(group_w / _CHAR_W))))}</text>'
        )
        for bi, b in enumerate(bars):
            v = b.values[gi] if gi < len(b.values) else None
            x = gx + bi * bar_w
            if not _ok(v):
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
    c = _Canvas(title, [cv.label for cv in curves] + ["perfect calibration"], key, "calib-chart")
    c.open()
    c.y_axis(0.0, 1.0, 0.25, "observed positive rate")
    side = c.y0 - c.y1
    x0 = c.x0

    def sx(v: float) -> float:
        return x0 + v * side

    for t in _ticks(0.0, 1.0, 0.25):
        c.parts.append(
            f'<text class="tick" x="{sx(t):.1f}" y="{c.y0 + 14}" text-anchor="middle">'
            f"{_fmt_tick(t)}</text>"
        )
    c.parts.append(
        f'<text class="axis" x="{sx(0.5):.0f}" y="{_H - 6}" text-anchor="middle">'
        f"mean predicted p</text>"
        f'<line class="diag" x1="{sx(0):.1f}" y1="{c.y0}" x2="{sx(1):.1f}" y2="{c.y1}" '
        f'stroke="{BAND_FILL}" stroke-dasharray="3 3"/>'
    )
    for cv in curves:
        pts = [
            (sx(float(x)), c.sy(float(y), 0.0, 1.0)) if _ok(x) and _ok(y) else None
            for x, y in zip(cv.x, cv.y, strict=False)
        ]
        for seg in _segments(pts):
            c.parts.append(
                f'<polyline points="{_path(seg)}" fill="none" stroke="{cv.colour}" '
                f'stroke-width="2" stroke-dasharray="{cv.dash}"/>'
            )
        for i, p in enumerate(pts):
            if p is None:
                continue
            n = cv.counts[i] if i < len(cv.counts) else None
            tip = f"{cv.label}: mean p {cv.x[i]:.3f}, observed {cv.y[i]:.3f}" + (
                f", n={n}" if n is not None else ""
            )
            c.parts.append(_marker(cv.marker, p[0], p[1], cv.colour, tip))
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
    c = _Canvas(title, rows, key, "hist-chart")
    c.open()
    values = [float(v) for h in (base, *overlays) for v in h.counts]
    lo, hi, step_y = _nice_range(values)
    if step_y < 1:  # counts: no fractional ticks
        step_y, hi = 1.0, float(max(math.ceil(hi), 1))
    c.y_axis(lo, hi, step_y, "samples")
    e0, e1 = float(edges[0]), float(edges[-1])

    def sx(v: float) -> float:
        return c.x0 + (v - e0) / (e1 - e0) * (c.x1 - c.x0)

    for t in _ticks(e0, e1, 0.25):
        c.parts.append(
            f'<text class="tick" x="{sx(t):.1f}" y="{c.y0 + 14}" text-anchor="middle">'
            f"{_fmt_tick(t)}</text>"
        )
    c.x_label(x_label)
    band_label = ""
    if band:
        band_label = f"uncertainty band ({_fmt_tick(band[0])}, {_fmt_tick(band[1])})"
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
    c: _Canvas,
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
    c: _Canvas,
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
            f'<polyline points="{_path(pts)}" fill="none" stroke="{ocolour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        c.legend([(ov.label, ocolour, dash, "line")], first_row=1)
        c.parts.append("</g>")


def _hist_tooltips(
    c: _Canvas,
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
