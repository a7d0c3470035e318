from __future__ import annotations

import numpy as np
import pytest

from audit import criteria
from audit.forecast import forecast, gallery_samples, risk_level, susceptible_samples


def _pop(labels: np.ndarray, groups: np.ndarray, train_rate: float) -> criteria.Population:
    n_train = 100
    train_labels = (np.arange(n_train) < train_rate * n_train).astype(int)[:, None]
    train_groups = (np.arange(n_train) % 2)[:, None]
    return criteria.build_population(
        ("smile",),
        "binary",
        labels[:, None],
        groups[:, None],
        ("g",),
        train_labels=train_labels,
        train_groups=train_groups,
        min_group_size=1,
        band=(0.1, 0.9),
    )


LABELS = np.array([1, 1, 0, 0, 1, 1, 0, 0])
GROUPS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PROBS = np.array([0.6, 0.95, 0.7, 0.05, 0.55, 0.85, 0.3, 0.02])[:, None]


def test_forecast_hand_computed_minority_positive() -> None:
    # Train positive rate 0.3 → positives are the rare value: every uncertain predicted
    # positive (p in (0.1, 0.9)) is expected to flip to negative; confident ones stay.
    #   g=0: i0 (y=1, p=.6) TP→FN; i1 (p=.95) confident; i2 (y=0, p=.7) FP→TN
    #   g=1: i4 (y=1, p=.55) and i5 (y=1, p=.85) TP→FN; i6 predicted 0: majority side.
    # FNR: dense 0/2, 0/2 → forecast 1/2, 2/2 → gap .5 → Δ +.5 (high: ≥ .05)
    # FPR: dense 1/2, 0/2 (gap .5) → forecast 0/2, 0/2 → gap 0 → Δ −.5
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    fc = forecast(pop, PROBS, np.array([0.5]), None)
    (pair,) = fc["pairs"]
    assert pair["predicted_delta"]["fnr_gap"] == pytest.approx(0.5)
    assert pair["predicted_delta"]["fpr_gap"] == pytest.approx(-0.5)
    assert pair["dense_gap"] == {"fnr_gap": 0.0, "fpr_gap": 0.5}
    assert pair["risk"] == "high" and fc["verdict"] == "high"
    assert "minority side" in fc["rule"]


def test_forecast_mirrors_when_positives_are_the_majority() -> None:
    # Train rate 0.7 → uncertain predicted negatives flip to positive:
    #   g=0: i3 p=.05 is confident → nothing; g=1: i6 (y=0, p=.3) TN→FP; i7 p=.02 confident.
    # FPR: dense 1/2, 0/2 → forecast 1/2, 1/2 → gap 0 (Δ −.5); no positive is predicted
    # negative, so FNR is unchanged (Δ 0) → low.
    pop = _pop(LABELS, GROUPS, train_rate=0.7)
    (pair,) = forecast(pop, PROBS, np.array([0.5]), None)["pairs"]
    assert pair["predicted_delta"]["fpr_gap"] == pytest.approx(-0.5)
    assert pair["predicted_delta"]["fnr_gap"] == pytest.approx(0.0)
    assert pair["risk"] == "low"


def test_forecast_band_edges_are_confident() -> None:
    # p exactly on the band edge (0.9) is outside the open band: it must not flip.
    probs = np.array([0.9, 0.95, 0.05, 0.05, 0.6, 0.95, 0.05, 0.05])[:, None]
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    (pair,) = forecast(pop, probs, np.array([0.5]), None)["pairs"]
    # only i4 flips: FNR 0/2, 1/2 → Δ +.5
    assert pair["predicted_delta"]["fnr_gap"] == pytest.approx(0.5)


def test_interdependence_excess_raises_risk_one_level() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.7)
    inter = {"smile": {"predictions": 0.5, "labels": 0.3, "excess": 0.2}}
    (pair,) = forecast(pop, PROBS, np.array([0.5]), inter)["pairs"]
    assert pair["risk"] == "medium" and "interdependence excess 0.20" in pair["reason"]
    inter["smile"]["excess"] = 0.05
    (pair,) = forecast(pop, PROBS, np.array([0.5]), inter)["pairs"]
    assert pair["risk"] == "low"


@pytest.mark.parametrize(
    ("delta", "level"),
    [(0.06, "high"), (0.05, "high"), (0.03, "medium"), (0.0, "low"), (None, "low")],
)
def test_risk_levels(delta: float | None, level: str) -> None:
    assert risk_level(delta) == level


def test_susceptible_ranking_and_gallery() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    top = susceptible_samples(pop, PROBS, np.array([0.5]), top_k=3)
    # s: i4 .9 > i0 .8 > i2 .6 = i6 .6 (tie broken by index)
    assert [t["index"] for t in top] == [4, 0, 2]
    assert [t["rank"] for t in top] == [1, 2, 3]
    assert top[0]["outcome"] == "TP" and top[0]["confident"] is False
    assert top[2]["outcome"] == "FP"
    gallery = gallery_samples(pop, PROBS, np.array([0.5]))
    cells = {(g["outcome"], g["confident"]) for g in gallery}
    assert ("TP", True) in cells and ("TN", True) in cells and ("TN", False) in cells


def _level(fnr: tuple[float, list[float]], fpr: tuple[float, list[float]]) -> dict:
    def cell(v: float, ci: list[float]) -> dict:
        return {"value": v, "ci": ci, "reason": None}

    gaps = {"fnr_gap": cell(*fnr), "fpr_gap": cell(*fpr)}
    return {"sparsity": 0.9, "delta": {"default": {"smile": {"by_group": {"g": gaps}}}}}


def test_forecast_agreement_grades_direction_with_ci_and_risk() -> None:
    from audit.validate import forecast_agreement

    fc = {
        "pairs": [
            {
                "target": "smile",
                "group": "g",
                "predicted_delta": {"fnr_gap": 0.06, "fpr_gap": -0.01},
                "risk": "high",
            }
        ]
    }
    # FNR: predicted up (.06), measured +.3 with CI excluding 0 → up: hit.
    # FPR: predicted −.01 is below the .02 materiality → flat; measured +.03 but its CI
    # contains 0 → flat: hit. Risk: measured max Δ .3 → high = forecast: hit.
    out = forecast_agreement(fc, _level((0.3, [0.25, 0.35]), (0.03, [-0.01, 0.07])), mode="default")
    assert [r["direction_hit"] for r in out["pairs"]] == [True, True]
    assert out["direction_hit_rate"] == 1.0 and out["risk_hit_rate"] == 1.0
    # FNR measured −.1 with CI [−.15, −.05] → down: miss; risk low vs high: miss.
    out = forecast_agreement(fc, _level((-0.1, [-0.15, -0.05]), (0.0, [0, 0])), mode="default")
    assert [r["direction_hit"] for r in out["pairs"]] == [False, True]
    assert out["pairs"][0]["measured_risk"] == "low"
    assert out["direction_hit_rate"] == 0.5 and out["risk_hit_rate"] == 0.0
