"""Judge stage (rank 0): the validation summary, the gate and the verdict.

Owns: grading the forecast against the measured levels (through validate), the max safe
sparsity and the gate decision (through gate), the warnings a ``warn`` policy turns
undefined/inconclusive checks into, and the one-sentence verdict.
Must not: compute a metric, or prune.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit import gate, pruning, validate
from audit.config import AuditConfig
from audit.pipeline.dense import DenseResults


@dataclass(frozen=True)
class Judgement:
    """report.json's ``validation``, ``gate`` and ``verdict``, and the gate's warnings."""

    validation: dict[str, Any] | None
    gate: dict[str, Any]
    verdict: dict[str, Any]
    warnings: tuple[str, ...]


_AGREEMENT_BY_LEVEL = ("sparsity", "direction_hit_rate", "interval_coverage", "risk_hit_rate")


def judge(cfg: AuditConfig, dr: DenseResults, levels: list[dict[str, Any]]) -> Judgement:
    """The judge stage: grade the forecast, find the max safe sparsity, run the gate."""
    validation = None
    if cfg.validate:
        mode = cfg.policy.thresholds
        graded = gate.judged_levels(levels, cfg.policy)[0]
        agreement = validate.forecast_agreement(dr.forecast, graded, mode=mode)
        agreement["by_level"] = [
            {
                k: validate.forecast_agreement(dr.forecast, lv, mode=mode)[k]
                for k in _AGREEMENT_BY_LEVEL
            }
            for lv in levels
        ]
        validation = {
            "method": pruning.get_method(cfg.method).label,
            "recovery": cfg.recovery,
            "levels": levels,
            "forecast_agreement": agreement,
            "max_safe_sparsity": gate.max_safe_sparsity(levels, dr.dense, cfg.policy),
        }
    result = gate.evaluate_gate(
        cfg.policy,
        dense=dr.dense,
        forecast=dr.forecast,
        levels=levels or None,
        policy_source=cfg.policy_source,
    )
    return Judgement(
        validation=validation,
        gate=result,
        verdict=verdict(result, dr.forecast, validation),
        warnings=tuple(_gate_warnings(cfg, result)),
    )


def _gate_warnings(cfg: AuditConfig, result: dict[str, Any]) -> list[str]:
    """Checks that a ``warn`` policy lets through are still said out loud."""
    warnings = []
    for c in result["checks"]:
        if c["outcome"] == "undefined" and cfg.policy.on_undefined == "warn":
            warnings.append(f"gate check {c['name']} for {c['target']} is undefined: {c['detail']}")
        if c["outcome"] == "inconclusive" and cfg.policy.on_inconclusive == "warn":
            need = f"; about {c['n_needed']:,} samples would settle it" if c["n_needed"] else ""
            warnings.append(
                f"gate check {c['name']} for {c['target']}"
                + (f" by {c['group']}" if c["group"] else "")
                + f" is inconclusive: {c['detail']} straddles the limit {c['limit']:g}{need}"
            )
    return warnings


def verdict(
    gate_result: dict[str, Any], fc: dict[str, Any], validation: dict[str, Any] | None
) -> dict[str, Any]:
    """The one-sentence answer: passed or how many checks block, and the max safe sparsity."""
    passed = bool(gate_result["passed"])
    safe = validation["max_safe_sparsity"] if validation else None
    if passed:
        head = "Gate passed: pruning stays within the policy's bias limits"
    else:
        pol = gate_result["policy"]
        blocks = {"fail"} | {
            k for k in ("undefined", "inconclusive") if pol.get(f"on_{k}", "fail") == "fail"
        }
        outcomes = [c["outcome"] for c in gate_result["checks"] if c["outcome"] in blocks]
        parts = [
            f"{outcomes.count(k)} {k}"
            for k in ("fail", "inconclusive", "undefined")
            if outcomes.count(k)
        ]
        head = f"Gate failed: {len(gate_result['failures'])} check(s) block it" + (
            f" ({', '.join(parts)})" if parts else ""
        )
    if validation:
        head += (
            f"; max safe sparsity {safe:g}."
            if safe is not None
            else "; no audited sparsity is safe."
        )
    else:
        head += f" (forecast only: risk {fc['verdict']})."
    return {
        "passed": passed,
        "headline": head,
        "forecast": fc["verdict"],
        "max_safe_sparsity": safe,
    }
