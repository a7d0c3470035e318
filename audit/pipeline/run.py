"""``run_audit``: the audit as a short sequence of stages on one run context.

Owns: the order of the stages and the one place where rank 0 and the other ranks part.
Must not: do any stage's work itself.
"""

from __future__ import annotations

from audit.config import AuditConfig
from audit.pipeline.assemble import Audited, assemble
from audit.pipeline.context import AuditResult, Progress, SilentProgress, open_run
from audit.pipeline.decode import decode
from audit.pipeline.dense import dense_results
from audit.pipeline.judge import judge
from audit.pipeline.levels import validate_levels
from audit.pipeline.measure import dense_pass, measure
from audit.pipeline.prepare import load, output_names, prepare
from audit.pipeline.select import select
from audit.pipeline.write import write


def run_audit(config: AuditConfig, *, progress: Progress | None = None) -> AuditResult:
    """Run a whole audit and write its reports.

    Parameters
    ----------
    config : AuditConfig
        What to audit and how.
    progress : Progress, optional
        Progress sink (the CLI's rich bars); silent by default.

    Returns
    -------
    AuditResult
        The report data, the gate decision and the written files (empty on non-zero ranks
        under torchrun, which compute nothing beyond their inference shards).
    """
    with open_run(config, progress or SilentProgress(), output_names(config)) as ctx:
        lm, ds = load(ctx)
        sel = select(config, ds, lm)
        pre, runtime = prepare(ctx, ds, lm)
        decoded = decode(ctx, ds, sel, pre["image_size"])
        dense = dense_pass(ctx, lm, sel, pre, runtime, decoded)
        measured = measure(ctx, ds, lm, sel, decoded, dense)
        levels = validate_levels(ctx, lm, ds, sel, pre, dense.runtime, decoded, measured)
        if not ctx.is_main:
            decoded.decoder.write_stats()
            return AuditResult(report={}, passed=True, files=())
        forecast = dense_results(ctx, ds, decoded, measured)
        judgement = judge(config, forecast, levels.levels)
        audited = Audited(lm, ds, sel, pre, decoded, dense, measured, levels, forecast, judgement)
        report, predictions = assemble(ctx, audited)
        return write(ctx, report, predictions, decoded.decoder)
