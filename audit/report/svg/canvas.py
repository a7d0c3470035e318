"""SVG primitives shared by the charts: palette, axes, legend, markers and escaping.

Owns: the plot-area geometry (:class:`Canvas`), nice axis ranges and ticks, the Okabe-Ito
palette with dash and marker cues, and the one place where text becomes SVG: every string
goes through ``markupsafe.escape`` here, and :meth:`Canvas.close` returns ``Markup`` only
after that. Must not know about any chart kind, read the report dict or compute a metric.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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
PLOT_W, PLOT_H = 380, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 14, 30, 40
_LEGEND_LINE = 15
CHAR_W = 6.4
_ids = itertools.count()


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


def is_finite(v: float | None) -> bool:
    """Whether ``v`` is a finite number (None, NaN and infinities are gaps)."""
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def nice_range(values: Sequence[float | None]) -> tuple[float, float, float]:
    """Y range covering the values and 0, with ends on multiples of a 1-2-2.5-5 step."""
    finite = [float(v) for v in values if is_finite(v)]
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


def tick_values(lo: float, hi: float, step: float) -> list[float]:
    """Ticks on the multiples of ``step`` within [lo, hi]."""
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [i * step for i in range(first, last + 1)]


def fmt_tick(v: float) -> str:
    """A tick label: at most 3 decimals, no trailing zeros, never ``-0``."""
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def draw_marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    """A data-point marker (circle, square, triangle or diamond) with an escaped tooltip."""
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


def split_segments(points: Sequence[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Split a polyline where values are undefined: an undefined value is a gap, not zero."""
    out: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if out[-1]:
                out.append([])
        else:
            out[-1].append(p)
    return [s for s in out if s]


def polyline_points(seg: Sequence[tuple[float, float]]) -> str:
    """The ``points`` attribute of a polyline through ``seg``."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)


class Canvas:
    """Plot area bookkeeping shared by the three chart kinds."""

    def __init__(self, title: str, legend: Sequence[str], key: str, css: str) -> None:
        self.id = f"plot{next(_ids)}"
        self.title = title
        self.key = key
        self.css = css
        self.legend_h = _LEGEND_LINE * len(legend) + (6 if legend else 0)
        self.height = PLOT_H + self.legend_h
        self.x0, self.x1 = _LEFT, PLOT_W - _RIGHT
        self.y0, self.y1 = PLOT_H - _BOTTOM, _TOP
        self.parts: list[str] = []

    def open(self) -> None:
        """Start the ``<svg>`` element with its escaped title and ``data-plot`` key."""
        self.parts.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {self.css}" '
            f'data-plot="{escape(self.key)}" viewBox="0 0 {PLOT_W} {self.height}" '
            f'width="{PLOT_W}" height="{self.height}" role="img" aria-labelledby="{self.id}-t">'
            f'<title id="{self.id}-t">{escape(self.title)}</title>'
            f'<text class="ptitle" x="{PLOT_W / 2:.0f}" y="16" text-anchor="middle">'
            f"{escape(clip(self.title, 58))}</text>"
        )

    def y_axis(self, lo: float, hi: float, step: float, label: str) -> None:
        """Grid lines and tick labels every ``step`` in [lo, hi], the axis lines and label."""
        for t in tick_values(lo, hi, step):
            y = self.sy(t, lo, hi)
            self.parts.append(
                f'<line class="grid" x1="{self.x0}" x2="{self.x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{self.x0 - 5}" y="{y + 3.5:.1f}" text-anchor="end">'
                f"{fmt_tick(t)}</text>"
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
        """The x-axis label (escaped), centred under the plot area."""
        self.parts.append(
            f'<text class="axis" x="{(self.x0 + self.x1) / 2:.0f}" y="{PLOT_H - 6}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )

    def sy(self, v: float, lo: float, hi: float) -> float:
        """The y pixel of value ``v`` on an axis spanning [lo, hi]."""
        return self.y0 - (v - lo) / (hi - lo) * (self.y0 - self.y1)

    def legend(self, entries: Sequence[tuple[str, str, str, str]], *, first_row: int = 0) -> None:
        """Entries: (label, colour, dash, kind) with kind 'line', 'band', 'area' or 'bar'."""
        for i, (label, colour, dash, kind) in enumerate(entries, start=first_row):
            y = PLOT_H + 4 + i * _LEGEND_LINE
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
                f"{escape(clip(label, 48))}</text></g>"
            )

    def close(self) -> Markup:
        """End the ``<svg>`` element and return it as ``Markup``."""
        self.parts.append("</svg>")
        # Every data-derived string above went through escape(); numbers are formatted here.
        return Markup("".join(self.parts))


def clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters with an ellipsis (before it is escaped)."""
    return text if len(text) <= n else text[: n - 1] + "…"
