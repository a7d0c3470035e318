"""Forecast from the dense model alone: susceptibility ranking and bias-increase risk.

Owns: SPEC §5. Inputs are the dense model's probabilities and the fixed population; it must
never see a pruned model (a test runs it with validation disabled and gets the same forecast).

The rule (stated in every report):

* The paper finds that pruning moves *uncertain* outputs first, and toward the attribute's
  majority value (rare-value under-prediction). So every sample currently predicted on the
  minority side of target a with its probability inside the uncertainty band (§4.1) is
  expected to flip to the majority value; confident predictions and majority-side
  predictions are expected to stay. (An earlier version flipped each such sample with
  probability ``0.5 · s``, s = 1 − |2p − 1|; on the bundled demo at 90% sparsity that scaled
  the forecast Δ down ~4x and rated a gap that grew by +0.32 ``low``. Flipping the whole
  uncertain minority side is both simpler to state and closer to what magnitude pruning did.)
* Summing those expected flips per group cell moves each cell's FNR and FPR: with a rare
  positive value, expected flips of true positives raise the cell's FNR and flips of false
  positives lower its FPR (mirrored when positives are the majority). The forecast Δ of a gap
  is the gap of the moved rates minus the dense gap (cells below ``min_group_size`` left out,
  as everywhere).
* Risk: ``high`` when the larger forecast Δ (FNR gap or FPR gap) is ≥ 0.05, ``medium`` when
  ≥ 0.02, else ``low``; raised one level when the target's interdependence excess (R² of
  predictions − R² of labels, §4.2) is ≥ 0.10, the paper's second warning sign. The verdict
  is the highest risk over all (target, group) pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit import metrics as M
from audit.criteria import GroupKey, Population, predict_labels, uncertain

RISK_HIGH = 0.05
RISK_MEDIUM = 0.02
INTERDEPENDENCE_BUMP = 0.10
FLAT = RISK_MEDIUM
_LEVELS = ("low", "medium", "high")

RULE = (
    "Every uncertain sample (p in the band) predicted on the minority side of an attribute is "
    "expected to flip to its majority value (confident and majority-side predictions stay); "
    "the expected flips move each group's FNR and FPR and so the gaps. Risk is high when the "
    f"larger forecast Δ of the FNR/FPR gap is ≥ {RISK_HIGH}, medium when ≥ {RISK_MEDIUM}, else "
    f"low; raised one level when the attribute's interdependence excess is ≥ "
    f"{INTERDEPENDENCE_BUMP}."
)

DIRECTION_NOTE = (
    f"A direction is up or down when |Δ| ≥ {FLAT} (the medium-risk threshold) and, for a "
    "measured Δ, its 95% CI excludes 0; otherwise flat."
)


def risk_level(delta: float | None) -> str:
    """Map a (forecast or measured) increase of a gap to low/medium/high."""
    if delta is None or not np.isfinite(delta):
        return "low"
    if delta >= RISK_HIGH:
        return "high"
    if delta >= RISK_MEDIUM:
        return "medium"
    return "low"


def direction(delta: float | None, ci: tuple[float, float] | None = None) -> str | None:
    """``up``, ``down`` or ``flat``; None when undefined.

    A change smaller than ``FLAT`` (the medium-risk threshold: below it the forecast calls the
    change immaterial) is ``flat``; a measured change whose confidence interval ``ci``
    contains 0 is ``flat`` too, since its sign is not known.
    """
    if delta is None or not np.isfinite(delta):
        return None
    if ci is not None and ci[0] <= 0.0 <= ci[1]:
        return "flat"
    if delta >= FLAT:
        return "up"
    if delta <= -FLAT:
        return "down"
    return "flat"


def susceptibility_scores(probs: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample susceptibility (max over targets) and the target attaining it (SPEC §5.1).

    For multiclass the per-class score uses the one-vs-rest probability of each class.
    """
    return M.sample_susceptibility(probs)


def _moved_rates(
    pop: Population,
    key: GroupKey,
    a: int,
    pred: np.ndarray,
    flip_weight: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(dense rates, forecast rates) of FNR and FPR per cell for target a."""
    y = pop.labels[:, a]
    p = pred[:, a]
    minority_positive = pop.train_positive_rate[a] <= 0.5
    out = {}
    pos = np.bincount(key.cells, weights=(y == 1), minlength=key.n_cells)
    neg = np.bincount(key.cells, weights=(y == 0), minlength=key.n_cells)
    fn = np.bincount(key.cells, weights=(y == 1) & (p == 0), minlength=key.n_cells)
    fp = np.bincount(key.cells, weights=(y == 0) & (p == 1), minlength=key.n_cells)
    side = p == 1 if minority_positive else p == 0
    w = flip_weight * side
    flips_pos = np.bincount(key.cells, weights=w * (y == 1), minlength=key.n_cells)
    flips_neg = np.bincount(key.cells, weights=w * (y == 0), minlength=key.n_cells)
    sign = 1.0 if minority_positive else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        fnr = fn / pos
        fpr = fp / neg
        out["fnr_gap"] = (fnr, fnr + sign * flips_pos / pos)
        out["fpr_gap"] = (fpr, fpr - sign * flips_neg / neg)
    return out


def forecast(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    interdependence: dict[str, Any] | None,
) -> dict[str, Any]:
    """The bias-increase forecast of SPEC §5.2 for every (target, group key) pair.

    Parameters
    ----------
    pop : Population
        Labels and group cells of the evaluation split.
    probs : ndarray of shape (N, A)
        Dense-model probabilities.
    thresholds : ndarray of shape (A,)
        Decision thresholds (the gate's choice: default or calibrated).
    interdependence : dict or None
        The dense ``interdependence`` entry (for the excess).

    Returns
    -------
    dict
        ``{"rule", "verdict", "pairs": [...]}`` as in docs/report-json.md.
    """
    pred = predict_labels(probs, thresholds, pop.task)
    unc = uncertain(probs, pop.task, pop.band).astype(bool)
    pairs = []
    for a, target in enumerate(pop.targets):
        weight = unc[:, a].astype(np.float64)
        excess = None
        if interdependence is not None:
            excess = interdependence[target]["excess"]
        for key in pop.keys:
            moved = _moved_rates(pop, key, a, pred, weight)
            predicted: dict[str, float] = {}
            dense_gap: dict[str, float | None] = {}
            for metric, (before, after) in moved.items():
                g0 = M.between_groups(before, valid=key.valid)
                g1 = M.between_groups(after, valid=key.valid)
                dense_gap[metric] = float(g0) if np.isfinite(g0) else None
                predicted[metric] = float(g1 - g0) if np.isfinite(g0) and np.isfinite(g1) else 0.0
            worst = max(predicted.values())
            level = risk_level(worst)
            reason = f"forecast Δ {worst:+.3f} → {level}"
            if excess is not None and excess >= INTERDEPENDENCE_BUMP and level != "high":
                level = _LEVELS[_LEVELS.index(level) + 1]
                reason += (
                    f"; raised to {level}: interdependence excess {excess:.2f}"
                    f" ≥ {INTERDEPENDENCE_BUMP}"
                )
            pairs.append(
                {
                    "target": target,
                    "group": key.name,
                    "predicted_delta": predicted,
                    "interdependence_excess": excess,
                    "dense_gap": dense_gap,
                    "risk": level,
                    "reason": reason,
                }
            )
    verdict = max((p["risk"] for p in pairs), key=_LEVELS.index, default="low")
    return {"rule": RULE, "verdict": verdict, "pairs": pairs}


def susceptible_samples(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    *,
    top_k: int,
) -> list[dict[str, Any]]:
    """Top-k samples by susceptibility (SPEC §5.1), most susceptible first.

    Each item holds the row ``index`` into the evaluation arrays; the runner adds ids, group
    values and thumbnails.
    """
    score, which = susceptibility_scores(probs, pop.task)
    order = np.lexsort((np.arange(len(score)), -score))[:top_k]
    return [
        _sample_item(pop, probs, thresholds, int(i), rank + 1, float(score[i]), int(which[i]))
        for rank, i in enumerate(order)
    ]


def gallery_samples(
    pop: Population, probs: np.ndarray, thresholds: np.ndarray, *, per_cell: int = 4
) -> list[dict[str, Any]]:
    """Examples for the TP/FP/TN/FN × confident/uncertain gallery of the report.

    Per cell, the most susceptible uncertain samples and the most confident confident ones,
    judged on each sample's most susceptible target.
    """
    score, which = susceptibility_scores(probs, pop.task)
    items = (
        [
            _sample_item(pop, probs, thresholds, i, 0, float(score[i]), int(which[i]))
            for i in range(len(score))
        ]
        if len(score) <= 2000
        else None
    )
    if items is None:  # avoid building N dicts on large sets: pick candidates first
        cand = np.concatenate([np.argsort(-score)[:500], np.argsort(score)[:500]])
        items = [
            _sample_item(pop, probs, thresholds, int(i), 0, float(score[i]), int(which[i]))
            for i in np.unique(cand)
        ]
    out = []
    for outcome in ("TP", "FP", "TN", "FN"):
        for confident in (True, False):
            cell = [it for it in items if it["outcome"] == outcome and it["confident"] == confident]
            cell.sort(
                key=lambda it: (
                    it["susceptibility"] if confident else -it["susceptibility"],
                    it["index"],
                )
            )
            out.extend(cell[:per_cell])
    return out


def _sample_item(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    i: int,
    rank: int,
    score: float,
    a: int,
) -> dict[str, Any]:
    pred = predict_labels(probs[i : i + 1], thresholds, pop.task)[0]
    y = int(pop.labels[i, a])
    yhat = int(pred[a])
    outcome = ("TP" if y else "FP") if yhat else ("FN" if y else "TN")
    unc = uncertain(probs[i : i + 1], pop.task, pop.band)[0, a]
    return {
        "rank": rank,
        "index": i,
        "target": pop.targets[a],
        "susceptibility": score,
        "probs": {t: float(probs[i, k]) for k, t in enumerate(pop.targets)},
        "labels": {t: int(pop.labels[i, k]) for k, t in enumerate(pop.targets)},
        "outcome": outcome,
        "confident": not bool(unc),
    }
