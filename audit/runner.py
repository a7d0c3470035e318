"""Compatibility names for code written against the one-module runner.

The audit's stages live in :mod:`audit.pipeline` (``run_audit`` there is a short sequence
of them); this module only re-exports what callers imported from here before.
Must not: hold any stage's code.
"""

from __future__ import annotations

from audit.pipeline.assemble import SCHEMA_VERSION
from audit.pipeline.assemble import uncertainty_histograms as _uncertainty_histograms
from audit.pipeline.context import AuditResult, Progress, SilentProgress
from audit.pipeline.decode import STATS_DIR_ENV
from audit.pipeline.levels import modal_prediction as _modal_prediction
from audit.pipeline.run import run_audit
from audit.pipeline.select import Selection

__all__ = [
    "SCHEMA_VERSION",
    "STATS_DIR_ENV",
    "AuditResult",
    "Progress",
    "Selection",
    "SilentProgress",
    "_modal_prediction",
    "_uncertainty_histograms",
    "run_audit",
]
