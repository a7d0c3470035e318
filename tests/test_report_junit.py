"""report.junit.xml: valid against the Jenkins JUnit schema, readable by junitparser.

The schema is the Jenkins xUnit plug-in's junit-10.xsd, shipped in tests/fixtures with its
source; junitparser is a maintained JUnit reader (what CI tooling in Python uses).
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import xmlschema
from junitparser import Failure, JUnitXml, Skipped
from typer.testing import CliRunner

from audit.cli import app
from audit.report import render_junit
from tests.conftest import check_args

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA = xmlschema.XMLSchema(FIXTURES / "junit-10.xsd")
runner = CliRunner()


@pytest.fixture()
def report() -> dict:
    return json.loads((FIXTURES / "report_example.json").read_text(encoding="utf-8"))


def _cases(xml_text: str) -> dict[str, object]:
    (suite,) = list(JUnitXml.fromstring(xml_text))
    return {case.name: case for case in suite}


def _check(name: str, outcome: str, **extra: object) -> dict:
    return {
        "name": name,
        "target": "Smiling",
        "group": "Male",
        "sparsity": 0.9,
        "value": 0.03,
        "limit": 0.05,
        "outcome": outcome,
        "detail": f"{outcome} detail",
        **extra,
    }


def test_fixture_report_validates_and_parses(report: dict) -> None:
    text = render_junit(report)
    SCHEMA.validate(text)
    checks = report["gate"]["checks"]
    (suite,) = list(JUnitXml.fromstring(text))
    assert suite.tests == len(checks) == 14
    # two fail, one undefined under a policy without on_undefined (so it fails the gate)
    assert [c["outcome"] for c in checks].count("fail") == 2
    assert suite.failures == 3
    assert suite.errors == 0 and suite.skipped == 0
    props = {p.name: p.value for p in suite.properties()}
    assert props["gate.passed"] == "false" and props["policy.max_delta_fnr_gap"] == "0.05"
    cases = _cases(text)
    case = cases["max_delta_fnr_gap[Blond_Hair by Male @ 0.9]"]
    (failure,) = case.result
    assert isinstance(failure, Failure) and failure.type == "fail"
    assert failure.message == "+0.5414 is beyond the limit 0.05"
    assert "value: +0.5414" in case.system_out and "limit: 0.05" in case.system_out
    (undefined,) = cases["max_delta_fnr_gap[Blond_Hair by Male×Young @ 0.9]"].result
    assert isinstance(undefined, Failure) and undefined.type == "undefined"
    assert cases["max_delta_fpr_gap[Blond_Hair by Male @ 0.9]"].is_passed
    assert cases["max_accuracy_drop[Smiling @ 0.9]"].is_passed


@pytest.mark.parametrize(
    ("outcome", "policy", "expected"),
    [
        ("pass", {}, "passed"),
        ("fail", {"on_undefined": "warn", "on_inconclusive": "warn"}, "failure"),
        ("undefined", {"on_undefined": "fail"}, "failure"),
        ("undefined", {}, "failure"),  # no key: a gate never passes on no evidence
        ("undefined", {"on_undefined": "warn"}, "skipped"),
        ("inconclusive", {"on_inconclusive": "fail"}, "failure"),
        ("inconclusive", {}, "failure"),
        ("inconclusive", {"on_inconclusive": "warn"}, "skipped"),
    ],
)
def test_outcomes_are_judged_as_the_policy_judges_them(
    report: dict, outcome: str, policy: dict, expected: str
) -> None:
    report["gate"]["policy"] = {"fail_on": "validated", **policy}
    report["gate"]["checks"] = [_check("delta_fnr_gap", outcome, ci=[-0.01, 0.07], n_needed=4200)]
    text = render_junit(report)
    SCHEMA.validate(text)
    (suite,) = list(JUnitXml.fromstring(text))
    (case,) = list(suite)
    assert suite.failures == (expected == "failure")
    assert suite.skipped == (expected == "skipped")
    if expected == "passed":
        assert case.is_passed and not case.result
    else:
        (result,) = case.result
        assert isinstance(result, Failure if expected == "failure" else Skipped)
        assert result.type == outcome
        if outcome != "fail":
            assert result.message == f"{outcome}: {outcome} detail (limit 0.05)"
    assert "interval: [-0.0100, +0.0700]" in case.system_out
    assert "samples that would settle it: about 4,200" in case.system_out


def test_names_stay_unique_and_carry_group_values(report: dict) -> None:
    report["gate"]["checks"] = [
        _check("excess_accuracy_drop", "pass", group_value="1"),
        _check("excess_accuracy_drop", "pass", group_value="0"),
        _check("delta_fnr_gap", "pass"),
        _check("delta_fnr_gap", "pass"),
        _check("forecast_delta_fnr_gap", "pass", sparsity=None),
    ]
    cases = _cases(render_junit(report))
    assert list(cases) == [
        "excess_accuracy_drop[Smiling by Male=1 @ 0.9]",
        "excess_accuracy_drop[Smiling by Male=0 @ 0.9]",
        "delta_fnr_gap[Smiling by Male @ 0.9]",
        "delta_fnr_gap[Smiling by Male @ 0.9] #2",
        "forecast_delta_fnr_gap[Smiling by Male]",
    ]


def test_data_strings_are_escaped(report: dict) -> None:
    evil = 'Sm<i>"le&\x01\x1b]0;x\x07'
    report["gate"]["checks"] = [_check("delta_fnr_gap", "fail", target=evil, detail=evil)]
    report["verdict"]["headline"] = evil
    text = render_junit(report)
    SCHEMA.validate(text)  # control characters would make the document unparseable
    (case,) = _cases(text).values()
    assert case.name.startswith('delta_fnr_gap[Sm<i>"le&\ufffd\ufffd]0;x\ufffd by Male')
    assert "<i>" not in text and "&lt;i&gt;" in text
    (failure,) = case.result
    assert failure.text == 'Sm<i>"le&\ufffd\ufffd]0;x\ufffd'


def test_notes_and_forecast_mode(report: dict) -> None:
    report["gate"]["mode"] = "forecast"
    report["gate"]["notes"] = ["validation was disabled, so the dense-only forecast was judged"]
    text = render_junit(report)
    SCHEMA.validate(text)
    (suite,) = list(JUnitXml.fromstring(text))
    assert suite.name == "prune-audit gate (forecast)"
    assert "dense-only forecast was judged" in ET.fromstring(text).find("testsuite/system-out").text
    assert {case.classname for case in suite} == {"prune-audit.forecast"}


def test_check_and_report_write_junit(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(ckpt, data, out, "--format", "json,junit"))
    assert res.exit_code in (0, 1), res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "predictions.npz",
        "report.json",
        "report.junit.xml",
    ]
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    text = (out / "report.junit.xml").read_text(encoding="utf-8")
    SCHEMA.validate(text)
    (suite,) = list(JUnitXml.fromstring(text))
    checks = rep["gate"]["checks"]
    assert suite.tests == len(checks) > 0
    blocking = {"fail"} | {
        o for o in ("undefined", "inconclusive") if rep["gate"]["policy"].get(f"on_{o}") != "warn"
    }
    assert suite.failures == sum(c["outcome"] in blocking for c in checks)
    assert (suite.failures == 0) == rep["gate"]["passed"]
    assert res.exit_code == (0 if rep["gate"]["passed"] else 1)

    # the same file from the saved report.json alone
    res = runner.invoke(
        app, ["report", str(out / "report.json"), "--format", "junit", "--out", str(tmp_path / "b")]
    )
    assert res.exit_code == 0, res.output
    again = (tmp_path / "b" / "report.junit.xml").read_text(encoding="utf-8")
    assert again == text


def test_render_junit_does_not_modify_the_report(report: dict) -> None:
    before = copy.deepcopy(report)
    render_junit(report)
    assert report == before
