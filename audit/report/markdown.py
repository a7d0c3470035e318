"""The Markdown renderer: ``report.md`` for PR comments and ``$GITHUB_STEP_SUMMARY``.

Owns: the order a reader meets the results in (verdict first, then the gate checks, then
the findings, the forecast and how it fared, then warnings) and keeping the text under a
PR comment's size limit by truncating tables with a note. Renderers format and never compute
a metric: every number shown is read from the report dict; undefined ones read
"n/a (reason)". Every data-derived string goes through :func:`md_escape`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from audit.report._format import (
    GAP_METRICS,
    fmt_ci,
    fmt_delta,
    fmt_estimate,
    fmt_num,
    fmt_pct,
    fmt_settle,
    fmt_signed,
    fmt_sparsity,
    forecast_benchmark_lines,
    get,
    graded_level,
    is_number,
    level_label,
    levels,
    na,
    verdict,
)
from audit.report.schema import to_plain
from audit.risk import DIRECTION_NOTE

#: GitHub refuses comments of 65,536 characters or more; stay well under it.
MAX_CHARS = 60_000

_SPECIAL = re.compile(r"([\\`*_\[\]#|~$!{}])")
_WHITESPACE = re.compile(r"\s+")
_MAX_CELL = 300
_ROW_LIMITS: tuple[int | None, ...] = (None, 100, 50, 25, 12, 6, 3, 1)
_OUTCOME = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "inconclusive": "❔ inconclusive",
    "undefined": "⚠️ undefined",
}
_OUTCOME_ORDER = {"fail": 0, "inconclusive": 1, "undefined": 2, "pass": 3}
_FINDING_ROWS = (*GAP_METRICS[:3], "equalized_odds_difference", "uncertainty_gap")
_SEE_FULL = "see report.html or report.json for everything"
_T = TypeVar("_T")


def md_escape(text: Any, *, max_len: int | None = None) -> str:
    r"""Make a data-derived string inert in Markdown (and in the HTML GitHub renders it to).

    ``&``, ``<`` and ``>`` become HTML entities, so no tag or entity from the data survives;
    the Markdown control characters ``\\ ` * _ [ ] # | ~ $ ! { }`` are backslash-escaped
    (``|`` would otherwise split a table cell); line breaks and tabs become single spaces
    (a newline would end a table row).

    Parameters
    ----------
    text : Any
        The string (anything else is converted with ``str``).
    max_len : int or None
        Longer strings are cut to this many characters, ending with "…", before escaping.

    Returns
    -------
    str
        Text that renders literally as the original.
    """
    s = _WHITESPACE.sub(" ", str(text))
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", s)


def _cell(text: Any) -> str:
    return md_escape(text, max_len=_MAX_CELL)


def _table(
    header: Sequence[str],
    items: Sequence[_T],
    row: Callable[[_T], Sequence[str]],
    max_rows: int | None,
    *,
    right: Sequence[int] = (),
    what: str = "rows",
) -> list[str]:
    """Build a GFM table, one row per item, cut to ``max_rows`` items with a note.

    ``row`` returns already-escaped cells; it runs only for the rows shown, so that a
    huge report is not formatted in full once per truncation attempt.
    """
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    shown = items if max_rows is None else items[:max_rows]
    lines += ["| " + " | ".join(row(item)) + " |" for item in shown]
    if len(shown) < len(items):
        lines += ["", f"*{len(items) - len(shown)} more {what} not shown ({_SEE_FULL}).*"]
    return lines


def _bullets(items: Sequence[str], max_rows: int | None, *, what: str) -> list[str]:
    shown = items if max_rows is None else items[:max_rows]
    lines = [f"- {_cell(item)}" for item in shown]
    if len(shown) < len(items):
        lines.append(f"- *{len(items) - len(shown)} more {what} not shown ({_SEE_FULL}).*")
    return lines


def _or_dash(value: Any) -> str:
    return "—" if value is None else _cell(value)


# --------------------------------------------------------------------------- sections


def _header(report: Mapping[str, Any]) -> list[str]:
    v = verdict(report)
    passed = v["passed"]
    icon, word = {True: ("✅", "passed"), False: ("❌", "failed")}.get(passed, ("❔", "unknown"))
    gate = report.get("gate") if isinstance(report.get("gate"), Mapping) else {}
    checks = [c for c in gate.get("checks") or [] if isinstance(c, Mapping)]
    counts = {k: sum(1 for c in checks if c.get("outcome") == k) for k in _OUTCOME}
    safe = v["max_safe_sparsity"]
    lines = [
        f"## {icon} prune-audit: gate {word}",
        "",
        f"**{md_escape(v['headline'])}**",
        "",
        f"- **Gate:** {icon} {word} — {counts['fail']} failed, {counts['inconclusive']} "
        f"inconclusive, {counts['undefined']} undefined, {counts['pass']} passed of "
        f"{len(checks)} checks (mode: {_cell(gate.get('mode'))})",
        f"- **Forecast risk:** {_cell(v['forecast'] or na('not in report'))}",
        "- **Max safe sparsity:** "
        + (fmt_sparsity(safe) if safe is not None else md_escape(na(v["max_safe_reason"]))),
    ]
    inputs = report.get("inputs") if isinstance(report.get("inputs"), Mapping) else {}
    model, data = inputs.get("model") or {}, inputs.get("data") or {}
    if model:
        arch = model.get("arch") or "arch not recorded"
        lines.append(
            f"- **Model:** {_cell(model.get('path'))} ({_cell(model.get('format'))}, "
            f"{_cell(arch)}, {fmt_num(model.get('n_parameters'))} parameters)"
        )
    if data:
        split = get(inputs, "splits", "eval")
        lines.append(
            f"- **Data:** {_cell(data.get('path'))} ({_cell(data.get('layout'))}), "
            f"{fmt_num(inputs.get('n_samples'))} samples evaluated"
            + (f" from split {_cell(split)}" if split else "")
        )
    targets, groups = inputs.get("targets") or [], inputs.get("groups") or []
    if targets:
        lines.append(
            f"- **Targets:** {_cell(', '.join(map(str, targets)))}; **groups:** "
            f"{_cell(', '.join(map(str, groups))) or 'none'}"
        )
    validation = report.get("validation")
    if isinstance(validation, Mapping):
        own = [lv for lv in levels(report) if lv.get("source") != "supplied"]
        supplied = [lv for lv in levels(report) if lv.get("source") == "supplied"]
        sp = ", ".join(fmt_sparsity(lv.get("sparsity")) for lv in own)
        lines.append(
            f"- **Validation:** {_cell(validation.get('method'))} pruning, recovery "
            f"{_cell(validation.get('recovery'))}, sparsities {sp or 'none'}"
            + (
                f"; supplied models {_cell(', '.join(level_label(lv) for lv in supplied))}"
                if supplied
                else ""
            )
        )
    else:
        lines.append("- **Validation:** not run (forecast from the dense model only)")
    return lines


def _gate(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    checks = [c for c in get(report, "gate", "checks") or [] if isinstance(c, Mapping)]
    lines = ["### Gate checks", ""]
    if not checks:
        return [*lines, "No checks in the report."]
    ordered = sorted(checks, key=lambda c: _OUTCOME_ORDER.get(str(c.get("outcome")), 3))
    header = [
        "check",
        "target",
        "group",
        "sparsity",
        "value",
        "95% CI",
        "limit",
        "outcome",
        "detail",
    ]
    lines += _table(header, ordered, _gate_row, max_rows, right=(3, 4, 5, 6), what="checks")
    unsettled = [c for c in ordered if c.get("outcome") == "inconclusive"]
    if unsettled:
        lines += [
            "",
            "**Inconclusive** (the interval straddles the limit: the data neither rule out nor "
            "show a change beyond it; the sample size assumes the interval narrows as 1/√N "
            "around the same estimate):",
            "",
        ]
        lines += _bullets(
            [
                # _bullets escapes each item once
                f"{c.get('name')} for {c.get('target')}"
                + (f" by {c.get('group')}" if c.get("group") else "")
                + (f"={c.get('group_value')}" if c.get("group_value") else "")
                + f": {fmt_num(c.get('value'))} {fmt_ci(c.get('ci'))}, limit "
                f"{fmt_num(c.get('limit'))} — {fmt_settle(c)}"
                for c in unsettled
            ],
            max_rows,
            what="inconclusive checks",
        )
    failures = [f for f in get(report, "gate", "failures") or [] if isinstance(f, str)]
    if failures:
        lines += ["", "**Failures:**", ""]
        lines += _bullets(failures, max_rows, what="failures")
    return lines


def _gate_row(c: Mapping[str, Any]) -> list[str]:
    defined = is_number(c.get("value"))
    return [
        _cell(c.get("name")),
        _or_dash(c.get("target")),
        _or_dash(c.get("group")),
        "—" if c.get("sparsity") is None else fmt_sparsity(c.get("sparsity")),
        # An undefined value carries the check's detail as its reason, shown once.
        _cell(fmt_num(c.get("value"), reason=c.get("detail") or "undefined")),
        fmt_ci(c.get("ci")),
        fmt_num(c.get("limit")),
        _OUTCOME.get(str(c.get("outcome")), _cell(c.get("outcome"))),
        _cell("; ".join(x for x in (c.get("detail") if defined else None, fmt_settle(c)) if x)),
    ]


def _pair_severity(report: Mapping[str, Any], target: str, group: str) -> float:
    """Largest upper CI bound of a gap change for the pair (for ordering only)."""
    worst = float("-inf")
    for lv in levels(report):
        deltas = get(lv, "delta", "default", target, "by_group", group) or {}
        for metric in (*_FINDING_ROWS, "bias_amplification"):
            d = deltas.get(metric) if isinstance(deltas, Mapping) else None
            ci = get(d, "ci")
            if isinstance(ci, list) and len(ci) == 2 and is_number(ci[1]):
                worst = max(worst, float(ci[1]))
            elif is_number(get(d, "value")):
                worst = max(worst, float(d["value"]))
    return worst


def _findings(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    block = get(report, "dense", "default")
    if not isinstance(block, Mapping) or not block:
        return []
    lvls = levels(report)
    lines = [
        "### Top findings (default thresholds)",
        "",
        "Dense value and the change Δ = pruned − dense at each audited sparsity, with its "
        "paired-bootstrap 95% CI. Pairs are ordered by their largest upper CI bound.",
        "",
    ]

    def acc_row(item: tuple[str, Any]) -> list[str]:
        target, tb = item
        reason = get(tb, "overall", "reasons", "accuracy")
        return [
            _cell(target),
            _cell(fmt_num(get(tb, "overall", "accuracy"), reason=reason)),
            *(_cell(fmt_delta(get(lv, "delta", "default", target, "accuracy"))) for lv in lvls),
        ]

    header = ["target", "dense accuracy"] + [f"Δ @ {level_label(lv)}" for lv in lvls]
    lines += ["**Overall accuracy**", ""]
    lines += _table(
        header,
        list(block.items()),
        acc_row,
        max_rows,
        right=tuple(range(1, len(header))),
        what="targets",
    )
    pairs = [
        (target, group) for target, tb in block.items() for group in (get(tb, "by_group") or {})
    ]
    pairs.sort(key=lambda p: -_pair_severity(report, *p))
    shown = pairs if max_rows is None else pairs[:max_rows]
    for target, group in shown:
        entry = get(block, target, "by_group", group) or {}
        rows = []
        for metric in (*_FINDING_ROWS, "bias_amplification"):
            dense = (
                get(entry, "bias_amplification")
                if metric == "bias_amplification"
                else get(entry, "gaps", metric)
            )
            deltas = [get(lv, "delta", "default", target, "by_group", group, metric) for lv in lvls]
            if dense is None and all(d is None for d in deltas):
                continue
            rows.append(
                [_cell(metric.replace("_", " ")), _cell(fmt_estimate(dense))]
                + [_cell(fmt_delta(d)) for d in deltas]
            )
        header = ["metric", "dense"] + [f"Δ @ {level_label(lv)}" for lv in lvls]
        lines += ["", f"**{md_escape(target)} × {md_escape(group)}**", ""]
        lines += _table(header, rows, list, None, right=tuple(range(1, len(header))))
    if len(shown) < len(pairs):
        lines += [
            "",
            f"*{len(pairs) - len(shown)} more target × group tables not shown ({_SEE_FULL}).*",
        ]
    return lines


def _forecast(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    fc = report.get("forecast") if isinstance(report.get("forecast"), Mapping) else {}
    agreement = get(report, "validation", "forecast_agreement") or {}
    at = agreement.get("sparsity") if isinstance(agreement, Mapping) else None
    measured = {
        (a.get("target"), a.get("group"), a.get("metric")): a
        for a in (get(agreement, "pairs") or [])
        if isinstance(a, Mapping)
    }
    graded = graded_level(report)
    level = graded[0] if graded is not None else None
    target = fc.get("target_sparsity")
    head = f"### Forecast: {_cell(fc.get('verdict') or na('not in report'))} risk"
    head += f" at sparsity {fmt_sparsity(target)}" if is_number(target) else ""
    lines = [head, ""]
    if fc.get("rule"):
        lines += [f"Rule: {md_escape(fc['rule'])}", ""]
    bench = forecast_benchmark_lines(fc)
    if bench:
        lines += [*(f"- {md_escape(b)}" for b in bench), ""]
    items = [
        (p, metric, pred)
        for p in fc.get("pairs") or []
        if isinstance(p, Mapping)
        for metric, pred in (p.get("predicted_delta") or {}).items()
    ]

    def row(item: tuple[Mapping[str, Any], str, Any]) -> list[str]:
        p, metric, pred = item
        t, g = p.get("target"), p.get("group")
        a = measured.get((t, g, metric))
        if report.get("validation") is None:
            meas, inside, dhit, rhit = na("not validated"), "—", "—", "—"
        elif a is None:
            meas, inside, dhit, rhit = na("not graded"), "—", "—", "—"
        else:
            d = get(level, "delta", "default", t, "by_group", g, metric)
            ci = fmt_ci(get(d, "ci")) if is_number(a.get("measured_delta")) else ""
            meas = fmt_signed(a.get("measured_delta"), reason=get(d, "reason"))
            meas += f" {ci}" if ci else ""
            inside = _hit(a.get("interval_hit"))
            dhit, rhit = _hit(a.get("direction_hit")), _hit(a.get("risk_hit"))
        iv = get(p, "interval", metric)
        forecast_text = fmt_signed(pred, reason="not estimable")
        forecast_text += f" {fmt_ci(iv)}" if is_number(pred) and iv else ""
        per_s = [
            f"{fmt_sparsity(b.get('sparsity'))}: {fmt_signed(get(b, 'predicted_delta', metric))}"
            for b in p.get("by_sparsity") or []
            if isinstance(b, Mapping)
        ]
        return [
            f"{_cell(t)} × {_cell(g)}",
            _cell(str(metric).replace("_", " ")),
            _cell(forecast_text),
            _cell(", ".join(per_s) or "—"),
            _cell(p.get("risk")),
            _cell(meas),
            inside,
            dhit,
            rhit,
            _cell(p.get("reason") or ""),
        ]

    header = [
        "pair",
        "metric",
        f"forecast Δ [interval] @ {fmt_sparsity(target)}" if is_number(target) else "forecast Δ",
        "forecast per sparsity",
        "risk",
        f"measured Δ @ {fmt_sparsity(at)}" if is_number(at) else "measured Δ",
        "in interval",
        "direction hit",
        "risk hit",
        "why",
    ]
    if items:
        lines += _table(header, items, row, max_rows, right=(2, 5), what="forecast rows")
    else:
        lines.append("The forecast lists no pairs.")
    return lines


def _hit(value: Any) -> str:
    return {True: "✅", False: "❌"}.get(value, "n/a") if isinstance(value, bool) else "n/a"


def _grading(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    if not isinstance(report.get("validation"), Mapping):
        return []
    agreement = get(report, "validation", "forecast_agreement") or {}
    lines = ["### Forecast grading", ""]
    if isinstance(agreement, Mapping) and agreement:
        lines += [
            f"At sparsity {fmt_sparsity(agreement.get('sparsity'))}: direction hit rate "
            f"{fmt_pct(agreement.get('direction_hit_rate'), reason='no defined pairs')}, "
            "forecast interval held the measured Δ in "
            f"{fmt_pct(agreement.get('interval_coverage'), reason='no intervals')}, risk "
            f"hit rate {fmt_pct(agreement.get('risk_hit_rate'), reason='no defined pairs')}. "
            f"{DIRECTION_NOTE}",
            "",
        ]
    bench = forecast_benchmark_lines(report.get("forecast"))
    if bench:
        lines += [
            "The rule in use, on the forecast benchmark (one audit cannot say whether a rule "
            "is any good):",
            "",
            *(f"- {md_escape(b)}" for b in bench),
            "",
        ]
    items = [
        (lv, key, rq)
        for lv in levels(report)
        for key, rq in (lv.get("ranking_quality") or {}).items()
        if isinstance(rq, Mapping)
    ]

    def row(item: tuple[Mapping[str, Any], str, Mapping[str, Any]]) -> list[str]:
        lv, key, rq = item
        no_flips = "no flips" if rq.get("n_flips") == 0 else None
        return [
            _cell(level_label(lv)),
            _cell(key),
            _cell(fmt_num(rq.get("auroc"), reason=no_flips)),
            _cell(fmt_num(rq.get("precision_at_k"), reason=no_flips)),
            _cell(fmt_num(rq.get("recall_at_k"), reason=no_flips)),
            _cell(fmt_num(rq.get("lift"), digits=2, reason=no_flips)),
            fmt_num(rq.get("k")),
            fmt_num(rq.get("n_flips")),
        ]

    if items:
        lines += ["Susceptibility ranking vs the predictions that actually flipped:", ""]
        lines += _table(
            ["sparsity", "target", "AUROC", "precision@k", "recall@k", "lift", "k", "flips"],
            items,
            row,
            max_rows,
            right=tuple(range(2, 8)),
            what="rows",
        )
    return lines


def _warnings(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    warnings = [w for w in report.get("warnings") or [] if isinstance(w, str)]
    skipped = get(report, "inputs", "skipped_images") or []
    if not warnings and not skipped:
        return []
    lines = ["### Warnings", ""]
    items = list(warnings)
    if skipped:
        first = ", ".join(
            f"{s.get('id')} ({s.get('reason')})" for s in skipped[:3] if isinstance(s, Mapping)
        )
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        items.append(f"Skipped images ({len(skipped)}): {first}{more}")
    return lines + _bullets(items, max_rows, what="warnings")


def _footer(report: Mapping[str, Any]) -> list[str]:
    tool = report.get("tool") if isinstance(report.get("tool"), Mapping) else {}
    created = f", created {_cell(report['created'])}" if report.get("created") else ""
    return [
        f"*{_cell(tool.get('name', 'prune-audit'))} {_cell(tool.get('version', ''))}, report "
        f"schema {_cell(report.get('schema_version'))}{created}. Full details: report.html.*"
    ]


def _levels_table(report: Mapping[str, Any], max_rows: int | None) -> list[str]:
    """Each level next to the dense model: accuracy and its change, size, recovery check."""
    lvls = [lv for lv in levels(report) if isinstance(lv.get("accuracy"), Mapping)]
    if not lvls:
        return []
    lines = [
        "### Levels",
        "",
        "Mean accuracy over targets at the default thresholds; *one-shot + BN* is the same "
        "sparsity without fine-tuning (shown for fine-tuned levels: a fine-tuned level below "
        "it is a recovery that failed).",
        "",
    ]

    def row(lv: Mapping[str, Any]) -> list[str]:
        acc = lv["accuracy"]
        size = lv.get("structure") or lv.get("model") or {}
        return [
            _cell(level_label(lv)),
            "supplied" if lv.get("source") == "supplied" else "pruned here",
            fmt_num(lv.get("achieved_sparsity"), digits=4),
            fmt_num(size.get("n_parameters")) if size.get("n_parameters") is not None else "—",
            fmt_num(size.get("parameter_reduction"), digits=4)
            if is_number(size.get("parameter_reduction"))
            else "—",
            fmt_num(acc.get("dense"), digits=4),
            fmt_num(acc.get("pruned"), digits=4),
            f"{acc['change']:+.4f}" if is_number(acc.get("change")) else "—",
            fmt_num(acc.get("one_shot_bn"), digits=4) if is_number(acc.get("one_shot_bn")) else "—",
        ]

    header = [
        "level",
        "source",
        "sparsity",
        "parameters",
        "param. reduction",
        "dense acc.",
        "accuracy",
        "Δ accuracy",
        "one-shot + BN",
    ]
    return lines + _table(header, lvls, row, max_rows, right=tuple(range(2, 9)), what="levels")


_SECTIONS: tuple[Callable[[Mapping[str, Any], int | None], list[str]], ...] = (
    _gate,
    _levels_table,
    _findings,
    _forecast,
    _grading,
    _warnings,
)


def _render(report: Mapping[str, Any], max_rows: int | None) -> str:
    lines = _header(report)
    for section in _SECTIONS:
        part = section(report, max_rows)
        if part:
            lines += ["", *part]
    lines += ["", *_footer(report)]
    return "\n".join(lines) + "\n"


def render_markdown(report: Mapping[str, Any]) -> str:
    """Render the report as GitHub-flavoured Markdown, always under 65,000 characters.

    Parameters
    ----------
    report : Mapping
        The report dict (docs/report-json.md).

    Returns
    -------
    str
        Markdown: verdict first, then the gate checks, top findings, forecast, forecast
        grading and warnings. Tables are cut with a note when the full text would not fit a
        PR comment.
    """
    plain = to_plain(report)
    text = ""
    for max_rows in _ROW_LIMITS:
        text = _render(plain, max_rows)
        if len(text) < MAX_CHARS:
            return text
    # Even one row per table is too much (thousands of targets): cut at a line boundary.
    note = f"\n\n*Report truncated to fit a PR comment ({_SEE_FULL}).*\n"
    cut = text.rfind("\n", 0, MAX_CHARS - len(note))
    return text[: max(cut, 0)] + note
