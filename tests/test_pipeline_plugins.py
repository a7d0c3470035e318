"""A pruning method registered from outside the package runs end to end (issue 12, point 3).

The toy method is defined here only and registered through the public
``audit.pruning.register_method``; no other file is edited. It runs through ``run_audit``
and through the CLI (in-process, as a plug-in's user would after importing it: a
subprocess would have no way to import this file, by design — a data file can never make
the tool import code). The toy report format's end-to-end test is
tests/test_report_formats.py. Unknown method and recovery names are refused by the Python
API exactly as by the CLI, because the config is the one place that validates them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit import AuditConfig, Policy, UsageError, run_audit
from audit.cli import app
from audit.pruning import PruningMethod, method_choices, methods, prunable_parameters
from audit.pruning import register_method as public_register_method
from tests.conftest import TINY_ARCH, check_args

runner = CliRunner()


class LeadingFraction(PruningMethod):
    """Zero the first ``sparsity`` fraction of every prunable weight, in storage order.

    Deliberately unlike magnitude pruning, so a report made with it cannot come from a
    built-in method by accident.
    """

    name = "toy-leading"
    help = "zero the leading fraction of every weight tensor"

    def masks(self, model, sparsity, *, exclude=()):
        out = {}
        for name, p in prunable_parameters(model, exclude=exclude):
            keep = torch.ones(p.numel(), dtype=torch.bool)
            keep[: int(sparsity * p.numel())] = False
            out[name] = keep.view_as(p)
        return out


@pytest.fixture()
def toy_method(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # A copy of the registry, so the other tests see the built-in methods only.
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    public_register_method(LeadingFraction)
    yield LeadingFraction.name


def _expected_pruned_probs(model: torch.nn.Module, data: Path, s: float) -> np.ndarray:
    """The toy-pruned model's probabilities on the test split, computed here directly."""
    pruned = type(model)(3)
    pruned.load_state_dict(model.state_dict())
    with torch.no_grad():
        for _, p in prunable_parameters(pruned):
            p.view(-1)[: int(s * p.numel())] = 0
    with np.load(data / "bundle.npz") as z:
        images, split = z["images"], z["split"]
    x = torch.from_numpy(images[split == "test"]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return torch.sigmoid(pruned.eval()((x - 0.5) / 0.25)).double().numpy()


def _check_report(out: Path, model: torch.nn.Module, data: Path) -> dict:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["validation"]["method"] == "toy-leading"
    (level,) = report["validation"]["levels"]
    assert level["sparsity"] == 0.5
    # every layer lost exactly its leading half (the conv weights have even sizes)
    assert {layer["sparsity"] for layer in level["per_layer"]} == {0.5}
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        pruned = z["pruned_probs"][0]
    np.testing.assert_allclose(pruned, _expected_pruned_probs(model, data, 0.5), atol=1e-5)
    return report


def test_a_toy_method_runs_through_run_audit(
    toy_method: str, tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, model = tiny_audit_inputs
    assert toy_method in method_choices()
    cfg = AuditConfig(
        model=ckpt,
        data=data,
        out=tmp_path / "api",
        arch=TINY_ARCH,
        groups=("tinted",),
        method=toy_method,
        recovery="none",
        sparsities=(0.5,),
        bootstrap=20,
        device="cpu",
        policy=Policy(min_group_size=5, target_sparsity=0.5),
    )
    result = run_audit(cfg)
    report = _check_report(tmp_path / "api", model, data)
    assert result.results is not None and result.results.validation.method == "toy-leading"
    assert result.report["gate"]["passed"] == report["gate"]["passed"] == result.passed


def test_a_toy_method_runs_through_the_cli(
    toy_method: str, tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    ckpt, data, model = tiny_audit_inputs
    out = tmp_path / "cli"
    args = check_args(ckpt, data, out, "--method", toy_method, "--recovery", "none")
    res = runner.invoke(app, [*args, "--target-sparsity", "0.5"])
    assert res.exit_code in (0, 1), res.output
    report = _check_report(out, model, data)
    assert res.exit_code == (0 if report["gate"]["passed"] else 1)


@pytest.mark.parametrize(
    ("flag", "field", "expected"),
    [
        (
            "--method",
            "method",
            r"--method 'bogus' is not one of global, layerwise, N:M, structured",
        ),
        ("--recovery", "recovery", r"--recovery 'bogus' is not one of none, bn, finetune\."),
    ],
)
def test_unknown_names_are_refused_by_the_api_exactly_like_the_cli(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module],
    tmp_path: Path,
    flag: str,
    field: str,
    expected: str,
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    with pytest.raises(UsageError, match=expected) as api:
        AuditConfig(model=ckpt, data=data, **{field: "bogus"})
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "out", flag, "bogus"))
    assert res.exit_code == 2
    assert str(api.value) in " ".join(res.stderr.split())
    assert not (tmp_path / "out").exists()
