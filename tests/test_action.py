"""action.yml: every input is wired into the `prune-audit check` command, safely.

The audit step's script is run with bash as the runner would (inputs substituted into its
environment), with a stand-in `uv` on PATH that records the command it was given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
EXAMPLE = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

FAKE_UV = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_UV_LOG"], "w") as fh:
    json.dump(sys.argv[1:], fh)
sys.exit(int(os.environ.get("FAKE_UV_EXIT", "0")))
"""


def _step(step_id: str) -> dict:
    (step,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == step_id]
    return step


def test_action_is_composite_with_the_documented_inputs() -> None:
    assert ACTION["runs"]["using"] == "composite"
    inputs = ACTION["inputs"]
    assert {"model", "data", "args", "policy", "python-version"} <= set(inputs)
    assert inputs["model"]["required"] and inputs["data"]["required"]
    for name in ("args", "policy", "python-version", "out"):
        assert not inputs[name]["required"] and "default" in inputs[name]
    python = _step("python")
    assert python["uses"].startswith("actions/setup-python@")
    assert python["with"]["python-version"] == "${{ inputs.python-version }}"
    # every step that runs a script says its shell (composite actions require it)
    assert all("shell" in s for s in ACTION["runs"]["steps"] if "run" in s)
    # no other action than GitHub's own is used
    assert {s["uses"].split("@")[0] for s in ACTION["runs"]["steps"] if "uses" in s} == {
        "actions/setup-python"
    }


def test_inputs_reach_the_script_only_through_the_environment() -> None:
    audit = _step("audit")
    for step in ACTION["runs"]["steps"]:
        # an expression pasted into a script would let an input run as shell code
        assert not EXPR.search(step.get("run", "")), step.get("name")
    wired = {EXPR.fullmatch(v).group(1) for v in audit["env"].values()}
    assert {f"inputs.{name}" for name in ACTION["inputs"]} - {"inputs.python-version"} <= wired
    assert "steps.python.outputs.python-path" in wired
    # the package the action runs is this project's console script
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert "prune-audit" in scripts and "prune-audit" in audit["run"]


def _run_audit_step(tmp_path: Path, inputs: dict[str, str], *, uv_exit: int = 0) -> tuple:
    """Run the audit step's script as the runner would; returns (rc, argv, outputs, summary)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run the action's script")
    step = _step("audit")
    values = {f"inputs.{k}": v["default"] for k, v in ACTION["inputs"].items() if "default" in v}
    values |= {f"inputs.{k}": v for k, v in inputs.items()}
    values["steps.python.outputs.python-path"] = "/opt/python/bin/python3"
    values["github.action_path"] = str(ROOT)
    env = {k: values[EXPR.fullmatch(v).group(1)] for k, v in step["env"].items()}
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "uv").write_text(FAKE_UV)
    (bindir / "uv").chmod(0o755)
    out, summary = tmp_path / "github_output", tmp_path / "step_summary"
    env |= {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_UV_LOG": str(tmp_path / "argv.json"),
        "FAKE_UV_EXIT": str(uv_exit),
        "GITHUB_OUTPUT": str(out),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    # GitHub runs `shell: bash` as `bash --noprofile --norc -eo pipefail {0}`
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    argv = json.loads((tmp_path / "argv.json").read_text())
    outputs = out.read_text() if out.exists() else ""
    return proc.returncode, argv, outputs, summary.read_text() if summary.exists() else ""


def test_every_input_is_wired_into_the_command(tmp_path: Path) -> None:
    rc, argv, outputs, summary = _run_audit_step(
        tmp_path,
        {
            "model": "models/my model.pt",  # a space stays one argument
            "data": "data/$(touch pwned)",  # and shell syntax stays text
            "policy": "ci/policy.toml",
            "args": "--group Male --sparsity 0.8,0.9\n--format json,md,junit",
            "out": "out/audit",
        },
    )
    assert rc == 0
    assert argv == [
        "run",
        "--project",
        str(ROOT),
        "--frozen",
        "--no-dev",
        "--python",
        "/opt/python/bin/python3",
        "prune-audit",
        "check",
        "models/my model.pt",
        "data/$(touch pwned)",
        "--out",
        "out/audit",
        "--policy",
        "ci/policy.toml",
        "--group",
        "Male",
        "--sparsity",
        "0.8,0.9",
        "--format",
        "json,md,junit",
    ]
    assert not (tmp_path / "pwned").exists()
    assert outputs == "exit-code=0\n"
    # no report.json was written by the stand-in, so the summary says so
    assert "prune-audit wrote no report (exit 0)" in summary


def test_defaults_and_exit_code_propagate(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.json").write_text("{}")
    rc, argv, outputs, summary = _run_audit_step(
        tmp_path, {"model": "m.pt", "data": "d"}, uv_exit=1
    )
    assert rc == 1  # a failed gate fails the step
    assert argv[argv.index("prune-audit") :] == [
        "prune-audit",
        "check",
        "m.pt",
        "d",
        "--out",
        "reports",
    ]
    assert outputs == "exit-code=1\n"
    assert summary == ""  # prune-audit itself appends report.md; the action adds nothing


def test_example_workflow_uses_the_action() -> None:
    (job,) = EXAMPLE["jobs"].values()
    (step,) = [s for s in job["steps"] if "prune-audit" in str(s.get("uses", ""))]
    assert set(step["with"]) <= set(ACTION["inputs"])
    assert {"model", "data"} <= set(step["with"])
    upload = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")
    ]
    assert upload and upload[0]["with"]["path"] == step["with"].get("out", "reports")
