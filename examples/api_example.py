"""Run an audit from Python instead of the command line.

The CLI is a thin layer over this API: ``AuditConfig`` holds the same options as
``prune-audit check`` and ``run_audit`` returns the result the reports are rendered from.
This example audits the bundled demo (built and cached on first use).

Usage::

    uv run python examples/api_example.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from audit import AuditConfig, run_audit
from audit.demo import DEMO_GROUP, DEMO_TARGETS, prepare_demo


def main() -> int:
    # A dense checkpoint and a labelled dataset; bring your own, or use the demo's.
    model_path, data_dir = prepare_demo()

    config = AuditConfig(
        model=model_path,
        data=data_dir,
        out=Path("reports/api-example"),
        targets=DEMO_TARGETS,  # model outputs, in output order
        groups=(DEMO_GROUP,),  # protected attribute(s)
        sparsities=(0.8, 0.9, 0.95, 0.98, 0.99),
        recovery="bn",  # recalibrate BatchNorm statistics on the val split after pruning
        seed=0,
    )
    result = run_audit(config)

    # The gate judges the measured change at the policy's target sparsity.
    if result.gate.passed:
        print("gate passed")
        return 0
    print("gate failed:")
    for failure in result.gate.failures:
        print(f"  - {failure}")
    print(f"reports in {config.out}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
