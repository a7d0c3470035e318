"""The report-format registry: one entry per format, validated the same way everywhere.

The toy format below is registered from outside the package (this file only, through the
public ``audit.register_report_format``) and runs end to end through ``run_audit``, ``check``
and ``report`` with no other file edited (issue 12, acceptance 3).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import audit
from audit import AuditConfig, Policy, UsageError, run_audit
from audit.cli import app
from audit.report import formats, write_reports
from tests.conftest import TINY_ARCH, check_args

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
runner = CliRunner()


def render_checks_csv(report: Mapping[str, Any]) -> str:
    """A toy format: the gate's checks as CSV (what a team might feed a spreadsheet)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "target", "group", "sparsity", "value", "limit", "outcome"])
    for c in report["gate"]["checks"]:
        writer.writerow(
            [
                c["name"],
                c["target"],
                c["group"],
                c["sparsity"],
                c["value"],
                c["limit"],
                c["outcome"],
            ]
        )
    return buf.getvalue()


@pytest.fixture()
def toy_format() -> Iterator[str]:
    audit.register_report_format(
        "checks-csv", render_checks_csv, filename="checks.csv", description="gate checks as CSV"
    )
    yield "checks-csv"
    formats.unregister_report_format("checks-csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_builtins_are_registered_in_order() -> None:
    assert audit.report_format_names()[:4] == ("json", "md", "html", "junit")
    assert formats.get_report_format("junit").filename == "report.junit.xml"
    assert {formats.get_report_format(n).filename for n in ("json", "md", "html")} == {
        "report.json",
        "report.md",
        "report.html",
    }


def test_unknown_format_same_error_from_api_writer_and_cli(tmp_path: Path) -> None:
    expected = r"--format 'json,bogus': unknown report format\(s\) \['bogus'\]; the registered"
    with pytest.raises(UsageError, match=expected):
        AuditConfig(model="m.pt", data="d", formats=("json", "bogus"))
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    with pytest.raises(UsageError, match=expected):
        write_reports(report, tmp_path / "w", formats=("json", "bogus"))
    assert not (tmp_path / "w").exists()
    res = runner.invoke(
        app, ["check", str(tmp_path / "m.pt"), str(tmp_path), "--format", "json,bogus"]
    )
    assert res.exit_code == 2
    assert "unknown report format(s) ['bogus']" in res.stderr
    assert "json, md, html, junit" in res.stderr
    (tmp_path / "r.json").write_text(json.dumps(report), encoding="utf-8")
    res = runner.invoke(app, ["report", str(tmp_path / "r.json"), "--format", "json,bogus"])
    assert res.exit_code == 2 and "unknown report format(s) ['bogus']" in res.stderr
    with pytest.raises(UsageError, match="no report format named"):
        AuditConfig(model="m.pt", data="d", formats=())


def test_config_normalises_the_format_list() -> None:
    cfg = AuditConfig(model="m.pt", data="d", formats=(" md", "json", "md", ""))
    assert cfg.formats == ("md", "json")
    assert AuditConfig(model="m.pt", data="d", formats="junit,json").formats == ("junit", "json")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "Bad Name", "filename": "x.txt"}, ValueError, "report format name 'Bad Name'"),
        ({"name": "ok", "filename": "../x.txt"}, ValueError, "filename '../x.txt' is not valid"),
        ({"name": "ok", "filename": ".hidden"}, ValueError, "filename '.hidden' is not valid"),
        ({"name": "ok", "filename": "predictions.npz"}, ValueError, "is not valid"),
        ({"name": "ok", "filename": "report.json"}, ValueError, "already written by format 'json'"),
        ({"name": "json", "filename": "other.json"}, ValueError, "'json' is already registered"),
        ({"name": 3, "filename": "x.txt"}, TypeError, "must be strings"),
    ],
)
def test_registration_is_validated(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        audit.register_report_format(kwargs["name"], str, filename=kwargs["filename"])
    assert audit.report_format_names()[:4] == ("json", "md", "html", "junit")


def test_render_must_be_callable() -> None:
    with pytest.raises(TypeError, match="render must be a callable"):
        audit.register_report_format("toy", "not callable", filename="toy.txt")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no report format 'toy'"):
        formats.unregister_report_format("toy")


def test_replace_keeps_one_entry(toy_format: str) -> None:
    audit.register_report_format(toy_format, str, filename="checks.csv", replace=True)
    assert audit.report_format_names().count(toy_format) == 1
    assert formats.get_report_format(toy_format).render is str


def test_toy_format_end_to_end_through_run_audit_check_and_report(
    toy_format: str, tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    # the Python API
    result = run_audit(
        AuditConfig(
            model=ckpt,
            data=data,
            arch=TINY_ARCH,
            out=tmp_path / "api",
            groups=("tinted",),
            sparsities=(0.5,),
            bootstrap=20,
            device="cpu",
            formats=("json", toy_format),
            policy=Policy(target_sparsity=0.5, min_group_size=5),
        )
    )
    assert [f.name for f in result.files] == ["report.json", "checks.csv", "predictions.npz"]
    rows = _rows(tmp_path / "api" / "checks.csv")
    assert len(rows) == len(result.report["gate"]["checks"]) > 0
    assert [r["outcome"] for r in rows] == [c["outcome"] for c in result.report["gate"]["checks"]]

    # the CLI's check, in-process (the registration above is what makes the name valid)
    res = runner.invoke(
        app, check_args(ckpt, data, tmp_path / "cli", "--format", f"{toy_format},md")
    )
    assert res.exit_code in (0, 1), res.output
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "checks.csv",
        "predictions.npz",
        "report.md",
    ]
    assert "checks.csv" in res.stdout

    # and the re-render from a saved report.json
    res = runner.invoke(
        app,
        [
            "report",
            str(tmp_path / "api" / "report.json"),
            "--format",
            toy_format,
            "--out",
            str(tmp_path / "again"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert _rows(tmp_path / "again" / "checks.csv") == rows


def test_a_failing_plugin_renderer_leaves_nothing(toy_format: str, tmp_path: Path) -> None:
    def boom(_: Mapping[str, Any]) -> str:
        raise RuntimeError("plug-in exploded")

    audit.register_report_format(toy_format, boom, filename="checks.csv", replace=True)
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    with pytest.raises(RuntimeError, match="plug-in exploded"):
        write_reports(report, tmp_path / "out", formats=("json", toy_format))
    assert list(tmp_path.iterdir()) == []
