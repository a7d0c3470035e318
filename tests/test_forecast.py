from __future__ import annotations

import numpy as np
import pytest

from audit import criteria
from audit import forecast as F
from audit.forecast import gallery_samples, susceptible_samples


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


def _model(**over: object) -> F.ForecastModel:
    d = {
        "features": list(F.FLIP_FEATURES),
        "sparsities": [0.8, 0.9, 0.95],
        "flip_coef": {
            "bn": {
                "0.8": [-3.0, -1.0, 1.0, 0.0],
                "0.9": [-1.0, -1.0, 1.0, 0.0],
                "0.95": [0.0, -1.0, 1.0, 0.0],
            },
        },
        "interval": {
            "level": 0.9,
            "residual_quantiles": {
                m: {"0.8": [-0.1, 0.1], "0.9": [-0.2, 0.3], "0.95": [-0.4, 0.5]}
                for m in F.FORECAST_METRICS
            },
        },
        "risk": {"medium": 0.02, "high": 0.05},
    }
    d.update(over)
    return F.ForecastModel.from_dict(d)


def test_flip_features_hand_computed() -> None:
    # Train positive rate 0.3: positives are the minority value.
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    feats = F.flip_features(pop, PROBS, np.array([0.5]), pop.keys[0])
    z = np.log(PROBS[:, 0] / (1 - PROBS[:, 0]))
    np.testing.assert_allclose(feats[0, :, 0], 1.0)
    np.testing.assert_allclose(feats[1, :, 0], np.abs(z))
    # predicted positive (p > .5) = minority side → a flip goes toward the majority
    np.testing.assert_array_equal(feats[2, :, 0], (PROBS[:, 0] > 0.5).astype(float))
    # tilt: z minus the mean z of its label, averaged per group cell, signed by the flip's way
    resid = z - np.where(LABELS == 1, z[LABELS == 1].mean(), z[LABELS == 0].mean())
    tilt = np.array([resid[GROUPS == 0].mean(), resid[GROUPS == 1].mean()])
    d = np.where(PROBS[:, 0] > 0.5, -1.0, 1.0)
    np.testing.assert_allclose(feats[3, :, 0], d * tilt[GROUPS])


def test_expected_change_with_certain_flips_is_exact() -> None:
    # q ∈ {0, 1}: no chance left, so every draw moves the same samples.
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    q = np.zeros((8, 1))
    q[[0, 4, 5], 0] = 1.0  # TP→FN in g=0 (i0) and g=1 (i4, i5)
    out = F.expected_gap_change(pop, PROBS, np.array([0.5]), pop.keys[0], q)
    # FNR: dense 0/2, 0/2 → 1/2, 2/2: gap 0 → .5; FPR untouched (1/2 vs 0/2)
    assert out["fnr_gap"]["mean"][0] == pytest.approx(0.5)
    assert out["fnr_gap"]["sd"][0] == pytest.approx(0.0)
    assert out["fpr_gap"]["mean"][0] == pytest.approx(0.0)
    none = F.expected_gap_change(pop, PROBS, np.array([0.5]), pop.keys[0], np.zeros((8, 1)))
    assert none["fnr_gap"]["mean"][0] == 0.0 and none["fpr_gap"]["mean"][0] == 0.0


def test_chance_flips_widen_a_gap_on_average() -> None:
    # Two identical groups, every sample with the same flip chance: the expected counts move
    # both groups alike (gap unchanged), but a max − min over noisy draws grows.
    labels = np.tile([1, 0], 100)
    groups = np.repeat([0, 1], 100)
    probs = np.where(labels == 1, 0.8, 0.2)[:, None]
    pop = _pop(labels, groups, train_rate=0.5)
    q = np.full((200, 1), 0.2)
    out = F.expected_gap_change(pop, probs, np.array([0.5]), pop.keys[0], q)
    assert out["fnr_gap"]["mean"][0] > 0.03


def test_forecast_per_sparsity_interpolates_and_flags_extrapolation() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    fc = F.forecast(
        pop,
        PROBS,
        np.array([0.5]),
        None,
        sparsities=(0.85, 0.99),
        target_sparsity=0.9,
        model=_model(),
    )
    assert fc["sparsities"] == [0.85, 0.9, 0.99] and fc["target_sparsity"] == 0.9
    (pair,) = fc["pairs"]
    by = {b["sparsity"]: b for b in pair["by_sparsity"]}
    assert by[0.99]["extrapolated"] and not by[0.85]["extrapolated"]
    assert any("0.99 lies outside" in n for n in fc["model"]["notes"])
    # 0.85 uses the midpoint of the 0.8 and 0.9 coefficients and intervals
    coef, used, extra = _model().coef("bn", 0.85)
    np.testing.assert_allclose(coef, [-2.0, -1.0, 1.0, 0.0])
    assert used == "bn" and not extra
    d = by[0.85]["predicted_delta"]["fnr_gap"]
    assert by[0.85]["interval"]["fnr_gap"] == pytest.approx([d - 0.15, d + 0.2], abs=1e-6)
    # More sparsity, larger flip chances: the forecast FNR gap grows monotonically here.
    assert by[0.85]["predicted_delta"]["fnr_gap"] < by[0.9]["predicted_delta"]["fnr_gap"]
    assert pair["predicted_delta"] == by[0.9]["predicted_delta"]
    assert pair["risk"] == by[0.9]["risk"] and fc["verdict"] == pair["risk"]
    # BA is not estimable with train groups that do not differ in rate: None, not 0.
    assert pair["predicted_delta"]["bias_amplification"] is None


def test_forecast_why_lists_expected_flips_per_cell() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    (pair,) = F.forecast(pop, PROBS, np.array([0.5]), None, model=_model())["pairs"]
    why = {w["value"]: w for w in pair["why"]}
    assert set(why) == {"0", "1"} and why["0"]["positives"] == 2
    # only predicted positives are on the minority side; margins |z| give the chances
    flips = why["1"]["expected_flips"]
    coef = np.array([-1.0, -1.0, 1.0, 0.0])
    z = np.log(np.array([0.55, 0.85]) / np.array([0.45, 0.15]))
    q = 1 / (1 + np.exp(-(coef[0] + coef[1] * z + coef[2])))
    assert flips["tp_to_fn"] == pytest.approx(q.sum(), abs=0.01)
    assert why["1"]["fnr_change"] == pytest.approx(q.sum() / 2, abs=0.01)
    assert "expected flips move FNR" in pair["reason"]


def test_recovery_without_coefficients_falls_back_and_says_so() -> None:
    pop = _pop(LABELS, GROUPS, train_rate=0.3)
    fc = F.forecast(pop, PROBS, np.array([0.5]), None, recovery="none", model=_model())
    assert fc["model"]["recovery"] == "bn"
    assert any("no cases with recovery 'none'" in n for n in fc["model"]["notes"])


def test_model_with_other_features_is_refused() -> None:
    with pytest.raises(ValueError, match="refit with benchmarks/forecast/fit.py"):
        _model(features=["intercept", "margin"])


@pytest.mark.parametrize(
    ("delta", "level"),
    [(0.06, "high"), (0.05, "high"), (0.03, "medium"), (0.0, "low"), (None, "low")],
)
def test_risk_levels(delta: float | None, level: str) -> None:
    assert _model().risk(delta) == level


def test_shipped_model_loads_with_benchmark_figures() -> None:
    m = F.load_model()
    assert set(m.flip_coef) == {"bn", "finetune"}
    assert m.sparsities == (0.8, 0.9, 0.95)
    # The shipped cut-offs apply to the predicted 95% CI lower bound, which may be negative.
    assert m.risk_score == "predicted_ci_low"
    assert m.risk_medium < m.risk_high
    bench = m.benchmark
    assert bench is not None and bench["part"] == "heldout"
    for metric in ("fnr_gap", "fpr_gap"):
        assert set(bench["by_metric"][metric]) == {"0.8", "0.9", "0.95"}
    assert set(bench["risk_event_rates"]["0.9"]) == {"low", "medium", "high"}


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


def test_forecast_agreement_uses_the_levels_own_sparsity_interval_and_thresholds() -> None:
    from audit.validate import forecast_agreement

    at_9 = {"fnr_gap": 0.01, "fpr_gap": 0.0}
    fc = {
        "model": {"risk_thresholds": {"medium": 0.1, "high": 0.2}},
        "pairs": [
            {
                "target": "smile",
                "group": "g",
                "predicted_delta": {"fnr_gap": 0.5, "fpr_gap": 0.5},  # headline: not used
                "risk": "high",
                "by_sparsity": [
                    {
                        "sparsity": 0.8,
                        "predicted_delta": {"fnr_gap": 0.9, "fpr_gap": 0.9},
                        "interval": {},
                        "risk": "high",
                    },
                    {
                        "sparsity": 0.9,
                        "predicted_delta": at_9,
                        "risk": "medium",
                        "interval": {"fnr_gap": [0.0, 0.2], "fpr_gap": [-0.1, 0.1]},
                    },
                ],
            }
        ],
    }
    # measured FNR +.15 (inside [0, .2]), FPR +.12 (outside [−.1, .1]); the larger, .15, is
    # medium under the forecast's own thresholds (.1/.2), as forecast at 0.9: a risk hit.
    out = forecast_agreement(fc, _level((0.15, [0.1, 0.2]), (0.12, [0.05, 0.2])), mode="default")
    fnr, fpr = out["pairs"]
    assert fnr["predicted_delta"] == 0.01 and fnr["predicted_interval"] == [0.0, 0.2]
    assert fnr["interval_hit"] is True and fpr["interval_hit"] is False
    assert out["interval_coverage"] == 0.5
    assert fnr["measured_risk"] == "medium" and out["risk_hit_rate"] == 1.0


def _bincount_flows(pop, probs, thr, key, q):
    """Independent reference: per-cell expected flips by np.bincount (the pre-engine code)."""
    pred = (probs > thr[None, :]).astype(bool)
    y = pop.labels.astype(bool)
    masks = (y & pred, y & ~pred, ~y & pred, ~y & ~pred)  # tp, fn, fp, tn
    out = np.zeros((y.shape[1], key.n_cells, 4))
    for k, m in enumerate(masks):
        for a in range(y.shape[1]):
            out[a, :, k] = np.bincount(key.cells, weights=m[:, a] * q[:, a], minlength=key.n_cells)
    return out


def test_expected_flows_come_from_the_engine_and_match_a_direct_count() -> None:
    rng = np.random.default_rng(3)
    n = 300
    labels = rng.integers(0, 2, n)
    groups = rng.integers(0, 2, n)
    probs = rng.uniform(0.01, 0.99, (n, 1))
    pop = _pop(labels, groups, train_rate=0.4)
    key = pop.keys[0]
    q = rng.uniform(0, 0.5, (n, 1))
    fl = F.expected_flows(pop, probs, np.array([0.5]), key, q)
    np.testing.assert_allclose(fl.counts.sum(axis=(1, 2)), [n])
    ref = _bincount_flows(pop, probs, np.array([0.5]), key, q)
    out = F.expected_gap_change(pop, probs, np.array([0.5]), key, q)
    np.testing.assert_allclose(out["fnr_gap"]["flows"], ref, rtol=0, atol=1e-9)
    # the variance slots hold Σ q(1 − q) over the same samples
    np.testing.assert_allclose(
        fl.var[..., 0],
        ref[..., 0] - _bincount_flows(pop, probs, np.array([0.5]), key, q * q)[..., 0],
        atol=1e-9,
    )


def _flip_case(n: int, seed: int):
    """Binary group, dense FNR 10% in both; pruning turns 12% of g=1's true positives to FN."""
    rng = np.random.default_rng(seed)
    labels = np.tile([1, 1, 0, 0], n // 4)
    groups = np.repeat([0, 1], n // 2)
    probs = np.where(labels == 1, 0.8, 0.2)
    pos = np.flatnonzero(labels == 1)
    probs[rng.choice(pos, len(pos) // 10, replace=False)] = 0.3  # dense false negatives
    tp1 = np.flatnonzero((labels == 1) & (groups == 1) & (probs > 0.5))
    flip = rng.choice(tp1, int(0.12 * (labels[groups == 1] == 1).sum()), replace=False)
    q = np.zeros((n, 1))
    q[flip, 0] = 1.0
    pruned = probs.copy()
    pruned[flip] = 0.3
    return _pop(labels, groups, train_rate=0.4), probs[:, None], pruned[:, None], q


@pytest.mark.parametrize("seed", [0, 1])
def test_predicted_ci_low_matches_the_measured_bound_for_certain_flips(seed: int) -> None:
    """With q ∈ {0, 1} the forecast knows which samples flip: its predicted CI lower bound
    must be close to the lower bound the tool's own paired bootstrap measures."""
    from audit.validate import PairedBootstrap

    pop, probs, pruned, q = _flip_case(4000, seed)
    thr = np.array([0.5])
    key = pop.keys[0]
    low = F.predicted_ci_low(key, F.expected_flows(pop, probs, thr, key, q))
    boot = PairedBootstrap(
        pop, probs, {"default": thr, "calibrated": thr}, n_resamples=1000, seed=seed
    )
    measured = boot.deltas(pruned)["default"]["smile"]["by_group"]["g"]
    for metric in ("fnr_gap", "fpr_gap"):
        assert measured[metric]["ci_method"] == "projection"
        assert low[metric][0] == pytest.approx(measured[metric]["ci"][0], abs=0.015), metric
    # the widening is real and the cells are large: the bound is clearly above 0
    assert low["fnr_gap"][0] > 0.03


def test_predicted_ci_low_is_low_for_small_cells_and_undefined_below_min_size() -> None:
    # The same relative change in a 10× smaller evaluation set cannot clear 0.02.
    pop, probs, _, q = _flip_case(400, 0)
    key = pop.keys[0]
    low = F.predicted_ci_low(key, F.expected_flows(pop, probs, np.array([0.5]), key, q))
    assert low["fnr_gap"][0] < 0.02
    small = criteria.build_population(
        ("smile",),
        "binary",
        pop.labels,
        key.cells[:, None],
        ("g",),
        train_labels=pop.labels[:100],
        train_groups=key.cells[:100, None],
        min_group_size=150,
        band=(0.1, 0.9),
    )
    k2 = small.keys[0]
    out = F.predicted_ci_low(k2, F.expected_flows(small, probs, np.array([0.5]), k2, q))
    assert np.isnan(out["fnr_gap"][0])  # 100 positives per cell < 150: not estimable


def test_risk_on_the_predicted_ci_bound() -> None:
    pop, probs, _, q = _flip_case(4000, 0)
    model = _model(risk={"score": "predicted_ci_low", "medium": -0.05, "high": 0.02})
    assert model.risk_score == "predicted_ci_low"
    fc = F.forecast(pop, probs, np.array([0.5]), None, model=model)
    (pair,) = fc["pairs"]
    for b in pair["by_sparsity"]:
        worst = max(v for v in b["predicted_ci_low"].values() if v is not None)
        assert b["risk"] == model.risk(worst)
    assert fc["model"]["risk_score"] == "predicted_ci_low"
    assert "predicted 95% CI lower bound" in pair["reason"]
    with pytest.raises(ValueError, match="risk score 'psychic'"):
        _model(risk={"score": "psychic", "medium": 0.0, "high": 0.1})
