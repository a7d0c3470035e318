"""Fit the forecast's coefficients on the design part of the corpus and write the shipped JSON.

``uv run python benchmarks/forecast/fit.py`` reads the built cases of the *design* part only
(``corpus.HELDOUT`` is never opened here) and writes ``audit/forecast_model.json``:

* the flip model per (recovery, sparsity): a logistic regression of "this sample's dense
  prediction flipped after pruning" on the dense-only inputs of ``audit.forecast.flip_features``,
  over every sample × target × single protected attribute of the design cases;
* the forecast interval per (metric, sparsity): quantiles of the design residuals
  (measured Δ − forecast Δ), taken out of fold (each design case forecast by coefficients
  fitted without it), so that the interval reflects forecasting an unseen case;
* the risk thresholds on the predicted 95% CI lower bound of the measured Δ
  (``audit.forecast.predicted_ci_low``), picked on the design part (``_risk_thresholds``).

The benchmark figures shipped with the coefficients are added by ``score.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import corpus  # noqa: E402
import numpy as np  # noqa: E402

from audit import forecast as F  # noqa: E402

MODEL_PATH = Path(__file__).resolve().parents[2] / "audit" / "forecast_model.json"
INTERVAL_LEVEL = 0.9  # nominal two-sided coverage of the shipped interval
RECOVERIES = ("bn", "finetune")


_FLIP_ROWS: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


def flip_rows(case: corpus.CaseData, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(X (M, F), flipped (M,)) of one case at one audited level, single attributes only."""
    k = (case.spec.name, level)
    if k not in _FLIP_ROWS:
        _FLIP_ROWS[k] = _flip_rows(case, level)
    return _FLIP_ROWS[k]


def _flip_rows(case: corpus.CaseData, level: int) -> tuple[np.ndarray, np.ndarray]:
    thr = case.thresholds["default"]
    pop = case.pop
    dense = F.predict_labels(case.dense_probs, thr, pop.task)
    pruned = F.predict_labels(case.pruned_probs[level], thr, pop.task)
    flipped = (dense != pruned).astype(np.float64)
    xs, ys = [], []
    for key in pop.keys:
        if "×" in key.name:
            continue
        feats = F.flip_features(pop, case.dense_probs, thr, key)  # (F, N, A)
        xs.append(feats.reshape(feats.shape[0], -1).T)
        ys.append(flipped.reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> np.ndarray:
    """Logistic regression by Newton's method (IRLS) with a tiny ridge on the non-intercept terms.

    Four features and ~10⁵ rows: a dozen Newton steps, each one (F × F) solve.
    """
    w = np.zeros(x.shape[1])
    ridge = np.full(x.shape[1], l2 * len(y))
    ridge[0] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        eta = np.clip(x @ w, -30, 30)
        p = 1.0 / (1.0 + np.exp(-eta))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(ridge)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def fit_flip_model(cases: list[corpus.CaseData]) -> dict[str, dict[str, list[float]]]:
    """Coefficients per recovery and audited sparsity ({recovery: {str(s): coef}})."""
    out: dict[str, dict[str, list[float]]] = {}
    for rec in RECOVERIES:
        sub = [c for c in cases if c.spec.recovery == rec]
        if not sub:
            continue
        out[rec] = {}
        for li, s in enumerate(corpus.SPARSITIES):
            parts = [flip_rows(c, c.sparsities.index(s)) for c in sub]
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            out[rec][repr(s)] = [round(float(v), 5) for v in fit_logistic(x, y)]
            del li
    return out


def _risk_thresholds(score: np.ndarray, event: np.ndarray) -> tuple[float, float]:
    """(medium, high) cut-offs on a pair's larger predicted CI lower bound (FNR/FPR gap).

    Events are rare (a few per metric and sparsity once the gate's intervals are valid), so
    the levels are set by what they are to mean, on the design pairs' out-of-fold scores at
    every audited sparsity pooled, on a grid of odd multiples of 0.005 (no cut-off sits on a
    bound of exactly 0, see below):

    * ``medium`` is the largest cut-off below which (at least 20 pairs) the event rate is at
      most a quarter of the design base rate: ``low`` means an event is rare;
    * ``high`` needs a *positive* predicted bound — the forecast expects the measured interval
      to rule out "no widening" — and is the smallest positive cut-off at or above which (at
      least 20 pairs) the event rate is at least 1.5 times the base rate; failing that (too
      few pairs), the smallest positive one, 0.005.

    The bound is exactly 0 for every pair whose dense rate is 0 (or 1) in both cells with no
    forecast move (about one design pair in eight). Those pairs say nothing about a widening,
    and on the design part they have the medium level's event rate (5 of 48), not a high one:
    they stay ``medium``.
    """
    base = float(event.mean())
    grid = np.round(np.arange(-0.305, 0.1, 0.01), 3)
    medium = None
    for t in grid[grid < 0]:
        below = score < t
        if below.sum() >= 20 and event[below].mean() <= base / 4:
            medium = float(t)
    if medium is None:
        medium = float(grid[grid < 0][-1])
    positive = grid[grid > 0]
    high = float(positive[0])
    for t in positive:
        above = score >= t
        if above.sum() >= 20 and event[above].mean() >= 1.5 * base:
            high = float(t)
            break
    return medium, high


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    args = ap.parse_args(argv)
    design = [corpus.load_case(s) for s in corpus.built_cases() if s.name not in corpus.HELDOUT]
    print(f"design cases: {len(design)}", flush=True)
    coef = fit_flip_model(design)
    model = {
        "version": 3,
        "features": list(F.FLIP_FEATURES),
        "sparsities": list(corpus.SPARSITIES),
        "flip_coef": coef,
        "fitted_on": {
            "corpus_version": corpus.CORPUS_VERSION,
            "design_cases": sorted(c.spec.name for c in design),
            "n_design_cases": len(design),
        },
    }
    # Out-of-fold residuals: each design case forecast with coefficients fitted without it.
    import score  # noqa: PLC0415 (sibling script)

    rows = []
    for i, case in enumerate(design):
        rest = design[:i] + design[i + 1 :]
        m = dict(model, flip_coef=fit_flip_model(rest), interval=None, risk=None)
        rows += score.case_rows(case, F.ForecastModel.from_dict(m))
        print(f"  out-of-fold {i + 1}/{len(design)}", flush=True)
    interval: dict[str, dict[str, list[float]]] = {}
    lo_q, hi_q = (1 - INTERVAL_LEVEL) / 2, 1 - (1 - INTERVAL_LEVEL) / 2
    for metric in F.FORECAST_METRICS:
        interval[metric] = {}
        for s in corpus.SPARSITIES:
            r = np.array(
                [
                    row["measured"][metric]["value"] - row["forecast"]["fitted"][metric]
                    for row in rows
                    if row["sparsity"] == s
                    and row["measured"][metric]["value"] is not None
                    and row["forecast"]["fitted"][metric] is not None
                ]
            )
            interval[metric][repr(s)] = [
                round(float(np.quantile(r, lo_q)), 4),
                round(float(np.quantile(r, hi_q)), 4),
            ]
    scored = [
        row
        for row in rows
        if row["pair_score"] is not None
        and np.isfinite(row["pair_score"])
        and row["pair_event"] is not None
    ]
    score_v = np.array([row["pair_score"] for row in scored])
    event_v = np.array([row["pair_event"] for row in scored], dtype=bool)
    medium, high = _risk_thresholds(score_v, event_v)
    model["interval"] = {"level": INTERVAL_LEVEL, "residual_quantiles": interval}
    model["risk"] = {
        "score": "predicted_ci_low",
        "medium": medium,
        "high": high,
        "design_base_rate": round(float(event_v.mean()), 4),
    }
    args.out.write_text(json.dumps(model, indent=1) + "\n")
    print(json.dumps({k: model[k] for k in ("flip_coef", "interval", "risk")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
