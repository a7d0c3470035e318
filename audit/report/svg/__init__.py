"""Hand-built inline SVG charts for the HTML report (no plotting library, no network).

Owns: :mod:`.canvas`, the primitives (plot-area geometry, axes, legend, markers, palette)
and the escaping of every string that reaches the SVG; :mod:`.charts`, the four chart kinds
-- lines over an ordinal x axis with an optional shaded band, grouped bars, a reliability
diagram, and a histogram of p with one switchable overlay per pruned level. Must not: read
the report dict or compute a metric; callers pass the numbers to draw. Results are
``markupsafe.Markup`` only after escaping.
"""

from __future__ import annotations

from audit.report.svg.canvas import BAND_FILL, DASHES, GAP_COLOUR, MARKERS, PALETTE, style
from audit.report.svg.charts import (
    Band,
    Curve,
    Histogram,
    Series,
    bar_chart,
    histogram_chart,
    line_chart,
    reliability_chart,
)

__all__ = [
    "BAND_FILL",
    "DASHES",
    "GAP_COLOUR",
    "MARKERS",
    "PALETTE",
    "Band",
    "Curve",
    "Histogram",
    "Series",
    "bar_chart",
    "histogram_chart",
    "line_chart",
    "reliability_chart",
    "style",
]
