"""Uncertainty, susceptibility, interdependence R², thresholds, U, and ranking quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.metrics import (
    auroc,
    calibrate_thresholds,
    interdependence_r2,
    lift_at_k,
    margin_uncertain_mask,
    precision_at_k,
    probability_histogram,
    recall_at_k,
    sample_susceptibility,
    susceptibility,
    uncertain_mask,
    uncertainty_rate,
    underprediction_ratio,
)


# ------------------------------------------------------------------------------ uncertainty
def test_uncertain_mask_and_rate_hand_computed() -> None:
    p = np.array([0.05, 0.1, 0.11, 0.5, 0.9, 0.95])
    # open band (0.1, 0.9): 0.1 and 0.9 themselves are confident
    np.testing.assert_array_equal(uncertain_mask(p), [0, 0, 1, 1, 0, 0])
    assert uncertainty_rate(p) == pytest.approx(2 / 6)
    # band (0.0, 0.6): 0.05, 0.1, 0.11, 0.5 -> 4/6
    assert uncertainty_rate(p, band=(0.0, 0.6)) == pytest.approx(4 / 6)
    # per column for (N, A)
    two = np.c_[p, 1 - p[::-1]]
    np.testing.assert_allclose(uncertainty_rate(two), [2 / 6, 2 / 6])
    assert np.isnan(uncertainty_rate(np.zeros(0)))
    assert np.isnan(uncertainty_rate(np.zeros((0, 3)))).all()


def test_margin_uncertain_mask_hand_computed() -> None:
    probs = np.array(
        [
            [0.5, 0.3, 0.2],  # margin 0.2  < 0.8 -> uncertain
            [0.95, 0.03, 0.02],  # margin 0.92      -> confident
            [0.05, 0.1, 0.85],  # margin 0.75 < 0.8 -> uncertain
            [0.9, 0.1, 0.0],  # margin 0.8, not < 0.8 -> confident
        ]
    )
    np.testing.assert_array_equal(margin_uncertain_mask(probs), [1, 0, 1, 0])
    # band (0.3, 0.7): margin threshold 0.4
    np.testing.assert_array_equal(margin_uncertain_mask(probs, band=(0.3, 0.7)), [1, 0, 0, 0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30))
def test_margin_on_two_classes_equals_the_band(milli) -> None:
    # p on a grid of 1/1000 that avoids the band edges (rounding there is not meaningful)
    p = np.array([m / 1000 for m in milli if m not in (100, 900)] or [0.5])
    probs = np.c_[1 - p, p]
    np.testing.assert_array_equal(margin_uncertain_mask(probs), uncertain_mask(p))


def test_susceptibility_hand_computed() -> None:
    # 1 - |2p - 1|: 0 -> 0, 0.25 -> 0.5, 0.5 -> 1, 0.75 -> 0.5, 1 -> 0
    np.testing.assert_allclose(
        susceptibility(np.array([0.0, 0.25, 0.5, 0.75, 1.0])), [0, 0.5, 1, 0.5, 0]
    )
    probs = np.array(
        [
            [0.9, 0.4, 0.5],  # s = 0.2, 0.8, 1.0 -> 1.0 at target 2
            [0.75, 0.25, 0.0],  # s = 0.5, 0.5, 0   -> 0.5 at target 0 (first on ties)
            [1.0, 0.0, 1.0],  # s = 0, 0, 0        -> 0 at target 0
        ]
    )
    score, target = sample_susceptibility(probs)
    np.testing.assert_allclose(score, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(target, [2, 0, 0])


def test_probability_histogram_hand_computed() -> None:
    p = np.array([0.0, 0.04, 0.1, 0.5, 0.89, 0.9, 1.0, 0.3])
    cells = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    counts = probability_histogram(p, cells=cells, n_cells=3, n_bins=10)
    # bin b holds b/10 <= p < (b+1)/10; p = 1 falls in the last bin
    expected = np.zeros((3, 10), dtype=np.int64)
    expected[0, [0, 9]] = [2, 2]  # 0.0, 0.04 | 0.9, 1.0
    expected[1, [1, 3, 5, 8]] = 1  # 0.1, 0.3, 0.5, 0.89
    np.testing.assert_array_equal(counts, expected)  # the empty cell 2 is a row of zeros
    assert counts.sum(axis=1).tolist() == [4, 4, 0]
    # 20 bins put the default band's ends on edges: bins 2..17 are the uncertain ones
    q = np.linspace(0.0, 1.0, 401)[1:-1]
    q = q[np.abs(q * 20 - np.round(q * 20)) > 1e-9]  # drop samples on an edge
    hist = probability_histogram(q, cells=np.zeros(len(q), dtype=int), n_cells=1)[0]
    assert hist[2:18].sum() == uncertain_mask(q).sum()


def test_probability_histogram_errors() -> None:
    with pytest.raises(ValueError, match="`cells` must lie in \\[0, n_cells=2\\); got 2 at row 1"):
        probability_histogram(np.array([0.5, 0.5]), cells=np.array([0, 2]), n_cells=2)
    with pytest.raises(ValueError, match="one entry per sample \\(2\\)"):
        probability_histogram(np.array([0.5, 0.5]), cells=np.array([0]), n_cells=1)
    with pytest.raises(ValueError, match="finite probabilities"):
        probability_histogram(np.array([np.nan]), cells=np.array([0]), n_cells=1)
    with pytest.raises(ValueError, match="`n_bins` must be >= 1; got 0"):
        probability_histogram(np.array([0.5]), cells=np.array([0]), n_cells=1, n_bins=0)


def test_uncertainty_errors() -> None:
    with pytest.raises(ValueError, match="0 <= low < high <= 1; got \\(0.9, 0.1\\)"):
        uncertain_mask(np.array([0.5]), band=(0.9, 0.1))
    with pytest.raises(ValueError, match="a pair \\(low, high\\)"):
        uncertainty_rate(np.array([0.5]), band=(0.1,))
    with pytest.raises(ValueError, match="finite probabilities"):
        susceptibility(np.array([0.5, 1.2]))
    with pytest.raises(ValueError, match="at least 2 class columns"):
        margin_uncertain_mask(np.array([[0.5], [0.7]]))
    with pytest.raises(ValueError, match="at least one target column"):
        sample_susceptibility(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="`probs` must have 2 dimension"):
        sample_susceptibility(np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="`prob` must have 1 or 2 dimension"):
        uncertainty_rate(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------------------- interdependence
def _r2_reference(y: np.ndarray) -> np.ndarray:
    """Independent solve: explicit design matrix [1, others] per column, lstsq, 1 - SSE/SST."""
    out = []
    for a in range(y.shape[1]):
        target = y[:, a]
        design = np.c_[np.ones(len(y)), np.delete(y, a, axis=1)]
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        sse = np.sum((target - design @ coef) ** 2)
        sst = np.sum((target - target.mean()) ** 2)
        out.append(np.nan if sst == 0 else 1 - sse / sst)
    return np.array(out)


def test_r2_hand_computed_with_duplicate_columns() -> None:
    # column 2 duplicates column 0 -> R² = 1 for both (rank-deficient predictors for col 1)
    # column 1 on column 0: centred products sum 0.5, variances 1.5 each -> corr 1/3,
    # R² = 1/9
    y = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_allclose(interdependence_r2(y), [1.0, 1 / 9, 1.0], atol=1e-12)


def test_r2_orthogonal_design_is_zero() -> None:
    # full 2^3 factorial: columns are uncorrelated -> nothing is predictable
    y = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)])
    np.testing.assert_allclose(interdependence_r2(y), [0.0, 0.0, 0.0], atol=1e-12)


def test_r2_constant_column_is_nan() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 4))
    y[:, 1] = 1
    r2 = interdependence_r2(y)
    assert np.isnan(r2[1])
    np.testing.assert_allclose(r2[[0, 2, 3]], _r2_reference(y)[[0, 2, 3]], atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 8), st.integers(4, 80))
def test_r2_matches_independent_solve(seed, n_attr, n) -> None:
    rng = np.random.default_rng(seed)
    base = rng.random((n, 2))
    # correlated 0/1 columns: noisy thresholds of two latent factors
    y = (base[:, [0, 1] * n_attr][:, :n_attr] + 0.4 * rng.random((n, n_attr)) > 0.7).astype(int)
    np.testing.assert_allclose(interdependence_r2(y), _r2_reference(y), atol=1e-9)


def test_r2_at_scale_and_row_order() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (20_000, 40)).astype(np.int8)
    y[:, 5] = y[:, 3] | y[:, 4]
    r2 = interdependence_r2(y)
    assert r2.shape == (40,)
    assert r2[5] > 0.4 and r2[0] < 1e-2
    perm = rng.permutation(1000)
    np.testing.assert_allclose(interdependence_r2(y[:1000][perm]), interdependence_r2(y[:1000]))


def test_r2_errors() -> None:
    with pytest.raises(ValueError, match=r"A >= 3 attributes; got shape \(4, 2\)"):
        interdependence_r2(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="A >= 3"):
        interdependence_r2(np.zeros(4))
    with pytest.raises(ValueError, match="finite values"):
        interdependence_r2(np.full((4, 3), np.nan))


# -------------------------------------------------------------------------------- thresholds
def _count(p: np.ndarray, t: float) -> int:
    return int(np.count_nonzero(p > t))


def test_thresholds_hand_computed() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    y = np.array(
        [
            [1, 0, 1],
            [0, 0, 1],
            [1, 0, 1],
            [0, 0, 1],
            [0, 0, 1],
            [0, 0, 1],
        ]
    )
    t = calibrate_thresholds(np.c_[p, p, p], y)
    # k=2: midpoint of the 2nd and 3rd largest, (0.8 + 0.7) / 2
    assert t[0] == pytest.approx(0.75)
    # k=0: t = max(p) -> nothing is > t
    assert t[1] == 0.9
    # k=N: just below min(p) -> everything is > t
    assert t[2] == np.nextafter(0.1, -np.inf)
    assert [_count(p, v) for v in t] == [2, 0, 6]


def test_thresholds_with_ties() -> None:
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.0])
    # k=2 falls inside the tied block {0.5 x3}: achievable counts are 1 (#>0.5, off by 1)
    # or 4 (#>=0.5, off by 2) -> keep the block below: t = (0.5 + 0.9) / 2 = 0.7
    assert calibrate_thresholds(p[:, None], np.array([[1, 1, 0, 0, 0, 0]]).T)[0] == (
        pytest.approx(0.7)
    )
    # k=3: counts 1 (off by 2) or 4 (off by 1) -> block above: t = (0.1 + 0.5) / 2 = 0.3
    assert calibrate_thresholds(p[:, None], np.array([[1, 1, 1, 0, 0, 0]]).T)[0] == (
        pytest.approx(0.3)
    )
    # equal distance (1 or 3 for k=2): the higher threshold, fewer positives
    q = np.array([0.9, 0.5, 0.5, 0.1])
    assert calibrate_thresholds(q[:, None], np.array([[1, 1, 0, 0]]).T)[0] == pytest.approx(0.7)
    # all equal: k=1 -> t = 0.5 (0 predicted); k=3 -> just below 0.5 (4 predicted)
    flat = np.full(4, 0.5)[:, None]
    t1 = calibrate_thresholds(flat, np.array([[1, 0, 0, 0]]).T)[0]
    t3 = calibrate_thresholds(flat, np.array([[1, 1, 1, 0]]).T)[0]
    assert (_count(flat, t1), _count(flat, t3)) == (0, 4)


def test_thresholds_adjacent_floats() -> None:
    # the midpoint of two adjacent floats rounds to one of them; the count must still be k
    a = 0.3
    p = np.array([a, np.nextafter(a, 1.0)])
    t = calibrate_thresholds(p[:, None], np.array([[0, 1]]).T)[0]
    assert _count(p, t) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=30))
def test_thresholds_count_is_closest_achievable(rows) -> None:
    p = np.array([r[0] / 20 for r in rows])
    y = np.array([r[1] for r in rows])
    k = int(y.sum())
    t = calibrate_thresholds(p[:, None], y[:, None])[0]
    achievable = {0, len(p)} | {int(np.count_nonzero(p > v)) for v in p}
    best = min(abs(c - k) for c in achievable)
    assert abs(_count(p, t) - k) == best
    if len(set(p.tolist())) == len(p):
        assert _count(p, t) == k


def test_threshold_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        calibrate_thresholds(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="finite probabilities"):
        calibrate_thresholds(np.full((3, 1), 2.0), np.zeros((3, 1)))
    assert np.isnan(calibrate_thresholds(np.zeros((0, 2)), np.zeros((0, 2)))).all()


def test_underprediction_ratio_hand_computed() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 1, 0])  # true rate r = 2/8 = 0.25
    p = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # predicted rate q = 1/8 = 0.125
    # train rate 0.3 <= 0.5 (rare value 1): U = q / r = 0.5
    assert underprediction_ratio(y, p, train_positive_rate=0.3) == pytest.approx(0.5)
    # train rate 0.7 > 0.5 (rare value 0): U = (1 - q) / (1 - r) = 0.875 / 0.75
    assert underprediction_ratio(y, p, train_positive_rate=0.7) == pytest.approx(7 / 6)
    # rare value never occurs: denominator 0 -> NaN
    assert np.isnan(underprediction_ratio(np.zeros(8), p, train_positive_rate=0.3))
    assert np.isnan(underprediction_ratio(np.ones(8), p, train_positive_rate=0.8))
    assert np.isnan(underprediction_ratio(np.zeros(0), np.zeros(0), train_positive_rate=0.3))


def test_underprediction_errors() -> None:
    with pytest.raises(ValueError, match=r"`train_positive_rate` must lie in \[0, 1\]; got 1.5"):
        underprediction_ratio(np.ones(3), np.ones(3), train_positive_rate=1.5)
    with pytest.raises(ValueError, match="same length; got 3 and 2"):
        underprediction_ratio(np.ones(3), np.ones(2), train_positive_rate=0.5)


# ----------------------------------------------------------------------------------- ranking
S = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
L = np.array([1, 0, 1, 0, 1, 0])


def test_auroc_hand_computed() -> None:
    # positives {0.9, 0.8, 0.2} vs negatives {0.8, 0.3, 0.1}:
    # 0.9 wins 3; 0.8 ties 0.8 (0.5) and wins 2; 0.2 wins 1 -> 6.5 / 9
    assert auroc(S, L) == pytest.approx(6.5 / 9)
    assert auroc(S, 1 - L) == pytest.approx(2.5 / 9)
    assert np.isnan(auroc(S, np.ones(6)))
    assert np.isnan(auroc(S, np.zeros(6)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_matches_sklearn(rows) -> None:
    from sklearn.metrics import roc_auc_score

    s = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1] for r in rows])
    if y.all() or not y.any():
        assert np.isnan(auroc(s, y))
    else:
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_top_k_hand_computed() -> None:
    # stable order: 0 (0.9), 1 (0.8, lower index of the tie), 2 (0.8), 3, 4, 5
    assert precision_at_k(S, L, k=1) == 1.0
    assert precision_at_k(S, L, k=2) == 0.5  # labels 1, 0
    assert precision_at_k(S, L, k=3) == pytest.approx(2 / 3)  # labels 1, 0, 1
    assert recall_at_k(S, L, k=2) == pytest.approx(1 / 3)  # 1 of 3 positives
    assert recall_at_k(S, L, k=3) == pytest.approx(2 / 3)
    # base rate 3/6: lift@2 = 0.5 / 0.5, lift@3 = (2/3) / 0.5
    assert lift_at_k(S, L, k=2) == pytest.approx(1.0)
    assert lift_at_k(S, L, k=3) == pytest.approx(4 / 3)
    # the tie is broken by index: swapping the tied samples' labels changes precision@2
    swapped = L.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    assert precision_at_k(S, swapped, k=2) == 1.0
    # k larger than N is capped at N
    assert precision_at_k(S, L, k=100) == 0.5
    assert recall_at_k(S, L, k=100) == 1.0


def test_top_k_undefined() -> None:
    assert np.isnan(recall_at_k(S, np.zeros(6), k=2))
    assert np.isnan(lift_at_k(S, np.zeros(6), k=2))
    assert precision_at_k(S, np.zeros(6), k=2) == 0.0
    assert np.isnan(precision_at_k(np.zeros(0), np.zeros(0), k=3))
    assert np.isnan(lift_at_k(np.zeros(0), np.zeros(0), k=3))


def test_ranking_errors() -> None:
    with pytest.raises(ValueError, match="`k` must be >= 1; got 0"):
        precision_at_k(S, L, k=0)
    with pytest.raises(TypeError, match="`k` must be an int"):
        recall_at_k(S, L, k=2.0)
    with pytest.raises(ValueError, match=r"`scores` must be 1-D with shape \(N,\)"):
        auroc(S[:, None], L)
    with pytest.raises(ValueError, match="`scores` must be finite"):
        auroc(np.r_[S[:5], np.nan], L)
    with pytest.raises(TypeError, match="`scores` must hold numbers"):
        auroc(np.array(["a"] * 6), L)
    with pytest.raises(ValueError, match="`labels` must hold only 0/1"):
        lift_at_k(S, L * 3, k=2)
    with pytest.raises(ValueError, match="`labels` has 5"):
        auroc(S, L[:5])


def test_underprediction_from_counts_equals_the_ratio_of_each_cell() -> None:
    """U from the engine's confusion counts = underprediction_ratio on each cell's rows."""
    from audit.metrics import confusion_counts, underprediction_from_counts

    rng = np.random.default_rng(5)
    n = 300
    y = rng.integers(0, 2, size=(n, 3))
    yp = rng.integers(0, 2, size=(n, 3))
    y[:, 2] = 1  # 1 - r = 0 for a rare-value-0 target: undefined
    cells = rng.integers(0, 3, size=n)
    rates = np.array([0.3, 0.7, 0.9])
    u = underprediction_from_counts(
        confusion_counts(y, yp, cells, n_cells=4), train_positive_rate=rates
    )
    assert u.shape == (3, 4)
    for a in range(3):
        for c in range(3):
            sel = cells == c
            want = underprediction_ratio(y[sel, a], yp[sel, a], train_positive_rate=rates[a])
            assert np.isnan(u[a, c]) if np.isnan(want) else u[a, c] == want
        assert np.isnan(u[a, 3])  # empty cell
    assert np.isnan(u[2]).all()
    with pytest.raises(ValueError, match="one rate in"):
        underprediction_from_counts(np.ones((3, 4, 4)), train_positive_rate=[0.3, 1.5, 0.2])
