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


def include_point(
    point: ArrayLike, lo: ArrayLike, hi: ArrayLike
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Widen an interval just enough to contain its point estimate.

    ``lo' = min(lo, point)``, ``hi' = max(hi, point)`` (NaN bounds stay NaN). A percentile
    interval of a discrete or boundary statistic can miss its own point (issue 13 measured
    2-5% of runs with FNR at 0); an interval that excludes the number it is reported with
    cannot be read, and widening only raises coverage.

    Returns
    -------
    lo, hi : float or numpy.ndarray
        Broadcast shape of the inputs.
    """
    p = np.asarray(point, dtype=np.float64)
    lo_ = np.asarray(lo, dtype=np.float64)
    hi_ = np.asarray(hi, dtype=np.float64)
    keep = np.isfinite(p)
    lo2 = np.where(keep & np.isfinite(lo_), np.fmin(lo_, p), lo_)
    hi2 = np.where(keep & np.isfinite(hi_), np.fmax(hi_, p), hi_)
    if lo2.ndim == 0:
        return float(lo2), float(hi2)
    return lo2, hi2


def _abs_change(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.abs(x + d) - np.abs(x)


def abs_change_projection_ci(
    dense: ArrayLike,
    change: ArrayLike,
    boot_dense: ArrayLike,
    boot_change: ArrayLike,
    *,
    level: float = 0.95,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Interval for the change of an absolute gap, ``|x + d| − |x|``, by projection.

    For a binary group attribute the max − min gap is ``|x|`` with ``x`` the signed gap
    (cell 1 − cell 0), so its change under pruning is ``f(x, d) = |x + d| − |x|`` with
    ``d`` the paired change of the signed gap. ``f`` is not smooth at ``x = 0`` and
    ``x + d = 0``, which breaks percentile (and basic, BCa) intervals of the change of
    ``|x|`` exactly where the gate needs them (both groups at FNR 0, no dense gap). Both
    ``x`` and ``d`` are smooth, so this function:

    1. forms percentile intervals ``[A, B]`` for ``x`` and ``[l, u]`` for ``d`` at level
       ``1 − (1 − level)/2`` each (Bonferroni: the rectangle covers ``(x, d)`` with
       probability ≥ ``level`` when each side is valid), each widened to contain its point;
    2. returns ``[min f, max f]`` over the rectangle. ``f`` is piecewise linear with kinks
       on ``x = 0`` and ``x + d = 0``, so the extremes lie among the rectangle's corners,
       the points where the kink lines cross its edges, and ``(0, 0)``.

    Whenever the rectangle covers the true ``(x, d)`` the interval covers the true change
    (coverage ≥ that of the rectangle), and it always contains the point estimate
    ``f(x̂, d̂)`` because the rectangle contains ``(x̂, d̂)``. When ``[A, B]`` excludes 0
    and the pruned gap cannot change sign it reduces to the oriented signed change
    ``sign(x)·[l, u]``; when the dense gap may be 0 it is at most ``±max(|l|, |u|)``
    (``|f| ≤ |d|``). Coverage and widths: benchmarks/bench_coverage.py.

    Parameters
    ----------
    dense, change : array-like of shape S
        Point estimates of ``x`` and ``d``.
    boot_dense, boot_change : array-like of shape (B, *S)
        Paired bootstrap replicates of ``x`` and ``d`` (NaN = undefined replicate).
    level : float, default=0.95
        Joint coverage level.

    Returns
    -------
    lo, hi : float or numpy.ndarray of shape S
        NaN where either marginal interval is undefined (see :func:`percentile_ci`).
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1; got {level!r}.")
    side = 1.0 - (1.0 - level) / 2.0
    x = np.asarray(dense, dtype=np.float64)
    d = np.asarray(change, dtype=np.float64)
    a, b = include_point(x, *percentile_ci(boot_dense, level=side))
    lo_d, hi_d = include_point(d, *percentile_ci(boot_change, level=side))
    a, b, lo_d, hi_d = (np.asarray(v, dtype=np.float64) for v in (a, b, lo_d, hi_d))
    shape = np.broadcast_shapes(a.shape, b.shape, lo_d.shape, hi_d.shape)
    a, b, lo_d, hi_d = (np.broadcast_to(v, shape) for v in (a, b, lo_d, hi_d))
    xs: list[np.ndarray] = [a, a, b, b]
    ds: list[np.ndarray] = [lo_d, hi_d, lo_d, hi_d]
    inside: list[np.ndarray] = [np.ones(shape, dtype=bool)] * 4
    zero = np.zeros(shape)
    # x = 0 meets the edges d = l and d = u, and (0, 0) is where both kink lines cross
    for dd in (lo_d, hi_d, zero):
        xs.append(zero)
        ds.append(dd)
        inside.append((a <= 0) & (b >= 0) & (lo_d <= dd) & (dd <= hi_d))
    # x + d = 0 meets the edges d = l, d = u (at x = -d) and x = A, x = B (at d = -x)
    for dd in (lo_d, hi_d):
        xs.append(-dd)
        ds.append(dd)
        inside.append((a <= -dd) & (-dd <= b))
    for xx in (a, b):
        xs.append(xx)
        ds.append(-xx)
        inside.append((lo_d <= -xx) & (-xx <= hi_d))
    vals = np.stack([_abs_change(xx, dd) for xx, dd in zip(xs, ds, strict=True)])
    ok = np.stack(inside)
    lo = np.where(ok, vals, np.inf).min(axis=0)
    hi = np.where(ok, vals, -np.inf).max(axis=0)
    undefined = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(lo_d) & np.isfinite(hi_d))
    lo = np.where(undefined, np.nan, lo)
    hi = np.where(undefined, np.nan, hi)
    lo, hi = include_point(_abs_change(x, d), lo, hi)
    return lo, hi


def range_change_box_ci(
    dense: ArrayLike,
    change: ArrayLike,
    boot_dense: ArrayLike,
    boot_change: ArrayLike,
    *,
    level: float = 0.95,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Interval for the change of a max − min gap over K ≥ 2 cells, by a box bound.

    With ``x`` the dense rates per cell, ``δ`` their paired changes and ``G(v) = max v − min v``,
    the estimand is ``G(x + δ) − G(x)``. Percentile intervals ``[a_k, b_k]`` for every
    ``x_k`` and ``[l_k, u_k]`` for every ``δ_k`` at level ``1 − (1 − level)/(2K)`` each
    (Bonferroni over the 2K sides), widened to contain their points, give a box that covers
    ``(x, δ)`` with probability ≥ ``level``. Over that box::

        G(x + δ) − G(x) ≤ U = max(max_{i≠j} [u_i − P_i − l_j − Q_j], −max(0, max a − min b))
        P_i = max(0, max_k a_k − b_i),  Q_j = max(0, a_j − min_k b_k)

    because ``G(x + δ) = max_{i,j} (x_i + δ_i − x_j − δ_j)`` and, for any ``x`` in the box,
    ``x_i − x_j − G(x) ≤ −P_i − Q_j``. The lower end applies the same bound to
    ``G(y − δ) − G(y)`` with ``y = x + δ`` in the box ``[a + l, b + u]``. The interval is
    conservative (a superset of the exact range over the box) but, unlike the percentile
    interval of the change, valid where the order of the cells is not identified, e.g. all
    cells at FNR 0. Coverage: benchmarks/bench_coverage.py.

    Parameters
    ----------
    dense, change : array-like of shape (..., K)
        Point estimates of the per-cell rates and their changes (no NaN).
    boot_dense, boot_change : array-like of shape (B, ..., K)
        Paired bootstrap replicates (NaN = undefined replicate).
    level : float, default=0.95
        Joint coverage level.

    Returns
    -------
    lo, hi : float or numpy.ndarray of shape (...)
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1; got {level!r}.")
    x = np.asarray(dense, dtype=np.float64)
    d = np.asarray(change, dtype=np.float64)
    k = x.shape[-1]
    if k < 2:
        raise ValueError(f"a gap needs at least 2 cells; got {k}.")
    side = 1.0 - (1.0 - level) / (2 * k)
    a, b = (np.asarray(v) for v in include_point(x, *percentile_ci(boot_dense, level=side)))
    lo_d, hi_d = (np.asarray(v) for v in include_point(d, *percentile_ci(boot_change, level=side)))

    def upper(a: np.ndarray, b: np.ndarray, lo_c: np.ndarray, hi_c: np.ndarray) -> np.ndarray:
        top = np.max(a, axis=-1, keepdims=True)
        bottom = np.min(b, axis=-1, keepdims=True)
        p = np.maximum(0.0, top - b)  # (…, K): P_i
        q = np.maximum(0.0, a - bottom)  # Q_j
        hi_part = hi_c - p
        lo_part = lo_c + q
        pair = hi_part[..., :, None] - lo_part[..., None, :]  # (…, i, j)
        eye = np.eye(k, dtype=bool)
        best = np.where(eye, -np.inf, pair).max(axis=(-2, -1))
        return np.maximum(best, -np.maximum(0.0, top[..., 0] - bottom[..., 0]))

    hi = upper(a, b, lo_d, hi_d)
    lo = -upper(a + lo_d, b + hi_d, -hi_d, -lo_d)
    undefined = ~(
        np.isfinite(a).all(-1)
        & np.isfinite(b).all(-1)
        & np.isfinite(lo_d).all(-1)
        & np.isfinite(hi_d).all(-1)
    )
    lo = np.where(undefined, np.nan, lo)
    hi = np.where(undefined, np.nan, hi)
    point = (x + d).max(-1) - (x + d).min(-1) - (x.max(-1) - x.min(-1))
    return include_point(point, lo, hi)


__all__ = [
    "abs_change_projection_ci",
    "bootstrap_weights",
    "include_point",
    "percentile_ci",
    "range_change_box_ci",
]
