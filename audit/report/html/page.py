"""Page assembly: the sections into one template context, the inline assets and the CSP.

Owns: the Jinja2 environment (autoescape, strict undefined), reading the inline script and
stylesheet with the hashes the Content-Security-Policy allows, and :func:`render_html`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from audit.report._format import fmt_sparsity, forecast_benchmark_lines, get, na, verdict
from audit.report.html.calibration import calibration_plots
from audit.report.html.forecast import forecast_tables
from audit.report.html.gallery import gallery_section
from audit.report.html.gate import gate_table
from audit.report.html.inputs import inputs_section
from audit.report.html.metrics import metric_plots
from audit.report.html.tables import (
    cell_table,
    change_table,
    flip_table,
    interdependence_table,
    level_details,
    ranking_table,
)
from audit.report.html.uncertainty import histogram_plots, uncertainty_plots
from audit.report.schema import to_plain

TEMPLATES = Path(__file__).parent.parent / "templates"


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
    inputs, thresholds = inputs_section(plain)
    gallery, top_cards, susceptible = gallery_section(plain)
    forecast_pairs, agreement, agreement_summary = forecast_tables(plain)
    uncertainty, uncertainty_note = uncertainty_plots(plain)
    histograms, histogram_levels, histogram_note = histogram_plots(plain)
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
        "gate_table": gate_table(plain),
        "validated": validated,
        "metric_plots": metric_plots(plain, "default"),
        "metric_plots_calibrated": metric_plots(plain, "calibrated"),
        "uncertainty": uncertainty,
        "uncertainty_note": uncertainty_note,
        "histograms": histograms,
        "histogram_levels": histogram_levels,
        "histogram_note": histogram_note,
        "calibration": calibration_plots(plain),
        "gallery": gallery,
        "top_cards": top_cards,
        "susceptible": susceptible,
        "forecast": plain.get("forecast") or {},
        "forecast_benchmark": forecast_benchmark_lines(plain.get("forecast")),
        "forecast_pairs": forecast_pairs,
        "agreement": agreement,
        "agreement_summary": agreement_summary,
        "ranking": ranking_table(plain) if validated else None,
        "cells_default": cell_table(plain, "default"),
        "cells_calibrated": cell_table(plain, "calibrated"),
        "changes_default": change_table(plain, "default") if validated else None,
        "changes_calibrated": change_table(plain, "calibrated") if validated else None,
        "flips": flip_table(plain) if validated else None,
        "interdependence": interdependence_table(plain),
        "level_details": level_details(plain),
        "warnings": [str(w) for w in plain.get("warnings") or []],
        "skipped": [
            s for s in get(plain, "inputs", "skipped_images") or [] if isinstance(s, Mapping)
        ],
    }
    return _environment().get_template("report.html.j2").render(**context)
