"""Paired bootstrap (SPEC §6.3): resample counts, percentile CIs, coverage under Δ = 0."""

from __future__ import annotations

import numpy as np
import pytest

from audit.metrics import (
    between_groups,
    bootstrap_weights,
    confusion_counts,
    percentile_ci,
    rates_from_counts,
)
from audit.metrics import bootstrap as bootstrap_module


def test_weights_shape_dtype_and_row_sums() -> None:
    w = bootstrap_weights(37, n_resamples=11, seed=5)
    assert w.shape == (11, 37)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w.sum(axis=1), np.full(11, 37.0))
    assert (w >= 0).all()
    np.testing.assert_array_equal(w, np.round(w))  # whole counts


def test_weights_deterministic_under_seed() -> None:
    a = bootstrap_weights(50, n_resamples=20, seed=123)
    b = bootstrap_weights(50, n_resamples=20, seed=123)
    c = bootstrap_weights(50, n_resamples=20, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the first rows do not depend on how many resamples were asked for
    np.testing.assert_array_equal(bootstrap_weights(50, n_resamples=5, seed=123), a[:5])


def test_weights_are_the_counts_of_seeded_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    # reference: one draw of all indices, counted row by row
    draws = np.random.default_rng(7).integers(0, 13, size=(9, 13), dtype=np.int64)
    expected = np.stack([np.bincount(row, minlength=13) for row in draws])
    np.testing.assert_array_equal(bootstrap_weights(13, n_resamples=9, seed=7), expected)
    # chunking rows (here 2 rows per chunk) does not change the stream
    monkeypatch.setattr(bootstrap_module, "_DRAWS_PER_CHUNK", 26)
    np.testing.assert_array_equal(bootstrap_weights(13, n_resamples=9, seed=7), expected)


def test_weights_mean_count_is_one() -> None:
    w = bootstrap_weights(400, n_resamples=500, seed=0)
    # each count is Binomial(400, 1/400): mean 1, variance ~1
    assert w.mean() == pytest.approx(1.0)
    assert w.var() == pytest.approx(1.0, abs=0.05)


def test_weights_errors() -> None:
    with pytest.raises(ValueError, match="`n` must be >= 1; got 0"):
        bootstrap_weights(0, n_resamples=3, seed=0)
    with pytest.raises(ValueError, match="`n_resamples` must be >= 1"):
        bootstrap_weights(5, n_resamples=0, seed=0)
    with pytest.raises(TypeError, match="`n` must be an int"):
        bootstrap_weights(5.0, n_resamples=3, seed=0)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        bootstrap_weights(5, n_resamples=3, seed=None)


def test_percentile_ci_hand_computed() -> None:
    # 101 replicates 0, 1, ..., 100: the 2.5th and 97.5th percentiles are 2.5 and 97.5
    lo, hi = percentile_ci(np.arange(101.0))
    assert (lo, hi) == (pytest.approx(2.5), pytest.approx(97.5))
    # level 0.5 -> 25th and 75th percentiles of 1..5 (linear interpolation): 2 and 4
    assert percentile_ci(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), level=0.5) == (2.0, 4.0)


def test_percentile_ci_ignores_nan_replicates() -> None:
    x = np.arange(101.0)
    with_nan = np.r_[x, np.full(60, np.nan)]  # 60 of 161 NaN (37%): ignored
    assert percentile_ci(with_nan) == percentile_ci(x)
    mostly_nan = np.r_[x[:10], np.full(11, np.nan)]  # 11 of 21 NaN (52%): no interval
    lo, hi = percentile_ci(mostly_nan)
    assert np.isnan(lo) and np.isnan(hi)
    half_nan = np.r_[np.arange(5.0), np.full(5, np.nan)]  # exactly 50%: still estimated
    assert percentile_ci(half_nan, level=0.5) == (1.0, 3.0)


def test_percentile_ci_per_column() -> None:
    samples = np.stack([np.arange(101.0), np.full(101, np.nan), -np.arange(101.0)], axis=1)
    lo, hi = percentile_ci(samples[:, :, None])
    assert lo.shape == (3, 1)
    np.testing.assert_allclose(lo[:, 0], [2.5, np.nan, -97.5])
    np.testing.assert_allclose(hi[:, 0], [97.5, np.nan, -2.5])
    lo, hi = percentile_ci(np.zeros((0, 2)))
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_percentile_ci_errors() -> None:
    with pytest.raises(ValueError, match="`level` must lie strictly between 0 and 1; got 1.0"):
        percentile_ci(np.arange(5.0), level=1.0)
    with pytest.raises(ValueError, match="leading replicate axis"):
        percentile_ci(np.float64(3.0))


def _fnr_gap_replicates(y, pred, g, w):
    counts = confusion_counts(y[:, None], pred[:, None], g, n_cells=2, weights=w)
    return between_groups(rates_from_counts(counts)["fnr"])[:, 0]


def test_paired_delta_coverage_under_no_change() -> None:
    # Dense and "pruned" predictions are drawn independently from the same distribution
    # (error rate 10% in group 0, 30% in group 1): the true Δ of the FNR gap is 0. The
    # paired 95% percentile interval should contain 0 about 95% of the time (over seeds
    # 1-5 this setup gives 0.90-0.955: the percentile interval under-covers a little at
    # ~60 positives per group).
    rng = np.random.default_rng(2024)
    n_sets, n, n_boot = 200, 300, 200
    covered = 0
    for s in range(n_sets):
        g = rng.integers(0, 2, n)
        y = (rng.random(n) < 0.4).astype(np.int8)
        err = np.where(g == 1, 0.3, 0.1)
        dense = y ^ (rng.random(n) < err)
        pruned = y ^ (rng.random(n) < err)
        w = bootstrap_weights(n, n_resamples=n_boot, seed=s)
        delta = _fnr_gap_replicates(y, pruned, g, w) - _fnr_gap_replicates(y, dense, g, w)
        lo, hi = percentile_ci(delta, level=0.95)
        covered += lo <= 0.0 <= hi
    assert 0.88 <= covered / n_sets <= 0.99


def test_paired_delta_detects_a_real_change() -> None:
    # pruned model misses 30% more positives in group 1 only: the interval excludes 0
    rng = np.random.default_rng(0)
    n = 2000
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.5).astype(np.int8)
    dense = y ^ (rng.random(n) < 0.1)
    pruned = dense.copy()
    pruned[(g == 1) & (y == 1) & (rng.random(n) < 0.3)] = 0
    w = bootstrap_weights(n, n_resamples=300, seed=1)
    delta = _fnr_gap_replicates(y, pruned, g, w) - _fnr_gap_replicates(y, dense, g, w)
    lo, hi = percentile_ci(delta)
    assert lo > 0.15 and hi < 0.4
