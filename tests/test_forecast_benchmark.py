"""The forecast benchmark's scorer on a hand-checked fixture, and one tiny real case."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "forecast"
sys.path.insert(0, str(BENCH))

import scoring  # noqa: E402


def _row(
    case: str,
    forecast: float,
    value: float,
    lo: float,
    *,
    risk: str = "low",
    planted: bool | None = False,
    s: float = 0.9,
) -> dict:
    m = {"value": value, "ci": [lo, value + 0.05]}
    return {
        "case": case,
        "sparsity": s,
        "planted": planted,
        "measured": {
            "fnr_gap": m,
            "fpr_gap": {"value": None, "ci": None},
            "bias_amplification": {"value": value, "ci": None},
        },
        "forecast": {"r": {"fnr_gap": forecast}},
        "risk": {"r": risk},
        "interval": {"fnr_gap": [forecast - 0.05, forecast + 0.05]},
    }


# forecast   0.10   0.05   0.00  -0.02
# measured   0.20   0.01   0.03  -0.05   (ranks 4, 2, 3, 1)
# CI low     0.05  -0.01   0.025 -0.10   → events: yes, no, yes, no
ROWS = [
    _row("a", 0.10, 0.20, 0.05, risk="high", planted=True),
    _row("a", 0.05, 0.01, -0.01, risk="medium"),
    _row("b", 0.00, 0.03, 0.025, risk="low", planted=None),
    _row("b", -0.02, -0.05, -0.10, risk="low"),
]


def test_event_definition() -> None:
    assert scoring.is_event({"value": 0.1, "ci": [0.021, 0.2]}) is True
    assert scoring.is_event({"value": 0.1, "ci": [0.02, 0.2]}) is False  # strictly above
    assert scoring.is_event({"value": None, "ci": None}) is None
    assert scoring.is_event({"value": 0.1, "ci": None}) is None


def test_spearman_and_auroc_hand_checked() -> None:
    out = scoring.score_rule(ROWS, "r", (0.9,), n_boot=200, seed=0)["fnr_gap"]["0.9"]
    # ranks (4, 3, 2, 1) vs (4, 2, 3, 1): Σd² = 2 → ρ = 1 − 6·2 / (4·15) = 0.8
    assert out["spearman"] == pytest.approx(0.8)
    # events score {.10, .00}, non-events {.05, −.02}: 3 of 4 ordered pairs right
    assert out["auroc"] == pytest.approx(0.75)
    assert out["n"] == 4 and out["events"] == 2
    # the case bootstrap's interval holds resampled values of the statistic
    lo, hi = out["auroc_ci"]
    assert 0.0 <= lo <= hi <= 1.0
    # no forecast for the FPR gap in these rows: nothing is scored, nothing invented
    assert scoring.score_rule(ROWS, "r", (0.9,), n_boot=10)["fpr_gap"] == {}


def test_point_event_is_the_secondary_figure() -> None:
    assert scoring.is_point_event({"value": 0.021, "ci": [-0.5, 0.5]}) is True
    assert scoring.is_point_event({"value": 0.02, "ci": None}) is False
    assert scoring.is_point_event({"value": None, "ci": None}) is None
    # a wide CI around a large Δ: a point event without a CI event
    rows = ROWS + [_row("c", 0.2, 0.04, -0.01)]
    out = scoring.score_rule(rows, "r", (0.9,), n_boot=50, seed=0)["fnr_gap"]["0.9"]
    assert (out["events"], out["point_events"]) == (2, 3)
    # point events score {.10, .00, .20}, others {.05, −.02}: 5 of 6 ordered pairs right
    assert out["auroc_point"] == pytest.approx(5 / 6)


def test_case_bootstrap_keeps_cases_together() -> None:
    # With one case only, every resample is that case: a degenerate interval at its value.
    one = [("a", 0.1, 0.2, True, True), ("a", 0.0, 0.0, False, False)]
    ci = scoring.case_bootstrap(one, lambda it: float(len(it)), n_boot=50, seed=1)
    assert ci == [2.0, 2.0]


def test_risk_table_and_coverage() -> None:
    t = scoring.risk_table(ROWS, "r", (0.9,))["0.9"]
    assert t["high"] == {"pairs": 1, "events": 1, "event_rate": 1.0}
    assert t["medium"] == {"pairs": 1, "events": 0, "event_rate": 0.0}
    assert t["low"] == {"pairs": 2, "events": 1, "event_rate": 0.5}
    cov = scoring.coverage(ROWS, (0.9,))["fnr_gap"]["0.9"]
    # |measured − forecast| = .10, .04, .03, .03: the interval ±.05 holds the last three
    assert cov == {"n": 4, "coverage": 0.75}


def test_planted_separation_leaves_out_intersections() -> None:
    out = scoring.planted_separation(ROWS, lambda r: r["forecast"]["r"]["fnr_gap"], 0.9)
    # planted .10 vs unplanted {.05, −.02} (row 3, planted=None, is left out)
    assert out == {"auroc": 1.0, "planted": 1, "ranked_first": 1}


@pytest.mark.slow
def test_one_tiny_real_case_scores_with_the_tools_own_deltas(tmp_path: Path) -> None:
    """Build one small digits case with run_audit, then score it: the scorer's recomputed
    Δ must be the tool's reported Δ, and every figure must come out defined."""
    import corpus
    import score

    from audit import forecast as F

    spec = corpus.CaseSpec(
        "digits-strong-even-thick-cnn-s0-bn", "digits", "cnn", "strong", "even", "thick", 0, "bn"
    )
    import torch

    threads = torch.get_num_threads()
    entry = corpus.build_case(spec, root=tmp_path, quick=True)
    # the build runs on one thread but must leave the suite's setting alone (later tests,
    # e.g. the golden demo report, depend on it to the last bits)
    assert torch.get_num_threads() == threads
    case = corpus.load_case(spec, root=tmp_path)
    rows = score.case_rows(case, F.load_model())
    report = json.loads((entry / "audit" / "report.json").read_text())
    assert len(rows) == 3 * 3 * len(corpus.SPARSITIES)  # 3 targets × 3 keys × levels
    for r in rows:
        lv = next(lv for lv in report["validation"]["levels"] if lv["sparsity"] == r["sparsity"])
        for m in scoring.METRICS:
            reported = lv["delta"]["default"][r["target"]]["by_group"][r["group"]][m]
            if reported["value"] is None:
                assert r["measured"][m]["value"] is None
                continue
            assert r["measured"][m]["value"] == pytest.approx(reported["value"], abs=1e-12)
            assert r["measured"][m]["ci"] == pytest.approx(reported["ci"], abs=1e-12)
    planted = [r for r in rows if r["planted"]]
    assert {(r["target"], r["group"]) for r in planted} == {("even", "thick")}
    assert all(np.isfinite(r["forecast"]["fitted"]["fnr_gap"]) for r in rows)
    # the risk level is the shipped cut-offs applied to the larger predicted CI lower bound,
    # which is defined for every binary key here
    model = F.load_model()
    for r in rows:
        low = r["forecast"]["fitted_ci_low"]
        if "×" not in r["group"]:
            assert all(np.isfinite(low[m]) for m in ("fnr_gap", "fpr_gap"))
        assert r["risk"]["fitted"] == model.risk(F._worst(low))
    res = score.score_part(rows, [score._susceptibility(case)])
    assert res["cases"] == 1 and res["pairs"] == 9
    assert set(res) >= {"fitted", "fitted_ci_low", "today"}


def test_todays_rule_hand_computed() -> None:
    """The previous rule (benchmarks/forecast/rules.py), counts through the engine."""
    import rules

    from audit import criteria

    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.6, 0.95, 0.7, 0.05, 0.55, 0.85, 0.3, 0.02])[:, None]
    pop = criteria.build_population(
        ("smile",),
        "binary",
        labels[:, None],
        groups[:, None],
        ("g",),
        train_labels=(np.arange(100) < 30).astype(int)[:, None],
        train_groups=(np.arange(100) % 2)[:, None],
        min_group_size=1,
        band=(0.1, 0.9),
    )
    out = rules.todays_forecast(pop, probs, np.array([0.5]), None)[("smile", "g")]
    # positives are the minority: uncertain predicted positives (i0, i2, i4, i5) flip to 0.
    # FNR 0/2, 0/2 → 1/2 (i0), 2/2 (i4, i5): gap +0.5; FPR 1/2, 0/2 → 0/2 (i2), 0/2: −0.5
    assert out == {"fnr_gap": pytest.approx(0.5), "fpr_gap": pytest.approx(-0.5), "risk": "high"}


def test_risk_cut_offs_mean_what_they_say() -> None:
    """fit._risk_thresholds: low = events rare, high = a positive predicted bound."""
    import fit

    score = np.repeat([-0.2, -0.03, 0.0, 0.02], [100, 100, 30, 25])
    event = np.zeros(len(score), dtype=bool)
    event[[*range(100, 110), *range(200, 203), *range(230, 240)]] = True  # 0 / 10 / 3 / 10
    medium, high = fit._risk_thresholds(score, event)
    # base rate 23/255: below −0.035 only the −0.2 pairs (0%); below −0.025 already 5% > ¼ base
    assert medium == pytest.approx(-0.035)
    # the 25 pairs at +0.02 have 40% ≥ 1.5 × base; the exact zeros stay below high
    assert high == pytest.approx(0.005)
    assert medium <= 0.0 < high
