"""Risk cut-offs and the direction rule, shared by the forecast, the validation and the reports.

Owns: the fallback risk thresholds (used when the forecast model file ships no calibrated
ones), the materiality of a direction (``FLAT``) and the sentence that states the direction
rule. The renderers quote :data:`DIRECTION_NOTE` from here so that they never import the
forecast. Must not compute anything or import other modules of the package.
"""

from __future__ import annotations

# Fallback risk cut-offs (a model file without calibrated ones); also the materiality of a
# direction (FLAT).
RISK_HIGH = 0.05
RISK_MEDIUM = 0.02
FLAT = RISK_MEDIUM

DIRECTION_NOTE = (
    f"A direction is up or down when |Δ| ≥ {FLAT} (the medium-risk threshold) and, for a "
    "measured Δ, its 95% CI excludes 0; otherwise flat."
)

__all__ = ["DIRECTION_NOTE", "FLAT", "RISK_HIGH", "RISK_MEDIUM"]
