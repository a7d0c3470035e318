"""The "Inputs" section: what was audited, how, and the decision thresholds per target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report._format import fmt_num, fmt_sparsity, get, is_number, levels
from audit.report.html.cells import Col, Table, num_cell, text_cell
from audit.report.html.readers import targets


def inputs_section(report: Mapping[str, Any]) -> tuple[list[tuple[str, str]], Table]:
    """The inputs as (label, text) items and the per-target decision-threshold table."""
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
    for t in targets(report):
        th.rows.append(
            [
                text_cell(t),
                num_cell(get(thresholds, "default", t)),
                num_cell(get(thresholds, "calibrated", t)),
            ]
        )
    return items, th
