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
PROBS = np.array([0.6, 0.95, 0.7, 0.05, 0.55, 0.92, 0.3, 0.02])[:, None]


def test_forecast_hand_computed_minority_positive() -> None:
    # Train positive rate 0.3 → positives are the rare value: uncertain predicted positives
    # are expected to flip to negative with probability 0.5·s, s = 1 − |2p − 1|.
    #   g=0: i0 (y=1, p=.6, s=.8) → .4 expected TP→FN; i2 (y=0, p=.7, s=.6) → .3 FP→TN
    #   g=1: i4 (y=1, p=.55, s=.9) → .45 TP→FN; i6 predicted 0: not on the minority side.
    # FNR: dense 0/2, 0/2 → forecast .4/2=.2, .45/2=.225 → Δgap = .025 (medium: ≥ .02)
    # FPR: dense 1/2, 0/2 (gap .5) → forecast (1-.3)/2=.35, 0 → gap .35 → Δ = −.15
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    fc = forecast(pop, PROBS, np.array([0.5]), None)
    (pair,) = fc["pairs"]
    assert pair["predicted_delta"]["fnr_gap"] == pytest.approx(0.025)
    assert pair["predicted_delta"]["fpr_gap"] == pytest.approx(-0.15)
    assert pair["dense_gap"] == {"fnr_gap": 0.0, "fpr_gap": 0.5}
    assert pair["risk"] == "medium" and fc["verdict"] == "medium"
    assert "0.5·s" in fc["rule"]


def test_forecast_mirrors_when_positives_are_the_majority() -> None:
    # Train rate 0.7 → uncertain predicted negatives flip to positive:
    #   g=0: i3 p=.05 is confident → nothing; g=1: i6 (y=0, p=.3, s=.6) → .3 TN→FP.
    # FPR: dense .5, 0 → forecast .5, .15 → gap .35 (Δ −.15); FNR unchanged (Δ 0).
    pop = _pop(LABELS, GROUPS, train_rate=0.7)
    (pair,) = forecast(pop, PROBS, np.array([0.5]), None)["pairs"]
    assert pair["predicted_delta"]["fpr_gap"] == pytest.approx(-0.15)
    assert pair["predicted_delta"]["fnr_gap"] == pytest.approx(0.0)
    assert pair["risk"] == "low"


def test_interdependence_excess_raises_risk_one_level() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    inter = {"smile": {"predictions": 0.5, "labels": 0.3, "excess": 0.2}}
    (pair,) = forecast(pop, PROBS, np.array([0.5]), inter)["pairs"]
    assert pair["risk"] == "high" and "interdependence excess 0.20" in pair["reason"]


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
