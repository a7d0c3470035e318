"""Ranking quality of the susceptibility forecast against actual flips (SPEC §6.4).

Owns: AUROC (Mann-Whitney, ties counted as half) and top-k precision, recall and lift.
The top-k order is stable: by descending score, then by ascending sample index, so equal
scores never make the result depend on the sort algorithm.

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_binary, check_positive_int, check_same_length


def _inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"`scores` must be 1-D with shape (N,); got shape {s.shape}.")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_):
        raise TypeError(f"`scores` must hold numbers; got dtype {s.dtype}.")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ValueError("`scores` must be finite; got NaN or Inf.")
    y = as_binary(labels, name="labels", ndim=1)
    check_same_length(("scores", s), ("labels", y))
    return s, y


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    With average ranks ``R_i`` of the scores (ties share their mean rank), ``n1`` positives
    and ``n0`` negatives::

        AUROC = (sum_{i: y_i = 1} R_i - n1 (n1 + 1) / 2) / (n1 n0)

    i.e. P(score of a random positive > score of a random negative) + 0.5 P(tie).

    Parameters
    ----------
    scores : array-like of shape (N,)
        Higher means "more likely positive".
    labels : array-like of shape (N,)
        0/1 outcome (e.g. "the prediction flipped after pruning").

    Returns
    -------
    float
        NaN when either class is absent.
    """
    s, y = _inputs(scores, labels)
    n1 = int(np.count_nonzero(y))
    n0 = y.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    # average ranks (1-based): a tied block spanning ranks lo..hi gets (lo + hi) / 2
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2.0)[inverse.reshape(-1)]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _top_k(s: np.ndarray, y: np.ndarray, k: int) -> tuple[int, int]:
    """Count the positives among the top min(k, N) samples; also return min(k, N)."""
    k = min(check_positive_int(k, name="k"), s.shape[0])
    # stable argsort of -score: equal scores keep index order
    order = np.argsort(-s, kind="stable")[:k]
    return int(np.count_nonzero(y[order])), k


def precision_at_k(scores: ArrayLike, labels: ArrayLike, *, k: int) -> float:
    """Fraction of positives among the k highest-scored samples.

    ``precision@k = (positives in top k) / k``, with k capped at N.

    Parameters
    ----------
    scores : array-like of shape (N,)
        Ranking scores.
    labels : array-like of shape (N,)
        0/1 outcome.
    k : int
        Cut-off, >= 1; values above N are capped at N.

    Returns
    -------
    float
        NaN when N = 0.
    """
    s, y = _inputs(scores, labels)
    hits, k_eff = _top_k(s, y, k)
    return hits / k_eff if k_eff else float("nan")


def recall_at_k(scores: ArrayLike, labels: ArrayLike, *, k: int) -> float:
    """Fraction of all positives found among the k highest-scored samples.

    ``recall@k = (positives in top k) / (positives)``, with k capped at N.

    Parameters
    ----------
    scores : array-like of shape (N,)
        Ranking scores.
    labels : array-like of shape (N,)
        0/1 outcome.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        NaN when there are no positives.
    """
    s, y = _inputs(scores, labels)
    hits, _ = _top_k(s, y, k)
    total = int(np.count_nonzero(y))
    return hits / total if total else float("nan")


def lift_at_k(scores: ArrayLike, labels: ArrayLike, *, k: int) -> float:
    """Precision at k relative to the base rate.

    ``lift@k = precision@k / (positives / N)``; 1 means no better than random order.

    Parameters
    ----------
    scores : array-like of shape (N,)
        Ranking scores.
    labels : array-like of shape (N,)
        0/1 outcome.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        NaN when the base rate is 0 (no positives) or N = 0.
    """
    s, y = _inputs(scores, labels)
    hits, k_eff = _top_k(s, y, k)
    total = int(np.count_nonzero(y))
    if total == 0 or k_eff == 0:
        return float("nan")
    return (hits / k_eff) / (total / y.shape[0])


__all__ = ["auroc", "lift_at_k", "precision_at_k", "recall_at_k"]
