from __future__ import annotations

from pathlib import Path

import pytest

from audit.config import AuditConfig, Policy, load_policy, policy_from_mapping
from audit.errors import PolicyError, UsageError


def test_policy_file_top_level_and_tool_table(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text("target_sparsity = 0.95\nmax_delta_fnr_gap = 0.02\nfail_on = 'forecast'\n")
    pol, src = load_policy(p)
    assert pol.target_sparsity == 0.95 and pol.max_delta_fnr_gap == 0.02
    assert pol.fail_on == "forecast" and src == str(p)
    p.write_text("[tool.prune-audit]\nmin_group_size = 5\n")
    assert load_policy(p)[0].min_group_size == 5


def test_policy_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.prune-audit]\nmax_accuracy_drop = 0.01\n")
    pol, src = load_policy(None, cwd=tmp_path)
    assert pol.max_accuracy_drop == 0.01 and "pyproject.toml" in src


def test_builtin_policy_when_nothing_configured(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert load_policy(None, cwd=tmp_path) == (Policy(), "built-in")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"unknown key\(s\) 'max_delta_fnr'.*known keys"):
        policy_from_mapping({"max_delta_fnr": 0.1}, source="t")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("target_sparsity", 1.0, "strictly between 0 and 1"),
        ("max_delta_fpr_gap", -0.1, "between 0 and 1"),
        ("max_delta_fpr_gap", "x", "finite number"),
        ("min_group_size", 0, "integer ≥ 1"),
        ("fail_on", "always", "expected one of 'validated', 'forecast'"),
        ("on_undefined", True, "expected one of"),
    ],
)
def test_out_of_range_values(key: str, value: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_mapping({key: value}, source="t")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text("target_sparsity = = 1")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(p)
    with pytest.raises(PolicyError, match="Cannot read policy file"):
        load_policy(tmp_path / "missing.toml")


def test_config_validation_and_target_sparsity_added() -> None:
    cfg = AuditConfig(
        model=Path("m"), data=Path("d"), sparsities=(0.5, 0.8), policy=Policy(target_sparsity=0.9)
    )
    assert cfg.audit_sparsities == (0.5, 0.8, 0.9)
    with pytest.raises(UsageError, match="--sparsity value 1.2"):
        AuditConfig(model=Path("m"), data=Path("d"), sparsities=(1.2,))
    with pytest.raises(UsageError, match="--format"):
        AuditConfig(model=Path("m"), data=Path("d"), formats=("pdf",))
    with pytest.raises(UsageError, match="--std"):
        AuditConfig(model=Path("m"), data=Path("d"), std=(0.2, 0.0, 0.2))
