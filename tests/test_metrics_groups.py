"""The disaggregation engine: hand-computed values, Fairlearn references, invariances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.metrics import (
    accuracy_gap,
    between_groups,
    confusion_counts,
    demographic_parity_difference,
    encode_cells,
    equalized_odds_difference,
    equalized_odds_from_rates,
    fnr_gap,
    fpr_gap,
    rates_by_group,
    rates_from_counts,
    selection_rate_gap,
    signed_gap,
    tpr_gap,
)
from audit.metrics import groups as groups_module

# 8 samples, one target, two groups.
#   i  g  y  p   outcome
#   0  0  1  1   tp
#   1  0  1  0   fn
#   2  0  0  1   fp
#   3  0  0  0   tn
#   4  1  1  1   tp
#   5  1  1  1   tp
#   6  1  0  0   tn
#   7  1  1  0   fn
G = np.array([0, 0, 0, 0, 1, 1, 1, 1])
Y = np.array([1, 1, 0, 0, 1, 1, 0, 1])
P = np.array([1, 0, 1, 0, 1, 1, 0, 0])


def test_confusion_counts_hand_computed() -> None:
    counts = confusion_counts(Y[:, None], P[:, None], G, n_cells=2)
    assert counts.shape == (1, 2, 4)
    assert counts.dtype == np.float64
    # group 0: tp=1 fp=1 tn=1 fn=1; group 1: tp=2 fp=0 tn=1 fn=1
    np.testing.assert_array_equal(counts[0], [[1, 1, 1, 1], [2, 0, 1, 1]])


def test_rates_hand_computed() -> None:
    counts = confusion_counts(Y[:, None], P[:, None], G, n_cells=2)
    r = {k: v[0] for k, v in rates_from_counts(counts).items()}
    np.testing.assert_array_equal(r["n"], [4, 4])
    np.testing.assert_array_equal(r["positives"], [2, 3])
    np.testing.assert_array_equal(r["negatives"], [2, 1])
    np.testing.assert_array_equal(r["predicted_positives"], [2, 2])
    # accuracy: (1+1)/4 = 0.5 ; (2+1)/4 = 0.75
    np.testing.assert_allclose(r["accuracy"], [0.5, 0.75])
    # tpr: 1/2 ; 2/3      fnr: 1/2 ; 1/3
    np.testing.assert_allclose(r["tpr"], [0.5, 2 / 3])
    np.testing.assert_allclose(r["fnr"], [0.5, 1 / 3])
    # fpr: 1/(1+1) ; 0/(0+1)
    np.testing.assert_allclose(r["fpr"], [0.5, 0.0])
    # selection rate: 2/4 ; 2/4
    np.testing.assert_allclose(r["selection_rate"], [0.5, 0.5])
    assert "uncertainty_rate" not in r


def test_gap_wrappers_hand_computed() -> None:
    assert accuracy_gap(Y, P, groups=G) == pytest.approx(0.25)  # 0.75 - 0.5
    assert tpr_gap(Y, P, groups=G) == pytest.approx(1 / 6)  # 2/3 - 1/2
    assert fnr_gap(Y, P, groups=G) == pytest.approx(1 / 6)  # 1/2 - 1/3
    assert fpr_gap(Y, P, groups=G) == pytest.approx(0.5)  # 1/2 - 0
    assert selection_rate_gap(Y, P, groups=G) == 0.0  # 1/2 - 1/2
    assert demographic_parity_difference(Y, P, groups=G) == 0.0
    assert equalized_odds_difference(Y, P, groups=G) == pytest.approx(0.5)  # max(1/6, 1/2)
    values, rates = rates_by_group(Y, P, groups=G)
    assert values == [0, 1]
    # signed gap = value at group 1 minus group 0: fnr 1/3 - 1/2 = -1/6
    assert float(signed_gap(rates["fnr"])) == pytest.approx(-1 / 6)


def test_undefined_cells_are_nan_not_zero() -> None:
    # group "c" has only negatives (no positives) -> its TPR and FNR are undefined.
    #   group a: y=[1,0] p=[1,0] -> tp=1 tn=1 ; group b: y=[1,1,0] p=[0,1,1] -> tp=1 fn=1 fp=1
    #   group c: y=[0,0,0] p=[1,0,0] -> fp=1 tn=2
    g = np.array(["a", "a", "b", "b", "b", "c", "c", "c"])
    y = np.array([1, 0, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 1, 1, 1, 0, 0])
    values, r = rates_by_group(y, p, groups=g)
    assert values == ["a", "b", "c"]
    np.testing.assert_allclose(r["tpr"], [1.0, 0.5, np.nan])
    np.testing.assert_allclose(r["fnr"], [0.0, 0.5, np.nan])
    np.testing.assert_allclose(r["fpr"], [0.0, 1.0, 1 / 3])
    # TPR gap over the defined groups a, b only: 1 - 0.5
    assert tpr_gap(y, p, groups=g) == pytest.approx(0.5)
    assert fnr_gap(y, p, groups=g) == pytest.approx(0.5)
    # FPR gap over a, b, c: 1 - 0
    assert fpr_gap(y, p, groups=g) == pytest.approx(1.0)


def test_gap_needs_two_defined_groups() -> None:
    # only group 0 has positives -> TPR defined in one group only -> NaN gap, not 0
    g = np.array([0, 0, 0, 1, 1, 1])
    y = np.array([1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 0, 1, 0])
    assert np.isnan(tpr_gap(y, p, groups=g))
    assert np.isnan(fnr_gap(y, p, groups=g))
    assert np.isnan(equalized_odds_difference(y, p, groups=g))  # TPR gap undefined
    # FPR: group 0: 0/1 ; group 1: 1/3
    assert fpr_gap(y, p, groups=g) == pytest.approx(1 / 3)
    # a single group: no gap at all
    assert np.isnan(accuracy_gap(y, p, groups=np.zeros(6)))


def test_empty_cell_is_nan() -> None:
    # n_cells=3 but nobody is in cell 2: every rate of cell 2 is NaN and its n is 0
    counts = confusion_counts(Y[:, None], P[:, None], G, n_cells=3)
    r = rates_from_counts(counts)
    assert r["n"][0, 2] == 0
    for name in ("accuracy", "tpr", "fpr", "fnr", "selection_rate"):
        assert np.isnan(r[name][0, 2]), name
    assert float(between_groups(r["accuracy"][0])) == pytest.approx(0.25)


def test_extra_statistic_and_uncertainty_rate() -> None:
    # extra=1 for samples 0, 4, 5 -> group 0: 1 of 4, group 1: 2 of 4
    extra = np.array([1, 0, 0, 0, 1, 1, 0, 0])[:, None]
    counts = confusion_counts(Y[:, None], P[:, None], G, n_cells=2, extra=extra)
    assert counts.shape == (1, 2, 5)
    np.testing.assert_array_equal(counts[0, :, 4], [1, 2])
    np.testing.assert_array_equal(
        counts[..., :4], confusion_counts(Y[:, None], P[:, None], G, n_cells=2)
    )
    r = rates_from_counts(counts)
    np.testing.assert_allclose(r["uncertainty_rate"][0], [0.25, 0.5])


def test_between_groups_hand_computed() -> None:
    v = np.array(
        [[0.2, np.nan, 0.7, 0.5], [0.1, 0.4, np.nan, np.nan], [np.nan, 0.3, np.nan, np.nan]]
    )
    # row 0: 0.7 - 0.2 ; row 1: 0.4 - 0.1 ; row 2: one defined cell -> NaN
    np.testing.assert_allclose(between_groups(v), [0.5, 0.3, np.nan])
    # invalid cell 2 (too small) is left out: row 0 -> 0.5 - 0.2
    valid = np.array([True, True, False, True])
    np.testing.assert_allclose(between_groups(v, valid=valid), [0.3, 0.3, np.nan])
    # the cell axis can be any axis
    np.testing.assert_allclose(between_groups(v.T, axis=0), [0.5, 0.3, np.nan])
    assert np.isnan(between_groups(np.array([np.nan, np.nan])))
    assert between_groups(np.zeros((3, 0))).shape == (3,)
    assert np.isnan(between_groups(np.zeros((3, 0)))).all()


def test_between_groups_no_runtime_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        between_groups(np.full((4, 3), np.nan))


def test_equalized_odds_from_rates() -> None:
    tpr = np.array([[0.5, 0.75], [0.5, np.nan]])
    fpr = np.array([[0.1, 0.2], [0.1, 0.4]])
    # row 0: max(0.25, 0.1) ; row 1: TPR gap undefined -> NaN (needs both)
    np.testing.assert_allclose(equalized_odds_from_rates(tpr, fpr), [0.25, np.nan])
    np.testing.assert_allclose(
        equalized_odds_from_rates(tpr, fpr, valid=np.array([True, True])), [0.25, np.nan]
    )


def test_signed_gap_axis_and_error() -> None:
    v = np.array([[0.1, 0.4], [0.5, 0.2]])
    np.testing.assert_allclose(signed_gap(v), [0.3, -0.3])
    np.testing.assert_allclose(signed_gap(v, axis=0), [0.4, -0.2])
    with pytest.raises(ValueError, match="exactly 2 cells"):
        signed_gap(np.zeros((2, 3)))


def test_encode_cells_hand_computed() -> None:
    groups = np.array([["m", "old"], ["f", "young"], ["m", "young"], ["f", "young"], ["m", "old"]])
    cells, values = encode_cells(groups)
    # lexicographic: (f, young)=0, (m, old)=1, (m, young)=2 ; (f, old) has no sample
    assert values == [("f", "young"), ("m", "old"), ("m", "young")]
    np.testing.assert_array_equal(cells, [1, 0, 2, 0, 1])
    # one column: 2-D input keeps tuples, 1-D input gives plain values
    cells1, values1 = encode_cells(np.array([[3], [1], [3]]))
    assert values1 == [(1,), (3,)]
    np.testing.assert_array_equal(cells1, [1, 0, 1])
    cells2, values2 = encode_cells(np.array([3, 1, 3]))
    assert values2 == [1, 3]
    assert type(values2[0]) is int  # Python scalars, JSON-ready
    np.testing.assert_array_equal(cells2, cells1)


def test_encode_cells_object_columns_and_many_columns() -> None:
    groups = np.array([[1, "a"], [0, "b"], [1, "a"]], dtype=object)
    cells, values = encode_cells(groups)
    assert values == [(0, "b"), (1, "a")]
    np.testing.assert_array_equal(cells, [1, 0, 1])
    # 30 binary columns: 2**30 combinations would overflow a naive product code
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 2, (50, 30))
    cells, values = encode_cells(wide)
    assert len(values) == len({tuple(r) for r in wide.tolist()})
    for i in range(50):
        assert values[cells[i]] == tuple(wide[i].tolist())
    assert values == sorted(values)


def test_encode_cells_errors() -> None:
    with pytest.raises(ValueError, match="missing value \\(NaN\\) in row 1"):
        encode_cells(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="cannot be sorted"):
        encode_cells(np.array([1, "a", None], dtype=object))
    with pytest.raises(ValueError, match="G >= 1"):
        encode_cells(np.zeros((4, 0)))
    with pytest.raises(ValueError, match="G >= 1"):
        encode_cells(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ weights and the bootstrap
def _random_problem(seed: int, n: int = 60, n_attr: int = 3, n_cells: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, n_attr))
    p = rng.integers(0, 2, (n, n_attr))
    cells = rng.integers(0, n_cells, n)
    extra = rng.integers(0, 2, (n, n_attr))
    return rng, y, p, cells, extra


def test_integer_weights_equal_repeated_samples() -> None:
    rng, y, p, cells, extra = _random_problem(1)
    w = rng.integers(0, 4, y.shape[0])
    rep = np.repeat(np.arange(y.shape[0]), w)
    weighted = confusion_counts(y, p, cells, n_cells=3, weights=w, extra=extra)
    repeated = confusion_counts(y[rep], p[rep], cells[rep], n_cells=3, extra=extra[rep])
    np.testing.assert_array_equal(weighted, repeated)


def test_weight_matrix_equals_row_by_row() -> None:
    rng, y, p, cells, extra = _random_problem(2)
    w = rng.random((5, y.shape[0]))
    batched = confusion_counts(y, p, cells, n_cells=3, weights=w, extra=extra)
    assert batched.shape == (5, 3, 3, 5)
    for b in range(5):
        single = confusion_counts(y, p, cells, n_cells=3, weights=w[b], extra=extra)
        np.testing.assert_allclose(batched[b], single, rtol=1e-12)
    ones = confusion_counts(y, p, cells, n_cells=3, weights=np.ones((1, y.shape[0])))
    np.testing.assert_array_equal(ones[0], confusion_counts(y, p, cells, n_cells=3))


def test_weight_matrix_matches_explicit_resample() -> None:
    # resample counts W[b] give the same counts as indexing the resampled rows
    rng, y, p, cells, _ = _random_problem(3)
    n = y.shape[0]
    idx = rng.integers(0, n, (4, n))
    w = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float32)
    counts = confusion_counts(y, p, cells, n_cells=3, weights=w)
    for b in range(4):
        direct = confusion_counts(y[idx[b]], p[idx[b]], cells[idx[b]], n_cells=3)
        np.testing.assert_array_equal(counts[b], direct)


def test_attribute_chunking_gives_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    rng, y, p, cells, extra = _random_problem(4, n_attr=7)
    w = rng.integers(0, 3, (6, y.shape[0])).astype(np.float64)
    whole = confusion_counts(y, p, cells, n_cells=3, weights=w, extra=extra)
    # budget of one attribute's indicator -> 7 chunks
    monkeypatch.setattr(groups_module, "_INDICATOR_BYTES", 3 * 5 * y.shape[0] * 8)
    chunked = confusion_counts(y, p, cells, n_cells=3, weights=w, extra=extra)
    np.testing.assert_array_equal(whole, chunked)


def test_counts_sum_to_weight_totals() -> None:
    rng, y, p, cells, _ = _random_problem(5)
    w = rng.integers(0, 5, (3, y.shape[0])).astype(np.float32)
    counts = confusion_counts(y, p, cells, n_cells=3, weights=w)
    np.testing.assert_array_equal(counts.sum(axis=(2, 3)), np.repeat(w.sum(1)[:, None], 3, 1))


def test_bool_and_float_inputs_are_accepted() -> None:
    a = confusion_counts(
        Y[:, None].astype(bool), P[:, None].astype(float), G.astype(bool), n_cells=2
    )
    np.testing.assert_array_equal(a, confusion_counts(Y[:, None], P[:, None], G, n_cells=2))


def test_empty_input() -> None:
    counts = confusion_counts(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int), n_cells=2)
    assert counts.shape == (2, 2, 4)
    assert (counts == 0).all()
    assert np.isnan(accuracy_gap(np.zeros(0), np.zeros(0), groups=np.zeros(0)))
    boot = confusion_counts(
        np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int), n_cells=2, weights=np.zeros((3, 0))
    )
    assert boot.shape == (3, 2, 2, 4)


# ------------------------------------------------------------------------------------ errors
def test_confusion_counts_errors() -> None:
    y2 = Y[:, None]
    with pytest.raises(ValueError, match=r"`y_true` must be 2-D with shape \(N, A\)"):
        confusion_counts(Y, P, G, n_cells=2)
    with pytest.raises(ValueError, match="same shape"):
        confusion_counts(y2, np.c_[P, P], G, n_cells=2)
    with pytest.raises(ValueError, match=r"only 0/1 values; got 2 at index \(1, 0\)"):
        confusion_counts(np.array([[0], [2]]), np.array([[0], [1]]), [0, 0], n_cells=1)
    with pytest.raises(TypeError, match="0/1 numbers or booleans"):
        confusion_counts(np.array([["a"]]), np.array([[1]]), [0], n_cells=1)
    with pytest.raises(ValueError, match="one entry per sample"):
        confusion_counts(y2, y2, G[:5], n_cells=2)
    with pytest.raises(ValueError, match=r"`cells` must be 1-D"):
        confusion_counts(y2, y2, G[:, None], n_cells=2)
    with pytest.raises(ValueError, match=r"\[0, n_cells=2\); got 2 at row 7"):
        confusion_counts(y2, y2, np.r_[G[:7], 2], n_cells=2)
    with pytest.raises(ValueError, match=r"\[0, n_cells=2\); got -1"):
        confusion_counts(y2, y2, np.r_[G[:7], -1], n_cells=2)
    with pytest.raises(TypeError, match="integer cell codes"):
        confusion_counts(y2, y2, G.astype(float), n_cells=2)
    with pytest.raises(ValueError, match="`n_cells` must be a positive int"):
        confusion_counts(y2, y2, G, n_cells=0)
    with pytest.raises(ValueError, match="`extra` must have the same shape"):
        confusion_counts(y2, y2, G, n_cells=2, extra=np.c_[Y, Y])
    with pytest.raises(ValueError, match=r"`weights` must have shape \(N,\) or \(B, N\)"):
        confusion_counts(y2, y2, G, n_cells=2, weights=np.ones((1, 1, 8)))
    with pytest.raises(ValueError, match="one column per sample"):
        confusion_counts(y2, y2, G, n_cells=2, weights=np.ones((2, 7)))
    with pytest.raises(ValueError, match="finite and nonnegative"):
        confusion_counts(y2, y2, G, n_cells=2, weights=-np.ones(8))
    with pytest.raises(ValueError, match="finite and nonnegative"):
        confusion_counts(y2, y2, G, n_cells=2, weights=np.full((2, 8), np.nan))
    with pytest.raises(TypeError, match="`weights` must hold numbers"):
        confusion_counts(y2, y2, G, n_cells=2, weights=np.array(["1"] * 8))


def test_rates_from_counts_error() -> None:
    with pytest.raises(ValueError, match="last axis of length 4"):
        rates_from_counts(np.zeros((2, 3)))


def test_wrapper_errors() -> None:
    with pytest.raises(ValueError, match="`groups` has 7"):
        fnr_gap(Y, P, groups=G[:7])
    with pytest.raises(ValueError, match=r"`y_pred` must be 1-D"):
        fnr_gap(Y, P[:, None], groups=G)


# -------------------------------------------------------------- Fairlearn as the reference
@st.composite
def labelled_groups(draw: st.DrawFn, every_group_both_classes: bool = True):
    """Samples where (optionally) every group has positives and negatives."""
    n_groups = draw(st.integers(2, 4))
    names = draw(
        st.lists(
            st.text("abcxyz", min_size=1, max_size=3),
            min_size=n_groups,
            max_size=n_groups,
            unique=True,
        )
    )
    extra = draw(st.integers(0, 40))
    g = [names[i % n_groups] for i in range(2 * n_groups)]
    y = [1] * n_groups + [0] * n_groups  # one positive and one negative per group
    g += [
        names[i]
        for i in draw(st.lists(st.integers(0, n_groups - 1), min_size=extra, max_size=extra))
    ]
    y += draw(st.lists(st.integers(0, 1), min_size=extra, max_size=extra))
    p = draw(st.lists(st.integers(0, 1), min_size=len(y), max_size=len(y)))
    order = draw(st.permutations(range(len(y))))
    return np.array(g)[order], np.array(y)[order], np.array(p)[order]


@settings(max_examples=15, deadline=None)
@given(labelled_groups())
def test_matches_fairlearn_metricframe(data) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from fairlearn.metrics import (
        demographic_parity_difference as fl_dpd,
    )
    from fairlearn.metrics import (
        equalized_odds_difference as fl_eod,
    )
    from sklearn.metrics import accuracy_score

    g, y, p = data
    mf = MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "fnr": false_negative_rate,
            "selection_rate": selection_rate,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=g,
    )
    values, ours = rates_by_group(y, p, groups=g)
    by_group = mf.by_group.loc[values]
    diff = mf.difference(method="between_groups")
    for name in ("accuracy", "tpr", "fpr", "fnr", "selection_rate"):
        np.testing.assert_allclose(ours[name], by_group[name].to_numpy(float), atol=1e-12)
        assert float(between_groups(ours[name])) == pytest.approx(diff[name], abs=1e-12)
    assert accuracy_gap(y, p, groups=g) == pytest.approx(diff["accuracy"], abs=1e-12)
    assert tpr_gap(y, p, groups=g) == pytest.approx(diff["tpr"], abs=1e-12)
    assert fpr_gap(y, p, groups=g) == pytest.approx(diff["fpr"], abs=1e-12)
    assert fnr_gap(y, p, groups=g) == pytest.approx(diff["fnr"], abs=1e-12)
    assert selection_rate_gap(y, p, groups=g) == pytest.approx(diff["selection_rate"], abs=1e-12)
    assert equalized_odds_difference(y, p, groups=g) == pytest.approx(
        fl_eod(y, p, sensitive_features=g), abs=1e-12
    )
    assert demographic_parity_difference(y, p, groups=g) == pytest.approx(
        fl_dpd(y, p, sensitive_features=g), abs=1e-12
    )


def test_fairlearn_divergence_on_undefined_rates_is_deliberate() -> None:
    # Fairlearn scores the TPR of a group without positives as 0 (scikit-learn's
    # confusion_matrix zero-fills 0/0); we leave the group out. Group 1 has no positives.
    from fairlearn.metrics import MetricFrame, true_positive_rate

    g = np.array([0, 0, 0, 1, 1, 1])
    y = np.array([1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=p, sensitive_features=g)
    assert mf.by_group.loc[1] == 0.0
    assert mf.difference() == 0.5  # 0.5 - 0 (the undefined group counted as 0)
    assert np.isnan(tpr_gap(y, p, groups=g))


# ------------------------------------------------------------------------------ invariances
@settings(max_examples=40, deadline=None)
@given(labelled_groups(), st.randoms(use_true_random=False))
def test_invariant_to_sample_order_and_group_relabelling(data, rnd) -> None:
    g, y, p = data
    order = np.array(rnd.sample(range(len(y)), len(y)))
    names = sorted(set(g.tolist()))
    shuffled = names[:]
    rnd.shuffle(shuffled)
    relabel = dict(zip(names, ["G" + s for s in shuffled], strict=True))
    g2 = np.array([relabel[v] for v in g[order]])
    for fn in (
        accuracy_gap,
        tpr_gap,
        fpr_gap,
        fnr_gap,
        selection_rate_gap,
        equalized_odds_difference,
    ):
        assert fn(y[order], p[order], groups=g2) == pytest.approx(fn(y, p, groups=g), abs=1e-15)
    # per-group rates move with their group
    values, rates = rates_by_group(y, p, groups=g)
    values2, rates2 = rates_by_group(y[order], p[order], groups=g2)
    position = {v: i for i, v in enumerate(values2)}
    idx = [position[relabel[v]] for v in values]
    for name, arr in rates.items():
        np.testing.assert_allclose(rates2[name][idx], arr, atol=1e-15)
