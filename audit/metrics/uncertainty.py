"""Output uncertainty and per-sample susceptibility (SPEC §4.1, §5.1).

Owns: which outputs count as uncertain (probability strictly inside an open band, or a
small top-1/top-2 margin for multiclass), the uncertainty rate, per-group histograms of p
(the distribution behind the rate), and the susceptibility score ``s = 1 - |2p - 1|`` used
to rank samples before any pruning.

No I/O, no devices, no printing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_prob, check_positive_int
from .calibration import bin_index
from .groups import _as_cells

Band = tuple[float, float]


def _check_band(band: Band) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise ValueError(
            f"`band` must be a pair (low, high) of probabilities; got {band!r}."
        ) from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(
            f"`band` must satisfy 0 <= low < high <= 1; got {band!r}. The default is (0.1, 0.9)."
        )
    return lo, hi


def uncertain_mask(prob: ArrayLike, *, band: Band = (0.1, 0.9)) -> np.ndarray:
    """Which outputs are uncertain: ``low < p < high`` (the open band).

    Parameters
    ----------
    prob : array-like
        Probabilities of any shape (e.g. (N,) or (N, A)).
    band : tuple of float, default=(0.1, 0.9)
        The open band ``(low, high)``; the default is ``|p - 0.5| < 0.4``.

    Returns
    -------
    numpy.ndarray of bool
        Same shape as ``prob``.
    """
    lo, hi = _check_band(band)
    p = as_prob(prob, name="prob", ndim=(0, 1, 2, 3))
    return (p > lo) & (p < hi)


def uncertainty_rate(prob: ArrayLike, *, band: Band = (0.1, 0.9)) -> float | np.ndarray:
    """Fraction of samples whose probability lies strictly inside ``band``.

    ``rate = (1/N) * sum_i 1[low < p_i < high]``.

    Parameters
    ----------
    prob : array-like of shape (N,) or (N, A)
        Probabilities.
    band : tuple of float, default=(0.1, 0.9)
        The open band ``(low, high)``.

    Returns
    -------
    float or numpy.ndarray
        A float for 1-D input, an (A,) array (one rate per column) for 2-D input; NaN when
        N = 0.
    """
    lo, hi = _check_band(band)
    p = as_prob(prob, name="prob", ndim=(1, 2))
    if p.shape[0] == 0:
        return float("nan") if p.ndim == 1 else np.full(p.shape[1], np.nan)
    rate = ((p > lo) & (p < hi)).mean(axis=0)
    return float(rate) if p.ndim == 1 else rate


def margin_uncertain_mask(probs: ArrayLike, *, band: Band = (0.1, 0.9)) -> np.ndarray:
    """Multiclass uncertainty: top-1 minus top-2 probability below the band's width.

    ``uncertain_i = 1[p_(1) - p_(2) < high - low]`` (0.8 for the default band). For two
    classes with a symmetric band this equals ``low < p < high``.

    Parameters
    ----------
    probs : array-like of shape (N, C)
        Class probabilities, C >= 2.
    band : tuple of float, default=(0.1, 0.9)
        The band whose width is the margin threshold.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)

    Raises
    ------
    ValueError
        If ``probs`` has fewer than 2 columns.
    """
    lo, hi = _check_band(band)
    p = as_prob(probs, name="probs", ndim=2)
    if p.shape[1] < 2:
        raise ValueError(
            f"`probs` needs at least 2 class columns for a top-1/top-2 margin; got shape "
            f"{p.shape}. Use uncertain_mask() for a single sigmoid output."
        )
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < (hi - lo)


def probability_histogram(
    prob: ArrayLike, *, cells: ArrayLike, n_cells: int, n_bins: int = 20
) -> np.ndarray:
    """Count probabilities per group cell in equal-width bins on [0, 1].

    ``counts[c, b] = sum_i 1[cell_i = c] * 1[b/n_bins <= p_i < (b+1)/n_bins]``, the last bin
    also holding ``p = 1`` (the binning of :func:`calibration_curve`). With the default 20
    bins the default band's ends 0.1 and 0.9 are bin edges, so the uncertain samples are
    exactly those in bins 2-17 (up to p landing exactly on an edge).

    Parameters
    ----------
    prob : array-like of shape (N,)
        Probabilities (the positive-class p, or the top-class p for multiclass).
    cells : array-like of int, shape (N,)
        Group cell code per sample, in ``[0, n_cells)`` (as :func:`encode_cells` returns).
    n_cells : int
        Number of cells; a cell without samples gets a row of zeros.
    n_bins : int, default=20
        Number of equal-width bins.

    Returns
    -------
    numpy.ndarray of int64, shape (n_cells, n_bins)
        Each row sums to the cell's sample count.
    """
    p = as_prob(prob, name="prob", ndim=1)
    n_cells = check_positive_int(n_cells, name="n_cells")
    n_bins = check_positive_int(n_bins, name="n_bins")
    c = _as_cells(cells, n=p.shape[0], n_cells=n_cells)
    flat = np.bincount(c * n_bins + bin_index(p, n_bins), minlength=n_cells * n_bins)
    return flat.reshape(n_cells, n_bins).astype(np.int64)


def susceptibility(prob: ArrayLike) -> np.ndarray:
    """Susceptibility of an output to change: ``s = 1 - |2p - 1|``.

    1 at the decision boundary (p = 0.5), 0 for a confident output (p = 0 or 1).

    Parameters
    ----------
    prob : array-like
        Probabilities of any shape.

    Returns
    -------
    numpy.ndarray
        Same shape as ``prob``.
    """
    p = as_prob(prob, name="prob", ndim=(0, 1, 2, 3))
    return 1.0 - np.abs(2.0 * p - 1.0)


def sample_susceptibility(probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample susceptibility: the maximum over targets, and the target attaining it.

    ``score_i = max_a (1 - |2 p_ia - 1|)``, ``target_i = argmax_a`` (first on ties).

    Parameters
    ----------
    probs : array-like of shape (N, A)
        Per-target probabilities (A >= 1).

    Returns
    -------
    score : numpy.ndarray of shape (N,)
    target : numpy.ndarray of int, shape (N,)
        Column index of the most susceptible target.

    Raises
    ------
    ValueError
        If ``probs`` is not 2-D or has no columns.
    """
    p = as_prob(probs, name="probs", ndim=2)
    if p.shape[1] == 0:
        raise ValueError("`probs` must have at least one target column; got shape (N, 0).")
    s = 1.0 - np.abs(2.0 * p - 1.0)
    target = np.argmax(s, axis=1)
    return s[np.arange(p.shape[0]), target], target


__all__ = [
    "margin_uncertain_mask",
    "probability_histogram",
    "sample_susceptibility",
    "susceptibility",
    "uncertain_mask",
    "uncertainty_rate",
]
