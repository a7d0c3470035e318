"""Log a finished audit to MLflow (``--mlflow``; extra ``prune-audit[mlflow]``).

Owns: one MLflow run per audit in the active tracking URI (``MLFLOW_TRACKING_URI``, else
MLflow's default), holding

- **parameters**: the run's configuration (``AuditConfig`` fields) and the gate policy
  (``policy.*``);
- **metrics**: ``gate.passed`` (1/0), ``max_safe_sparsity``, ``n_samples``, and per gate
  check ``check/<name>/<target>/<group>/<sparsity>/value`` with ``…/limit`` and, when the
  check has an interval, ``…/ci_low`` and ``…/ci_high``;
- **tags**: ``prune_audit.verdict`` (``passed``/``failed``), ``prune_audit.headline``,
  ``prune_audit.forecast_risk`` and each check's ``…/outcome``;
- **artifacts**: the report files and ``predictions.npz`` under ``prune-audit/`` (pruned
  checkpoints stay in the report directory only).

When a run is already active (the Python API inside a training run), the audit's run is
nested in it. Logging happens after the reports are written: a failure to log cannot leave a
half-written report. The runner turns such a failure into a warning (the gate's exit code is
kept) and this module ends the MLflow run as FAILED. Must not compute a metric or change the
report; mlflow is imported only in :func:`log_audit`.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from audit.errors import UsageError

EXTRA = "prune-audit[mlflow]"
ARTIFACT_DIR = "prune-audit"
# MLflow's limit on a parameter value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
_MAX_PARAM = 6000
# MLflow accepts these characters in metric, parameter and tag keys.
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")
# Config fields that are not parameters of the audit (the policy is logged key by key).
_NOT_PARAMS = frozenset({"policy", "quiet", "mlflow"})


def require() -> None:
    """Fail with a usage error naming the extra when MLflow is not installed.

    Raises
    ------
    UsageError
        If the ``mlflow`` package cannot be imported.
    """
    try:
        found = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UsageError(
            "--mlflow needs MLflow, which is not installed in this environment. Install the "
            f"optional extra: pip install '{EXTRA}' (or uv add '{EXTRA}', or uvx --from "
            f"'{EXTRA}' prune-audit ...), or drop --mlflow."
        )


def _key(*parts: object) -> str:
    return "/".join(_KEY_BAD.sub("_", str(p)) for p in parts if p is not None)


def _params(config: Any) -> dict[str, str]:
    import dataclasses

    params: dict[str, str] = {}
    for f in dataclasses.fields(config):
        if f.name in _NOT_PARAMS:
            continue
        value = getattr(config, f.name)
        if isinstance(value, tuple | list):
            value = ",".join(str(v) for v in value)
        params[f.name] = str(value)[:_MAX_PARAM]
    for name, value in config.policy.to_dict().items():
        params[f"policy.{name}"] = str(value)[:_MAX_PARAM]
    return params


def check_key(check: Mapping[str, Any]) -> str:
    """The MLflow key prefix of one gate check: ``check/<name>/<target>/<group>/<sparsity>``."""
    group = check.get("group")
    if group is not None and check.get("group_value") is not None:
        group = f"{group}={check['group_value']}"
    sparsity = check.get("sparsity")
    return _key(
        "check",
        check["name"],
        check.get("target"),
        group,
        None if sparsity is None else f"{float(sparsity):g}",
    )


def _check_records(
    checks: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, float], dict[str, str]]:
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    seen: dict[str, int] = {}
    for check in checks:
        base = check_key(check)
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:  # names that differ only in characters MLflow keys cannot hold
            base = f"{base}/{seen[base]}"
        if check.get("value") is not None:
            metrics[f"{base}/value"] = float(check["value"])
        metrics[f"{base}/limit"] = float(check["limit"])
        if check.get("ci"):
            metrics[f"{base}/ci_low"] = float(check["ci"][0])
            metrics[f"{base}/ci_high"] = float(check["ci"][1])
        tags[f"{base}/outcome"] = str(check["outcome"])
    return metrics, tags


def log_audit(report: Mapping[str, Any], files: Iterable[Path], config: Any) -> str:
    """Log one finished audit as an MLflow run and return its run id.

    Parameters
    ----------
    report : Mapping
        The report dict that was written (docs/report-json.md).
    files : iterable of Path
        The files ``write_reports`` placed; report files and ``predictions.npz`` are logged
        as artifacts, anything else (pruned checkpoints) is not.
    config : AuditConfig
        The run's configuration, logged as parameters.

    Returns
    -------
    str
        The MLflow run id.

    Raises
    ------
    Exception
        Whatever MLflow raises (unreachable server, a file store that needs
        ``MLFLOW_ALLOW_FILE_STORE=true``, ...); the run is ended as FAILED first.
    """
    import mlflow

    from audit.report.formats import get_report_format, report_format_names

    logged = {get_report_format(n).filename for n in report_format_names()} | {"predictions.npz"}
    gate = report["gate"]
    verdict = report.get("verdict") or {}
    metrics, check_tags = _check_records(gate.get("checks") or ())
    metrics["gate.passed"] = 1.0 if gate["passed"] else 0.0
    if verdict.get("max_safe_sparsity") is not None:
        metrics["max_safe_sparsity"] = float(verdict["max_safe_sparsity"])
    n_samples = (report.get("inputs") or {}).get("n_samples")
    if n_samples is not None:
        metrics["n_samples"] = float(n_samples)
    tags = {
        "prune_audit.verdict": "passed" if gate["passed"] else "failed",
        "prune_audit.headline": str(verdict.get("headline", ""))[:_MAX_PARAM],
        "prune_audit.forecast_risk": str(verdict.get("forecast", "")),
        "prune_audit.gate_mode": str(gate.get("mode", "")),
        "prune_audit.version": str((report.get("tool") or {}).get("version", "")),
        **check_tags,
    }
    run = mlflow.start_run(
        run_name=f"prune-audit {Path(str(config.model)).name}",
        nested=mlflow.active_run() is not None,
    )
    try:
        mlflow.log_params(_params(config))
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for path in files:
            if Path(path).name in logged:
                mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()
    return run.info.run_id
