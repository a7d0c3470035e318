"""The JUnit XML renderer: ``report.junit.xml``, one test case per gate check.

CI systems other than GitHub's summary (GitLab merge-request widgets, Jenkins' JUnit plugin,
Azure DevOps' "Publish Test Results", GitHub test reporters) read JUnit XML. The file has one
``<testsuites>`` root holding one ``<testsuite>`` named after the gate mode, whose
``<properties>`` carry the verdict and the policy, and one ``<testcase>`` per entry of
``gate.checks``:

- its name says what was checked where (``delta_fnr_gap[Smiling by Male @ 0.9]``); its
  ``<system-out>`` lists the check's value, interval, limit, outcome and detail;
- outcome ``pass`` is a passing case; ``fail`` is a ``<failure>``;
- every other outcome (``undefined``, ``inconclusive``, and any later one) is judged as the
  policy judges it: a ``<failure>`` when the policy's ``on_<outcome>`` key is ``"fail"`` or
  absent (a gate never passes on no evidence), a ``<skipped>`` case carrying the reason when
  it is ``"warn"`` — so the CI's test count fails exactly when the gate fails.

The output validates against the Jenkins xUnit plug-in's ``junit-10.xsd`` (shipped in
tests/fixtures). Owns formatting only: every number comes from the report dict, and every
string from the data is escaped by the XML serialiser (characters XML 1.0 cannot carry are
replaced by U+FFFD).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from audit.report.schema import to_plain

# Characters outside XML 1.0's Char production cannot appear even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _num(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    return f"{value:+.4f}" if isinstance(value, float) else str(value)


def _where(check: Mapping[str, Any]) -> str:
    parts = []
    if check.get("target") is not None:
        parts.append(str(check["target"]))
    if check.get("group") is not None:
        value = check.get("group_value")
        parts.append(f"by {check['group']}" + (f"={value}" if value is not None else ""))
    if check.get("sparsity") is not None:
        parts.append(f"@ {check['sparsity']:g}")
    return " ".join(parts)


def _kind(outcome: str, policy: Mapping[str, Any]) -> str:
    """``passed``, ``failure`` or ``skipped``: how the report's policy judges the outcome."""
    if outcome == "pass":
        return "passed"
    if outcome == "fail" or policy.get(f"on_{outcome}", "fail") != "warn":
        return "failure"
    return "skipped"


def _interval(check: Mapping[str, Any]) -> str:
    ci = check.get("ci")
    if not ci:
        return "n/a (no interval)"
    return f"[{_num(float(ci[0]))}, {_num(float(ci[1]))}]"


def _body(check: Mapping[str, Any]) -> str:
    lines = [
        f"check: {check['name']}",
        f"target: {check.get('target')}",
        f"group: {check.get('group')}"
        + (f"={check['group_value']}" if check.get("group_value") is not None else ""),
        f"sparsity: {'n/a' if check.get('sparsity') is None else format(check['sparsity'], 'g')}",
        f"value: {_num(check.get('value'))}",
        f"interval: {_interval(check)}",
        f"limit: {check['limit']:g}",
        f"outcome: {check['outcome']}",
    ]
    if check.get("n_needed"):
        lines.append(f"samples that would settle it: about {int(check['n_needed']):,}")
    lines.append(f"detail: {check.get('detail', '')}")
    return _text("\n".join(lines))


def _message(check: Mapping[str, Any]) -> str:
    outcome = check["outcome"]
    value = check.get("value")
    if outcome == "fail":
        ci = f", 95% interval {_interval(check)}" if check.get("ci") else ""
        return _text(f"{_num(value)}{ci} is beyond the limit {check['limit']:g}")
    return _text(f"{outcome}: {check.get('detail', '')} (limit {check['limit']:g})")


def render_junit(report: Mapping[str, Any]) -> str:
    """Render the gate's checks as a JUnit XML document.

    Parameters
    ----------
    report : Mapping
        The report dict (docs/report-json.md); only ``gate``, ``verdict``, ``tool``,
        ``created`` and ``inputs.model``/``inputs.data`` are read.

    Returns
    -------
    str
        The XML text (UTF-8 declaration, ending with a newline).
    """
    rep = to_plain(report)
    gate = rep["gate"]
    policy = gate.get("policy") or {}
    checks = gate.get("checks") or []
    mode = str(gate.get("mode", "gate"))
    suite_name = f"prune-audit gate ({mode})"
    kinds = [_kind(str(c["outcome"]), policy) for c in checks]
    counts = {
        "tests": str(len(checks)),
        "failures": str(kinds.count("failure")),
        "errors": "0",
        "skipped": str(kinds.count("skipped")),
        "time": "0",
    }
    # The Jenkins schema has no skipped count on the root element.
    root = ET.Element(
        "testsuites", {"name": "prune-audit", **{k: v for k, v in counts.items() if k != "skipped"}}
    )
    attrs = {"name": suite_name, **counts}
    if rep.get("created"):
        attrs["timestamp"] = _text(rep["created"])
    suite = ET.SubElement(root, "testsuite", attrs)

    props = ET.SubElement(suite, "properties")
    verdict = rep.get("verdict") or {}
    inputs = rep.get("inputs") or {}
    tool = rep.get("tool") or {}
    for name, value in (
        ("tool", f"{tool.get('name', 'prune-audit')} {tool.get('version', '')}".strip()),
        ("gate.passed", gate.get("passed")),
        ("gate.mode", mode),
        ("verdict", verdict.get("headline")),
        ("forecast.risk", verdict.get("forecast")),
        ("max_safe_sparsity", verdict.get("max_safe_sparsity")),
        ("model", (inputs.get("model") or {}).get("path")),
        ("data", (inputs.get("data") or {}).get("path")),
        *((f"policy.{k}", v) for k, v in policy.items()),
    ):
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else _text(value)
            ET.SubElement(props, "property", {"name": _text(name), "value": text})

    seen: dict[str, int] = {}
    for check, kind in zip(checks, kinds, strict=True):
        base = f"{check['name']}[{_where(check)}]" if _where(check) else str(check["name"])
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base} #{seen[base]}"
        case = ET.SubElement(
            suite,
            "testcase",
            {"name": _text(name), "classname": f"prune-audit.{mode}", "time": "0"},
        )
        if kind != "passed":
            attrs = {"type": str(check["outcome"]), "message": _message(check)}
            element = ET.SubElement(case, kind, attrs)
            if kind == "failure":
                element.text = _text(check.get("detail", ""))
        ET.SubElement(case, "system-out").text = _body(check)

    if gate.get("notes"):
        ET.SubElement(suite, "system-out").text = _text("\n".join(map(str, gate["notes"])))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
