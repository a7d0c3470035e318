"""Calibration (SPEC §4.3): ECE, multiclass ECE and the reliability curve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.metrics import (
    calibration_curve,
    expected_calibration_error,
    multiclass_expected_calibration_error,
)

# p -> bin (floor(10 p), 1.0 in the last bin):
#   0.05 -> 0 ; 0.15, 0.15 -> 1 ; 0.55 -> 5 ; 0.95, 1.0 -> 9
P = np.array([0.05, 0.15, 0.15, 0.55, 0.95, 1.0])
Y = np.array([0, 0, 1, 1, 1, 1])


def test_ece_hand_computed() -> None:
    # bin 0: 1/6 * |0.05 - 0|   = 0.05/6
    # bin 1: 2/6 * |0.15 - 0.5| = 0.70/6
    # bin 5: 1/6 * |0.55 - 1|   = 0.45/6
    # bin 9: 2/6 * |0.975 - 1|  = 0.05/6
    # ECE = 1.25 / 6
    assert expected_calibration_error(Y, P) == pytest.approx(1.25 / 6)
    # 2 bins [0, .5) and [.5, 1]:
    #   bin 0 (0.05, 0.15, 0.15): 3/6 * |0.35/3 - 1/3| = |0.35 - 1| / 6 = 0.65/6
    #   bin 1 (0.55, 0.95, 1.0):  3/6 * |2.5/3 - 3/3|  = |2.5 - 3| / 6  = 0.50/6
    assert expected_calibration_error(Y, P, n_bins=2) == pytest.approx(1.15 / 6)


def test_calibration_curve_hand_computed() -> None:
    mean_p, mean_y, counts = calibration_curve(Y, P)
    np.testing.assert_array_equal(counts, [1, 2, 0, 0, 0, 1, 0, 0, 0, 2])
    assert counts.dtype == np.int64
    np.testing.assert_allclose(mean_p[[0, 1, 5, 9]], [0.05, 0.15, 0.55, 0.975])
    np.testing.assert_allclose(mean_y[[0, 1, 5, 9]], [0.0, 0.5, 1.0, 1.0])
    assert np.isnan(mean_p[[2, 3, 4, 6, 7, 8]]).all()
    assert np.isnan(mean_y[[2, 3, 4, 6, 7, 8]]).all()
    # ECE is the count-weighted mean gap of the curve
    defined = counts > 0
    ece = np.sum(counts[defined] * np.abs(mean_p - mean_y)[defined]) / counts.sum()
    assert ece == pytest.approx(expected_calibration_error(Y, P))


def test_bin_edges() -> None:
    # bin b holds b/10 <= p < (b+1)/10; p = 1.0 is in the last bin
    _, _, counts = calibration_curve(np.zeros(5), np.array([0.0, 0.1, 0.3, 0.7, 1.0]))
    np.testing.assert_array_equal(np.flatnonzero(counts), [0, 1, 3, 7, 9])


def test_perfect_calibration_is_zero() -> None:
    # 4 samples at p = 0.25 with one positive, 2 at p = 0.5 with one positive
    p = np.array([0.25, 0.25, 0.25, 0.25, 0.5, 0.5])
    y = np.array([1, 0, 0, 0, 1, 0])
    assert expected_calibration_error(y, p) == 0.0


def test_multiclass_ece_hand_computed() -> None:
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # pred 0, y 0: correct, conf 0.7 -> bin 7
            [0.4, 0.5, 0.1],  # pred 1, y 0: wrong,   conf 0.5 -> bin 5
            [0.2, 0.2, 0.6],  # pred 2, y 2: correct, conf 0.6 -> bin 6
            [0.34, 0.33, 0.33],  # pred 0, y 1: wrong, conf 0.34 -> bin 3
        ]
    )
    y = np.array([0, 0, 2, 1])
    # (|0.7 - 1| + |0.5 - 0| + |0.6 - 1| + |0.34 - 0|) / 4 = 1.54 / 4
    assert multiclass_expected_calibration_error(y, probs) == pytest.approx(0.385)


def test_multiclass_ties_take_the_first_class() -> None:
    # tie between class 0 and 1 at 0.45: prediction is class 0 -> correct for y=0
    probs = np.array([[0.45, 0.45, 0.1]])
    assert multiclass_expected_calibration_error(np.array([0]), probs) == pytest.approx(0.55)
    assert multiclass_expected_calibration_error(np.array([1]), probs) == pytest.approx(0.45)


def test_empty_input_is_nan() -> None:
    assert np.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))
    assert np.isnan(multiclass_expected_calibration_error(np.zeros(0, int), np.zeros((0, 3))))
    mean_p, mean_y, counts = calibration_curve(np.zeros(0), np.zeros(0))
    assert np.isnan(mean_p).all() and np.isnan(mean_y).all() and (counts == 0).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=40), st.randoms())
def test_ece_properties(rows, rnd) -> None:
    p = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    ece = expected_calibration_error(y, p)
    assert 0.0 <= ece <= 1.0
    order = np.array(rnd.sample(range(len(p)), len(p)))
    assert expected_calibration_error(y[order], p[order]) == pytest.approx(ece, abs=1e-12)
    # brute force over bins
    b = np.minimum(np.floor(p * 10).astype(int), 9)
    ref = sum(
        (b == k).mean() * abs(p[b == k].mean() - y[b == k].mean())
        for k in range(10)
        if (b == k).any()
    )
    assert ece == pytest.approx(ref, abs=1e-12)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"finite probabilities in \[0, 1\]; got 1.5 at row 1"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match="finite probabilities"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="`prob` must have 1 dimension"):
        expected_calibration_error(np.array([0, 1]), np.array([[0.2, 0.5]]))
    with pytest.raises(TypeError, match="`prob` must hold numbers"):
        expected_calibration_error(np.array([0, 1]), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="`y_true` must hold only 0/1"):
        expected_calibration_error(np.array([0, 2]), np.array([0.2, 0.5]))
    with pytest.raises(ValueError, match="`prob` has 3"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, 0.5, 0.1]))
    with pytest.raises(ValueError, match="`n_bins` must be >= 1"):
        expected_calibration_error(Y, P, n_bins=0)
    with pytest.raises(TypeError, match="`n_bins` must be an int"):
        calibration_curve(Y, P, n_bins=2.5)
    probs = np.array([[0.5, 0.5], [0.1, 0.9]])
    with pytest.raises(ValueError, match=r"\[0, 2\).*got 2 at row 1"):
        multiclass_expected_calibration_error(np.array([0, 2]), probs)
    with pytest.raises(ValueError, match="`y_true_class` must be 1-D"):
        multiclass_expected_calibration_error(np.array([[0, 1]]), probs)
    with pytest.raises(TypeError, match="integer class indices"):
        multiclass_expected_calibration_error(np.array([0.0, 1.0]), probs)
    with pytest.raises(ValueError, match="`probs` must have 2 dimension"):
        multiclass_expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5]))


def test_per_cell_ece_from_the_engine_equals_ece_of_each_cell() -> None:
    """binned_sums + ece_from_binned (one pass over every cell) = ECE on each cell's rows."""
    from audit.metrics import binned_sums, ece_from_binned

    rng = np.random.default_rng(3)
    n, n_attr, n_cells = 400, 3, 4
    y = rng.integers(0, 2, size=(n, n_attr))
    p = rng.random((n, n_attr))
    p[:7, 0] = 1.0  # p = 1 falls into the last bin
    p[7:12, 1] = 0.0
    cells = rng.integers(0, n_cells - 1, size=n)  # the last cell stays empty
    ece = ece_from_binned(binned_sums(y, p, cells, n_cells=n_cells))
    assert ece.shape == (n_attr, n_cells)
    for a in range(n_attr):
        for c in range(n_cells - 1):
            sel = cells == c
            assert ece[a, c] == pytest.approx(
                expected_calibration_error(y[sel, a], p[sel, a]), abs=1e-12
            )
        assert np.isnan(ece[a, n_cells - 1])  # no samples: undefined, not 0


def test_binned_sums_hand_computed_and_errors() -> None:
    from audit.metrics import binned_sums, ece_from_binned

    y = np.array([[1], [0], [1], [0]])
    p = np.array([[0.95], [0.15], [0.55], [0.52]])
    sums = binned_sums(y, p, np.array([0, 0, 1, 1]), n_cells=2, n_bins=2)
    # cell 0: bin 0 holds p=0.15 (y=0), bin 1 holds p=0.95 (y=1); cell 1: both in bin 1
    np.testing.assert_allclose(sums[0, 0], [[1, 0.15, 0], [1, 0.95, 1]])
    np.testing.assert_allclose(sums[0, 1], [[0, 0, 0], [2, 1.07, 1]])
    np.testing.assert_allclose(ece_from_binned(sums)[0], [(0.15 + 0.05) / 2, 0.07 / 2])
    with pytest.raises(ValueError, match="same shape"):
        binned_sums(y, p[:3], np.zeros(4, int), n_cells=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binned_sums(y, p + 1, np.zeros(4, int), n_cells=1)
    with pytest.raises(ValueError, match="n_cells"):
        binned_sums(y, p, np.array([0, 0, 1, 2]), n_cells=2)
    with pytest.raises(ValueError, match=r"\(\.\.\., n_bins, 3\)"):
        ece_from_binned(np.zeros((2, 4)))
