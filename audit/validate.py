"""Measure what pruning changed and grade the dense-only forecast against it.

Owns: SPEC §6.3–6.4 — Δ = pruned − dense for every gap, BA and accuracy with paired
bootstrap CIs, flips per group and compression-identified exemplars (CIEs), the ranking
quality of the susceptibility scores against actual flips, and the forecast's direction and
risk hit rates. Receives probabilities (numpy); runs no model and touches no device.

Paired bootstrap: one (B, N) matrix of resample counts is drawn per run; the dense model's
and every pruned model's per-cell counts are computed on the *same* replicate, so each Δ
replicate is a difference on one resample and the CI reflects only the change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit import metrics as M
from audit.criteria import (
    Population,
    cell_counts,
    gap_arrays,
    predict_labels,
    signed_arrays,
    uncertain,
)
from audit.forecast import RISK_HIGH, RISK_MEDIUM, direction

MODES = ("default", "calibrated")


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


#: Gap metrics whose binary-key Δ interval is the projection of the signed gap (their rate).
_PROJECTED = {
    "accuracy_gap": "accuracy",
    "fpr_gap": "fpr",
    "fnr_gap": "fnr",
    "tpr_gap": "tpr",
    "demographic_parity_difference": "selection_rate",
    "uncertainty_gap": "uncertainty_rate",
}
LEVEL = 0.95


class PairedBootstrap:
    """Dense-side bootstrap replicates, computed once and reused for every pruned model.

    Intervals (issue 13; coverage measured by benchmarks/bench_coverage.py):

    - Δ of a max − min gap of a **binary** group attribute: the projection interval of
      ``|x + d| − |x|`` (``metrics.abs_change_projection_ci``) from the dense signed gap
      ``x`` and its paired change ``d``; ``ci_method = "projection"``.
    - Δ of a max − min gap over more than two cells (intersections, attributes with more
      values): the box bound over per-cell intervals (``metrics.range_change_box_ci``);
      ``ci_method = "box"``.
    - every other Δ (signed gaps, equalized odds, BA, accuracy, excess accuracy change):
      the paired percentile interval; ``ci_method = "percentile"``.

    Every interval is widened to contain its point estimate. A replicate in which a cell
    that is estimable at the point estimate has no denominator is undefined (see
    ``criteria._consistent_gap``) and left out; ``replicates`` says how many were used.

    Parameters
    ----------
    pop : Population
        Evaluation labels and group cells.
    dense_probs : ndarray of shape (N, A)
        Dense probabilities.
    thresholds : dict
        ``{"default": (A,), "calibrated": (A,)}``.
    n_resamples : int
        Number of replicates B (0 disables CIs).
    seed : int
        Seed of the resample matrix.
    """

    def __init__(
        self,
        pop: Population,
        dense_probs: np.ndarray,
        thresholds: dict[str, np.ndarray],
        *,
        n_resamples: int,
        seed: int,
    ) -> None:
        self.pop = pop
        self.thresholds = thresholds
        self.weights = (
            M.bootstrap_weights(pop.n, n_resamples=n_resamples, seed=seed)
            if n_resamples > 0
            else None
        )
        self.dense = {mode: self._stats(dense_probs, mode) for mode in MODES}

    def _stats(self, probs: np.ndarray, mode: str) -> dict[str, Any]:
        pop = self.pop
        pred = predict_labels(probs, self.thresholds[mode], pop.task)
        unc = uncertain(probs, pop.task, pop.band)
        correct = (pred == pop.labels).astype(np.float32)
        out: dict[str, Any] = {
            "accuracy": correct.mean(axis=0, dtype=np.float64),
            "gaps": {},
            "boot_gaps": {},
            "cell_accuracy": {},
            "boot_cell_accuracy": {},
            "signed": {},
            "boot_signed": {},
            "cell_rates": {},
            "boot_cell_rates": {},
        }
        if self.weights is not None:
            out["boot_accuracy"] = (self.weights @ correct).astype(np.float64) / pop.n
        for key in pop.keys:
            point = cell_counts(pop, key, pred, unc)
            out["gaps"][key.name] = gap_arrays(key, point)
            out["cell_rates"][key.name] = M.rates_from_counts(point)
            out["cell_accuracy"][key.name] = out["cell_rates"][key.name]["accuracy"]
            if key.n_cells == 2:
                out["signed"][key.name] = signed_arrays(key, point)
            if self.weights is not None:
                boot = cell_counts(pop, key, pred, unc, weights=self.weights)
                out["boot_gaps"][key.name] = gap_arrays(key, boot)
                out["boot_cell_rates"][key.name] = M.rates_from_counts(boot)
                out["boot_cell_accuracy"][key.name] = out["boot_cell_rates"][key.name]["accuracy"]
                if key.n_cells == 2:
                    out["boot_signed"][key.name] = signed_arrays(key, boot)
        return out

    def deltas(self, pruned_probs: np.ndarray) -> dict[str, Any]:
        """``{"default": Delta, "calibrated": Delta}`` (docs/report-json.md) for one model."""
        return {
            mode: self._delta(self.dense[mode], self._stats(pruned_probs, mode)) for mode in MODES
        }

    def _delta(self, dense: dict[str, Any], pruned: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        boot = self.weights is not None
        for a, target in enumerate(self.pop.targets):
            acc_change = pruned["accuracy"][a] - dense["accuracy"][a]
            acc_boot = (
                pruned["boot_accuracy"][:, a] - dense["boot_accuracy"][:, a] if boot else None
            )
            entry: dict[str, Any] = {
                "accuracy": self._d(acc_change, acc_boot, "accuracy undefined"),
                "by_group": {},
                "excess_accuracy_change": {},
            }
            for key in self.pop.keys:
                metrics = {}
                for metric, dense_arr in dense["gaps"][key.name].items():
                    value = pruned["gaps"][key.name][metric][a] - dense_arr[a]
                    why = "not estimable on the dense or the pruned model (see the metrics table)"
                    reps = None
                    if boot:
                        reps = (
                            pruned["boot_gaps"][key.name][metric][:, a]
                            - dense["boot_gaps"][key.name][metric][:, a]
                        )
                    rate = _PROJECTED.get(metric)
                    if key.n_cells == 2 and rate is not None:
                        x = dense["signed"][key.name][rate][a]
                        d = pruned["signed"][key.name][rate][a] - x
                        proj = None
                        if boot:
                            bx = dense["boot_signed"][key.name][rate][:, a]
                            bd = pruned["boot_signed"][key.name][rate][:, a] - bx
                            proj = (bx, bd)
                        metrics[metric] = self._projected(value, x, d, proj, why)
                    elif rate is not None:
                        metrics[metric] = self._boxed(key, a, rate, value, dense, pruned, why)
                    else:
                        metrics[metric] = self._d(value, reps, why)
                entry["by_group"][key.name] = metrics
                entry["excess_accuracy_change"][key.name] = self._excess(
                    key, a, dense, pruned, acc_change, acc_boot
                )
            out[target] = entry
        return out

    def _excess(
        self,
        key: Any,
        a: int,
        dense: dict[str, Any],
        pruned: dict[str, Any],
        acc_change: float,
        acc_boot: np.ndarray | None,
    ) -> list[dict[str, Any]]:
        """Per cell: (pruned − dense accuracy in the cell) − (pruned − dense overall).

        Hashemizadeh et al. (ICLR 2024, "Balancing Act") call a group whose accuracy falls
        faster than the model's a victim of disparate impact; negative values are that.
        """
        rows = []
        valid = key.valid_for("accuracy")[a]
        for c, value in enumerate(key.values):
            change = (
                pruned["cell_accuracy"][key.name][a, c] - dense["cell_accuracy"][key.name][a, c]
            )
            reps = None
            if acc_boot is not None:
                reps = (
                    pruned["boot_cell_accuracy"][key.name][:, a, c]
                    - dense["boot_cell_accuracy"][key.name][:, a, c]
                    - acc_boot
                )
            if valid[c]:
                d = self._d(change - acc_change, reps, "accuracy undefined")
            else:
                d = {
                    "value": None,
                    "ci": None,
                    "reason": (
                        f"not estimable: {key.name}={value} has {int(key.sizes[c])} samples, "
                        f"fewer than min_group_size={key.min_group_size}"
                    ),
                }
            rows.append({"group_value": value, "n": int(key.sizes[c]), **d})
        return rows

    @staticmethod
    def _d(value: float, boot: np.ndarray | None, why: str) -> dict[str, Any]:
        v = _num(value)
        ci = None
        used = None
        if v is not None and boot is not None:
            used = int(np.isfinite(boot).sum())
            lo, hi = M.include_point(v, *M.percentile_ci(boot, level=LEVEL))
            if np.isfinite(lo) and np.isfinite(hi):
                ci = [float(lo), float(hi)]
        out: dict[str, Any] = {"value": v, "ci": ci, "reason": None if v is not None else why}
        if ci is not None:
            out["ci_method"] = "percentile"
            out["replicates"] = used
        return out

    def _boxed(
        self,
        key: Any,
        a: int,
        rate: str,
        value: float,
        dense: dict[str, Any],
        pruned: dict[str, Any],
        why: str,
    ) -> dict[str, Any]:
        """Δ of a gap over more than two cells with the box bound (``range_change_box_ci``)."""
        v = _num(value)
        out: dict[str, Any] = {"value": v, "ci": None, "reason": None if v is not None else why}
        if v is None or self.weights is None:
            return out
        keep = key.valid_for(rate)[a]
        x = dense["cell_rates"][key.name][rate][a, keep]
        d = pruned["cell_rates"][key.name][rate][a, keep] - x
        bx = dense["boot_cell_rates"][key.name][rate][:, a, keep]
        bd = pruned["boot_cell_rates"][key.name][rate][:, a, keep] - bx
        if x.shape[-1] < 2 or not (np.isfinite(x).all() and np.isfinite(d).all()):
            return out
        lo, hi = M.include_point(v, *M.range_change_box_ci(x, d, bx, bd, level=LEVEL))
        if np.isfinite(lo) and np.isfinite(hi):
            out["ci"] = [float(lo), float(hi)]
            out["ci_method"] = "box"
            out["replicates"] = int((np.isfinite(bx).all(-1) & np.isfinite(bd).all(-1)).sum())
        return out

    @staticmethod
    def _projected(
        value: float,
        x: float,
        d: float,
        proj: tuple[np.ndarray, np.ndarray] | None,
        why: str,
    ) -> dict[str, Any]:
        v = _num(value)
        out: dict[str, Any] = {"value": v, "ci": None, "reason": None if v is not None else why}
        if v is None or proj is None or not (np.isfinite(x) and np.isfinite(d)):
            return out
        bx, bd = proj
        lo, hi = M.abs_change_projection_ci(x, d, bx, bd, level=LEVEL)
        lo, hi = M.include_point(v, lo, hi)
        if np.isfinite(lo) and np.isfinite(hi):
            out["ci"] = [float(lo), float(hi)]
            out["ci_method"] = "projection"
            out["replicates"] = int((np.isfinite(bx) & np.isfinite(bd)).sum())
        return out


def flips(
    pop: Population, dense_pred: np.ndarray, pruned_pred: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """Flip rates per target overall and per group cell (SPEC §6.3), and the flip matrix.

    ``flip_rate`` = share of samples whose prediction changed; ``pos_to_neg_flip_rate`` =
    share of dense-positive predictions that became negative; ``neg_to_pos_flip_rate``
    likewise for dense negatives. Undefined (None) when the denominator is 0.
    """
    flipped = dense_pred != pruned_pred
    # Counted by the engine with the dense prediction as "label": tp/tn kept, fn = pos → neg,
    # fp = neg → pos.
    overall = M.confusion_counts(dense_pred, pruned_pred, np.zeros(pop.n, np.intp), n_cells=1)
    by_key = [
        (key, M.confusion_counts(dense_pred, pruned_pred, key.cells, n_cells=key.n_cells))
        for key in pop.keys
    ]
    out = {}
    for a, target in enumerate(pop.targets):
        out[target] = {
            "overall": _flip_stats(overall[a, 0]),
            "by_group": {
                key.name: [
                    {"value": value, **_flip_stats(counts[a, c])}
                    for c, value in enumerate(key.values)
                ]
                for key, counts in by_key
            },
        }
    return out, flipped


def _flip_stats(counts: np.ndarray) -> dict[str, Any]:
    """Flip counts and rates of one cell from its (dense, pruned) confusion counts."""
    kept_pos, neg_to_pos, kept_neg, pos_to_neg = (int(v) for v in counts[:4])
    n = kept_pos + neg_to_pos + kept_neg + pos_to_neg
    dpos, dneg = kept_pos + pos_to_neg, kept_neg + neg_to_pos
    f = neg_to_pos + pos_to_neg
    return {
        "n": n,
        "flips": f,
        "flip_rate": f / n if n else None,
        "pos_to_neg_flip_rate": pos_to_neg / dpos if dpos else None,
        "neg_to_pos_flip_rate": neg_to_pos / dneg if dneg else None,
    }


def ranking_quality(
    pop: Population, dense_probs: np.ndarray, flipped: np.ndarray, *, k: int
) -> dict[str, Any]:
    """AUROC, precision@k, recall@k and lift of the dense susceptibility vs actual flips."""
    susc = 1.0 - np.abs(2.0 * dense_probs - 1.0)
    k = max(1, min(k, pop.n))
    columns = [(t, susc[:, a], flipped[:, a]) for a, t in enumerate(pop.targets)]
    if len(pop.targets) > 1:
        columns.append(("any", susc.max(axis=1), flipped.any(axis=1)))
    out = {}
    for name, score, hit in columns:
        hit = hit.astype(np.int8)
        out[name] = {
            "auroc": _num(M.auroc(score, hit)),
            "precision_at_k": _num(M.precision_at_k(score, hit, k=k)),
            "recall_at_k": _num(M.recall_at_k(score, hit, k=k)),
            "lift": _num(M.lift_at_k(score, hit, k=k)),
            "k": int(k),
            "n_flips": int(hit.sum()),
        }
    return out


def forecast_agreement(
    forecast: dict[str, Any], level: dict[str, Any], *, mode: str
) -> dict[str, Any]:
    """Compare the forecast's Δ, interval and risk with the Δ measured at one level (SPEC §6.4).

    The forecast at the level's own sparsity is used (``by_sparsity``; the headline
    ``predicted_delta`` for a forecast without one). Direction: up / down / flat must match,
    where a change below the medium-risk threshold is flat and a measured change whose CI
    contains 0 is flat (``forecast.direction``). Interval: whether the measured Δ lies inside
    the forecast interval. Risk: the measured larger Δ of the FNR/FPR gap — or, when the
    forecast's risk is on the predicted CI lower bound (``risk_score``), the larger measured
    CI lower bound — mapped by the forecast's own risk thresholds must equal the forecast risk.
    """
    rows = []
    risk_hits = []
    interval_hits = []
    cut = (forecast.get("model") or {}).get("risk_thresholds") or {}
    medium, high = cut.get("medium", RISK_MEDIUM), cut.get("high", RISK_HIGH)
    on_ci = (forecast.get("model") or {}).get("risk_score") == "predicted_ci_low"

    def level_of(v: float) -> str:
        return "high" if v >= high else "medium" if v >= medium else "low"

    s = float(level["sparsity"])
    for pair in forecast["pairs"]:
        at = next(
            (b for b in pair.get("by_sparsity", ()) if np.isclose(b["sparsity"], s)),
            {
                "predicted_delta": pair["predicted_delta"],
                "risk": pair["risk"],
                "interval": pair.get("interval") or {},
            },
        )
        deltas = level["delta"][mode][pair["target"]]["by_group"][pair["group"]]
        metrics = [
            m
            for m in ("fnr_gap", "fpr_gap", "bias_amplification")
            if m in at["predicted_delta"] and m in deltas
        ]
        measured = {m: deltas[m]["value"] for m in metrics}
        ci = {m: deltas[m].get("ci") for m in metrics}
        defined = [
            (ci[m] or [None])[0] if on_ci else measured[m]
            for m in ("fnr_gap", "fpr_gap")
            if m in measured
        ]
        defined = [v for v in defined if v is not None]
        measured_risk = level_of(max(defined)) if defined else None
        risk_hit = measured_risk == at["risk"] if measured_risk is not None else None
        if risk_hit is not None:
            risk_hits.append(risk_hit)
        for metric in metrics:
            predicted = at["predicted_delta"][metric]
            d_pred = direction(predicted)
            d_meas = direction(measured[metric], ci[metric])
            iv = (at.get("interval") or {}).get(metric)
            inside = (
                None
                if iv is None or measured[metric] is None
                else bool(iv[0] <= measured[metric] <= iv[1])
            )
            if inside is not None:
                interval_hits.append(inside)
            rows.append(
                {
                    "target": pair["target"],
                    "group": pair["group"],
                    "metric": metric,
                    "predicted_delta": predicted,
                    "predicted_interval": iv,
                    "measured_delta": measured[metric],
                    "direction_hit": (
                        None if d_meas is None or d_pred is None else d_pred == d_meas
                    ),
                    "interval_hit": inside,
                    "predicted_risk": at["risk"],
                    "measured_risk": measured_risk,
                    "risk_hit": risk_hit,
                }
            )
    dir_hits = [r["direction_hit"] for r in rows if r["direction_hit"] is not None]
    return {
        "sparsity": level["sparsity"],
        "pairs": rows,
        "direction_hit_rate": float(np.mean(dir_hits)) if dir_hits else None,
        "interval_coverage": float(np.mean(interval_hits)) if interval_hits else None,
        "risk_hit_rate": float(np.mean(risk_hits)) if risk_hits else None,
    }
