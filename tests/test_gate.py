from __future__ import annotations

import copy
from typing import Any

import pytest

from audit.config import Policy
from audit.gate import evaluate_gate, level_checks, max_safe_sparsity


def _d(value: float | None, ci: list[float] | None = None) -> dict[str, Any]:
    return {
        "value": value,
        "ci": ci,
        "reason": None if value is not None else "no positives in g=1",
    }


def _level(s: float, fnr: dict[str, Any], acc: dict[str, Any] | None = None) -> dict[str, Any]:
    gaps = {
        "fnr_gap": fnr,
        "fpr_gap": _d(0.0, [-0.01, 0.01]),
        "accuracy_gap": _d(0.0, [-0.01, 0.01]),
        "bias_amplification": _d(0.0, [-0.01, 0.01]),
    }
    delta = {"t": {"accuracy": acc or _d(-0.01, [-0.02, 0.0]), "by_group": {"g": gaps}}}
    return {"sparsity": s, "delta": {"default": delta, "calibrated": delta}}


DENSE = {
    "default": {
        "t": {
            "by_group": {
                "g": {"bias_amplification": {"value": 0.1, "reason": None, "majority_value": "1"}}
            }
        }
    }
}
DENSE_CELLS = copy.deepcopy(DENSE)
DENSE_CELLS["default"]["t"]["overall"] = {"n": 400}
DENSE_CELLS["default"]["t"]["by_group"]["g"]["cells"] = [
    {"value": "0", "n": 300, "positives": 90, "negatives": 210, "accuracy": 0.9},
    {"value": "1", "n": 100, "positives": 30, "negatives": 70, "accuracy": 0.8},
]
FORECAST = {
    "pairs": [
        {
            "target": "t",
            "group": "g",
            "predicted_delta": {"fnr_gap": 0.03, "fpr_gap": -0.01},
            "reason": "r",
        }
    ]
}


def test_value_is_the_point_and_the_interval_decides() -> None:
    # Δ = 0.02 is within a 0.05 limit, but its CI [-0.02, 0.06] straddles it: inconclusive.
    checks = level_checks(_level(0.9, _d(0.02, [-0.02, 0.06])), DENSE, Policy())
    fnr = next(c for c in checks if c["name"] == "delta_fnr_gap")
    assert fnr["value"] == 0.02 and fnr["ci"] == [-0.02, 0.06]
    assert fnr["outcome"] == "inconclusive" and fnr["width"] == pytest.approx(0.08)
    acc = next(c for c in checks if c["name"] == "accuracy_drop")
    # accuracy change -0.01 [-0.02, 0.0] is a drop of 0.01 [0.0, 0.02]
    assert acc["value"] == pytest.approx(0.01) and acc["ci"] == pytest.approx([0.0, 0.02])
    assert acc["outcome"] == "pass"


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        ([0.00, 0.05], "pass"),  # the upper bound reaches the limit: still ruled out
        ([0.01, 0.049], "pass"),
        ([0.051, 0.08], "fail"),  # the lower bound is beyond the limit
        ([0.05, 0.08], "inconclusive"),  # the lower bound sits on the limit: not shown beyond
        ([-0.03, 0.06], "inconclusive"),
    ],
)
def test_three_outcomes_from_the_interval(ci: list[float], outcome: str) -> None:
    value = (ci[0] + ci[1]) / 2
    checks = level_checks(_level(0.9, _d(value, ci)), DENSE, Policy())
    fnr = next(c for c in checks if c["name"] == "delta_fnr_gap")
    assert fnr["outcome"] == outcome


@pytest.mark.parametrize("on_inconclusive", ["fail", "warn"])
def test_on_inconclusive_decides_whether_inconclusive_blocks(on_inconclusive: str) -> None:
    level = _level(0.9, _d(0.02, [-0.02, 0.06]))
    res = evaluate_gate(
        Policy(on_inconclusive=on_inconclusive),
        dense=DENSE_CELLS,
        forecast=FORECAST,
        levels=[level],
        policy_source="t",
    )
    assert res["counts"]["inconclusive"] == 1
    assert res["passed"] is (on_inconclusive == "warn")
    if on_inconclusive == "fail":
        (text,) = res["failures"]
        # n_needed = N·((hi − Δ)/(L − Δ))² = 400·(0.04/0.03)² = 711.1 → 712
        assert "delta_fnr_gap for t by g at sparsity 0.9: inconclusive" in text
        assert "about 712 evaluation samples would settle it" in text
    else:
        assert res["failures"] == []


@pytest.mark.parametrize(
    ("value", "ci", "expected"),
    [
        (0.02, [-0.02, 0.06], 712),  # below the limit: the upper bound must come in
        (0.06, [0.03, 0.09], 3600),  # above it: the lower bound must pass it; 400·(0.03/0.01)²
        (0.05, [0.03, 0.07], None),  # on the limit: no sample size settles it
    ],
)
def test_n_needed_formula(value: float, ci: list[float], expected: int | None) -> None:
    checks = level_checks(_level(0.9, _d(value, ci)), DENSE_CELLS, Policy())
    fnr = next(c for c in checks if c["name"] == "delta_fnr_gap")
    assert fnr["outcome"] == "inconclusive" and fnr["n_eval"] == 400
    assert fnr["n_needed"] == expected
    assert fnr["cells"] == [
        {"value": "0", "n": 300, "positives": 90, "negatives": 210},
        {"value": "1", "n": 100, "positives": 30, "negatives": 70},
    ]


def test_no_interval_is_inconclusive_not_a_pass() -> None:
    checks = level_checks(_level(0.9, _d(0.0, None)), DENSE, Policy())
    fnr = next(c for c in checks if c["name"] == "delta_fnr_gap")
    assert fnr["outcome"] == "inconclusive" and "--bootstrap 0" in fnr["detail"]


def test_excess_accuracy_drop_is_checked_per_group_value() -> None:
    level = _level(0.9, _d(0.0, [-0.01, 0.01]))
    level["delta"]["default"]["t"]["excess_accuracy_change"] = {
        "g": [
            {"group_value": "0", "n": 300, "value": 0.01, "ci": [0.0, 0.02], "reason": None},
            {"group_value": "1", "n": 100, "value": -0.09, "ci": [-0.12, -0.06], "reason": None},
        ]
    }
    res = evaluate_gate(
        Policy(), dense=DENSE_CELLS, forecast=FORECAST, levels=[level], policy_source="t"
    )
    ex = {c["group_value"]: c for c in res["checks"] if c["name"] == "excess_accuracy_drop"}
    assert ex["0"]["outcome"] == "pass" and ex["0"]["value"] == pytest.approx(-0.01)
    assert ex["1"]["outcome"] == "fail" and ex["1"]["ci"] == pytest.approx([0.06, 0.12])
    assert res["failures"] == [
        "excess_accuracy_drop for t by g=1 at sparsity 0.9: +0.0600 (CI lower bound) > 0.05"
    ]
    loose = Policy(max_excess_accuracy_drop=0.2)
    assert evaluate_gate(
        loose, dense=DENSE_CELLS, forecast=FORECAST, levels=[level], policy_source="t"
    )["passed"]


def test_limits_from_policy_apply() -> None:
    level = _level(0.9, _d(0.03, [0.01, 0.04]))
    assert evaluate_gate(
        Policy(), dense=DENSE, forecast=FORECAST, levels=[level], policy_source="t"
    )["passed"]
    strict = Policy(max_delta_fnr_gap=0.005)
    res = evaluate_gate(strict, dense=DENSE, forecast=FORECAST, levels=[level], policy_source="t")
    assert not res["passed"]
    assert res["failures"] == [
        "delta_fnr_gap for t by g at sparsity 0.9: +0.0100 (CI lower bound) > 0.005"
    ]


def test_undefined_never_passes_silently() -> None:
    level = _level(0.9, _d(None))
    res = evaluate_gate(Policy(), dense=DENSE, forecast=FORECAST, levels=[level], policy_source="t")
    bad = [c for c in res["checks"] if c["outcome"] == "undefined"]
    assert bad and not res["passed"] and "undefined (no positives in g=1)" in res["failures"][0]
    warn = Policy(on_undefined="warn")
    res = evaluate_gate(warn, dense=DENSE, forecast=FORECAST, levels=[level], policy_source="t")
    assert res["passed"] and any(c["outcome"] == "undefined" for c in res["checks"])


def test_forecast_mode_and_no_validation_fallback() -> None:
    pol = Policy(fail_on="forecast", max_delta_fnr_gap=0.02)
    res = evaluate_gate(
        pol,
        dense=DENSE,
        forecast=FORECAST,
        levels=[_level(0.9, _d(0.0, [0, 0]))],
        policy_source="t",
    )
    assert res["mode"] == "forecast" and not res["passed"]
    res = evaluate_gate(Policy(), dense=DENSE, forecast=FORECAST, levels=None, policy_source="t")
    assert res["mode"] == "forecast" and res["passed"] and res["notes"]


def test_gate_judges_the_target_sparsity_level() -> None:
    levels = [_level(0.8, _d(0.0, [0, 0.01])), _level(0.9, _d(0.2, [0.1, 0.3]))]
    assert not evaluate_gate(
        Policy(target_sparsity=0.9),
        dense=DENSE,
        forecast=FORECAST,
        levels=levels,
        policy_source="t",
    )["passed"]
    assert evaluate_gate(
        Policy(target_sparsity=0.8),
        dense=DENSE,
        forecast=FORECAST,
        levels=levels,
        policy_source="t",
    )["passed"]


def test_max_safe_sparsity_is_monotone() -> None:
    levels = [
        _level(0.8, _d(0.0, [0, 0.01])),
        _level(0.9, _d(0.2, [0.1, 0.3])),
        _level(0.95, _d(0.0, [0, 0.01])),  # passes again, but 0.9 already failed
    ]
    assert max_safe_sparsity(levels, DENSE, Policy()) == 0.8
    assert max_safe_sparsity(levels[1:2], DENSE, Policy()) is None


def test_ba_not_applicable_is_skipped_not_failed() -> None:
    dense = {
        "default": {
            "t": {
                "by_group": {
                    "g": {
                        "bias_amplification": {
                            "value": None,
                            "reason": "train positive rates 0.3 vs 0.31 differ by < 10% relative",
                            "majority_value": "1",
                        }
                    }
                }
            }
        }
    }
    checks = level_checks(_level(0.9, _d(0.0, [0, 0.01])), dense, Policy())
    assert not any(c["name"] == "delta_bias_amplification" for c in checks)


_LIMIT_KEYS = {
    # policy key → (check name, where the Δ lives in a level's delta block)
    "max_delta_fnr_gap": ("delta_fnr_gap", ("by_group", "g", "fnr_gap")),
    "max_delta_fpr_gap": ("delta_fpr_gap", ("by_group", "g", "fpr_gap")),
    "max_delta_accuracy_gap": ("delta_accuracy_gap", ("by_group", "g", "accuracy_gap")),
    "max_delta_bias_amplification": (
        "delta_bias_amplification",
        ("by_group", "g", "bias_amplification"),
    ),
    "max_accuracy_drop": ("accuracy_drop", ("accuracy",)),
}


def _level_with(path: tuple[str, ...], d: dict[str, Any], mode: str = "default") -> dict:
    level = copy.deepcopy(_level(0.9, _d(0.0, [-0.01, 0.01])))
    block = level["delta"][mode] = copy.deepcopy(level["delta"][mode])
    node = block["t"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = d
    return level


@pytest.mark.parametrize("key", sorted(_LIMIT_KEYS))
@pytest.mark.parametrize("over", [False, True])
def test_every_limit_key_alone_passes_and_fails(key: str, over: bool) -> None:
    name, path = _LIMIT_KEYS[key]
    # Only this metric moves: Δ 0.07, CI [0.06, 0.08] (accuracy: a change of −0.07, a drop
    # of 0.07 [0.06, 0.08]); the limit is 0.1 (passes) or 0.05 (fails), others are generous.
    d = _d(-0.07, [-0.08, -0.06]) if key == "max_accuracy_drop" else _d(0.07, [0.06, 0.08])
    policy = Policy(**{key: 0.05 if over else 0.1})
    res = evaluate_gate(
        policy, dense=DENSE, forecast=FORECAST, levels=[_level_with(path, d)], policy_source="t"
    )
    check = next(c for c in res["checks"] if c["name"] == name)
    assert check["value"] == pytest.approx(0.07)
    assert check["limit"] == (0.05 if over else 0.1)
    assert check["outcome"] == ("fail" if over else "pass")
    assert res["passed"] is (not over)
    assert [c["name"] for c in res["checks"] if c["outcome"] == "fail"] == ([name] if over else [])


def test_thresholds_key_chooses_which_deltas_are_judged() -> None:
    # The calibrated-threshold Δ of the FNR gap is large, the default one is not.
    level = _level_with(("by_group", "g", "fnr_gap"), _d(0.2, [0.1, 0.3]), mode="calibrated")
    dense = {**DENSE, "calibrated": DENSE["default"]}
    kw = {"dense": dense, "forecast": FORECAST, "levels": [level], "policy_source": "t"}
    assert evaluate_gate(Policy(thresholds="default"), **kw)["passed"]
    res = evaluate_gate(Policy(thresholds="calibrated"), **kw)
    assert not res["passed"] and res["failures"][0].startswith("delta_fnr_gap")
