"""The HTML renderer: one self-contained ``report.html`` (no network, no external assets).

Owns: turning the report dict into a page -- verdict banner, inputs, gate checks, plots of
metrics against sparsity with CI bands, uncertainty and calibration charts, the
susceptible-sample gallery, the forecast and its grading, and sortable tables of every
number. One module per section builds that section's view model (:mod:`.cells` holds the
table and plot types, :mod:`.readers` the shared look-ups into the report dict), and
:mod:`.page` assembles them into the template context. Must not compute a metric: values
are read from the dict (the only arithmetic is placing a CI band at dense gap + Δ CI, and
picking which level to draw), and nothing here imports the forecast or the runner.

Safety: templates use Jinja2 autoescape; SVG is built in :mod:`audit.report.svg`, where
every string is escaped before it becomes ``Markup``; thumbnails are accepted only as
``data:image/...;base64`` URIs; and a Content-Security-Policy allows nothing but the two
inline scripts (by hash), the inline stylesheet (by hash) and ``data:`` images, so even a
missed escape could neither run code nor reach the network.
"""

from __future__ import annotations

from audit.report.html.page import render_html

__all__ = ["render_html"]
