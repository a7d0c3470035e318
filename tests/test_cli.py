"""CLI exit codes and outputs through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from tests.conftest import check_args

runner = CliRunner()


def _policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(text)
    return p


def test_exit_0_when_gate_passes(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    pol = _policy(
        tmp_path,
        "target_sparsity = 0.5\nmax_delta_fnr_gap = 1\nmax_delta_fpr_gap = 1\n"
        "max_delta_accuracy_gap = 1\nmax_delta_bias_amplification = 1\nmax_accuracy_drop = 1\n"
        "on_undefined = 'warn'\n",
    )
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "out", "--policy", str(pol)))
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.stdout
    assert (tmp_path / "out" / "report.html").is_file()


def test_exit_1_when_gate_fails(tiny_audit_inputs, tmp_path: Path) -> None:
    ckpt, data, _ = tiny_audit_inputs
    pol = _policy(
        tmp_path, "target_sparsity = 0.97\nmax_accuracy_drop = 0.0\nmax_delta_fnr_gap = 0.0\n"
    )
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "out", "--policy", str(pol)))
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.stdout and "accuracy_drop" in res.stdout


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a, tmp: a.__setitem__(1, str(tmp / "missing.pt")), "missing.pt"),
        (lambda a, tmp: a.__setitem__(a.index("tinted"), "nope"), "'nope'"),
        (
            lambda a, tmp: a.extend(["--policy", str(_policy(tmp, "max_delta_fnr = 0.1\n"))]),
            "unknown key",
        ),
        (
            lambda a, tmp: a.__setitem__(a.index("--arch") + 1, "torchvision:resnet18"),
            "do not fit architecture",
        ),
    ],
)
def test_exit_3_on_bad_input_and_nothing_written(
    tiny_audit_inputs, tmp_path: Path, mutate, match: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    out = tmp_path / "out"
    args = check_args(ckpt, data, out)
    mutate(args, tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 3, res.output
    import re

    assert re.search(match, res.stderr), res.stderr
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(".prune-audit-*"))


def test_exit_2_on_usage_error(tiny_audit_inputs, tmp_path: Path) -> None:
    ckpt, data, _ = tiny_audit_inputs
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "o", "--sparsity", "1.5"))
    assert res.exit_code == 2 and "--sparsity value 1.5" in res.stderr
    res = runner.invoke(app, ["check", str(ckpt)])  # missing DATA argument
    assert res.exit_code == 2


def test_version_and_report_rerender(tiny_audit_inputs, tmp_path: Path) -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and "prune-audit" in res.stdout
    ckpt, data, _ = tiny_audit_inputs
    pol = _policy(tmp_path, "target_sparsity = 0.5\non_undefined = 'warn'\nmax_accuracy_drop = 1\n")
    runner.invoke(app, check_args(ckpt, data, tmp_path / "a", "--policy", str(pol)))
    res = runner.invoke(
        app, ["report", str(tmp_path / "a" / "report.json"), "--out", str(tmp_path / "b")]
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "b" / "report.html").read_text()
    assert html.startswith("<!")
    # the per-group histograms are redrawn from report.json alone
    assert html.count('data-plot="histogram|') == 3 * 2
    assert 'data-plot="histogram|red|tinted|0"' in html
    (tmp_path / "bad.json").write_text("{}")
    assert runner.invoke(app, ["report", str(tmp_path / "bad.json")]).exit_code == 3
