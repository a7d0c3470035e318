"""Judge an audit against the gate policy (SPEC §8): checks → pass/fail/inconclusive/undefined.

Owns: building the list of checks from the measured deltas or the forecast, each check's
outcome, the gate decision, and the max safe sparsity (§6.5). Pure function of the report's
data; computes no metric.

Outcomes of a check on a quantity ``q`` (a Δ, or an accuracy drop) with interval
``[lo, hi]`` and limit ``L`` (larger ``q`` is worse):

- ``pass``: ``hi ≤ L`` — the interval rules out a change beyond the limit;
- ``fail``: ``lo > L`` — the data show a change beyond the limit;
- ``inconclusive``: ``lo ≤ L < hi`` — the interval straddles the limit (or no interval could
  be formed, ``--bootstrap 0``). The check carries ``n_needed``, the evaluation-set size at
  which an interval of the same shape, narrowing as ``1/√N``, would settle it if the point
  estimate ``q̂`` held: ``n_needed = ⌈N · ((hi − q̂)/(L − q̂))²⌉`` when ``q̂ < L`` and
  ``⌈N · ((q̂ − lo)/(q̂ − L))²⌉`` when ``q̂ > L`` (None when ``q̂ = L``). It fails the gate
  unless the policy says ``on_inconclusive = "warn"``: a gate never passes on no evidence;
- ``undefined``: not estimable (with the reason) — never a pass; it fails the gate unless
  ``on_undefined = "warn"``.

Forecast checks (``fail_on = "forecast"`` or ``--no-validate``) judge the forecast's
predicted Δ, which has no interval, by its value; a predicted Δ of a gap that is not
estimable on the dense model is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from audit.config import Policy
from audit.results import BiasAmplification, judged_level_indices

LIMITED_METRICS: tuple[tuple[str, str], ...] = (
    ("fnr_gap", "max_delta_fnr_gap"),
    ("fpr_gap", "max_delta_fpr_gap"),
    ("accuracy_gap", "max_delta_accuracy_gap"),
    ("bias_amplification", "max_delta_bias_amplification"),
)
OUTCOMES = ("pass", "fail", "inconclusive", "undefined")
#: Tolerance of the limit comparison: a bound equal to the limit up to float rounding passes.
_EPS = 1e-12


def n_needed(value: float, ci: list[float], limit: float, n: int | None) -> int | None:
    """Evaluation-set size at which the interval would no longer straddle ``limit``.

    Interval widths of a proportion shrink as ``1/√N``, so the distance from the point to
    the bound that crosses the limit scales by ``√(N/N')``; see the module docstring.
    """
    if n is None or n <= 0:
        return None
    lo, hi = ci
    if value < limit:
        reach, room = hi - value, limit - value
    elif value > limit:
        reach, room = value - lo, value - limit
    else:
        return None
    if reach <= 0:
        return None
    # the 1e-9 keeps float noise in reach/room (3.0000000000000004) from adding a sample
    return max(int(n), math.ceil(n * (reach / room) ** 2 - 1e-9))


def _check(
    name: str,
    target: str | None,
    group: str | None,
    sparsity: float | None,
    value: float | None,
    ci: list[float] | None,
    limit: float,
    detail: str,
    *,
    n_eval: int | None = None,
    cells: list[dict[str, Any]] | None = None,
    ci_method: str | None = None,
    judge_value: bool = False,
) -> dict[str, Any]:
    needed = None
    width = None
    if value is None:
        outcome = "undefined"
    elif ci is not None:
        lo, hi = ci
        width = hi - lo
        if hi <= limit + _EPS:
            outcome = "pass"
        elif lo > limit + _EPS:
            outcome = "fail"
        else:
            outcome = "inconclusive"
            needed = n_needed(value, ci, limit, n_eval)
    elif judge_value:
        outcome = "pass" if value <= limit + _EPS else "fail"
    else:
        outcome = "inconclusive"
    return {
        "name": name,
        "target": target,
        "group": group,
        "sparsity": sparsity,
        "value": value,
        "ci": ci,
        "limit": limit,
        "outcome": outcome,
        "detail": detail,
        "width": width,
        "n_eval": n_eval,
        "n_needed": needed,
        "ci_method": ci_method,
        "cells": cells,
    }


def _describe(label: str, value: float, ci: list[float] | None, method: str | None) -> str:
    if ci is None:
        return (
            f"{label} {value:+.4f}; no bootstrap interval (--bootstrap 0), so nothing is ruled out"
        )
    how = f" ({method})" if method else ""
    return f"{label} {value:+.4f}, 95% CI{how} [{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _group_cells(dense: Mapping[str, Any], mode: str, target: str, group: str) -> Any:
    try:
        return dense[mode][target]["by_group"][group]
    except (KeyError, TypeError):
        return None


def _cells_summary(block: Any) -> tuple[list[dict[str, Any]] | None, int | None]:
    if not isinstance(block, Mapping) or not isinstance(block.get("cells"), list):
        return None, None
    cells = [
        {k: c.get(k) for k in ("value", "n", "positives", "negatives")}
        for c in block["cells"]
        if isinstance(c, Mapping)
    ]
    n = sum(int(c["n"]) for c in cells if isinstance(c.get("n"), int))
    return cells, (n or None)


def _overall_n(dense: Mapping[str, Any], mode: str, target: str) -> int | None:
    try:
        n = dense[mode][target]["overall"]["n"]
    except (KeyError, TypeError):
        return None
    return int(n) if isinstance(n, int) else None


def level_checks(
    level: dict[str, Any], dense: dict[str, Any], policy: Policy
) -> list[dict[str, Any]]:
    """Validated checks at one pruning level.

    Every (target, group, limited metric), the accuracy drop per target, and the excess
    accuracy drop per (target, group cell) when the level has it.
    """
    mode = policy.thresholds
    s = level["sparsity"]
    model = level.get("label") if level.get("source") == "supplied" else None
    checks = []
    for target, entry in level["delta"][mode].items():
        n_all = _overall_n(dense, mode, target)
        for group, metrics in entry["by_group"].items():
            block = _group_cells(dense, mode, target, group)
            cells, n_group = _cells_summary(block)
            for metric, key in LIMITED_METRICS:
                if metric == "bias_amplification":
                    ba = dense[mode][target]["by_group"][group]["bias_amplification"]
                    if not BiasAmplification.from_json(ba).applicable:
                        continue  # BA is not applicable to this group/target (stated in metrics)
                d = metrics[metric]
                value, ci = d["value"], d.get("ci")
                detail = (
                    d.get("reason") or "not estimable"
                    if value is None
                    else _describe("Δ =", value, ci, d.get("ci_method"))
                )
                checks.append(
                    _check(
                        f"delta_{metric}",
                        target,
                        group,
                        s,
                        value,
                        ci,
                        getattr(policy, key),
                        detail,
                        n_eval=n_group or n_all,
                        cells=cells,
                        ci_method=d.get("ci_method"),
                    )
                )
        acc = entry["accuracy"]
        drop = None if acc["value"] is None else -acc["value"]
        drop_ci = None if acc.get("ci") is None else [-acc["ci"][1], -acc["ci"][0]]
        detail = (
            acc.get("reason") or "accuracy undefined"
            if drop is None
            else _describe("accuracy drop", drop, drop_ci, acc.get("ci_method"))
        )
        checks.append(
            _check(
                "accuracy_drop",
                target,
                None,
                s,
                drop,
                drop_ci,
                policy.max_accuracy_drop,
                detail,
                n_eval=n_all,
                ci_method=acc.get("ci_method"),
            )
        )
        for group, rows in (entry.get("excess_accuracy_change") or {}).items():
            for row in rows:
                drop = None if row["value"] is None else -row["value"]
                drop_ci = None if row.get("ci") is None else [-row["ci"][1], -row["ci"][0]]
                where = f"{group}={row['group_value']}"
                detail = (
                    f"{where}: " + (row.get("reason") or "not estimable")
                    if drop is None
                    else _describe(
                        f"{where}: accuracy drop beyond the overall change", drop, drop_ci, None
                    )
                )
                check = _check(
                    "excess_accuracy_drop",
                    target,
                    group,
                    s,
                    drop,
                    drop_ci,
                    policy.max_excess_accuracy_drop,
                    detail,
                    n_eval=n_all,
                    cells=[{"value": row["group_value"], "n": row.get("n")}],
                    ci_method=row.get("ci_method"),
                )
                check["group_value"] = row["group_value"]
                checks.append(check)
    if model:
        for c in checks:
            c["model"] = model
    return checks


def forecast_checks(
    forecast: dict[str, Any], policy: Policy, dense: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Forecast-mode checks: predicted Δ of the FNR and FPR gaps against the limits.

    A gap that is not estimable on the dense model (a cell below ``min_group_size`` for the
    rate, a single comparable group) has no forecast: the check is undefined with the
    dense metrics' reason, never a pass on a predicted 0.
    """
    checks = []
    mode = policy.thresholds
    for pair in forecast["pairs"]:
        block = _group_cells(dense or {}, mode, pair["target"], pair["group"])
        cells, n_group = _cells_summary(block)
        for metric, key in LIMITED_METRICS[:2]:
            v = pair["predicted_delta"][metric]
            detail = f"dense-only forecast ({pair['reason']})"
            why = None
            if (pair.get("dense_gap") or {}).get(metric, 0.0) is None:
                why = f"the dense {metric} is not estimable, so nothing can be forecast"
            gap = (block or {}).get("gaps", {}).get(metric) if isinstance(block, Mapping) else None
            if isinstance(gap, Mapping) and gap.get("value") is None:
                why = f"dense {metric} " + str(gap.get("reason") or "not estimable")
            if v is None or why is not None:
                v, detail = None, why or "forecast undefined"
            checks.append(
                _check(
                    f"forecast_delta_{metric}",
                    pair["target"],
                    pair["group"],
                    None,
                    v,
                    None,
                    getattr(policy, key),
                    detail,
                    n_eval=n_group,
                    cells=cells,
                    judge_value=True,
                )
            )
    return checks


def blocking(checks: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """The checks that fail the gate under ``policy`` (fail, and per policy the others)."""
    bad = {"fail"}
    if policy.on_undefined == "fail":
        bad.add("undefined")
    if policy.on_inconclusive == "fail":
        bad.add("inconclusive")
    return [c for c in checks if c["outcome"] in bad]


def judged_levels(levels: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """The levels the validated gate judges.

    Every ``--pruned`` model when there are any (they replace ``target_sparsity``: they are
    what ships), else the tool's own level closest to the policy's ``target_sparsity``.
    """
    keys = [(lv["sparsity"], lv.get("source") == "supplied") for lv in levels]
    return [levels[i] for i in judged_level_indices(keys, policy.target_sparsity)]


def max_safe_sparsity(
    levels: list[dict[str, Any]], dense: dict[str, Any], policy: Policy
) -> float | None:
    """Largest audited sparsity such that it and every lower audited level pass (§6.5).

    Only the tool's own levels form this ladder; ``--pruned`` models are judged one by one.
    """
    safe = None
    own = [lv for lv in levels if lv.get("source") != "supplied"]
    for level in sorted(own, key=lambda lv: lv["sparsity"]):
        if blocking(level_checks(level, dense, policy), policy):
            break
        safe = level["sparsity"]
    return safe


def _failure_text(c: dict[str, Any]) -> str:
    head = (
        f"{c['name']} for {c['target']}"
        + (f" by {c['group']}" if c["group"] else "")
        + (f"={c['group_value']}" if c.get("group_value") is not None else "")
        + (f" for model {c['model']}" if c.get("model") else "")
        + (
            f" at sparsity {c['sparsity']:g}"
            if c["sparsity"] is not None and not c.get("model")
            else ""
        )
    )
    if c["outcome"] == "fail":
        shown = c["ci"][0] if c.get("ci") else c["value"]
        bound = " (CI lower bound)" if c.get("ci") else ""
        return f"{head}: {shown:+.4f}{bound} > {c['limit']:g}"
    if c["outcome"] == "inconclusive":
        need = (
            f"; about {c['n_needed']:,} evaluation samples would settle it"
            if c.get("n_needed")
            else ""
        )
        return f"{head}: inconclusive ({c['detail']}; limit {c['limit']:g}){need}"
    return f"{head}: undefined ({c['detail']})"


def evaluate_gate(
    policy: Policy,
    *,
    dense: dict[str, Any],
    forecast: dict[str, Any],
    levels: list[dict[str, Any]] | None,
    policy_source: str,
) -> dict[str, Any]:
    """The ``gate`` object of the report.

    ``fail_on="validated"`` judges the level at ``target_sparsity`` (which the runner always
    audits), or every ``--pruned`` model when there are any (:func:`judged_levels`); without
    validation (``--no-validate``) the forecast is judged instead, and the report says so.
    """
    mode = policy.fail_on
    notes = []
    if mode == "validated" and not levels:
        mode = "forecast"
        notes.append("validation was disabled, so the dense-only forecast was judged")
    if mode == "validated":
        assert levels is not None
        checks = [
            check
            for level in judged_levels(levels, policy)
            for check in level_checks(level, dense, policy)
        ]
    else:
        checks = forecast_checks(forecast, policy, dense)
    if not checks:
        notes.append("no check could be formed, so the gate fails (it never passes on nothing)")
    failed = blocking(checks, policy)
    counts = {k: sum(1 for c in checks if c["outcome"] == k) for k in OUTCOMES}
    return {
        "passed": bool(checks) and not failed,
        "mode": mode,
        "policy": {**policy.to_dict(), "source": policy_source},
        "checks": checks,
        "counts": counts,
        "failures": [_failure_text(c) for c in failed],
        "notes": notes,
    }
