"""Write stage (rank 0): the reports, atomically, then MLflow; the per-rank decode record.

Owns: turning the typed report into JSON once (``Report.to_json``) and handing it, with the
predictions and any saved pruned checkpoints, to the all-or-nothing writer; logging the
written audit to MLflow (a failure is a notice, never a lost report).
Must not: compute anything that goes into a report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audit.config import AuditConfig
from audit.pipeline.context import AuditResult, RunContext
from audit.pipeline.decode import Decoder
from audit.results import Report


def write(
    ctx: RunContext, report: Report, predictions: dict[str, np.ndarray], decoder: Decoder
) -> AuditResult:
    """The write stage: every requested format and predictions.npz, or nothing."""
    from audit.report import write_reports

    cfg, staging = ctx.cfg, ctx.scope.staging
    data = report.to_json()
    pruned = ctx.scope.pruned_dir(cfg)
    with ctx.progress.task("Writing reports", None):
        files = write_reports(
            data,
            cfg.out,
            formats=cfg.formats,
            predictions=predictions,
            summary_out=cfg.summary_out,
            extra_files=(
                sorted(p for p in pruned.iterdir() if p.name.startswith("pruned-"))
                if pruned is not None
                else ()
            ),
            staging=staging,
        )
    decoder.write_stats()
    run_id, notices = log_to_mlflow(cfg, data, files) if cfg.mlflow else (None, ())
    return AuditResult(
        report=data,
        passed=report.passed,
        files=tuple(files),
        mlflow_run_id=run_id,
        notices=notices,
        results=report,
    )


def log_to_mlflow(
    cfg: AuditConfig, report: dict[str, Any], files: list[Path]
) -> tuple[str | None, tuple[str, ...]]:
    """Log the written audit to MLflow; a failure is a warning, never a lost report."""
    from audit.integrations.mlflow import log_audit

    try:
        return log_audit(report, files, cfg), ()
    except Exception as exc:  # noqa: BLE001 - the reports are written; the gate decides the exit
        return None, (
            f"--mlflow: logging to MLflow failed ({type(exc).__name__}: {exc}); the reports "
            f"in {cfg.out} are complete and the exit code is the gate's. Check "
            "MLFLOW_TRACKING_URI (a file: store also needs MLFLOW_ALLOW_FILE_STORE=true with "
            "MLflow 3) and rerun, or log them later.",
        )
