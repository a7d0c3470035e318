"""Run an audit from Python instead of the command line.

The CLI is a thin layer over this API: ``AuditConfig`` holds the same options as
``prune-audit check`` and ``run_audit`` returns the report data, the gate decision and the
files it wrote. This example audits the bundled demo (built and cached on first use) with
the policy in ``examples/policy.toml``.

Usage::

    uv run python examples/api_example.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from audit import AuditConfig, load_policy, run_audit
from audit.demo import DEMO_GROUP, DEMO_TARGETS, prepare_demo


def main() -> int:
    # A dense checkpoint and a labelled dataset; bring your own, or use the demo's.
    model_path, data_dir = prepare_demo()
    policy, source = load_policy(Path(__file__).with_name("policy.toml"))

    config = AuditConfig(
        model=model_path,
        data=data_dir,
        out=Path("reports/api-example"),
        targets=DEMO_TARGETS,  # model outputs, in output order
        groups=(DEMO_GROUP,),  # protected attribute(s)
        sparsities=(0.8, 0.9, 0.95, 0.98, 0.99),
        recovery="bn",  # re-estimate BatchNorm statistics on the val split after pruning
        policy=policy,
        policy_source=source,
        seed=0,
    )
    result = run_audit(config)

    # The gate judges the measured change at the policy's target sparsity (0.9 here).
    print(f"wrote {', '.join(str(f) for f in result.files)}")
    if result.passed:
        print("gate passed")
    else:
        print("gate failed:")
        for failure in result.gate["failures"]:
            print(f"  - {failure}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
