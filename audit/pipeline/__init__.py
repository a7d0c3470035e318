"""The audit pipeline: each stage a function of one run context.

Stages, in order: load → select → decode → dense pass → measure → validate levels →
forecast → judge → assemble → write.

Owns: the order of the stages (``run.run_audit``), the run context and the scope that owns
the run's resources (``context``: caches, the staging folder, the process group), and each
stage's glue: which rows, which model, which results go where. Every number comes from
``criteria``/``validate``/``forecast``/``gate``/``metrics``; devices and torch.distributed
are touched only through ``inference``; the typed :class:`audit.results.Report` becomes JSON
once, in the write stage. Nothing is written to ``config.out`` until every stage succeeded.
Must not: compute a metric itself, render a report, or parse a report back.

Modules, in stage order: ``context`` (run context, scope, progress, AuditResult),
``prepare`` (load, preprocessing, runtime, early refusals), ``select`` (columns, task,
splits), ``decode`` (image caches per rank), ``measure`` (the dense pass, the population,
thresholds), ``levels`` (pruning, recovery and measuring each level), ``dense`` (dense
criteria, forecast, susceptible samples), ``judge`` (validation summary, gate, verdict),
``assemble`` (the typed report, plot data, predictions), ``write`` (reports, MLflow),
``run`` (``run_audit``).
"""

from __future__ import annotations

from audit.pipeline.context import AuditResult, Progress, RunContext, Scope, SilentProgress
from audit.pipeline.run import run_audit

__all__ = ["AuditResult", "Progress", "RunContext", "Scope", "SilentProgress", "run_audit"]
