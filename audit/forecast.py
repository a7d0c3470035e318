"""Forecast from the dense model alone: susceptibility ranking and bias-increase risk.

Owns: SPEC §5. Inputs are the dense model's probabilities, the fixed population and the
coefficients shipped in ``audit/forecast_model.json``; it must never see a pruned model (a
test runs it with validation disabled and gets the same forecast).

The rule (stated in every report), per audited sparsity s (with ``--no-validate``: per
requested sparsity), for every (target a, group key g):

* **Flip model.** Each sample's dense prediction of a flips after pruning to s with
  probability q = σ(β₀(s) + β₁(s)·margin + β₂(s)·toward_majority + β₃(s)·group_tilt)
  (``flip_features``): confident samples flip less (the paper's susceptibility, as the
  distance to the threshold in logit units); minority-side predictions flip more (pruning
  drifts toward the majority value, rare-value under-prediction); and a flip in the direction
  the dense model already leans for the sample's group (a group cue beyond the labels, the
  mark of a spurious shortcut) is more likely. The β(s) are a logistic regression of the
  measured flips of the design part of the forecast benchmark (``benchmarks/forecast/``),
  fitted per recovery (``bn``, ``finetune``) at 0.8, 0.9 and 0.95 and interpolated linearly
  in between (nearest outside, flagged).
* **Δ of the paper's metrics.** The flips move each cell's confusion counts; the forecast Δ of
  the FNR gap, FPR gap and bias amplification is the mean over draws of the flows (normal
  approximation of the Bernoulli sums) of the moved metric minus the dense one, computed with
  the same ``gap_arrays`` as the measured Δ (``expected_gap_change``).
* **Interval.** Forecast Δ + the 5% and 95% quantiles of the out-of-fold residuals
  (measured − forecast) on the design part, per metric and sparsity; its coverage of the
  measured Δ on the held-out part is shipped with the coefficients and shown in reports.
* **Predicted evidence.** For the FNR and FPR gaps, ``predicted_ci_low`` forecasts the
  measured Δ's 95% CI lower bound: the gate's own interval functions (projection interval for
  a binary key, box bound for more cells) applied to the dense cell rates with their binomial
  errors and the forecast per-cell change with its paired error (``predicted_ci_low``).
* **Risk.** ``high`` when the larger predicted CI lower bound (FNR or FPR gap) is ≥ the
  shipped ``high`` cut-off, ``medium`` when ≥ ``medium``, else ``low`` (a model file may put
  the cut-offs on the forecast Δ instead: ``risk.score``). The cut-offs were picked on the
  design part's out-of-fold pairs (``benchmarks/forecast/fit.py``: below ``medium`` an event —
  a measured Δ whose 95% CI lower bound exceeds 0.02 — is at most a quarter as frequent as on
  average, at or above ``high`` at least 1.5 times) and the event rate per level on the
  held-out part is shipped and shown. The verdict is the highest risk over all pairs at the
  target sparsity.

(An earlier rule flipped every uncertain minority-side sample, one number per pair for an
unstated sparsity; on the benchmark it ranks worse — README, "Forecast".)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from statistics import NormalDist
from typing import Any

import numpy as np

from audit import metrics as M
from audit.criteria import GroupKey, Population, gap_arrays, predict_labels, uncertain
from audit.risk import FLAT, RISK_HIGH, RISK_MEDIUM

_LEVELS = ("low", "medium", "high")

RULE = (
    "Per sparsity, each sample's dense prediction flips with probability "
    "σ(β₀ + β₁·margin + β₂·toward-majority + β₃·group-tilt) — less when confident, more when "
    "it is the attribute's minority value, more when it goes the way the dense model already "
    "leans for the sample's group — with β fitted on the forecast benchmark's design part. The "
    "expected flips move each group's FNR/FPR and the bias amplification; the forecast Δ is "
    "that move, with an interval from held-out-calibrated residuals. Risk is high / medium "
    "when the larger predicted 95% CI lower bound of the measured FNR/FPR-gap Δ (the gate's "
    "interval applied to the dense cell rates and the forecast move) reaches the "
    "benchmark-calibrated cut-offs."
)


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


@dataclass(frozen=True)
class ForecastModel:
    """Coefficients of the forecast, fitted on the design part of the forecast benchmark.

    Shipped as ``audit/forecast_model.json`` (written by ``benchmarks/forecast/fit.py``, with
    the benchmark figures added by ``benchmarks/forecast/score.py``).
    """

    sparsities: tuple[float, ...]
    flip_coef: dict[str, np.ndarray]  # recovery -> (S, F)
    interval: dict[str, np.ndarray] | None  # metric -> (S, 2) residual quantiles
    interval_level: float | None
    risk_medium: float
    risk_high: float
    benchmark: dict[str, Any] | None
    fitted_on: dict[str, Any]
    risk_score: str = "predicted_delta"  # what the cut-offs apply to (see RISK_SCORES)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForecastModel:
        """Build from the JSON's plain data (checked: features and sparsities must match)."""
        if list(d.get("features", [])) != list(FLIP_FEATURES):
            raise ValueError(
                f"forecast model features {d.get('features')!r} do not match this version's "
                f"{list(FLIP_FEATURES)!r}; refit with benchmarks/forecast/fit.py."
            )
        sp = tuple(float(s) for s in d["sparsities"])
        coef = {
            rec: np.asarray([by_s[repr(s)] for s in sp], dtype=np.float64)
            for rec, by_s in d["flip_coef"].items()
        }
        iv = d.get("interval")
        interval = (
            {
                m: np.asarray([q[repr(s)] for s in sp], dtype=np.float64)
                for m, q in iv["residual_quantiles"].items()
            }
            if iv
            else None
        )
        risk = d.get("risk") or {"medium": RISK_MEDIUM, "high": RISK_HIGH}
        score = risk.get("score", "predicted_delta")
        if score not in RISK_SCORES:
            raise ValueError(
                f"forecast model risk score {score!r} is not one of {list(RISK_SCORES)!r}; "
                "refit with benchmarks/forecast/fit.py."
            )
        return cls(
            sparsities=sp,
            flip_coef=coef,
            interval=interval,
            interval_level=float(iv["level"]) if iv else None,
            risk_medium=float(risk["medium"]),
            risk_high=float(risk["high"]),
            benchmark=d.get("benchmark"),
            fitted_on=dict(d.get("fitted_on", {})),
            risk_score=score,
        )

    def _weights(self, sparsity: float) -> tuple[int, int, float, bool]:
        """Linear interpolation between the fitted sparsities (clamped outside them)."""
        sp = self.sparsities
        s = float(sparsity)
        if s <= sp[0] or s >= sp[-1]:
            i = 0 if s <= sp[0] else len(sp) - 1
            return i, i, 0.0, not np.isclose(s, sp[i])
        j = int(np.searchsorted(sp, s))
        w = (s - sp[j - 1]) / (sp[j] - sp[j - 1])
        return j - 1, j, w, False

    def coef(self, recovery: str, sparsity: float) -> tuple[np.ndarray, str, bool]:
        """(coefficients, recovery they were fitted for, extrapolated?) at one sparsity."""
        used = recovery if recovery in self.flip_coef else "bn"
        c = self.flip_coef[used]
        i, j, w, extrapolated = self._weights(sparsity)
        return (1 - w) * c[i] + w * c[j], used, extrapolated

    def interval_at(self, metric: str, sparsity: float) -> tuple[float, float] | None:
        """Residual quantiles (lo, hi) at one sparsity, or None when none were fitted."""
        if self.interval is None or metric not in self.interval:
            return None
        q = self.interval[metric]
        i, j, w, _ = self._weights(sparsity)
        lo, hi = (1 - w) * q[i] + w * q[j]
        return float(lo), float(hi)

    def risk(self, score: float | None) -> str:
        """Map a pair's larger risk score (FNR or FPR gap; ``risk_score``) to a level."""
        if score is None or not np.isfinite(score):
            return "low"
        if score >= self.risk_high:
            return "high"
        if score >= self.risk_medium:
            return "medium"
        return "low"


MODEL_FILE = "forecast_model.json"


@functools.cache
def load_model() -> ForecastModel:
    """The shipped forecast model (``audit/forecast_model.json``)."""
    text = resources.files("audit").joinpath(MODEL_FILE).read_text(encoding="utf-8")
    return ForecastModel.from_dict(json.loads(text))


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def forecast(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    interdependence: dict[str, Any] | None,
    *,
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95),
    target_sparsity: float = 0.9,
    recovery: str = "bn",
    model: ForecastModel | None = None,
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
        The dense ``interdependence`` entry (its excess is reported per pair).
    sparsities : tuple of float
        Sparsities to forecast at (the audited ones, or the requested ones with
        ``--no-validate``); ``target_sparsity`` is always added.
    target_sparsity : float
        The sparsity whose forecast is the pair's headline (``predicted_delta``, ``risk``).
    recovery : str
        The recovery of the audit; coefficients fitted for it are used (``bn``'s when the
        benchmark has none for it, which the output says).
    model : ForecastModel, optional
        Coefficients; the shipped ``load_model()`` by default.

    Returns
    -------
    dict
        ``{"rule", "model", "target_sparsity", "sparsities", "verdict", "pairs": [...]}`` as in
        docs/report-json.md.
    """
    model = model or load_model()
    levels = sorted({round(float(s), 6) for s in (*sparsities, target_sparsity)})
    target_s = round(float(target_sparsity), 6)
    used_rec = model.coef(recovery, target_s)[1]
    extrapolated = {s: model.coef(recovery, s)[2] for s in levels}
    per_level = _level_changes(pop, probs, thresholds, model, recovery, levels)
    pairs = []
    for a, target in enumerate(pop.targets):
        excess = None if interdependence is None else interdependence[target]["excess"]
        for key in pop.keys:
            by_s = [
                _at_sparsity(per_level[s][key.name], a, s, model, extrapolated[s]) for s in levels
            ]
            pairs.append(
                _pair(pop, key, a, per_level[target_s][key.name], by_s, target_s, model, excess)
            )
    verdict = max((p["risk"] for p in pairs), key=_LEVELS.index, default="low")
    return {
        "rule": RULE,
        "model": {
            "recovery": used_rec,
            "coefficients": {
                f: round(float(v), 4)
                for f, v in zip(FLIP_FEATURES, model.coef(recovery, target_s)[0], strict=True)
            },
            "interval_level": model.interval_level,
            "risk_thresholds": {"medium": model.risk_medium, "high": model.risk_high},
            "risk_score": model.risk_score,
            "benchmark": model.benchmark,
            "fitted_on": model.fitted_on,
            "notes": _notes(pop, model, recovery, used_rec, extrapolated),
        },
        "target_sparsity": target_s,
        "sparsities": levels,
        "verdict": verdict,
        "pairs": pairs,
    }


def _level_changes(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    model: ForecastModel,
    recovery: str,
    levels: list[float],
) -> dict[float, dict[str, dict[str, Any]]]:
    """Per sparsity and group key: flip chances, forecast change and predicted CI bound."""
    feats = {key.name: flip_features(pop, probs, thresholds, key) for key in pop.keys}
    out: dict[float, dict[str, dict[str, Any]]] = {}
    for s in levels:
        coef = model.coef(recovery, s)[0]
        out[s] = {}
        for key in pop.keys:
            q = flip_probability(feats[key.name], coef)
            flows = expected_flows(pop, probs, thresholds, key, q)
            out[s][key.name] = {
                "q": q,
                "change": expected_gap_change(pop, probs, thresholds, key, q, flows=flows),
                "ci_low": predicted_ci_low(key, flows),
            }
    return out


def _at_sparsity(
    level: dict[str, Any], a: int, s: float, model: ForecastModel, extrapolated: bool
) -> dict[str, Any]:
    """One pair's ``by_sparsity`` item: forecast Δ, interval, predicted CI bound, risk."""
    pred = {m: _num(level["change"][m]["mean"][a]) for m in FORECAST_METRICS}
    ci_low = {m: _num(level["ci_low"][m][a]) for m in EVENT_METRICS}
    iv = {}
    for m in FORECAST_METRICS:
        q = model.interval_at(m, s)
        iv[m] = (
            None
            if q is None or pred[m] is None
            else [round(pred[m] + q[0], 6), round(pred[m] + q[1], 6)]
        )
    score = ci_low if model.risk_score == "predicted_ci_low" else pred
    return {
        "sparsity": s,
        "predicted_delta": pred,
        "interval": iv,
        "predicted_ci_low": ci_low,
        "risk": model.risk(_worst(score)),
        "extrapolated": extrapolated,
    }


def _pair(
    pop: Population,
    key: GroupKey,
    a: int,
    level: dict[str, Any],
    by_s: list[dict[str, Any]],
    target_s: float,
    model: ForecastModel,
    excess: float | None,
) -> dict[str, Any]:
    """One (target, group) entry of the forecast, headlined at the target sparsity."""
    head = next(b for b in by_s if b["sparsity"] == target_s)
    change = level["change"]
    why = _why(pop, key, a, level["q"], change)
    return {
        "target": pop.targets[a],
        "group": key.name,
        "predicted_delta": head["predicted_delta"],
        "interval": head["interval"],
        "predicted_ci_low": head["predicted_ci_low"],
        "interdependence_excess": excess,
        "dense_gap": {m: _num(change[m]["dense"][a]) for m in EVENT_METRICS},
        "dense_bias_amplification": _num(change["bias_amplification"]["dense"][a]),
        "risk": head["risk"],
        "reason": _reason(head, why, target_s, model),
        "why": why,
        "by_sparsity": by_s,
    }


def _notes(
    pop: Population,
    model: ForecastModel,
    recovery: str,
    used_rec: str,
    extrapolated: dict[float, bool],
) -> list[str]:
    """Caveats under which the shipped benchmark figures do not apply as stated."""
    notes = []
    if used_rec != recovery:
        notes.append(
            f"the benchmark has no cases with recovery {recovery!r}; the coefficients fitted "
            f"for {used_rec!r} were used, so the benchmark figures do not apply as stated"
        )
    if any(extrapolated.values()):
        out = [f"{s:g}" for s, e in extrapolated.items() if e]
        notes.append(
            f"sparsity {', '.join(out)} lies outside the benchmark's range "
            f"({model.sparsities[0]:g}–{model.sparsities[-1]:g}): the nearest fitted "
            "coefficients and interval were used, and their coverage there is not measured"
        )
    if pop.task == "multiclass":
        notes.append(
            "the benchmark has no multiclass cases: the flip model is applied one-vs-rest and "
            "its figures do not apply as stated"
        )
    return notes


def _worst(pred: dict[str, float | None]) -> float | None:
    vals = [pred[m] for m in ("fnr_gap", "fpr_gap") if pred[m] is not None]
    return max(vals) if vals else None


def _why(
    pop: Population, key: GroupKey, a: int, q: np.ndarray, change: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per valid cell: sizes, expected flows of the forecast and the rates they move."""
    flows = change["fnr_gap"]["flows"][a]  # (C, 4): tp→fn, fn→tp, fp→tn, tn→fp
    y = pop.labels[:, a].astype(bool)
    out = []
    for c, value in enumerate(key.values):
        if not key.valid[c]:
            continue
        in_c = key.cells == c
        pos, neg = int((y & in_c).sum()), int((~y & in_c).sum())
        tp_fn, fn_tp, fp_tn, tn_fp = (float(v) for v in flows[c])
        out.append(
            {
                "value": value,
                "n": int(in_c.sum()),
                "positives": pos,
                "negatives": neg,
                "mean_flip_chance": round(float(q[in_c, a].mean()), 4) if in_c.any() else None,
                "expected_flips": {
                    "tp_to_fn": round(tp_fn, 2),
                    "fn_to_tp": round(fn_tp, 2),
                    "fp_to_tn": round(fp_tn, 2),
                    "tn_to_fp": round(tn_fp, 2),
                },
                "fnr_change": round((tp_fn - fn_tp) / pos, 4) if pos else None,
                "fpr_change": round((tn_fp - fp_tn) / neg, 4) if neg else None,
            }
        )
    return out


def _reason(head: dict[str, Any], why: list[dict[str, Any]], s: float, model: ForecastModel) -> str:
    on_ci = model.risk_score == "predicted_ci_low"
    score = head["predicted_ci_low"] if on_ci else head["predicted_delta"]
    pred = head["predicted_delta"]
    worst_metric = max(
        EVENT_METRICS,
        key=lambda m: (
            -np.inf if score[m] is None else score[m],
            -np.inf if pred[m] is None else pred[m],
        ),
    )
    v = pred[worst_metric]
    if v is None:
        return f"forecast Δ not estimable at {s:g} → low"
    iv = head["interval"][worst_metric]
    span = f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else ""
    change = "fnr_change" if worst_metric == "fnr_gap" else "fpr_change"
    cells = [w for w in why if w[change] is not None]
    detail = ""
    if len(cells) >= 2:
        hi = max(cells, key=lambda w: w[change])
        lo = min(cells, key=lambda w: w[change])
        rate = "FNR" if worst_metric == "fnr_gap" else "FPR"
        detail = (
            f": expected flips move {rate} by {hi[change]:+.3f} in {hi['value']} vs "
            f"{lo[change]:+.3f} in {lo['value']}"
        )
    on = "forecast Δ"
    bound = head["predicted_ci_low"][worst_metric]
    if on_ci:
        on = "predicted 95% CI lower bound"
        detail += "; predicted 95% CI lower bound of the measured Δ " + (
            "n/a" if bound is None else f"{bound:+.3f}"
        )
    return (
        f"forecast Δ {worst_metric} {v:+.3f}{span} at {s:g}{detail} → {head['risk']} "
        f"({on}: high ≥ {model.risk_high:+g}, medium ≥ {model.risk_medium:+g})"
    )


# ------------------------------------------------------------------- the flip model (dense only)

FLIP_FEATURES: tuple[str, ...] = ("intercept", "margin", "toward_majority", "group_tilt")
"""Per-sample inputs of the flip model, in coefficient order (see ``flip_features``)."""

_EPS = 1e-6
_TILT_CLIP = 4.0
_MARGIN_CLIP = 12.0
FORECAST_METRICS: tuple[str, ...] = ("fnr_gap", "fpr_gap", "bias_amplification")
EVENT_METRICS: tuple[str, ...] = ("fnr_gap", "fpr_gap")
"""The gaps whose predicted CI lower bound is forecast (the benchmark's event, the risk)."""
RISK_SCORES: tuple[str, ...] = ("predicted_delta", "predicted_ci_low")
"""What a model file's risk cut-offs apply to: the forecast Δ or its predicted CI bound."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def flip_features(
    pop: Population, probs: np.ndarray, thresholds: np.ndarray, key: GroupKey
) -> np.ndarray:
    """Per-sample, per-target inputs of the flip model, shape (F, N, A) in ``FLIP_FEATURES`` order.

    With ``z = logit(p) − logit(t_a)`` (the distance to the decision threshold in logit units)
    and ``ŷ`` the dense prediction:

    * ``margin`` = min(|z|, 12): confident outputs flip less (SPEC §5.1's susceptibility, in
      logit units so that it is not saturated near 0 and 1);
    * ``toward_majority`` = 1 when ``ŷ`` is the attribute's minority value (train split), so
      a flip would move the prediction to the majority value (rare-value under-prediction);
    * ``group_tilt`` = ``d · τ_c``: ``τ_c`` is the mean, over the sample's cell ``c`` of
      ``key``, of ``z − mean(z | label)`` (how much the dense model pushes that group up or
      down beyond what its labels explain, clipped to ±4), and ``d`` = +1 when a flip would
      go 0 → 1, −1 when 1 → 0. Positive when the flip goes the way the dense model already
      leans for that group — the mark of a spurious group cue that outlasts pruning.
    """
    pred = predict_labels(probs, thresholds, pop.task).astype(bool)
    z = _logit(probs) - _logit(np.asarray(thresholds, dtype=np.float64))[None, :]
    y = pop.labels.astype(bool)
    resid = np.empty_like(z)
    for label in (False, True):
        m = y == label
        cnt = m.sum(axis=0)
        mean = np.where(cnt > 0, np.where(m, z, 0.0).sum(axis=0) / np.maximum(cnt, 1), 0.0)
        resid = np.where(m, z - mean[None, :], resid)
    tilt = np.zeros((key.n_cells, z.shape[1]))
    for c in range(key.n_cells):
        in_c = key.cells == c
        if in_c.any():
            tilt[c] = resid[in_c].mean(axis=0)
    tilt = np.clip(tilt, -_TILT_CLIP, _TILT_CLIP)
    minority_positive = np.asarray(pop.train_positive_rate) <= 0.5
    toward = np.where(minority_positive[None, :], pred, ~pred)
    d = np.where(pred, -1.0, 1.0)
    return np.stack(
        [
            np.ones_like(z),
            np.minimum(np.abs(z), _MARGIN_CLIP),
            toward.astype(np.float64),
            d * tilt[key.cells],
        ]
    )


def flip_probability(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Return the forecast chance that a sample's prediction flips: σ(Σ_k coef_k · feature_k)."""
    eta = np.tensordot(np.asarray(coef, dtype=np.float64), features, axes=(0, 0))
    return 1.0 / (1.0 + np.exp(-np.clip(eta, -30.0, 30.0)))


@dataclass(frozen=True)
class Flows:
    """Dense confusion counts and the expected flip flows of one group key, per target.

    ``counts`` (A, C, 4) are the dense (tp, fp, tn, fn) per cell (``metrics.confusion_counts``);
    ``mean`` and ``var`` (A, C, 4) are, in the same slots, the sums of ``q`` and ``q(1 − q)``
    over the samples counted there: the expected number (and Bernoulli variance) of
    TP→FN, FP→TN, TN→FP and FN→TP flips.
    """

    counts: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def expected_flows(
    pop: Population, probs: np.ndarray, thresholds: np.ndarray, key: GroupKey, q: np.ndarray
) -> Flows:
    """Per-cell dense counts and expected flips from flip chances ``q`` (N, A), via the engine."""
    pred = predict_labels(probs, thresholds, pop.task)
    y = pop.labels
    n_a = y.shape[1]

    def weighted(w: np.ndarray) -> np.ndarray:
        # The engine takes one weight per sample; q differs per target, so one call each.
        return np.stack(
            [
                M.confusion_counts(
                    y[:, a : a + 1],
                    pred[:, a : a + 1],
                    key.cells,
                    n_cells=key.n_cells,
                    weights=w[:, a],
                )[0]
                for a in range(n_a)
            ]
        )

    counts = M.confusion_counts(y, pred, key.cells, n_cells=key.n_cells)
    return Flows(counts=counts, mean=weighted(q), var=weighted(q * (1.0 - q)))


# Slots of (tp, fp, tn, fn) counts: where each flip leaves from and where it arrives.
_TP, _FP, _TN, _FN = range(4)
_FLOW_DEST = {_TP: _FN, _FN: _TP, _FP: _TN, _TN: _FP}


def expected_gap_change(
    pop: Population,
    probs: np.ndarray,
    thresholds: np.ndarray,
    key: GroupKey,
    q: np.ndarray,
    *,
    draws: int = 256,
    seed: int = 0,
    flows: Flows | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Forecast Δ of the FNR gap, FPR gap and BA per target from flip probabilities ``q``.

    Each sample's dense prediction flips with probability ``q`` (N, A), independently. Per
    cell the four flows (TP→FN, FN→TP, FP→TN, TN→FP) are sums of Bernoulli variables, drawn
    ``draws`` times from their normal approximation (mean Σq, variance Σq(1−q)); every draw
    gives moved confusion counts and so gaps and BA exactly as the measured ones are computed
    (``gap_arrays``). Because a gap is a max − min, chance flips alone widen it on average;
    the mean over draws keeps that effect, which the gap of the expected counts would miss.

    Returns
    -------
    dict
        ``{metric: {"mean": (A,), "sd": (A,), "dense": (A,), "flows": (A, C, 4)}}``; NaN
        where the metric is undefined (dense or forecast). ``flows`` holds the expected
        TP→FN, FN→TP, FP→TN, TN→FP flips per cell, in that order.
    """
    fl = flows if flows is not None else expected_flows(pop, probs, thresholds, key, q)
    n_a, c = fl.counts.shape[:2]
    rng = np.random.default_rng(seed)
    order = (_TP, _FN, _FP, _TN)  # report order: tp→fn, fn→tp, fp→tn, tn→fp
    mu = fl.mean[..., order]
    f = mu[None] + np.sqrt(fl.var[..., order])[None] * rng.standard_normal((draws, n_a, c, 4))
    # A flow cannot exceed the count it leaves from, nor be negative.
    f = np.clip(f, 0.0, fl.counts[..., order][None])
    moved = np.zeros((draws, n_a, c, 5))
    moved[..., :4] = fl.counts[None]
    for i, src in enumerate(order):
        moved[..., src] -= f[..., i]
        moved[..., _FLOW_DEST[src]] += f[..., i]
    dense = np.concatenate([fl.counts, np.zeros((n_a, c, 1))], axis=-1)
    g0 = gap_arrays(key, dense)
    g1 = gap_arrays(key, moved)
    out = {}
    for metric in FORECAST_METRICS:
        d = g1[metric] - g0[metric][None]
        fin = np.isfinite(d)
        k = fin.sum(axis=0)
        ok = k >= 0.5 * draws  # defined in most draws (and on the dense model)
        s1 = np.where(fin, d, 0.0).sum(axis=0)
        s2 = np.where(fin, d * d, 0.0).sum(axis=0)
        safe_k = np.maximum(k, 1)
        mean = np.where(ok, s1 / safe_k, np.nan)
        sd = np.where(ok, np.sqrt(np.maximum(s2 / safe_k - (s1 / safe_k) ** 2, 0.0)), np.nan)
        out[metric] = {"mean": mean, "sd": sd, "dense": g0[metric], "flows": mu}
    return out


#: Standard-normal quantiles on an even grid: deterministic stand-in replicates.
_GRID = NormalDist().inv_cdf
_Z = np.array([_GRID((i + 0.5) / 2000) for i in range(2000)])
_EVENT_RATE = {"fnr_gap": ("fnr", _FN, _TP), "fpr_gap": ("fpr", _FP, _TN)}


def predicted_ci_low(key: GroupKey, flows: Flows) -> dict[str, np.ndarray]:
    """Forecast of the measured Δ's 95% CI lower bound, per gap metric and target, shape (A,).

    The measured interval (``validate.PairedBootstrap``) is built from the dense rate ``x_c``
    of each cell and its paired change ``d_c``: the projection interval for a binary key,
    the box bound for more cells. Here the same functions get dense-only stand-ins: ``x_c``
    and its binomial standard error, and the forecast change
    ``d_c = (E[flips into the error] − E[flips out of it]) / n_c`` with the paired standard
    error ``√((E[flips in] + E[flips out]) / n_c − d_c²) / √n_c`` (``n_c`` = the cell's
    positives for the FNR, negatives for the FPR), their replicates placed on normal
    quantiles. The bound is what the gate's evidence would look like if pruning moved the
    cells as forecast: it is low when the forecast change is small *or* the cells are too
    small to show it. NaN where fewer than two cells are valid for the rate.
    """
    out = {}
    n_a = flows.counts.shape[0]
    for metric, (rate, err, ok) in _EVENT_RATE.items():
        den = flows.counts[..., err] + flows.counts[..., ok]  # (A, C)
        into, outof = flows.mean[..., ok], flows.mean[..., err]
        valid = key.valid_for(rate)
        lows = np.full(n_a, np.nan)
        for a in range(n_a):
            keep = valid[a] & (den[a] > 0)
            if keep.sum() < 2:
                continue
            n = den[a, keep]
            x = flows.counts[a, keep, err] / n
            d = (into[a, keep] - outof[a, keep]) / n
            se_x = np.sqrt(x * (1.0 - x) / n)
            se_d = np.sqrt(np.maximum((into[a, keep] + outof[a, keep]) / n - d * d, 0.0) / n)
            if keep.sum() == 2 and key.n_cells == 2:
                sx, sd = np.hypot(*se_x), np.hypot(*se_d)
                xs, ds = x[1] - x[0], d[1] - d[0]
                lo, _ = M.abs_change_projection_ci(xs, ds, xs + sx * _Z, ds + sd * _Z)
            else:
                bx = x[None] + se_x[None] * _Z[:, None]
                bd = d[None] + se_d[None] * _Z[:, None]
                lo, _ = M.range_change_box_ci(x, d, bx, bd)
            lows[a] = float(lo)
        out[metric] = lows
    return out


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
