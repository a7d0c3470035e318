from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from audit.report import render_html, render_markdown, validate_report

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
EVIL_TARGET = "<script>alert(1)</script>|*x*"
EVIL_ID = "../evil<img src=x onerror=alert(1)>.png"
EVIL_GROUP = "G[1](javascript:x)#_`"


def _rename(obj: Any, old: str, new: str) -> Any:
    """Rename a target/group everywhere: dict keys, whole strings and ×-joined keys."""
    if isinstance(obj, dict):
        return {_rename_str(k, old, new): _rename(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename(v, old, new) for v in obj]
    if isinstance(obj, str):
        return _rename_str(obj, old, new)
    return obj


def _rename_str(s: str, old: str, new: str) -> str:
    if s == old:
        return new
    parts = s.split("×")
    return "×".join(new if p == old else p for p in parts) if old in parts else s


@pytest.fixture()
def evil() -> dict:
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    report = _rename(report, "Smiling", EVIL_TARGET)
    report = _rename(report, "Young", EVIL_GROUP)
    report["susceptible"][0]["id"] = EVIL_ID
    report["inputs"]["skipped_images"][0]["id"] = EVIL_ID
    report["inputs"]["model"]["path"] = EVIL_ID
    report["warnings"].append(f"could not read {EVIL_ID}")
    report["validation"]["levels"][0]["cie"]["ids"][0] = EVIL_ID
    validate_report(report)
    return report


def test_html_escapes_every_data_string(evil: dict) -> None:
    html = render_html(evil)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|*x*" in html
    assert "../evil&lt;img src=x onerror=alert(1)&gt;.png" in html
    # the evil target reached the SVG plots (titles, data-plot keys) escaped as well
    svg_titles = re.findall(r"<svg [^>]*data-plot=\"metric\|default\|([^|\"]*)\|", html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg_titles
    # …and the per-group histograms, keyed by target, group attribute and value
    evil_target = "&lt;script&gt;alert(1)&lt;/script&gt;|*x*"
    assert f'data-plot="histogram|{evil_target}|G[1](javascript:x)#_`|0"' in html
    # only the two trusted inline scripts exist
    assert len(re.findall(r"<script\b", html)) == 2


def test_markdown_escapes_every_data_string(evil: dict) -> None:
    md = render_markdown(evil)
    assert "<script" not in md and "<img" not in md and "</script" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\*x\\*" in md
    assert "../evil&lt;img src=x onerror=alert(1)&gt;.png" in md
    assert "G\\[1\\](javascript:x)\\#\\_\\`" in md
    assert "](javascript" not in md.replace("\\](javascript", "")
    # escaped pipes keep every table row the same width as its header
    split = re.compile(r"(?<!\\)\|")
    table: list[str] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert len({len(split.split(r)) for r in table}) == 1, table[:3]
            table = []
