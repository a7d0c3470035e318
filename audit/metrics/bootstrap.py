"""Paired bootstrap: resample-count matrices and percentile intervals (SPEC §6.3).

Owns: drawing B resamples of N samples as a (B, N) matrix of counts, and the percentile
confidence interval of replicate statistics. Nothing is re-run per replicate: the count
matrix is passed as ``weights`` to :func:`audit.metrics.groups.confusion_counts`.

Paired usage (the same resamples for the dense and the pruned model)::

    W = bootstrap_weights(n, n_resamples=1000, seed=seed)
    dense = rates_from_counts(confusion_counts(y, dense_pred, cells, n_cells=c, weights=W))
    pruned = rates_from_counts(confusion_counts(y, pruned_pred, cells, n_cells=c, weights=W))
    delta = between_groups(pruned["fnr"]) - between_groups(dense["fnr"])   # (B, A)
    lo, hi = percentile_ci(delta, level=0.95)                              # (A,) each

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import check_positive_int

#: Number of (row, sample) draws made at once; bounds the temporary int64 arrays (~32 MiB).
_DRAWS_PER_CHUNK = 4_000_000


def bootstrap_weights(n: int, *, n_resamples: int, seed: int) -> np.ndarray:
    """Resample counts of ``n_resamples`` bootstrap resamples of ``n`` samples.

    Row ``b`` holds ``W[b, i]`` = how often sample ``i`` was drawn in resample ``b``
    (``n`` draws with replacement), so every row sums to ``n``. Draws come from
    ``np.random.default_rng(seed).integers(0, n, size=(rows, n))`` in fixed chunks of rows,
    counted with one offset ``bincount`` per chunk (no loop over rows).

    Parameters
    ----------
    n : int
        Number of samples, >= 1.
    n_resamples : int
        Number of resamples B, >= 1.
    seed : int
        Seed; the same (n, n_resamples, seed) always gives the same matrix.

    Returns
    -------
    numpy.ndarray of shape (B, n)
        float32 counts (exact: every partial sum is an integer <= n <= 2**24); float64 when
        ``n > 2**24``.

    Raises
    ------
    ValueError
        If ``n`` or ``n_resamples`` is < 1.
    TypeError
        If ``n``, ``n_resamples`` or ``seed`` is not an int.
    """
    n = check_positive_int(n, name="n")
    n_resamples = check_positive_int(n_resamples, name="n_resamples")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"`seed` must be an int; got {type(seed).__name__} {seed!r}.")
    rng = np.random.default_rng(int(seed))
    dtype = np.float32 if n <= 2**24 else np.float64
    out = np.empty((n_resamples, n), dtype=dtype)
    rows_per_chunk = max(1, _DRAWS_PER_CHUNK // n)
    for r0 in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - r0)
        draws = rng.integers(0, n, size=(rows, n), dtype=np.int64)
        draws += (np.arange(rows, dtype=np.int64) * n)[:, None]
        out[r0 : r0 + rows] = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
    return out


def percentile_ci(
    samples: ArrayLike, *, level: float = 0.95
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile bootstrap confidence interval, ignoring undefined (NaN) replicates.

    ``lo = q_{(1 - level)/2}``, ``hi = q_{(1 + level)/2}`` of the defined replicates along
    axis 0 (linear interpolation between order statistics, ``numpy.percentile``'s default).

    Parameters
    ----------
    samples : array-like of shape (B, ...)
        Replicate statistics, e.g. paired deltas ``pruned_gap - dense_gap`` per replicate.
    level : float, default=0.95
        Coverage level in (0, 1).

    Returns
    -------
    lo, hi : float or numpy.ndarray of shape ``samples.shape[1:]``
        NaN where more than half of the replicates are NaN (the statistic is then too often
        undefined to trust an interval) or B = 0.

    Raises
    ------
    ValueError
        If ``level`` is not in (0, 1) or ``samples`` is 0-d.
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1; got {level!r}.")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("`samples` must have a leading replicate axis (B, ...); got a scalar.")
    tail = x.shape[1:]
    if x.shape[0] == 0:
        lo = hi = np.full(tail, np.nan)
    else:
        missing = np.isnan(x)
        enough = missing.mean(axis=0) <= 0.5
        # columns with too few defined replicates are zero-filled only to keep nanpercentile
        # quiet; their result is replaced by NaN below
        safe = np.where(enough, x, 0.0)
        q = np.nanpercentile(safe, [50.0 * (1.0 - level), 50.0 * (1.0 + level)], axis=0)
        lo = np.where(enough, q[0], np.nan)
        hi = np.where(enough, q[1], np.nan)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


__all__ = ["bootstrap_weights", "percentile_ci"]
