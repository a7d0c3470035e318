"""--mlflow: the audit logged to a local MLflow file store and read back with MlflowClient."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit import AuditConfig, Policy, UsageError, run_audit
from audit.cli import app
from audit.integrations.mlflow import check_key
from tests.conftest import TINY_ARCH, check_args

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

runner = CliRunner()


@pytest.fixture()
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = (tmp_path / "mlruns").as_uri()  # a file: URI under tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow 3 keeps the file store but asks for this opt-in (it prefers a database).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)  # nothing may land in the working tree
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def _config(ckpt: Path, data: Path, out: Path, **kw: object) -> AuditConfig:
    return AuditConfig(
        model=ckpt,
        data=data,
        arch=TINY_ARCH,
        out=out,
        groups=("tinted",),
        sparsities=(0.5,),
        bootstrap=20,
        device="cpu",
        policy=Policy(target_sparsity=0.5, min_group_size=5),
        **kw,
    )


def _only_run(uri: str) -> mlflow.entities.Run:
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return runs[0]


def test_run_audit_logs_params_checks_verdict_and_reports(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path, tracking_uri: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    out = tmp_path / "out"
    result = run_audit(_config(ckpt, data, out, formats=("json", "md", "junit"), mlflow=True))
    assert result.mlflow_run_id is not None and result.notices == ()
    run = _only_run(tracking_uri)
    assert run.info.run_id == result.mlflow_run_id
    assert run.info.status == "FINISHED"
    client = MlflowClient(tracking_uri)

    params = run.data.params
    assert params["model"] == str(ckpt)
    assert params["sparsities"] == "0.5" and params["bootstrap"] == "20"
    assert params["groups"] == "tinted" and params["formats"] == "json,md,junit"
    assert params["policy.target_sparsity"] == "0.5" and params["policy.min_group_size"] == "5"
    assert "quiet" not in params and "policy" not in params

    report = result.report
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics["gate.passed"] == (1.0 if report["gate"]["passed"] else 0.0)
    assert metrics["n_samples"] == report["inputs"]["n_samples"]
    assert tags["prune_audit.verdict"] == ("passed" if report["gate"]["passed"] else "failed")
    assert tags["prune_audit.headline"] == report["verdict"]["headline"]
    checks = report["gate"]["checks"]
    assert checks
    for c in checks:
        key = check_key(c)
        assert tags[f"{key}/outcome"] == c["outcome"]
        assert metrics[f"{key}/limit"] == pytest.approx(c["limit"], abs=1e-12)
        if c["value"] is None:
            assert f"{key}/value" not in metrics
        else:
            assert metrics[f"{key}/value"] == pytest.approx(c["value"], abs=1e-12)
        if c.get("ci"):
            assert metrics[f"{key}/ci_low"] == pytest.approx(c["ci"][0], abs=1e-12)
    # one key per check, e.g. check/accuracy_drop/red/0.5
    assert "check/accuracy_drop/red/0.5/limit" in metrics

    listed = {a.path for a in client.list_artifacts(run.info.run_id, "prune-audit")}
    assert listed == {
        "prune-audit/report.json",
        "prune-audit/report.md",
        "prune-audit/report.junit.xml",
        "prune-audit/predictions.npz",
    }
    (tmp_path / "dl").mkdir()
    local = client.download_artifacts(
        run.info.run_id, "prune-audit/report.json", str(tmp_path / "dl")
    )
    assert json.loads(Path(local).read_text(encoding="utf-8")) == json.loads(
        (out / "report.json").read_text(encoding="utf-8")
    )
    # the run went to the tracking URI only: no mlflow.db or stray mlruns/ in the working dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "mlruns", "out"]


def test_cli_mlflow_flag_logs_a_run(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module], tmp_path: Path, tracking_uri: str
) -> None:
    ckpt, data, _ = tiny_audit_inputs
    res = runner.invoke(app, check_args(ckpt, data, tmp_path / "out", "--mlflow"))
    assert res.exit_code in (0, 1), res.output
    run = _only_run(tracking_uri)
    assert f"logged to MLflow run {run.info.run_id}" in res.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert run.data.metrics["gate.passed"] == float(rep["gate"]["passed"])
    assert res.exit_code == (0 if rep["gate"]["passed"] else 1)


def test_a_failed_logging_warns_and_keeps_the_reports(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module],
    tmp_path: Path,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt, data, _ = tiny_audit_inputs

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(mlflow, "log_artifact", refuse)
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(ckpt, data, out, "--mlflow"))
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert res.exit_code == (0 if rep["gate"]["passed"] else 1), res.output
    assert "--mlflow: logging to MLflow failed (OSError: artifact store unreachable)" in (
        res.stderr
    )
    assert "the reports" in res.stderr and "are complete" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "predictions.npz",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert _only_run(tracking_uri).info.status == "FAILED"


def test_missing_mlflow_is_a_usage_error_naming_the_extra(
    tiny_audit_inputs: tuple[Path, Path, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without it sees
    with pytest.raises(UsageError, match=r"--mlflow needs MLflow.*prune-audit\[mlflow\]"):
        AuditConfig(model="m.pt", data="d", mlflow=True)
    ckpt, data, _ = tiny_audit_inputs
    out = tmp_path / "out"
    res = runner.invoke(app, check_args(ckpt, data, out, "--mlflow"))
    assert res.exit_code == 2
    assert "pip install 'prune-audit[mlflow]'" in res.stderr
    assert not out.exists()


def test_log_audit_to_mlflows_default_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow 3's default store is sqlite:///mlflow.db; the extra brings SQLAlchemy and
    # Alembic for it. A run logged there reads back like the file store's.
    from audit.integrations.mlflow import log_audit

    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    fixture = Path(__file__).parent / "fixtures" / "report_example.json"
    report = json.loads(fixture.read_text(encoding="utf-8"))
    (tmp_path / "out").mkdir()
    written = tmp_path / "out" / "report.json"
    written.write_text(json.dumps(report), encoding="utf-8")
    other = tmp_path / "out" / "pruned-0.9.pt"
    other.write_bytes(b"weights")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        run_id = log_audit(report, [written, other], AuditConfig(model="m.pt", data="d"))
    finally:
        mlflow.set_tracking_uri(None)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params["model"] == "m.pt" and run.data.params["method"] == "global"
    assert run.data.metrics["gate.passed"] == 0.0
    assert run.data.metrics["max_safe_sparsity"] == 0.8
    key = "check/max_delta_fnr_gap/Blond_Hair/Male_Young/0.9"  # '×' is not a key character
    assert run.data.tags[f"{key}/outcome"] == "undefined" and f"{key}/value" not in run.data.metrics
    assert run.data.metrics["check/max_delta_fnr_gap/Blond_Hair/Male/0.9/value"] == pytest.approx(
        0.5414, abs=5e-5
    )
    # the report is an artifact, the pruned checkpoint is not
    assert [a.path for a in client.list_artifacts(run_id, "prune-audit")] == [
        "prune-audit/report.json"
    ]
