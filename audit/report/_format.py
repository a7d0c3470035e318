"""Number and text formatting shared by the Markdown and HTML renderers.

Owns: how a number, an interval, a sparsity or an undefined value reads in a report.
Must not: compute a metric. Every value shown comes from the report dict as it is; a value
of ``None`` is undefined and reads "n/a (reason)", never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from audit.results import Report

NA = "n/a"

#: Gap metrics shown in per-group tables, in reading order.
GAP_METRICS: tuple[str, ...] = (
    "fnr_gap",
    "fpr_gap",
    "accuracy_gap",
    "tpr_gap",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "uncertainty_gap",
)


def is_number(value: Any) -> bool:
    """Say whether ``value`` is a real number (not a bool, not None, not NaN).

    Parameters
    ----------
    value : Any
        Anything read from the report dict.

    Returns
    -------
    bool
        True for finite ints and floats.
    """
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def na(reason: str | None = None) -> str:
    """Text for an undefined value: ``"n/a (reason)"`` or ``"n/a"`` without a reason.

    Parameters
    ----------
    reason : str or None
        Why the value could not be estimated, as given in the report.

    Returns
    -------
    str
        The unescaped text.
    """
    return f"{NA} ({reason})" if reason else NA


def fmt_num(value: Any, *, digits: int = 3, reason: str | None = None) -> str:
    """Format a plain number with ``digits`` decimals; undefined reads "n/a (reason)".

    Parameters
    ----------
    value : Any
        The number, or None when undefined.
    digits : int
        Decimals shown.
    reason : str or None
        Reason shown when ``value`` is undefined.

    Returns
    -------
    str
        The unescaped text.
    """
    if not is_number(value):
        return na(reason)
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:.{digits}f}"
    # A tiny negative such as -1e-17 (floating-point noise) would read "-0.000".
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_signed(value: Any, *, digits: int = 3, reason: str | None = None) -> str:
    """Format a change with an explicit sign (``+0.081``, ``-0.004``).

    Parameters
    ----------
    value : Any
        The change, or None when undefined.
    digits : int
        Decimals shown.
    reason : str or None
        Reason shown when ``value`` is undefined.

    Returns
    -------
    str
        The unescaped text.
    """
    if not is_number(value):
        return na(reason)
    text = f"{float(value):+.{digits}f}"
    # "-0.000" reads like a real decrease; a change that rounds to zero has no sign.
    return text.replace("-", "+") if float(text) == 0 else text


def fmt_ci(ci: Any, *, digits: int = 3) -> str:
    """Format a confidence interval as ``[lo, hi]``; empty when there is none.

    Parameters
    ----------
    ci : Any
        A two-element sequence of numbers, or None.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        ``"[0.052, 0.110]"`` or ``""``.
    """
    if isinstance(ci, Sequence) and len(ci) == 2 and all(is_number(c) for c in ci):
        return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return ""


def fmt_settle(check: Mapping[str, Any]) -> str:
    """What would settle an inconclusive gate check; empty for any other outcome.

    Parameters
    ----------
    check : Mapping
        A gate check (``outcome``, ``n_needed``, ``n_eval``, ``ci``).

    Returns
    -------
    str
        ``"needs ≈ 1,240 samples (has 500)"``; a sentence saying why no size is given when
        ``n_needed`` is null (no interval, or the point estimate sits on the limit).
    """
    if check.get("outcome") != "inconclusive":
        return ""
    needed, have = check.get("n_needed"), check.get("n_eval")
    if isinstance(needed, int) and not isinstance(needed, bool):
        has = f" (has {have:,})" if isinstance(have, int) and not isinstance(have, bool) else ""
        return f"needs ≈ {needed:,} samples{has}"
    if check.get("ci") is None:
        return "no interval (bootstrap disabled): rerun with --bootstrap"
    return "the estimate sits on the limit: no sample size settles it"


def fmt_delta(d: Mapping[str, Any] | None, *, digits: int = 3) -> str:
    """Format a ``D`` entry (value, ci, reason) as ``+0.081 [0.052, 0.110]``.

    Parameters
    ----------
    d : Mapping or None
        ``{"value": float|None, "ci": [lo, hi]|None, "reason": str|None}``.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        The unescaped text; "n/a (reason)" when the value is undefined.
    """
    if not isinstance(d, Mapping):
        return na("not in report")
    text = fmt_signed(d.get("value"), digits=digits, reason=d.get("reason"))
    ci = fmt_ci(d.get("ci"), digits=digits)
    return f"{text} {ci}" if ci and is_number(d.get("value")) else text


def fmt_estimate(e: Mapping[str, Any] | None, *, digits: int = 3) -> str:
    """Format an estimate entry (value, reason) as a number or "n/a (reason)".

    Parameters
    ----------
    e : Mapping or None
        ``{"value": float|None, "reason": str|None}``.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        The unescaped text.
    """
    if not isinstance(e, Mapping):
        return na("not in report")
    return fmt_num(e.get("value"), digits=digits, reason=e.get("reason"))


def fmt_sparsity(value: Any) -> str:
    """Format a sparsity as the shortest exact decimal (``0.9``, ``0.95``, ``0.99``).

    Parameters
    ----------
    value : Any
        Sparsity in [0, 1], or None.

    Returns
    -------
    str
        The text; "n/a" for None.
    """
    if not is_number(value):
        return NA
    return f"{float(value):.6g}"


def fmt_pct(value: Any, *, reason: str | None = None) -> str:
    """Format a rate in [0, 1] as a percentage with one decimal.

    Parameters
    ----------
    value : Any
        The rate, or None.
    reason : str or None
        Reason shown when ``value`` is undefined.

    Returns
    -------
    str
        ``"62.5%"`` or "n/a (reason)".
    """
    if not is_number(value):
        return na(reason)
    return f"{100 * float(value):.1f}%"


def sort_key(value: Any) -> str:
    """Machine-readable key an HTML table sorts by: ``repr`` of a number, else ``""``.

    Parameters
    ----------
    value : Any
        A number or None.

    Returns
    -------
    str
        ``""`` (sorts last) for undefined values.
    """
    return repr(float(value)) if is_number(value) else ""


def get(obj: Any, *keys: str | int) -> Any:
    """Walk nested dicts/lists, returning None as soon as a key is missing.

    Parameters
    ----------
    obj : Any
        The root (usually the report dict).
    *keys : str or int
        The path.

    Returns
    -------
    Any
        The value found, or None.
    """
    for key in keys:
        if isinstance(obj, Mapping) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def levels(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Return the validated levels in report order (empty when not validated).

    Parameters
    ----------
    report : Mapping
        The report dict.

    Returns
    -------
    list of Mapping
        ``report["validation"]["levels"]`` or ``[]``.
    """
    found = get(report, "validation", "levels")
    return [lv for lv in found if isinstance(lv, Mapping)] if isinstance(found, list) else []


def _typed(report: Mapping[str, Any]) -> Report | None:
    """The report as typed results, or None for a dict they cannot read (a partial one)."""
    try:
        return Report.from_json(report)
    except ValueError:
        return None


def named_levels(report: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], str]]:
    """Each validated level with its name, the key of its entries in the plot data.

    Parameters
    ----------
    report : Mapping
        The report dict.

    Returns
    -------
    list of (Mapping, str)
        The levels in report order, each with ``LevelResult.name`` (a level's label, else its
        sparsity as the runner writes it); empty when not validated or not readable.
    """
    typed = _typed(report)
    if typed is None or typed.validation is None:
        return []
    raw = get(report, "validation", "levels")
    return [(raw[i], lv.name) for i, lv in enumerate(typed.validation.levels)]


def graded_level(report: Mapping[str, Any]) -> tuple[Mapping[str, Any], str] | None:
    """The level the forecast was graded at, with its name (see :func:`named_levels`).

    That is the first level the gate judged, decided once in :mod:`audit.results`
    (``Report.judged_levels``); renderers ask it instead of matching sparsities.

    Parameters
    ----------
    report : Mapping
        The report dict.

    Returns
    -------
    (Mapping, str) or None
        The level's dict and name; None when the forecast was not graded (no validation,
        no ``forecast_agreement``) or the report is not readable as typed results.
    """
    if not isinstance(get(report, "validation", "forecast_agreement"), Mapping):
        return None
    typed = _typed(report)
    judged = typed.judged_levels() if typed is not None else []
    if typed is None or typed.validation is None or not judged:
        return None
    i = next(i for i, lv in enumerate(typed.validation.levels) if lv is judged[0])
    return get(report, "validation", "levels")[i], judged[0].name


def level_label(level: Mapping[str, Any] | None) -> str:
    """How reports name a level: its sparsity (``0.9``), or a ``--pruned`` model's file name.

    Parameters
    ----------
    level : Mapping or None
        One entry of ``validation.levels``; ``None`` is the dense model.

    Returns
    -------
    str
        ``"dense"``, the level's ``label`` when the report has one, else its sparsity.
    """
    if level is None:
        return "dense"
    label = level.get("label")
    if isinstance(label, str) and label:
        return label
    return fmt_sparsity(level.get("sparsity"))


def verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    """Read the verdict block, from ``verdict`` or, where absent, gate/forecast/validation.

    Parameters
    ----------
    report : Mapping
        The report dict.

    Returns
    -------
    dict
        ``passed`` (bool|None), ``headline`` (str), ``forecast`` (str|None),
        ``max_safe_sparsity`` (float|None) and ``max_safe_reason`` (str).
    """
    v = report.get("verdict") if isinstance(report.get("verdict"), Mapping) else {}
    passed = v.get("passed", get(report, "gate", "passed"))
    forecast = v.get("forecast", get(report, "forecast", "verdict"))
    if "max_safe_sparsity" in v:
        safe = v.get("max_safe_sparsity")
    else:
        safe = get(report, "validation", "max_safe_sparsity")
    checks = get(report, "gate", "checks") or []
    failed = sum(1 for c in checks if isinstance(c, Mapping) and c.get("outcome") == "fail")
    headline = v.get("headline") or (
        f"Gate {'passed' if passed else 'failed'}: {failed} of {len(checks)} checks failed."
    )
    if report.get("validation") is None:
        reason = "not validated: forecast only"
    else:
        reason = "no audited sparsity stays within the policy"
    return {
        "passed": passed if isinstance(passed, bool) else None,
        "headline": str(headline),
        "forecast": forecast if isinstance(forecast, str) else None,
        "max_safe_sparsity": safe if is_number(safe) else None,
        "max_safe_reason": reason,
    }


def forecast_benchmark_lines(fc: Mapping[str, Any] | None) -> list[str]:
    """Plain sentences stating how the forecast in use fared on the forecast benchmark.

    Reads ``forecast.model`` (coefficients' provenance, interval level, risk thresholds and
    the held-out ``benchmark`` figures shipped with them); returns [] when absent.

    Parameters
    ----------
    fc : Mapping or None
        The report's ``forecast`` block.

    Returns
    -------
    list of str
        Unescaped sentences, in reading order.
    """
    model = get(fc, "model")
    if not isinstance(model, Mapping):
        return []
    lines = []
    coef = model.get("coefficients")
    if isinstance(coef, Mapping) and coef:
        terms = ", ".join(f"{k} {fmt_signed(v, digits=2)}" for k, v in coef.items())
        lines.append(
            f"Flip model (recovery {model.get('recovery')}, at the target sparsity): "
            f"logit of a sample's flip chance = {terms} (features: the distance to the "
            "threshold in logit units; 1 when the prediction is the minority value; the "
            "group's dense tilt in the flip's direction)."
        )
    bench = model.get("benchmark")
    if not isinstance(bench, Mapping):
        lines.append("No benchmark figures ship with these coefficients.")
        return lines + [str(n) for n in model.get("notes") or []]
    by = bench.get("by_metric") or {}
    today = bench.get("todays_rule") or {}
    parts = []
    for metric in ("fnr_gap", "fpr_gap", "bias_amplification"):
        for s, v in (by.get(metric) or {}).items():
            if not isinstance(v, Mapping):
                continue
            old = get(today, metric, s)
            was = (
                f"; previous rule {fmt_num(get(old, 'auroc'), digits=2)} / "
                f"{fmt_num(get(old, 'spearman'), digits=2)}"
                if isinstance(old, Mapping)
                else ""
            )
            ci = v.get("auroc_ci")
            span = f" [{fmt_num(ci[0], digits=2)}, {fmt_num(ci[1], digits=2)}]" if ci else ""
            on = v.get("auroc_score", "forecast Δ").replace("predicted_ci_low", "CI-bound score")
            pt = v.get("auroc_point")
            point = (
                f", {v.get('point_events')} with Δ > 0.02: AUROC {fmt_num(pt, digits=2)}"
                if pt is not None
                else ""
            )
            auc = fmt_num(v.get("auroc"), digits=2)
            parts.append(
                f"{metric.replace('_', ' ')} @ {s}: AUROC ({on}) {auc}{span}, "
                f"Spearman {fmt_num(v.get('spearman'), digits=2)} "
                f"({v.get('events')} events in {v.get('n')}{point}{was})"
            )
    lines.append(
        f"Measured on the held-out part of the forecast benchmark ({bench.get('cases')} cases, "
        f"{bench.get('pairs')} pairs; event: {bench.get('event')}): " + "; ".join(parts) + "."
    )
    rates = bench.get("risk_event_rates") or {}
    for s, table in rates.items():
        if not isinstance(table, Mapping):
            continue
        cells = [
            f"{lv}: {fmt_pct(get(table, lv, 'event_rate'), reason='no such pairs')} of "
            f"{get(table, lv, 'pairs')} such pairs"
            for lv in ("high", "medium", "low")
        ]
        lines.append(f"Risk levels at {s} — share with an event: " + ", ".join(cells) + ".")
    cov = bench.get("interval_coverage") or {}
    level = model.get("interval_level")
    if cov and is_number(level):
        items = [
            f"{m.replace('_', ' ')} {fmt_pct(v)} @ {s}"
            for m, by_s in cov.items()
            if isinstance(by_s, Mapping)
            for s, v in by_s.items()
        ]
        lines.append(
            f"Forecast interval (nominal {fmt_pct(level)}) held the measured Δ in: "
            + ", ".join(items)
            + "."
        )
    return lines + [str(n) for n in model.get("notes") or []]
