"""prune-audit: will pruning make this vision model more biased? Forecast it, then prove it.

Owns: the public API and ``__all__`` only — ``run_audit`` and ``AuditConfig``, the policy,
the error kinds, ``save_checkpoint`` and the report-format registry's public functions.
Must not: hold any stage's code (the stages live in :mod:`audit.pipeline`, imported when
``run_audit`` is first called; the typed results in :mod:`audit.results`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from audit._version import __version__
from audit.config import AuditConfig, Policy, load_policy  # noqa: E402
from audit.errors import (  # noqa: E402
    AuditError,
    CheckpointError,
    DataError,
    InputError,
    PolicyError,
    UsageError,
)
from audit.model_io import save_checkpoint  # noqa: E402
from audit.report.formats import (  # noqa: E402
    ReportFormat,
    register_report_format,
    report_format_names,
)
from audit.results import Report  # noqa: E402

if TYPE_CHECKING:
    from audit.pipeline import AuditResult, Progress


def run_audit(config: AuditConfig, *, progress: Progress | None = None) -> AuditResult:
    """Run an audit and write its reports; see :func:`audit.pipeline.run_audit`."""
    from audit.pipeline import run_audit as _run

    return _run(config, progress=progress)


__all__ = [
    "AuditConfig",
    "AuditError",
    "CheckpointError",
    "DataError",
    "InputError",
    "Policy",
    "PolicyError",
    "Report",
    "ReportFormat",
    "UsageError",
    "__version__",
    "load_policy",
    "register_report_format",
    "report_format_names",
    "run_audit",
    "save_checkpoint",
]
