"""The tables of every number: ranking, per-group cells, changes, flips, R², per-layer sparsity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report._format import GAP_METRICS, fmt_ci, fmt_num, fmt_sparsity, get, levels, sort_key
from audit.report.html.cells import Col, Table, Td, num_cell, signed_cell, sparsity_cell, text_cell
from audit.report.html.readers import cells_by_value, model_label, targets


def ranking_table(report: Mapping[str, Any]) -> Table:
    """AUROC, precision/recall@k and lift of the susceptibility ranking per level."""
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
                    sparsity_cell(lv.get("sparsity")),
                    text_cell(key),
                    num_cell(rq.get("auroc"), reason=why),
                    num_cell(rq.get("precision_at_k"), reason=why),
                    num_cell(rq.get("recall_at_k"), reason=why),
                    num_cell(rq.get("lift"), digits=2, reason=why),
                    num_cell(rq.get("k")),
                    num_cell(rq.get("n_flips")),
                ]
            )
    return table


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


def cell_table(report: Mapping[str, Any], mode: str) -> Table:
    """Every cell's size and rates for the dense model and each level (one threshold mode)."""
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
        (model_label(lv), sort_key(lv.get("sparsity")), lv.get("metrics")) for lv in levels(report)
    ]
    for label, key, metrics in models:
        for target in targets(report):
            tb = get(metrics, mode, target)
            if not isinstance(tb, Mapping):
                continue
            rows = [("—", "overall", tb.get("overall"))]
            for gk, entry in (tb.get("by_group") or {}).items():
                rows += [(gk, str(c.get("value")), c) for c in cells_by_value(entry).values()]
            for gk, value, cell in rows:
                if not isinstance(cell, Mapping):
                    continue
                reasons = cell.get("reasons") or {}
                small = cell.get("small")
                table.rows.append(
                    [
                        Td(label, key),
                        text_cell(target),
                        text_cell(gk),
                        text_cell(value),
                        num_cell(cell.get("n")),
                        num_cell(cell.get("positives")),
                        num_cell(cell.get("negatives")),
                        text_cell("—" if small is None else "yes" if small else "no"),
                    ]
                    + [num_cell(cell.get(m), reason=reasons.get(m)) for m, _ in _CELL_COLUMNS]
                )
    return table


def change_table(report: Mapping[str, Any], mode: str) -> Table:
    """Each gap, dense and pruned, with its paired-bootstrap Δ and CI per level."""
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
    for target in targets(report):
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
        sparsity_cell(lv.get("sparsity")),
        text_cell(target),
        text_cell(group),
        text_cell(metric.replace("_", " ")),
        num_cell(get(dense, "value"), reason=get(dense, "reason")),
        num_cell(get(pruned, "value"), reason=get(pruned, "reason")),
        signed_cell(get(d, "value"), reason=get(d, "reason") or "not in report"),
        Td(fmt_ci(ci) or "—", sort_key(ci[0]) if upper is not None else ""),
        num_cell(upper, reason="no CI"),
    ]


def flip_table(report: Mapping[str, Any]) -> Table:
    """Prediction flips (dense → pruned) per level, overall and per group value."""
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
                        sparsity_cell(lv.get("sparsity")),
                        text_cell(target),
                        text_cell(gk),
                        text_cell(value),
                        num_cell(c.get("n")),
                        num_cell(c.get("flips")),
                        num_cell(c.get("flip_rate"), reason="empty"),
                        num_cell(c.get("pos_to_neg_flip_rate"), reason="no positive predictions"),
                        num_cell(c.get("neg_to_pos_flip_rate"), reason="no negative predictions"),
                    ]
                )
    return table


def interdependence_table(report: Mapping[str, Any]) -> Table | None:
    """R² of each prediction from the others, dense and per level; None if absent."""
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
        (model_label(lv), sort_key(lv.get("sparsity")), get(lv, "metrics", "interdependence"))
        for lv in levels(report)
    ]
    for label, key, block in models:
        if not isinstance(block, Mapping):
            continue
        for target, v in block.items():
            table.rows.append(
                [
                    Td(label, key),
                    text_cell(target),
                    num_cell(get(v, "predictions"), reason="undefined"),
                    num_cell(get(v, "labels"), reason="undefined"),
                    signed_cell(get(v, "excess"), reason="undefined"),
                ]
            )
    return table if table.rows else None


def level_details(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per level: achieved sparsity, the per-layer table and the CIE count and ids."""
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
                        text_cell(layer.get("name")),
                        num_cell(layer.get("numel")),
                        num_cell(layer.get("sparsity"), digits=4),
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
