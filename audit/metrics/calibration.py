"""Calibration: expected calibration error and reliability curves (SPEC §4.3).

Owns: equal-width binning of probabilities and the ECE formula, for binary (positive-class
probability) and multiclass (top-class confidence) models. Bin ``b`` of ``n_bins`` holds
``b/n_bins <= p < (b+1)/n_bins``, the last bin also holds ``p = 1``; the bin index is
``min(floor(p * n_bins), n_bins - 1)``.

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_binary, as_prob, check_positive_int, check_same_length


def bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """The equal-width bin of each probability: ``min(floor(p * n_bins), n_bins - 1)``."""
    return np.minimum(np.floor(p * n_bins).astype(np.intp), n_bins - 1)


def _binned(
    outcome: np.ndarray, p: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin sample counts, sums of p and sums of the outcome."""
    b = bin_index(p, n_bins)
    counts = np.bincount(b, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(b, weights=p, minlength=n_bins)
    sum_y = np.bincount(b, weights=outcome.astype(np.float64), minlength=n_bins)
    return counts, sum_p, sum_y


def _ece(outcome: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    if p.shape[0] == 0:
        return float("nan")
    counts, sum_p, sum_y = _binned(outcome, p, n_bins)
    # (n_b / N) * |sum_p / n_b - sum_y / n_b| = |sum_p - sum_y| / N, and 0 for empty bins
    return float(np.abs(sum_p - sum_y).sum() / p.shape[0])


def ece_from_binned(sums: ArrayLike) -> np.ndarray:
    """ECE from per-bin sums, for every leading index (e.g. per attribute and group cell).

    With ``n_b``, ``S_p,b`` and ``S_y,b`` the count, sum of p and sum of y in bin ``b`` and
    ``N = sum_b n_b``::

        ECE = sum_b (n_b / N) * |S_p,b / n_b - S_y,b / n_b| = sum_b |S_p,b - S_y,b| / N

    Parameters
    ----------
    sums : array-like of shape (..., n_bins, 3)
        Count, sum of p and sum of y per bin (:func:`audit.metrics.groups.binned_sums`).

    Returns
    -------
    numpy.ndarray
        ECE of shape ``sums.shape[:-2]``; NaN where there are no samples.
    """
    s = np.asarray(sums, dtype=np.float64)
    if s.ndim < 2 or s.shape[-1] != 3:
        raise ValueError(f"`sums` must have shape (..., n_bins, 3); got {s.shape}.")
    n = s[..., 0].sum(axis=-1)
    num = np.abs(s[..., 1] - s[..., 2]).sum(axis=-1)
    out = np.full(n.shape, np.nan)
    np.divide(num, n, out=out, where=n > 0)
    return out


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, *, n_bins: int = 10) -> float:
    """Compute the expected calibration error of positive-class probabilities.

    ``ECE = sum_b (n_b / N) * |mean(p in b) - mean(y in b)|`` over ``n_bins`` equal-width
    bins of p.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        0/1 labels.
    prob : array-like of shape (N,)
        Predicted probability of the positive class.
    n_bins : int, default=10
        Number of equal-width bins on [0, 1].

    Returns
    -------
    float
        ECE in [0, 1]; NaN for empty input.

    Raises
    ------
    ValueError
        On mismatched lengths, non-0/1 labels, probabilities outside [0, 1], or
        ``n_bins < 1``.
    """
    y = as_binary(y_true, name="y_true", ndim=1)
    p = as_prob(prob, name="prob", ndim=1)
    check_same_length(("y_true", y), ("prob", p))
    n_bins = check_positive_int(n_bins, name="n_bins")
    return _ece(y, p, n_bins)


def _top_class(y_true_class: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = as_prob(probs, name="probs", ndim=2)
    y = np.asarray(y_true_class)
    if y.ndim != 1:
        raise ValueError(f"`y_true_class` must be 1-D with shape (N,); got shape {y.shape}.")
    check_same_length(("y_true_class", y), ("probs", p))
    if y.shape[0] and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"`y_true_class` must hold integer class indices; got dtype {y.dtype}.")
    n_classes = p.shape[1]
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"`y_true_class` must lie in [0, {n_classes}) (one column of `probs` per class); "
            f"got {int(y[i])} at row {i}."
        )
    if p.shape[0] == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    pred = np.argmax(p, axis=1)
    return pred == y, p[np.arange(p.shape[0]), pred]


def multiclass_expected_calibration_error(
    y_true_class: ArrayLike, probs: ArrayLike, *, n_bins: int = 10
) -> float:
    """Compute the expected calibration error of the top-class confidence.

    With ``conf_i = max_c probs[i, c]`` and ``correct_i = 1[argmax_c probs[i, c] = y_i]``
    (first class on ties)::

        ECE = sum_b (n_b / N) * |mean(conf in b) - mean(correct in b)|

    Parameters
    ----------
    y_true_class : array-like of int, shape (N,)
        True class index of every sample.
    probs : array-like of shape (N, C)
        Class probabilities (rows of a softmax).
    n_bins : int, default=10
        Number of equal-width bins on [0, 1].

    Returns
    -------
    float
        ECE in [0, 1]; NaN for empty input.

    Raises
    ------
    ValueError
        On mismatched lengths, class indices out of range, or invalid probabilities.
    """
    n_bins = check_positive_int(n_bins, name="n_bins")
    correct, conf = _top_class(y_true_class, probs)
    return _ece(correct, conf, n_bins)


def calibration_curve(
    y_true: ArrayLike, prob: ArrayLike, *, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability curve: mean probability and mean outcome per equal-width bin.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        0/1 labels.
    prob : array-like of shape (N,)
        Predicted probability of the positive class.
    n_bins : int, default=10
        Number of equal-width bins on [0, 1]; bin ``b`` is centred at ``(b + 0.5) / n_bins``.

    Returns
    -------
    mean_prob : numpy.ndarray of shape (n_bins,)
        Mean p in each bin; NaN for an empty bin.
    mean_true : numpy.ndarray of shape (n_bins,)
        Fraction of positives in each bin; NaN for an empty bin.
    counts : numpy.ndarray of shape (n_bins,)
        Number of samples in each bin (int64).
    """
    y = as_binary(y_true, name="y_true", ndim=1)
    p = as_prob(prob, name="prob", ndim=1)
    check_same_length(("y_true", y), ("prob", p))
    n_bins = check_positive_int(n_bins, name="n_bins")
    counts, sum_p, sum_y = _binned(y, p, n_bins)
    mean_p = np.full(n_bins, np.nan)
    mean_y = np.full(n_bins, np.nan)
    np.divide(sum_p, counts, out=mean_p, where=counts > 0)
    np.divide(sum_y, counts, out=mean_y, where=counts > 0)
    return mean_p, mean_y, counts.astype(np.int64)


__all__ = [
    "bin_index",
    "calibration_curve",
    "ece_from_binned",
    "expected_calibration_error",
    "multiclass_expected_calibration_error",
]
