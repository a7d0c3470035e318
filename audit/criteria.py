"""The paper's dense-model criteria assembled per target, group value and intersection.

Owns: turning probabilities into predictions (thresholds, task), the fixed evaluation
"population" (labels, group cells, train-split facts), and the metrics block of SPEC §4 /
docs/report-json.md for any model's probabilities — dense or pruned. Every rate and gap is
derived from per-cell sufficient statistics (``audit.metrics.confusion_counts``), and the same
vectorised gap code serves point estimates and bootstrap replicates. No I/O, no devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audit import metrics as M

GAP_METRICS: tuple[str, ...] = (
    "accuracy_gap",
    "fpr_gap",
    "fnr_gap",
    "tpr_gap",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "uncertainty_gap",
)
SIGNED_METRICS: tuple[str, ...] = ("signed_accuracy_gap", "signed_fpr_gap", "signed_fnr_gap")
_RATE_OF = {
    "accuracy_gap": "accuracy",
    "fpr_gap": "fpr",
    "fnr_gap": "fnr",
    "tpr_gap": "tpr",
    "demographic_parity_difference": "selection_rate",
    "uncertainty_gap": "uncertainty_rate",
    "signed_accuracy_gap": "accuracy",
    "signed_fpr_gap": "fpr",
    "signed_fnr_gap": "fnr",
}
_RATE_NEEDS = {"tpr": "positives", "fnr": "positives", "fpr": "negatives"}
#: The rates every gap is built from, in the order the binary signed arrays are computed.
RATES: tuple[str, ...] = ("accuracy", "tpr", "fpr", "fnr", "selection_rate", "uncertainty_rate")


def denominator(rate: str) -> str:
    """What a rate is a share of: ``positives`` (TPR, FNR), ``negatives`` (FPR) or ``samples``."""
    return _RATE_NEEDS.get(rate, "samples")


@dataclass(frozen=True)
class GroupKey:
    """One way of splitting the samples: a group attribute or an intersection of several."""

    name: str
    cells: np.ndarray  # (N,) int cell index
    values: tuple[str, ...]  # display value per cell
    sizes: np.ndarray  # (C,) samples per cell
    valid: np.ndarray  # (C,) bool: cell has at least min_group_size samples
    majority_cell: np.ndarray  # (A,) int: v* per target for BA, -1 when not applicable
    ba_reason: tuple[str | None, ...]  # per target: why BA is not estimable (train-side)
    positives: np.ndarray  # (A, C) label positives per target and cell
    min_group_size: int

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.values)

    @property
    def negatives(self) -> np.ndarray:
        """(A, C) label negatives per target and cell."""
        return self.sizes[None, :] - self.positives

    def denominators(self, rate: str) -> np.ndarray:
        """(A, C) denominator of ``rate`` per target and cell (labels only, model-free)."""
        need = denominator(rate)
        if need == "positives":
            return self.positives
        if need == "negatives":
            return self.negatives
        return np.broadcast_to(self.sizes[None, :], self.positives.shape)

    def valid_for(self, rate: str) -> np.ndarray:
        """(A, C) bool: the rate's denominator reaches ``min_group_size`` (SPEC §4.7, issue 13.3).

        An FNR rests on the cell's positives and an FPR on its negatives, so a cell of 200
        with 4 positives is too small for an FNR even when it is large enough for accuracy.
        """
        return self.denominators(rate) >= self.min_group_size


@dataclass(frozen=True)
class Population:
    """Everything about the evaluated samples that does not depend on the model."""

    targets: tuple[str, ...]
    task: str
    labels: np.ndarray  # (N, A) 0/1 (one-hot classes for multiclass)
    keys: tuple[GroupKey, ...]
    train_positive_rate: np.ndarray  # (A,)
    min_group_size: int
    band: tuple[float, float]

    @property
    def n(self) -> int:
        """Number of evaluated samples."""
        return int(self.labels.shape[0])


def build_population(
    targets: tuple[str, ...],
    task: str,
    labels: np.ndarray,
    groups: np.ndarray,
    group_names: tuple[str, ...],
    *,
    train_labels: np.ndarray,
    train_groups: np.ndarray,
    min_group_size: int,
    band: tuple[float, float],
    value_names: dict[str, list[str]] | None = None,
) -> Population:
    """Fix labels and group cells for the evaluation split.

    Parameters
    ----------
    targets : tuple of str
        Audited outputs (class names for multiclass).
    task : str
        ``multilabel``, ``binary`` or ``multiclass``.
    labels : ndarray of shape (N, A)
        0/1 labels per target (one-hot for multiclass).
    groups : ndarray of shape (N, G)
        Integer group values per protected attribute.
    group_names : tuple of str
        Names of the G group columns; with G ≥ 2 their intersection is a further key.
    train_labels, train_groups : ndarray
        The same arrays on the train split (or the best stand-in): they pick v* for bias
        amplification and the majority value for rare-value under-prediction.
    min_group_size : int
        Cells with fewer samples are marked ``small`` and left out of gaps.
    band : (float, float)
        Uncertainty band on the positive-class probability.
    value_names : dict, optional
        Display names for group values, per group column.
    """
    labels = np.asarray(labels, dtype=np.int8)
    groups = np.asarray(groups).reshape(len(labels), -1)
    train_groups = np.asarray(train_groups).reshape(len(train_labels), -1)
    train_rate = (
        np.asarray(train_labels, dtype=float).mean(axis=0)
        if len(train_labels)
        else (labels.mean(axis=0))
    )
    columns: list[tuple[str, list[int]]] = [(g, [i]) for i, g in enumerate(group_names)]
    if len(group_names) >= 2:
        columns.append(("×".join(group_names), list(range(len(group_names)))))
    keys = []
    for name, cols in columns:
        cells, cell_values = M.encode_cells(groups[:, cols])
        shown = tuple(
            "×".join(
                _value_name(group_names[c], v, value_names) for c, v in zip(cols, vals, strict=True)
            )
            for vals in cell_values
        )
        sizes = np.bincount(cells, minlength=len(shown))
        # (A, C) label positives: one offset bincount over (target, cell) pairs
        flat = (np.arange(labels.shape[1])[None, :] * len(shown) + cells[:, None]).ravel()
        positives = (
            np.bincount(flat, weights=labels.ravel(), minlength=labels.shape[1] * len(shown))
            .reshape(labels.shape[1], len(shown))
            .astype(np.int64)
        )
        majority, reasons = _majority_cells(
            cols, cell_values, train_labels, train_groups, len(targets)
        )
        keys.append(
            GroupKey(
                name=name,
                cells=cells,
                values=shown,
                sizes=sizes,
                valid=sizes >= min_group_size,
                majority_cell=majority,
                ba_reason=reasons,
                positives=positives,
                min_group_size=int(min_group_size),
            )
        )
    return Population(
        targets=tuple(targets),
        task=task,
        labels=labels,
        keys=tuple(keys),
        train_positive_rate=train_rate,
        min_group_size=min_group_size,
        band=band,
    )


def _value_name(column: str, value: Any, names: dict[str, list[str]] | None) -> str:
    v = value.item() if hasattr(value, "item") else value
    if names and column in names and isinstance(v, int) and 0 <= v < len(names[column]):
        return str(names[column][v])
    return str(v)


def _majority_cells(
    cols: list[int],
    cell_values: list[tuple[Any, ...]],
    train_labels: np.ndarray,
    train_groups: np.ndarray,
    n_targets: int,
) -> tuple[np.ndarray, tuple[str | None, ...]]:
    """v* per target (the group value where the target is more frequent in train).

    Bias amplification is the paper's two-group quantity: for other keys it is not
    applicable. The relative-difference filter (< 10%) is also decided here, on train.
    """
    majority = np.full(n_targets, -1, dtype=np.int64)
    if len(cols) != 1 or len(cell_values) != 2:
        why = "bias amplification is defined for a binary group attribute only"
        return majority, tuple(why for _ in range(n_targets))
    if len(train_labels) == 0:
        return majority, tuple(
            "no train split to choose the majority group from" for _ in range(n_targets)
        )
    g = train_groups[:, cols[0]]
    reasons: list[str | None] = []
    for a in range(n_targets):
        rates = []
        for vals in cell_values:
            sel = g == vals[0]
            rates.append(float(train_labels[sel, a].mean()) if sel.any() else float("nan"))
        r0, r1 = rates
        if not np.isfinite(r0) or not np.isfinite(r1):
            reasons.append("a group value is absent from the train split")
            continue
        majority[a] = int(r1 > r0)
        top = max(r0, r1)
        if top == 0 or abs(r1 - r0) / top < 0.1:
            reasons.append(
                f"train positive rates {r0:.3f} vs {r1:.3f} differ by less than 10% relative"
            )
        else:
            reasons.append(None)
    return majority, tuple(reasons)


# ---------------------------------------------------------------------------- predictions
def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Sigmoid per output (binary, multilabel) or softmax over outputs (multiclass)."""
    z = np.asarray(logits, dtype=np.float64)
    if task == "multiclass":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def predict_labels(probs: np.ndarray, thresholds: np.ndarray, task: str) -> np.ndarray:
    """0/1 predictions (N, A): p > t per output, or one-hot argmax for multiclass."""
    if task == "multiclass":
        out = np.zeros(probs.shape, dtype=np.int8)
        out[np.arange(len(probs)), probs.argmax(axis=1)] = 1
        return out
    return (probs > np.asarray(thresholds)[None, :]).astype(np.int8)


def uncertain(probs: np.ndarray, task: str, band: tuple[float, float]) -> np.ndarray:
    """Uncertainty mask (N, A): p in the open band, or top-1 − top-2 margin for multiclass."""
    if task == "multiclass":
        m = M.margin_uncertain_mask(probs, band=band)
        return np.repeat(m[:, None], probs.shape[1], axis=1).astype(np.int8)
    return M.uncertain_mask(probs, band=band).astype(np.int8)


# ---------------------------------------------------------------------------- counts and gaps
def cell_counts(
    pop: Population,
    key: GroupKey,
    pred: np.ndarray,
    unc: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Sufficient statistics (…, A, C, 5): tp, fp, tn, fn, uncertain."""
    return M.confusion_counts(
        pop.labels, pred, key.cells, n_cells=key.n_cells, weights=weights, extra=unc
    )


def _consistent_gap(rate: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Max − min over the valid cells; NaN when any valid cell's rate is undefined.

    At the point estimate a valid cell always has a nonzero denominator. In a bootstrap
    replicate it can have none (no positives drawn); a gap over the remaining cells would be
    a different statistic from the point estimate's, so such a replicate is undefined
    (dropped and counted by the bootstrap) instead of being mixed in silently.
    """
    gap = M.between_groups(rate, valid=valid)
    missing = (valid & np.isnan(rate)).any(axis=-1)
    return np.where(missing, np.nan, gap)


def gap_arrays(key: GroupKey, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every gap metric and BA as arrays of shape counts.shape[:-2] (i.e. (…, A)).

    Gaps are max − min over the cells whose rate's denominator (positives for TPR/FNR,
    negatives for FPR, samples otherwise) reaches ``min_group_size`` (Fairlearn's
    ``between_groups``); NaN when fewer than two such cells exist, or when a bootstrap
    replicate leaves one of them without a denominator (see :func:`_consistent_gap`).
    """
    rates = M.rates_from_counts(counts)
    out: dict[str, np.ndarray] = {}
    for metric in GAP_METRICS:
        if metric == "equalized_odds_difference":
            out[metric] = np.maximum(
                _consistent_gap(rates["tpr"], key.valid_for("tpr")),
                _consistent_gap(rates["fpr"], key.valid_for("fpr")),
            )
        else:
            rate = _RATE_OF[metric]
            out[metric] = _consistent_gap(rates[rate], key.valid_for(rate))
    if key.n_cells == 2:
        signed = signed_arrays(key, counts, rates=rates)
        for metric in SIGNED_METRICS:
            out[metric] = signed[_RATE_OF[metric]]
    ba = np.full(counts.shape[:-2], np.nan)
    if (key.majority_cell >= 0).any():
        ba = M.bias_amplification_from_counts(counts[..., :4], majority_cell=key.majority_cell)
        eligible = np.array([r is None for r in key.ba_reason])
        ba = np.where(eligible, ba, np.nan)
    out["bias_amplification"] = ba
    return out


def signed_arrays(
    key: GroupKey, counts: np.ndarray, *, rates: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Signed gap (cell 1 − cell 0) of every rate of a binary key, shape counts.shape[:-2].

    NaN unless both cells are valid for the rate. For two cells the max − min gap is the
    absolute value of the signed gap, which the gate's projection interval relies on.
    """
    if key.n_cells != 2:
        raise ValueError(f"signed gaps need a binary group key; {key.name} has {key.n_cells} cells")
    rates = M.rates_from_counts(counts) if rates is None else rates
    out = {}
    for rate in RATES:
        if rate not in rates:
            continue
        r = rates[rate]
        both = key.valid_for(rate).all(axis=-1)
        out[rate] = np.where(both, r[..., 1] - r[..., 0], np.nan)
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _cell_dict(
    rates: dict[str, np.ndarray],
    a: int,
    c: int | None,
    *,
    ece: float,
    underprediction: float,
    where: str,
) -> dict[str, Any]:
    def get(name: str) -> Any:
        arr = rates[name]
        return arr[a] if c is None else arr[a, c]

    cell: dict[str, Any] = {
        "n": int(get("n")),
        "positives": int(get("positives")),
        "negatives": int(get("negatives")),
    }
    reasons: dict[str, str] = {}
    for name in ("accuracy", "tpr", "fpr", "fnr", "selection_rate", "uncertainty_rate"):
        v = _num(get(name))
        cell[name] = v
        if v is None:
            need = _RATE_NEEDS.get(name, "samples")
            reasons[name] = f"no {need} in {where}"
    cell["ece"] = _num(ece)
    if cell["ece"] is None:
        reasons["ece"] = f"no samples in {where}"
    cell["underprediction"] = _num(underprediction)
    if cell["underprediction"] is None:
        reasons["underprediction"] = f"true rate of the rarer value is 0 in {where}"
    cell["reasons"] = reasons
    return cell


def _mark_small_rates(cell: dict[str, Any], key: GroupKey, a: int, c: int, *, where: str) -> None:
    """Make a cell's rate not estimable (None + reason) when its denominator is too small."""
    for rate in RATES:
        if rate not in cell or cell[rate] is None or key.valid_for(rate)[a, c]:
            continue
        need = denominator(rate)
        cell[rate] = None
        cell["reasons"][rate] = (
            f"not estimable: {where} has {int(key.denominators(rate)[a, c])} {need}, fewer than "
            f"min_group_size={key.min_group_size} (the {rate.replace('_', ' ')} is a share of "
            f"the {need})"
        )


def _gap_reason(metric: str, key: GroupKey, rates: dict[str, np.ndarray], a: int) -> str:
    rates_used = (
        ("tpr", "fpr")
        if metric == "equalized_odds_difference"
        else (_RATE_OF.get(metric, "accuracy"),)
    )
    notes = []
    for rate in rates_used:
        need = denominator(rate)
        for c, value in enumerate(key.values):
            count = int(key.denominators(rate)[a, c])
            if not key.valid_for(rate)[a, c]:
                notes.append(
                    f"{key.name}={value} has {count} {need} < min_group_size={key.min_group_size}"
                    + (f" ({rate} is a share of the {need})" if need != "samples" else "")
                )
            elif not np.isfinite(rates[rate][a, c]):
                notes.append(f"{key.name}={value} has no {need}")
    detail = "; ".join(dict.fromkeys(notes)) if notes else "fewer than two comparable groups"
    return f"not estimable: {detail}"


def metrics_block(pop: Population, probs: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """The per-target metrics block of docs/report-json.md for one threshold choice."""
    pred = predict_labels(probs, thresholds, pop.task)
    unc = uncertain(probs, pop.task, pop.band)
    all_cells = np.zeros(pop.n, dtype=np.int64)
    overall = M.confusion_counts(pop.labels, pred, all_cells, n_cells=1, extra=unc)
    overall_rates = M.rates_from_counts(overall[:, 0, :])
    overall_ece, overall_u = _calibration_cells(pop, probs, overall, all_cells, 1)
    block: dict[str, Any] = {}
    key_data = []
    for key in pop.keys:
        counts = cell_counts(pop, key, pred, unc)
        ece, u = _calibration_cells(pop, probs, counts, key.cells, key.n_cells)
        key_data.append((key, M.rates_from_counts(counts), gap_arrays(key, counts), ece, u))
    for a, target in enumerate(pop.targets):
        entry: dict[str, Any] = {
            "threshold": float(thresholds[a]) if pop.task != "multiclass" else None,
            "overall": _cell_dict(
                overall_rates,
                a,
                None,
                ece=overall_ece[a, 0],
                underprediction=overall_u[a, 0],
                where="the evaluation set",
            ),
            "by_group": {},
        }
        for key, rates, gaps, ece, u in key_data:
            cells = []
            for c, value in enumerate(key.values):
                cell = _cell_dict(
                    rates,
                    a,
                    c,
                    ece=ece[a, c],
                    underprediction=u[a, c],
                    where=f"{key.name}={value}",
                )
                cell["value"] = value
                cell["small"] = bool(not key.valid[c])
                _mark_small_rates(cell, key, a, c, where=f"{key.name}={value}")
                cells.append(cell)
            gap_out: dict[str, Any] = {}
            for metric, arr in gaps.items():
                if metric == "bias_amplification":
                    continue
                v = _num(arr[a])
                gap_out[metric] = {
                    "value": v,
                    "reason": None if v is not None else _gap_reason(metric, key, rates, a),
                }
            ba_v = _num(gaps["bias_amplification"][a])
            ba_reason = key.ba_reason[a] or (
                None if ba_v is not None else _ba_count_reason(rates, a, key)
            )
            entry["by_group"][key.name] = {
                "cells": cells,
                "gaps": gap_out,
                "bias_amplification": {
                    "value": ba_v if key.ba_reason[a] is None else None,
                    "reason": ba_reason,
                    "majority_value": (
                        key.values[key.majority_cell[a]] if key.majority_cell[a] >= 0 else None
                    ),
                },
            }
        block[target] = entry
    return block


def _calibration_cells(
    pop: Population, probs: np.ndarray, counts: np.ndarray, cells: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """ECE and U per (target, cell), from the engine's binned sums and confusion counts."""
    ece = M.ece_from_binned(M.binned_sums(pop.labels, probs, cells, n_cells=n_cells))
    u = M.underprediction_from_counts(counts, train_positive_rate=pop.train_positive_rate)
    return ece, u


def _ba_count_reason(rates: dict[str, np.ndarray], a: int, key: GroupKey) -> str:
    pos = rates["positives"][a]
    if (pos < 10).any():
        c = int(np.argmin(pos))
        return f"{key.name}={key.values[c]} has {int(pos[c])} < 10 positives"
    if rates["predicted_positives"][a].sum() == 0:
        return "no predicted positives"
    return "not estimable"


def interdependence(pop: Population, pred: np.ndarray) -> dict[str, Any] | None:
    """R² of each prediction from the others, on predictions and labels (SPEC §4.2)."""
    if pop.task != "multilabel" or len(pop.targets) < 3:
        return None
    r_pred = M.interdependence_r2(pred)
    r_lab = M.interdependence_r2(pop.labels)
    return {
        t: {
            "predictions": _num(r_pred[a]),
            "labels": _num(r_lab[a]),
            "excess": _num(r_pred[a] - r_lab[a]),
        }
        for a, t in enumerate(pop.targets)
    }


def model_metrics(
    pop: Population, probs: np.ndarray, thresholds: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The ``Metrics`` object of docs/report-json.md: default and calibrated blocks."""
    return {
        "default": metrics_block(pop, probs, thresholds["default"]),
        "calibrated": metrics_block(pop, probs, thresholds["calibrated"]),
        "interdependence": interdependence(
            pop, predict_labels(probs, thresholds["default"], pop.task)
        ),
    }
