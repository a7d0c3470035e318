"""Threshold calibration and rare-value under-prediction (SPEC §4.4, §4.6).

Owns: the paper's countermeasure — a per-attribute threshold ``t_a`` chosen so that the
number of predicted positives ``#{p > t_a}`` equals the number of label positives — and the
under-prediction ratio U. Predictions are always ``y_pred = 1[p > t]`` (strict).

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_binary, as_prob


def _below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def _between(low: float, high: float) -> float:
    """Return t with ``low <= t < high``: ``p > t`` then selects ``high`` but not ``low``."""
    mid = low + (high - low) / 2.0
    # for adjacent floats the midpoint can round up to `high`; `low` itself still separates
    return mid if mid < high else low


def _threshold(p: np.ndarray, k: int) -> float:
    """Threshold for one attribute: ``#{p > t}`` equals k, or as close as ties allow."""
    n = p.shape[0]
    if k == 0:
        return float(p.max())
    if k == n:
        return _below(float(p.min()))
    s = np.sort(p)[::-1]  # descending
    upper, lower = float(s[k - 1]), float(s[k])  # k-th and (k+1)-th largest
    if upper > lower:
        return _between(lower, upper)
    # A tie straddles position k: no threshold gives exactly k. Either put the whole tied
    # block below t (count = #{p > v}) or above it (count = #{p >= v}); take the count
    # nearer to k, and the higher threshold (fewer positives) when both are equally near.
    v = upper
    n_above = int(np.count_nonzero(s > v))
    n_at_or_above = int(np.count_nonzero(s >= v))
    greater = s[s > v]
    t_high = _between(v, float(greater.min())) if greater.size else v
    smaller = s[s < v]
    t_low = _between(float(smaller.max()), v) if smaller.size else _below(v)
    if abs(n_above - k) <= abs(n_at_or_above - k):
        return t_high
    return t_low


def calibrate_thresholds(prob: ArrayLike, y_true: ArrayLike) -> np.ndarray:
    """Per-attribute thresholds that predict as many positives as there are labels.

    For attribute ``a`` with ``k_a = sum_i y_ia`` and the probabilities sorted descending
    ``s_1 >= s_2 >= ... >= s_N``::

        k_a = 0       ->  t_a = s_1                  (nothing is > the maximum)
        k_a = N       ->  t_a = nextafter(s_N, -inf) (everything is > t_a)
        s_k > s_k+1   ->  t_a = (s_k + s_k+1) / 2    (exactly k_a predicted positives)

    When ``s_k = s_k+1`` (a tie at the boundary) no threshold gives exactly ``k_a``
    positives: the tied block is put entirely above or below ``t_a``, whichever count is
    nearer to ``k_a`` (the higher threshold, i.e. fewer positives, on equal distance), with
    ``t_a`` the midpoint between the tied value and the nearest distinct value.

    Parameters
    ----------
    prob : array-like of shape (N, A)
        Probabilities on the calibration split.
    y_true : array-like of shape (N, A)
        0/1 labels on the calibration split.

    Returns
    -------
    numpy.ndarray of shape (A,)
        Thresholds to use as ``y_pred = prob > t``; NaN for an attribute when N = 0.

    Raises
    ------
    ValueError
        On mismatched shapes, non-0/1 labels or invalid probabilities.
    """
    p = as_prob(prob, name="prob", ndim=2)
    y = as_binary(y_true, name="y_true", ndim=2)
    if p.shape != y.shape:
        raise ValueError(
            f"`prob` and `y_true` must have the same shape (N, A); got {p.shape} and {y.shape}."
        )
    n, n_attr = p.shape
    out = np.full(n_attr, np.nan)
    if n == 0:
        return out
    k = y.sum(axis=0)
    for a in range(n_attr):
        out[a] = _threshold(p[:, a], int(k[a]))
    return out


def underprediction_ratio(
    y_true: ArrayLike, y_pred: ArrayLike, *, train_positive_rate: float
) -> float:
    """Rare-value under-prediction ratio U (SPEC §4.4).

    With predicted positive rate ``q = mean(y_pred)`` and true positive rate
    ``r = mean(y_true)``::

        U = (1 - q) / (1 - r)   if train_positive_rate > 0.5   (the rare value is 0)
        U = q / r               otherwise                      (the rare value is 1)

    U < 1 means the rarer value is predicted less often than it occurs.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        0/1 labels and predictions on the evaluated data.
    train_positive_rate : float
        Positive rate of the target in the train split, in [0, 1].

    Returns
    -------
    float
        U; NaN when the denominator is 0 (the rare value never occurs) or N = 0.

    Raises
    ------
    ValueError
        On mismatched lengths, non-0/1 values, or a train rate outside [0, 1].
    """
    yt = as_binary(y_true, name="y_true", ndim=1)
    yp = as_binary(y_pred, name="y_pred", ndim=1)
    if yt.shape != yp.shape:
        raise ValueError(
            f"`y_true` and `y_pred` must have the same length; got {yt.shape[0]} and {yp.shape[0]}."
        )
    rate = float(train_positive_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`train_positive_rate` must lie in [0, 1]; got {train_positive_rate!r}.")
    n = yt.shape[0]
    if n == 0:
        return float("nan")
    q = np.count_nonzero(yp) / n
    r = np.count_nonzero(yt) / n
    num, den = (1.0 - q, 1.0 - r) if rate > 0.5 else (q, r)
    return float(num / den) if den > 0 else float("nan")


def underprediction_from_counts(counts: ArrayLike, *, train_positive_rate: ArrayLike) -> np.ndarray:
    """U of :func:`underprediction_ratio` per attribute and group cell, from confusion counts.

    With ``n = tp + fp + tn + fn``, ``q = (tp + fp) / n`` and ``r = (tp + fn) / n`` per cell,
    ``U = (1 - q) / (1 - r)`` where the attribute's train positive rate exceeds 0.5, else
    ``q / r``.

    Parameters
    ----------
    counts : array-like of shape (..., A, C, k)
        Confusion counts with k >= 4 and the last axis starting (tp, fp, tn, fn)
        (:func:`audit.metrics.groups.confusion_counts`).
    train_positive_rate : array-like of shape (A,)
        Positive rate of each attribute in the train split, in [0, 1].

    Returns
    -------
    numpy.ndarray
        U of shape ``counts.shape[:-1]``; NaN where a cell is empty or the denominator is 0.

    Raises
    ------
    ValueError
        On a counts array without the four counts, or a train rate outside [0, 1].
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] < 4:
        raise ValueError(f"`counts` must have shape (..., A, C, k >= 4); got {c.shape}.")
    rate = np.asarray(train_positive_rate, dtype=np.float64)
    if rate.shape != c.shape[-3:-2] or not ((rate >= 0.0) & (rate <= 1.0)).all():
        raise ValueError(
            f"`train_positive_rate` must hold one rate in [0, 1] per attribute "
            f"({c.shape[-3:-2]}); got {train_positive_rate!r}."
        )
    tp, fp, tn, fn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    n = tp + fp + tn + fn
    q = np.divide(tp + fp, n, out=np.full(n.shape, np.nan), where=n > 0)
    r = np.divide(tp + fn, n, out=np.full(n.shape, np.nan), where=n > 0)
    rare_is_zero = (rate > 0.5)[:, None]
    num = np.where(rare_is_zero, 1.0 - q, q)
    den = np.where(rare_is_zero, 1.0 - r, r)
    return np.divide(num, den, out=np.full(n.shape, np.nan), where=(n > 0) & (den > 0))


__all__ = ["calibrate_thresholds", "underprediction_from_counts", "underprediction_ratio"]
