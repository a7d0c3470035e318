"""Today's rule: the forecast of ``audit/forecast.py`` before the benchmark (commit 023883b).

Kept here verbatim in substance so the scorer can put it side by side with the fitted rule:
every uncertain sample (p in the band) predicted on the minority side is expected to flip to
the majority value; the expected flips move each group's FNR and FPR. One number per pair, the
same at every sparsity, and no bias-amplification forecast. Risk: high when the larger Δ of
the FNR/FPR gap is ≥ 0.05, medium when ≥ 0.02, raised one level when the interdependence
excess is ≥ 0.10.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit import metrics as M
from audit.criteria import GroupKey, Population, predict_labels, uncertain

RISK_HIGH, RISK_MEDIUM, BUMP = 0.05, 0.02, 0.10
_LEVELS = ("low", "medium", "high")


def _moved_rates(pop: Population, key: GroupKey, a: int, pred: np.ndarray, w_all: np.ndarray):
    """Dense and moved FNR/FPR per cell, counts from the disaggregation engine."""
    y = pop.labels[:, a : a + 1]
    p = pred[:, a : a + 1]
    minority_positive = pop.train_positive_rate[a] <= 0.5
    tp, fp, tn, fn = M.confusion_counts(y, p, key.cells, n_cells=key.n_cells)[0].T
    side = p[:, 0] == 1 if minority_positive else p[:, 0] == 0
    w = M.confusion_counts(y, p, key.cells, n_cells=key.n_cells, weights=w_all * side)[0].T
    flips_pos, flips_neg = w[0] + w[3], w[1] + w[2]  # weighted tp + fn, fp + tn
    pos, neg = tp + fn, fp + tn
    sign = 1.0 if minority_positive else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        fnr, fpr = fn / pos, fp / neg
        return {
            "fnr_gap": (fnr, fnr + sign * flips_pos / pos),
            "fpr_gap": (fpr, fpr - sign * flips_neg / neg),
        }


def todays_forecast(
    pop: Population, probs: np.ndarray, thresholds: np.ndarray, inter: dict[str, Any] | None
) -> dict[tuple[str, str], dict[str, Any]]:
    """{(target, group): {"fnr_gap": Δ, "fpr_gap": Δ, "risk": level}}."""
    pred = predict_labels(probs, thresholds, pop.task)
    unc = uncertain(probs, pop.task, pop.band).astype(bool)
    out = {}
    for a, target in enumerate(pop.targets):
        excess = None if inter is None else inter[target]["excess"]
        for key in pop.keys:
            moved = _moved_rates(pop, key, a, pred, unc[:, a].astype(np.float64))
            d = {}
            for metric, (before, after) in moved.items():
                g0 = M.between_groups(before, valid=key.valid)
                g1 = M.between_groups(after, valid=key.valid)
                d[metric] = float(g1 - g0) if np.isfinite(g0) and np.isfinite(g1) else 0.0
            worst = max(d.values())
            level = "high" if worst >= RISK_HIGH else "medium" if worst >= RISK_MEDIUM else "low"
            if excess is not None and excess >= BUMP and level != "high":
                level = _LEVELS[_LEVELS.index(level) + 1]
            out[(target, key.name)] = d | {"risk": level}
    return out
