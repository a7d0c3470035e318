"""Gate outcomes through the real CLI (issue 11 point 4, issue 13 points 2-3).

An inestimable check is ``undefined`` in every mode and never passes silently; an interval
that straddles its limit is ``inconclusive`` and fails the gate unless the policy says
``on_inconclusive = "warn"``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from audit.cli import app
from tests.conftest import check_args

runner = CliRunner()
Inputs = tuple[Path, Path, torch.nn.Module]


def _run(args: list[str]) -> tuple[int, dict, str]:
    res = runner.invoke(app, args)
    assert res.exit_code in (0, 1), res.output
    out = Path(args[args.index("--out") + 1])
    return res.exit_code, json.loads((out / "report.json").read_text()), res.stdout


def _policy(tmp_path: Path, text: str) -> str:
    p = tmp_path / "policy.toml"
    p.write_text(text)
    return str(p)


def test_forecast_mode_with_every_cell_too_small_is_undefined_not_pass(
    tiny_audit_inputs: Inputs, tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    args = check_args(ckpt, data, tmp_path / "out", "--no-validate")
    args[args.index("--min-group-size") + 1] = "1000"
    code, report, stdout = _run(args)
    checks = report["gate"]["checks"]
    assert checks and {c["outcome"] for c in checks} == {"undefined"}
    assert all(c["value"] is None for c in checks)
    assert re.search(r"min_group_size=1000", checks[0]["detail"])
    assert code == 1 and report["gate"]["passed"] is False
    assert re.search(r"forecast_delta_fnr_gap for red by tinted: undefined \(dense fnr_gap", stdout)
    # the policy may choose to only warn, and then says so
    code, report, _ = _run([*args, "--policy", _policy(tmp_path, 'on_undefined = "warn"\n')])
    assert code == 0 and report["warnings"]
    assert any("is undefined" in w for w in report["warnings"])


def test_46_valued_group_below_the_minimum_is_undefined_in_validated_mode(
    tiny_audit_inputs: Inputs, tmp_path: Path
) -> None:
    ckpt, npz_root, _ = tiny_audit_inputs
    with np.load(npz_root / "bundle.npz") as z:
        arrays = dict(z)
    n = len(arrays["split"])
    arrays["groups"] = (np.arange(n) % 46)[:, None].astype(np.int64)
    arrays["group_names"] = np.array(["site"])
    data = tmp_path / "npz"
    data.mkdir()
    np.savez(data / "bundle.npz", **arrays)
    code, report, stdout = _run(check_args(ckpt, data, tmp_path / "out", group="site"))
    gaps = [c for c in report["gate"]["checks"] if c["name"].startswith("delta_")]
    assert gaps and {c["outcome"] for c in gaps} == {"undefined"}
    assert all(c["value"] is None and c["ci"] is None for c in gaps)
    assert code == 1 and not report["gate"]["passed"]
    assert "undefined (not estimable" in stdout


def test_inconclusive_fails_by_default_and_warns_when_told(
    tiny_audit_inputs: Inputs, tmp_path: Path
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    # Generous limits everywhere but the FNR gap's, which sits inside its interval.
    loose = (
        "max_delta_fpr_gap = 1.0\nmax_delta_accuracy_gap = 1.0\nmax_delta_bias_amplification"
        " = 1.0\nmax_accuracy_drop = 1.0\nmax_excess_accuracy_drop = 1.0\n"
        'on_undefined = "warn"\n'
    )
    base = check_args(ckpt, data, tmp_path / "probe", "--bootstrap", "200")
    _, probe, _ = _run([*base, "--policy", _policy(tmp_path, loose)])
    fnr = [
        c
        for c in probe["gate"]["checks"]
        if c["name"] == "delta_fnr_gap" and c["ci"] is not None and c["ci"][1] - c["ci"][0] > 0
    ]
    assert fnr, probe["gate"]["checks"]
    lo, hi = fnr[0]["ci"]
    limit = round(max(lo, 0.0) + (hi - max(lo, 0.0)) / 2, 4)
    assert lo <= limit < hi
    strict = loose + f"max_delta_fnr_gap = {limit}\n"
    for on, expected in (("fail", 1), ("warn", 0)):
        out = tmp_path / f"out-{on}"
        args = check_args(ckpt, data, out, "--bootstrap", "200")
        pol = _policy(tmp_path, strict + f'on_inconclusive = "{on}"\n')
        code, report, stdout = _run([*args, "--policy", pol])
        c = next(
            c
            for c in report["gate"]["checks"]
            if c["name"] == "delta_fnr_gap" and c["target"] == fnr[0]["target"]
        )
        assert c["outcome"] == "inconclusive" and c["width"] == hi - lo
        assert c["n_needed"] is None or c["n_needed"] > c["n_eval"]
        assert {d["value"] for d in c["cells"]} == {"0", "1"}
        assert all(d["positives"] + d["negatives"] == d["n"] for d in c["cells"])
        assert code == expected
        md = (out / "report.md").read_text()
        assert "❔ inconclusive" in md
        if on == "fail":
            assert "inconclusive (Δ =" in stdout
        else:
            assert any("is inconclusive" in w for w in report["warnings"])
