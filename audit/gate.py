"""Judge an audit against the gate policy (SPEC §8): checks → pass/fail with reasons.

Owns: building the list of checks (value, limit, outcome, detail) from the measured deltas or
the forecast, the pass/fail decision, and the max safe sparsity (§6.5). Pure function of the
report's data; computes no metric. An undefined value is never a pass: it is ``undefined``,
which fails the gate unless the policy says ``on_undefined = "warn"``.
"""

from __future__ import annotations

from typing import Any

from audit.config import Policy

LIMITED_METRICS: tuple[tuple[str, str], ...] = (
    ("fnr_gap", "max_delta_fnr_gap"),
    ("fpr_gap", "max_delta_fpr_gap"),
    ("accuracy_gap", "max_delta_accuracy_gap"),
    ("bias_amplification", "max_delta_bias_amplification"),
)


def _check(
    name: str,
    target: str | None,
    group: str | None,
    sparsity: float | None,
    value: float | None,
    limit: float,
    detail: str,
) -> dict[str, Any]:
    if value is None:
        outcome = "undefined"
    else:
        outcome = "pass" if value <= limit + 1e-12 else "fail"
    return {
        "name": name,
        "target": target,
        "group": group,
        "sparsity": sparsity,
        "value": value,
        "limit": limit,
        "outcome": outcome,
        "detail": detail,
    }


def _upper(d: dict[str, Any]) -> tuple[float | None, str]:
    """The CI upper bound of a Δ, or its point value when no CI could be formed."""
    if d["value"] is None:
        return None, d.get("reason") or "not estimable"
    if d["ci"] is None:
        return d["value"], f"Δ = {d['value']:+.4f} (no bootstrap CI; point value judged)"
    lo, hi = d["ci"]
    return hi, f"Δ = {d['value']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]; upper bound judged"


def level_checks(
    level: dict[str, Any], dense: dict[str, Any], policy: Policy
) -> list[dict[str, Any]]:
    """Validated checks at one pruning level: every (target, group, limited metric) + accuracy."""
    mode = policy.thresholds
    s = level["sparsity"]
    model = level.get("label") if level.get("source") == "supplied" else None
    checks = []
    for target, entry in level["delta"][mode].items():
        for group, metrics in entry["by_group"].items():
            for metric, key in LIMITED_METRICS:
                if metric == "bias_amplification":
                    ba = dense[mode][target]["by_group"][group]["bias_amplification"]
                    if ba["majority_value"] is None or (
                        ba["value"] is None and ba["reason"] and "train" in ba["reason"]
                    ):
                        continue  # BA is not applicable to this group/target (stated in metrics)
                value, detail = _upper(metrics[metric])
                checks.append(
                    _check(f"delta_{metric}", target, group, s, value, getattr(policy, key), detail)
                    | ({"model": model} if model else {})
                )
        acc = entry["accuracy"]
        drop = None
        detail = acc.get("reason") or "accuracy undefined"
        if acc["value"] is not None:
            if acc["ci"] is not None:
                drop = -acc["ci"][0]
                detail = (
                    f"accuracy change {acc['value']:+.4f}, 95% CI [{acc['ci'][0]:+.4f}, "
                    f"{acc['ci'][1]:+.4f}]; worst-case drop judged"
                )
            else:
                drop = -acc["value"]
                detail = f"accuracy change {acc['value']:+.4f} (no CI)"
        checks.append(
            _check("accuracy_drop", target, None, s, drop, policy.max_accuracy_drop, detail)
            | ({"model": model} if model else {})
        )
    return checks


def forecast_checks(forecast: dict[str, Any], policy: Policy) -> list[dict[str, Any]]:
    """Forecast-mode checks: predicted Δ of the FNR and FPR gaps against the limits."""
    checks = []
    for pair in forecast["pairs"]:
        for metric, key in LIMITED_METRICS[:2]:
            v = pair["predicted_delta"][metric]
            checks.append(
                _check(
                    f"forecast_delta_{metric}",
                    pair["target"],
                    pair["group"],
                    None,
                    v,
                    getattr(policy, key),
                    f"dense-only forecast ({pair['reason']})",
                )
            )
    return checks


def _failed(checks: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    bad = {"fail"} | ({"undefined"} if policy.on_undefined == "fail" else set())
    return [c for c in checks if c["outcome"] in bad]


def judged_levels(levels: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """The levels the validated gate judges.

    Every ``--pruned`` model when there are any (they replace ``target_sparsity``: they are
    what ships), else the tool's own level closest to the policy's ``target_sparsity``.
    """
    supplied = [lv for lv in levels if lv.get("source") == "supplied"]
    if supplied:
        return supplied
    return [min(levels, key=lambda lv: abs(lv["sparsity"] - policy.target_sparsity))]


def max_safe_sparsity(
    levels: list[dict[str, Any]], dense: dict[str, Any], policy: Policy
) -> float | None:
    """Largest audited sparsity such that it and every lower audited level pass (§6.5).

    Only the tool's own levels form this ladder; ``--pruned`` models are judged one by one.
    """
    safe = None
    own = [lv for lv in levels if lv.get("source") != "supplied"]
    for level in sorted(own, key=lambda lv: lv["sparsity"]):
        if _failed(level_checks(level, dense, policy), policy):
            break
        safe = level["sparsity"]
    return safe


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
        checks = forecast_checks(forecast, policy)
    failed = _failed(checks, policy)
    failures = [
        f"{c['name']} for {c['target']}"
        + (f" by {c['group']}" if c["group"] else "")
        + (f" for model {c['model']}" if c.get("model") else "")
        + (
            f" at sparsity {c['sparsity']:g}"
            if c["sparsity"] is not None and not c.get("model")
            else ""
        )
        + (
            f": {c['value']:+.4f} > {c['limit']:g}"
            if c["outcome"] == "fail"
            else f": undefined ({c['detail']})"
        )
        for c in failed
    ]
    return {
        "passed": not failed,
        "mode": mode,
        "policy": {**policy.to_dict(), "source": policy_source},
        "checks": checks,
        "failures": failures,
        "notes": notes,
    }
