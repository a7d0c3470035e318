"""Typed results (audit/results.py): report.json is read and written exactly (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.results import (
    ABSENT,
    BiasAmplification,
    Estimate,
    GateCheck,
    LevelResult,
    Report,
    judged_level_indices,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def assert_round_trip(report: dict) -> Report:
    """``Report.from_json(x).to_json() == x``, key order and JSON types included."""
    typed = Report.from_json(report)
    again = typed.to_json()
    assert again == report
    # == ignores key order and 1 == 1.0; the serialised text does not.
    assert json.dumps(again) == json.dumps(report)
    assert Report.from_json(again) == typed
    return typed


@pytest.mark.parametrize("name", ["demo_report_golden.json", "report_example.json"])
def test_fixture_reports_round_trip(name: str) -> None:
    assert_round_trip(_load(name))


def test_the_demo_report_reads_as_typed_results() -> None:
    report = assert_round_trip(_load("demo_report_golden.json"))
    assert report.inputs.task == "multilabel" and report.inputs.targets == (
        "Warm",
        "Round",
        "Bright",
    )
    warm = report.dense.default["Warm"]
    assert warm.overall.n == 3000 and warm.by_group["Textured"].cells[1].value == "1"
    gaps = warm.by_group["Textured"].gaps
    assert isinstance(gaps["fnr_gap"], Estimate) and gaps["fnr_gap"].ci is ABSENT
    level = report.validation.levels[1]
    assert isinstance(level, LevelResult) and level.name == "0.9" and not level.supplied
    d = level.delta["default"]["Warm"].by_group["Textured"]["fnr_gap"]
    assert isinstance(d.ci, tuple) and d.ci[0] <= d.value <= d.ci[1]
    assert all(isinstance(c, GateCheck) for c in report.gate.checks)
    assert report.passed is False and [lv.sparsity for lv in report.judged_levels()] == [0.9]


def test_a_report_with_extra_keys_and_its_own_key_order_survives() -> None:
    report = _load("report_example.json")
    report["inputs"] = {"future_key": [1, 2], **report["inputs"]}
    report["gate"]["checks"][0]["note"] = "kept"
    report = {"x-vendor": {"a": 1}, **dict(reversed(list(report.items())))}
    assert_round_trip(report)


def test_a_missing_required_key_is_named_with_its_path() -> None:
    report = _load("report_example.json")
    target = report["inputs"]["targets"][0]
    del report["dense"]["default"][target]["overall"]["n"]
    where = rf"\$\.dense\.default\.{target}\.overall: the cell has no 'n' key"
    with pytest.raises(ValueError, match=where):
        Report.from_json(report)
    with pytest.raises(ValueError, match=r"\$\.validation: expected a JSON object"):
        Report.from_json({**_load("report_example.json"), "validation": [1]})
    bad = _load("report_example.json")
    bad["gate"]["checks"] = [bad["gate"]["checks"][0], 7]
    with pytest.raises(ValueError, match=r"\$\.gate\.checks\[1\]: expected a JSON object"):
        Report.from_json(bad)


@pytest.mark.parametrize(
    ("ba", "applicable"),
    [
        ({"value": 0.1, "reason": None, "majority_value": "1"}, True),
        # too few positives in the evaluated data: applicable, undefined
        (
            {"value": None, "reason": "group value '1' has 3 positive(s)", "majority_value": "1"},
            True,
        ),
        # the train split rules BA out: not applicable
        (
            {
                "value": None,
                "reason": "train positive rates 0.300 vs 0.310 differ by less than 10% relative",
                "majority_value": "1",
            },
            False,
        ),
        (
            {"value": None, "reason": "defined for a binary group only", "majority_value": None},
            False,
        ),
    ],
)
def test_bias_amplification_says_whether_it_applies(ba: dict, applicable: bool) -> None:
    assert BiasAmplification.from_json(ba).applicable is applicable


def test_the_judged_level_is_decided_in_one_place() -> None:
    own = [(0.8, False), (0.9, False), (0.95, False)]
    assert judged_level_indices(own, 0.9) == [1]
    assert judged_level_indices(own, 0.92) == [1]
    # equally close (0.125 each way, exact in binary): the first, as min() keeps it
    assert judged_level_indices([(0.5, False), (0.75, False)], 0.625) == [0]
    assert judged_level_indices(own, 0.99) == [2]
    assert judged_level_indices([*own, (0.71, True), (0.5, True)], 0.9) == [3, 4]
    assert judged_level_indices([], 0.9) == []
