"""Scoring a forecast rule on the corpus's rows (pure functions; no files, no models).

A *row* is one (case, target, group, sparsity) with, per metric, the measured Δ and its 95% CI
and a forecast Δ per rule. ``score_rows`` returns every figure of the benchmark:

* Spearman rank correlation of forecast Δ vs measured Δ, per metric and sparsity;
* AUROC of forecast Δ for the *event* "measured Δ's CI lower bound > ``EVENT_LIMIT``", per
  metric and sparsity (the acceptance's event), and, as a secondary figure with many more
  events, for the *point event* "measured Δ > ``EVENT_LIMIT``";
* both with 95% case-level bootstrap intervals (cases resampled with replacement, all rows of
  a drawn case kept together, ``n_boot`` replicates, seeded);
* risk levels: per level, pairs and the share with an event (on FNR or FPR gap);
* planted vs unplanted: AUROC of a per-pair score for "this is the planted pair", and how
  often the planted pair ranks first in its case;
* interval coverage: share of rows whose measured Δ lies in the forecast interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from audit.metrics import auroc

EVENT_LIMIT = 0.02
METRICS = ("fnr_gap", "fpr_gap", "bias_amplification")
LEVELS = ("low", "medium", "high")


def is_event(measured: dict[str, Any], limit: float = EVENT_LIMIT) -> bool | None:
    """True when the measured Δ's CI lower bound exceeds ``limit``; None when undefined."""
    if measured.get("value") is None or measured.get("ci") is None:
        return None
    return bool(measured["ci"][0] > limit)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (ties averaged); None with fewer than 3 points or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def event_auroc(score: Sequence[float], event: Sequence[bool]) -> float | None:
    """AUROC of ``score`` for ``event``; None without both classes."""
    e = np.asarray(event, dtype=bool)
    if e.all() or not e.any():
        return None
    v = auroc(np.asarray(score, dtype=float), e)
    return float(v) if np.isfinite(v) else None


def is_point_event(measured: dict[str, Any], limit: float = EVENT_LIMIT) -> bool | None:
    """True when the measured Δ itself exceeds ``limit``; None when undefined."""
    if measured.get("value") is None:
        return None
    return bool(measured["value"] > limit)


Item = tuple[str, float, float, bool, bool]  # case, forecast, measured, event, point event


def _pairs(rows: list[dict[str, Any]], metric: str, rule: str, s: float) -> list[Item]:
    out = []
    for r in rows:
        if r["sparsity"] != s:
            continue
        f = r["forecast"][rule].get(metric)
        m = r["measured"][metric]
        ev = is_event(m)
        if f is None or ev is None:
            continue
        out.append((r["case"], float(f), float(m["value"]), ev, bool(is_point_event(m))))
    return out


def case_bootstrap(
    items: list[Item],
    stat: Callable[[list[Item]], float | None],
    *,
    n_boot: int,
    seed: int,
) -> list[float] | None:
    """95% percentile interval of ``stat`` over case-level bootstrap resamples of ``items``."""
    cases = sorted({it[0] for it in items})
    by_case: dict[str, list] = {c: [] for c in cases}
    for it in items:
        by_case[it[0]].append(it)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(cases), len(cases))
        sample = [it for k in draw for it in by_case[cases[k]]]
        v = stat(sample)
        if v is not None:
            vals.append(v)
    if len(vals) < n_boot // 2:
        return None
    return [float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))]


def _rho(items):
    return spearman([i[1] for i in items], [i[2] for i in items])


def _auc(items):
    return event_auroc([i[1] for i in items], [i[3] for i in items])


def _auc_point(items):
    return event_auroc([i[1] for i in items], [i[4] for i in items])


def score_rule(
    rows: list[dict[str, Any]],
    rule: str,
    sparsities: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman and event AUROC (with case-bootstrap intervals) per metric and sparsity."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        out[metric] = {}
        for s in sparsities:
            items = _pairs(rows, metric, rule, s)
            if not items:
                continue
            out[metric][repr(s)] = {
                "n": len(items),
                "events": int(sum(i[3] for i in items)),
                "spearman": _rho(items),
                "spearman_ci": case_bootstrap(items, _rho, n_boot=n_boot, seed=seed),
                "auroc": _auc(items),
                "auroc_ci": case_bootstrap(items, _auc, n_boot=n_boot, seed=seed),
                "point_events": int(sum(i[4] for i in items)),
                "auroc_point": _auc_point(items),
                "auroc_point_ci": case_bootstrap(items, _auc_point, n_boot=n_boot, seed=seed),
            }
    return out


def pair_event(row: dict[str, Any]) -> bool | None:
    """Event on the FNR or the FPR gap; None when neither is defined."""
    evs = [is_event(row["measured"][m]) for m in ("fnr_gap", "fpr_gap")]
    evs = [e for e in evs if e is not None]
    return any(evs) if evs else None


def risk_table(rows: list[dict[str, Any]], rule: str, sparsities: Sequence[float]) -> dict:
    """Per sparsity and risk level: pairs, pairs with an event, event rate."""
    out: dict[str, Any] = {}
    for s in sparsities:
        table = {}
        for level in LEVELS:
            evs = [
                pair_event(r)
                for r in rows
                if r["sparsity"] == s and r["risk"][rule] == level and pair_event(r) is not None
            ]
            table[level] = {
                "pairs": len(evs),
                "events": int(sum(evs)),
                "event_rate": float(np.mean(evs)) if evs else None,
            }
        out[repr(s)] = table
    return out


def planted_separation(
    rows: list[dict[str, Any]], score: Callable[[dict[str, Any]], float | None], s: float
) -> dict[str, Any]:
    """AUROC of ``score`` for planted vs unplanted pairs at sparsity ``s``; first-rank count.

    Pairs that share only the planted attribute through an intersection are left out (they
    are neither clean positives nor clean negatives).
    """
    items = [
        (r["case"], score(r), r["planted"])
        for r in rows
        if r["sparsity"] == s and r["planted"] is not None and score(r) is not None
    ]
    if not items:
        return {"auroc": None, "planted": 0, "ranked_first": 0}
    a = event_auroc([i[1] for i in items], [i[2] for i in items])
    first = 0
    n_planted = 0
    for case in {i[0] for i in items}:
        mine = [i for i in items if i[0] == case]
        if not any(i[2] for i in mine):
            continue
        n_planted += 1
        best = max(mine, key=lambda i: i[1])
        first += bool(best[2])
    return {"auroc": a, "planted": n_planted, "ranked_first": first}


def coverage(rows: list[dict[str, Any]], sparsities: Sequence[float]) -> dict[str, Any]:
    """Share of rows whose measured Δ lies inside the forecast interval, per metric/sparsity."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        out[metric] = {}
        for s in sparsities:
            hits = []
            for r in rows:
                iv = r["interval"].get(metric)
                m = r["measured"][metric]["value"]
                if r["sparsity"] != s or iv is None or m is None:
                    continue
                hits.append(iv[0] <= m <= iv[1])
            out[metric][repr(s)] = {
                "n": len(hits),
                "coverage": float(np.mean(hits)) if hits else None,
            }
    return out
