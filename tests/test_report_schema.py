from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from audit.report import SCHEMA_PATH, render_json, validate_report

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_schema_ships_inside_the_package() -> None:
    assert SCHEMA_PATH.name == "report.schema.json"
    assert SCHEMA_PATH.parent.name == "report" and SCHEMA_PATH.parent.parent.name == "audit"
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {
        "schema_version",
        "tool",
        "inputs",
        "dense",
        "forecast",
        "susceptible",
        "validation",
        "gate",
    }


def test_fixture_is_valid(report: dict) -> None:
    validate_report(report)


@pytest.mark.parametrize("key", ["gate", "dense", "validation", "schema_version"])
def test_missing_required_top_level_key_is_named(report: dict, key: str) -> None:
    del report[key]
    with pytest.raises(ValueError, match=rf"\$: '{key}' is a required property"):
        validate_report(report)


def test_missing_nested_key_is_named_with_its_path(report: dict) -> None:
    del report["dense"]["default"]["Smiling"]["overall"]["fnr"]
    with pytest.raises(ValueError, match=r"\$\.dense\.default\.Smiling\.overall: 'fnr' is a req"):
        validate_report(report)


def test_string_where_a_number_belongs_fails_with_path(report: dict) -> None:
    report["dense"]["default"]["Blond_Hair"]["overall"]["accuracy"] = "0.97"
    with pytest.raises(
        ValueError,
        match=r"\$\.dense\.default\.Blond_Hair\.overall\.accuracy: '0\.97' is not of type",
    ):
        validate_report(report)


def test_several_errors_are_listed_first_ones_first(report: dict) -> None:
    report["gate"]["passed"] = "no"
    report["inputs"]["n_samples"] = -1
    with pytest.raises(ValueError, match=r"2 error\(s\)") as info:
        validate_report(report)
    text = str(info.value)
    assert "$.gate.passed" in text and "$.inputs.n_samples" in text


def test_bad_enum_and_range_are_caught(report: dict) -> None:
    report["forecast"]["verdict"] = "severe"
    report["validation"]["levels"][0]["sparsity"] = 1.5
    with pytest.raises(ValueError) as info:
        validate_report(report)
    assert "$.forecast.verdict" in str(info.value)
    assert "$.validation.levels[0].sparsity" in str(info.value)


def test_nullables_accept_none_where_the_doc_says_null(report: dict) -> None:
    report["validation"] = None
    report["verdict"]["max_safe_sparsity"] = None
    report["dense"]["interdependence"] = None
    report["susceptible"][0]["thumbnail"] = None
    report["gate"]["checks"][0]["value"] = None
    validate_report(report)


def test_non_nullable_rejects_none(report: dict) -> None:
    report["gate"]["checks"][0]["limit"] = None
    with pytest.raises(ValueError, match=r"\$\.gate\.checks\[0\]\.limit: None is not of type"):
        validate_report(report)


def test_extra_keys_are_allowed_for_future_fields(report: dict) -> None:
    report["something_new"] = {"x": 1}
    report["dense"]["default"]["Smiling"]["overall"]["brier"] = 0.1
    validate_report(report)


def test_thumbnail_must_be_an_inline_image(report: dict) -> None:
    report["susceptible"][0]["thumbnail"] = "https://example.com/x.png"
    with pytest.raises(ValueError, match=r"\$\.susceptible\[0\]\.thumbnail: .* does not match"):
        validate_report(report)


def test_susceptible_items_are_ranked_from_one_gallery_items_may_be_unranked(
    report: dict,
) -> None:
    assert report["gallery"] and all(g["rank"] == 0 for g in report["gallery"])
    validate_report(report)
    report["susceptible"][0]["rank"] = 0
    with pytest.raises(ValueError, match=r"\$\.susceptible\[0\]\.rank: 0 is less than the min"):
        validate_report(report)
    report["susceptible"][0]["rank"] = 1
    report["gallery"][0]["outcome"] = "maybe"
    with pytest.raises(ValueError, match=r"\$\.gallery\[0\]\.outcome: 'maybe' is not one of"):
        validate_report(report)


def test_calibration_curves_are_optional_but_typed(report: dict) -> None:
    bad = copy.deepcopy(report)
    bad["calibration_curves"]["Smiling"]["dense"]["count"][0] = 1.5
    with pytest.raises(ValueError, match=r"calibration_curves\.Smiling\.dense\.count\[0\]"):
        validate_report(bad)
    del report["calibration_curves"]
    validate_report(report)


def test_uncertainty_histograms_are_optional_but_typed(report: dict) -> None:
    bad = copy.deepcopy(report)
    bad["uncertainty_histograms"]["targets"]["Smiling"]["Male"][1]["counts"]["0.9"][3] = -1
    with pytest.raises(
        ValueError,
        match=r"uncertainty_histograms\.targets\.Smiling\.Male\[1\]\.counts\['0\.9'\]\[3\]: -1",
    ):
        validate_report(bad)
    bad = copy.deepcopy(report)
    del bad["uncertainty_histograms"]["targets"]["Smiling"]["Male"][0]["counts"]["dense"]
    with pytest.raises(ValueError, match=r"'dense' is a required property"):
        validate_report(bad)
    bad = copy.deepcopy(report)
    bad["uncertainty_histograms"]["quantity"] = "logit"
    with pytest.raises(ValueError, match=r"uncertainty_histograms\.quantity: 'logit' is not one"):
        validate_report(bad)
    del report["uncertainty_histograms"]
    validate_report(report)


def test_numpy_scalars_validate_like_python_numbers(report: dict) -> None:
    report["inputs"]["n_samples"] = np.int64(2000)
    report["dense"]["default"]["Smiling"]["overall"]["accuracy"] = np.float32(0.5)
    report["gate"]["passed"] = np.bool_(False)
    validate_report(report)
    assert json.loads(render_json(report))["inputs"]["n_samples"] == 2000


def test_nan_is_refused_with_its_key_path(report: dict) -> None:
    report["dense"]["default"]["Smiling"]["overall"]["ece"] = math.nan
    with pytest.raises(ValueError, match=r"\$\.dense\.default\.Smiling\.overall\.ece"):
        validate_report(report)
    with pytest.raises(ValueError, match=r"NaN.*\$\.dense\.default\.Smiling\.overall\.ece"):
        render_json(report)


def test_render_json_refuses_infinity_inside_lists(report: dict) -> None:
    report["validation"]["levels"][1]["delta"]["default"]["Smiling"]["accuracy"]["ci"] = [
        -math.inf,
        0.1,
    ]
    with pytest.raises(
        ValueError, match=r"\$\.validation\.levels\[1\]\.delta\.default\.Smiling\.accuracy\.ci\[0\]"
    ):
        render_json(report)


def test_render_json_round_trips_and_keeps_none(report: dict) -> None:
    text = render_json(report)
    assert "NaN" not in text and text.endswith("\n")
    assert json.loads(text) == report
    assert '"value": null' in text


def test_render_json_names_unserialisable_values(report: dict) -> None:
    report["inputs"]["model"]["path"] = Path("m.pt")
    with pytest.raises(TypeError, match=r"\$\.inputs\.model\.path has type PosixPath|WindowsPath"):
        render_json(report)


def test_validate_report_needs_a_dict() -> None:
    with pytest.raises(TypeError, match="report must be a dict, got list"):
        validate_report([])  # type: ignore[arg-type]
