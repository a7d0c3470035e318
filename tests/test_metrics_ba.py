"""Bias amplification (SPEC §4.5): hand-computed value, every eligibility filter, counts form."""

from __future__ import annotations

import numpy as np
import pytest

from audit.metrics import (
    BiasAmplification,
    bias_amplification,
    bias_amplification_from_counts,
    bootstrap_weights,
    confusion_counts,
)

# Evaluated data (8 samples):
#   g = 0: y = 1 1 0 0   p = 1 0 0 0   -> true positives 2, predicted positives 1
#   g = 1: y = 1 1 1 0   p = 1 1 1 1   -> true positives 3, predicted positives 4
G = np.array([0, 0, 0, 0, 1, 1, 1, 1])
Y = np.array([1, 1, 0, 0, 1, 1, 1, 0])
P = np.array([1, 0, 0, 0, 1, 1, 1, 1])
# Train split: rate in g=0 is 1/4, in g=1 is 2/4 -> v* = 1, relative difference
# (0.5 - 0.25) / 0.5 = 0.5 >= 0.1
TRAIN_G = np.array([0, 0, 0, 0, 1, 1, 1, 1])
TRAIN_Y = np.array([1, 0, 0, 0, 1, 1, 0, 0])


def test_hand_computed_value() -> None:
    ba = bias_amplification(Y, P, groups=G, train_y=TRAIN_Y, train_groups=TRAIN_G, min_positives=2)
    # predicted share in v*=1: 4 / (1 + 4) = 0.8 ; true share: 3 / (2 + 3) = 0.6
    # BA = 0.8 - 0.6 = 0.2
    assert ba.reason is None
    assert ba.value == pytest.approx(0.2)
    assert ba.majority_value == 1
    assert ba.predicted_share == pytest.approx(0.8)
    assert ba.true_share == pytest.approx(0.6)
    assert ba.to_dict() == {
        "value": ba.value,
        "reason": None,
        "majority_value": 1,
        "predicted_share": ba.predicted_share,
        "true_share": ba.true_share,
    }


def test_majority_in_group_zero_and_string_groups() -> None:
    # swap train rates: g=0 rate 2/4, g=1 rate 1/4 -> v* = 0
    # predicted share in v*=0: 1/5 = 0.2 ; true share 2/5 = 0.4 ; BA = -0.2
    names = np.array(["f", "m"])
    ba = bias_amplification(
        Y,
        P,
        groups=names[G],
        train_y=np.array([1, 1, 0, 0, 1, 0, 0, 0]),
        train_groups=names[TRAIN_G],
        min_positives=2,
    )
    assert ba.value == pytest.approx(-0.2)
    assert ba.majority_value == "f"


def test_too_few_positives_default_filter() -> None:
    # default min_positives=10: group 0 has only 2 positives
    ba = bias_amplification(Y, P, groups=G, train_y=TRAIN_Y, train_groups=TRAIN_G)
    assert ba.value is None
    assert ba.reason == (
        "group value 0 has 2 positive(s) of the target in the evaluated data; "
        "at least 10 are needed"
    )
    assert ba.majority_value == 1
    # 3 positives in g=1 also fail when g=0 is fine
    ba = bias_amplification(Y, P, groups=G, train_y=TRAIN_Y, train_groups=TRAIN_G, min_positives=3)
    assert "group value 0 has 2 positive(s)" in ba.reason


def test_group_absent_from_evaluated_data() -> None:
    # g=0 is in the train split only: 0 positives in the evaluated data
    ba = bias_amplification(
        Y[4:], P[4:], groups=G[4:], train_y=TRAIN_Y, train_groups=TRAIN_G, min_positives=1
    )
    assert ba.value is None
    assert "group value 0 has 0 positive(s)" in ba.reason


def test_train_rates_too_close() -> None:
    # train rates 25/50 = 0.5 and 23/50 = 0.46 -> relative difference 0.04 / 0.5 = 8% < 10%
    train_g = np.r_[np.zeros(50), np.ones(50)]
    train_y = np.r_[np.ones(25), np.zeros(25), np.ones(23), np.zeros(27)]
    ba = bias_amplification(Y, P, groups=G, train_y=train_y, train_groups=train_g, min_positives=1)
    assert ba.value is None
    assert ba.reason.startswith("train positive rates differ by 8.0% relative")
    assert "at least 10% is needed" in ba.reason
    assert ba.majority_value == 0
    # the same data passes with a looser filter: v* = 0 (rate 0.5 > 0.46)
    # predicted share 1/5 - true share 2/5 = -0.2
    ba = bias_amplification(
        Y,
        P,
        groups=G,
        train_y=train_y,
        train_groups=train_g,
        min_positives=1,
        min_relative_difference=0.05,
    )
    assert ba.value == pytest.approx(-0.2)


def test_equal_or_zero_train_rates() -> None:
    ba = bias_amplification(
        Y,
        P,
        groups=G,
        train_y=np.array([1, 0, 1, 0]),
        train_groups=np.array([0, 0, 1, 1]),
        min_positives=1,
        min_relative_difference=0.0,
    )
    assert ba.value is None
    assert ba.reason.startswith("train positive rates are equal (0.5 in 0 and 0.5 in 1)")
    ba = bias_amplification(
        Y, P, groups=G, train_y=np.zeros(4), train_groups=np.array([0, 0, 1, 1]), min_positives=1
    )
    assert ba.value is None and "equal" in ba.reason


def test_no_train_samples_in_a_group() -> None:
    ba = bias_amplification(
        Y[4:], P[4:], groups=G[4:], train_y=np.array([1, 0]), train_groups=np.array([0, 0])
    )
    assert ba.value is None
    assert ba.reason == "no train samples with group value 1; v* is undefined"


def test_zero_predicted_positives() -> None:
    ba = bias_amplification(
        Y, np.zeros(8), groups=G, train_y=TRAIN_Y, train_groups=TRAIN_G, min_positives=2
    )
    assert ba.value is None
    assert "predicts no positives" in ba.reason
    assert ba.majority_value == 1


def test_group_not_binary() -> None:
    g = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    ba = bias_amplification(Y, P, groups=g, train_y=TRAIN_Y, train_groups=TRAIN_G)
    assert ba == BiasAmplification(
        None, "the group attribute has 3 value(s) [0, 1, 2]; bias amplification needs exactly 2"
    )
    ba = bias_amplification(Y, P, groups=np.zeros(8), train_y=TRAIN_Y, train_groups=np.zeros(8))
    assert ba.value is None and "has 1 value(s)" in ba.reason


def test_errors() -> None:
    kw = {"train_y": TRAIN_Y, "train_groups": TRAIN_G}
    with pytest.raises(ValueError, match="must be 1-D \\(one binary attribute\\)"):
        bias_amplification(Y, P, groups=G[:, None], **kw)
    with pytest.raises(ValueError, match="`groups` has 7"):
        bias_amplification(Y, P, groups=G[:7], **kw)
    with pytest.raises(ValueError, match="`train_groups` has 7"):
        bias_amplification(Y, P, groups=G, train_y=TRAIN_Y, train_groups=TRAIN_G[:7])
    with pytest.raises(ValueError, match="`min_positives` must be an int >= 0"):
        bias_amplification(Y, P, groups=G, min_positives=-1, **kw)
    with pytest.raises(ValueError, match="`min_relative_difference` must lie in"):
        bias_amplification(Y, P, groups=G, min_relative_difference=1.5, **kw)
    with pytest.raises(ValueError, match="`train_y` must hold only 0/1"):
        bias_amplification(Y, P, groups=G, train_y=TRAIN_Y * 2, train_groups=TRAIN_G)


# ------------------------------------------------------------------------------ counts form
def test_counts_form_matches_and_broadcasts() -> None:
    counts = confusion_counts(np.c_[Y, Y], np.c_[P, 1 - P], G, n_cells=2)  # (A=2, 2, 4)
    # target 0 as above with v*=1: 0.2. Target 1: predictions flipped ->
    #   g=0 predicted positives 3, g=1 predicted 0 -> share in v*=0 is 3/3; true share 2/5
    #   BA = 1 - 0.4 = 0.6
    ba = bias_amplification_from_counts(counts, majority_cell=np.array([1, 0]))
    np.testing.assert_allclose(ba, [0.2, 0.6])
    # -1: no v* for that target -> NaN
    ba = bias_amplification_from_counts(counts, majority_cell=np.array([1, -1]))
    np.testing.assert_allclose(ba, [0.2, np.nan])
    # a 5th (extra) statistic is ignored
    extra = confusion_counts(np.c_[Y, Y], np.c_[P, 1 - P], G, n_cells=2, extra=np.c_[Y, P])
    np.testing.assert_allclose(bias_amplification_from_counts(extra, majority_cell=1)[0], 0.2)


def test_counts_form_bootstrap_shape_and_nan() -> None:
    w = bootstrap_weights(8, n_resamples=50, seed=0)
    counts = confusion_counts(np.c_[Y, Y], np.c_[P, np.zeros(8)], G, n_cells=2, weights=w)
    ba = bias_amplification_from_counts(counts, majority_cell=np.array([1, 1]))
    assert ba.shape == (50, 2)
    # target 1 never predicted positive: predicted share 0/0 -> NaN in every replicate
    assert np.isnan(ba[:, 1]).all()
    # each replicate equals the direct formula on that replicate's counts
    b = int(np.flatnonzero(~np.isnan(ba[:, 0]))[0])
    c = counts[b, 0]
    pp, pos = c[:, 0] + c[:, 1], c[:, 0] + c[:, 3]
    assert ba[b, 0] == pytest.approx(pp[1] / pp.sum() - pos[1] / pos.sum())


def test_counts_form_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2, 4\)"):
        bias_amplification_from_counts(np.zeros((3, 3, 4)), majority_cell=0)
    with pytest.raises(ValueError, match="must be 0 or 1 \\(the cell of v\\*\\) or -1"):
        bias_amplification_from_counts(np.zeros((3, 2, 4)), majority_cell=2)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        bias_amplification_from_counts(np.zeros((3, 2, 4)), majority_cell=0.5)
    with pytest.raises(ValueError, match="does not broadcast"):
        bias_amplification_from_counts(np.zeros((3, 2, 4)), majority_cell=np.zeros(2, int))
