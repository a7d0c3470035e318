"""Score the shipped forecast and today's rule on the corpus (``score.py``; see README).

For every built case the measured Δs and their CIs are recomputed from the stored per-sample
predictions with the tool's own ``validate.PairedBootstrap`` (so a change of the interval
method is picked up by re-scoring, without re-pruning), the forecast is recomputed from the
dense probabilities with ``audit.forecast.forecast`` (the shipped coefficients) and with
today's rule (``rules.py``). Writes, next to this file:

* ``corpus.csv`` — one row per (case, target, group, sparsity): part, planted flag, dense
  features, measured Δ/CI per metric, both forecasts (a few hundred KB at most);
* ``results.json`` / ``results.md`` — every figure, design and held-out part side by side;

and adds the held-out figures of the rule in use to ``audit/forecast_model.json``
(``benchmark``), which every report shows in its forecast section. ``--design-only`` never
opens the held-out part (use it while designing).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import corpus  # noqa: E402
import numpy as np  # noqa: E402
import rules  # noqa: E402
import scoring  # noqa: E402

from audit import criteria  # noqa: E402
from audit import forecast as F  # noqa: E402
from audit import validate as V  # noqa: E402

HERE = Path(__file__).parent
MODEL_PATH = HERE.parents[1] / "audit" / "forecast_model.json"
RULES = ("fitted", "fitted_ci_low", "today")
"""Scores put side by side: the fitted rule's forecast Δ, its predicted CI lower bound (the
score its risk levels use) and today's (previous) rule."""


_MEASURED: dict[str, list[dict[str, Any]]] = {}


def _measured(case: corpus.CaseData) -> list[dict[str, Any]]:
    """Δ with CI per level, recomputed once per case (the bootstrap is the costly part)."""
    if case.spec.name not in _MEASURED:
        _MEASURED[case.spec.name] = _measure(case)
    return _MEASURED[case.spec.name]


def _measure(case: corpus.CaseData) -> list[dict[str, Any]]:
    boot = V.PairedBootstrap(
        case.pop,
        case.dense_probs,
        case.thresholds,
        n_resamples=int(case.report["inputs"]["bootstrap"]),
        seed=int(case.report["inputs"]["seed"]),
    )
    return [boot.deltas(case.pruned_probs[i])["default"] for i in range(len(case.sparsities))]


def case_rows(case: corpus.CaseData, model: F.ForecastModel) -> list[dict[str, Any]]:
    """Rows of one case: measured Δ and CI, the fitted forecast and today's rule per pair."""
    pop, thr = case.pop, case.thresholds["default"]
    dense = criteria.model_metrics(pop, case.dense_probs, case.thresholds)
    inter = dense["interdependence"]
    fc = F.forecast(
        pop,
        case.dense_probs,
        thr,
        inter,
        sparsities=case.sparsities,
        target_sparsity=0.9,
        recovery=case.spec.recovery,
        model=model,
    )
    today = rules.todays_forecast(pop, case.dense_probs, thr, inter)
    measured = _measured(case)
    planted = case.spec.planted
    rows = []
    for pair in fc["pairs"]:
        t, g = pair["target"], pair["group"]
        if planted is None:
            is_planted: bool | None = False
        elif (t, g) == planted:
            is_planted = True
        elif planted[1] in g.split("×") and "×" in g:
            is_planted = None  # an intersection holding the planted attribute
        else:
            is_planted = False
        td = today[(t, g)]
        for b in pair["by_sparsity"]:
            s = b["sparsity"]
            if s not in case.sparsities:
                continue
            d = measured[case.sparsities.index(s)][t]["by_group"][g]
            m = {k: {"value": d[k]["value"], "ci": d[k]["ci"]} for k in scoring.METRICS}
            pred = b["predicted_delta"]
            rows.append(
                {
                    "case": case.spec.name,
                    "part": "heldout" if case.heldout else "design",
                    "source": case.spec.source,
                    "arch": case.spec.arch,
                    "recovery": case.spec.recovery,
                    "strength": case.spec.strength,
                    "target": t,
                    "group": g,
                    "planted": is_planted,
                    "sparsity": s,
                    "measured": m,
                    "forecast": {
                        "fitted": dict(pred),
                        "fitted_ci_low": dict(b["predicted_ci_low"]),
                        "today": {"fnr_gap": td["fnr_gap"], "fpr_gap": td["fpr_gap"]},
                    },
                    "interval": b["interval"],
                    "risk": {"fitted": b["risk"], "fitted_ci_low": b["risk"], "today": td["risk"]},
                    "dense": {
                        "fnr_gap": pair["dense_gap"]["fnr_gap"],
                        "fpr_gap": pair["dense_gap"]["fpr_gap"],
                        "bias_amplification": pair["dense_bias_amplification"],
                        "interdependence_excess": pair["interdependence_excess"],
                    },
                    "pair_score": F._worst(b["predicted_ci_low"]),
                    "pair_event": scoring.pair_event({"measured": m}),
                }
            )
    return rows


def _susceptibility(case: corpus.CaseData) -> dict[str, float | None]:
    """AUROC of the susceptibility ranking for 'any flip', per audited level (from the report)."""
    out = {}
    for lv in case.report["validation"]["levels"]:
        out[repr(float(lv["sparsity"]))] = lv["ranking_quality"]["any"]["auroc"]
    return out


def score_part(rows: list[dict[str, Any]], susc: list[dict[str, float | None]]) -> dict[str, Any]:
    sp = corpus.SPARSITIES
    out: dict[str, Any] = {
        "cases": len({r["case"] for r in rows}),
        "pairs": len({(r["case"], r["target"], r["group"]) for r in rows}),
    }
    for rule in RULES:
        out[rule] = {
            "by_metric": scoring.score_rule(rows, rule, sp),
            "risk_levels": scoring.risk_table(rows, rule, sp),
            "planted_vs_unplanted": {
                repr(s): scoring.planted_separation(
                    rows,
                    (lambda r, rule=rule: _pair_score(r, rule)),
                    s,
                )
                for s in sp
            },
        }
    out["fitted"]["interval_coverage"] = scoring.coverage(rows, sp)
    out["measured_ba_planted_vs_unplanted"] = {
        repr(s): scoring.planted_separation(
            rows, lambda r: r["measured"]["bias_amplification"]["value"], s
        )
        for s in sp
    }
    out["susceptibility_auroc"] = {repr(s): _summary([d.get(repr(s)) for d in susc]) for s in sp}
    return out


def _pair_score(r: dict[str, Any], rule: str) -> float | None:
    """Per-pair planted score: forecast Δ BA for the fitted rule, else the larger gap Δ."""
    f = r["forecast"][rule]
    if rule == "fitted" and f.get("bias_amplification") is not None:
        return f["bias_amplification"]
    vals = [f[m] for m in ("fnr_gap", "fpr_gap") if f.get(m) is not None]
    return max(vals) if vals else None


def _summary(vals: list[float | None]) -> dict[str, Any]:
    v = np.array([x for x in vals if x is not None], dtype=float)
    if not len(v):
        return {"n": 0}
    return {
        "n": int(len(v)),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    cols = [
        "case",
        "part",
        "source",
        "arch",
        "recovery",
        "strength",
        "target",
        "group",
        "planted",
        "sparsity",
    ]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        head = list(cols)
        for m in scoring.METRICS:
            head += [
                f"measured_{m}",
                f"measured_{m}_lo",
                f"measured_{m}_hi",
                f"fitted_{m}",
                f"fitted_{m}_lo",
                f"fitted_{m}_hi",
            ]
        head += [
            "today_fnr_gap",
            "today_fpr_gap",
            "risk_fitted",
            "risk_today",
            "dense_fnr_gap",
            "dense_fpr_gap",
            "dense_bias_amplification",
            "dense_interdependence_excess",
        ]
        w.writerow(head)

        def f(x):
            return "" if x is None else (f"{x:.5g}" if isinstance(x, float) else x)

        for r in rows:
            line = [f(r[c]) for c in cols]
            for m in scoring.METRICS:
                meas = r["measured"][m]
                ci = meas["ci"] or [None, None]
                iv = r["interval"].get(m) or [None, None]
                line += [
                    f(meas["value"]),
                    f(ci[0]),
                    f(ci[1]),
                    f(r["forecast"]["fitted"].get(m)),
                    f(iv[0]),
                    f(iv[1]),
                ]
            line += [
                f(r["forecast"]["today"]["fnr_gap"]),
                f(r["forecast"]["today"]["fpr_gap"]),
                r["risk"]["fitted"],
                r["risk"]["today"],
            ]
            line += [
                f(r["dense"][k])
                for k in ("fnr_gap", "fpr_gap", "bias_amplification", "interdependence_excess")
            ]
            w.writerow(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design-only", action="store_true", help="never open the held-out part")
    ap.add_argument("--out", type=Path, default=HERE, help="where results are written")
    ap.add_argument(
        "--no-ship",
        action="store_true",
        help="do not write the figures into audit/forecast_model.json",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    raw = json.loads(MODEL_PATH.read_text())
    model = F.ForecastModel.from_dict(raw)
    parts: dict[str, list] = {"design": [], "heldout": []}
    susc: dict[str, list] = {"design": [], "heldout": []}
    for spec in corpus.built_cases():
        part = "heldout" if spec.name in corpus.HELDOUT else "design"
        if part == "heldout" and args.design_only:
            continue
        case = corpus.load_case(spec)
        parts[part] += case_rows(case, model)
        susc[part].append(_susceptibility(case))
    results = {
        "corpus_version": corpus.CORPUS_VERSION,
        "event": f"measured Δ's 95% CI lower bound > {scoring.EVENT_LIMIT}",
        "point_event": f"measured Δ > {scoring.EVENT_LIMIT} (secondary)",
        "model_fitted_on": raw.get("fitted_on"),
        "parts": {p: score_part(rows, susc[p]) for p, rows in parts.items() if rows},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(parts["design"] + parts["heldout"], args.out / "corpus.csv")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render_md(results))
    if not args.no_ship and "heldout" in results["parts"]:
        raw["benchmark"] = shipped_summary(results)
        MODEL_PATH.write_text(json.dumps(raw, indent=1) + "\n")
    print(render_md(results))
    print(f"scored in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def shipped_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The held-out figures every report quotes for the rule in use.

    Per metric and sparsity: Spearman of the forecast Δ (with its case-bootstrap interval),
    the event count and the AUROC of the score the risk levels use (the predicted CI lower
    bound for the FNR/FPR gaps, the forecast Δ for BA, which has no such bound), with its
    interval; the forecast Δ's own AUROC; the point-event count and AUROC (secondary).
    """
    h = results["parts"]["heldout"]
    fit, ci_low = h["fitted"]["by_metric"], h["fitted_ci_low"]["by_metric"]
    by: dict[str, Any] = {}
    for m, by_s in fit.items():
        by[m] = {}
        for s, v in by_s.items():
            risk = ci_low.get(m, {}).get(s) or v
            by[m][s] = {
                "n": v["n"],
                "events": v["events"],
                "spearman": v["spearman"],
                "spearman_ci": v["spearman_ci"],
                "auroc": risk["auroc"],
                "auroc_ci": risk["auroc_ci"],
                "auroc_score": "predicted_ci_low" if m in ci_low and ci_low[m] else "forecast Δ",
                "auroc_delta": v["auroc"],
                "point_events": v["point_events"],
                "auroc_point": v["auroc_point"],
            }
    return {
        "corpus_version": results["corpus_version"],
        "part": "heldout",
        "cases": h["cases"],
        "pairs": h["pairs"],
        "event": results["event"],
        "point_event": results["point_event"],
        "by_metric": by,
        "risk_event_rates": h["fitted"]["risk_levels"],
        "interval_coverage": {
            m: {s: v["coverage"] for s, v in cov.items()}
            for m, cov in h["fitted"]["interval_coverage"].items()
        },
        "todays_rule": {
            m: {
                s: {k: v[k] for k in ("spearman", "auroc", "auroc_ci", "auroc_point")}
                for s, v in by_s.items()
            }
            for m, by_s in h["today"]["by_metric"].items()
        },
    }


def _f(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _ci(c: list[float] | None) -> str:
    return "" if c is None else f" [{c[0]:.2f}, {c[1]:.2f}]"


def render_md(results: dict[str, Any]) -> str:
    lines = [
        f"# Forecast benchmark results (corpus v{results['corpus_version']})",
        "",
        f"Event: {results['event']}; point event: {results['point_event']}. "
        "Intervals: 95% case-level bootstrap. *CI-bound* is the fitted rule's predicted "
        "95% CI lower bound (the score its risk levels use); *Δ* its forecast Δ.",
        "",
    ]
    for part, res in results["parts"].items():
        lines += [f"## {part} part: {res['cases']} cases, {res['pairs']} pairs", ""]
        lines += [
            "| metric | sparsity | events / rows | Spearman (fitted Δ) | Spearman (today) "
            "| AUROC (fitted CI-bound) | AUROC (fitted Δ) | AUROC (today) "
            "| point events | point AUROC (fitted Δ / today) | interval coverage |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in scoring.METRICS:
            for s in map(repr, corpus.SPARSITIES):
                a = res["fitted"]["by_metric"].get(m, {}).get(s)
                c = res["fitted_ci_low"]["by_metric"].get(m, {}).get(s)
                b = res["today"]["by_metric"].get(m, {}).get(s)
                cov = res["fitted"]["interval_coverage"][m].get(s, {}).get("coverage")
                if a is None:
                    continue
                lines.append(
                    f"| {m} | {s} | {a['events']} / {a['n']} "
                    f"| {_f(a['spearman'])}{_ci(a['spearman_ci'])} "
                    f"| {_f(b['spearman']) + _ci(b['spearman_ci']) if b else 'no forecast'} "
                    f"| {_f(c['auroc']) + _ci(c['auroc_ci']) if c else 'no bound'} "
                    f"| {_f(a['auroc'])}{_ci(a['auroc_ci'])} "
                    f"| {_f(b['auroc']) + _ci(b['auroc_ci']) if b else 'no forecast'} "
                    f"| {a['point_events']} "
                    f"| {_f(a['auroc_point'])} / {_f(b['auroc_point']) if b else '—'} "
                    f"| {_f(cov)} |"
                )
        lines += [
            "",
            "Risk levels (event on the FNR or FPR gap), pairs and event rate:",
            "",
            "| rule | sparsity | low | medium | high |",
            "|---|---:|---:|---:|---:|",
        ]
        for rule in ("fitted", "today"):
            for s, t in res[rule]["risk_levels"].items():
                cells = [f"{t[lv]['pairs']} ({_f(t[lv]['event_rate'])})" for lv in scoring.LEVELS]
                lines.append(f"| {rule} | {s} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Planted vs unplanted pairs (AUROC; planted pair ranked first in its case):",
            "",
            "| score | sparsity | AUROC | ranked first |",
            "|---|---:|---:|---:|",
        ]
        for rule in RULES:
            for s, v in res[rule]["planted_vs_unplanted"].items():
                lines.append(
                    f"| {rule} forecast | {s} | {_f(v['auroc'])} "
                    f"| {v['ranked_first']} of {v['planted']} |"
                )
        for s, v in res["measured_ba_planted_vs_unplanted"].items():
            lines.append(
                f"| measured Δ BA | {s} | {_f(v['auroc'])} "
                f"| {v['ranked_first']} of {v['planted']} |"
            )
        lines += [
            "",
            "Susceptibility ranking, AUROC for 'any prediction flipped' per case (median, range):",
            "",
        ]
        for s, v in res["susceptibility_auroc"].items():
            if v.get("n"):
                lines.append(
                    f"- {s}: {_f(v['median'])} ({_f(v['min'])}–{_f(v['max'])}), {v['n']} cases"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
